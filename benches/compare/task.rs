//! A process started by the benchmark, reaped with wait4 so that its CPU
//! time (its own and that of the children it reaped, e.g. an rsync
//! daemon's per-connection workers) is known. Only PIDs we started are
//! ever signalled; a task still running when dropped is killed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C or SIGTERM makes the waits below fail, so that the run unwinds
/// and every namespace and process it made is removed.
pub fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// An error once the run was interrupted.
pub fn check_interrupt() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    Ok(())
}

pub struct Exit {
    pub code: Option<i32>,
    pub at: Instant,
    /// User + system CPU seconds.
    pub cpu: f64,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

pub struct Task {
    pub name: String,
    pid: libc::pid_t,
    pub log: PathBuf,
    pub started: Instant,
    exit: Option<Exit>,
}

fn secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

impl Task {
    /// Starts `cmd` with stdout and stderr into `logs/NAME.log`.
    pub fn spawn(mut cmd: Command, name: &str, logs: &Path) -> Task {
        let log = logs.join(format!("{name}.log"));
        let out = fs::File::create(&log).expect("create a log file");
        let err = out.try_clone().expect("clone a log file");
        // reaped by `reap` with wait4, for the CPU time
        #[allow(clippy::zombie_processes)]
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Task {
            name: name.into(),
            pid: child.id() as libc::pid_t,
            log,
            started: Instant::now(),
            exit: None,
        }
    }

    fn reap(&mut self, flags: libc::c_int) {
        if self.exit.is_some() {
            return;
        }
        let mut status = 0;
        // SAFETY: rusage is plain old data; all zeroes is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our own child and not reaped yet (exit is None);
        // both out-pointers are valid for the call.
        let r = unsafe { libc::wait4(self.pid, &mut status, flags, &mut ru) };
        if r != self.pid {
            return;
        }
        let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        self.exit = Some(Exit {
            code,
            at: Instant::now(),
            cpu: secs(ru.ru_utime) + secs(ru.ru_stime),
        });
    }

    /// The exit, if the process has ended.
    pub fn poll(&mut self) -> Option<&Exit> {
        self.reap(libc::WNOHANG);
        self.exit.as_ref()
    }

    /// Waits up to `limit` for the process to end by itself.
    pub fn wait(&mut self, limit: Duration) -> Result<&Exit, String> {
        let t = Instant::now();
        while self.poll().is_none() {
            if let Err(e) = check_interrupt() {
                self.stop();
                return Err(e);
            }
            if t.elapsed() > limit {
                self.stop();
                return Err(format!(
                    "{} did not finish within {limit:?}; its log ends:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(self.exit.as_ref().expect("just polled"))
    }

    /// Ends the process: SIGTERM, then SIGKILL after 3 s.
    pub fn stop(&mut self) -> &Exit {
        if self.poll().is_none() {
            self.signal(libc::SIGTERM);
            let t = Instant::now();
            while self.poll().is_none() && t.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if self.exit.is_none() {
                self.signal(libc::SIGKILL);
                self.reap(0);
            }
        }
        self.exit.as_ref().expect("reaped")
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory effects; the pid is our unreaped
        // child, so it cannot have been reused.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.signal(libc::SIGKILL);
            self.reap(0);
        }
    }
}

//! Helpers: run the real binary, wait with timeouts, compare trees.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

pub fn swarm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_swarm"));
    c.stdin(Stdio::null());
    c
}

/// A child process that is killed when dropped (a failing test leaves
/// nothing running). Only PIDs we started are ever killed.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn spawn(mut cmd: Command, name: &str, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let f = fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(f))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            child,
            name: name.into(),
            log,
        }
    }

    /// Waits for exit; kills the process and panics after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if t.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit within {limit:?}; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_ok(&mut self, limit: Duration) {
        let st = self.wait(limit);
        assert!(
            st.success(),
            "{} exited with {st}; log:\n{}",
            self.name,
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` to this process (only ever a PID we started).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory preconditions; the PID is our own
        // child, not yet waited for, so it cannot have been reused.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0, "signal {sig} to {}", self.name);
    }

    pub fn kill9(&mut self) {
        // SIGKILL to the PID we spawned
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Seed {
    pub proc: Proc,
    pub ticket: String,
    pub ticket_file: PathBuf,
    pub report: PathBuf,
}

/// Starts `swarm seed` on loopback and waits for its ticket.
pub fn seed(dir: &Path, path: &Path, extra: &[&str]) -> Seed {
    let ticket_file = dir.join("ticket");
    let report = dir.join("seed.json");
    let mut cmd = swarm();
    cmd.arg("seed")
        .arg(path)
        .args(["--listen", "127.0.0.1:0", "--ticket-file"]);
    cmd.arg(&ticket_file)
        .arg("--report")
        .arg(&report)
        .args(extra);
    let mut proc = Proc::spawn(cmd, "seed", dir);
    let t = Instant::now();
    while !ticket_file.exists() {
        if let Some(st) = proc.child.try_wait().unwrap() {
            panic!("seed exited with {st}: {}", proc.log_text());
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no ticket after 60s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ticket = fs::read_to_string(&ticket_file).unwrap().trim().to_string();
    Seed {
        proc,
        ticket,
        ticket_file,
        report,
    }
}

/// Waits until `path` exists while `p` runs (a seed's ticket file);
/// panics if `p` exits first or after 60 s.
pub fn wait_file(p: &mut Proc, path: &Path) {
    let t = Instant::now();
    while !path.exists() {
        if let Some(st) = p.child.try_wait().unwrap() {
            panic!("{} exited with {st}: {}", p.name, p.log_text());
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no {} after 60s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `swarm join` into `dir/name/`, reporting to `dir/name.json`.
pub fn join(dir: &Path, seed: &Seed, name: &str, extra: &[&str]) -> Proc {
    let dest = dir.join(name);
    fs::create_dir_all(&dest).unwrap();
    let mut cmd = swarm();
    cmd.arg("join")
        .arg(format!("@{}", seed.ticket_file.display()))
        .arg(&dest);
    cmd.args(["--listen", "127.0.0.1:0", "--report"]);
    cmd.arg(dir.join(format!("{name}.json"))).args(extra);
    if !extra.contains(&"--linger") {
        cmd.args(["--linger", "1s"]);
    }
    Proc::spawn(cmd, name, dir)
}

pub fn report(path: &Path) -> serde_json::Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn random_file(path: &Path, size: usize, seed: u64) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut data = vec![0u8; size];
    rng.fill_bytes(&mut data);
    fs::write(path, data).unwrap();
}

/// Runs the command to completion with a time limit.
pub fn run(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("command did not finish within {limit:?}: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Asserts that two files or trees are identical as `rsync -a` keeps
/// them: kinds, contents, link targets, modes (setuid/setgid/sticky
/// included), owners, mtimes (to the nanosecond), and hard links inside
/// the tree (link counts).
pub fn assert_same(a: &Path, b: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (ma, mb) = (
        fs::symlink_metadata(a).unwrap(),
        fs::symlink_metadata(b).unwrap(),
    );
    let shown = b.display();
    assert_eq!(ma.file_type(), mb.file_type(), "{} vs {shown}", a.display());
    assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "mode of {shown}");
    assert_eq!(
        (ma.uid(), ma.gid()),
        (mb.uid(), mb.gid()),
        "owner of {shown}"
    );
    assert_eq!(
        (ma.mtime(), ma.mtime_nsec()),
        (mb.mtime(), mb.mtime_nsec()),
        "mtime of {shown}"
    );
    if ma.is_symlink() {
        assert_eq!(
            fs::read_link(a).unwrap(),
            fs::read_link(b).unwrap(),
            "target of {shown}"
        );
    } else if ma.is_dir() {
        let names = |p: &Path| {
            let mut v: Vec<_> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        assert_eq!(na, nb, "entries of {shown}");
        for n in na {
            assert_same(&a.join(&n), &b.join(&n));
        }
    } else {
        assert_eq!(ma.nlink(), mb.nlink(), "hard links of {shown}");
        assert!(
            fs::read(a).unwrap() == fs::read(b).unwrap(),
            "contents of {shown} differ"
        );
    }
}

pub const LIMIT: Duration = Duration::from_secs(120);

/// The last "have/total pieces" a joiner printed in its progress lines.
pub fn pieces_seen(p: &Proc) -> usize {
    p.log_text()
        .lines()
        .rev()
        .filter_map(|l| l.split_once("join: ").map(|(_, rest)| rest))
        .find_map(|l| l.split('/').next()?.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until `p` has printed at least `n` pieces.
pub fn wait_for_pieces(p: &mut Proc, n: usize) {
    let t = Instant::now();
    while pieces_seen(p) < n {
        if let Some(st) = p.child.try_wait().unwrap() {
            panic!("{} exited with {st} before {n} pieces", p.name);
        }
        assert!(t.elapsed() < LIMIT, "{} never reached {n} pieces", p.name);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tmpfs mounted for one test and unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "mounting a small tmpfs needs root"
        );
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "swarm-test"])
            .arg(at)
            .output()
            .expect("mount (apt install mount)");
        assert!(out.status.success(), "mount: {out:?}");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A ticket naming a loopback port nobody listens on, and that port.
pub fn unreachable_ticket() -> (swarm::ticket::Ticket, u16) {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = swarm::ticket::Ticket {
        manifest_id: swarm::manifest::ManifestId([1; 32]),
        secret: [2; 32],
        addrs: vec![format!("127.0.0.1:{port}").parse().unwrap()],
    };
    (t, port)
}

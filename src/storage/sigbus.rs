//! A clear message instead of a bare "Bus error" while a file is hashed
//! from a memory mapping. Reading a mapped page that can no longer be read
//! (the file was truncated meanwhile, or the disk returned an I/O error)
//! raises SIGBUS, which would kill the process without a word. While a
//! `Guard` lives, SIGBUS writes what happened and exits with
//! `EXIT_SIGBUS`. Only async-signal-safe calls run in the handler
//! (`write`, `_exit`), and the message is prepared before the guard arms.
//! The handler does not check the faulting address: on Linux/x86-64 a
//! SIGBUS while hashing comes from a mapping; elsewhere std's overflow
//! handling uses SIGSEGV.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Exit status after SIGBUS under a guard (the CLI's I/O error status).
pub const EXIT_SIGBUS: i32 = 5;

/// The message, leaked: pointer and length are published together.
static MSG: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());

/// Live guards, and the handler that was in place before the first.
static ARMED: Mutex<(usize, Option<libc::sigaction>)> = Mutex::new((0, None));

extern "C" fn on_sigbus(_: libc::c_int) {
    let msg = MSG.load(Ordering::Acquire);
    // SAFETY: `msg` is null or a leaked, never freed or changed message;
    // reading it, write(2) and _exit(2) are async-signal-safe.
    unsafe {
        if let Some(m) = msg.as_ref() {
            libc::write(2, m.as_ptr() as *const libc::c_void, m.len());
        }
        libc::_exit(EXIT_SIGBUS);
    }
}

/// Armed from `new` until dropped; guards may overlap (threads hashing
/// different files), the message names the latest file.
pub struct Guard(());

impl Guard {
    pub fn new(path: &Path) -> Guard {
        let msg = format!(
            "swarm: {}: the file could not be read while it was hashed \
             (truncated meanwhile, or an I/O error); nothing was written\n",
            crate::text::path(path)
        );
        // leaked on purpose: the handler may read it at any time, and a
        // few bytes per hashed file do not add up
        let msg: &'static mut Vec<u8> = Box::leak(Box::new(msg.into_bytes()));
        let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        MSG.store(msg, Ordering::Release);
        if armed.0 == 0 {
            // SAFETY: a zeroed sigaction with a plain handler and an empty
            // mask is valid; the old action is saved for `drop`.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
                // on the alternate stack if the thread has one (as std's
                // stack-overflow handler does)
                act.sa_flags = libc::SA_ONSTACK;
                libc::sigemptyset(&mut act.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(libc::SIGBUS, &act, &mut old) == 0 {
                    armed.1 = Some(old);
                }
            }
        }
        armed.0 += 1;
        Guard(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        armed.0 -= 1;
        if armed.0 == 0
            && let Some(old) = armed.1.take()
        {
            // SAFETY: restores the action saved when the first guard armed.
            unsafe {
                libc::sigaction(libc::SIGBUS, &old, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Command;

    /// Runs in a child process (see below): maps a file, truncates it and
    /// reads past the new end under a guard.
    #[test]
    fn sigbus_child() {
        let Ok(dir) = std::env::var("SWARM_SIGBUS_CHILD_DIR") else {
            return; // only meaningful as the child of the test below
        };
        let path = Path::new(&dir).join("shrinks.bin");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; 1 << 16]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: the point of the test is what happens when the file
        // changes under the mapping.
        let map = unsafe { memmap2::Mmap::map(&f).unwrap() };
        let _guard = Guard::new(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        let sum: u64 = map.iter().map(|&b| b as u64).sum();
        panic!("read {sum} from a truncated mapping without SIGBUS");
    }

    #[test]
    fn a_file_truncated_under_its_mapping_gets_a_message_not_a_bare_crash() {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "storage::sigbus::tests::sigbus_child",
                "--nocapture",
            ])
            .env("SWARM_SIGBUS_CHILD_DIR", dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_SIGBUS), "stderr: {stderr}");
        assert!(
            stderr.contains("shrinks.bin: the file could not be read while it was hashed"),
            "stderr: {stderr}"
        );
    }
}

//! CPU time from getrusage(2), for the benchmarks' CPU-per-byte figures.

use std::time::Duration;

/// User + system CPU time of `who`: `RUSAGE_SELF` (this process, all
/// threads), `RUSAGE_THREAD` (the calling thread), or `RUSAGE_CHILDREN`
/// (children that have been waited for, with their own waited-for
/// children). Zero if the call fails.
pub fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: rusage is plain old data; all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

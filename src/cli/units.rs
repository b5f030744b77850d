//! Human units on the command line: sizes (`4MiB`, `1.5GB`), durations
//! (`30s`, `2m`), addresses.

use std::net::SocketAddr;
use std::time::Duration;

/// A byte size: `bytesize` syntax, e.g. `4MiB`, `512 MiB`, `1GB`, `4096`.
pub fn size(arg: &str, s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("{arg}: cannot parse {s:?} as a size (examples: 4MiB, 512MiB, 1GiB)"))
}

pub fn duration(arg: &str, s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("{arg}: cannot parse {s:?} as a duration ({e}; examples: 500ms, 30s, 2m)")
    })
}

pub fn addr(arg: &str, s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("{arg}: {s:?} is not IP:PORT (examples: 0.0.0.0:7878, 127.0.0.1:0, [::]:7878)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("x", "4MiB").unwrap(), 4 << 20);
        assert_eq!(size("x", "512 MiB").unwrap(), 512 << 20);
        assert_eq!(size("x", "1GiB").unwrap(), 1 << 30);
        assert_eq!(size("x", "4096").unwrap(), 4096);
        assert!(size("--size", "lots").unwrap_err().contains("--size"));
        assert!(size("x", "-5MiB").is_err());
    }

    #[test]
    fn durations_and_addrs() {
        assert_eq!(duration("x", "30s").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("x", "500ms").unwrap(), Duration::from_millis(500));
        assert!(
            duration("--linger", "soon")
                .unwrap_err()
                .contains("--linger")
        );
        assert!(addr("--listen", "127.0.0.1:0").is_ok());
        assert!(addr("--listen", "localhost").is_err());
    }
}

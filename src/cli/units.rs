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

/// A rate in bytes per second: a size per second (`16MiB/s`, `100MB/s`) or
/// bits per second with decimal prefixes (`400Mbit/s`, `10Gbit/s`,
/// `800kbit/s`). Zero and negative rates are errors.
pub fn rate(arg: &str, s: &str) -> Result<u64, String> {
    let err = |why: &str| format!("{arg}: {s:?} {why} (examples: 400Mbit/s, 10Gbit/s, 50MiB/s)");
    let t = s.trim();
    let per = t
        .strip_suffix("/s")
        .ok_or_else(|| err("is not a rate ending in /s"))?;
    let bits = ["Gbit", "Mbit", "kbit", "Kbit", "bit"]
        .iter()
        .zip([1e9, 1e6, 1e3, 1e3, 1.0])
        .find_map(|(unit, mult)| per.strip_suffix(unit).map(|n| (n.trim(), mult)));
    let bytes_per_sec = match bits {
        Some((n, mult)) => {
            let v: f64 = n.parse().map_err(|_| err("has no valid number"))?;
            if !v.is_finite() || v <= 0.0 {
                return Err(err("must be positive"));
            }
            (v * mult / 8.0) as u64
        }
        None => {
            if per.trim_start().starts_with('-') {
                return Err(err("must be positive"));
            }
            size(arg, per).map_err(|_| err("is not a rate"))?
        }
    };
    if bytes_per_sec == 0 {
        return Err(err("must be positive"));
    }
    Ok(bytes_per_sec)
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
    fn rates() {
        assert_eq!(rate("x", "400Mbit/s").unwrap(), 50_000_000);
        assert_eq!(rate("x", "10Gbit/s").unwrap(), 1_250_000_000);
        assert_eq!(rate("x", "16MiB/s").unwrap(), 16 << 20);
        assert_eq!(rate("x", "1.5 Mbit/s").unwrap(), 187_500);
        for bad in [
            "0Mbit/s", "-5Mbit/s", "-1MiB/s", "0MiB/s", "fast", "400Mbit", "Mbit/s", "1bit/s",
        ] {
            let e = rate("--wan-limit", bad).unwrap_err();
            assert!(e.contains("--wan-limit"), "{bad}: {e}");
        }
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

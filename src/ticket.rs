//! The ticket: one copy-pasteable line, `swarm1:` + base32 (RFC 4648,
//! lowercase, no padding) of
//!
//! ```text
//! manifest id [32] | swarm secret [32] | addr count u8 | addrs
//! addr: 4 | ipv4 [4] | port u16   or   6 | ipv6 [16] | port u16
//! ```
//!
//! Holding the ticket is what lets a host join; the secret never travels on
//! the wire (see `node::auth`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use data_encoding::BASE32_NOPAD;

use crate::codec::{DecodeError, Reader, Writer, check_limit};
use crate::manifest::ManifestId;

pub const PREFIX: &str = "swarm1:";
pub const MAX_ADDRS: usize = 16;

#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    pub manifest_id: ManifestId,
    pub secret: [u8; 32],
    pub addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print the secret
        f.debug_struct("Ticket")
            .field("manifest_id", &self.manifest_id)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    pub fn encode(&self) -> String {
        let mut w = Writer::new();
        w.bytes(&self.manifest_id.0);
        w.bytes(&self.secret);
        let addrs = &self.addrs[..self.addrs.len().min(MAX_ADDRS)];
        w.u8(addrs.len() as u8);
        for a in addrs {
            encode_addr(&mut w, a);
        }
        format!("{PREFIX}{}", BASE32_NOPAD.encode(&w.buf).to_lowercase())
    }

    pub fn parse(s: &str) -> Result<Ticket, DecodeError> {
        let s = s.trim();
        let body = s.strip_prefix(PREFIX).ok_or_else(|| {
            DecodeError::invalid("ticket", format!("does not start with {PREFIX:?}"))
        })?;
        check_limit("ticket length", body.len() as u64, 2048)?;
        let raw = BASE32_NOPAD
            .decode(body.to_uppercase().as_bytes())
            .map_err(|e| DecodeError::invalid("ticket", format!("bad base32: {e}")))?;
        let mut r = Reader::new(&raw);
        let manifest_id = ManifestId(r.array()?);
        let secret = r.array()?;
        let n = r.u8()? as usize;
        check_limit("ticket address count", n as u64, MAX_ADDRS as u64)?;
        let addrs = (0..n)
            .map(|_| decode_addr(&mut r))
            .collect::<Result<Vec<_>, _>>()?;
        r.finish()?;
        if addrs.is_empty() {
            return Err(DecodeError::invalid("ticket", "no seed address"));
        }
        Ok(Ticket {
            manifest_id,
            secret,
            addrs,
        })
    }
}

pub fn encode_addr(w: &mut Writer, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            w.u8(4);
            w.bytes(&ip.octets());
        }
        IpAddr::V6(ip) => {
            w.u8(6);
            w.bytes(&ip.octets());
        }
    }
    w.u16(a.port());
}

pub fn decode_addr(r: &mut Reader) -> Result<SocketAddr, DecodeError> {
    let ip = match r.u8()? {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
        f => return Err(DecodeError::invalid("address family", f.to_string())),
    };
    Ok(SocketAddr::new(ip, r.u16()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Ticket {
        Ticket {
            manifest_id: ManifestId([0xab; 32]),
            secret: [0x11; 32],
            addrs: vec![
                "127.0.0.1:4433".parse().unwrap(),
                "[::1]:9".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn round_trip_is_one_line() {
        let t = sample();
        let s = t.encode();
        assert!(s.starts_with("swarm1:"));
        assert!(!s.contains(char::is_whitespace));
        assert_eq!(Ticket::parse(&s).unwrap(), t);
        assert_eq!(Ticket::parse(&format!("  {s}\n")).unwrap(), t);
        assert!(!format!("{t:?}").contains("11, 17"));
    }

    #[test]
    fn rejects_malformed() {
        let s = sample().encode();
        for bad in [
            "",
            "swarm1:",
            "swarm2:abc",
            "swarm1:!!!!",
            &s[..s.len() - 5],
            &format!("{s}aa"),
        ] {
            assert!(Ticket::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,300}") {
            let _ = Ticket::parse(&s);
        }
        #[test]
        fn base32_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let s = format!("{PREFIX}{}", BASE32_NOPAD.encode(&bytes));
            let _ = Ticket::parse(&s);
        }
    }
}

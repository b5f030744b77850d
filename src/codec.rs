//! Bounds-checked little-endian reading and writing shared by every decoder
//! (manifest, ticket, wire). Readers never panic: every length is checked
//! against the remaining input before anything is allocated.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum DecodeError {
    #[error("input ends early: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("{what} is {got}, limit is {max}")]
    TooLarge {
        what: &'static str,
        got: u64,
        max: u64,
    },
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
}

impl DecodeError {
    pub fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        DecodeError::Invalid {
            what,
            why: why.into(),
        }
    }
}

/// Checks `got <= max`, naming the quantity in the error.
pub fn check_limit(what: &'static str, got: u64, max: u64) -> Result<(), DecodeError> {
    if got > max {
        Err(DecodeError::TooLarge { what, got, max })
    } else {
        Ok(())
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A u16-length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str16(&mut self, what: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let len = self.u16()? as usize;
        check_limit(what, len as u64, max as u64)?;
        let raw = self.bytes(len)?;
        std::str::from_utf8(raw).map_err(|_| DecodeError::invalid(what, "not UTF-8"))
    }

    /// A count that is checked against `max` and against the bytes left,
    /// given that each item takes at least `min_item_len` bytes.
    pub fn count32(
        &mut self,
        what: &'static str,
        max: usize,
        min_item_len: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        check_limit(what, n as u64, max as u64)?;
        if n.saturating_mul(min_item_len) > self.remaining() {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n * min_item_len - self.remaining(),
            });
        }
        Ok(n)
    }

    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// Callers guarantee `s.len() <= u16::MAX` (all strings have smaller limits).
    pub fn str16(&mut self, s: &str) {
        self.u16(s.len() as u16);
        self.bytes(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_short_input_without_panic() {
        let mut r = Reader::new(&[1, 2]);
        assert!(matches!(r.u32(), Err(DecodeError::Truncated { .. })));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(
            r.count32("things", 10, 1),
            Err(DecodeError::TooLarge {
                got: 0x7fff_ffff,
                ..
            })
        ));
        let mut r = Reader::new(&[5, 0, 0, 0, 1]);
        assert!(matches!(
            r.count32("things", 10, 1),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn round_trip_and_trailing() {
        let mut w = Writer::new();
        w.u8(7);
        w.u16(300);
        w.u32(70000);
        w.u64(1 << 40);
        w.str16("héllo");
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 300);
        assert_eq!(r.u32().unwrap(), 70000);
        assert_eq!(r.u64().unwrap(), 1 << 40);
        assert_eq!(r.str16("s", 64).unwrap(), "héllo");
        r.finish().unwrap();
        let r = Reader::new(&[1]);
        assert_eq!(r.finish(), Err(DecodeError::Trailing(1)));
    }
}

//! A piece buffer whose bytes start on a `DIRECT_ALIGN` boundary, so that
//! `Content::write_at` can hand it to the kernel with O_DIRECT. Dropped
//! buffers go back to a small pool: a fresh multi-MiB allocation costs a
//! page fault per 4 KiB on first touch (about 50,000 per GiB received).

use std::sync::Mutex;

use super::content::DIRECT_ALIGN;

/// Buffers kept for reuse. The pool never holds more buffers than were
/// alive at once, so this only needs to cover the most requests in flight
/// (`core::DownloadConfig::for_piece_size`: 16 of 1 MiB, 64 at most).
const POOL_MAX: usize = 64;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

pub struct PieceBuf {
    /// Its length is how much of it was ever written (zeros or data):
    /// a reused buffer keeps that, so `overwrite` costs no memset.
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl PieceBuf {
    /// An empty buffer that holds `len` bytes without reallocating.
    pub fn with_capacity(len: usize) -> PieceBuf {
        let want = len + DIRECT_ALIGN;
        let reused = {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            // the smallest that fits: a block's buffer must not take a
            // piece's, or the next piece allocates (and faults in) anew
            let found = (pool.iter().enumerate())
                .filter(|(_, b)| b.capacity() >= want)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            found.map(|i| pool.swap_remove(i))
        };
        let mut raw = reused.unwrap_or_else(|| Vec::with_capacity(want));
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        if raw.len() < start {
            raw.resize(start, 0);
        }
        PieceBuf { raw, start, len: 0 }
    }

    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> PieceBuf {
        let mut b = PieceBuf::with_capacity(len);
        b.resize(len);
        b
    }

    /// Makes it `len` bytes long: cut, or grown with zeros.
    pub fn resize(&mut self, len: usize) {
        let old = self.len;
        self.overwrite(len);
        if len > old {
            self.as_mut_slice()[old..].fill(0);
        }
    }

    /// Makes it `len` bytes long, for the caller to overwrite them all:
    /// what they hold until then is unspecified (a reused buffer's old
    /// bytes), and nothing is zeroed that was written before.
    pub fn overwrite(&mut self, len: usize) {
        let end = self.start + len;
        if self.raw.len() < end {
            self.raw.resize(end, 0);
        }
        self.len = len;
    }

    /// Appends `n` zero bytes.
    pub fn extend_zeros(&mut self, n: usize) {
        self.resize(self.len + n);
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }

    /// Appends; past the capacity given it still works, only unaligned.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let end = self.start + self.len;
        let fits = (self.raw.len() - end).min(bytes.len());
        self.raw[end..end + fits].copy_from_slice(&bytes[..fits]);
        self.raw.extend_from_slice(&bytes[fits..]);
        self.len += bytes.len();
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

impl AsRef<[u8]> for PieceBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for PieceBuf {
    fn drop(&mut self) {
        let raw = std::mem::take(&mut self.raw);
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(raw);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_start_aligned_and_keep_their_order() {
        for len in [0, 1, 4095, 4096, 4097, 1 << 20] {
            let mut b = PieceBuf::with_capacity(len);
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for part in data.chunks(1000) {
                b.extend_from_slice(part);
            }
            assert_eq!(b.as_slice(), &data[..]);
            assert_eq!(b.len(), len);
            assert_eq!(
                b.as_slice().as_ptr() as usize % DIRECT_ALIGN,
                0,
                "len {len}"
            );
        }
    }

    /// A reused buffer keeps what was written into it for `overwrite`,
    /// but `resize`, `zeroed` and appends give exactly their bytes.
    #[test]
    fn reused_buffers_give_zeros_only_where_asked() {
        for _ in 0..3 {
            let mut b = PieceBuf::with_capacity(8192);
            b.extend_from_slice(&[7u8; 8192]);
            drop(b);
        }
        for _ in 0..POOL_MAX {
            let mut z = PieceBuf::zeroed(8192);
            assert!(z.as_slice().iter().all(|&x| x == 0));
            z.resize(100);
            z.resize(200);
            assert!(z.as_slice().iter().all(|&x| x == 0));
            z.extend_from_slice(&[1, 2, 3]);
            z.extend_zeros(2);
            assert_eq!(&z.as_slice()[198..], &[0, 0, 1, 2, 3, 0, 0]);
            let mut o = PieceBuf::with_capacity(8192);
            assert!(o.is_empty());
            o.overwrite(8192);
            assert_eq!(o.len(), 8192);
            o.as_mut_slice().fill(9);
        }
    }
}

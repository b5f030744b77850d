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
    raw: Vec<u8>,
    start: usize,
}

impl PieceBuf {
    /// An empty buffer that holds `len` bytes without reallocating.
    pub fn with_capacity(len: usize) -> PieceBuf {
        let want = len + DIRECT_ALIGN;
        let reused = {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            let found = pool.iter().position(|b| b.capacity() >= want);
            found.map(|i| pool.swap_remove(i))
        };
        let mut raw = reused.unwrap_or_else(|| Vec::with_capacity(want));
        raw.clear();
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        raw.resize(start, 0);
        PieceBuf { raw, start }
    }

    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> PieceBuf {
        let mut b = PieceBuf::with_capacity(len);
        b.raw.resize(b.start + len, 0);
        b
    }

    /// Makes it `len` bytes long: cut, or grown with zeros.
    pub fn resize(&mut self, len: usize) {
        self.raw.resize(self.start + len, 0);
    }

    /// Appends `n` zero bytes.
    pub fn extend_zeros(&mut self, n: usize) {
        self.raw.resize(self.raw.len() + n, 0);
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..]
    }

    /// Appends; past the capacity given it still works, only unaligned.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
    }

    pub fn len(&self) -> usize {
        self.raw.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..]
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
}

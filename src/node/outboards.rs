//! Outboards (the block CVs of a piece, `manifest::blocks`) known to be
//! right: computed from a piece that checked out, or received and checked
//! against the manifest. Serving an outboard from here costs no disk read
//! and no hashing; without it every Outboard request read and hashed the
//! whole piece for 0.2% of its bytes. One process serves one manifest, so
//! a piece index is the key. Bounded: past `MAX_BYTES` of CVs an entry is
//! dropped for each one added.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use crate::manifest::blocks::Cv;

/// 16 MiB of CVs: the outboards of 8 GiB of pieces.
const MAX_BYTES: usize = 16 << 20;

struct Cache {
    map: HashMap<u32, Arc<[Cv]>>,
    bytes: usize,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| {
    Mutex::new(Cache {
        map: HashMap::new(),
        bytes: 0,
    })
});

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    CACHE.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn get(piece: u32) -> Option<Arc<[Cv]>> {
    cache().map.get(&piece).cloned()
}

/// Remembers the checked outboard of `piece`.
pub fn put(piece: u32, cvs: &[Cv]) {
    let mut c = cache();
    let add = cvs.len() * 32;
    while c.bytes + add > MAX_BYTES {
        let Some(&k) = c.map.keys().next() else { break };
        if let Some(old) = c.map.remove(&k) {
            c.bytes -= old.len() * 32;
        }
    }
    if let Some(old) = c.map.insert(piece, cvs.into()) {
        c.bytes -= old.len() * 32;
    }
    c.bytes += add;
}

//! Micro-benchmarks (divan) of the hot paths that need no network:
//!
//! * manifest hashing: `storage::build` of a file on disk (page cache)
//!   against blake3 of one buffer of the same size in memory, both with all
//!   cores, in bytes per second;
//! * codec: encode and decode of the biggest messages (a bitfield of
//!   1 Mi pieces, a full peer list, a manifest of 10,000 pieces);
//! * picker: piece decisions per second of the sans-IO `Download` with
//!   10,000 pieces and 100 peers.
//!
//! ```text
//!     cargo bench --bench micro
//!     SWARM_BENCH_QUICK=1 cargo bench --bench micro    # CI: hashes 32 MiB, not 256
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bitvec::prelude::*;
use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use rand::{Rng, RngExt, SeedableRng};

use swarm::core::{Download, DownloadConfig};
use swarm::manifest::Manifest;
use swarm::wire::{MAX_PEERS, Message, PeerInfo};

fn main() {
    divan::main();
}

/// Bytes hashed per sample: 256 MiB, 32 MiB in quick mode.
fn hash_bytes() -> usize {
    if std::env::var("SWARM_BENCH_QUICK").is_ok_and(|v| v == "1") {
        32 << 20
    } else {
        256 << 20
    }
}

fn random(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::SmallRng::seed_from_u64(1).fill_bytes(&mut data);
    data
}

mod hashing {
    use super::*;

    /// blake3 of one in-memory buffer on all cores: the ceiling.
    #[divan::bench(sample_count = 10)]
    fn blake3_buffer(bencher: Bencher) {
        let data = random(hash_bytes());
        bencher.counter(BytesCount::new(data.len())).bench(|| {
            blake3::Hasher::new()
                .update_rayon(black_box(&data))
                .finalize()
        });
    }

    /// The manifest of the same bytes as a file (1 MiB pieces).
    #[divan::bench(sample_count = 10)]
    fn manifest_build(bencher: Bencher) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("image.bin");
        std::fs::write(&path, random(hash_bytes())).expect("write");
        bencher
            .counter(BytesCount::new(hash_bytes()))
            .bench(|| swarm::storage::build(black_box(&path), None).expect("build"));
    }
}

mod codec {
    use super::*;

    fn bitfield() -> Message {
        let mut bits = bitvec![u8, Lsb0; 0; 1 << 20];
        let mut rng = rand::rngs::SmallRng::seed_from_u64(2);
        for i in 0..bits.len() {
            bits.set(i, rng.random_bool(0.5));
        }
        Message::Bitfield(bits)
    }

    fn peers() -> Message {
        Message::Peers(
            (0..MAX_PEERS)
                .map(|i| PeerInfo {
                    id: [i as u8; 16],
                    group: format!("datacenter-{}", i % 7),
                    addrs: vec![SocketAddr::from((
                        [10, 0, (i / 250) as u8, (i % 250) as u8],
                        7000,
                    ))],
                })
                .collect::<Vec<_>>()
                .into(),
        )
    }

    fn manifest() -> Manifest {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("image.bin");
        // 10,000 pieces of 4 KiB: the encoding holds one hash per piece
        std::fs::write(&path, random(10_000 * 4096)).expect("write");
        swarm::storage::build(&path, Some(4096)).expect("build")
    }

    #[divan::bench(args = ["bitfield 1Mi pieces", "peers 512"])]
    fn encode(bencher: Bencher, which: &str) {
        let m = if which.starts_with("bitfield") {
            bitfield()
        } else {
            peers()
        };
        let len = m.encode_frame().len();
        bencher
            .counter(BytesCount::new(len))
            .bench(|| black_box(&m).encode_frame());
    }

    #[divan::bench(args = ["bitfield 1Mi pieces", "peers 512"])]
    fn decode(bencher: Bencher, which: &str) {
        let m = if which.starts_with("bitfield") {
            bitfield()
        } else {
            peers()
        };
        let frame = m.encode_frame();
        bencher
            .counter(BytesCount::new(frame.len()))
            .bench(|| Message::decode(black_box(&frame[4..])).expect("decode"));
    }

    #[divan::bench]
    fn manifest_encode(bencher: Bencher) {
        let m = manifest();
        bencher
            .counter(BytesCount::new(m.encode().len()))
            .bench(|| black_box(&m).encode());
    }

    #[divan::bench]
    fn manifest_decode(bencher: Bencher) {
        let bytes = manifest().encode();
        bencher
            .counter(BytesCount::new(bytes.len()))
            .bench(|| Manifest::decode(black_box(&bytes)).expect("decode"));
    }
}

mod picker {
    use super::*;

    const PIECES: usize = 10_000;
    const PEERS: u64 = 100;

    /// A download of 10,000 pieces with 100 peers that each hold a random
    /// half of them.
    fn download() -> Download {
        let mut d = Download::new(
            bitvec![0; PIECES],
            DownloadConfig::for_piece_size(1 << 20),
            3,
        );
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        for p in 0..PEERS {
            d.add_peer(p);
            let mut bits: BitVec = bitvec![0; PIECES];
            for i in 0..PIECES {
                bits.set(i, rng.random_bool(0.5));
            }
            d.peer_bitfield(p, &bits).expect("bitfield");
        }
        d
    }

    /// Picks and completions until the download is whole: decisions per
    /// second is pieces per second.
    #[divan::bench(sample_count = 10)]
    fn whole_download(bencher: Bencher) {
        bencher
            .counter(ItemsCount::new(PIECES))
            .with_inputs(download)
            .bench_local_values(|mut d| {
                let now = Instant::now();
                while !d.is_complete() {
                    for (peer, i) in d.poll_requests(now) {
                        d.piece_received(peer, i, 1 << 20, Duration::from_millis(5));
                    }
                }
                d
            });
    }
}

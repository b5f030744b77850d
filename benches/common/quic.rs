//! QUIC alone with swarm's settings: the ceiling of swarm's transport on
//! this machine. Endpoints are made by `swarm::node::quic_endpoint` (socket
//! buffers, GSO batches, transport and TLS as `seed` and `join` make
//! them). A puller asks for S bytes in 1 MiB pieces, one stream each, 8 in
//! flight from the start (a seed serves one peer up to 8 at once, starting
//! from 2); the server answers each from one buffer in memory. No disk, no
//! hashing, no swarm protocol: what is left is QUIC (packets, AES-GCM, flow
//! and congestion control) and the kernel's UDP.
//!
//! Used by `benches/loopback.rs` (one pair on loopback) and
//! `benches/compare/` (a chain of hosts on the emulated network).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use swarm::node::{Tuning, quic_endpoint, tls};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const PIECE: u64 = 1 << 20;
const IN_FLIGHT: usize = 8;

/// An endpoint with swarm's settings; call inside a tokio runtime.
pub fn endpoint(listen: SocketAddr) -> Result<quinn::Endpoint, String> {
    quic_endpoint(listen, &Tuning::default()).map_err(|e| e.to_string())
}

/// Accepts one connection and answers its piece requests until it closes.
pub async fn serve_one(ep: quinn::Endpoint) {
    let Some(incoming) = ep.accept().await else {
        return;
    };
    let Ok(conn) = incoming.await else {
        return;
    };
    tls::open_up(&conn, &Tuning::default());
    let piece = Bytes::from(vec![0x5a; PIECE as usize]);
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let piece = piece.clone();
        tokio::spawn(async move {
            let mut ask = [0u8; 8];
            recv.read_exact(&mut ask).await.ok()?;
            let len = u64::from_le_bytes(ask).min(PIECE) as usize;
            send.write_chunk(piece.slice(..len)).await.ok()?;
            send.finish().ok()
        });
    }
}

async fn fetch(conn: quinn::Connection, len: u64) -> Result<(), String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&len.to_le_bytes())
        .await
        .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let mut got = 0u64;
    while let Some(chunk) = recv
        .read_chunk(usize::MAX, true)
        .await
        .map_err(|e| e.to_string())?
    {
        got += chunk.bytes.len() as u64;
    }
    if got != len {
        return Err(format!("{got} bytes instead of {len}"));
    }
    Ok(())
}

/// Connects from `ep` to `server` and pulls `size` bytes. Returns the
/// connection (for the caller to close) and the time from the first
/// request to the last byte (the handshake left out).
pub async fn pull(
    ep: &quinn::Endpoint,
    server: SocketAddr,
    size: u64,
) -> Result<(quinn::Connection, Duration), String> {
    let conn = ep
        .connect(server, "swarm")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| format!("handshake with {server}: {e}"))?;
    tls::open_up(&conn, &Tuning::default());
    // swarm grants receive credit for the bytes of its requests in flight
    // (`node::credit`); here a window that always holds them does the same
    let window = IN_FLIGHT as u64 * PIECE + u64::from(tls::POST_AUTH_WINDOW);
    conn.set_receive_window(quinn::VarInt::from_u64(window).expect("small"));
    let start = Instant::now();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let mut at = 0;
    while at < size {
        let len = PIECE.min(size - at);
        at += len;
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let c = conn.clone();
        tasks.spawn(async move {
            let r = fetch(c, len).await;
            drop(permit);
            r
        });
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| e.to_string())??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    Ok((conn, start.elapsed()))
}

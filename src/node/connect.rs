//! Making connections: dialing a known peer, accepting and authenticating
//! incoming ones (with a bound on handshakes in progress), and handing each
//! authenticated connection to the engine as an `Event::Connected`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::Endpoint;
use tokio::sync::mpsc;

use super::engine::Event;
use super::peer::{self, Handshaken, Identity, close};
use crate::text::Escaped;
use crate::wire::PeerInfo;

/// How long a dial may take before the handshake starts.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at most; beyond, unvalidated senders get a retry.
const HANDSHAKE_SLOTS: usize = 64;

/// An unspecified advertised IP means "the address you see me at".
pub fn resolve_addrs(addrs: &[SocketAddr], remote: SocketAddr) -> Vec<SocketAddr> {
    addrs
        .iter()
        .map(|a| {
            if a.ip().is_unspecified() {
                SocketAddr::new(remote.ip(), a.port())
            } else {
                *a
            }
        })
        .collect()
}

pub async fn dial(endpoint: Endpoint, id: Identity, info: PeerInfo, events: mpsc::Sender<Event>) {
    let mut why = String::from("no address");
    let wan = (info.group != id.group).then(|| id.wan.client.clone());
    for addr in &info.addrs {
        match connect(&endpoint, &id, *addr, wan.clone()).await {
            Ok(h) if h.hello.peer_id == info.id => {
                let _ = events.send(Event::Connected(Box::new(h))).await;
                return;
            }
            Ok(h) => {
                h.conn.close(close::DUPLICATE.into(), b"unexpected peer id");
                why = format!("{addr} answered with another peer id");
            }
            Err(e) => why = format!("{addr}: {e:#}"),
        }
    }
    let _ = events.send(Event::DialFailed { id: info.id, why }).await;
}

/// Connects and authenticates, within `DIAL_TIMEOUT` plus the handshake
/// timeout; with `config` instead of the endpoint's default (a host of
/// another group).
pub async fn connect(
    endpoint: &Endpoint,
    id: &Identity,
    addr: SocketAddr,
    config: Option<quinn::ClientConfig>,
) -> anyhow::Result<Handshaken> {
    connect_within(endpoint, id, addr, config, DIAL_TIMEOUT).await
}

async fn connect_within(
    endpoint: &Endpoint,
    id: &Identity,
    addr: SocketAddr,
    config: Option<quinn::ClientConfig>,
    wait: Duration,
) -> anyhow::Result<Handshaken> {
    let connecting = match config {
        Some(c) => endpoint.connect_with(c, addr, "swarm")?,
        None => endpoint.connect(addr, "swarm")?,
    };
    let conn = tokio::time::timeout(wait, connecting)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {:.1}s", wait.as_secs_f64()))??;
    peer::handshake_dialer(id, conn).await
}

/// The first pause between two dials of a host that did not answer; it
/// doubles with each attempt up to `RETRY_PAUSE_MAX`.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);

/// Dials `addr` again and again until it answers or `until` passes (a
/// seed still hashing, a host not yet started, a lost packet burst): each
/// attempt gets at most `DIAL_TIMEOUT`, the pause between attempts doubles
/// from 250 ms to 2 s, and all of it ends by `until`. A host that refused
/// the ticket is not asked again.
pub async fn connect_until(
    endpoint: &Endpoint,
    id: &Identity,
    addr: SocketAddr,
    until: tokio::time::Instant,
) -> anyhow::Result<Handshaken> {
    let start = tokio::time::Instant::now();
    let mut pause = RETRY_PAUSE;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        // the handshake too must end by `until`
        let attempt = connect_within(endpoint, id, addr, None, left.min(DIAL_TIMEOUT));
        let err = match tokio::time::timeout(left, attempt).await {
            Ok(Ok(h)) => return Ok(h),
            Ok(Err(e)) => e,
            Err(_) => anyhow::anyhow!("handshake not done by the connect timeout"),
        };
        let text = format!("{err:#}");
        let refused = text.contains(peer::REJECTED_AUTH) || text.contains(peer::REJECTED_MANIFEST);
        if refused || tokio::time::Instant::now() + pause >= until {
            return Err(err.context(format!(
                "{attempts} attempt{} over {:.1}s",
                if attempts == 1 { "" } else { "s" },
                start.elapsed().as_secs_f64()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_PAUSE_MAX);
    }
}

/// Accepts connections, authenticates them, and hands them to the engine.
pub async fn accept_loop(endpoint: Endpoint, id: Identity, events: mpsc::Sender<Event>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(HANDSHAKE_SLOTS));
    while let Some(incoming) = endpoint.accept().await {
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            // Busy: make unvalidated senders prove their address first
            // (a QUIC retry), so spoofed packets cannot hold the slots.
            Err(_) if !incoming.remote_address_validated() => {
                let _ = incoming.retry();
                continue;
            }
            Err(_) => match limit.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (id, events) = (id.clone(), events.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let connecting = if id.wan.is_remote(incoming.remote_address()) {
                incoming.accept_with(id.wan.server.clone())
            } else {
                incoming.accept()
            };
            let Ok(connecting) = connecting else { return };
            let conn = match tokio::time::timeout(DIAL_TIMEOUT, connecting).await {
                Ok(Ok(c)) => c,
                _ => return,
            };
            match peer::handshake_acceptor(&id, conn).await {
                Ok(h) => {
                    let _ = events.send(Event::Connected(Box::new(h))).await;
                }
                Err(e) => tracing::info!("refused a connection: {}", Escaped(&format!("{e:#}"))),
            }
        });
    }
}

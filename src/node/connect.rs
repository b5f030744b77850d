//! Making connections: dialing a known peer, accepting and authenticating
//! incoming ones (with bounds on handshakes in progress, in all and per
//! source, that never make the accept loop wait), and handing each
//! authenticated connection to the engine as an `Event::Connected`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::Endpoint;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::PREAUTH_TIMEOUT;
use super::event::Event;
use super::gate::{Admit, Gate, Source};
use super::handshake::{self, BUSY, Refused};
use super::identity::{Handshaken, Identity};
use crate::text::Escaped;
use crate::wire::PeerInfo;
use crate::wire::close;

/// How long a dial may take before the handshake starts.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

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
/// timeouts; with `config` instead of the endpoint's default (a host of
/// another group). A host that is busy (too many handshakes in progress)
/// is asked again, after a short pause that doubles, within `DIAL_TIMEOUT`.
pub async fn connect(
    endpoint: &Endpoint,
    id: &Identity,
    addr: SocketAddr,
    config: Option<quinn::ClientConfig>,
) -> anyhow::Result<Handshaken> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match connect_once(endpoint, id, addr, config.clone(), DIAL_TIMEOUT).await {
            Err(e)
                if matches!(e.downcast_ref(), Some(Refused::Busy))
                    && start.elapsed() + pause < DIAL_TIMEOUT =>
            {
                tracing::debug!("{addr} is busy; again in {pause:?}");
                tokio::time::sleep(pause.mul_f64(0.5 + rand::random::<f64>())).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            r => return r,
        }
    }
}

async fn connect_once(
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
    let conn = match tokio::time::timeout(wait, connecting).await {
        Err(_) => anyhow::bail!("no answer within {:.1}s", wait.as_secs_f64()),
        Ok(Err(e)) => return Err(Refused::from_close(&e).map_or_else(|| e.into(), Into::into)),
        Ok(Ok(c)) => c,
    };
    handshake::dialer(id, conn).await
}

/// The first pause between two dials of a host that did not answer; it
/// doubles with each attempt up to `RETRY_PAUSE_MAX`.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);

/// Dials `addr` again and again until it answers or `until` passes (a
/// seed still hashing, a host not yet started, a lost packet burst, a host
/// busy with handshakes): each attempt gets at most `DIAL_TIMEOUT`, the
/// pause between attempts doubles from 250 ms to 2 s, and all of it ends by
/// `until`. A host that refused the ticket or speaks another version is not
/// asked again.
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
        let attempt = connect_once(endpoint, id, addr, None, left.min(DIAL_TIMEOUT));
        let err = match tokio::time::timeout(left, attempt).await {
            Ok(Ok(h)) => return Ok(h),
            Ok(Err(e)) => e,
            Err(_) => anyhow::anyhow!("handshake not done by the connect timeout"),
        };
        let refused = matches!(
            err.downcast_ref(),
            Some(Refused::Auth | Refused::Manifest(_) | Refused::Version { .. })
        );
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
/// It never waits: each incoming connection is started, retried or refused
/// at once (`gate`), and one that has not proved the secret within
/// `PREAUTH_TIMEOUT` of its TLS handshake (itself within `PREAUTH_TIMEOUT`)
/// is closed. Connections count towards the engine's connection cap only
/// once they are authenticated.
pub async fn accept_loop(endpoint: Endpoint, id: Identity, events: mpsc::Sender<Event>) {
    let gate = Arc::new(Mutex::new(Gate::new(PREAUTH_SLOTS, PREAUTH_PER_SOURCE)));
    while let Some(incoming) = endpoint.accept().await {
        let src = Source::from(incoming.remote_address());
        let stop = CancellationToken::new();
        let admitted = lock(&gate).admit(src, incoming.remote_address_validated(), stop.clone());
        let ticket = match admitted {
            Admit::Accept { ticket, evicted } => {
                if let Some(h) = evicted {
                    tracing::debug!(?src, "all handshake slots taken: evicting one");
                    h.cancel();
                }
                ticket
            }
            Admit::Retry => {
                tracing::debug!(?src, "busy: asking for address validation");
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
                continue;
            }
            Admit::Refuse => {
                tracing::debug!(?src, "busy: refused");
                incoming.refuse();
                continue;
            }
        };
        let slot = Slot {
            gate: gate.clone(),
            src,
            ticket,
        };
        tokio::spawn(accept(incoming, id.clone(), events.clone(), slot, stop));
    }
}

/// Handshakes in progress (TLS, then the peer's proof) at most, and from
/// one source (an IPv4 address or an IPv6 /64): see `gate`.
const PREAUTH_SLOTS: usize = 256;
const PREAUTH_PER_SOURCE: usize = 16;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handshake's place in the gate, given back when dropped.
struct Slot {
    gate: Arc<Mutex<Gate<CancellationToken>>>,
    src: Source,
    ticket: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.gate).release(self.src, self.ticket);
    }
}

/// One incoming connection: TLS and the peer's proof while it holds its
/// slot (given up if the gate evicts it: `stop`), then the rest of the
/// handshake, and the engine.
async fn accept(
    incoming: quinn::Incoming,
    id: Identity,
    events: mpsc::Sender<Event>,
    slot: Slot,
    stop: CancellationToken,
) {
    let connecting = if id.wan.is_remote(incoming.remote_address()) {
        incoming.accept_with(id.wan.server.clone())
    } else {
        incoming.accept()
    };
    let Ok(connecting) = connecting else { return };
    let (from, at) = (connecting.remote_address(), Instant::now());
    // dropping `connecting` (evicted, or too slow) closes it
    let conn = tokio::select! {
        r = tokio::time::timeout(PREAUTH_TIMEOUT, connecting) => match r {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                // quinn shows a ConnectionClose with the peer's reason bytes
                let e = crate::text::Escaped(&e.to_string()).to_string();
                return tracing::debug!(%from, "TLS handshake failed: {e}");
            }
            Err(_) => return tracing::debug!(%from, "no TLS handshake in time"),
        },
        _ = stop.cancelled() => return tracing::debug!(%from, "evicted during TLS"),
    };
    tracing::trace!(%from, "TLS done after {:?}", at.elapsed());
    let proved = tokio::select! {
        r = handshake::acceptor_proof(&id, conn.clone()) => r,
        _ = stop.cancelled() => {
            conn.close(close::DUPLICATE.into(), BUSY.as_bytes());
            return tracing::debug!(%from, "evicted before its proof");
        }
    };
    tracing::trace!(%from, "proof after {:?}: {}", at.elapsed(), proved.is_ok());
    // authenticated (or refused): no longer an outsider's handshake
    drop(slot);
    let h = match proved {
        Ok(p) => handshake::acceptor_hello(&id, p).await,
        Err(e) => Err(e),
    };
    match h {
        Ok(h) => {
            let _ = events.send(Event::Connected(Box::new(h))).await;
        }
        Err(e) => tracing::info!("refused a connection: {}", Escaped(&format!("{e:#}"))),
    }
}

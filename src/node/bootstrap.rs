//! How a host without the manifest finds it: every ticket and `--peer`
//! address dialed at once, the first host that sends the manifest the
//! ticket names wins (`bootstrap`); `fetch_manifest` for `swarm inspect`
//! and `swarm verify`, which only want the manifest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::handshake::Refused;
use super::identity::{Handshaken, Identity};
use super::run::{endpoint, unix_ms};
use super::{NodeError, connect, fetch};
use crate::manifest::Manifest;
use crate::text::Escaped;
use crate::ticket::Ticket;

/// Why a bootstrap host did not give us the manifest.
enum Failed {
    Connect(anyhow::Error),
    Manifest(NodeError),
}

/// Dials every ticket address and `--peer` address at once; each
/// authenticated host is asked for the manifest, and the first that sends
/// the one the ticket names wins. A host that refuses it, sends another, or
/// stalls does not hold up the others. Hosts that do not answer are dialed
/// again until `connect_timeout`, which bounds the wait for a first
/// authenticated host; a manifest already under way may take
/// `MANIFEST_TIMEOUT`.
pub(super) async fn bootstrap(
    ep: &quinn::Endpoint,
    id: &Identity,
    ticket: &Ticket,
    peers: &[SocketAddr],
    connect_timeout: Duration,
) -> Result<(Handshaken, Manifest, Vec<u8>), NodeError> {
    let mut addrs = ticket.addrs.clone();
    addrs.extend(peers.iter().filter(|a| !ticket.addrs.contains(a)));
    let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut set = tokio::task::JoinSet::new();
    let until = tokio::time::Instant::now() + connect_timeout;
    for &addr in &addrs {
        let (ep, id, connected) = (ep.clone(), id.clone(), connected.clone());
        let want = ticket.manifest_id;
        set.spawn(async move {
            let h = match connect::connect_until(&ep, &id, addr, until).await {
                Ok(h) => h,
                Err(e) => return (addr, Err(Failed::Connect(e))),
            };
            connected.store(true, std::sync::atomic::Ordering::Relaxed);
            match fetch::manifest(&h.conn, want).await {
                Ok((m, bytes)) => (addr, Ok((h, m, bytes))),
                Err(e) => {
                    h.conn
                        .close(crate::wire::close::PROTOCOL.into(), b"manifest");
                    (addr, Err(Failed::Manifest(e)))
                }
            }
        });
    }
    let all = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut errors = Vec::new();
    let mut bad_manifest = None;
    // a host refused the ticket (auth, manifest id), or speaks another version
    let (mut rejected, mut version) = (false, false);
    // every dial ends by `until` and reports why; this is the backstop
    let deadline = tokio::time::sleep_until(until + Duration::from_secs(1));
    tokio::pin!(deadline);
    let mut waited = false;
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                Some(Ok((_, Ok(found)))) => return Ok(found),
                Some(Ok((addr, Err(Failed::Connect(e))))) => {
                    match e.downcast_ref::<Refused>() {
                        Some(Refused::Auth | Refused::Manifest(_)) => rejected = true,
                        Some(Refused::Version { .. }) => version = true,
                        _ => {}
                    }
                    errors.push(format!("{addr}: {e:#}"));
                }
                Some(Ok((addr, Err(Failed::Manifest(e))))) => {
                    tracing::warn!("{addr}: {}; trying the other hosts", Escaped(&e.to_string()));
                    errors.push(format!("{addr}: {e}"));
                    if matches!(e, NodeError::Verification(_)) {
                        bad_manifest = Some(e);
                    }
                }
                Some(Err(e)) => errors.push(e.to_string()),
                None => break,
            },
            _ = &mut deadline, if !waited => {
                waited = true;
                if !connected.load(std::sync::atomic::Ordering::Relaxed) {
                    errors.push("timed out".into());
                    break;
                }
            }
        }
    }
    if let Some(e) = bad_manifest {
        return Err(e);
    }
    let why = errors.join("; ");
    if version {
        return Err(NodeError::Verification(format!(
            "a host of {all} speaks another protocol version: {why}"
        )));
    }
    if rejected {
        return Err(NodeError::Verification(format!(
            "a host of {all} rejected the ticket: {why}"
        )));
    }
    Err(NodeError::Unreachable {
        addrs: all,
        secs: connect_timeout.as_secs(),
        why,
    })
}

/// The manifest a ticket names, from the first of its hosts (or `peers`)
/// that sends it: for `swarm inspect` and `swarm verify`. This host
/// advertises no address (nobody dials it back) and leaves at once.
pub async fn fetch_manifest(
    ticket: &Ticket,
    peers: &[SocketAddr],
    connect_timeout: Duration,
    stop: &CancellationToken,
) -> Result<Manifest, NodeError> {
    let tuning = super::Tuning::default();
    let (ep, wan) = endpoint(SocketAddr::from(([0, 0, 0, 0], 0)), &tuning)?;
    let id = Identity {
        manifest_id: ticket.manifest_id,
        secret: ticket.secret,
        peer_id: rand::random(),
        since: unix_ms(),
        group: "default".into(),
        addrs: Vec::new(),
        tuning,
        wan,
    };
    let (first, m, _) = tokio::select! {
        r = bootstrap(&ep, &id, ticket, peers, connect_timeout) => r?,
        _ = stop.cancelled() => return Err(NodeError::Interrupted),
    };
    first.conn.close(crate::wire::close::DONE.into(), b"done");
    // the close reaches the host, or it times the connection out
    let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
    Ok(m)
}

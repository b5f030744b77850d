//! The endpoint every run binds, and the seed's entry point: it hashes
//! (or takes back its `--state`), then hands everything to the engine.
//! A join's is in `join`, how it finds its first host in `bootstrap`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use quinn_proto::RandomConnectionIdGenerator;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::connect;
use super::engine::{EVENT_QUEUE, Engine, Exit, Parts};
use super::event::Event;
use super::identity::{Handshaken, Identity, WanPath};
use super::{NodeError, Report, SeedConfig, Status, hex, socket, tls};
use crate::manifest::Manifest;
use crate::storage::Content;
use crate::ticket::Ticket;

/// A QUIC endpoint on `listen` as `seed` and `join` make theirs (socket
/// buffers, GSO batches, advertised payload size, transport and TLS of
/// `tuning`), without swarm on top: for measuring QUIC alone
/// (`benches/common/quic.rs`, used by the loopback and compare benches). Connections still start with the
/// pre-authentication limits; `tls::open_up` lifts them.
pub fn quic_endpoint(
    listen: SocketAddr,
    tuning: &tls::Tuning,
) -> Result<quinn::Endpoint, NodeError> {
    Ok(endpoint(listen, tuning)?.0)
}

pub(super) fn endpoint(
    listen: SocketAddr,
    tuning: &tls::Tuning,
) -> Result<(quinn::Endpoint, WanPath), NodeError> {
    let cannot = |e: std::io::Error| NodeError::Network(format!("cannot listen on {listen}: {e}"));
    let socket = socket::bind(listen).map_err(cannot)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| NodeError::Other(anyhow::anyhow!("no async runtime")))?;
    // The peer's path MTU discovery stops at the largest UDP payload we
    // advertise: quinn's default (1472) would cap it at Ethernet size even
    // where jumbo frames or loopback allow more.
    let mut config = quinn::EndpointConfig::default();
    config
        .cid_generator(|| Box::new(RandomConnectionIdGenerator::new(CID_LEN)))
        .max_udp_payload_size(tuning.max_mtu)
        .map_err(|e| NodeError::Other(anyhow::anyhow!("max UDP payload: {e}")))?;
    let socket = socket::wrap(socket, &*runtime, tuning.max_mtu).map_err(cannot)?;
    super::credit::set_limit(tuning.conn_window);
    let serving = Arc::new(super::cc::WanServing::default());
    let configs = tls::configs(tuning, serving.clone())?;
    let mut ep =
        quinn::Endpoint::new_with_abstract_socket(config, Some(configs.server), socket, runtime)
            .map_err(cannot)?;
    ep.set_default_client_config(configs.client);
    let wan = WanPath {
        client: configs.client_wan,
        server: configs.server_wan,
        addrs: Default::default(),
        serving,
    };
    Ok((ep, wan))
}

/// Bytes of the connection IDs this endpoint hands out, which every packet
/// sent to it carries. quinn's default is 8; 4 saves 4 bytes a packet (78
/// bytes of headers around each 1434 bytes of piece data at MTU 1500, see
/// docs/architecture.md, "QUIC tuning"). Not 2, as it was: quinn draws the
/// ID of a QUIC retry (which the client's next Initial is addressed to)
/// without checking it against the IDs in use, and an Initial whose ID
/// belongs to a live connection is routed to it and dropped. With 2 bytes
/// and a few thousand IDs out (8 per connection, up to 512 peers and 256
/// handshakes) that was a few percent of all retries: under attack, one
/// honest handshake in 20-40 stalled 2-4 s until the connection owning the
/// ID closed (tests/it/preauth.rs), and for good where it was a peer's.
/// Zero-length IDs would save more but route by address, and two hosts
/// that dial each other at once briefly have two connections between the
/// same two sockets.
const CID_LEN: usize = 4;

/// What we tell peers: `--advertise` if given, else the listen address,
/// where an unspecified IP stands for "where you see me".
pub(super) fn advertised(
    ep: &quinn::Endpoint,
    advertise: &[SocketAddr],
) -> Result<Vec<SocketAddr>, NodeError> {
    let local = ep
        .local_addr()
        .map_err(|e| NodeError::Network(e.to_string()))?;
    // with -v: where others can reach this host (e.g. for `join --peer`)
    if advertise.is_empty() {
        tracing::info!("listening on {local}");
        return Ok(vec![local]);
    }
    tracing::info!("listening on {local}, advertised as {advertise:?}");
    Ok(advertise.to_vec())
}

/// Now, in ms since the Unix epoch (0 if the clock is before it).
pub(super) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Addresses for the ticket: the listen address, or every non-loopback
/// interface address when listening on all of them.
fn ticket_addrs(local: SocketAddr) -> Vec<SocketAddr> {
    if !local.ip().is_unspecified() {
        return vec![local];
    }
    let v4 = local.is_ipv4();
    let mut addrs: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback() && i.ip().is_ipv4() == v4)
        .filter(|i| !matches!(i.ip(), IpAddr::V6(ip) if ip.is_unicast_link_local()))
        .map(|i| SocketAddr::new(i.ip(), local.port()))
        .collect();
    if addrs.is_empty() {
        let lo: IpAddr = if v4 {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        addrs.push(SocketAddr::new(lo, local.port()));
    }
    addrs.truncate(crate::ticket::MAX_ADDRS);
    addrs
}

/// Seeds `cfg.path`. `on_ticket` receives the ticket once the manifest is
/// built and the endpoint listens; an error from it ends the seed at once.
/// The report comes back however the run ended (with what is known by
/// then), for the caller to complete and write.
pub async fn seed(
    cfg: SeedConfig,
    on_ticket: impl FnOnce(&Ticket, &Manifest, bool) -> Result<(), NodeError>,
    status: watch::Sender<Status>,
    stop: CancellationToken,
) -> (Report, Result<(), NodeError>) {
    let started = Instant::now();
    let mut report = Report {
        role: "seed".into(),
        group: cfg.group.name.clone(),
        ..Default::default()
    };
    match seed_parts(cfg, on_ticket, status, &stop, started, &mut report).await {
        Ok(parts) => run_engine(parts, None, stop).await,
        Err(e) => (ended_early(report, started), Err(e)),
    }
}

/// A report for a run that ended before its engine started.
pub(super) fn ended_early(mut report: Report, started: Instant) -> Report {
    report.elapsed_secs = started.elapsed().as_secs_f64();
    report.peak_rss_bytes = super::peak_rss_bytes();
    report
}

/// Hashes the seeded path into its manifest, publishing the progress in
/// `status`; Ctrl-C does not wait for it.
async fn hash_image(
    cfg: &SeedConfig,
    status: &watch::Sender<Status>,
    stop: &CancellationToken,
) -> Result<Manifest, NodeError> {
    let path = cfg.path.clone();
    let piece_size = cfg.piece_size;
    let hashing = Arc::new(crate::storage::Hashing::default());
    let shown = {
        let (h, status) = (hashing.clone(), status.clone());
        tokio::spawn(async move {
            loop {
                let (done, total) = (h.done.load(Relaxed), h.total.load(Relaxed));
                status.send_modify(|s| s.hashing = Some((done, total)));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    // hashing a large image takes a while: Ctrl-C must not wait for it
    let h = hashing.clone();
    let m = tokio::select! {
        m = tokio::task::spawn_blocking(move || crate::storage::build_counted(&path, piece_size, &h)) => {
            m.map_err(anyhow::Error::from)
        }
        _ = stop.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    shown.abort();
    status.send_modify(|s| s.hashing = None);
    match m {
        Ok(m) => Ok(m?),
        Err(_) if stop.is_cancelled() => Err(NodeError::Interrupted),
        Err(e) => Err(e.into()),
    }
}

async fn seed_parts(
    cfg: SeedConfig,
    on_ticket: impl FnOnce(&Ticket, &Manifest, bool) -> Result<(), NodeError>,
    status: watch::Sender<Status>,
    stop: &CancellationToken,
    started: Instant,
    report: &mut Report,
) -> Result<Parts, NodeError> {
    // bound first: a port in use fails at once, not after the hashing
    let (ep, wan) = endpoint(cfg.listen, &cfg.tuning)?;
    let local = ep
        .local_addr()
        .map_err(|e| NodeError::Network(e.to_string()))?;
    if let Some(dir) = &cfg.state {
        crate::storage::seed_state::check_dir(dir)?;
    }
    let kept = cfg
        .state
        .as_ref()
        .and_then(|dir| crate::storage::seed_state::load(dir, &cfg.path, cfg.piece_size));
    let reused = kept.is_some();
    let (m, secret) = match kept {
        Some(kept) => kept,
        None => {
            let before = match &cfg.state {
                Some(_) => Some(crate::storage::seed_state::begin(&cfg.path)?),
                None => None,
            };
            let m = hash_image(&cfg, &status, stop).await?;
            let secret: [u8; 32] = rand::random();
            if let (Some(dir), Some(before)) = (&cfg.state, before) {
                crate::storage::seed_state::save(dir, &cfg.path, &m, &secret, before)?;
            }
            (m, secret)
        }
    };
    report.manifest_id = hex(&m.id().0);
    report.bytes_total = m.total_size();
    report.pieces_total = m.piece_count();
    let bytes = m.encode();
    let ticket = Ticket {
        manifest_id: m.id(),
        secret,
        addrs: if cfg.advertise.is_empty() {
            ticket_addrs(local)
        } else {
            cfg.advertise.clone()
        },
    };
    on_ticket(&ticket, &m, reused)?;
    let content = Content::open(cfg.path.clone(), m.files(), false).map_err(|source| {
        crate::storage::StorageError::Io {
            path: cfg.path.clone(),
            source,
        }
    })?;
    let id = Identity {
        manifest_id: ticket.manifest_id,
        secret: ticket.secret,
        peer_id: rand::random(),
        since: unix_ms(),
        group: cfg.group.name.clone(),
        addrs: advertised(&ep, &cfg.advertise)?,
        tuning: cfg.tuning.clone(),
        wan: wan.clone(),
    };
    let n = m.piece_count();
    report.peer_id = hex(&id.peer_id);
    report.seed_peer_id = Some(hex(&id.peer_id));
    Ok(Parts {
        id,
        manifest: Arc::new(m),
        manifest_bytes: Arc::new(bytes),
        content,
        content_root: cfg.path.clone(),
        have: bitvec::bitvec![1; n],
        partial: None,
        is_join: false,
        basis: None,
        endpoint: ep,
        exit: Exit {
            linger: Default::default(),
            exit_on_complete: false,
            until_done: cfg.until_done,
            until_copies: cfg.until_copies,
            force: false,
            keep: Default::default(),
        },
        status,
        started,
        seed_id: None,
        report: std::mem::take(report),
        upload_limit: cfg.upload_limit,
        max_peers: cfg.max_peers,
        group: cfg.group.clone(),
    })
}

pub(super) async fn run_engine(
    parts: Parts,
    first: Option<Handshaken>,
    stop: CancellationToken,
) -> (Report, Result<(), NodeError>) {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let ep = parts.endpoint.clone();
    let id = parts.id.clone();
    let engine = Engine::new(parts, tx.clone(), rx);
    if let Some(h) = first {
        // the engine holds the receiver: this cannot fail
        let _ = tx.send(Event::Connected(Box::new(h))).await;
    }
    let acceptor = tokio::spawn(connect::accept_loop(ep, id, tx));
    let r = engine.run(stop).await;
    acceptor.abort();
    r
}

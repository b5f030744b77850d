//! Entry points: `seed` and `join`. They set up the endpoint, the identity
//! and the storage, then hand everything to the engine.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use quinn_proto::RandomConnectionIdGenerator;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::connect;
use super::engine::{EVENT_QUEUE, Engine, Event, Exit, Parts};
use super::handshake::Refused;
use super::peer::{Handshaken, Identity, WanPath};
use super::{JoinConfig, NodeError, Report, SeedConfig, Status, fetch, hex, socket, tls};
use crate::manifest::{self, Manifest};
use crate::storage::Basis;
use crate::storage::{Content, Partial};
use crate::text::Escaped;
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

fn endpoint(
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

/// What we advertise: an unspecified IP stands for "where you see me".
fn advertised(ep: &quinn::Endpoint) -> Result<Vec<SocketAddr>, NodeError> {
    let local = ep
        .local_addr()
        .map_err(|e| NodeError::Network(e.to_string()))?;
    // with -v: where others can reach this host (e.g. for `join --peer`)
    tracing::info!("listening on {local}");
    Ok(vec![local])
}

/// Why a bootstrap host did not give us the manifest.
enum Failed {
    Connect(anyhow::Error),
    Manifest(NodeError),
}

/// Now, in ms since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
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
fn ended_early(mut report: Report, started: Instant) -> Report {
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
    let hashing = Arc::new(manifest::Hashing::default());
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
        m = tokio::task::spawn_blocking(move || manifest::build_counted(&path, piece_size, &h)) => {
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
        addrs: ticket_addrs(local),
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
        addrs: advertised(&ep)?,
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
        group: cfg.group.clone(),
    })
}

async fn run_engine(
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

/// Joins the swarm of `cfg.ticket` and places the copy in `cfg.dest_dir`.
/// The report comes back however the run ended.
pub async fn join(
    cfg: JoinConfig,
    status: watch::Sender<Status>,
    stop: CancellationToken,
) -> (Report, Result<(), NodeError>) {
    let started = Instant::now();
    let mut report = Report {
        role: "join".into(),
        group: cfg.group.name.clone(),
        manifest_id: hex(&cfg.ticket.manifest_id.0),
        ..Default::default()
    };
    match join_parts(cfg, status, &stop, started, &mut report).await {
        Ok(run) => {
            let (parts, first) = *run;
            run_engine(parts, Some(first), stop).await
        }
        Err(e) => (ended_early(report, started), Err(e)),
    }
}

/// Whether DEST_DIR/NAME already holds the image (tree and metadata as a
/// join with `keep` sets them, then every piece's hash), so a join run
/// again ends at once. Anything else there (another version, a link, what
/// cannot be read) is for `Partial::prepare` and the basis, as before.
async fn up_to_date(
    cfg: &JoinConfig,
    m: &Arc<Manifest>,
    stop: &CancellationToken,
    report: &mut Report,
) -> Result<bool, NodeError> {
    let path = cfg.dest_dir.join(&m.name);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(false);
    }
    let (m2, p2, keep) = (m.clone(), path.clone(), cfg.keep);
    let t = Instant::now();
    let hashed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let h2 = hashed.clone();
    // what this join would make: the image's owners as root, else its own
    let owners = if keep.owners {
        crate::storage::Owners::Image
    } else {
        // SAFETY: geteuid has no preconditions and cannot fail.
        crate::storage::Owners::User(unsafe { libc::geteuid() })
    };
    let check =
        tokio::task::spawn_blocking(move || crate::storage::compare(&m2, &p2, keep, owners, &h2));
    let found = tokio::select! {
        r = check => r.map_err(anyhow::Error::from)?,
        _ = stop.cancelled() => return Err(NodeError::Interrupted),
    };
    let shown = crate::text::path(&path);
    match found {
        Ok(None) => {
            tracing::info!(
                "{shown} is already the image (verified {} in {:.1}s)",
                bytesize::ByteSize(hashed.load(std::sync::atomic::Ordering::Relaxed)),
                t.elapsed().as_secs_f64()
            );
            report.up_to_date = true;
            report.output = Some(shown);
            Ok(true)
        }
        Ok(Some(d)) if cfg.force => {
            tracing::info!("{shown} differs from the image ({d}): replacing it");
            Ok(false)
        }
        Ok(Some(d)) => {
            tracing::warn!("{shown} differs from the image: {d}");
            Ok(false)
        }
        Err(e) => {
            tracing::info!("{shown}: not compared with the image: {e}");
            Ok(false)
        }
    }
}

async fn join_parts(
    cfg: JoinConfig,
    status: watch::Sender<Status>,
    stop: &CancellationToken,
    started: Instant,
    report: &mut Report,
) -> Result<Box<(Parts, Handshaken)>, NodeError> {
    if !cfg.dest_dir.is_dir() {
        return Err(crate::storage::StorageError::NoDestDir(cfg.dest_dir.clone()).into());
    }
    let (ep, wan) = endpoint(cfg.listen, &cfg.tuning)?;
    let mut id = Identity {
        manifest_id: cfg.ticket.manifest_id,
        secret: cfg.ticket.secret,
        peer_id: rand::random(),
        since: unix_ms(),
        group: cfg.group.name.clone(),
        addrs: advertised(&ep)?,
        tuning: cfg.tuning.clone(),
        wan: wan.clone(),
    };
    id.addrs.truncate(crate::wire::MAX_ADDRS);
    report.peer_id = hex(&id.peer_id);
    let (first, m, bytes) = tokio::select! {
        r = bootstrap(&ep, &id, &cfg.ticket, &cfg.peers, cfg.connect_timeout) => r?,
        _ = stop.cancelled() => return Err(NodeError::Interrupted),
    };
    report.bytes_total = m.total_size();
    report.pieces_total = m.piece_count();
    report.seed_peer_id = Some(hex(&first.hello.peer_id));
    let m = Arc::new(m);
    let exit = Exit {
        linger: cfg.linger,
        exit_on_complete: cfg.exit_on_complete,
        until_done: None,
        until_copies: None,
        force: cfg.force,
        keep: cfg.keep,
    };
    if up_to_date(&cfg, &m, stop, report).await? {
        // a complete host from the start: it says Done (a seed's
        // --until-done counts it), serves, and lingers as any joiner
        let path = cfg.dest_dir.join(&m.name);
        let content =
            Content::open(path.clone(), m.files(), false).map_err(crate::storage::io_at(&path))?;
        report.complete_secs = Some(started.elapsed().as_secs_f64());
        let n = m.piece_count();
        let parts = Parts {
            seed_id: Some(first.hello.peer_id),
            id,
            manifest: m,
            manifest_bytes: Arc::new(bytes),
            content,
            content_root: path,
            have: bitvec::bitvec![1; n],
            partial: None,
            is_join: true,
            basis: None,
            endpoint: ep,
            exit,
            status,
            started,
            report: std::mem::take(report),
            upload_limit: cfg.upload_limit,
            group: cfg.group.clone(),
        };
        return Ok(Box::new((parts, first)));
    }
    let (dest, force) = (cfg.dest_dir.clone(), cfg.force);
    let m2 = m.clone();
    let basis_paths = basis_paths(&cfg, &m.name);
    report.basis = basis_paths.iter().map(|p| crate::text::path(p)).collect();
    // preparing and re-verifying a large partial copy, and indexing a
    // basis, take a while
    let prepared = tokio::task::spawn_blocking(move || {
        let partial = Partial::prepare(&dest, &m2, force)?;
        let content = partial.content(&m2)?;
        let mut have = if partial.resumed {
            partial.scan(&m2, &content)?
        } else {
            // pieces of zeros are there already: the partial files are
            // sparse at their final sizes (holes stay holes)
            crate::storage::zero_pieces(&m2)
        };
        let resumed = have.count_ones();
        let mut used = None;
        if !basis_paths.is_empty() && !have.all() {
            let t = Instant::now();
            let (b, pieces, bytes) = Basis::index_and_fill(&basis_paths, &m2, &content, &mut have)
                .map_err(crate::storage::io_at(&partial.partial_path))?;
            used = Some((b, t.elapsed(), pieces, bytes));
        }
        Ok::<_, crate::storage::StorageError>((partial, content, have, resumed, used))
    });
    let (partial, content, have, resumed, used) = tokio::select! {
        r = prepared => r.map_err(anyhow::Error::from)??,
        _ = stop.cancelled() => return Err(NodeError::Interrupted),
    };
    let basis = used.map(|(b, took, pieces, bytes)| {
        tracing::info!(
            "basis: {} files, {} indexed in {:.1}s, {pieces} of {} pieces ({}) taken from it whole",
            b.files,
            bytesize::ByteSize(b.bytes),
            took.as_secs_f64(),
            m.piece_count(),
            bytesize::ByteSize(bytes),
        );
        report.basis_bytes_indexed = b.bytes;
        report.basis_index_secs = took.as_secs_f64();
        report.pieces_from_basis = pieces;
        report.bytes_from_basis = bytes;
        Arc::new(b)
    });
    let basis = basis.filter(|b| !b.is_empty());
    if resumed > 0 {
        tracing::info!(
            "resuming: {resumed} of {} pieces already on disk",
            m.piece_count()
        );
    }
    report.pieces_resumed = resumed;
    let parts = Parts {
        seed_id: Some(first.hello.peer_id),
        id,
        manifest: m,
        manifest_bytes: Arc::new(bytes),
        content,
        content_root: partial.partial_path.clone(),
        have,
        partial: Some(partial),
        is_join: true,
        basis,
        endpoint: ep,
        exit,
        status,
        started,
        report: std::mem::take(report),
        upload_limit: cfg.upload_limit,
        group: cfg.group.clone(),
    };
    Ok(Box::new((parts, first)))
}

/// Dials every ticket address and `--peer` address at once; each
/// authenticated host is asked for the manifest, and the first that sends
/// the one the ticket names wins. A host that refuses it, sends another, or
/// stalls does not hold up the others. Hosts that do not answer are dialed
/// again until `connect_timeout`, which bounds the wait for a first
/// authenticated host; a manifest already under way may take
/// `MANIFEST_TIMEOUT`.
async fn bootstrap(
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
                        .close(super::peer::close::PROTOCOL.into(), b"manifest");
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
    first.conn.close(super::peer::close::DONE.into(), b"done");
    // the close reaches the host, or it times the connection out
    let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
    Ok(m)
}

/// The older copies a join takes unchanged data from: `--basis`, and with
/// `--force` the destination's own copy (a file or directory at
/// DEST_DIR/NAME, not a link), first: the likeliest to match.
fn basis_paths(cfg: &JoinConfig, name: &str) -> Vec<std::path::PathBuf> {
    let mut paths = Vec::new();
    let own = cfg.dest_dir.join(name);
    let usable = std::fs::symlink_metadata(&own).is_ok_and(|m| m.is_file() || m.is_dir());
    if cfg.force && usable {
        paths.push(own);
    }
    paths.extend(cfg.basis.iter().cloned());
    paths
}

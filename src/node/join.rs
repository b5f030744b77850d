//! A join's entry point: the manifest from the first host that has it
//! (`bootstrap`), then either the destination is the image already (a
//! complete host from the start) or the partial copy is prepared, resumed
//! and filled from the basis, and the engine fetches the rest.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::bootstrap::bootstrap;
use super::engine::{Exit, Parts};
use super::identity::{Handshaken, Identity};
use super::run::{advertised, ended_early, endpoint, run_engine, unix_ms};
use super::{JoinConfig, NodeError, Report, Status, hex};
use crate::manifest::Manifest;
use crate::storage::{Basis, Content, Partial};

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
        addrs: advertised(&ep, &cfg.advertise)?,
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
    let got = if up_to_date(&cfg, &m, stop, report).await? {
        // a complete host from the start: it says Done (a seed's
        // --until-done counts it), serves, and lingers as any joiner
        let path = cfg.dest_dir.join(&m.name);
        let content =
            Content::open(path.clone(), m.files(), false).map_err(crate::storage::io_at(&path))?;
        report.complete_secs = Some(started.elapsed().as_secs_f64());
        Prepared {
            content,
            content_root: path,
            have: bitvec::bitvec![1; m.piece_count()],
            partial: None,
            basis: None,
        }
    } else {
        prepare(&cfg, &m, stop, report).await?
    };
    let parts = Parts {
        seed_id: Some(first.hello.peer_id),
        id,
        manifest: m,
        manifest_bytes: Arc::new(bytes),
        content: got.content,
        content_root: got.content_root,
        have: got.have,
        partial: got.partial,
        is_join: true,
        basis: got.basis,
        endpoint: ep,
        exit,
        status,
        started,
        report: std::mem::take(report),
        upload_limit: cfg.upload_limit,
        max_peers: cfg.max_peers,
        group: cfg.group.clone(),
    };
    Ok(Box::new((parts, first)))
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

/// What a join starts its engine with.
struct Prepared {
    content: Content,
    /// Where `content` lives (for messages).
    content_root: std::path::PathBuf,
    have: bitvec::vec::BitVec,
    /// `None` when the destination already is the image.
    partial: Option<Partial>,
    /// An older copy to index while the engine runs, and the pieces held
    /// for it (`Basis::plan`).
    basis: Option<(Arc<Basis>, bitvec::vec::BitVec)>,
}

/// The partial copy beside the destination: made, or resumed (its pieces
/// re-verified); the basis opened, and the pieces it may fill held.
async fn prepare(
    cfg: &JoinConfig,
    m: &Arc<Manifest>,
    stop: &CancellationToken,
    report: &mut Report,
) -> Result<Prepared, NodeError> {
    let (dest, force) = (cfg.dest_dir.clone(), cfg.force);
    let m2 = m.clone();
    let basis_paths = basis_paths(cfg, &m.name);
    report.basis = basis_paths.iter().map(|p| crate::text::path(p)).collect();
    // preparing and re-verifying a large partial copy takes a while; the
    // basis is opened here and indexed while the engine runs
    let prepared = tokio::task::spawn_blocking(move || {
        let partial = Partial::prepare(&dest, &m2, force)?;
        let content = partial.content(&m2)?;
        let have = if partial.resumed {
            partial.scan(&m2, &content)?
        } else {
            // pieces of zeros are there already: the partial files are
            // sparse at their final sizes (holes stay holes)
            crate::storage::zero_pieces(&m2)
        };
        let basis = (!basis_paths.is_empty() && !have.all())
            .then(|| Basis::open(&basis_paths, &m2))
            .filter(|b| !b.is_empty())
            .map(|b| {
                let held = b.plan(&m2, &have);
                (Arc::new(b), held)
            });
        Ok::<_, crate::storage::StorageError>((partial, content, have, basis))
    });
    let (partial, content, have, basis) = tokio::select! {
        r = prepared => r.map_err(anyhow::Error::from)??,
        _ = stop.cancelled() => return Err(NodeError::Interrupted),
    };
    let resumed = have.count_ones();
    if let Some((b, held)) = &basis {
        tracing::info!(
            "basis: {} files, {} to index; {} of {} pieces held for it, the rest fetched meanwhile",
            b.files,
            bytesize::ByteSize(b.bytes),
            held.count_ones(),
            m.piece_count(),
        );
        report.basis_bytes_indexed = b.bytes;
    }
    if resumed > 0 {
        tracing::info!(
            "resuming: {resumed} of {} pieces already on disk",
            m.piece_count()
        );
    }
    report.pieces_resumed = resumed;
    Ok(Prepared {
        content,
        content_root: partial.partial_path.clone(),
        have,
        partial: Some(partial),
        basis,
    })
}

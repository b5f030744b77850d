//! `swarm verify` and `swarm inspect`: an image's manifest, from its
//! swarm (a ticket) or from a file (`swarm seed --manifest-out`), checked
//! against a copy on disk or shown.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::args::{ImageArgs, InspectArgs, VerifyArgs};
use super::{EXIT_INTERNAL, EXIT_IO, EXIT_USAGE, EXIT_VERIFY, exit_code, progress, units};
use crate::manifest::{EntryKind, Manifest, Root};
use crate::node;
use crate::storage::{Keep, Owners};
use crate::text::{self, Escaped};
use crate::ticket::Ticket;

/// What IMAGE names.
enum Image {
    Ticket(Ticket),
    Manifest(Manifest),
}

/// A ticket (`swarm1:...`, `@FILE`, or a file holding one) or a manifest
/// file. Errors are usage errors naming IMAGE.
fn image(arg: &str) -> Result<Image, String> {
    let ticket = |t: &str| {
        Ticket::parse(t.trim())
            .map(Image::Ticket)
            .map_err(|e| format!("IMAGE: not a valid swarm ticket ({e})"))
    };
    if let Some(file) = arg.strip_prefix('@') {
        return ticket(&super::config::ticket_file("IMAGE", file)?);
    }
    if arg.starts_with("swarm1:") {
        return ticket(arg);
    }
    // no more than a manifest can be: IMAGE=/dev/zero must not fill the memory
    let mut bytes = Vec::new();
    std::fs::File::open(arg)
        .and_then(|f| {
            f.take(crate::manifest::MAX_MANIFEST_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|e| {
            format!(
                "IMAGE: {} is neither a ticket (swarm1:..., @FILE) nor a readable manifest file: {e}",
                text::path(Path::new(arg))
            )
        })?;
    if bytes.len() > crate::manifest::MAX_MANIFEST_BYTES {
        return Err(format!(
            "IMAGE: {} is larger than any manifest ({} MiB)",
            text::path(Path::new(arg)),
            crate::manifest::MAX_MANIFEST_BYTES >> 20
        ));
    }
    if bytes.starts_with(b"swarm1:") {
        return ticket(&String::from_utf8_lossy(&bytes));
    }
    Manifest::decode(&bytes).map(Image::Manifest).map_err(|e| {
        format!(
            "IMAGE: {} is not a swarm manifest ({e})",
            text::path(Path::new(arg))
        )
    })
}

/// The manifest of `a`, from the swarm when it is a ticket; the ticket too.
async fn manifest(
    a: &ImageArgs,
    stop: &CancellationToken,
) -> Result<(Manifest, Option<Ticket>), ExitCode> {
    let usage = |e: String| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_USAGE)
    };
    let timeout = units::duration("--connect-timeout", &a.connect_timeout).map_err(usage)?;
    let peers = super::config::peers(&a.peer).map_err(usage)?;
    match image(&a.image).map_err(usage)? {
        Image::Manifest(m) => Ok((m, None)),
        Image::Ticket(t) => match node::fetch_manifest(&t, &peers, timeout, stop).await {
            Ok(m) => Ok((m, Some(t))),
            Err(e) => {
                eprintln!("error: {e}");
                Err(ExitCode::from(exit_code(&e)))
            }
        },
    }
}

pub async fn verify(a: &VerifyArgs, quiet: bool, stop: CancellationToken) -> ExitCode {
    if std::fs::symlink_metadata(&a.path).is_err() {
        eprintln!("error: PATH: {} does not exist", text::path(&a.path));
        return ExitCode::from(EXIT_USAGE);
    }
    let (m, _) = match manifest(&a.image, &stop).await {
        Ok(m) => m,
        Err(code) => return code,
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    // owners are compared as a join as root sets them; otherwise they
    // cannot be known (the copy's join may have run as root or not)
    let owners = if root && !a.no_owner {
        Owners::Image
    } else {
        Owners::Any
    };
    let keep = Keep {
        owners: owners == Owners::Image || a.keep_setuid,
        setuid: a.keep_setuid,
    };
    let hashed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let ticker = (!quiet).then(|| {
        let (hashed, total) = (hashed.clone(), m.total_size());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                let done = hashed.load(Ordering::Relaxed);
                eprintln!(
                    "verify: {} of {} hashed",
                    progress::human(done as f64),
                    progress::human(total as f64)
                );
            }
        })
    });
    let (m2, path, h2) = (Arc::new(m), a.path.clone(), hashed.clone());
    let m3 = m2.clone();
    let check =
        tokio::task::spawn_blocking(move || crate::storage::compare(&m3, &path, keep, owners, &h2));
    let r = tokio::select! {
        r = check => r,
        _ = stop.cancelled() => {
            eprintln!("verify: interrupted");
            return ExitCode::from(super::EXIT_INTERRUPTED);
        }
    };
    if let Some(t) = ticker {
        t.abort();
    }
    let shown = text::path(&a.path);
    match r {
        Ok(Ok(None)) => {
            println!(
                "ok: {shown} is the image {} ({} bytes, {} verified in {:.1}s)",
                node::hex(&m2.id().0),
                m2.total_size(),
                progress::human(hashed.load(Ordering::Relaxed) as f64),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Ok(Ok(Some(d))) => {
            println!("differs: {shown}: {d}");
            ExitCode::from(EXIT_VERIFY)
        }
        Ok(Err(e)) => {
            eprintln!("error: {}", Escaped(&e.to_string()));
            ExitCode::from(EXIT_IO)
        }
        Err(e) => {
            eprintln!("error: internal: {e}");
            ExitCode::from(EXIT_INTERNAL)
        }
    }
}

#[derive(Serialize)]
struct Shown<'a> {
    name: &'a str,
    id: String,
    kind: &'static str,
    bytes_total: u64,
    piece_size: u32,
    pieces: usize,
    files: usize,
    directories: usize,
    symlinks: usize,
    hard_links: usize,
    /// The ticket's addresses (a ticket only).
    addrs: Vec<String>,
    entries: Vec<ShownEntry<'a>>,
}

#[derive(Serialize)]
struct ShownEntry<'a> {
    path: &'a str,
    kind: &'static str,
    size: Option<u64>,
    target: Option<&'a str>,
    mode: String,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nanos: u32,
}

pub async fn inspect(a: &InspectArgs, stop: CancellationToken) -> ExitCode {
    let (m, ticket) = match manifest(&a.image, &stop).await {
        Ok(m) => m,
        Err(code) => return code,
    };
    let mut shown = Shown {
        name: &m.name,
        id: node::hex(&m.id().0),
        kind: "file",
        bytes_total: m.total_size(),
        piece_size: m.piece_size,
        pieces: m.piece_count(),
        files: 0,
        directories: 0,
        symlinks: 0,
        hard_links: 0,
        addrs: ticket
            .iter()
            .flat_map(|t| t.addrs.iter().map(|a| a.to_string()))
            .collect(),
        entries: Vec::new(),
    };
    match &m.root {
        Root::File { .. } => shown.files = 1,
        Root::Dir { entries, .. } => {
            shown.kind = "directory";
            for e in entries {
                let (kind, size, target) = match &e.kind {
                    EntryKind::File { size } => {
                        shown.files += 1;
                        ("file", Some(*size), None)
                    }
                    EntryKind::Dir => {
                        shown.directories += 1;
                        ("directory", None, None)
                    }
                    EntryKind::Symlink { target } => {
                        shown.symlinks += 1;
                        ("symlink", None, Some(target.as_str()))
                    }
                    EntryKind::HardLink { target } => {
                        shown.hard_links += 1;
                        let t = entries.get(*target as usize).map(|t| t.path.as_str());
                        ("hard link", None, t)
                    }
                };
                shown.entries.push(ShownEntry {
                    path: &e.path,
                    kind,
                    size,
                    target,
                    mode: format!("{:04o}", e.meta.mode),
                    uid: e.meta.uid,
                    gid: e.meta.gid,
                    mtime: e.meta.mtime.secs,
                    mtime_nanos: e.meta.mtime.nanos,
                });
            }
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&shown).expect("serializes")
        );
        return ExitCode::SUCCESS;
    }
    println!("name        {}", Escaped(&m.name));
    println!("id          {}", shown.id);
    println!(
        "size        {} ({} bytes) in {} pieces of {}",
        progress::human(shown.bytes_total as f64),
        shown.bytes_total,
        shown.pieces,
        progress::human(f64::from(shown.piece_size))
    );
    if shown.kind == "directory" {
        println!(
            "entries     {} files, {} directories, {} symbolic links, {} hard links",
            shown.files, shown.directories, shown.symlinks, shown.hard_links
        );
    } else {
        println!("entries     a single file");
    }
    if !shown.addrs.is_empty() {
        println!("addresses   {}", shown.addrs.join(", "));
    }
    ExitCode::SUCCESS
}

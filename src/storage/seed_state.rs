//! What a seed keeps between runs (`swarm seed --state DIR`): the
//! manifest (`DIR/manifest`, the format of `--manifest-out`), the
//! swarm's secret, and a fingerprint of every entry it hashed
//! (`DIR/seed.json`, mode 0600). A seed restarted on an unchanged path
//! takes both back and starts at once, with the same ticket (given the
//! same `--listen`); a path that changed is hashed again.
//!
//! Unchanged means: the same entries, and each with the same inode,
//! size, mtime and ctime. ctime moves on every write and cannot be set
//! back by the writer, so content rewritten with its mtime restored is
//! still seen as changed. DIR must be this user's and not writable by
//! others: it holds the secret.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{StorageError, io_at, write_private};
use crate::manifest::{Manifest, Root};

const STATE: &str = "seed.json";
const MANIFEST: &str = "manifest";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Fingerprint {
    path: String,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    /// The seeded path, absolute.
    root: PathBuf,
    manifest_id: String,
    secret: String,
    entries: Vec<Fingerprint>,
}

/// Checks DIR (or creates it, mode 0700): a directory, not a link, this
/// user's, writable by nobody else.
pub fn check_dir(dir: &Path) -> Result<(), StorageError> {
    let bad = |why| StorageError::StateDir {
        path: dir.to_path_buf(),
        why,
    };
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(io_at(dir)),
        Err(e) => Err(io_at(dir)(e)),
        Ok(m) if !m.is_dir() => Err(bad("is not a directory")),
        // SAFETY: geteuid has no preconditions and cannot fail.
        Ok(m) if m.uid() != unsafe { libc::geteuid() } => Err(bad("belongs to another user")),
        Ok(m) if m.mode() & 0o022 != 0 => Err(bad("is writable by others")),
        Ok(_) => Ok(()),
    }
}

/// Every entry of `tree` under `root` (and `root` itself), as it is now.
fn fingerprint(root: &Path, tree: &Root) -> io::Result<Vec<Fingerprint>> {
    let mut paths = vec![String::new()];
    if let Root::Dir { entries, .. } = tree {
        paths.extend(entries.iter().map(|e| e.path.clone()));
    }
    paths
        .into_iter()
        .map(|p| {
            let st = fs::symlink_metadata(if p.is_empty() {
                root.to_path_buf()
            } else {
                root.join(&p)
            })?;
            Ok(Fingerprint {
                path: p,
                dev: st.dev(),
                ino: st.ino(),
                size: st.size(),
                mtime: (st.mtime(), st.mtime_nsec()),
                ctime: (st.ctime(), st.ctime_nsec()),
            })
        })
        .collect()
}

/// The manifest and secret of the last run on `root`, if DIR has them
/// and nothing under `root` changed since (and `piece_size`, when given,
/// is the manifest's). Anything unreadable or stale is `None`, with the
/// reason at info level: the seed then hashes as without DIR.
pub fn load(dir: &Path, root: &Path, piece_size: Option<u64>) -> Option<(Manifest, [u8; 32])> {
    let stale = |why: String| {
        tracing::info!("--state: {why}; hashing");
        None
    };
    let text = match fs::read(dir.join(STATE)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => return stale(format!("{STATE}: {e}")),
    };
    // the error's place only: a message could quote the secret
    let saved: Saved = match serde_json::from_slice(&text) {
        Ok(s) => s,
        Err(e) => {
            return stale(format!(
                "{STATE}: malformed ({:?} at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ));
        }
    };
    let Ok(abs) = root.canonicalize() else {
        return None;
    };
    if saved.version != 1 || saved.root != abs {
        return stale(format!("kept for {}, not this path", saved.root.display()));
    }
    let m = match fs::read(dir.join(MANIFEST)).map(|b| Manifest::decode(&b)) {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return stale(format!("{MANIFEST}: {e}")),
        Err(e) => return stale(format!("{MANIFEST}: {e}")),
    };
    if crate::text::hex(&m.id().0) != saved.manifest_id {
        return stale(format!("{MANIFEST} is not the one {STATE} names"));
    }
    if piece_size.is_some_and(|p| p != u64::from(m.piece_size)) {
        return stale("another piece size".into());
    }
    let Some(secret) = parse_secret(&saved.secret) else {
        return stale(format!("{STATE}: a malformed secret"));
    };
    match fingerprint(root, &m.root) {
        Ok(now) if now == saved.entries => Some((m, secret)),
        Ok(_) => stale("the path changed since it was hashed".into()),
        Err(e) => stale(format!("the path changed since it was hashed ({e})")),
    }
}

/// 64 hex digits.
fn parse_secret(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 || !b.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).expect("a hex digit") as u8;
    Some(std::array::from_fn(|i| {
        digit(b[2 * i]) << 4 | digit(b[2 * i + 1])
    }))
}

/// The path as it is before it is hashed (`begin`), for `save`.
pub struct Before {
    entries: Vec<Fingerprint>,
    at: std::time::SystemTime,
}

/// Fingerprints `root` before its hashing starts.
pub fn begin(root: &Path) -> Result<Before, StorageError> {
    let at = std::time::SystemTime::now();
    let (_, tree) = super::scan(root).map_err(|e| io_at(root)(io::Error::other(e.to_string())))?;
    Ok(Before {
        entries: fingerprint(root, &tree).map_err(io_at(root))?,
        at,
    })
}

/// Keeps `m`, `secret` and the fingerprint of `root` in DIR, each file
/// 0600 by an atomic rename, if nothing under `root` changed while it was
/// hashed: the fingerprint `before` the hashing, the one after, and `m`'s
/// tree must all agree, and no entry may have changed in the second
/// before the hashing began (a change within the timestamps' granularity
/// would leave them equal: git's "racily clean" rule). Otherwise nothing
/// is kept and the next start hashes again.
pub fn save(
    dir: &Path,
    root: &Path,
    m: &Manifest,
    secret: &[u8; 32],
    before: Before,
) -> Result<(), StorageError> {
    let entries = fingerprint(root, &m.root).map_err(io_at(root))?;
    let since = before
        .at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let racy = entries
        .iter()
        .any(|e| e.ctime.0 >= since - 1 || e.mtime.0 >= since - 1);
    if entries != before.entries || racy {
        tracing::info!(
            "--state: the path changed while it was hashed (or just before): not kept; \
             the next start hashes it again"
        );
        return Ok(());
    }
    let saved = Saved {
        version: 1,
        root: root.canonicalize().map_err(io_at(root))?,
        manifest_id: crate::text::hex(&m.id().0),
        secret: crate::text::hex(secret),
        entries,
    };
    let out = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        write_private(&p, data).map_err(io_at(&p))
    };
    out(MANIFEST, &m.encode())?;
    out(
        STATE,
        &serde_json::to_vec_pretty(&saved).expect("serializes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_unchanged_path_comes_back_and_any_change_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("img");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/a"), vec![1u8; 10_000]).unwrap();
        let state = d.path().join("state");
        check_dir(&state).unwrap();
        assert_eq!(fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        // entries changed within the last second are not trusted yet
        let settle = || std::thread::sleep(std::time::Duration::from_millis(2100));
        let before = begin(&root).unwrap();
        let m = crate::storage::build(&root, Some(4096)).unwrap();
        save(&state, &root, &m, &[7; 32], before).unwrap();
        assert!(load(&state, &root, None).is_none(), "a racy path was kept");
        settle();
        let before = begin(&root).unwrap();
        // a change while hashing: not kept
        let m = crate::storage::build(&root, Some(4096)).unwrap();
        fs::write(root.join("sub/b"), b"new").unwrap();
        save(&state, &root, &m, &[7; 32], before).unwrap();
        assert!(
            load(&state, &root, None).is_none(),
            "a change while hashing was kept"
        );
        fs::remove_file(root.join("sub/b")).unwrap();
        settle();
        let before = begin(&root).unwrap();
        save(&state, &root, &m, &[7; 32], before).unwrap();
        assert_eq!(
            fs::metadata(state.join(STATE)).unwrap().mode() & 0o777,
            0o600
        );
        let (back, secret) = load(&state, &root, None).expect("unchanged");
        assert_eq!((back, secret), (m.clone(), [7; 32]));
        assert!(load(&state, &root, Some(4096)).is_some());
        assert!(
            load(&state, &root, Some(8192)).is_none(),
            "another piece size"
        );
        // the same bytes written again, mtime restored: ctime moved
        let mtime = fs::metadata(root.join("sub/a"))
            .unwrap()
            .modified()
            .unwrap();
        fs::write(root.join("sub/a"), vec![1u8; 10_000]).unwrap();
        fs::File::options()
            .write(true)
            .open(root.join("sub/a"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(load(&state, &root, None).is_none(), "a rewrite was missed");
        // another path, a broken file: not used
        let mut broken = fs::read(state.join(STATE)).unwrap();
        broken[10] = 0xff;
        fs::write(state.join(STATE), &broken).unwrap();
        assert!(load(&state, &root, None).is_none());
        assert!(load(&state, &d.path().join("sub"), None).is_none());
        fs::write(state.join(MANIFEST), b"junk").unwrap();
        assert!(load(&state, &root, None).is_none());
    }

    #[test]
    fn a_state_dir_others_can_write_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_dir(&state).unwrap_err().to_string();
        assert!(e.contains("writable by others"), "{e}");
        let f = d.path().join("file");
        fs::write(&f, b"").unwrap();
        assert!(
            check_dir(&f)
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
        std::os::unix::fs::symlink(d.path(), d.path().join("link")).unwrap();
        assert!(check_dir(&d.path().join("link")).is_err());
    }
}

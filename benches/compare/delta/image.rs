//! The two versions of the delta scenario's images (see delta.rs), and
//! the helpers that compare and clean copies of them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rand::rngs::SmallRng;
use rand::seq::index::sample;
use rand::{Rng, RngExt};

pub const PAGE: u64 = 16 << 10;
const KIB4: u64 = 4 << 10;
/// Last night's files (2026-11-18), and tonight's changes a day later.
const OLD_MTIME: u64 = 1_795_000_000;
const NEW_MTIME: u64 = OLD_MTIME + 86_400;

/// One pair of versions: `old` for the joiners, `new` in the seed's
/// directory, both named `name`.
pub struct Image {
    pub variant: String,
    pub p: f64,
    pub old: PathBuf,
    pub new: PathBuf,
    pub old_size: u64,
    pub new_size: u64,
    pub files: usize,
    pub rewritten: u64,
    pub appended: u64,
    pub added: u64,
}

impl Image {
    pub fn changed(&self) -> u64 {
        self.rewritten + self.appended + self.added
    }
}

fn write(path: &Path, data: &[u8], mtime: u64) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, data).map_err(err)?;
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .map_err(err)?;
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime))
        .map_err(err)
}

fn random(rng: &mut SmallRng, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    rng.fill_bytes(&mut v);
    v
}

/// Rewrites `data`'s pages `pages` with new random bytes; the bytes written.
fn rewrite(rng: &mut SmallRng, data: &mut [u8], pages: &[u64]) -> u64 {
    let mut n = 0;
    for &i in pages {
        let (start, end) = (i * PAGE, ((i + 1) * PAGE).min(data.len() as u64));
        rng.fill_bytes(&mut data[start as usize..end as usize]);
        n += end - start;
    }
    n
}

/// `p`% of the pages rewritten, `append`% of `size` appended.
pub fn make_file(
    dir: &Path,
    size: u64,
    p: f64,
    append: f64,
    rng: &mut SmallRng,
) -> Result<Image, String> {
    let (old, new) = (dir.join("old/image.bin"), dir.join("seed/image.bin"));
    let mut data = random(rng, size);
    write(&old, &data, OLD_MTIME)?;
    let pages = size.div_ceil(PAGE) as usize;
    let k = (pages as f64 * p / 100.0).round() as usize;
    let chosen: Vec<u64> = sample(rng, pages, k).iter().map(|i| i as u64).collect();
    let rewritten = rewrite(rng, &mut data, &chosen);
    let appended = (size as f64 * append / 100.0) as u64;
    data.extend(random(rng, appended));
    write(&new, &data, NEW_MTIME)?;
    Ok(Image {
        variant: "file".into(),
        p,
        old,
        new,
        old_size: size,
        new_size: data.len() as u64,
        files: 1,
        rewritten,
        appended,
        added: 0,
    })
}

enum Fate {
    Keep,
    Grow(u64),
    Remove,
    Move(String),
}

pub fn make_tree(dir: &Path, size: u64, p: f64, rng: &mut SmallRng) -> Result<Image, String> {
    let (old, new) = (dir.join("old/datadir"), dir.join("seed/datadir"));
    const DIRS: [&str; 4] = ["base/1", "base/16384", "base/16385", "global"];
    // the files: log-uniform sizes in 4 KiB steps, S in all
    let (lo, hi) = ((KIB4 as f64).ln(), ((size / 64).max(64 << 10) as f64).ln());
    let mut files: Vec<(usize, String, u64)> = Vec::new(); // dir, name, size
    let mut total = 0;
    while total < size {
        let s = (rng.random_range(lo..hi).exp() as u64).div_ceil(KIB4) * KIB4;
        let s = s.min(size - total);
        let d = rng.random_range(0..DIRS.len());
        files.push((d, (16400 + files.len()).to_string(), s));
        total += s;
    }
    let n = files.len();
    // the largest file moves; 2% are removed, 5% grow, of the others
    let moved = (0..n).max_by_key(|&i| files[i].2).expect("files");
    let mut fate: Vec<Fate> = (0..n).map(|_| Fate::Keep).collect();
    let (removed, grown) = ((n / 50).max(1), (n / 20).max(2));
    let others: Vec<usize> = (0..n).filter(|&i| i != moved).collect();
    let picked = sample(rng, others.len(), removed + grown);
    let growth = (size / 50 / grown as u64).div_ceil(KIB4) * KIB4;
    for (k, i) in picked.iter().map(|i| others[i]).enumerate() {
        fate[i] = if k < removed {
            Fate::Remove
        } else {
            Fate::Grow(growth)
        };
    }
    let (d, name, _) = &files[moved];
    fate[moved] = Fate::Move(format!("{}/{name}", DIRS[(d + 1) % DIRS.len()]));
    // p% of the pages of the files kept in place
    let pages: Vec<(usize, u64)> = (0..n)
        .filter(|&i| matches!(fate[i], Fate::Keep | Fate::Grow(_)))
        .flat_map(|i| (0..files[i].2.div_ceil(PAGE)).map(move |pg| (i, pg)))
        .collect();
    let k = (pages.len() as f64 * p / 100.0).round() as usize;
    let mut rewrites: Vec<Vec<u64>> = vec![Vec::new(); n];
    for i in sample(rng, pages.len(), k) {
        rewrites[pages[i].0].push(pages[i].1);
    }
    let (mut rewritten, mut appended, mut added) = (0, 0, 0);
    let mut new_size = 0;
    for (i, (d, name, s)) in files.iter().enumerate() {
        let path = format!("{}/{name}", DIRS[*d]);
        let mut data = random(rng, *s);
        write(&old.join(&path), &data, OLD_MTIME)?;
        let (to, mtime) = match &fate[i] {
            Fate::Remove => continue,
            Fate::Move(to) => (to.clone(), OLD_MTIME),
            Fate::Keep | Fate::Grow(_) => {
                rewritten += rewrite(rng, &mut data, &rewrites[i]);
                if let Fate::Grow(g) = fate[i] {
                    data.extend(random(rng, g));
                    appended += g;
                }
                let changed = !rewrites[i].is_empty() || matches!(fate[i], Fate::Grow(_));
                (path, if changed { NEW_MTIME } else { OLD_MTIME })
            }
        };
        new_size += data.len() as u64;
        write(&new.join(to), &data, mtime)?;
    }
    let fresh = (size / 150).div_ceil(KIB4).max(1) * KIB4;
    for k in 0..3 {
        write(
            &new.join(format!("base/0000_new_{k}")),
            &random(rng, fresh),
            NEW_MTIME,
        )?;
        added += fresh;
        new_size += fresh;
    }
    Ok(Image {
        variant: "tree".into(),
        p,
        old,
        new,
        old_size: size,
        new_size,
        files: n - removed + 3,
        rewritten,
        appended,
        added,
    })
}

/// Every file under `root` (or `root` itself), relative, sorted.
fn files(root: &Path) -> Result<Vec<PathBuf>, String> {
    if !root.is_dir() {
        return Ok(vec![PathBuf::new()]);
    }
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let path = root.join(&rel);
        if !path.is_dir() {
            out.push(rel);
            continue;
        }
        for e in std::fs::read_dir(&path).map_err(|e| format!("{}: {e}", path.display()))? {
            todo.push(rel.join(e.map_err(|e| e.to_string())?.file_name()));
        }
    }
    out.sort();
    Ok(out)
}

/// blake3 over every file's relative path, size and content.
pub fn tree_hash(root: &Path) -> Result<blake3::Hash, String> {
    let mut h = blake3::Hasher::new();
    for rel in files(root)? {
        let path = if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update(&[0]);
        h.update(&(data.len() as u64).to_le_bytes());
        h.update_rayon(&data);
    }
    Ok(h.finalize())
}

/// Deletes the files of `copy` that `want` does not have.
pub fn prune(copy: &Path, want: &Path) -> Result<(), String> {
    for rel in files(copy)? {
        if !rel.as_os_str().is_empty() && !want.join(&rel).exists() {
            std::fs::remove_file(copy.join(&rel)).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

pub fn remove(path: &Path) -> Result<(), String> {
    let r = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    r.map_err(|e| format!("{}: {e}", path.display()))
}

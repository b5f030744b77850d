use super::*;
use bitvec::slice::BitSlice;

/// The index run as a join runs it: the pieces `have` lacks planned, the
/// held ones filled. Returns the basis, the pieces found and released
/// (sorted), and the bytes found.
fn run(
    paths: &[PathBuf],
    m: &Manifest,
    content: &Content,
    have: &BitSlice,
) -> (Basis, Vec<u32>, Vec<u32>, u64) {
    let b = Basis::open(paths, m);
    let held = b.plan(m, have);
    let (mut found, mut released, mut bytes) = (Vec::new(), Vec::new(), 0);
    b.run(m, Some((content, &held)), &AtomicBool::new(false), |p| {
        found.extend(p.found);
        released.extend(p.released);
        bytes += p.bytes;
        true
    })
    .unwrap();
    found.sort_unstable();
    released.sort_unstable();
    (b, found, released, bytes)
}

/// A manifest of one file of `size` bytes (hashes unused here).
fn image(size: u64, piece_size: u32) -> Manifest {
    let root = crate::manifest::Root::File {
        size,
        meta: crate::manifest::Meta::mode(0o644),
    };
    let n = Manifest::pieces_for(&root, piece_size).unwrap() as usize;
    Manifest::new("img".into(), root, piece_size, vec![[0; 32]; n])
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 131 + seed as usize * 7) % 251) as u8)
        .collect()
}

/// Whole pieces and single blocks are found wherever a file moved to
/// in the tree; a block's bytes at another position in its piece are
/// not taken for it; what changed after indexing is not used.
#[test]
fn finds_pieces_and_blocks_and_checks_what_it_reads() {
    const P: usize = 4 * BLOCK;
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("old");
    fs::create_dir_all(root.join("sub")).unwrap();
    let a = data(2 * P + 1000, 1);
    fs::write(root.join("sub/a"), &a).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
    let basis = Basis::index(std::slice::from_ref(&root), &image(4 * P as u64, P as u32));
    assert_eq!((basis.files, basis.bytes), (1, a.len() as u64));
    let mut buf = vec![0u8; P];
    let h1 = *blake3::hash(&a[P..2 * P]).as_bytes();
    assert!(basis.piece(&h1, P as u64, &mut buf));
    assert_eq!(buf, &a[P..2 * P]);
    let tail = *blake3::hash(&a[2 * P..]).as_bytes();
    let mut t = vec![0u8; 1000];
    assert!(basis.piece(&tail, 1000, &mut t));
    // a new version of piece 0 with block 2 rewritten: blocks 0, 1, 3
    // come from the basis, block 2 does not
    let mut new = a[..P].to_vec();
    new[2 * BLOCK + 9] ^= 0xff;
    let cvs = blocks::cvs(&new);
    let mut b = vec![0u8; BLOCK];
    for (j, cv) in cvs.iter().enumerate() {
        assert_eq!(basis.block(j, cv, &mut b), j != 2, "block {j}");
    }
    // the same bytes as another block position are not that block
    let moved = blocks::cv(1, &a[..BLOCK]);
    assert!(!basis.block(1, &moved, &mut b));
    // the basis changes after indexing: nothing wrong is used
    let mut changed = a.clone();
    changed[P + 5] ^= 1;
    fs::write(root.join("sub/a"), &changed).unwrap();
    assert!(!basis.piece(&h1, P as u64, &mut buf));
    let cv1 = blocks::cv(0, &a[P..P + BLOCK]);
    let missed = basis.missed();
    assert!(!basis.block(0, &cv1, &mut b));
    assert_eq!(basis.missed(), missed + 1, "counted, for the warning");
    assert!(basis.is_zero_block(3, &blocks::cv(3, &[0u8; BLOCK]), BLOCK));
    assert!(basis.is_zero_block(1, &blocks::cv(1, &[0u8; 100]), 100));
    assert!(!basis.is_zero_block(1, &blocks::cv(2, &[0u8; BLOCK]), BLOCK));
}

/// The pieces found whole are written as they are hashed, and only
/// those are set; the copy reads back the new version's bytes there.
#[test]
fn index_and_fill_writes_the_pieces_it_finds() {
    const P: usize = 4 * BLOCK;
    let d = tempfile::tempdir().unwrap();
    let old = data(3 * P, 4);
    let mut new = old.clone();
    new[P + 7] ^= 1; // piece 1 changed
    let (m, content, target) = file_over(d.path(), &old, &new, P);
    let have = bitvec::bitvec![0; 3];
    let (_, found, released, bytes) = run(&[d.path().join("old")], &m, &content, &have);
    assert_eq!((found, bytes), (vec![0, 2], 2 * P as u64));
    assert_eq!(released, [1]);
    let got = fs::read(&target).unwrap();
    assert_eq!(&got[..P], &new[..P]);
    assert_eq!(&got[2 * P..], &new[2 * P..]);
    // piece 1 changed: its own place got the old version's blocks
    // ahead, and their CVs are kept
    assert_eq!(&got[P..2 * P], &old[P..2 * P]);
}

/// A changed piece is completed in place: blocks written ahead that
/// the new version has are neither read nor written again, a block
/// now zeros is punched, a block found elsewhere in the basis is
/// copied, and only the rest is wanted. Written as the fetch does,
/// the copy is the new version.
#[test]
fn a_changed_piece_is_completed_in_place() {
    const P: usize = 4 * BLOCK;
    let d = tempfile::tempdir().unwrap();
    let old = data(2 * P, 5);
    let mut new = old.clone();
    new[P + 3] ^= 1; // block 0 of piece 1: wanted
    new[P + BLOCK..P + 2 * BLOCK].fill(0); // block 1: now zeros
    new.copy_within(..BLOCK, P + 3 * BLOCK); // block 3: piece 0's first block...
    // ...which is not at block 0 of a piece there, so the basis does
    // not have it at that position: wanted too
    let (m, content, target) = file_over(d.path(), &old, &new, P);
    let have = bitvec::bitvec![0; 2];
    let (basis, found, released, _) = run(&[d.path().join("old")], &m, &content, &have);
    assert_eq!((found, released), (vec![0], vec![1]));
    assert!(!basis.placed(0), "found whole: nothing ahead");
    assert!(basis.placed(1));
    let cvs = blocks::cvs(&new[P..]);
    let (wanted, taken) = basis
        .fill_in_place(1, &cvs, P as u64, &content, P as u64)
        .unwrap();
    assert_eq!(wanted.iter_ones().collect::<Vec<_>>(), [0, 3]);
    assert_eq!(taken, BLOCK as u64, "block 2 only: block 1 is zeros");
    for j in wanted.iter_ones() {
        let r = blocks::range(j, P as u64);
        content
            .write_at((P + r.start) as u64, &new[P + r.start..P + r.end])
            .unwrap();
    }
    assert_eq!(fs::read(&target).unwrap(), new);
    basis.forget(1);
    assert!(!basis.placed(1), "complete: nothing kept");
}

/// A single-file image `new` over a basis file `old`, piece size `p`:
/// the manifest, and an empty partial copy's content and path.
fn file_over(d: &Path, old: &[u8], new: &[u8], p: usize) -> (Manifest, Content, PathBuf) {
    fs::write(d.join("old"), old).unwrap();
    let root = crate::manifest::Root::File {
        size: new.len() as u64,
        meta: crate::manifest::Meta::mode(0o644),
    };
    let hashes = new.chunks(p).map(|c| *blake3::hash(c).as_bytes()).collect();
    let m = Manifest::new("img".into(), root, p as u32, hashes);
    let target = d.join("new");
    fs::File::create(&target)
        .unwrap()
        .set_len(new.len() as u64)
        .unwrap();
    let content = Content::open(target.clone(), m.files(), true).unwrap();
    (m, content, target)
}

/// A tree of one file `b` of `new`'s bytes over a basis of `old` files,
/// piece size `P`: the manifest, and an empty partial copy's content.
fn tree_over(
    d: &Path,
    old: &[(&str, &[u8])],
    new: &[u8],
    p: usize,
) -> (Manifest, Content, PathBuf) {
    trees_over(d, old, &[("b", new)], p)
}

/// A tree of `new` files (in path order) over a basis of `old` files,
/// piece size `P`: the manifest, and an empty partial copy's content.
fn trees_over(
    d: &Path,
    old: &[(&str, &[u8])],
    new: &[(&str, &[u8])],
    p: usize,
) -> (Manifest, Content, PathBuf) {
    fs::create_dir_all(d.join("old")).unwrap();
    for (name, bytes) in old {
        fs::write(d.join("old").join(name), bytes).unwrap();
    }
    let entries = new
        .iter()
        .map(|(name, bytes)| crate::manifest::Entry {
            path: (*name).into(),
            kind: crate::manifest::EntryKind::File {
                size: bytes.len() as u64,
            },
            meta: crate::manifest::Meta::mode(0o644),
        })
        .collect();
    let root = crate::manifest::Root::Dir {
        meta: crate::manifest::Meta::mode(0o755),
        entries,
    };
    // the content stream as the layout places the files (pieces follow
    // files of 64 KiB and more; smaller ones are packed after)
    let sizes = new.iter().map(|(n, b)| (n.to_string(), b.len() as u64));
    let spans = crate::manifest::layout(sizes, p as u32).unwrap();
    let mut stream = vec![0u8; spans.last().map_or(0, |s| s.end()) as usize];
    for (s, (_, bytes)) in spans.iter().zip(new) {
        stream[s.offset as usize..s.end() as usize].copy_from_slice(bytes);
    }
    let hashes = (0..crate::manifest::layout_pieces(&spans, p as u32) as usize)
        .map(|i| {
            let (at, n) = crate::manifest::layout_piece(&spans, p as u32, i);
            *blake3::hash(&stream[at as usize..(at + n) as usize]).as_bytes()
        })
        .collect();
    let m = Manifest::new("t".into(), root, p as u32, hashes);
    let target = d.join("new");
    fs::create_dir_all(&target).unwrap();
    for (name, bytes) in new {
        fs::File::create(target.join(name))
            .unwrap()
            .set_len(bytes.len() as u64)
            .unwrap();
    }
    let content = Content::open(target.clone(), m.files(), true).unwrap();
    (m, content, target)
}

/// A file of the new tree whose bytes are another file of the basis,
/// moved onto a path the basis has with other bytes: its pieces are
/// released at once with that path's old blocks written ahead, and
/// completed in place from the other file, a zero block punched over
/// what was written ahead there; nothing is wanted from a peer.
#[test]
fn a_file_moved_onto_another_is_completed_in_place() {
    const P: usize = 4 * BLOCK;
    let d = tempfile::tempdir().unwrap();
    let (mut a, b) = (data(2 * P, 6), data(2 * P, 7));
    a[BLOCK..2 * BLOCK].fill(0); // must not keep b's block there
    let (m, content, target) = tree_over(d.path(), &[("a", &a), ("b", &b)], &a, P);
    let have = bitvec::bitvec![0; 2];
    let (basis, found, released, _) = run(&[d.path().join("old")], &m, &content, &have);
    assert_eq!((found, released), (vec![], vec![0, 1]));
    for i in 0..2 {
        // whole in the basis (as a): no hints of b's old blocks, which
        // would ask a holder for every block
        let hash = m.piece_hash(i).unwrap();
        assert!(basis.old_cvs(i as u32, hash).is_none(), "piece {i}");
        let cvs = blocks::cvs(&a[i * P..(i + 1) * P]);
        let (wanted, _) = basis
            .fill_in_place(i as u32, &cvs, P as u64, &content, (i * P) as u64)
            .unwrap();
        assert!(wanted.not_any(), "piece {i}: {wanted}");
    }
    assert_eq!(fs::read(target.join("b")).unwrap(), a);
}

/// The last piece of a file whose size is not a multiple of a block:
/// the old file's shorter last block is written ahead too (the new file
/// covers it), so it is taken in place and not fetched, and the hints of
/// a Delta request carry its CV.
#[test]
fn a_changed_last_piece_keeps_its_short_last_block() {
    const P: usize = 4 * BLOCK;
    let d = tempfile::tempdir().unwrap();
    let old = data(P + BLOCK + 100, 11);
    let mut new = old.clone();
    new[P + 5] ^= 1; // block 0 of piece 1; its 100-byte block 1 is kept
    let (m, content, target) = file_over(d.path(), &old, &new, P);
    let have = bitvec::bitvec![0; 2];
    let (basis, _, released, _) = run(&[d.path().join("old")], &m, &content, &have);
    assert_eq!(released, [1]);
    let len = (BLOCK + 100) as u64;
    let cvs = blocks::cvs(&new[P..]);
    let old_cvs = blocks::cvs(&old[P..]);
    let kept = basis.old_cvs(1, m.piece_hash(1).unwrap()).expect("placed");
    assert_eq!(kept, [old_cvs[0], cvs[1]]);
    let (wanted, taken) = basis
        .fill_in_place(1, &cvs, len, &content, P as u64)
        .unwrap();
    assert_eq!(wanted.iter_ones().collect::<Vec<_>>(), [0]);
    assert_eq!(taken, 100);
    content.write_at(P as u64, &new[P..P + BLOCK]).unwrap();
    assert_eq!(fs::read(&target).unwrap(), new);
}

/// A file's last piece with a small file packed after it, in both
/// versions: the old window holds the small file's bytes too, so only
/// the big file's whole blocks are written ahead (the block it shares
/// with the small file has a CV of both, and is copied from the basis
/// like any block found there), and the copy is right.
#[test]
fn a_short_last_block_shared_with_a_packed_file_is_not_taken() {
    const P: usize = 4 * BLOCK;
    let d = tempfile::tempdir().unwrap();
    let a_old = data(P + BLOCK + 4096, 12);
    let mut a_new = a_old.clone();
    a_new[P + 7] ^= 1; // block 0 of piece 1
    let c = data(8192, 13); // packed after a, unchanged
    let (m, content, target) = trees_over(
        d.path(),
        &[("a", &a_old), ("c", &c)],
        &[("a", &a_new), ("c", &c)],
        P,
    );
    assert_eq!(m.piece_count(), 2);
    let have = bitvec::bitvec![0; 2];
    let (basis, _, released, _) = run(&[d.path().join("old")], &m, &content, &have);
    assert_eq!(released, [1]);
    let (at, len) = m.piece_range(1);
    let new_piece = [&a_new[P..], &c[..]].concat();
    assert_eq!(new_piece.len() as u64, len);
    let cvs = blocks::cvs(&new_piece);
    // the hints carry block 1's old CV all the same: a holder need not
    // send it
    let kept = basis.old_cvs(1, m.piece_hash(1).unwrap()).expect("placed");
    assert_eq!(kept[1], cvs[1]);
    let (wanted, taken) = basis.fill_in_place(1, &cvs, len, &content, at).unwrap();
    // block 1 (a's last 4 KiB and c) is read from the basis, where the
    // old window has it at the same place, and written
    assert_eq!(wanted.iter_ones().collect::<Vec<_>>(), [0]);
    assert_eq!(taken, 4096 + 8192);
    for j in wanted.iter_ones() {
        let r = blocks::range(j, len);
        content
            .write_at(at + r.start as u64, &new_piece[r])
            .unwrap();
    }
    assert_eq!(fs::read(target.join("a")).unwrap(), a_new);
    assert_eq!(fs::read(target.join("c")).unwrap(), c);
}

/// A piece whose own place cannot take blocks ahead (the old file ends a
/// few bytes into it) but that is whole elsewhere is written after the
/// pass: found, not fetched.
#[test]
fn a_piece_whole_away_from_its_own_place_is_found_after_the_pass() {
    const P: usize = 4 * BLOCK;
    let d = tempfile::tempdir().unwrap();
    let a = data(2 * P, 8);
    let short = data(P + 100, 9);
    let (m, content, target) = tree_over(d.path(), &[("a", &a), ("b", &short)], &a, P);
    let have = bitvec::bitvec![0; 2];
    let (basis, found, released, _) = run(&[d.path().join("old")], &m, &content, &have);
    // piece 0 of b: its own place took blocks ahead; piece 1: found in a
    assert_eq!((found, released), (vec![1], vec![0]));
    assert!(basis.placed(0) && !basis.placed(1));
    let got = fs::read(target.join("b")).unwrap();
    assert_eq!(&got[P..], &a[P..]);
}

#[test]
fn a_basis_that_is_missing_or_a_link_is_skipped() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("f");
    fs::write(&f, data(3 * BLOCK, 2)).unwrap();
    std::os::unix::fs::symlink(&f, d.path().join("l")).unwrap();
    let b = Basis::index(
        &[d.path().join("nope"), d.path().join("l")],
        &image(3 * BLOCK as u64, 4 * BLOCK as u32),
    );
    assert!(b.is_empty());
    let b = Basis::index(
        std::slice::from_ref(&f),
        &image(3 * BLOCK as u64, 4 * BLOCK as u32),
    );
    assert_eq!((b.files, b.is_empty()), (1, false));
    // more than twice the image's size is not hashed
    let b = Basis::index(
        std::slice::from_ref(&f),
        &image(BLOCK as u64, 4 * BLOCK as u32),
    );
    assert!(b.is_empty());
    // nor a file larger than any of the image's, within that budget
    let big = d.path().join("big");
    fs::write(&big, data(13 * BLOCK, 3)).unwrap();
    let entries = (0..10)
        .map(|i| crate::manifest::Entry {
            path: format!("f{i}"),
            kind: crate::manifest::EntryKind::File { size: BLOCK as u64 },
            meta: crate::manifest::Meta::mode(0o644),
        })
        .collect();
    let root = crate::manifest::Root::Dir {
        meta: crate::manifest::Meta::mode(0o755),
        entries,
    };
    let n = Manifest::pieces_for(&root, 4 * BLOCK as u32).unwrap() as usize;
    let tree = Manifest::new("t".into(), root, 4 * BLOCK as u32, vec![[0; 32]; n]);
    assert!(Basis::index(&[big], &tree).is_empty());
}

/// What the index may fill is held; new data is fetched at once: a file
/// grown past its old end, and a new file unless a file that left the
/// image has its size (then it may have moved, and the pass finds it).
#[test]
fn the_plan_holds_what_the_basis_may_have() {
    const P: usize = 4 * BLOCK;
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("old")).unwrap();
    fs::write(d.path().join("old/a"), data(2 * P, 1)).unwrap();
    fs::write(d.path().join("old/gone"), data(3 * P, 2)).unwrap();
    let file = |path: &str, size: usize| crate::manifest::Entry {
        path: path.into(),
        kind: crate::manifest::EntryKind::File { size: size as u64 },
        meta: crate::manifest::Meta::mode(0o644),
    };
    let root = crate::manifest::Root::Dir {
        meta: crate::manifest::Meta::mode(0o755),
        entries: vec![file("a", 4 * P), file("fresh", 2 * P), file("moved", 3 * P)],
    };
    let m = Manifest::new("t".into(), root, P as u32, vec![[0; 32]; 9]);
    let b = Basis::open(&[d.path().join("old")], &m);
    let mut have = bitvec::bitvec![0; 9];
    have.set(7, true);
    let held = b.plan(&m, &have);
    assert_eq!(held.iter_ones().collect::<Vec<_>>(), [0, 1, 6, 8]);
}

/// An image of one piece's content repeated, over a basis of the same:
/// every piece is found whole (each written once, from its own place or
/// after the pass), none fetched.
#[test]
fn repeated_content_is_found_whole_everywhere() {
    const P: usize = 4 * BLOCK;
    let d = tempfile::tempdir().unwrap();
    let one = data(P, 3);
    let img: Vec<u8> = one.repeat(6);
    let (m, content, target) = file_over(d.path(), &img[..4 * P], &img, P);
    let have = bitvec::bitvec![0; 6];
    let b = Basis::open(&[d.path().join("old")], &m);
    // pieces 4 and 5 lie past the old end: new data, not held
    assert_eq!(b.plan(&m, &have).count_ones(), 4);
    let (_, found, released, _) = run(&[d.path().join("old")], &m, &content, &have);
    assert_eq!((found, released), (vec![0, 1, 2, 3], vec![]));
    assert_eq!(&fs::read(&target).unwrap()[..4 * P], &img[..4 * P]);
}

/// Small files packed into pieces: a packed piece is held only where the
/// basis packs the same files at the same places (its shape), and then
/// released as soon as that window is read and differs; a packed piece
/// whose run of files shifted (a file grew) is fetched from the start,
/// not held to the end of the pass.
#[test]
fn packed_pieces_are_held_only_where_the_basis_packs_the_same_files() {
    const P: usize = 4 * BLOCK; // 64 KiB: files of 32 KiB are packed
    const F: usize = 32 << 10;
    let d = tempfile::tempdir().unwrap();
    let (a, b, c, e, f) = (data(F, 1), data(F, 2), data(F, 3), data(F, 5), data(F, 6));
    let dd = data(F, 4);
    let mut b2 = b.clone();
    b2[100] ^= 1; // same size, new bytes
    let mut f2 = f.clone();
    f2.extend(data(4096, 7)); // grown: the run e, f shifts
    let (m, content, target) = trees_over(
        d.path(),
        &[
            ("a", &a),
            ("b", &b),
            ("c", &c),
            ("d", &dd),
            ("e", &e),
            ("f", &f),
        ],
        &[
            ("a", &a),
            ("b", &b2),
            ("c", &c),
            ("d", &dd),
            ("e", &e),
            ("f", &f2),
        ],
        P,
    );
    assert_eq!(m.piece_count(), 4);
    let have = bitvec::bitvec![0; 4];
    let b0 = Basis::open(&[d.path().join("old")], &m);
    let held = b0.plan(&m, &have);
    // 0 (a, b) and 1 (c, d) have their shape in the basis; 2 (e and the
    // grown f) has not; 3 is f's new end
    assert_eq!(held.iter_ones().collect::<Vec<_>>(), [0, 1]);
    let mut calls = Vec::new();
    b0.run(&m, Some((&content, &held)), &AtomicBool::new(false), |p| {
        calls.push((p.found, p.released));
        true
    })
    .unwrap();
    // piece 0 released by the batch that read its window, not at the end
    assert_eq!(calls, [(vec![1], vec![0])]);
    assert_eq!(fs::read(target.join("c")).unwrap(), c);
    assert_eq!(fs::read(target.join("d")).unwrap(), dd);
}

/// A file that was small (packed) and grew past `PACK_BELOW` is fetched
/// from the start: its old bytes lie elsewhere in another piece, where the
/// pass cannot find its pieces. A piece of one block whose old version
/// differs (a file's last block rewritten) is released when its window is
/// read, not at the end of the pass.
#[test]
fn pieces_without_a_place_in_the_basis_are_not_held_to_the_end() {
    const P: usize = 4 * BLOCK;
    const K: usize = 1 << 10;
    let d = tempfile::tempdir().unwrap();
    let (a, h) = (data(212 * K, 1), data(8 * K, 2));
    let (g_old, g_new) = (data(32 * K, 3), data(100 * K, 3));
    let t_old = data(208 * K, 4);
    let mut t_new = t_old.clone();
    t_new[200 * K] ^= 1; // its last piece, of one block
    let (m, content, _) = trees_over(
        d.path(),
        &[("a", &a), ("g", &g_old), ("h", &h), ("t", &t_old)],
        &[("a", &a), ("g", &g_new), ("h", &h), ("t", &t_new)],
        P,
    );
    assert_eq!(m.piece_count(), 10);
    let have = bitvec::bitvec![0; 10];
    let b = Basis::open(&[d.path().join("old")], &m);
    let held = b.plan(&m, &have);
    // a (0-3) and t (6-9) are where they were; g (4, 5) grew from small
    assert_eq!(
        held.iter_ones().collect::<Vec<_>>(),
        [0, 1, 2, 3, 6, 7, 8, 9]
    );
    let mut calls = Vec::new();
    b.run(&m, Some((&content, &held)), &AtomicBool::new(false), |p| {
        let (mut f, mut r) = (p.found, p.released);
        f.sort_unstable();
        r.sort_unstable();
        calls.push((f, r));
        true
    })
    .unwrap();
    // one batch: a's last piece (with g and h after it in the old
    // window) and t's rewritten last block released there
    assert_eq!(calls, [(vec![0, 1, 2, 6, 7, 8], vec![3, 9])]);
}

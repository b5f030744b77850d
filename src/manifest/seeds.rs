//! Seeds for the `manifest` fuzz target (fuzz/corpus/manifest), written
//! by an ignored test: varied valid format-2 manifests.

use super::*;

/// Writes format-2 seeds for the `manifest` fuzz target to the
/// directory `SWARM_MANIFEST_SEEDS` names (`fuzz/corpus/manifest`):
/// `SWARM_MANIFEST_SEEDS=$PWD/fuzz/corpus/manifest cargo test --lib
/// write_fuzz_seeds -- --ignored`. Each seed must decode.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("SWARM_MANIFEST_SEEDS") else {
        panic!("set SWARM_MANIFEST_SEEDS to the corpus directory");
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut n = 0;
    for (name, m) in seeds() {
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m, "{name}");
        std::fs::write(dir.join(format!("v2-{name}")), bytes).unwrap();
        n += 1;
    }
    eprintln!("{n} seeds written to {}", dir.display());
}

/// An entry to seed with; hard links name their target by path.
enum Spec {
    F(&'static str, u64, Meta),
    D(&'static str, Meta),
    L(&'static str, String),
    H(&'static str, &'static str),
}

fn at(mode: u32, secs: i64, nanos: u32) -> Meta {
    Meta {
        mode,
        uid: 1000,
        gid: 100,
        mtime: Mtime { secs, nanos },
    }
}

fn hashes(n: u64) -> Vec<crate::manifest::Hash> {
    (0..n)
        .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
        .collect()
}

fn single(name: &str, log2: u8, size: u64, meta: Meta) -> Manifest {
    let root = Root::File { size, meta };
    let n = Manifest::pieces_for(&root, 1 << log2).unwrap();
    Manifest::new(name.into(), root, 1 << log2, hashes(n))
}

/// A tree of `specs`, sorted by path components as the format wants.
fn tree(name: &str, log2: u8, meta: Meta, mut specs: Vec<(String, Spec)>) -> Manifest {
    specs.sort_by(|a, b| {
        a.0.split('/')
            .collect::<Vec<_>>()
            .cmp(&b.0.split('/').collect::<Vec<_>>())
    });
    let index = |p: &str| specs.iter().position(|s| s.0 == p).unwrap() as u32;
    let entries: Vec<Entry> = specs
        .iter()
        .map(|(path, s)| {
            let (kind, meta) = match s {
                Spec::F(_, size, m) => (EntryKind::File { size: *size }, *m),
                Spec::D(_, m) => (EntryKind::Dir, *m),
                Spec::L(_, t) => (
                    EntryKind::Symlink { target: t.clone() },
                    at(SYMLINK_MODE, 1_700_000_000, 0),
                ),
                Spec::H(_, t) => (EntryKind::HardLink { target: index(t) }, Meta::default()),
            };
            Entry {
                path: path.clone(),
                kind,
                meta,
            }
        })
        .collect();
    let root = Root::Dir { meta, entries };
    let n = Manifest::pieces_for(&root, 1 << log2).unwrap();
    Manifest::new(name.into(), root, 1 << log2, hashes(n))
}

fn specs(list: Vec<Spec>) -> Vec<(String, Spec)> {
    list.into_iter()
        .map(|s| {
            let p = match &s {
                Spec::F(p, ..) | Spec::D(p, _) | Spec::L(p, _) | Spec::H(p, _) => *p,
            };
            (p.to_string(), s)
        })
        .collect()
}

fn seeds() -> Vec<(&'static str, Manifest)> {
    use Spec::*;
    let f = at(0o644, 1_764_000_000, 500_000_000);
    let d = at(0o755, 1_764_000_000, 0);
    let mut out = vec![
        ("file-empty", single("empty", 12, 0, f)),
        ("file-1-byte", single("one", 12, 1, f)),
        ("file-one-piece", single("page", 12, 4096, f)),
        ("file-piece-plus-1", single("page1", 12, 4097, f)),
        ("file-1m-at-1m", single("disk.img", 20, 1 << 20, f)),
        ("file-3m1-at-1m", single("disk.img", 20, (3 << 20) + 1, f)),
        (
            "file-setuid-16k",
            single("tool", 14, 100 << 10, at(0o4755, 1_600_000_000, 1)),
        ),
        ("file-1g-pieces", single("huge", 30, (64 << 30) + 5, f)),
        (
            "file-negative-mtime",
            single("old", 12, 9000, at(0o600, -1, 999_999_999)),
        ),
        (
            "file-extreme-meta",
            single(
                "x",
                16,
                70_000,
                Meta {
                    mode: 0o7777,
                    uid: u32::MAX - 1,
                    gid: u32::MAX - 1,
                    mtime: Mtime {
                        secs: i64::MIN,
                        nanos: 0,
                    },
                },
            ),
        ),
        (
            "file-unicode-name",
            single("données-é✓", 13, 12_345, at(0o640, i64::MAX, 999_999_999)),
        ),
        (".hidden-root", single(".hidden", 12, 100, f)),
        ("file-100-pieces", single("hundred", 12, 100 * 4096 - 1, f)),
        ("dir-empty", tree("empty", 12, d, vec![])),
        (
            "dir-empty-dirs",
            tree(
                "dirs",
                12,
                d,
                specs(vec![D("a", d), D("a/b", at(0o500, 9, 9)), D("c", d)]),
            ),
        ),
        (
            "dir-one-empty-file",
            tree("d", 12, d, specs(vec![F("e", 0, f)])),
        ),
        (
            "dir-nested",
            tree(
                "nest",
                12,
                d,
                specs(vec![
                    D("a", d),
                    D("a/b", d),
                    D("a/b/c", d),
                    F("a/b/c/deep", 5000, f),
                    F("a/b/mid", 1, f),
                    F("a/top", 4096, f),
                    F("z", 8193, f),
                ]),
            ),
        ),
        (
            "dir-component-order",
            // by components: a, a/b, a-b, a.b (by bytes a-b < a.b < a/b)
            tree(
                "order",
                12,
                d,
                specs(vec![
                    D("a", d),
                    F("a/b", 10, f),
                    F("a-b", 20, f),
                    F("a.b", 30, f),
                ]),
            ),
        ),
        (
            "dir-symlinks",
            tree(
                "links",
                12,
                d,
                specs(vec![
                    L("abs", "/srv/data/wal".into()),
                    L("rel", "sub/file".into()),
                    L("up", "../../etc/passwd".into()),
                    L("dot", ".".into()),
                    L("long", "x/".repeat(2047) + "y"),
                    D("sub", d),
                    F("sub/file", 3, f),
                    L("sub/back", "..".into()),
                ]),
            ),
        ),
        (
            "dir-only-symlinks",
            tree(
                "l",
                12,
                d,
                specs(vec![D("d", d), L("d/a", "/".into()), L("d/b", "b".into())]),
            ),
        ),
        (
            "dir-hard-links",
            tree(
                "hl",
                12,
                d,
                specs(vec![
                    F("a", 10_000, f),
                    H("b", "a"),
                    H("c", "a"),
                    D("sub", d),
                    F("sub/data", 5, at(0o600, 0, 0)),
                    H("sub/data2", "sub/data"),
                    H("z", "sub/data"),
                    F("zz-empty", 0, f),
                    H("zz-empty2", "zz-empty"),
                ]),
            ),
        ),
        (
            "dir-odd-modes",
            tree(
                "modes",
                12,
                at(0o2775, 1_700_000_000, 7),
                specs(vec![
                    D("setgid", at(0o2775, 1, 1)),
                    D("sticky", at(0o1777, 2, 2)),
                    F("setgid/f", 1, at(0o2755, 3, 3)),
                    F("sticky/all", 2, at(0o7777, 4, 4)),
                    F("sticky/none", 3, at(0, 5, 5)),
                    D("private", at(0o700, -5, 5)),
                ]),
            ),
        ),
        (
            "dir-piece-boundaries",
            tree(
                "sizes",
                12,
                d,
                specs(vec![
                    F("a", 4096, f),
                    F("b", 1, f),
                    F("c", 0, f),
                    F("d", 8191, f),
                    F("e", 8192, f),
                    F("f", 12289, f),
                ]),
            ),
        ),
        (
            "dir-big-pieces",
            tree(
                "db",
                22,
                d,
                specs(vec![
                    D("base", d),
                    F("base/1", (4 << 20) * 3 + 17, at(0o600, 1_764_000_000, 0)),
                    F("base/2", 8 << 20, at(0o600, 1_764_000_000, 0)),
                    F("pg_control", 8192, at(0o600, 1_764_000_000, 0)),
                ]),
            ),
        ),
        (
            "dir-long-names",
            tree(
                "long",
                12,
                d,
                vec![
                    ("n".repeat(255), D("", d)),
                    (
                        format!("{}/{}", "n".repeat(255), "m".repeat(255)),
                        F("", 77, f),
                    ),
                ],
            ),
        ),
        (
            "dir-unicode",
            tree(
                "u",
                12,
                d,
                specs(vec![
                    D("répertoire", d),
                    F("répertoire/文件", 42, f),
                    L("répertoire/ссылка", "文件".into()),
                ]),
            ),
        ),
    ];
    // a path near the 4096-byte limit: 16 levels of 250-byte names
    let mut deep = Vec::new();
    let mut p = String::new();
    for i in 0..16 {
        if i > 0 {
            p.push('/');
        }
        p.push_str(&format!("{i:x}").repeat(250));
        deep.push((p.clone(), D("", d)));
    }
    deep.push((format!("{p}/f"), F("", 1, f)));
    out.push(("dir-deep-path", tree("deep", 12, d, deep)));
    // many entries: dirs of files, links and hard links
    let mut many = Vec::new();
    for i in 0..20 {
        let dir = format!("d{i:02}");
        many.push((dir.clone(), D("", d)));
        for j in 0..10 {
            let size = (i * 10 + j) as u64 % 7 * 1500;
            many.push((format!("{dir}/f{j}"), F("", size, f)));
        }
        many.push((format!("{dir}/link"), L("", format!("f{}", i % 10))));
    }
    out.push(("dir-many-entries", tree("many", 12, d, many)));
    let mut flat = Vec::new();
    for i in 0..300 {
        flat.push((format!("{i:04}"), F("", i % 3, at(0o644, i as i64, 0))));
    }
    out.push(("dir-many-small-files", tree("flat", 12, d, flat)));
    let mut hard = vec![("orig".to_string(), F("", 1 << 20, f))];
    for i in 0..50 {
        hard.push((format!("p{i:02}"), H("", "orig")));
    }
    out.push(("dir-many-hard-links", tree("hard", 16, d, hard)));
    out
}

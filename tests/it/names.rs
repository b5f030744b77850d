//! Names chosen by the seed reach the joiner's terminal and logs escaped
//! (issue 21): a root name or entry path with ESC sequences, newlines, BEL,
//! C1 controls or bidi overrides is printed as `\u{1b}`, `\n`, ...

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use swarm::ticket::Ticket;

use crate::util::*;

const EVIL: &str = "evil\u{1b}[31mred\n\u{7}bell\u{9b}2J\u{202e}txt";
const SHOWN: &str = "evil\\u{1b}[31mred\\n\\u{7}bell\\u{9b}2J\\u{202e}txt";

/// Asserts `out` has no control characters but line ends, and no bidi
/// override; returns it as text.
fn assert_clean(out: &[u8], what: &str) -> String {
    let text = String::from_utf8(out.to_vec()).expect("output is UTF-8");
    for c in text.chars() {
        let bad = (c.is_control() && c != '\n') || c == '\u{202e}';
        assert!(!bad, "{what}: raw {c:?} in output:\n{text}");
    }
    text
}

fn join_cmd(ticket: &str, dest: &Path, extra: &[&str]) -> Command {
    let mut c = swarm();
    c.args(["-v", "join", ticket])
        .arg(dest)
        .args(["--listen", "127.0.0.1:0", "--exit-on-complete"])
        .args(extra);
    c
}

#[test]
fn names_from_the_seed_are_printed_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("src")).unwrap();
    let image = root.join("src").join(EVIL);
    random_file(&image, 200_000, 8);
    let seed = seed(root, &image, &[]);
    let dest = root.join("dest");
    fs::create_dir(&dest).unwrap();

    // progress, logs (-v), the summary, and the report's "output" (the
    // destination as printed, escaped)
    let rep = root.join("join.json");
    let out = run(
        join_cmd(&seed.ticket, &dest, &["--report", rep.to_str().unwrap()]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    let r = report(&rep);
    assert_eq!(
        r["output"].as_str(),
        Some(dest.join(SHOWN).to_str().unwrap()),
        "{r}"
    );
    assert_clean(&out.stdout, "stdout");
    let err = assert_clean(&out.stderr, "stderr of a join");
    assert!(
        err.contains(&format!("-> {}", dest.join(SHOWN).display())),
        "{err}"
    );
    assert_same(&image, &dest.join(EVIL));

    // run again: up to date, and saying so names the destination
    let out = run(join_cmd(&seed.ticket, &dest, &[]), LIMIT);
    assert_eq!(out.status.code(), Some(0));
    let err = assert_clean(&out.stderr, "stderr of a join up to date");
    assert!(
        err.contains(SHOWN) && err.contains("already up to date"),
        "{err}"
    );

    // an error naming the destination: a copy that differs
    fs::OpenOptions::new()
        .append(true)
        .open(dest.join(EVIL))
        .unwrap()
        .write_all(b"x")
        .unwrap();
    let out = run(join_cmd(&seed.ticket, &dest, &[]), LIMIT);
    assert_eq!(out.status.code(), Some(5));
    let err = assert_clean(&out.stderr, "stderr of a failed join");
    assert!(
        err.contains(SHOWN) && err.contains("already exists") && err.contains("differs"),
        "{err}"
    );
}

#[test]
fn entry_paths_from_the_seed_are_printed_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tree = root.join("src/tree");
    fs::create_dir_all(tree.join(EVIL)).unwrap();
    random_file(&tree.join(EVIL).join("f"), 10_000, 9);
    let seed = seed(root, &tree, &[]);
    // a link in a partial tree: the error names the entry
    let dest = root.join("dest");
    let id = Ticket::parse(&seed.ticket).unwrap().manifest_id;
    let partial = dest.join(format!(".tree.swarm-{id}.partial"));
    fs::create_dir_all(partial.join(EVIL)).unwrap();
    symlink("/dev/null", partial.join(EVIL).join("f")).unwrap();
    let out = run(join_cmd(&seed.ticket, &dest, &[]), LIMIT);
    assert_eq!(out.status.code(), Some(5));
    let err = assert_clean(&out.stderr, "stderr");
    assert!(
        err.contains(&format!("{SHOWN}/f is a symbolic link")),
        "{err}"
    );
}

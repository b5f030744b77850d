//! Delta: tonight's image over last night's (issue 22). Every joiner host
//! already holds the previous version of the image at its destination and
//! must get the new one; the seed host has the new one.
//!
//!     SWARM_BENCH_SCENARIO=delta cargo bench --bench compare
//!     SWARM_BENCH_QUICK=1 SWARM_BENCH_SCENARIO=delta cargo bench --bench compare
//!
//! Images, pseudo-random (nothing compresses), deterministic from the size
//! and p (SWARM_BENCH_DELTA_VARIANTS picks among them, default both):
//!
//! * `file`: S bytes in 16 KiB pages; the new version has p% of the pages
//!   rewritten (new random content, distinct page-aligned places) and S/20
//!   bytes appended (SWARM_BENCH_DELTA_APPEND sets that percentage: 0 for
//!   a push of page rewrites alone).
//! * `tree`: a datadir-like tree (base/1, base/16384, base/16385, global) of
//!   a few hundred files, sizes log-uniform from 4 KiB to S/64 (at least
//!   64 KiB), S in all. The new version: p% of the pages of all kept files
//!   rewritten, 5% of the files grown by S/50 in all, three new files
//!   `base/0000_new_K` of S/150 each, 2% of the files removed, the largest
//!   remaining file moved to another directory unchanged.
//!
//! C, the changed bytes = rewritten pages + appended bytes + new files
//! (moved and removed files count 0). T*_delta = max(C/B, C/W per remote
//! group). mtimes are as an operator's would be: last night's files carry
//! one time, tonight's unchanged and moved files keep it, changed and new
//! ones carry a later one (so rsync's quick check skips the unchanged).
//!
//! Methods (each starts from a fresh copy of the old version, `cp -a`, at
//! every joiner's destination, but swarm-full):
//!
//! * cascade-delta: rsync.rs's cascade, `rsync -a --delete` with the old
//!   version at the destination: rsync's own delta algorithm.
//! * bittorrent-delta: torrent.rs with `--check-integrity=true` for every
//!   joiner's aria2c: it hashes the old data in place and fetches only the
//!   pieces that differ. aria2c leaves files that are not in the torrent
//!   (removed, moved away): they are deleted after it finished, untimed.
//! * swarm-full: swarm into an empty destination, what a copy costs today.
//! * swarm-delta: `swarm join TICKET DIR --force` over the old version at
//!   DIR/NAME, which swarm uses as its basis (reports `bytes_from_basis`;
//!   a run where swarm took nothing from it fails).
//!
//! Per method: the last host's time / T*_delta, each joiner's NIC rx bytes
//! (kernel counter in its namespace, before and after) / C, WAN bytes into
//! each remote group / C, and every copy's hash (paths, sizes, contents).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde_json::{Value, json};

mod image;

use crate::netsim::{Net, Spec};
use crate::{Bench, rsync, swarm, torrent};
use image::{Image, PAGE, make_file, make_tree, prune, remove, tree_hash};

pub const METHODS: &[&str] = &[
    "cascade-delta",
    "bittorrent-delta",
    "swarm-full",
    "swarm-delta",
];

/// The bytes joiner `j`'s NIC has received, from its namespace's sysfs.
fn rx_bytes(b: &Bench, j: usize) -> Result<u64, String> {
    let out = b
        .net
        .command(b.host(j), "cat")
        .arg("/sys/class/net/eth0/statistics/rx_bytes")
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .map_err(|e| format!("rx_bytes of {}: {e}: {text:?}", b.name(j)))
}

struct Row {
    method: String,
    done: Vec<f64>,
    cpu: f64,
    rx: Vec<u64>,
    wan_in: Vec<u64>,
    seed_sent: u64,
    /// From swarm's reports, where they have the fields.
    from_basis: Option<Vec<u64>>,
    received: Option<Vec<u64>>,
}

impl Row {
    fn last(&self) -> f64 {
        self.done.iter().copied().fold(0.0, f64::max)
    }
}

fn env_list(key: &str, default: &str) -> Vec<String> {
    std::env::var(key)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect()
}

pub fn run(
    specs: Vec<Spec>,
    size: u64,
    quick: bool,
    methods: &[String],
    out_dir: &Path,
) -> Result<(), String> {
    let ps: Vec<f64> = env_list("SWARM_BENCH_DELTA_P", if quick { "10" } else { "1,10" })
        .iter()
        .map(|p| {
            p.parse()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| format!("SWARM_BENCH_DELTA_P: {p:?} is not a percentage"))
        })
        .collect::<Result<_, _>>()?;
    let append: f64 = std::env::var("SWARM_BENCH_DELTA_APPEND")
        .map(|a| {
            a.parse()
                .ok()
                .filter(|a| (0.0..=100.0).contains(a))
                .ok_or_else(|| format!("SWARM_BENCH_DELTA_APPEND: {a:?} is not a percentage"))
        })
        .unwrap_or(Ok(5.0))?;
    let variants = env_list("SWARM_BENCH_DELTA_VARIANTS", "file,tree");
    if let Some(v) = variants
        .iter()
        .find(|v| !["file", "tree"].contains(&v.as_str()))
    {
        return Err(format!(
            "SWARM_BENCH_DELTA_VARIANTS: {v:?}: want file, tree"
        ));
    }
    let (nic, wan, delay) = (specs[0].nic_bps, specs[0].wan_bps, specs[0].wan_delay);
    let mut cases = Vec::new();
    for spec in specs {
        let (groups, hosts) = (spec.hosts.len(), spec.hosts[0]);
        let net = Net::new(spec)?;
        let mut dir = tempfile::Builder::new()
            .prefix("swarm-delta-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let joiners: Vec<(usize, usize)> = net
            .hosts
            .iter()
            .enumerate()
            .flat_map(|(g, hs)| (0..hs.len()).map(move |h| (g, h)))
            .filter(|&gh| gh != (0, 0))
            .collect();
        let mut bench = Bench {
            net,
            image: PathBuf::new(),
            joiners,
            limit: Duration::ZERO,
        };
        for variant in &variants {
            for &p in &ps {
                let mut rng =
                    SmallRng::seed_from_u64(size ^ (p * 1000.0) as u64 ^ variant.len() as u64);
                let img = if variant == "file" {
                    make_file(dir.path(), size, p, append, &mut rng)
                } else {
                    make_tree(dir.path(), size, p, &mut rng)
                }?;
                let rows = run_case(&mut bench, &img, methods, dir.path()).inspect_err(|_| {
                    dir.disable_cleanup(true); // keep the logs for a look
                })?;
                let c = img.changed() as f64;
                let t_delta = if groups > 1 {
                    (c * 8.0 / nic as f64).max(c * 8.0 / wan as f64)
                } else {
                    c * 8.0 / nic as f64
                };
                print_case(groups, hosts, p, &img, nic, wan, t_delta, &rows);
                cases.push(case_json(groups, hosts, p, &img, t_delta, &rows));
                remove(&img.old)?;
                remove(&img.new)?;
            }
        }
    }
    let figures = json!({
        "scenario": "delta",
        "page_bytes": PAGE,
        "size": size,
        "nic_bps": nic,
        "wan_bps": wan,
        "wan_one_way_delay_ms": delay.as_millis() as u64,
        "cases": cases,
    });
    let path = out_dir.join("compare-delta.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&figures).expect("json") + "\n",
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    println!("figures: {}", path.display());
    Ok(())
}

/// Runs every method on one pair of versions.
fn run_case(
    bench: &mut Bench,
    img: &Image,
    methods: &[String],
    dir: &Path,
) -> Result<Vec<Row>, String> {
    bench.image = img.new.clone();
    let (groups, n) = (bench.net.hosts.len(), bench.joiners.len());
    // as main.rs: the full copy's T*, with room for slow methods
    let bits = img.new_size as f64 * 8.0;
    let mut limit = bits / bench.net.spec.nic_bps as f64;
    if groups > 1 {
        limit = limit.max(bits / bench.net.spec.wan_bps as f64);
    }
    bench.limit = Duration::from_secs_f64(limit * 1.5 * (n + 4) as f64 + 120.0);
    let want = tree_hash(&img.new)?;
    let name = img.new.file_name().expect("named");
    let mut rows = Vec::new();
    for method in methods {
        eprintln!(
            "compare: {method}, {} p = {}%, on {} hosts ...",
            img.variant,
            img.p,
            n + 1
        );
        let b = &*bench;
        let out = dir.join(format!("{}-p{}-{method}", img.variant, img.p));
        std::fs::create_dir_all(out.join("logs")).map_err(|e| e.to_string())?;
        for j in 0..n {
            let host = out.join(b.name(j));
            std::fs::create_dir_all(&host).map_err(|e| e.to_string())?;
            if method != "swarm-full" {
                let ok = std::process::Command::new("cp")
                    .arg("-a")
                    .arg(&img.old)
                    .arg(&host)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err(format!(
                        "cp -a {} {} failed",
                        img.old.display(),
                        host.display()
                    ));
                }
            }
        }
        crate::settle_disk()?;
        let wan_before: Vec<u64> = (1..groups).map(|g| b.net.wan_bytes_in(g)).collect();
        let rx_before: Vec<u64> = (0..n).map(|j| rx_bytes(b, j)).collect::<Result<_, _>>()?;
        let seed_before = b.net.host_bytes_sent(b.seed());
        let outcome = match method.as_str() {
            "cascade-delta" => rsync::cascade_with(b, &out, &["--delete"]),
            "bittorrent-delta" => torrent::bittorrent_with(b, &out, &["--check-integrity=true"]),
            "swarm-full" => swarm::swarm_with(b, &out, &[]),
            "swarm-delta" => swarm::swarm_with(b, &out, &["--force"]),
            _ => unreachable!("checked in main"),
        }
        .map_err(|e| {
            format!(
                "{method} failed: {e}\n(logs in {})",
                out.join("logs").display()
            )
        })?;
        let rx: Vec<u64> = (0..n)
            .map(|j| Ok(rx_bytes(b, j)? - rx_before[j]))
            .collect::<Result<_, String>>()?;
        let wan_in = (1..groups)
            .map(|g| b.net.wan_bytes_in(g) - wan_before[g - 1])
            .collect();
        let seed_sent = b.net.host_bytes_sent(b.seed()) - seed_before;
        if let Ok(keep) = std::env::var("SWARM_BENCH_LOGS") {
            let to = Path::new(&keep).join(format!(
                "{groups}x{}-{}-p{}-{method}",
                b.net.hosts[0].len(),
                img.variant,
                img.p
            ));
            crate::copy_dir(&out.join("logs"), &to)?;
        }
        let report = |j: usize, field: &str| -> Option<u64> {
            let path = out.join("logs").join(format!("{}.json", b.name(j)));
            let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
            v[field].as_u64()
        };
        let field = |f: &str| -> Option<Vec<u64>> { (0..n).map(|j| report(j, f)).collect() };
        let swarm = method.starts_with("swarm");
        for j in 0..n {
            let copy = out.join(b.name(j)).join(name);
            if method == "bittorrent-delta" {
                prune(&copy, &img.new)?; // what the torrent does not list
            }
            let got = tree_hash(&copy)?;
            if got != want {
                return Err(format!(
                    "{method}: the copy on {} is NOT the new version ({got} != {want}); \
                     files kept in {}",
                    b.name(j),
                    out.display()
                ));
            }
            remove(&copy)?;
        }
        rows.push(Row {
            method: method.clone(),
            done: outcome.done,
            cpu: outcome.cpu,
            rx,
            wan_in,
            seed_sent,
            from_basis: field("bytes_from_basis").filter(|_| swarm),
            received: field("bytes_received").filter(|_| swarm),
        });
    }
    Ok(rows)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn mean(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len() as f64
}

#[allow(clippy::too_many_arguments)]
fn print_case(
    groups: usize,
    hosts: usize,
    p: f64,
    img: &Image,
    nic: u64,
    wan: u64,
    t_delta: f64,
    rows: &[Row],
) {
    let c = img.changed() as f64;
    println!();
    println!(
        "{groups} x {hosts} hosts, {} p = {p}%: old {:.1} MiB, new {:.1} MiB in {} file(s); \
         C = {:.2} MiB ({:.2} rewritten + {:.2} appended + {:.2} new files)",
        img.variant,
        mib(img.old_size),
        mib(img.new_size),
        img.files,
        mib(img.changed()),
        mib(img.rewritten),
        mib(img.appended),
        mib(img.added),
    );
    println!(
        "B = {} Mbit/s{}: T*_delta = {t_delta:.2} s (a full copy's S/B: {:.1} s)",
        nic / 1_000_000,
        if groups > 1 {
            format!(", W = {} Mbit/s", wan / 1_000_000)
        } else {
            String::new()
        },
        img.new_size as f64 * 8.0 / nic as f64
    );
    println!(
        "{:<16} {:>7} {:>9} {:>9} {:>8} {:>11} {:>12} {:>6} {:>10}",
        "method",
        "last s",
        "last/T*d",
        "rx/C mean",
        "rx/C max",
        "seed sent/C",
        "WAN in/C",
        "CPU s",
        "basis/S"
    );
    for r in rows {
        let wan_in: Vec<String> = r
            .wan_in
            .iter()
            .map(|w| format!("{:.3}", *w as f64 / c))
            .collect();
        let basis = r.from_basis.as_ref().map_or("-".into(), |v| {
            format!("{:.3}", mean(v) / img.new_size as f64)
        });
        println!(
            "{:<16} {:>7.1} {:>9.2} {:>9.3} {:>8.3} {:>11.3} {:>12} {:>6.1} {:>10}",
            r.method,
            r.last(),
            r.last() / t_delta,
            mean(&r.rx) / c,
            *r.rx.iter().max().unwrap_or(&0) as f64 / c,
            r.seed_sent as f64 / c,
            if wan_in.is_empty() {
                "-".into()
            } else {
                wan_in.join(" ")
            },
            r.cpu,
            basis
        );
    }
    if rows
        .iter()
        .any(|r| r.method == "swarm-delta" && r.from_basis.as_ref().is_none_or(|v| v.contains(&0)))
    {
        crate::fail(
            "swarm-delta: a joiner took nothing from its basis (bytes_from_basis 0 or missing)",
        );
    }
}

fn case_json(
    groups: usize,
    hosts: usize,
    p: f64,
    img: &Image,
    t_delta: f64,
    rows: &[Row],
) -> Value {
    let c = img.changed() as f64;
    json!({
        "groups": groups,
        "hosts_per_group": hosts,
        "variant": img.variant,
        "p_percent": p,
        "old_bytes": img.old_size,
        "new_bytes": img.new_size,
        "files": img.files,
        "changed_bytes": img.changed(),
        "rewritten_bytes": img.rewritten,
        "appended_bytes": img.appended,
        "new_file_bytes": img.added,
        "t_delta_secs": t_delta,
        "methods": rows.iter().map(|r| json!({
            "method": r.method,
            "last_secs": r.last(),
            "last_over_t_delta": r.last() / t_delta,
            "done_secs": r.done,
            "rx_bytes": r.rx,
            "rx_per_c_mean": mean(&r.rx) / c,
            "rx_per_c_max": *r.rx.iter().max().unwrap_or(&0) as f64 / c,
            "seed_sent_bytes": r.seed_sent,
            "wan_in_bytes": r.wan_in,
            "wan_in_per_c": r.wan_in.iter().map(|w| *w as f64 / c).collect::<Vec<_>>(),
            "cpu_secs": r.cpu,
            "swarm_bytes_from_basis": r.from_basis,
            "swarm_bytes_received": r.received,
        })).collect::<Vec<_>>(),
    })
}

//! swarm against what operators run today (issue 4), on the emulated
//! datacenter network of tests/it/netsim.rs: the same network, the same
//! random image, one method after the other in one run, the physical limit
//! T* = max(S/B, S/W) beside every result.
//!
//!     cargo bench --bench compare                          # full: the figures in docs/benchmarks.md
//!     SWARM_BENCH_QUICK=1 cargo bench --bench compare      # CI: 1x4 and 2x2 hosts, 16 MiB
//!
//! Methods (SWARM_BENCH_METHODS, comma separated): serial and cascade
//! (real rsync, rsync.rs), bittorrent (aria2c, opentracker, mktorrent,
//! torrent.rs), swarm (swarm.rs), and tcp-chain and quic-chain (ceiling.rs):
//! not methods but ceilings of this machine and network, kernel TCP and
//! QUIC with swarm's settings, memory to memory in a chain of simultaneous
//! flows; they make no copies to verify.
//!
//! Layouts (SWARM_BENCH_LAYOUTS, default `1x16,2x8,1x4,1x8`): GxH is G
//! groups of H hosts; the seed is host 0 of group 0 and counts as one of
//! its H. Other knobs: SWARM_BENCH_SIZE (512MiB), SWARM_BENCH_NIC_MBIT
//! (200), SWARM_BENCH_WAN_MBIT (100), SWARM_BENCH_WAN_DELAY_MS (30, one
//! way), SWARM_BENCH_MTU (1500), SWARM_BENCH_OUT (docs/bench, or
//! target/bench-compare in quick mode), SWARM_BENCH_LOGS (a directory to
//! keep each method's logs and swarm's reports in, as
//! GxH-method/; none by default), SWARM_BENCH_JOIN_ARGS (more arguments
//! for every `swarm join`, e.g. `--bridges 2`), SWARM_BENCH_SEED_ARGS (for
//! `swarm seed`, e.g. `--piece-size 256KiB`). Needs root; writes compare.json and
//! one SVG per layout (plus scaling.svg) into the output directory.
//!
//! SWARM_BENCH_SCENARIO=delta runs another scenario instead: every joiner
//! already holds last night's version and gets tonight's (delta.rs).

mod ceiling;
#[path = "../common/cpu.rs"]
mod cpu;
mod delta;
#[path = "../../tests/it/netsim.rs"]
mod netsim;
mod plot;
#[path = "../common/quic.rs"]
mod quic;
mod rsync;
mod swarm;
mod task;
mod torrent;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::json;

use netsim::{Host, Net, Spec};

/// One layout's network, image and hosts, shared by every method.
pub struct Bench {
    pub net: Net,
    /// The image, in the seed host's directory.
    pub image: PathBuf,
    /// (group, host) of every host but the seed.
    pub joiners: Vec<(usize, usize)>,
    /// A method that takes longer has failed.
    pub limit: Duration,
}

impl Bench {
    pub fn seed(&self) -> &Host {
        self.net.host(0, 0)
    }

    pub fn host(&self, j: usize) -> &Host {
        let (g, h) = self.joiners[j];
        self.net.host(g, h)
    }

    pub fn name(&self, j: usize) -> String {
        let (g, h) = self.joiners[j];
        format!("g{g}h{h}")
    }
}

/// What a method reports: when each joiner (in `Bench::joiners` order) had
/// its copy, in seconds from the method's start, and the CPU seconds of
/// all its processes.
pub struct Outcome {
    pub done: Vec<f64>,
    pub cpu: f64,
}

/// The results of one layout.
struct Layout {
    groups: usize,
    hosts: usize,
    limit: f64,
    results: Vec<Measured>,
}

struct Measured {
    method: String,
    done: Vec<f64>,
    cpu: f64,
    seed_sent: u64,
    /// Bytes into each remote group (groups 1..) over its uplink.
    wan_in: Vec<u64>,
    /// The same as IP packets (frames less their Ethernet headers).
    wan_ip_in: Vec<u64>,
}

impl Measured {
    fn last(&self) -> f64 {
        self.done.iter().copied().fold(0.0, f64::max)
    }

    fn median(&self) -> f64 {
        let mut d = self.done.clone();
        d.sort_by(f64::total_cmp);
        d[d.len() / 2]
    }
}

const METHODS: &[&str] = &[
    "serial",
    "cascade",
    "bittorrent",
    "swarm",
    "tcp-chain",
    "quic-chain",
];

/// The ceilings, not methods: they make no copies.
const CEILINGS: &[&str] = &["tcp-chain", "quic-chain"];

/// The tools a method needs, with the Debian package that has each.
fn needs(method: &str) -> &'static [(&'static str, &'static str)] {
    match method {
        "serial" | "cascade" => &[("rsync", "rsync")],
        "bittorrent" => &[
            ("aria2c", "aria2"),
            ("mktorrent", "mktorrent"),
            ("opentracker", "opentracker"),
        ],
        _ => &[],
    }
}

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{key}={v} is not a number"))
    })
}

fn fail(msg: &str) -> ! {
    eprintln!("compare: {msg}");
    std::process::exit(1)
}

fn hash(path: &Path) -> Result<blake3::Hash, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(blake3::Hasher::new().update_rayon(&data).finalize())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery
    }
    task::catch_signals();
    let quick = std::env::var("SWARM_BENCH_QUICK").is_ok_and(|v| v == "1");
    let scenario = std::env::var("SWARM_BENCH_SCENARIO").unwrap_or_else(|_| "full".into());
    let delta = match scenario.as_str() {
        "full" => false,
        "delta" => true,
        s => fail(&format!("SWARM_BENCH_SCENARIO={s}: want full or delta")),
    };
    let full_size = if delta { 1 << 30 } else { 512 << 20 };
    let size =
        std::env::var("SWARM_BENCH_SIZE").map_or(if quick { 16 << 20 } else { full_size }, |v| {
            v.parse::<bytesize::ByteSize>()
                .unwrap_or_else(|e| fail(&format!("SWARM_BENCH_SIZE={v}: {e}")))
                .as_u64()
        });
    let layouts: Vec<(usize, usize)> = std::env::var("SWARM_BENCH_LAYOUTS")
        .unwrap_or_else(|_| {
            match (quick, delta) {
                (true, _) => "1x4,2x2",
                (false, false) => "1x16,2x8,1x4,1x8",
                (false, true) => "1x8,2x4",
            }
            .into()
        })
        .split(',')
        .map(|l| {
            l.trim()
                .split_once('x')
                .and_then(|(g, h)| Some((g.parse().ok()?, h.parse().ok()?)))
                .filter(|&(g, h): &(usize, usize)| g >= 1 && h >= 1 && g * h >= 2)
                .unwrap_or_else(|| fail(&format!("layout {l:?}: want GxH, e.g. 2x8")))
        })
        .collect();
    let known = if delta { delta::METHODS } else { METHODS };
    let methods: Vec<String> = std::env::var("SWARM_BENCH_METHODS")
        .map_or(known.iter().map(|m| m.to_string()).collect(), |v| {
            v.split(',').map(|m| m.trim().to_string()).collect()
        });
    // the network itself needs iproute2 (ip, tc; ss to see listeners)
    let network: &[(&str, &str)] = &[("ip", "iproute2"), ("tc", "iproute2"), ("ss", "iproute2")];
    for m in &methods {
        if !known.contains(&m.as_str()) {
            fail(&format!(
                "unknown method {m:?}; known: {}",
                known.join(", ")
            ));
        }
        let m = m.strip_suffix("-delta").unwrap_or(m);
        for (tool, package) in network.iter().chain(needs(m)) {
            let found = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                fail(&format!(
                    "method {m} needs {tool}: apt-get install {package}"
                ));
            }
        }
    }
    let nic = env_num("SWARM_BENCH_NIC_MBIT", 200) * 1_000_000;
    let wan = env_num("SWARM_BENCH_WAN_MBIT", 100) * 1_000_000;
    let delay = Duration::from_millis(env_num("SWARM_BENCH_WAN_DELAY_MS", 30));
    let mtu = env_num("SWARM_BENCH_MTU", 1500) as u32;
    let out_dir = std::env::var("SWARM_BENCH_OUT").map_or_else(
        |_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(if quick {
                "target/bench-compare"
            } else {
                "docs/bench"
            })
        },
        PathBuf::from,
    );
    std::fs::create_dir_all(&out_dir)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", out_dir.display())));
    let spec = |groups: usize, hosts: usize| Spec {
        hosts: vec![hosts; groups],
        nic_bps: nic,
        wan_bps: wan,
        wan_delay: delay,
        mtu,
    };
    if delta {
        let specs = layouts.iter().map(|&(g, h)| spec(g, h)).collect();
        delta::run(specs, size, quick, &methods, &out_dir).unwrap_or_else(|e| fail(&e));
        return;
    }

    let mut all = Vec::new();
    for &(groups, hosts) in &layouts {
        let spec = spec(groups, hosts);
        let bits = size as f64 * 8.0;
        let limit = if groups > 1 {
            (bits / nic as f64).max(bits / wan as f64)
        } else {
            bits / nic as f64
        };
        let results = run_layout(spec, size, limit, &methods).unwrap_or_else(|e| fail(&e));
        print_layout(groups, hosts, size, nic, wan, delay, limit, &results);
        let title = format!(
            "{groups} x {hosts} hosts, {} MiB, NIC {} Mbit/s{}",
            size >> 20,
            nic / 1_000_000,
            if groups > 1 {
                format!(", WAN {} Mbit/s {} ms", wan / 1_000_000, delay.as_millis())
            } else {
                String::new()
            }
        );
        let curves: Vec<(&str, &[f64])> = results
            .iter()
            .map(|r| (r.method.as_str(), r.done.as_slice()))
            .collect();
        let svg = out_dir.join(format!("compare-{groups}x{hosts}.svg"));
        plot::completions(&svg, &title, limit, &curves).unwrap_or_else(|e| fail(&e));
        println!("plot: {}", svg.display());
        all.push(Layout {
            groups,
            hosts,
            limit,
            results,
        });
    }
    scaling(&all, &methods, size, &out_dir);

    let figures = json!({
        "size": size,
        "nic_bps": nic,
        "wan_bps": wan,
        "wan_one_way_delay_ms": delay.as_millis() as u64,
        "host_mtu": mtu,
        "layouts": all.iter().map(|l| json!({
            "groups": l.groups,
            "hosts_per_group": l.hosts,
            "limit_secs": l.limit,
            "methods": l.results.iter().map(|r| json!({
                "method": r.method,
                "last_secs": r.last(),
                "median_secs": r.median(),
                "last_over_limit": r.last() / l.limit,
                "done_secs": r.done,
                "seed_sent_bytes": r.seed_sent,
                "seed_sent_per_s": r.seed_sent as f64 / size as f64,
                "wan_in_bytes": r.wan_in,
                "wan_in_per_s": r.wan_in.iter().map(|b| *b as f64 / size as f64).collect::<Vec<_>>(),
                "wan_ip_in_bytes": r.wan_ip_in,
                "wan_ip_in_per_s": r.wan_ip_in.iter().map(|b| *b as f64 / size as f64).collect::<Vec<_>>(),
                "cpu_secs": r.cpu,
                "cpu_secs_per_gb": r.cpu / (size as f64 * r.done.len() as f64 / 1e9),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let path = out_dir.join("compare.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&figures).expect("json") + "\n",
    )
    .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    println!("figures: {}", path.display());
}

fn run_layout(
    spec: Spec,
    size: u64,
    limit: f64,
    methods: &[String],
) -> Result<Vec<Measured>, String> {
    let net = Net::new(spec)?;
    let mut dir = tempfile::Builder::new()
        .prefix("swarm-compare-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let seed_dir = dir.path().join("seed");
    std::fs::create_dir_all(&seed_dir).map_err(|e| e.to_string())?;
    let image = seed_dir.join("image.bin");
    let mut data = vec![0u8; size as usize];
    rand::rngs::SmallRng::seed_from_u64(size).fill_bytes(&mut data);
    std::fs::write(&image, &data).map_err(|e| e.to_string())?;
    drop(data);
    let want = hash(&image)?;
    let joiners: Vec<(usize, usize)> = net
        .hosts
        .iter()
        .enumerate()
        .flat_map(|(g, hs)| (0..hs.len()).map(move |h| (g, h)))
        .filter(|&gh| gh != (0, 0))
        .collect();
    let bench = Bench {
        limit: Duration::from_secs_f64(limit * 1.5 * (joiners.len() + 4) as f64 + 120.0),
        net,
        image,
        joiners,
    };
    let groups = bench.net.hosts.len();
    let mut results = Vec::new();
    for method in methods {
        eprintln!("compare: {method} on {} hosts ...", bench.joiners.len() + 1);
        let out = dir.path().join(method);
        std::fs::create_dir_all(out.join("logs")).map_err(|e| e.to_string())?;
        for j in 0..bench.joiners.len() {
            std::fs::create_dir_all(out.join(bench.name(j))).map_err(|e| e.to_string())?;
        }
        settle_disk()?;
        let wan_before: Vec<u64> = (1..groups).map(|g| bench.net.wan_bytes_in(g)).collect();
        let ip_before: Vec<u64> = (1..groups).map(|g| bench.net.wan_ip_bytes_in(g)).collect();
        let seed_before = bench.net.host_bytes_sent(bench.seed());
        let outcome = match method.as_str() {
            "serial" => rsync::serial(&bench, &out),
            "cascade" => rsync::cascade(&bench, &out),
            "bittorrent" => torrent::bittorrent(&bench, &out),
            "swarm" => swarm::swarm(&bench, &out),
            "tcp-chain" => ceiling::tcp_chain(&bench, size),
            "quic-chain" => ceiling::quic_chain(&bench, size),
            _ => unreachable!("checked in main"),
        }
        .map_err(|e| {
            dir.disable_cleanup(true); // keep the logs for a look
            format!(
                "{method} failed: {e}\n(logs in {})",
                out.join("logs").display()
            )
        })?;
        if let Ok(keep) = std::env::var("SWARM_BENCH_LOGS") {
            let to =
                Path::new(&keep).join(format!("{}x{}-{method}", groups, bench.net.hosts[0].len()));
            copy_dir(&out.join("logs"), &to)?;
        }
        let wan_in = (1..groups)
            .map(|g| bench.net.wan_bytes_in(g) - wan_before[g - 1])
            .collect();
        let wan_ip_in = (1..groups)
            .map(|g| bench.net.wan_ip_bytes_in(g) - ip_before[g - 1])
            .collect();
        let seed_sent = bench.net.host_bytes_sent(bench.seed()) - seed_before;
        for j in (0..bench.joiners.len()).filter(|_| !CEILINGS.contains(&method.as_str())) {
            let copy = out.join(bench.name(j)).join("image.bin");
            let got = hash(&copy)?;
            if got != want {
                dir.disable_cleanup(true); // keep everything for a look
                return Err(format!(
                    "{method}: the copy on {} is NOT the image (blake3 {got} != {want}); \
                     files kept in {}",
                    bench.name(j),
                    out.display()
                ));
            }
            std::fs::remove_file(&copy).map_err(|e| e.to_string())?;
        }
        results.push(Measured {
            method: method.clone(),
            done: outcome.done,
            cpu: outcome.cpu,
            seed_sent,
            wan_in,
            wan_ip_in,
        });
    }
    Ok(results)
}

#[allow(clippy::too_many_arguments)]
fn print_layout(
    groups: usize,
    hosts: usize,
    size: u64,
    nic: u64,
    wan: u64,
    delay: Duration,
    limit: f64,
    results: &[Measured],
) {
    println!();
    print!(
        "{groups} x {hosts} hosts, S = {} MiB, B = {} Mbit/s",
        size >> 20,
        nic / 1_000_000
    );
    if groups > 1 {
        print!(
            ", W = {} Mbit/s, {} ms one way",
            wan / 1_000_000,
            delay.as_millis()
        );
    }
    println!(": limit T* = {limit:.1} s");
    if groups > 1 {
        println!("(WAN in/S: Ethernet frames / IP packets into each remote group, per S)");
    }
    println!(
        "{:<11} {:>8} {:>9} {:>8} {:>11} {:>14} {:>9}",
        "method", "last s", "median s", "last/T*", "seed sent/S", "WAN in/S", "CPU s/GB"
    );
    for r in results {
        // per remote group: Ethernet frames / IP packets
        let wan_in: Vec<String> = r
            .wan_in
            .iter()
            .zip(&r.wan_ip_in)
            .map(|(f, ip)| {
                format!(
                    "{:.3}/{:.3}",
                    *f as f64 / size as f64,
                    *ip as f64 / size as f64
                )
            })
            .collect();
        println!(
            "{:<11} {:>8.1} {:>9.1} {:>8.2} {:>11.2} {:>14} {:>9.2}",
            r.method,
            r.last(),
            r.median(),
            r.last() / limit,
            r.seed_sent as f64 / size as f64,
            if wan_in.is_empty() {
                "-".into()
            } else {
                wan_in.join(" ")
            },
            r.cpu / (size as f64 * r.done.len() as f64 / 1e9)
        );
    }
    if let Some(s) = results.iter().find(|r| r.method == "swarm") {
        let others: Vec<String> = results
            .iter()
            .filter(|r| r.method != "swarm" && !CEILINGS.contains(&r.method.as_str()))
            .map(|r| format!("{:.2}x faster than {}", r.last() / s.last(), r.method))
            .collect();
        if !others.is_empty() {
            println!("swarm: {}", others.join(", "));
        }
        for c in results
            .iter()
            .filter(|r| CEILINGS.contains(&r.method.as_str()))
        {
            println!(
                "swarm takes {:.2}x the time of the {} ceiling",
                s.last() / c.last(),
                c.method
            );
        }
    }
}

/// Last-host time per method against the number of hosts, over the
/// single-group layouts of the run.
fn scaling(all: &[Layout], methods: &[String], size: u64, out: &Path) {
    let mut rows: Vec<&Layout> = all.iter().filter(|l| l.groups == 1).collect();
    rows.sort_by_key(|l| l.hosts);
    rows.dedup_by_key(|l| l.hosts);
    if rows.len() < 2 {
        return;
    }
    let limit = rows[0].limit;
    println!();
    println!("scaling, one group, last host done in seconds (T* = {limit:.1} s):");
    print!("{:<11}", "hosts");
    for l in &rows {
        print!(" {:>8}", l.hosts);
    }
    println!();
    let mut curves = Vec::new();
    for m in methods {
        let last: Vec<f64> = rows
            .iter()
            .map(|l| {
                l.results
                    .iter()
                    .find(|r| &r.method == m)
                    .map_or(f64::NAN, Measured::last)
            })
            .collect();
        print!("{m:<11}");
        for t in &last {
            print!(" {t:>8.1}");
        }
        println!();
        curves.push((m.as_str(), last));
    }
    let hosts: Vec<usize> = rows.iter().map(|l| l.hosts).collect();
    let svg = out.join("compare-scaling.svg");
    let title = format!("last host done vs hosts, one group, {} MiB", size >> 20);
    plot::scaling(&svg, &title, &hosts, limit, &curves).unwrap_or_else(|e| fail(&e));
    println!("plot: {}", svg.display());
}

/// Copies the files of `from` (not its subdirectories) into `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for e in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        if e.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(e.path(), to.join(e.file_name())).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Writes back every dirty page (`sync`) before a method's timed run, so
/// that no method pays for the disk writes of what ran before it (the
/// previous method's copies, the old versions just copied in place).
pub fn settle_disk() -> Result<(), String> {
    let ok = std::process::Command::new("sync")
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err("sync failed".into())
    }
}

//! Groups over an emulated WAN (issue 3): G groups of H hosts on the
//! network of tests/it/netsim.rs, the seed on host 0 of group 0, every other
//! host joining with its group. Prints the last host's time against the
//! physical limit T* = max(S/B, S/W) and the bytes that entered each remote
//! group over its uplink, per S.
//!
//!     cargo bench --bench wan                    # 2 x 4 hosts, 256 MiB, 200/100 Mbit/s, 20 ms
//!     SWARM_BENCH_QUICK=1 cargo bench --bench wan   # 32 MiB (CI)
//!
//! Environment: SWARM_BENCH_SIZE (e.g. 512MiB), SWARM_BENCH_GROUPS,
//! SWARM_BENCH_HOSTS (per group, the seed included in group 0),
//! SWARM_BENCH_NIC_MBIT, SWARM_BENCH_WAN_MBIT, SWARM_BENCH_WAN_DELAY_MS,
//! SWARM_BENCH_MTU (host NICs; 1500 default, 9000 for jumbo frames),
//! SWARM_BENCH_PIECE (the seed's --piece-size), SWARM_BENCH_ARGS (more arguments for
//! every swarm process, e.g. `--threads 2`).
//! Needs root. Writes target/bench-wan.json.

#[path = "../tests/it/netsim.rs"]
mod netsim;
#[path = "../tests/it/swarmnet.rs"]
mod swarmnet;
#[allow(dead_code)]
#[path = "../tests/it/util.rs"]
mod util;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{key}={v} is not a number"))
        })
        .unwrap_or(default)
}

fn env_size(key: &str, default: u64) -> u64 {
    match std::env::var(key) {
        Ok(v) => v
            .parse::<bytesize::ByteSize>()
            .unwrap_or_else(|e| panic!("{key}={v}: {e}"))
            .as_u64(),
        Err(_) => default,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery
    }
    let quick = std::env::var("SWARM_BENCH_QUICK").is_ok_and(|v| v == "1");
    let size = env_size("SWARM_BENCH_SIZE", if quick { 32 << 20 } else { 256 << 20 });
    let groups = env_num("SWARM_BENCH_GROUPS", 2) as usize;
    let hosts = env_num("SWARM_BENCH_HOSTS", 4) as usize;
    let nic = env_num("SWARM_BENCH_NIC_MBIT", 200) * 1_000_000;
    let wan = env_num("SWARM_BENCH_WAN_MBIT", 100) * 1_000_000;
    let delay = Duration::from_millis(env_num("SWARM_BENCH_WAN_DELAY_MS", 20));
    assert!(
        groups >= 1 && hosts >= 1 && (groups > 1 || hosts > 1),
        "need a joiner"
    );
    let spec = netsim::Spec {
        hosts: vec![hosts; groups],
        nic_bps: nic,
        wan_bps: wan,
        wan_delay: delay,
        mtu: env_num("SWARM_BENCH_MTU", 1500) as u32,
    };
    let bits = size as f64 * 8.0;
    let limit = if groups > 1 {
        (bits / nic as f64).max(bits / wan as f64)
    } else {
        bits / nic as f64
    };
    eprintln!(
        "bench: {groups} groups x {hosts} hosts, S = {} MiB, B = {} Mbit/s, W = {} Mbit/s, \
         WAN one-way {delay:?}; T* = {limit:.1} s",
        size >> 20,
        nic / 1_000_000,
        wan / 1_000_000
    );
    let piece = std::env::var("SWARM_BENCH_PIECE").ok();
    let mut seed_args: Vec<&str> = match &piece {
        Some(p) => vec!["--piece-size", p.as_str()],
        None => vec![],
    };
    // more arguments for every process, for experiments (`--threads 2`)
    let extra = std::env::var("SWARM_BENCH_ARGS").unwrap_or_default();
    let extra: Vec<&str> = extra.split_whitespace().collect();
    seed_args.extend(&extra);
    let mut run = swarmnet::Run::start(spec, size as usize, &seed_args, &extra);
    let wan_before: Vec<u64> = (0..groups).map(|g| run.net.wan_bytes_in(g)).collect();
    let ip_before: Vec<u64> = (0..groups).map(|g| run.net.wan_ip_bytes_in(g)).collect();
    // the WAN's use over time: bytes into each remote group, every second
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (uplinks, stop) = (run.net.uplinks(), stop.clone());
        std::thread::spawn(move || {
            let mut samples: Vec<Vec<u64>> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push((1..groups).map(|g| uplinks.bytes_in(g)).collect());
                std::thread::sleep(Duration::from_secs(1));
            }
            samples
        })
    };
    run.finish(Duration::from_secs_f64(limit * 10.0 + 120.0));
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler");
    let mut done: Vec<(usize, usize, f64)> = Vec::new();
    for (g, h, _) in &run.joiners {
        let r = run.report(*g, *h);
        // complete_secs counts from the joiner's own start; the joiners
        // were started within milliseconds of `run.started`
        let secs = r["complete_secs"].as_f64().expect("complete_secs");
        done.push((*g, *h, secs));
    }
    done.sort_by(|a, b| a.2.total_cmp(&b.2));
    let last = done.last().map_or(0.0, |d| d.2);
    let median = done[done.len() / 2].2;
    println!();
    println!("{:<8} {:>10}", "host", "done (s)");
    for (g, h, s) in &done {
        println!("{:<8} {s:>10.1}", format!("g{g}h{h}"));
    }
    println!();
    println!(
        "last host {last:.1} s, median {median:.1} s, limit T* {limit:.1} s: last / T* = {:.2} (goal <= 1.15)",
        last / limit
    );
    let seed = run.seed_report(Duration::from_secs(60));
    let seed_sent = seed["bytes_served"].as_u64().unwrap_or(0);
    println!(
        "seed sent {:.2} x S ({} joiners)",
        seed_sent as f64 / size as f64,
        done.len()
    );
    for g in 1..groups {
        let rates: Vec<String> = samples
            .windows(2)
            .map(|w| format!("{:.0}", (w[1][g - 1] - w[0][g - 1]) as f64 * 8.0 / 1e6))
            .collect();
        println!(
            "group {g}: WAN in, Mbit/s per second (link {} Mbit/s): {}",
            wan / 1_000_000,
            rates.join(" ")
        );
    }
    // where each bridge's bytes came from
    let mut names = std::collections::HashMap::new();
    names.insert(
        seed["peer_id"].as_str().unwrap_or("").to_string(),
        "seed".to_string(),
    );
    for (g, h, _) in &run.joiners {
        let r = run.report(*g, *h);
        names.insert(
            r["peer_id"].as_str().unwrap_or("").to_string(),
            format!("g{g}h{h}"),
        );
    }
    for (g, h, _) in run.joiners.iter().filter(|(g, _, _)| *g > 0) {
        let r = run.report(*g, *h);
        if r["was_bridge"].as_bool() != Some(true) {
            continue;
        }
        let from: Vec<String> = r["received_from"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(id, b)| {
                        let name = names
                            .get(id)
                            .cloned()
                            .unwrap_or_else(|| id[..8].to_string());
                        format!("{name} {} MiB", b.as_u64().unwrap_or(0) >> 20)
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!("bridge g{g}h{h} received from: {}", from.join(", "));
    }
    // what QUIC declared lost on connections between groups, all hosts
    let lost: u64 = std::iter::once(seed.clone())
        .chain(run.joiners.iter().map(|(g, h, _)| run.report(*g, *h)))
        .map(|r| r["quic_cross_group"]["lost_bytes"].as_u64().unwrap_or(0))
        .sum();
    println!(
        "QUIC between groups: packets of {:.3} x S declared lost (all hosts, both ways)",
        lost as f64 / size as f64
    );
    let mut per_group = Vec::new();
    for (g, before) in wan_before.iter().enumerate().skip(1) {
        let frames = run.net.wan_bytes_in(g) - before;
        let ip = run.net.wan_ip_bytes_in(g) - ip_before[g];
        // piece bytes and QUIC's UDP bytes the group's hosts took from others
        let (mut payload, mut udp) = (0u64, 0u64);
        for (_, h, _) in run.joiners.iter().filter(|(jg, _, _)| *jg == g) {
            let r = run.report(g, *h);
            payload += r["received_cross_group"].as_u64().unwrap_or(0);
            udp += r["quic_cross_group"]["udp_received_bytes"]
                .as_u64()
                .unwrap_or(0);
        }
        println!(
            "group {g}: WAN in {:.3} x S as Ethernet frames on the uplink, {:.3} x S as IP \
             packets, {:.3} x S as UDP payload, {:.3} x S as piece bytes (goal: WAN bytes \
             <= 1.05 x S)",
            frames as f64 / size as f64,
            ip as f64 / size as f64,
            udp as f64 / size as f64,
            payload as f64 / size as f64
        );
        per_group.push(json!({
            "group": g,
            "wan_frame_bytes_in": frames,
            "wan_frames_per_s": frames as f64 / size as f64,
            "wan_ip_bytes_in": ip,
            "wan_ip_bytes_per_s": ip as f64 / size as f64,
            "cross_group_piece_bytes": payload,
            "cross_group_pieces_per_s": payload as f64 / size as f64,
        }));
    }
    let report = json!({
        "groups": groups,
        "hosts_per_group": hosts,
        "size": size,
        "nic_bps": nic,
        "wan_bps": wan,
        "wan_one_way_delay_ms": delay.as_millis() as u64,
        "limit_secs": limit,
        "last_secs": last,
        "median_secs": median,
        "last_over_limit": last / limit,
        "seed_sent_bytes": seed_sent,
        "cross_group_lost_bytes": lost,
        "hosts": done.iter().map(|(g, h, s)| json!({"host": format!("g{g}h{h}"), "secs": s})).collect::<Vec<_>>(),
        "remote_groups": per_group,
        "wan_in_bytes_every_second": samples,
    });
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-wan.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap() + "\n")
        .expect("write the figures");
    println!("figures written to {}", path.display());
}

//! Datacenter groups on the emulated network (tests/it/netsim.rs): real
//! processes in network namespaces, shaped NICs and WAN links. Root only.

use std::time::{Duration, Instant};

use super::netsim::{Net, Spec};
use super::util::{self, Proc};

const MBIT: u64 = 1_000_000;

#[test]
fn emulated_wan_has_the_latency_asked_for() {
    let net = Net::new(Spec {
        hosts: vec![2, 1],
        nic_bps: 200 * MBIT,
        wan_bps: 50 * MBIT,
        wan_delay: Duration::from_millis(20),
    })
    .unwrap();
    let (a, b, c) = (net.host(0, 0), net.host(0, 1), net.host(1, 0));
    let local = net.ping(a, b, 3).unwrap();
    let wan = net.ping(a, c, 3).unwrap();
    assert!(local < Duration::from_millis(5), "same group: {local:?}");
    // one-way 20 ms between groups: the RTT is 40 ms plus a little
    assert!(
        wan >= Duration::from_millis(40) && wan < Duration::from_millis(60),
        "across groups: {wan:?}"
    );
    let before = net.wan_bytes_in(1);
    net.ping(a, c, 2).unwrap();
    assert!(net.wan_bytes_in(1) > before, "uplink counters move");
    net.set_wan(1, false);
    assert!(
        net.ping(a, c, 1).is_err(),
        "a downed WAN link carries nothing"
    );
    net.set_wan(1, true);
    net.ping(a, c, 3).expect("the link comes back");
}

/// A swarm on an emulated network: the seed is host 0 of group 0; every
/// other host joins, with `--group gG`.
struct Run {
    net: Net,
    dir: tempfile::TempDir,
    image: std::path::PathBuf,
    size: u64,
    /// Kept so that it runs (and is killed) with the run.
    _seed: Proc,
    /// (group, host, process) of every joiner.
    joiners: Vec<(usize, usize, Proc)>,
}

impl Run {
    fn start(spec: Spec, size: usize, join_args: &[&str]) -> Run {
        let net = Net::new(spec).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image.bin");
        util::random_file(&image, size, 48);
        let ticket = dir.path().join("ticket");
        let mut cmd = net.command(net.host(0, 0), env!("CARGO_BIN_EXE_swarm"));
        cmd.arg("seed").arg(&image);
        cmd.args(["--listen", "0.0.0.0:7000", "--group", "g0", "--ticket-file"])
            .arg(&ticket);
        let mut seed = Proc::spawn(cmd, "seed", dir.path());
        let t = Instant::now();
        while !ticket.exists() {
            assert!(
                seed.child.try_wait().unwrap().is_none(),
                "seed died: {}",
                seed.log_text()
            );
            assert!(t.elapsed() < Duration::from_secs(60), "no ticket");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut joiners = Vec::new();
        for (g, hosts) in net.hosts.iter().enumerate() {
            for h in hosts
                .iter()
                .enumerate()
                .skip(usize::from(g == 0))
                .map(|(i, _)| i)
            {
                let name = format!("g{g}h{h}");
                let dest = dir.path().join(&name);
                std::fs::create_dir_all(&dest).unwrap();
                let mut cmd = net.command(net.host(g, h), env!("CARGO_BIN_EXE_swarm"));
                cmd.arg("join")
                    .arg(format!("@{}", ticket.display()))
                    .arg(&dest)
                    .args(["--listen", "0.0.0.0:7000", "--group", &format!("g{g}")])
                    .args(["--linger", "2s", "--report"])
                    .arg(dir.path().join(format!("{name}.json")))
                    .args(join_args);
                joiners.push((g, h, Proc::spawn(cmd, &name, dir.path())));
            }
        }
        Run {
            net,
            dir,
            image,
            size: size as u64,
            _seed: seed,
            joiners,
        }
    }

    /// Waits for every joiner still listed; each must exit 0 with a copy
    /// identical to the image.
    fn finish(&mut self, limit: Duration) {
        let t = Instant::now();
        for (g, h, p) in &mut self.joiners {
            p.wait_ok(limit.saturating_sub(t.elapsed()));
            let copy = self.dir.path().join(format!("g{g}h{h}")).join("image.bin");
            util::assert_same(&self.image, &copy);
        }
    }

    /// Index in `joiners` of the host of group `g` that currently says it
    /// is its group's bridge (from its own status output).
    fn bridge_of(&self, g: usize) -> Option<usize> {
        self.joiners.iter().position(|(jg, _, p)| {
            *jg == g
                && p.log_text()
                    .lines()
                    .rfind(|l| l.contains(&format!("group g{g}: ")))
                    .is_some_and(|l| l.contains(": bridge "))
        })
    }

    fn wait_wan_in(&self, g: usize, bytes: u64, limit: Duration) {
        let t = Instant::now();
        while self.net.wan_bytes_in(g) < bytes {
            assert!(
                t.elapsed() < limit,
                "group {g} got under {bytes} bytes in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn three_groups() -> Spec {
    Spec {
        hosts: vec![4, 3, 3],
        nic_bps: 200 * MBIT,
        wan_bps: 50 * MBIT,
        wan_delay: Duration::from_millis(20),
    }
}

const SIZE: usize = 48 << 20;

#[test]
fn each_remote_group_takes_the_image_over_the_wan_about_once() {
    let mut run = Run::start(three_groups(), SIZE, &[]);
    run.finish(Duration::from_secs(180));
    for g in 1..3 {
        let wan = run.net.wan_bytes_in(g);
        let ratio = wan as f64 / run.size as f64;
        eprintln!("group {g}: {wan} bytes in over the WAN, {ratio:.3} x S");
        assert!(ratio <= 1.10, "group {g} took {ratio:.3} x S over the WAN");
    }
    // the reports split bytes by group, and agree with the links
    let mut cross = [0u64; 3];
    for (g, h, _) in &run.joiners {
        let r = util::report(&run.dir.path().join(format!("g{g}h{h}.json")));
        let (same, x) = (
            r["received_same_group"].as_u64().unwrap(),
            r["received_cross_group"].as_u64().unwrap(),
        );
        assert_eq!(same + x, r["bytes_received"].as_u64().unwrap());
        cross[*g] += x;
    }
    assert_eq!(cross[0], 0, "the seed's group needs nothing from outside");
    for (g, &x) in cross.iter().enumerate().skip(1) {
        assert!(x >= run.size, "group {g}: {x} cross-group bytes");
        assert!(x as f64 <= 1.05 * run.size as f64, "group {g}: {x}");
    }
}

#[test]
fn another_host_takes_over_when_the_bridge_dies() {
    let mut run = Run::start(three_groups(), SIZE, &[]);
    run.wait_wan_in(1, run.size / 2, Duration::from_secs(120));
    let i = run.bridge_of(1).expect("group 1 has a bridge");
    let (_, h, mut bridge) = run.joiners.remove(i);
    bridge.kill9();
    eprintln!("killed g1h{h}, the bridge of group 1");
    run.finish(Duration::from_secs(180));
    let took_over = run
        .joiners
        .iter()
        .filter(|(g, _, _)| *g == 1)
        .any(|(_, _, p)| p.log_text().contains("group g1: bridge 1 of 1"));
    assert!(took_over, "no other host of group 1 became its bridge");
}

#[test]
fn a_wan_outage_of_20s_heals_by_itself() {
    let mut run = Run::start(three_groups(), SIZE, &[]);
    run.wait_wan_in(1, run.size / 3, Duration::from_secs(120));
    run.net.set_wan(1, false);
    std::thread::sleep(Duration::from_secs(20));
    run.net.set_wan(1, true);
    run.finish(Duration::from_secs(240));
}

//! A swarm on the emulated network: the seed on host 0 of group 0, every
//! other host joining with `--group gG`. Shared by tests/it/groups.rs and
//! benches/wan.rs (which include this file by path).

#![allow(dead_code)] // each user needs a different part

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::netsim::{Net, Spec};
use crate::util::{self, Proc};

/// A swarm on an emulated network: the seed is host 0 of group 0; every
/// other host joins, with `--group gG`.
pub struct Run {
    pub net: Net,
    pub dir: tempfile::TempDir,
    pub image: PathBuf,
    pub size: u64,
    /// Killed with the run if still running.
    pub seed: Proc,
    /// (group, host, process) of every joiner.
    pub joiners: Vec<(usize, usize, Proc)>,
    /// When the first joiner was started.
    pub started: Instant,
}

impl Run {
    /// Starts the seed (with `seed_args`) and every joiner (with
    /// `join_args`). The seed exits once every joiner is done.
    pub fn start(spec: Spec, size: usize, seed_args: &[&str], join_args: &[&str]) -> Run {
        Self::start_apart(spec, size, seed_args, join_args, Duration::ZERO)
    }

    /// `start`, with the joiners started one by one, `gap` apart, as an
    /// operator's ssh loop would.
    pub fn start_apart(
        spec: Spec,
        size: usize,
        seed_args: &[&str],
        join_args: &[&str],
        gap: Duration,
    ) -> Run {
        let net = Net::new(spec).unwrap();
        let mut dir = tempfile::tempdir().unwrap();
        if std::env::var("SWARM_NETSIM_KEEP").is_ok_and(|v| v == "1") {
            // keep the logs and reports for a look afterwards
            dir.disable_cleanup(true);
            eprintln!("netsim: keeping {}", dir.path().display());
        }
        let image = dir.path().join("image.bin");
        util::random_file(&image, size, 48);
        let ticket = dir.path().join("ticket");
        let mut cmd = net.command(net.host(0, 0), env!("CARGO_BIN_EXE_swarm"));
        cmd.arg("seed").arg(&image);
        let joiners_total: usize = spec_hosts(&net) - 1;
        cmd.args(["--listen", "0.0.0.0:7000", "--group", "g0", "--ticket-file"])
            .arg(&ticket)
            .args(["--until-done", &joiners_total.to_string(), "--report"])
            .arg(dir.path().join("seed.json"))
            .args(seed_args);
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
        let started = Instant::now();
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
                std::thread::sleep(gap);
            }
        }
        Run {
            net,
            dir,
            image,
            size: size as u64,
            seed,
            joiners,
            started,
        }
    }

    /// Waits for every joiner still listed; each must exit 0 with a copy
    /// identical to the image.
    pub fn finish(&mut self, limit: Duration) {
        let t = Instant::now();
        for (g, h, p) in &mut self.joiners {
            p.wait_ok(limit.saturating_sub(t.elapsed()));
            let copy = self.dir.path().join(format!("g{g}h{h}")).join("image.bin");
            util::assert_same(&self.image, &copy);
        }
    }

    /// The seed's report, once it has exited by itself.
    pub fn seed_report(&mut self, limit: Duration) -> serde_json::Value {
        self.seed.wait_ok(limit);
        util::report(&self.dir.path().join("seed.json"))
    }

    /// The JSON report of joiner `g`, `h`.
    pub fn report(&self, g: usize, h: usize) -> serde_json::Value {
        util::report(&self.dir.path().join(format!("g{g}h{h}.json")))
    }

    /// Index in `joiners` of the host of group `g` that currently says it
    /// is its group's bridge (from its own status output).
    pub fn bridge_of(&self, g: usize) -> Option<usize> {
        self.joiners.iter().position(|(jg, _, p)| {
            *jg == g
                && p.log_text()
                    .lines()
                    .rfind(|l| l.contains(&format!("group g{g}: ")))
                    .is_some_and(|l| l.contains(": bridge "))
        })
    }

    pub fn wait_wan_in(&self, g: usize, bytes: u64, limit: Duration) {
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

fn spec_hosts(net: &Net) -> usize {
    net.hosts.iter().map(Vec::len).sum()
}

//! The new way: `swarm seed` on the seed host, `swarm join --group gG` on
//! every other host, with default settings but `--threads 1`: all hosts
//! share the machine's two cores, and like aria2c (one thread) each host
//! then runs one networking thread. With two per host, 16 hosts took 6%
//! longer (54.2 s against 50.9 s, 512 MiB at 200 Mbit/s). A joiner's
//! completion time is its report's `complete_secs` (from its own start)
//! plus when it was started.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::task::Task;
use crate::{Bench, Outcome};

pub fn swarm(b: &Bench, out: &Path) -> Result<Outcome, String> {
    swarm_with(b, out, &[])
}

/// swarm with `extra` arguments for every `swarm join` (the delta
/// scenario's `--force`, to join over last night's version). Each joiner's
/// report is left at `logs/NAME.json`.
pub fn swarm_with(b: &Bench, out: &Path, extra: &[&str]) -> Result<Outcome, String> {
    let logs = out.join("logs");
    let bin = env!("CARGO_BIN_EXE_swarm");
    let ticket = out.join("ticket");
    let mut cmd = b.net.command(b.seed(), bin);
    cmd.args(["--threads", "1", "seed"])
        .arg(&b.image)
        .args(["--listen", "0.0.0.0:7000", "--group", "g0", "--ticket-file"])
        .arg(&ticket)
        .args(["--until-done", &b.joiners.len().to_string(), "--report"])
        .arg(logs.join("seed.json"))
        .args(extra_args("SWARM_BENCH_SEED_ARGS"));
    let mut seed = Task::spawn(cmd, "seed", &logs);
    let t = Instant::now();
    while !ticket.exists() {
        if seed.poll().is_some() {
            return Err(format!("swarm seed exited: {}", seed.log_tail()));
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err("swarm seed printed no ticket within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let t0 = Instant::now();
    let mut joiners = Vec::new();
    for j in 0..b.joiners.len() {
        let name = b.name(j);
        let mut cmd = b.net.command(b.host(j), bin);
        cmd.args(["--threads", "1", "join"])
            .arg(format!("@{}", ticket.display()))
            .arg(out.join(&name))
            .args(["--listen", "0.0.0.0:7000"])
            .args(["--group", &format!("g{}", b.joiners[j].0)])
            .args(["--linger", "2s", "--report"])
            .arg(logs.join(format!("{name}.json")))
            .args(extra)
            .args(extra_args("SWARM_BENCH_JOIN_ARGS"));
        joiners.push(Task::spawn(cmd, &name, &logs));
    }
    let mut cpu = 0.0;
    let mut done = Vec::new();
    for (j, task) in joiners.iter_mut().enumerate() {
        let exit = task.wait(b.limit.saturating_sub(t0.elapsed()))?;
        if !exit.success() {
            return Err(format!(
                "swarm join on {} failed: {}",
                b.name(j),
                task.log_tail()
            ));
        }
        cpu += exit.cpu;
        let path = logs.join(format!("{}.json", b.name(j)));
        let report: serde_json::Value = std::fs::read(&path)
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok())
            .ok_or_else(|| format!("no report at {}", path.display()))?;
        let secs = report["complete_secs"]
            .as_f64()
            .ok_or_else(|| format!("no complete_secs in {}", path.display()))?;
        done.push(task.started.duration_since(t0).as_secs_f64() + secs);
    }
    let exit = seed.wait(Duration::from_secs(30))?;
    if !exit.success() {
        return Err(format!("swarm seed failed: {}", seed.log_tail()));
    }
    cpu += exit.cpu;
    Ok(Outcome { done, cpu })
}

/// `SWARM_BENCH_JOIN_ARGS` and `SWARM_BENCH_SEED_ARGS`: more arguments for
/// every `swarm join` or for `swarm seed` (space-separated, e.g. `--bridges
/// 2`, `--piece-size 256KiB`), for experiments.
fn extra_args(var: &str) -> Vec<String> {
    std::env::var(var)
        .map(|a| a.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

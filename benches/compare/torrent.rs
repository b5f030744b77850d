//! What many operators would try instead: BitTorrent. A torrent made with
//! mktorrent (1 MiB pieces, as swarm's default), opentracker in the seed's
//! namespace, aria2c on every host with DHT and local peer discovery off;
//! every host seeds until all are done. aria2c's completion hook stamps the
//! time each host finished.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::task::Task;
use crate::{Bench, Outcome};

const TRACKER_PORT: u16 = 6969;
const PEER_PORT: u16 = 6881;

/// Options every aria2c gets: no DHT, no LPD, seed for ever (we stop it),
/// fallocate instead of writing zeroes first, quiet console.
const ARIA2_OPTS: &[&str] = &[
    "--enable-dht=false",
    "--enable-dht6=false",
    "--bt-enable-lpd=false",
    "--seed-ratio=0.0",
    "--file-allocation=falloc",
    "--console-log-level=warn",
    "--summary-interval=0",
    "--download-result=hide",
];

fn run(cmd: &mut std::process::Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until something listens on TCP `port` in `host`'s namespace.
fn wait_listen(
    b: &Bench,
    host: &crate::netsim::Host,
    port: u16,
    what: &Task,
) -> Result<(), String> {
    let t = Instant::now();
    loop {
        let out = run(b
            .net
            .command(host, "ss")
            .args(["-Hltn", &format!("sport = :{port}")]))?;
        if !out.trim().is_empty() {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "{} is not listening on {port}: {}",
                what.name,
                what.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn bittorrent(b: &Bench, out: &Path) -> Result<Outcome, String> {
    bittorrent_with(b, out, &[])
}

/// BitTorrent with `extra` arguments for every joiner's aria2c (the delta
/// scenario's `--check-integrity=true`: hash what is already at the
/// destination and fetch only the pieces that differ). `b.image` may be a
/// file or a directory (a multi-file torrent).
pub fn bittorrent_with(b: &Bench, out: &Path, extra: &[&str]) -> Result<Outcome, String> {
    let logs = out.join("logs");
    let seed_ip = b.seed().ip;
    let torrent = out.join("image.torrent");
    // mktorrent hashes the image: its CPU counts, as swarm's seed's does
    let mut cmd = std::process::Command::new("mktorrent");
    cmd.args(["-l", "20", "-a"])
        .arg(format!("http://{seed_ip}:{TRACKER_PORT}/announce"))
        .arg("-o")
        .arg(&torrent)
        .arg(&b.image);
    let mut mktorrent = Task::spawn(cmd, "mktorrent", &logs);
    let exit = mktorrent.wait(Duration::from_secs(600))?;
    if !exit.success() {
        return Err(format!("mktorrent failed: {}", mktorrent.log_tail()));
    }
    let mktorrent_cpu = exit.cpu;
    let info = run(std::process::Command::new("aria2c").arg("-S").arg(&torrent))?;
    let hash = info
        .lines()
        .find_map(|l| l.strip_prefix("Info Hash: "))
        .ok_or_else(|| format!("no info hash in `aria2c -S`: {info}"))?;
    // Debian's opentracker serves whitelisted torrents only; it chroots to
    // its directory and drops root for `nobody`
    let tracker_dir = out.join("tracker");
    std::fs::create_dir_all(&tracker_dir).map_err(|e| e.to_string())?;
    std::fs::write(tracker_dir.join("whitelist"), format!("{hash}\n"))
        .map_err(|e| e.to_string())?;
    let mut tasks = Vec::new();
    let mut cmd = b.net.command(b.seed(), "opentracker");
    cmd.args([
        "-i",
        &seed_ip.to_string(),
        "-p",
        &TRACKER_PORT.to_string(),
        "-P",
    ])
    .arg(TRACKER_PORT.to_string())
    .args(["-u", "nobody", "-w", "whitelist", "-d"])
    .arg(&tracker_dir);
    tasks.push(Task::spawn(cmd, "opentracker", &logs));
    wait_listen(b, b.seed(), TRACKER_PORT, &tasks[0])?;

    let seed_dir = b.image.parent().expect("image in a directory");
    let mut cmd = b.net.command(b.seed(), "aria2c");
    cmd.args(ARIA2_OPTS)
        .args([
            "--bt-seed-unverified=true",
            &format!("--listen-port={PEER_PORT}"),
            "-d",
        ])
        .arg(seed_dir)
        .arg(&torrent);
    tasks.push(Task::spawn(cmd, "seed.aria2c", &logs));
    wait_listen(b, b.seed(), PEER_PORT, &tasks[1])?;
    // let the seed's first announce reach the tracker
    std::thread::sleep(Duration::from_millis(500));

    let hook = out.join("done-hook.sh");
    // written under another name and renamed, so a stamp that exists is
    // whole; where is each joiner's SWARM_STAMP (its logs/NAME.done)
    std::fs::write(
        &hook,
        "#!/bin/sh\n# aria2c: $1 GID, $2 file count, $3 first file\n\
         date +%s.%N > \"$SWARM_STAMP.tmp\" && mv \"$SWARM_STAMP.tmp\" \"$SWARM_STAMP\"\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;

    let t0 = SystemTime::now();
    let started = Instant::now();
    let stamps: Vec<_> = (0..b.joiners.len())
        .map(|j| logs.join(format!("{}.done", b.name(j))))
        .collect();
    for (j, stamp) in stamps.iter().enumerate() {
        let mut cmd = b.net.command(b.host(j), "aria2c");
        cmd.env("SWARM_STAMP", stamp)
            .args(ARIA2_OPTS)
            .args(extra)
            .arg(format!("--listen-port={PEER_PORT}"))
            .arg(format!("--on-bt-download-complete={}", hook.display()))
            .arg("-d")
            .arg(out.join(b.name(j)))
            .arg(&torrent);
        tasks.push(Task::spawn(cmd, &format!("{}.aria2c", b.name(j)), &logs));
    }
    while !stamps.iter().all(|s| s.exists()) {
        if let Some(t) = tasks
            .iter_mut()
            .find_map(|t| t.poll().is_some().then_some(t))
        {
            return Err(format!("{} exited early: {}", t.name, t.log_tail()));
        }
        crate::task::check_interrupt()?;
        if started.elapsed() > b.limit {
            let missing: Vec<String> = (0..b.joiners.len())
                .filter(|j| !stamps[*j].exists())
                .map(|j| b.name(j))
                .collect();
            return Err(format!(
                "BitTorrent did not finish within {:?}: {} missing",
                b.limit,
                missing.join(", ")
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let origin = t0.duration_since(UNIX_EPOCH).expect("clock").as_secs_f64();
    let mut done = Vec::new();
    for s in &stamps {
        let text = std::fs::read_to_string(s).map_err(|e| format!("{}: {e}", s.display()))?;
        let at: f64 = text
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}: {text:?}", s.display()))?;
        done.push(at - origin);
        std::fs::remove_file(s).map_err(|e| e.to_string())?;
    }
    let cpu = mktorrent_cpu + tasks.iter_mut().map(|t| t.stop().cpu).sum::<f64>();
    Ok(Outcome { done, cpu })
}

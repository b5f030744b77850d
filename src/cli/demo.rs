//! `swarm demo`: the product end to end on one machine. Generates a random
//! image, starts a seed and N joiners as separate processes on loopback,
//! shows progress, verifies every copy and prints a report.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

use super::args::DemoArgs;
use super::progress::human;
use super::{EXIT_INTERNAL, EXIT_IO, EXIT_USAGE, EXIT_VERIFY, units};
use crate::node::Report;

pub fn run(a: &DemoArgs, quiet: bool) -> ExitCode {
    let size = match units::size("--size", &a.size) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if a.peers == 0 || a.peers > 64 {
        eprintln!("error: --peers: {} must be from 1 to 64", a.peers);
        return ExitCode::from(EXIT_USAGE);
    }
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => match tempfile::Builder::new().prefix("swarm-demo-").tempdir() {
            Ok(t) => {
                tmp = t;
                tmp.path().to_path_buf()
            }
            Err(e) => {
                eprintln!("error: cannot make a temporary directory: {e}");
                return ExitCode::from(EXIT_IO);
            }
        },
    };
    match demo(&dir, size, a.peers, quiet) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
    }
}

type Fail = (u8, String);

fn io(e: impl std::fmt::Display) -> Fail {
    (EXIT_IO, e.to_string())
}

/// Kills the children it holds when dropped (also on early return).
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn demo(dir: &Path, size: u64, peers: usize, quiet: bool) -> Result<(), Fail> {
    let say = |s: String| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    let exe = std::env::current_exe().map_err(io)?;
    fs::create_dir_all(dir).map_err(io)?;
    own_dir(&dir.join("src"), false)?;
    let image = dir.join("src/image.bin");
    say(format!(
        "demo: writing a {} random image to {}",
        human(size as f64),
        image.display()
    ));
    write_random(&image, size).map_err(io)?;
    let ticket = dir.join("ticket");
    let _ = fs::remove_file(&ticket);
    let log = |name: &str| {
        new_file(&dir.join(format!("{name}.log")))
            .map(Stdio::from)
            .map_err(io)
    };
    let mut children = Children(Vec::new());
    let seed = Command::new(&exe)
        .args(["-q", "seed"])
        .arg(&image)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--until-done",
            &peers.to_string(),
        ])
        .arg("--ticket-file")
        .arg(&ticket)
        .arg("--report")
        .arg(dir.join("seed.json"))
        .stdout(Stdio::null())
        .stderr(log("seed")?)
        .spawn()
        .map_err(io)?;
    children.0.push(("seed".into(), seed));
    let started = Instant::now();
    while !ticket.exists() {
        if started.elapsed() > Duration::from_secs(120) {
            return Err((
                EXIT_INTERNAL,
                "the seed printed no ticket within 120s (see seed.log)".into(),
            ));
        }
        if let Ok(Some(st)) = children.0[0].1.try_wait() {
            return Err((
                EXIT_INTERNAL,
                format!("the seed exited with {st} (see {}/seed.log)", dir.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    say(format!(
        "demo: seed ready after {:.1}s (manifest built); starting {peers} joiners",
        started.elapsed().as_secs_f64()
    ));
    let t0 = Instant::now();
    for k in 1..=peers {
        let name = format!("peer{k}");
        let dest = dir.join(&name);
        own_dir(&dest, true)?;
        let child = Command::new(&exe)
            .args(["-q", "join"])
            .arg(format!("@{}", ticket.display()))
            .arg(&dest)
            .args(["--listen", "127.0.0.1:0", "--linger", "1s"])
            .arg("--report")
            .arg(dir.join(format!("{name}.json")))
            .stdout(Stdio::null())
            .stderr(log(&name)?)
            .spawn()
            .map_err(io)?;
        children.0.push((name, child));
    }
    let bar = (!quiet).then(|| {
        let b = indicatif::ProgressBar::new(peers as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "demo: [{bar:30}] {pos}/{len} joiners done, {elapsed}",
            )
            .expect("static template"),
        );
        b
    });
    // generous: 10 MB/s per joiner would be slow even for loopback
    let limit =
        Duration::from_secs(120) + Duration::from_secs_f64(size as f64 * peers as f64 / 10e6);
    let mut finished = vec![None; peers + 1];
    while finished.iter().skip(1).any(Option::is_none) {
        if t0.elapsed() > limit {
            return Err((
                EXIT_INTERNAL,
                format!("joiners did not finish within {}s", limit.as_secs()),
            ));
        }
        for (i, (name, c)) in children.0.iter_mut().enumerate().skip(1) {
            if finished[i].is_none()
                && let Ok(Some(st)) = c.try_wait()
            {
                if !st.success() {
                    return Err((
                        EXIT_INTERNAL,
                        format!("{name} exited with {st} (see {}/{name}.log)", dir.display()),
                    ));
                }
                finished[i] = Some(t0.elapsed());
                if let Some(b) = &bar {
                    b.inc(1);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let total = t0.elapsed();
    let _ = children.0[0].1.wait();
    // verify and report
    let want = hash_file(&image).map_err(io)?;
    let mut reports = Vec::new();
    for k in 1..=peers {
        let name = format!("peer{k}");
        let copy = dir.join(&name).join("image.bin");
        let got = hash_file(&copy)
            .map_err(|e| (EXIT_VERIFY, format!("{name}: {}: {e}", copy.display())))?;
        if got != want {
            return Err((EXIT_VERIFY, format!("{name}: copy differs from the source")));
        }
        reports.push((
            name.clone(),
            read_report(&dir.join(format!("{name}.json")))?,
        ));
    }
    let seed_report = read_report(&dir.join("seed.json"))?;
    say(format!(
        "\n{:<8} {:>8} {:>12} {:>12} {:>12}",
        "host", "done(s)", "MiB/s", "served", "from seed"
    ));
    for (name, r) in &reports {
        let secs = r.complete_secs.unwrap_or(r.elapsed_secs);
        say(format!(
            "{:<8} {:>8.2} {:>12.1} {:>12} {:>12}",
            name,
            secs,
            r.bytes_total as f64 / secs.max(1e-3) / (1 << 20) as f64,
            human(r.bytes_served as f64),
            human(r.received_from_seed as f64)
        ));
    }
    let delivered = size as f64 * peers as f64;
    say(format!(
        "\ndemo: {peers} verified copies of {} in {:.2}s ({}/s delivered in total); \
         the seed sent {} = {:.2} copies, the peers sent the rest to each other",
        human(size as f64),
        total.as_secs_f64(),
        human(delivered / total.as_secs_f64().max(1e-3)),
        human(seed_report.bytes_served as f64),
        seed_report.bytes_served as f64 / (size.max(1)) as f64
    ));
    Ok(())
}

/// A directory of the demo's in `--dir`: a link there is refused, never
/// followed; with `fresh`, one left by an earlier demo is removed (std's
/// remove_dir_all never follows a link) and a new one made exclusively.
fn own_dir(path: &Path, fresh: bool) -> Result<(), Fail> {
    let refuse = || {
        Err(io(format!(
            "{} is a symbolic link; the demo does not follow links in --dir: remove it and run again",
            crate::text::path(path)
        )))
    };
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => return refuse(),
        Ok(m) if m.is_dir() && !fresh => return Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io)?,
        _ => {}
    }
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(_) if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) => refuse(),
        Err(e) => Err(io(format!("{}: {e}", crate::text::path(path)))),
    }
}

/// A new file at `path` (one left by an earlier demo is removed first;
/// remove_file removes a link itself): created exclusively, so a link
/// planted there is not written through.
fn new_file(path: &Path) -> std::io::Result<File> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Writes a new file at `path` (see `new_file`).
fn write_random(path: &Path, size: u64) -> std::io::Result<()> {
    let mut rng = rand::make_rng::<rand::rngs::SmallRng>();
    let file = new_file(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    w.flush()
}

fn hash_file(path: &PathBuf) -> std::io::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

fn read_report(path: &Path) -> Result<Report, Fail> {
    let text = fs::read_to_string(path)
        .map_err(|e| (EXIT_INTERNAL, format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| (EXIT_INTERNAL, format!("{}: {e}", path.display())))
}

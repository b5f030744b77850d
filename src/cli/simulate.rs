//! `swarm simulate`: the arguments checked into a `sim::Scenario`, the run
//! with progress on stderr, and its figures (a summary, or `--json`).

use std::io::Write;
use std::process::ExitCode;

use super::args::SimulateArgs;
use super::{EXIT_IO, EXIT_USAGE, units};
use crate::manifest::{MAX_PIECES, default_piece_size};
use crate::sim::{self, Scenario};
use crate::storage::PrivateFile;

/// Most simulated hosts: memory grows with hosts x connections x pieces.
const MAX_HOSTS: usize = 100_000;

pub fn run(a: &SimulateArgs, quiet: bool) -> ExitCode {
    let sc = match scenario(a) {
        Ok(sc) => sc,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // the plot's temporary exists before the run: a path that cannot be
    // written fails now, not after minutes of simulation
    let plot = match a.plot.as_deref().map(PrivateFile::create).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --plot: {e}");
            return ExitCode::from(EXIT_IO);
        }
    };
    let mut err = std::io::stderr();
    let mut v = sim::run(&sc, &mut |what, t, done| {
        if !quiet {
            let _ = write!(
                err,
                "\rsimulate: {what}: {t:.1}s of virtual time, {done} of {} hosts done   ",
                sc.host_count() - 1
            );
        }
    });
    if !quiet {
        eprintln!();
    }
    v["sim"]["peak_rss_bytes"] = crate::node::peak_rss_bytes().into();
    // the figures first: a plot that cannot be written loses no results
    if a.json {
        println!("{v}");
    } else {
        print!("{}", human(&v));
    }
    if let Some(p) = plot {
        let path = p.path().to_path_buf();
        if let Err(e) = p.commit(sim::plot::svg(&v).as_bytes()) {
            eprintln!("error: --plot {}: {e}", path.display());
            return ExitCode::from(EXIT_IO);
        }
    }
    ExitCode::SUCCESS
}

fn scenario(a: &SimulateArgs) -> Result<Scenario, String> {
    if a.groups == 0 || a.hosts_per_group == 0 {
        return Err("--groups and --hosts-per-group must be at least 1".into());
    }
    let hosts = a.groups.saturating_mul(a.hosts_per_group);
    if hosts > MAX_HOSTS {
        return Err(format!(
            "at most {MAX_HOSTS} hosts in all (--groups x --hosts-per-group is {hosts})"
        ));
    }
    if hosts < 2 {
        return Err(
            "--groups x --hosts-per-group must be at least 2: the seed and a joiner".into(),
        );
    }
    if !(1..=crate::node::MAX_BRIDGES).contains(&a.bridges) {
        return Err(format!(
            "--bridges must be 1 to {}",
            crate::node::MAX_BRIDGES
        ));
    }
    let size = units::size("--size", &a.size)?;
    if size == 0 {
        return Err("--size must be more than 0".into());
    }
    let piece_size = match &a.piece_size {
        Some(p) => {
            let p = units::size("--piece-size", p)?;
            if !p.is_power_of_two() || !(16 << 10..=1 << 30).contains(&p) {
                return Err("--piece-size must be a power of two from 16KiB to 1GiB".into());
            }
            p as u32
        }
        None => default_piece_size(size),
    };
    if size.div_ceil(u64::from(piece_size)) > MAX_PIECES as u64 {
        return Err(format!(
            "--size / --piece-size is more than {MAX_PIECES} pieces"
        ));
    }
    let nic = units::rate("--nic", &a.nic)? as f64;
    let wan = a
        .wan
        .as_deref()
        .map(|w| units::rate("--wan", w))
        .transpose()?
        .map(|w| w as f64);
    let secs = |arg: &str, s: &str| units::duration(arg, s).map(|d| d.as_secs_f64());
    let (slow_share, slow_factor) = match &a.slow {
        None => (0.0, 1.0),
        Some(s) => slow(s)?,
    };
    let (fail_share, fail_at) = match &a.fail {
        None => (0.0, 0.0),
        Some(f) => {
            let err = || format!("--fail: {f:?} is not SHARE@TIME, e.g. 5%@10s");
            let (share, at) = f.split_once('@').ok_or_else(err)?;
            let share: f64 = share
                .trim()
                .trim_end_matches('%')
                .parse()
                .map_err(|_| err())?;
            if !(0.0..=100.0).contains(&share) {
                return Err(err());
            }
            (share / 100.0, secs("--fail", at)?)
        }
    };
    let wan_outage = match &a.wan_outage {
        None => None,
        Some(w) => {
            let err = || format!("--wan-outage: {w:?} is not START+DURATION, e.g. 20s+30s");
            let (start, dur) = w.split_once('+').ok_or_else(err)?;
            Some((secs("--wan-outage", start)?, secs("--wan-outage", dur)?))
        }
    };
    let (mut cascade, mut bittorrent) = (false, false);
    for b in a.baselines.split(',').map(str::trim) {
        match b {
            "cascade" => cascade = true,
            "bittorrent" => bittorrent = true,
            "none" => {}
            _ => {
                return Err(format!(
                    "--baselines: {b:?} is not cascade, bittorrent or none"
                ));
            }
        }
    }
    let tick = match &a.tick {
        Some(t) => secs("--tick", t)?,
        None => f64::from(piece_size) / nic / 16.0,
    };
    if tick <= 0.0 {
        return Err("--tick must be more than 0".into());
    }
    Ok(Scenario {
        groups: a.groups,
        hosts_per_group: a.hosts_per_group,
        size,
        piece_size,
        up: nic,
        down: nic,
        wan,
        lan_latency: secs("--lan-latency", &a.lan_latency)?,
        wan_latency: secs("--wan-latency", &a.wan_latency)?,
        bridges: a.bridges,
        seed_max_peers: a.seed_max_peers.into(),
        stagger: secs("--stagger", &a.stagger)?,
        slow_share,
        slow_factor,
        linger: secs("--linger", &a.linger)?,
        fail_share,
        fail_at,
        wan_outage,
        tick,
        seed: a.seed,
        limit: secs("--limit", &a.limit)?,
        cascade,
        bittorrent,
    })
}

/// `SHARE:FACTOR`: `10%:0.25`.
fn slow(s: &str) -> Result<(f64, f64), String> {
    let err = || format!("--slow: {s:?} is not SHARE:FACTOR, e.g. 10%:0.25");
    let (share, factor) = s.split_once(':').ok_or_else(err)?;
    let share: f64 = share
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| err())?;
    let factor: f64 = factor.trim().parse().map_err(|_| err())?;
    if !((0.0..=100.0).contains(&share) && factor > 0.0 && factor <= 1.0) {
        return Err(format!(
            "--slow: the share is 0-100% and the factor more than 0, at most 1 ({s:?})"
        ));
    }
    Ok((share / 100.0, factor))
}

fn human(v: &serde_json::Value) -> String {
    let f = |x: &serde_json::Value| x.as_f64().map_or("-".into(), |x| format!("{x:.2}"));
    let sw = &v["swarm"];
    let mut out = format!(
        "T* = {} s\nswarm:   last {} s ({} T*), median {} s ({} T*), {} of {} hosts done, {} failed, {} killed\n",
        f(&v["t_star_s"]),
        f(&sw["all"]["last_s"]),
        f(&sw["all"]["last_over_t_star"]),
        f(&sw["all"]["median_s"]),
        f(&sw["all"]["median_over_t_star"]),
        sw["all"]["hosts_done"],
        sw["all"]["hosts"],
        sw["hosts_failed"],
        sw["hosts_died"],
    );
    if v["scenario"]["slow_hosts"].as_u64().unwrap_or(0) > 0 {
        out += &format!(
            "         fast hosts last {} T*; slow hosts last {} s (their own limit {} s)\n",
            f(&sw["fast_hosts"]["last_over_t_star"]),
            f(&sw["slow_hosts"]["last_s"]),
            f(&sw["slow_host_limit_s"]),
        );
    }
    out += &format!(
        "         seed upload {} x S; upload per host median {} x S (max {}); WAN in per remote group {} x S\n",
        f(&sw["seed_upload_over_s"]),
        f(&sw["upload_over_s"]["median"]),
        f(&sw["upload_over_s"]["max"]),
        sw["wan_in_over_s_per_remote_group"]
            .as_array()
            .map(|a| a.iter().map(f).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
    );
    if !v["cascade"].is_null() {
        out += &format!(
            "cascade: last {} s ({} T*), median {} s\n",
            f(&v["cascade"]["last_s"]),
            f(&v["cascade"]["last_over_t_star"]),
            f(&v["cascade"]["median_s"]),
        );
    }
    let bt = &v["bittorrent"];
    if !bt.is_null() {
        out += &format!(
            "bittorrent-like: last {} s ({} T*), median {} s, {} of {} hosts done; WAN in per remote group {} x S\n",
            f(&bt["last_s"]),
            f(&bt["last_over_t_star"]),
            f(&bt["median_s"]),
            bt["hosts_done"],
            bt["hosts"],
            bt["wan_in_over_s_per_remote_group"]
                .as_array()
                .map(|a| a.iter().map(f).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
        );
    }
    out += &format!(
        "simulated in {} s, {} MiB at most\n",
        f(&v["sim"]["wall_s"]),
        v["sim"]["peak_rss_bytes"].as_u64().unwrap_or(0) >> 20,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_hosts_parse() {
        assert_eq!(slow("10%:0.25").unwrap(), (0.1, 0.25));
        for bad in ["10%", "x:1", "10%:0", "10%:2", "150%:0.5", ":"] {
            assert!(slow(bad).unwrap_err().contains("--slow"), "{bad}");
        }
    }
}

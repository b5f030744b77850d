//! `swarm simulate` as operators run it: one JSON document, the same for
//! the same inputs, and clear errors for bad ones.

use crate::util::swarm;

fn simulate(args: &[&str]) -> std::process::Output {
    swarm()
        .arg("-q")
        .arg("simulate")
        .args(args)
        .output()
        .expect("run swarm")
}

fn figures(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    v["sim"] = serde_json::Value::Null;
    v["swarm"]["wall_s"] = serde_json::Value::Null;
    v
}

#[test]
fn simulate_prints_the_same_figures_for_the_same_inputs() {
    let args = [
        "--groups",
        "2",
        "--hosts-per-group",
        "4",
        "--size",
        "32MiB",
        "--nic",
        "200Mbit/s",
        "--wan",
        "100Mbit/s",
        "--seed",
        "5",
        "--json",
    ];
    let a = figures(&simulate(&args));
    let b = figures(&simulate(&args));
    assert_eq!(a, b);
    assert_eq!(a["swarm"]["all"]["hosts_done"], 7);
    assert_eq!(a["cascade"]["hosts_done"], 7);
    // S at 100 Mbit/s over the WAN
    let t_star = a["t_star_s"].as_f64().unwrap();
    assert!(
        (t_star - 32.0 * 1048576.0 / 12.5e6).abs() < 1e-6,
        "{t_star}"
    );
    let last = a["swarm"]["all"]["last_over_t_star"].as_f64().unwrap();
    assert!((1.0..3.0).contains(&last), "{last}");
    let wan = a["swarm"]["wan_in_over_s_per_remote_group"][0]
        .as_f64()
        .unwrap();
    assert!((1.0..1.5).contains(&wan), "{wan}");
    // the summary for people names the same figures
    let human = simulate(&args[..args.len() - 1]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("swarm:") && text.contains("cascade:"),
        "{text}"
    );
}

#[test]
fn simulate_refuses_bad_arguments_with_exit_2() {
    for (args, names) in [
        (&["--groups", "0"][..], "--groups"),
        (&["--size", "lots"][..], "--size"),
        (&["--nic", "fast"][..], "--nic"),
        (&["--piece-size", "3000"][..], "--piece-size"),
        (&["--slow", "10%"][..], "--slow"),
        (&["--hosts-per-group", "1000000"][..], "hosts in all"),
        (&["--hosts-per-group", "1"][..], "at least 2"),
        (&["--size", "1PiB", "--piece-size", "16KiB"][..], "pieces"),
        (&["--baselines", "cascade,bogus"][..], "--baselines"),
    ] {
        let out = simulate(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(names), "{args:?}: {err}");
    }
}

/// `--plot FILE` draws the run: an SVG with swarm's and the baselines'
/// curves that ends where swarm's last host finished. A path that cannot be
/// written exits 5 before any simulation, and an existing link at the path
/// is replaced, never written through.
#[test]
fn simulate_plots_the_run_and_refuses_a_path_it_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("run.svg");
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, "keep").unwrap();
    std::os::unix::fs::symlink(&target, &plot).unwrap();
    let args = [
        "--hosts-per-group",
        "6",
        "--size",
        "16MiB",
        "--nic",
        "1Gbit/s",
    ];
    let mut with_plot = args.to_vec();
    with_plot.extend(["--json", "--plot", plot.to_str().unwrap()]);
    let v = figures(&simulate(&with_plot));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 5, "{svg}");
    assert!(svg.contains("cascade: hosts done") && svg.contains("swarm: bytes"));
    assert!(svg.contains("bittorrent-like: hosts done"));
    let bt = v["bittorrent"]["done_over_time"].as_array().unwrap();
    assert_eq!(
        bt.last().unwrap()[1].as_f64(),
        Some(1.0),
        "every joiner done"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    // the curves in the JSON end with every joiner done
    let done = v["swarm"]["done_over_time"].as_array().unwrap();
    assert_eq!(done.last().unwrap()[1].as_f64(), Some(1.0));
    let last = v["swarm"]["all"]["last_over_t_star"].as_f64().unwrap();
    assert!((done.last().unwrap()[0].as_f64().unwrap() - last).abs() < 1e-9);
    let bytes = v["swarm"]["delivered_over_time"].as_array().unwrap();
    assert!(
        bytes
            .windows(2)
            .all(|w| w[0][1].as_f64() <= w[1][1].as_f64())
    );

    let mut bad = args.to_vec();
    let missing = dir.path().join("no/such/dir/run.svg");
    bad.extend(["--plot", missing.to_str().unwrap()]);
    let out = simulate(&bad);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--plot") && !err.contains("simulated"),
        "{err}"
    );
}

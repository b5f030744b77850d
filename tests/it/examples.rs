//! The worked examples of docs/operations.md (docs/examples/), run as
//! written: the ssh push script and the Ansible play over network-namespace
//! hosts, the systemd units through `systemd-analyze verify`, the
//! Kubernetes manifests through the Kubernetes schemas; and the swarm
//! command lines in the units and manifests run to a complete copy.
//!
//! A "host" here is a network namespace of netsim with a mount namespace
//! of its own in which DEST is its own directory, so that every host has
//! its own /srv/images as separate machines do. `ssh HOST CMD` becomes
//! `ip netns exec HOST unshare -m sh -c "mount --bind ROOT/HOST DEST; CMD"`,
//! which is what ssh does with CMD: one shell string, run on the host.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::netsim::{Host, Net, Spec};
use crate::util::*;

/// The repository's docs/examples/NAME.
fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/examples")
        .join(name)
}

/// Hosts of a small two-group network, the seed on g0h0.
fn net() -> Net {
    Net::new(Spec {
        hosts: vec![3, 2],
        nic_bps: 1_000_000_000,
        wan_bps: 500_000_000,
        wan_delay: Duration::from_millis(5),
        mtu: 1500,
    })
    .unwrap()
}

/// A small datadir-like tree.
fn image(dir: &Path) -> PathBuf {
    let img = dir.join("db-2026-12-06");
    for (i, f) in [
        "base/1/1259",
        "base/1/2619",
        "global/pg_control",
        "PG_VERSION",
    ]
    .iter()
    .enumerate()
    {
        let p = img.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        random_file(&p, 300_000 * (i + 1), 70 + i as u64);
    }
    std::os::unix::fs::symlink("../wal", img.join("pg_wal")).unwrap();
    img
}

/// The fake ssh: `ssh [OPTIONS] HOST COMMAND` (the last two arguments, as
/// push.sh and Ansible's ssh connection call it) runs COMMAND with
/// `/bin/sh -c` in HOST's network namespace, with ROOT/HOST mounted at
/// DEST (its own disk); a HOST that is no namespace is unreachable (exit
/// 255, as ssh's).
fn fake_ssh(dir: &Path, root: &Path, dest: &Path) -> PathBuf {
    let ssh = dir.join("ssh");
    fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do h=$c; c=$a; done\n\
             [ -e \"/run/netns/$h\" ] || {{ echo \"ssh: connect to host $h: No route to host\" >&2; exit 255; }}\n\
             exec ip netns exec \"$h\" unshare -m sh -c 'mount --bind \"$0\" \"$1\" && exec /bin/sh -c \"$2\"' \
             \"{}/$h\" \"{}\" \"$c\"\n",
            root.display(),
            dest.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ssh
}

/// A tool the CI installs in target/ci-venv (.ci/test.sh), or on PATH.
fn venv_tool(name: &str) -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/ci-venv/bin")
        .join(name);
    if venv.exists() {
        return venv;
    }
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.exists())
    });
    on_path.unwrap_or_else(|| panic!("{name} not found: .ci/test.sh installs it in target/ci-venv"))
}

fn push(net: &Net, seed: &Host, args: &[&Path], env: &[(&str, &Path)]) -> Output {
    let mut cmd = net.command(seed, "bash");
    cmd.arg(example("push.sh")).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // each host's report on its own disk, DEST/join.json
    let report = format!("--linger 1s --report {}/join.json", args[1].display());
    cmd.env("SWARM_BIN", env!("CARGO_BIN_EXE_swarm"))
        .env("SWARM_GROUP", "g0")
        .env("SWARM_JOIN_ARGS", report);
    run(cmd, Duration::from_secs(180))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_ssh_push_reaches_every_host_reruns_clean_and_names_a_failed_host() {
    let net = net();
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let dest = dir.path().join("dest");
    let root = dir.path().join("disks");
    fs::create_dir_all(&dest).unwrap();
    let ssh = fake_ssh(dir.path(), &root, &dest);
    let seed = net.host(0, 0).clone();
    let targets: Vec<Host> = net.hosts.iter().flatten().skip(1).cloned().collect();
    let mut hosts = String::from("# host group\n");
    for h in &targets {
        fs::create_dir_all(root.join(&h.ns)).unwrap();
        hosts += &format!("{} g{}\n", h.ns, h.group);
    }
    let hosts_file = dir.path().join("hosts.txt");
    // as an editor on another system may leave it: CRLF, no last newline
    let crlf = hosts.trim_end().replace('\n', "\r\n");
    fs::write(&hosts_file, crlf).unwrap();

    // one push, its logs in dir/NAME: (exit code, output, logs)
    let push_once = |name: &str| {
        let logs = dir.path().join(name);
        let out = push(
            &net,
            &seed,
            &[&img, &dest, &hosts_file],
            &[("SWARM_SSH", &ssh), ("SWARM_LOGS", &logs)],
        );
        (out.status.code(), text(&out), logs)
    };
    let (code, t, _) = push_once("logs1");
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("4 of 4 hosts have db-2026-12-06"), "{t}");
    for h in &targets {
        assert_same(&img, &root.join(&h.ns).join("db-2026-12-06"));
        assert!(t.contains(&format!("ok     {}", h.ns)), "{t}");
        let r = report(&root.join(&h.ns).join("join.json"));
        assert_eq!(r["group"], format!("g{}", h.group), "{r}");
    }

    // again: every host already has it
    let (code, t, logs) = push_once("logs2");
    assert_eq!(code, Some(0), "{t}");
    for h in &targets {
        let log = fs::read_to_string(logs.join(format!("{}.log", h.ns))).unwrap();
        assert!(log.contains("already up to date"), "{}: {log}", h.ns);
    }

    // a host that cannot be reached is named, the others still get it
    fs::write(&hosts_file, format!("{hosts}no-such-host g1\n")).unwrap();
    let (code, t, _) = push_once("logs3");
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("FAILED no-such-host"), "{t}");
    assert!(t.contains("4 of 5 hosts"), "{t}");
    assert!(t.contains("not done: no-such-host"), "{t}");
}

#[test]
fn the_push_script_refuses_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let script = example("push.sh");
    let bash = |args: &[&str]| {
        let mut c = Command::new("bash");
        c.arg(&script).args(args);
        run(c, Duration::from_secs(30))
    };
    let out = bash(&["one"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let missing = dir.path().join("nope");
    let d = dir.path().to_str().unwrap();
    let out = bash(&[missing.to_str().unwrap(), d, d]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("IMAGE"), "{}", text(&out));
    let empty = dir.path().join("hosts");
    fs::write(&empty, "# nobody\n\n").unwrap();
    let out = bash(&[d, d, empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no hosts"), "{}", text(&out));
    // a host name that ssh would take for an option
    let evil = dir.path().join("evil");
    fs::write(&evil, "-oProxyCommand=touch%20/tmp/x g1\n").unwrap();
    let out = bash(&[d, d, evil.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not a host name"), "{}", text(&out));
    // last run's ticket in SWARM_LOGS is not taken for this run's: a seed
    // that fails is a seed that did not start
    let hosts = dir.path().join("one");
    fs::write(&hosts, "h1 g0\n").unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).unwrap();
    fs::write(logs.join("ticket"), "swarm1:stale\n").unwrap();
    let mut c = Command::new("bash");
    c.arg(&script)
        .args([d, d, hosts.to_str().unwrap()])
        .env("SWARM_LOGS", &logs)
        .env("SWARM_SEED_BIN", "false")
        .env("SWARM_SSH", "false");
    let out = run(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // SWARM_LOGS that is a link is refused
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&logs, &link).unwrap();
    let mut c = Command::new("bash");
    c.arg(&script)
        .args([d, d, hosts.to_str().unwrap()])
        .env("SWARM_LOGS", &link);
    let out = run(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// docs/examples/ansible/push.yml, run by the real ansible-playbook with
/// its ssh connection (the ssh binary swapped for the fake one): every
/// host gets the image; run again, nothing changes; the ticket's secret
/// is nowhere in Ansible's output.
#[test]
fn the_ansible_play_pushes_to_every_host_and_is_idempotent() {
    let playbook = venv_tool("ansible-playbook");
    let net = net();
    let mut dir = tempfile::tempdir().unwrap();
    dir.disable_cleanup(std::env::var_os("SWARM_KEEP_EXAMPLES").is_some());
    let img = image(dir.path());
    let dest = dir.path().join("dest");
    let root = dir.path().join("disks");
    fs::create_dir_all(&dest).unwrap();
    let ssh = fake_ssh(dir.path(), &root, &dest);
    let run_dir = dir.path().join("run");
    let mut inv = String::from("[swarm_seed]\n");
    let all: Vec<&Host> = net.hosts.iter().flatten().collect();
    for (i, h) in all.iter().enumerate() {
        fs::create_dir_all(root.join(&h.ns)).unwrap();
        if i == 1 {
            inv += "\n[swarm_hosts]\n";
        }
        inv += &format!("{} ansible_host={} swarm_group=g{}\n", h.ns, h.ns, h.group);
    }
    inv += &format!(
        "\n[all:vars]\nansible_connection=ssh\nansible_ssh_executable={}\n\
         ansible_pipelining=true\nansible_ssh_transfer_method=piped\n\
         ansible_python_interpreter=/usr/bin/python3\nswarm_bin={}\nswarm_image={}\n\
         swarm_dest={}\nswarm_run_dir={}\nswarm_report={}/{{{{ inventory_hostname }}}}.json\n\
         swarm_join_args=[\"--linger\", \"1s\"]\nswarm_hash_timeout=60\nswarm_poll=1\n",
        ssh.display(),
        env!("CARGO_BIN_EXE_swarm"),
        img.display(),
        dest.display(),
        run_dir.display(),
        dir.path().join("reports").display(),
    );
    let inventory = dir.path().join("inventory.ini");
    fs::write(&inventory, inv).unwrap();
    let play = || {
        let mut c = Command::new(&playbook);
        c.arg("-i")
            .arg(&inventory)
            .arg(example("ansible/push.yml"))
            .env("ANSIBLE_HOME", dir.path().join("ansible-home"))
            .env("ANSIBLE_LOCAL_TEMP", dir.path().join("ansible-tmp"))
            .env("ANSIBLE_REMOTE_TEMP", dir.path().join("ansible-rtmp"))
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("ANSIBLE_LOG_PATH", dir.path().join("ansible.log"));
        run(c, Duration::from_secs(300))
    };
    let out = play();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let targets: Vec<&&Host> = all.iter().skip(1).collect();
    for h in &targets {
        assert_same(&img, &root.join(&h.ns).join("db-2026-12-06"));
        let r = report(&dir.path().join("reports").join(format!("{}.json", h.ns)));
        assert_eq!(r["ended"], "ok", "{r}");
    }
    let ticket = fs::read_to_string(run_dir.join("ticket")).unwrap();
    let secret = ticket.trim().trim_start_matches("swarm1:");
    assert!(
        !t.contains(&secret[..20]),
        "the ticket is in Ansible's output:\n{t}"
    );
    // the recap: every target's join changed something
    for h in &targets {
        assert!(
            t.lines().any(|l| l.starts_with(&h.ns)
                && !l.contains("changed=0")
                && l.contains("failed=0")),
            "{}: {t}",
            h.ns
        );
    }

    // again: every host is up to date, no join changes anything
    let out = play();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    for h in &targets {
        assert!(
            t.lines()
                .any(|l| l.starts_with(&h.ns) && l.contains("changed=0") && l.contains("failed=0")),
            "{}: {t}",
            h.ns
        );
    }

    // a host that cannot be reached: the others still have it, the play
    // fails naming it, and the seed is not left running
    let inv = fs::read_to_string(&inventory).unwrap().replace(
        "\n[all:vars]",
        "no-such-host ansible_host=no-such-host swarm_group=g1\n\n[all:vars]",
    );
    fs::write(&inventory, inv).unwrap();
    let out = play();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("no-such-host") && l.contains("failed=1")),
        "{t}"
    );
    for h in &targets {
        assert!(
            t.lines()
                .any(|l| l.starts_with(&h.ns) && l.contains("failed=0")),
            "{}: {t}",
            h.ns
        );
    }
    let seed = report(&run_dir.join("seed.json"));
    assert_eq!(seed["ended"], "stopped", "{seed}");
}

/// Runs a join command made from an example (its report in
/// ROOT/var/log/swarm) to the end: exit 0, `img` at ROOT/dest, the
/// report's `"ended": "ok"`.
fn join_completes(mut join: Command, root: &Path, img: &Path) {
    join.arg("--exit-on-complete");
    let out = run(join, Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out));
    assert_same(img, &root.join("dest/db-2026-12-06"));
    let r = report(&root.join("var/log/swarm/join-db-2026-12-06.json"));
    assert_eq!(r["ended"], "ok", "{r}");
}

/// The ExecStart of a unit in docs/examples/systemd, continuation lines
/// joined, as words.
fn exec_start(unit: &str) -> Vec<String> {
    let text = fs::read_to_string(example(&format!("systemd/{unit}"))).unwrap();
    let line = text.replace("\\\n", " ");
    let cmd = line
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
    cmd.split_whitespace().map(str::to_string).collect()
}

/// `swarm ARGS` as a host would run them, here: every absolute path moved
/// under `root` (`/srv/images` to `dest` if given, for a join's
/// destination), listen and metrics addresses to free loopback ports.
fn localize(words: &[String], root: &Path, dest: Option<&Path>) -> Command {
    let words: Vec<String> = words
        .iter()
        .map(|w| {
            let w = w
                .replace("0.0.0.0:7000", "127.0.0.1:0")
                .replace("0.0.0.0:9311", "127.0.0.1:0");
            // --flag=/path, @/path and /path alike
            let (head, path) = match w.find('/') {
                Some(i) if w[..i].is_empty() || w[..i].ends_with('=') || &w[..i] == "@" => {
                    w.split_at(i)
                }
                _ => return w,
            };
            let path = match dest {
                Some(d) if path == "/srv/images" => d.to_path_buf(),
                _ if path.starts_with(root.to_str().unwrap()) => PathBuf::from(path),
                _ => root.join(&path[1..]),
            };
            format!("{head}{}", path.display())
        })
        .collect();
    let mut c = swarm();
    c.args(words);
    c
}

/// docs/examples/systemd: `systemd-analyze verify` accepts both units
/// without a warning (an unknown key is only a warning there), and their
/// command lines, run as systemd would (specifiers filled in; the fixed
/// paths and ports moved into a temporary directory and loopback), seed
/// and join an image.
#[test]
fn the_systemd_units_verify_and_their_commands_push_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_swarm");
    let units = dir.path().join("units");
    fs::create_dir(&units).unwrap();
    for u in ["swarm-seed@.service", "swarm-join@.service"] {
        let text = fs::read_to_string(example(&format!("systemd/{u}"))).unwrap();
        // the only change: where the binary is
        fs::write(units.join(u), text.replace("/usr/bin/swarm", bin)).unwrap();
        // an instance of the template, as `systemctl start` names it
        std::os::unix::fs::symlink(units.join(u), units.join(u.replace('@', "@db"))).unwrap();
    }
    let mut c = Command::new("systemd-analyze");
    c.arg("verify")
        .arg(units.join("swarm-seed@db.service"))
        .arg(units.join("swarm-join@db.service"));
    let out = run(c, Duration::from_secs(60));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        text(&out)
    );

    // the command lines
    let root = dir.path();
    let creds = root.join("credentials");
    for d in [
        "srv/images",
        "var/lib/swarm",
        "run/swarm",
        "var/log/swarm",
        "dest",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::create_dir(&creds).unwrap();
    let img = image(&root.join("srv/images"));
    let fill = |words: Vec<String>, dest: Option<&Path>| -> Command {
        assert_eq!(words[0], "/usr/bin/swarm");
        let words: Vec<String> = words[1..]
            .iter()
            .map(|w| {
                w.replace("%i", "db-2026-12-06")
                    .replace("%d", creds.to_str().unwrap())
            })
            .collect();
        localize(&words, root, dest)
    };
    let mut seed = Proc::spawn(fill(exec_start("swarm-seed@.service"), None), "seed", root);
    let ticket = root.join("run/swarm/db-2026-12-06.ticket");
    wait_file(&mut seed, &ticket);
    fs::copy(&ticket, creds.join("ticket")).unwrap();
    let join = fill(exec_start("swarm-join@.service"), Some(&root.join("dest")));
    join_completes(join, root, &img);
    assert!(root.join("var/lib/swarm/db-2026-12-06.manifest").exists());
    seed.signal(libc::SIGTERM);
    seed.wait_ok(Duration::from_secs(30));
}

/// The containers' args in docs/examples/kubernetes/FILE (by container
/// name), read with PyYAML (ansible-core's, in the same venv).
fn container_args(file: &str, container: &str) -> Vec<String> {
    let py = venv_tool("python3");
    let mut c = Command::new(py);
    c.arg("-c")
        .arg(
            "import sys, json, yaml\n\
             for d in yaml.safe_load_all(open(sys.argv[1])):\n\
             \x20   spec = d.get('spec', {}).get('template', {}).get('spec', {})\n\
             \x20   for c in spec.get('containers', []):\n\
             \x20       if c['name'] == sys.argv[2]: print(json.dumps(c['args']))\n",
        )
        .arg(example(&format!("kubernetes/{file}")))
        .arg(container);
    let out = run(c, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{file}: {e}: {}", text(&out)))
}

/// docs/examples/kubernetes: both manifests pass the Kubernetes schemas
/// strictly (and a manifest with an unknown field does not: the checker
/// checks), and the containers' args, with the node's address and the
/// node's paths filled in as Kubernetes and the hostPath volumes would,
/// seed and join an image.
#[test]
fn the_kubernetes_manifests_validate_and_their_args_push_an_image() {
    let validate = venv_tool("kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    let files = ["seed-daemonset.yaml", "join-job.yaml"];
    let check = |paths: &[PathBuf]| {
        let mut c = Command::new(&validate);
        c.args(["--strict", "-k", "1.31.0"]).args(paths);
        run(c, Duration::from_secs(120))
    };
    let out = check(&files.map(|f| example(&format!("kubernetes/{f}"))));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_eq!(t.matches(" passed for resource ").count(), 3, "{t}");
    let bad = dir.path().join("bad.yaml");
    let job = fs::read_to_string(example("kubernetes/join-job.yaml")).unwrap();
    fs::write(
        &bad,
        job.replace(
            "          args:\n",
            "          argz: [x]\n          args:\n",
        ),
    )
    .unwrap();
    let out = check(&[bad]);
    assert!(
        !out.status.success(),
        "an unknown field passed: {}",
        text(&out)
    );

    // the args, on this host: $(VAR)s as the pod's env gives them, UDP
    // 7000 (hostPort) a free loopback port, the hostPath volumes under root
    let root = dir.path();
    fs::create_dir_all(root.join("srv/images")).unwrap();
    fs::create_dir_all(root.join("dest")).unwrap();
    // the hostPath volumes (DirectoryOrCreate) and the secret's
    for d in ["etc/swarm", "var/log/swarm", "var/lib/swarm"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let img = image(&root.join("srv/images"));
    let pod = |args: Vec<String>| -> Vec<String> {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        args.iter()
            .map(|a| {
                a.replace("$(IMAGE)", "db-2026-12-06")
                    .replace("$(GROUP)", "dc1")
                    .replace("$(HOST_IP):7000", &format!("127.0.0.1:{port}"))
                    .replace("0.0.0.0:7000", &format!("127.0.0.1:{port}"))
            })
            .collect()
    };
    let mut cmd = localize(
        &pod(container_args("seed-daemonset.yaml", "seed")),
        root,
        None,
    );
    let stdout = root.join("seed.out");
    cmd.stdout(fs::File::create(&stdout).unwrap())
        .stderr(fs::File::create(root.join("seed.log")).unwrap());
    let mut seed = Proc {
        child: cmd.spawn().unwrap(),
        name: "seed".into(),
        log: root.join("seed.log"),
    };
    // the ticket: in the node's file, not in the pod's log
    let file = root.join("var/lib/swarm/db-2026-12-06.ticket");
    wait_file(&mut seed, &file);
    let ticket = fs::read_to_string(&file).unwrap().trim().to_string();
    let secret = &ticket["swarm1:".len()..][..20];
    let log = fs::read_to_string(&stdout).unwrap() + &seed.log_text();
    assert!(
        !log.contains(secret),
        "the ticket is in the pod's log: {log}"
    );
    assert!(ticket.len() > 40);
    fs::write(root.join("etc/swarm/ticket"), format!("{ticket}\n")).unwrap();
    let join = localize(
        &pod(container_args("join-job.yaml", "join")),
        root,
        Some(&root.join("dest")),
    );
    join_completes(join, root, &img);
    seed.signal(libc::SIGTERM);
    seed.wait_ok(Duration::from_secs(30));
}

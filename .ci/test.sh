#!/usr/bin/env bash
# Runs every check CI runs. Installs what the tests and benchmarks need
# first (Debian packages via apt-get when run as root), so it works on a
# fresh machine that has only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

# command:package pairs
need=()
for pair in file:file shellcheck:shellcheck systemd-analyze:systemd rsync:rsync iperf3:iperf3 b3sum:b3sum ip:iproute2 tc:iproute2 ss:iproute2 mount:mount \
  ping:iputils-ping aria2c:aria2 mktorrent:mktorrent opentracker:opentracker; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing tools; install these packages first: ${need[*]}" >&2
    exit 1
  fi
fi
# promtool (the metrics test lints swarm's /metrics with it) comes with
# Debian's prometheus; its recommended node exporter is not needed
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: prometheus (for promtool)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "missing tools; install this package first: prometheus (promtool)" >&2
    exit 1
  fi
fi

# the worked examples' tools (tests/it/examples.rs), from PyPI, pinned, in
# a venv of their own: ansible-core runs docs/examples/ansible, and
# kubernetes-validate (it carries the Kubernetes schemas: no network
# needed) checks docs/examples/kubernetes
venv=target/ci-venv
tools="ansible-core==2.17.14 kubernetes-validate==1.31.0"
if [ "$(cat "$venv/.tools" 2>/dev/null)" != "$tools" ]; then
  echo "installing in $venv: $tools"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # a list of requirements
  "$venv/bin/pip" install -q $tools
  echo "$tools" >"$venv/.tools"
fi

cargo fmt --all -- --check
shellcheck docs/examples/*.sh .ci/*.sh
cargo clippy --all-targets -- -D warnings
# advisories, licenses, duplicate versions, sources (offline, .ci/advisory-db)
bash .ci/deny.sh
# the benchmark in quick mode: real rsync, iperf3 and swarm side by side, small image
SWARM_BENCH_QUICK=1 cargo bench --bench loopback
# micro-benchmarks: hashing, codec, picker
SWARM_BENCH_QUICK=1 cargo bench --bench micro
# groups over an emulated WAN (network namespaces: needs root, as in CI)
if [ "$(id -u)" = 0 ]; then
  SWARM_BENCH_QUICK=1 cargo bench --bench wan
  # swarm against serial rsync, the rsync cascade and BitTorrent (aria2c)
  SWARM_BENCH_QUICK=1 cargo bench --bench compare
  # the delta scenario (issue 22): every joiner holds last night's image
  SWARM_BENCH_QUICK=1 SWARM_BENCH_SCENARIO=delta cargo bench --bench compare
else
  echo "skipping the WAN and compare benchmarks: they need root (network namespaces, tc)" >&2
fi
cargo test
# what operators install: the stripped binary and the .deb, unpacked and run
bash .ci/package.sh
# fuzz targets (fuzz/): a short run of each from the committed corpus.
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain take them (the machine has no other toolchain).
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
for t in frame request manifest path ticket blocks piece; do
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$t" -- -max_total_time=10)
done

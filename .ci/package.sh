#!/usr/bin/env bash
# Builds what docs/operations.md ("Install") says to ship, and checks it:
# the stripped dist binary and the .deb (cargo-deb), unpacked and run.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb@3.8.0
cargo build --profile dist
cargo deb --profile dist --no-build --output target/debian/swarm.deb >/dev/null
deb=target/debian/swarm.deb
echo "package: $(du -h "$deb" | cut -f1) $deb ($(dpkg-deb --field "$deb" Package Version Depends | tr '\n' ' '))"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp/root"
for f in usr/bin/swarm lib/systemd/system/swarm-seed@.service lib/systemd/system/swarm-join@.service \
  usr/share/doc/swarm/README.md usr/share/doc/swarm/operations.md; do
  [ -e "$tmp/root/$f" ] || { echo "package: $f missing from $deb" >&2; exit 1; }
done
# the units shipped are the ones docs/examples has (and tests/it/examples.rs verifies)
cmp "$tmp/root/lib/systemd/system/swarm-seed@.service" docs/examples/systemd/swarm-seed@.service
cmp "$tmp/root/lib/systemd/system/swarm-join@.service" docs/examples/systemd/swarm-join@.service
# stripped, and it works: the packaged binary runs the demo (a seed and
# two joiners on loopback, every copy verified)
if file "$tmp/root/usr/bin/swarm" | grep -q "not stripped"; then
  echo "package: usr/bin/swarm is not stripped" >&2
  exit 1
fi
"$tmp/root/usr/bin/swarm" --version
"$tmp/root/usr/bin/swarm" demo --peers 2 --size 8MiB 2>&1 | tail -n 1

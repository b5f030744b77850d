#!/usr/bin/env bash
# Push one image to many hosts over ssh: seed it here, join it on every
# host at once, and say which hosts have it. Tested by tests/it/examples.rs
# (network-namespace hosts stand in for ssh hosts).
#
#   push.sh IMAGE DEST_DIR HOSTS_FILE
#
# HOSTS_FILE: one host per line, `HOST [GROUP]` (GROUP: its datacenter,
# for --group; blank lines and # comments are skipped). Every host gets
# IMAGE at DEST_DIR/NAME; a host that already has it says "up to date";
# last night's copy there is the basis (--force), so only what changed
# crosses the network.
#
# Environment (all optional):
#   SWARM_SSH        how to run a command on a host (default: ssh in batch mode,
#                    10 s to connect, a dead host noticed within a minute);
#                    called as `$SWARM_SSH HOST COMMAND`, COMMAND one shell string
#   SWARM_TIMEOUT    how long a host may take (default: 6h; coreutils timeout)
#   SWARM_BIN        swarm on the hosts (default: swarm); SWARM_SEED_BIN here
#   SWARM_PORT       UDP port of every host, for the firewall (default: 7000)
#   SWARM_GROUP      this (the seed's) group (default: default)
#   SWARM_SEED_ARGS  more arguments for `swarm seed` (e.g. --state DIR)
#   SWARM_JOIN_ARGS  more arguments for every `swarm join` (e.g. --metrics 0.0.0.0:9311)
#   SWARM_LOGS       where each host's output and exit code go (default: a new
#                    directory under /tmp, printed); it must be this user's
#
# Exit 0 when every host has the image; 1 naming the hosts that do not
# (run it again: done hosts say "up to date", the rest resume); 2 on bad
# arguments; 3 when the seed did not start; 130 when interrupted (the
# seed and the ssh sessions are stopped; run it again to resume).
set -uo pipefail

if [ $# -ne 3 ]; then
  echo "usage: push.sh IMAGE DEST_DIR HOSTS_FILE" >&2
  exit 2
fi
image=$1 dest=$2 hosts_file=$3
ssh_cmd=${SWARM_SSH:-ssh -o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=15 -o ServerAliveCountMax=4}
bin=${SWARM_BIN:-swarm}
seed_bin=${SWARM_SEED_BIN:-$bin}
port=${SWARM_PORT:-7000}
limit=${SWARM_TIMEOUT:-6h}
if [ -n "${SWARM_LOGS:-}" ]; then
  logs=$SWARM_LOGS
  # the ticket is written here: nobody else's directory, and not a link
  if [ -L "$logs" ] || { [ -e "$logs" ] && [ ! -O "$logs" ]; }; then
    echo "push.sh: SWARM_LOGS: $logs is a link or not this user's" >&2
    exit 2
  fi
  mkdir -p "$logs" && chmod 700 "$logs" || exit 2
else
  logs=$(mktemp -d /tmp/swarm-push.XXXXXX) || exit 2
fi
[ -e "$image" ] || { echo "push.sh: IMAGE: $image does not exist" >&2; exit 2; }
[ -r "$hosts_file" ] || { echo "push.sh: HOSTS_FILE: cannot read $hosts_file" >&2; exit 2; }

# a word for the remote shell, quoted for any POSIX sh
quote() { printf "'%s'" "$(printf %s "$1" | sed "s/'/'\\\\''/g")"; }

hosts=() groups=()
while read -r host group _ || [ -n "${host:-}" ]; do
  host=${host%$'\r'} group=${group%$'\r'}
  case $host in '' | '#'*) continue ;; esac
  # a name ssh would take for an option, or a log file outside $logs
  case $host in -* | */* | .*)
    echo "push.sh: HOSTS_FILE: $host is not a host name" >&2
    exit 2
    ;;
  esac
  hosts+=("$host") groups+=("${group:-default}")
done <"$hosts_file"
[ ${#hosts[@]} -gt 0 ] || { echo "push.sh: HOSTS_FILE: no hosts in $hosts_file" >&2; exit 2; }

# The seed: serves until every host has a complete copy (or this script
# stops it). The ticket holds the swarm's secret: it goes to a 0600 file
# here and to each host on ssh's stdin, never on a command line.
ticket="$logs/ticket"
rm -f "$ticket"
# shellcheck disable=SC2086 # SWARM_SEED_ARGS is a list of arguments
"$seed_bin" seed "$image" --listen "0.0.0.0:$port" --group "${SWARM_GROUP:-default}" \
  --ticket-file "$ticket" --until-done "${#hosts[@]}" --report "$logs/seed.json" \
  ${SWARM_SEED_ARGS:-} >/dev/null 2>"$logs/seed.log" &
seed=$!
pids=()
stop() {
  kill "${pids[@]}" "$seed" 2>/dev/null
  wait 2>/dev/null
}
trap stop EXIT
trap 'echo "push.sh: interrupted; run it again to resume" >&2; exit 130' INT TERM
until [ -s "$ticket" ] && kill -0 "$seed" 2>/dev/null; do
  if ! kill -0 "$seed" 2>/dev/null; then
    echo "push.sh: the seed did not start:" >&2
    tail -n 5 "$logs/seed.log" >&2
    exit 3
  fi
  sleep 0.2
done

# Every host at once. A join that finds its copy up to date exits 0 at
# once; one that fails leaves its partial data to resume from.
start=$(date +%s)
for i in "${!hosts[@]}"; do
  h=${hosts[$i]}
  # shellcheck disable=SC2086 # SWARM_SSH is a command with arguments
  timeout "$limit" $ssh_cmd "$h" "$bin join @- $(quote "$dest") --force --listen 0.0.0.0:$port \
    --group $(quote "${groups[$i]}") ${SWARM_JOIN_ARGS:-}" \
    <"$ticket" >"$logs/$h.log" 2>&1 &
  pids+=($!)
done
failed=()
for i in "${!hosts[@]}"; do
  wait "${pids[$i]}"
  rc=$?
  echo "$rc" >"$logs/${hosts[$i]}.rc"
  if [ "$rc" -ne 0 ]; then
    failed+=("${hosts[$i]}")
    echo "FAILED ${hosts[$i]} (exit $rc): $(tail -n 1 "$logs/${hosts[$i]}.log")"
  else
    echo "ok     ${hosts[$i]}: $(grep -m1 -E '^join:|up to date' "$logs/${hosts[$i]}.log")"
  fi
done
# a seed still waiting for hosts that failed is stopped (SIGTERM: exit 0)
pids=()
stop
trap - EXIT INT TERM

echo "$(( ${#hosts[@]} - ${#failed[@]} )) of ${#hosts[@]} hosts have $(basename "$image") in $(( $(date +%s) - start ))s; logs in $logs"
if [ ${#failed[@]} -gt 0 ]; then
  echo "not done: ${failed[*]} (run push.sh again: done hosts are up to date, the rest resume)" >&2
  exit 1
fi

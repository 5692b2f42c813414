#!/usr/bin/env bash
# The cost of a node to the watcher host (issue 14), for shard sizing (docs/scale.md):
#  1. over real SSH, at 32 and 128 loopback-sshd node aliases (scripts/lib/sshd-fleet.sh): the
#     watcher's RSS, the PSS of every ssh ControlMaster it started, processes and open fds,
#     in total and per node, in steady state (after the connect-and-deploy cycles);
#  2. a fake fleet of FAKE_NODES (10 000) in one watcher (command transport, one resident
#     fake probe per node): steady cycle time, watcher RSS, watcher CPU per poll; capped at what
#     the hard fd limit allows (3 fds per node);
#  3. the watcher alone at FAKE_NODES over an in-process transport (examples/scale_sim.rs),
#     which no fd limit caps: cycle, RSS, CPU per poll.
# The sshd sessions and probes on the "nodes" run on this host too; they are the nodes' cost,
# not the watcher's, and are not counted. Figures are printed beside the 1 000-node baseline
# of BENCHMARKS.md (35.5 MB RSS) and the issue's estimate (ssh master 1.4 MB PSS per node).
#   SSH_SIZES="32 128" FAKE_NODES=10000 scripts/bench-watch-scale.sh   (NO_BUILD=1: use target/release as it is)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
ssh_sizes=${SSH_SIZES:-32 128}
fake_nodes=${FAKE_NODES:-10000}
for p in /usr/sbin/sshd ssh ssh-keygen jq python3; do
  command -v "$p" >/dev/null || { echo "bench-watch-scale: $p is missing" >&2; exit 69; }
done
echo "building release binaries…" >&2
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p ugro-watch -p ugro-probe --bins --example scale_sim
watch=$root/target/release/ugro-watch
probe_fixture=$root/crates/ugro-probe/fixtures/h200x8-idle.json
fake=$root/crates/ugro-watch/tests/fixtures/fake-probe.sh

work=$(mktemp -d)
# shellcheck source=scripts/lib/sshd-fleet.sh
. "$root/scripts/lib/sshd-fleet.sh"
trap 'sshd_fleet_stop; rm -rf "$work"' EXIT

kb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
rss_of() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
pss_of() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
fds_of() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Waits until the watcher has written `want` stats records with cycles (steady state).
wait_stats() {
  local out=$1 want=$2 pid=$3
  for _ in $(seq 1200); do
    [ "$(jq -c 'select(.kind == "stats" and .cycles > 0)' "$out" 2>/dev/null | wc -l)" -ge "$want" ] && return 0
    kill -0 "$pid" 2>/dev/null || { echo "watcher exited early" >&2; return 1; }
    sleep 0.5
  done
  echo "no steady state" >&2; return 1
}

# Waits (up to 300 s) until the watcher's last stats record says every node is reachable: the
# first connections of many nodes at once go through sshd's MaxStartups and the reconnect
# backoff, which is the connect phase, not the steady state measured.
wait_reachable() {
  local out=$1 pid=$2 u
  for _ in $(seq 600); do
    u=$(jq -s -r '[.[] | select(.kind == "stats" and .cycles > 0)] | last | .nodes_unreachable // "x"' "$out" 2>/dev/null)
    [ "$u" = 0 ] && return 0
    kill -0 "$pid" 2>/dev/null || { echo "watcher exited early" >&2; return 1; }
    sleep 0.5
  done
  echo "bench-watch-scale: $u nodes still unreachable after 300 s (causes below)" >&2
}

ssh_rows=()
causes=()
for n in $ssh_sizes; do
  sshd_fleet_stop
  sshd_fleet_start "$n"
  mkdir -p "$work/tmp-$n"
  {
    echo "ssh: {config_file: $work/ssh_config, connect_timeout: 20s}"
    echo "probe: {args: [--gpu-fixture, $probe_fixture]}"
    echo "intervals: {base: 2s, max: 2s, spread: 0}"
    echo "timeout: 10s"
    echo "concurrency: $n"
    echo "nodes:"
    for i in $(seq 0 $((n - 1))); do echo "  - {name: node-$i}"; done
  } > "$work/ssh-$n.yaml"
  out=$work/ssh-$n.jsonl
  # A TMPDIR of its own: the ControlMasters (detached by ssh -f) are found by their socket dir.
  TMPDIR=$work/tmp-$n "$watch" -c "$work/ssh-$n.yaml" --stats-every 2s > "$out" 2>"$work/ssh-$n.err" &
  wpid=$!
  wait_stats "$out" 2 "$wpid"
  wait_reachable "$out" "$wpid" || true
  have=$(jq -c 'select(.kind == "stats" and .cycles > 0)' "$out" | wc -l)
  wait_stats "$out" $((have + 3)) "$wpid"
  masters=$(pgrep -f -- "-S $work/tmp-$n" || true)
  nmasters=$(echo "$masters" | grep -c . || true)
  mpss=0 mfds=0
  for m in $masters; do
    mpss=$((mpss + $(pss_of "$m"))); mfds=$((mfds + $(fds_of "$m")))
  done
  wrss=$(rss_of "$wpid") wfds=$(fds_of "$wpid")
  ok=$(jq -c 'select(.kind == "sample" and (.unreachable | not))' "$out" | wc -l)
  bad=$(jq -c 'select(.kind == "sample" and .unreachable)' "$out" | wc -l)
  kill -TERM "$wpid"; wait "$wpid" || true
  causes+=("$n aliases, unreachable samples by cause (all of the run, connect phase included):")
  causes+=("$(jq -r 'select(.kind == "sample" and .unreachable) | "  \(.unreachable.cause): \(.unreachable.message | .[0:90])"' "$out" | sort | uniq -c | sort -rn | head -5)")
  total=$((wrss + mpss))
  ssh_rows+=("$(printf '%-6s %8s %9s %9s %7s %7s %9s %10s %8s' "$n" "$ok/$bad" "$(kb "$wrss")" "$(kb "$mpss")" \
    "$nmasters" "$((wfds + mfds))" "$(kb "$total")" \
    "$(awk -v t="$total" -v n="$n" 'BEGIN { printf "%.2f", t / 1024 / n }')" \
    "$(awk -v f="$((wfds + mfds))" -v n="$n" 'BEGIN { printf "%.1f", f / n }')")")
done
sshd_fleet_stop

# ---- fake fleet ----
hard=$(ulimit -Hn)
need=$((3 * fake_nodes + 256))
ran=$fake_nodes
if [ "$need" -gt "$hard" ]; then
  ran=$(( (hard - 256) / 3 ))
  echo "bench-watch-scale: $fake_nodes command-transport nodes need ~$need fds (3 per node), the hard limit is $hard: running $ran (raise LimitNOFILE / nofile to run $fake_nodes)" >&2
fi
{
  echo "intervals: {base: 10s, max: 10s, spread: 0}"
  echo "timeout: 30s"
  echo "concurrency: 1000"
  echo "nodes:"
  for i in $(seq 0 $((ran - 1))); do
    echo "  - {name: sim-$(printf %05d "$i"), transport: {command: [$fake, '{node}', '0']}}"
  done
} > "$work/fake.yaml"
out=$work/fake.jsonl
"$watch" -c "$work/fake.yaml" --stats-every 10s > "$out" 2>"$work/fake.err" &
wpid=$!
wait_stats "$out" 2 "$wpid"
t0=$(cpu_ticks "$wpid"); p0=$(jq -s '[.[] | select(.kind == "stats") | .probes] | add' "$out")
wait_stats "$out" 5 "$wpid"
t1=$(cpu_ticks "$wpid"); p1=$(jq -s '[.[] | select(.kind == "stats") | .probes] | add' "$out")
frss=$(rss_of "$wpid")
kill -TERM "$wpid"; wait "$wpid" || true
hz=$(getconf CLK_TCK)
read -r fcyc fmax < <(jq -s -r '[ .[] | select(.kind == "stats" and .cycles > 0) ] | .[2:] |
  "\((map(.cycle_ms) | add / length | floor)) \(map(.cycle_ms_max) | max)"' "$out")
cpu_us=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v p="$((p1 - p0))" 'BEGIN { printf "%.0f", (b - a) / hz * 1e6 / (p > 0 ? p : 1) }')

printf '\nover real SSH (loopback sshd aliases), steady state, watcher host only\n'
printf '%-6s %8s %9s %9s %7s %7s %9s %10s %8s\n' nodes "ok/unr" "watch MB" "ssh PSS" "procs" fds "total MB" "MB/node" "fds/node"
printf '%s\n' "${ssh_rows[@]}"
printf 'baseline (issue 14 estimate): ssh ControlMaster 1.4 MB PSS per node, 1 process per node\n'
printf '%s\n' "${causes[@]}"
printf '\nfake fleet, command transport, one watcher\n'
printf '%-44s %14s %14s\n' "" measured baseline
printf '%-44s %14s %14s\n' "nodes (asked $fake_nodes)" "$ran" "1000"
printf '%-44s %11s MB %11s MB\n' "watcher RSS" "$(kb "$frss")" "35.5"
printf '%-44s %11s ms %14s\n' "steady cycle time, mean / worst" "$fcyc / $fmax" ""
printf '%-44s %11s µs %14s\n' "watcher CPU per poll" "$cpu_us" ""
printf '%-44s %11s kB %14s\n' "watcher RSS per node" "$(awk -v k="$frss" -v n="$ran" 'BEGIN { printf "%.1f", k / n }')" "36 (35.5 MB / 1000)"
# The watcher alone at the size asked, whatever the fd limit: the real monitor over an in-process
# transport (no child, no pipes per node; crates/ugro-watch/examples/scale_sim.rs), 12 cycles of
# a 5 s base interval, every node answering after 50 ms.
printf '\n'
"$root/target/release/examples/scale_sim" "$fake_nodes" 12 5000 2>/dev/null

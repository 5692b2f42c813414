#!/usr/bin/env bash
# ugro-watch over real SSH against pdsh on the same hosts: loopback sshd instances listening on
# 32 ports (sshd takes at most 16 listen sockets, so two of them) (32 node aliases in a generated ssh_config, generated host and user keys, a temporary
# known_hosts, strict host-key checking), the release ugro-probe reading a GPU fixture.
#   pdsh:       pdsh -R ssh -f 32 -w node-[0-31] ugro-probe …   (a fresh SSH connection per node)
#   ugro-watch: persistent sessions with a resident `ugro-probe --serve` (steady-state cycles)
# Target: ugro-watch's steady cycle ≥ 20× faster than a pdsh sweep.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
n=32
for p in /usr/sbin/sshd ssh ssh-keygen pdsh jq; do
  command -v "$p" >/dev/null || { echo "bench-watch-ssh: $p is missing (Debian: openssh-server openssh-client pdsh jq)" >&2; exit 69; }
done

echo "building release binaries…" >&2
cargo build --release -q -p ugro-watch -p ugro-probe
watch=$root/target/release/ugro-watch
probe=$root/target/release/ugro-probe
fixture=$root/crates/ugro-probe/fixtures/h200x8-idle.json

work=$(mktemp -d)
# shellcheck source=scripts/lib/sshd-fleet.sh
. "$root/scripts/lib/sshd-fleet.sh"
trap 'sshd_fleet_stop; rm -rf "$work"' EXIT
sshd_fleet_start "$n"

# ---- pdsh: a fresh connection per node per sweep ----
export PDSH_SSH_ARGS="-F $work/ssh_config -x -l%u %h"
hosts="node-[0-$((n - 1))]"
pdsh_ms=()
for run in 1 2 3 4 5; do
  t0=$(date +%s%N)
  lines=$(pdsh -R ssh -f $n -w "$hosts" "$probe --gpu-fixture $fixture" 2>"$work/pdsh.err" | wc -l)
  t1=$(date +%s%N)
  [ "$lines" -eq $n ] || { echo "pdsh run $run: $lines of $n nodes answered" >&2; cat "$work/pdsh.err" >&2; exit 1; }
  pdsh_ms+=($(( (t1 - t0) / 1000000 )))
done
pdsh_mean=$(printf '%s\n' "${pdsh_ms[@]}" | awk '{s+=$1} END {printf "%d", s/NR}')
pdsh_min=$(printf '%s\n' "${pdsh_ms[@]}" | sort -n | head -1)

# ---- ugro-watch: persistent sessions, resident probes ----
{
  echo "ssh: {config_file: $work/ssh_config, connect_timeout: 10s}"
  echo "probe: {args: [--gpu-fixture, $fixture]}"
  echo "intervals: {base: 1s, max: 1s, spread: 0}"
  echo "timeout: 5s"
  echo "nodes:"
  for i in $(seq 0 $((n - 1))); do echo "  - {name: node-$i}"; done
} > "$work/cluster.yaml"
"$watch" -c "$work/cluster.yaml" --cycles 24 --stats-every 2s > "$work/watch.jsonl" 2>"$work/watch.err"
ok=$(jq -c 'select(.kind == "sample" and (.unreachable | not))' "$work/watch.jsonl" | wc -l)
bad=$(jq -c 'select(.kind == "sample" and .unreachable)' "$work/watch.jsonl" | wc -l)
# Steady state: the first two stats periods include connecting and deploying the probe.
read -r w_mean w_max w_first < <(jq -s -r '
  [ .[] | select(.kind == "stats" and .cycles > 0) ] as $s |
  ($s[2:]) as $steady |
  "\($steady | map(.cycle_ms) | add / length | floor) \($steady | map(.cycle_ms_max) | max) \($s[0].cycle_ms_max)"' \
  "$work/watch.jsonl")
causes=$(jq -r 'select(.kind == "sample" and .unreachable) | "\(.unreachable.cause): \(.unreachable.message)"' \
  "$work/watch.jsonl" | sort | uniq -c | sed 's/^ */  /')
deployed=$(ls "$work/cache/ugro" 2>/dev/null | wc -l)
speedup=$(awk -v a="$pdsh_mean" -v b="$w_mean" 'BEGIN { if (b < 1) b = 1; printf "%.0f", a / b }')
speedup_worst=$(awk -v a="$pdsh_min" -v b="$w_max" 'BEGIN { if (b < 1) b = 1; printf "%.0f", a / b }')

printf '\n%-46s %14s %14s\n' "$n nodes over loopback sshd" "pdsh -R ssh" "ugro-watch"
printf '%-46s %14s %14s\n' "answers (pdsh: 5 sweeps; watch: 24 cycles)" "$((5 * n)) / $((5 * n))" "$ok ok, $bad unreachable"
printf '%-46s %11s ms %11s ms\n' "sweep / steady cycle, mean" "$pdsh_mean" "$w_mean"
printf '%-46s %11s ms %11s ms\n' "sweep best / steady cycle worst" "$pdsh_min" "$w_max"
printf '%-46s %14s %11s ms\n' "first cycle (connect + deploy + probe)" "" "$w_first"
printf '%-46s %14s %14s\n' "probe copies deployed to the node cache" "" "$deployed"
printf '%-46s %14s %13s×\n' "speed-up, mean vs mean (target ≥ 20×)" "" "$speedup"
printf '%-46s %14s %13s×\n' "speed-up, best pdsh vs worst watch cycle" "" "$speedup_worst"
[ -z "$causes" ] || printf 'unreachable samples by cause:\n%s\n' "$causes"

#!/usr/bin/env bash
# Notifications per fault with 1, 2 and 4 watchers (issue 14; target: exactly 1 per alert group),
# side by side: 1 watcher, 2 replicas of one shard, 2 shards x 2 replicas of
# `ugro-watch --pipeline`, every watcher posting to both members of a clustered pair of real
# Alertmanagers (Debian's prometheus-alertmanager) that page one webhook recorder, which records
# every notification. The driver is tests/examples/bench_watch_ha.rs (the Alertmanager cluster
# and recorder of tests/support/alertmanager.rs, as tests/shard_replicas.rs uses them).
#
# Fleet: NODES (60) fake nodes, scripts/lib/ha-probe.sh, resident like `ugro-probe --serve`;
# each answers a real ugro-probe sample of a GPU fixture (made once at the start with
# --expect-gpus 8 --no-xid) chosen per request by a mode file, so a fault starts at a chosen
# moment for every watcher at once. Healthy: h200x8-idle. Fault kinds, and the alert groups
# (node + alertname) ugro-alert's catalog raises for each:
#   xid79     fault-xid79-gpu-lost   NodeCritical GpuXidFatal GpuLost NodeCircuitOpen
#   ecc       fault-ecc-uncorrected  NodeCritical GpuEccErrors NodeCircuitOpen
#   remap     fault-remap-failure    NodeCritical GpuRowRemapFailure NodeCircuitOpen
#   thermal   fault-thermal          NodeDegraded GpuThermal GpuXid
#   pcie      fault-pcie-x8          NodeDegraded GpuPcieDegraded
#   throttle  fault-hw-slowdown      NodeDegraded GpuThrottled
#   gpus7of8  fault-7-of-8           NodeCritical GpuLost NodeCircuitOpen
#   hang      (no answer)            NodeUnreachable NodeCircuitOpen
# Each configuration gets a fresh Alertmanager pair, recorder and watcher state, and the same
# three phases, faults 1.5 s apart on nodes healthy until then (with 2 shards, on the shards
# named in the driver's PHASES), each phase ending when all its groups paged (or 25 s after its
# last fault: the rest are missed) plus two group intervals and 2 s (a duplicate would come at a
# group flush):
#   1. all watchers up: the 8 kinds, one node each;
#   2. one replica killed (SIGKILL) 1 s after the first of 4 faults (xid79 thermal hang remap, all
#      in the killed replica's shard); with 1 watcher that is the only one;
#   3. the killed replica restarted on its state files, then Alertmanager 2 killed, 4 faults
#      (ecc pcie throttle gpus7of8), Alertmanager 2 started again on its storage, waited for
#      until it holds as many alerts as its peer, and one more flush;
#   and the whole run, every group counted at the end (late pages and re-pages show there).
# Per phase: faults injected, alert groups expected, firing notifications per group (min/max,
# groups with exactly 1), duplicates (notifications beyond the first), missed (none), unexpected
# groups (paged, no fault explains them), resolved notifications (no fault ends, so 0), and the
# first page's delay after the fault (median/max). Groups paged more than once are listed with
# each notification's time and the Alertmanager that sent it.
#
# Configuration (the driver writes it):
#   watchers   intervals base = max 1 s, spread 0.5, timeout 2 s; breaker failure_threshold 2,
#              open 1 s, no backoff; ugro-alert default rules (hard faults fire on their 3rd
#              sample, soft ones on their 4th), one `alertmanager` receiver with both URLs,
#              resend_interval 2 s, delivery timeout 2 s, cluster_min_nodes 100 (ClusterDegraded
#              off: a shard sees only its nodes); own --breaker/--alert/--score-state per watcher.
#   Alertmanager route group_by [node, alertname], group_wait 1s, group_interval 4s,
#              repeat_interval 1h, webhook with send_resolved; cluster on 127.0.0.1 with
#              gossip 100ms, push-pull 1s, peer-timeout 1s, settle-timeout 2s.
# Keep NODES >= 40: with fewer, one shard's 8-10 faulty nodes are more than half of it within
# the breaker's fleet_guard window (1 m), and the breaker then, by design, opens no breaker
# (NodeCircuitOpen missed) and emits a suspect_observer verdict (ClusterDegraded, unexpected).
# Everything binds 127.0.0.1; every process and file it starts is removed on exit (KEEP=1 keeps
# the work directory with each watcher's stderr and each Alertmanager's log). About 5 minutes.
#   NODES=60 scripts/bench-watch-ha.sh   (NO_BUILD=1: use target/release as it is)
set -euo pipefail
cd "$(dirname "$0")/.."
am=/usr/bin/prometheus-alertmanager
[ -x "$am" ] || {
  echo "bench-watch-ha: $am is missing (Debian: prometheus-alertmanager; scripts/test.sh installs it)" >&2
  exit 69
}
nodes=${NODES:-60}
if [ -z "${NO_BUILD:-}" ]; then
  echo "building release binaries…" >&2
  cargo build --release -q -p ugro-watch -p ugro-probe
  cargo build --release -q -p ugro-e2e --example bench_watch_ha
fi
driver=target/release/examples/bench_watch_ha
[ -x "$driver" ] || { echo "bench-watch-ha: $driver not built (run without NO_BUILD)" >&2; exit 69; }

work=$(mktemp -d)
pid=
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  # The driver runs in its own process group with everything it starts (watchers, their fake
  # nodes, the Alertmanagers): one signal reaches them all, and any straggler. Alertmanager
  # takes a few seconds to leave its cluster; whatever is left after 10 s is killed.
  if [ -n "$pid" ]; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "### NODES=$nodes scripts/bench-watch-ha.sh  ($(date -u +%Y-%m-%dT%H:%MZ), load: $(cut -d' ' -f1-3 /proc/loadavg))"
WORK=$work NODES=$nodes setsid "$driver" &
pid=$!
rc=0
wait "$pid" || rc=$?
exit "$rc"

#!/usr/bin/env bash
# The filters writing into a pipe (issue 15): lines/s of ugro-score, ugro-breaker and ugro-alert
# with stdout a pipe drained by `cat`, next to `cat` and `jq -c .` into the same pipe, on two
# inputs: gen_samples' 4.8 KB 8-GPU lines, and ugro-probe's own 8-GPU output (the h200x8-busy
# fixture, about 7.4 KB a line). Then the latency of one record through an idle
# `ugro-score | ugro-breaker | ugro-alert` pipe (alternately healthy and critical samples made
# by ugro-probe, so every record makes ugro-alert write), and of one `ugro-probe --serve` request.
# Each command and its reader are pinned to CPU 0 when taskset works; wall time and, with
# /usr/bin/time, the tool's own CPU time are printed (the stable figure on a shared machine).
# Each row is the median of REPS runs (default 5; jq runs once).
# ugro-score runs pinned with --threads 1 (one core) and unpinned with its default threads (every
# CPU decodes). Targets: ugro-score into a pipe >= 150 000 lines/s on the 4.8 KB lines, >= 100 000 on the
# probe's lines; the latency unchanged from the per-record flush (BASELINE_DIR=DIR with the
# release binaries of an earlier build adds their rows and latency to the same run).
#
#   scripts/bench-pipe.sh              # N=200000
#   N=50000 BASELINE_DIR=/tmp/main-release scripts/bench-pipe.sh
#   NO_BUILD=1 N=30000 scripts/bench-pipe.sh
#   GEN=/tmp/old/gen_samples N=30000 scripts/bench-pipe.sh   # another build's generator
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib/median.sh
. "$root/scripts/lib/median.sh"
N=${N:-200000}
target=${CARGO_TARGET_DIR:-$root/target}
rel=$target/release

command -v jq >/dev/null || { echo "bench-pipe: jq is required (apt-get install jq)" >&2; exit 69; }
if [ -z "${NO_BUILD:-}" ]; then # NO_BUILD=1: use the release binaries already built
    echo "building the release binaries..." >&2
    cargo build --release -q -p ugro-score -p ugro-breaker -p ugro-alert -p ugro-probe --bins \
        --example gen_samples
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pin=()
if command -v taskset >/dev/null && taskset -c 0 true 2>/dev/null; then pin=(taskset -c 0); fi
have_time=false
[ -x /usr/bin/time ] && have_time=true

# Input 1: the generator's lines. Input 2: the probe's own sample, repeated with its node and
# time changed per line (1 000 nodes, a second apart).
# GEN=PATH: another build's generator (the issue's 4.8 KB lines came from 42aaa13's).
"${GEN:-$rel/examples/gen_samples}" "$N" 2000 >"$tmp/gen.jsonl"
probe_line() { # fixture node
    "$rel/ugro-probe" --gpu-fixture "crates/ugro-probe/fixtures/$1" --no-xid --node "$2" \
        --cpu-state-file "$tmp/cpu.json"
}
probe_line h200x8-busy.json probe-node >"$tmp/one.jsonl"
jq -c --argjson n "$N" '. as $s | range($n) | . as $i
    | $s + {node: ("node-\($i % 1000)"), ts: ((1795000000 + $i) | todate | sub("Z$"; ".000Z"))}' \
    "$tmp/one.jsonl" >"$tmp/probe.jsonl"

# run LABEL INPUT CMD...: CMD <INPUT | cat >/dev/null, REPS times (default 5); one row, the run
# with the median wall time (a single 0.4 s run moves by a third on a shared VM).
run() {
    local label=$1 input=$2 t0 t1 cpu="" timer=() i rows=() ns
    shift 2
    if $have_time; then timer=(/usr/bin/time -f "%U %S" -o "$tmp/cpu"); fi
    for ((i = 0; i < ${REPS:-5}; i++)); do
        t0=$(date +%s%N)
        "${timer[@]}" "${pin[@]}" "$@" <"$input" | "${pin[@]}" cat >/dev/null
        t1=$(date +%s%N)
        $have_time && cpu=$(awk '{ print $1 + $2 }' "$tmp/cpu")
        rows+=("$((t1 - t0)) $cpu")
    done
    read -r ns cpu < <(median_row "${rows[@]}")
    awk -v l="$label" -v n="$N" -v ns="$ns" -v cpu="$cpu" 'BEGIN { s = ns / 1e9;
        printf "  %-34s %7.2f s %9.0f lines/s", l " | cat", s, n / s;
        if (cpu != "" && cpu > 0) printf "   cpu %6.2f s %9.0f lines/cpu-s", cpu, n / cpu;
        printf "\n" }'
}

# run_free: run without pinning (ugro-score decoding on every CPU, the reader where it lands).
run_free() {
    local pin=()
    run "$@"
}

# The filters' inputs: scored lines for breaker and alert.
bench_input() { # name file
    local name=$1 in=$2
    "$rel/ugro-score" <"$in" >"$tmp/$name.scored"
    echo "$name: $N lines, $(awk -v b="$(stat -c %s "$in")" -v n="$N" 'BEGIN { printf "%.0f", b / n }') bytes/line; pinned: ${pin[*]:-no}; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    run cat "$in" cat
    REPS=1 run "jq -c ." "$in" jq -c .
    for dir in "$rel" ${BASELINE_DIR:+"$BASELINE_DIR"}; do
        local tag=""
        [ "$dir" = "$rel" ] || tag=" (baseline)"
        if [ "$dir" = "$rel" ]; then
            # One core: decoding on the main thread only; then every CPU (--threads default).
            run "ugro-score --threads 1" "$in" "$dir/ugro-score" --threads 1
            run_free "ugro-score, $(nproc) CPUs, unpinned" "$in" "$dir/ugro-score"
        else
            run "ugro-score$tag" "$in" "$dir/ugro-score"
            run_free "ugro-score$tag, unpinned" "$in" "$dir/ugro-score"
        fi
        rm -f "$tmp/b.json"*
        run "ugro-breaker --pass-open$tag" "$tmp/$name.scored" "$dir/ugro-breaker" --pass-open --state "$tmp/b.json"
        rm -rf "$tmp/a.json"* "$tmp/spool"
        run "ugro-alert$tag" "$tmp/$name.scored" "$dir/ugro-alert" --state "$tmp/a.json" --spool-dir "$tmp/spool"
    done
}
bench_input generator "$tmp/gen.jsonl"
bench_input probe "$tmp/probe.jsonl"

# Latency: one record at a time into an idle pipe, the next only after the previous answer.
probe_line h200x8-busy.json lat >"$tmp/healthy.jsonl"
probe_line fault-hw-slowdown.json lat >"$tmp/critical.jsonl"
# The alert route notifies at once (group_wait 0s) and again after 1 s of record time; each
# sample is followed by a tick, as ugro-watch writes them, which runs the timers. Alerts fire on
# their first sample (`for: 0`) and flap detection is off, so every record makes ugro-alert
# write: the figure is the pipe's latency, not the default timing's (scripts/bench-alert-timing.sh).
printf '%s\n' 'route:' '  receiver: stdout' '  group_by: [node]' '  group_wait: 0s' '  group_interval: 1s' \
    "alert_rules: {'*': {for: 0, keep_firing_for: 0}}" 'flap_detection: {enabled: false}' >"$tmp/alert.yaml"
latency() { # dir
    local dir=$1 i t0 t1 line ts base
    rm -rf "$tmp/lat"; mkdir "$tmp/lat"
    coproc PIPE { "$dir/ugro-score" | "$dir/ugro-breaker" --pass-open --state "$tmp/lat/b.json" \
        | "$dir/ugro-alert" -c "$tmp/alert.yaml" --state "$tmp/lat/a.json" --spool-dir "$tmp/lat/spool"; }
    : >"$tmp/lat/us"
    base=$(( $(date +%s) - 200 ))
    for i in $(seq 1 40); do
        if [ $((i % 2)) = 1 ]; then f=critical; else f=healthy; fi
        ts=$(date -u -d "@$((base + 2 * i))" +%Y-%m-%dT%H:%M:%S.000Z)
        { jq -c --arg ts "$ts" '.ts = $ts' "$tmp/$f.jsonl"
          printf '{"v":1,"kind":"tick","ts":"%s","node":"*"}\n' "$ts"; } >"$tmp/lat/line"
        t0=$(date +%s%N)
        cat "$tmp/lat/line" >&"${PIPE[1]}"
        # A bounded wait: a record that makes no output must not hang the benchmark.
        if ! IFS= read -r -t 10 line <&"${PIPE[0]}"; then
            echo "bench-pipe: no output within 10 s for record $i (alert configuration?)" >&2
            break
        fi
        t1=$(date +%s%N)
        echo $(((t1 - t0) / 1000)) >>"$tmp/lat/us"
        # A notification may hold several alerts: the rest of it is read before the next record.
        while IFS= read -r -t 0.2 line <&"${PIPE[0]}"; do :; done
    done
    exec {PIPE[1]}>&-
    wait "$PIPE_PID" 2>/dev/null || true
    sort -n "$tmp/lat/us" | awk '{ a[NR] = $1 } END { printf "median %d us, max %d us over %d records", a[int((NR + 1) / 2)], a[NR], NR }'
}
serve_latency() { # dir
    local dir=$1 i t0 t1 line
    coproc SERVE { "$dir/ugro-probe" --serve --gpu-fixture crates/ugro-probe/fixtures/h200x8-busy.json --no-xid; }
    : >"$tmp/serve.us"
    for i in $(seq 1 20); do
        t0=$(date +%s%N); echo >&"${SERVE[1]}"; IFS= read -r line <&"${SERVE[0]}"; t1=$(date +%s%N)
        echo $(((t1 - t0) / 1000)) >>"$tmp/serve.us"
    done
    exec {SERVE[1]}>&-
    wait "$SERVE_PID" 2>/dev/null || true
    sort -n "$tmp/serve.us" | awk '{ a[NR] = $1 } END { printf "median %d us, max %d us over %d requests", a[int((NR + 1) / 2)], a[NR], NR }'
}
echo "latency of one record, idle pipe:"
# The throughput runs leave hundreds of MB of dirty pages; the breaker's and alert's state
# writes wait on their writeback (one record took 440 ms where the next run's took 10 ms).
rm -f "$tmp"/*.scored
sync
for dir in "$rel" ${BASELINE_DIR:+"$BASELINE_DIR"}; do
    tag="this build"
    [ "$dir" = "$rel" ] || tag="baseline"
    echo "  score | breaker | alert ($tag): $(latency "$dir")"
    echo "  probe --serve request ($tag):   $(serve_latency "$dir")"
done

#!/usr/bin/env bash
# Benchmark ugro-score: N realistic 8-GPU sample lines (default 200 000, over NODES=1000 nodes,
# one sample per node every 30 s) through the release binary, side by side in one run:
#   - cat (the I/O floor);
#   - ugro-score without --state (history in the process only);
#   - ugro-score --state FILE on a new file, and on a file primed with the first half of the
#     input, timed over the second half (a cron run with a full history: every node and GPU
#     already known, later samples, the file read at the start and written at the end; the
#     size of a full file is printed);
#   - ugro-score into a pipe, as in a pipeline (it flushes every record, per the contract),
#     with the pipe's reader on the same CPU;
#   - jq computing the equivalent weighted score (the jq program below; JQ=0 skips it);
#   - with BASELINE=PATH, another ugro-score binary (an earlier build) on the same input, without
#     and with --state (new file, then full) when that build has it;
#   - where valgrind is installed (IR=0 skips it), the instructions each line costs, counted by
#     callgrind over NODES+2 500 lines less those over NODES+500 (so start-up is not counted,
#     and both runs' --state files hold every node: the same save at the end), for this
#     build and the baseline: a figure that does not depend on the machine or its load (this
#     VM has no hardware counters for `perf stat -e instructions`).
# Each row is the median of REPS runs (default 3; jq runs once).
# Each tool is pinned to CPU 0 when taskset is available. Wall time and, where /usr/bin/time is
# installed, the tool's own CPU time are shown: on a shared, loaded machine the lines per
# CPU-second are the stable figure (the load average is printed with the input). The input has
# ~5.4 KB lines: the eight GPU records alone are ~4.3 KB, with the fields the history rules read
# (replay and corrected-ECC counters, remapped rows, recovery action, PCI GPU count, boot id).
#
#   scripts/bench-score.sh            # N=200000 NODES=1000
#   N=50000 JQ=0 scripts/bench-score.sh
#   N=50000 JQ=0 BASELINE=/tmp/perf-base/ugro-score scripts/bench-score.sh
#   GEN=/tmp/perf-base/gen_samples N=50000 JQ=0 BASELINE=/tmp/perf-base/ugro-score scripts/bench-score.sh
# The one-core rows run ugro-score pinned with --threads 1; the "all CPUs" rows unpinned with its
# default --threads (decoding on every CPU, scoring on one).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib/median.sh
. "$root/scripts/lib/median.sh"
N=${N:-200000}
NODES=${NODES:-1000}
JQ=${JQ:-1}
target=${CARGO_TARGET_DIR:-$root/target}

if [ "$JQ" = 1 ]; then
    command -v jq >/dev/null || { echo "bench-score: jq is required (apt-get install jq; JQ=0 skips it)" >&2; exit 69; }
fi

echo "building release ugro-score and the sample generator..." >&2
cargo build --release -q -p ugro-score --bin ugro-score --example gen_samples

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# GEN=PATH: another build's generator (the 4.8 KB lines of the issues' figures: 42aaa13's).
"${GEN:-$target/release/examples/gen_samples}" "$N" "$NODES" >"$tmp/in.jsonl"

cat >"$tmp/score.jq" <<'JQ'
# The jq baseline for scripts/bench-score.sh: the same weighted score ugro-score computes for the
# benchmark's samples (GPU temperature margin, power over limit, hardware slowdown, SW power cap
# while idle, uncorrected ECC, row remap pending/failure, PCIe below max while busy, XIDs as
# fatal/application; worst-weighted GPU combination; disk, memory and load; links, IB ports and
# peers; zombies and D state), added to the record as `score`.
def clamp: if . < 0 then 0 elif . > 100 then 100 else . end;
def gpu_score:
  . as $g
  | ($g.utilization_pct // 0) as $u
  | (87 - ($g.temperature_c // 0)) as $m
  | ([ (if $m < 10 then ((10 - $m) / 10 * 40 | if . > 40 then 40 else . end) else 0 end),
       (if ($g.power_w // 0) > (($g.power_limit_w // 1e9) * 1.05) then 10 else 0 end),
       (if any(($g.throttle_reasons // [])[]; . == "hw_slowdown" or . == "hw_thermal_slowdown" or . == "hw_power_brake_slowdown") then 40 else 0 end),
       (if any(($g.throttle_reasons // [])[]; . == "sw_power_cap") and $u < 50 then 5 else 0 end),
       (if ($g.remapped_rows.pending // false) then 70 else 0 end),
       (if $u >= 50 and ($g.pcie.gen // 0) < ($g.pcie.max_gen // 0) then 35 else 0 end),
       (if $u >= 50 and ($g.pcie.width // 0) < ($g.pcie.max_width // 0) then 35 else 0 end),
       ([($g.xids // [])[] | if .code == 13 or .code == 31 or .code == 43 or .code == 45 then 5 else 100 end] | add // 0)
     ] | add) as $ded
  | (($g.ecc.uncorrected_volatile // 0) > 0 or ($g.remapped_rows.failure // false) or $g.state == "lost"
     or any(($g.xids // [])[]; .code != 13 and .code != 31 and .code != 43 and .code != 45)) as $fatal
  | { index: $g.index, score: (if $fatal then 0 else (100 - $ded | clamp) end), fatal: $fatal };
def system_score:
  100 - ([ (.disks // [])[] | (.used_bytes / ((.used_bytes + .available_bytes) | if . == 0 then 1 else . end) * 100)
           | if . >= 97 then 40 elif . >= 90 then 15 else 0 end ] | add // 0)
      - (if .memory_total_bytes and (.memory_available_bytes / .memory_total_bytes * 100) < 10 then 15 else 0 end)
      - (if .load and .cpus and (.load[1] / .cpus) > 2 then 15 else 0 end)
  | clamp;
def network_score:
  100 - ([ (.interfaces // [])[] | select(.carrier == false) | 25 ] | add // 0)
      - ([ (.infiniband // [])[] | select((.state | test("ACTIVE") | not) or (.phys_state | test("LinkUp") | not)) | 30 ] | add // 0)
      - ([ (.peers // [])[] | if .reachable | not then 30 elif (.latency_ms // 0) > 10 then 5 else 0 end ] | add // 0)
  | clamp;
def process_score:
  100 - (if (.zombies // 0) >= 20 then 5 else 0 end) - (if (.d_state // 0) >= 5 then 15 else 0 end)
      - ([ (.training // [])[] | if .state == "D" then 10 elif .state == "Z" then 30 else 0 end ] | add // 0)
  | clamp;
if .kind != "sample" then . else
  ([.gpu.devices[] | gpu_score]) as $gpus
  | ($gpus | map(.score)) as $s
  | (($s | min) * 0.8 + ($s | add / length) * 0.2) as $gpu
  | (.host | system_score) as $sys
  | (.network | network_score) as $net
  | (.processes | process_score) as $proc
  | (0.4 * $gpu + 0.3 * $sys + 0.2 * $net + 0.1 * $proc) as $total
  | ([$gpu, $sys, $net, $proc] | min) as $worst
  | . + {score: {
      total: ($total * 10 | round / 10),
      state: (if any($gpus[]; .fatal) or $total < 40 then "critical"
              elif $total < 70 or $worst < 40 or any($s[]; . < 70) then "degraded" else "healthy" end),
      components: {gpu: $gpu, system: $sys, network: $net, process: $proc},
      gpus: [$gpus[] | {index, score}]
    }}
end
JQ

bytes=$(stat -c %s "$tmp/in.jsonl")

pin=()
if command -v taskset >/dev/null && taskset -c 0 true 2>/dev/null; then
    pin=(taskset -c 0)
fi

# run NAME SINK CMD...: times CMD <input >SINK ("null" is /dev/null, "pipe" is | wc -l, which also
# checks the line count) and prints one row: wall time, the tool's CPU time (user+sys, from
# /usr/bin/time when installed), lines/s by wall time and by CPU time, MB/s.
declare -A rate cpurate
have_time=false
[ -x /usr/bin/time ] && have_time=true
# RUN_IN / RUN_N: another input and its line count (the `--state full` rows); RUN_SETUP: a
# command run before each run (a new or primed state file). Each row is the run with the median
# wall time of REPS (default 3): one run of half a second moves by a tenth on a shared VM.
run() {
    local name=$1 sink=$2 in=${RUN_IN:-$tmp/in.jsonl} N=${RUN_N:-$N} bytes i rows=() ns
    bytes=$(stat -c %s "$in")
    shift 2
    local t0 t1 cpu="" timer=()
    if $have_time; then timer=(/usr/bin/time -f "%U %S" -o "$tmp/cpu"); fi
    for ((i = 0; i < ${REPS:-3}; i++)); do
        if [ -n "${RUN_SETUP:-}" ]; then $RUN_SETUP; fi
        t0=$(date +%s%N)
        if [ "$sink" = pipe ]; then
            local out
            # The reader shares the tool's CPU: in a VM, waking a reader on another CPU for every
            # record costs an inter-processor interrupt each and doubles the writer's time.
            out=$("${timer[@]}" "${pin[@]}" "$@" <"$in" | "${pin[@]}" wc -l)
            if [ "$out" -ne "$N" ]; then
                echo "bench-score: $name wrote $out lines, expected $N" >&2
                exit 70
            fi
        else
            "${timer[@]}" "${pin[@]}" "$@" <"$in" >/dev/null
        fi
        t1=$(date +%s%N)
        $have_time && cpu=$(awk '{ print $1 + $2 }' "$tmp/cpu")
        rows+=("$((t1 - t0)) $cpu")
    done
    read -r ns cpu < <(median_row "${rows[@]}")
    if $have_time; then
        cpurate[$name $sink]=$(awk -v n="$N" -v c="$cpu" 'BEGIN { if (c > 0) printf "%.0f", n / c; else print 0 }')
    fi
    rate[$name $sink]=$(awk -v n="$N" -v ns="$ns" 'BEGIN { printf "%.0f", n / (ns / 1e9) }')
    awk -v name="$name" -v sink="$sink" -v n="$N" -v ns="$ns" -v b="$bytes" -v cpu="$cpu" \
        'BEGIN { s = ns / 1e9;
                 printf "%-22s %8.2f s %10.0f lines/s %8.1f MB/s", name " > " sink, s, n / s, b / s / 1e6;
                 if (cpu != "" && cpu > 0) printf "   cpu %6.2f s %10.0f lines/cpu-s", cpu, n / cpu;
                 printf "\n" }'
}

echo "input: $N lines over $NODES nodes, 8 GPUs each, $(awk -v b="$bytes" -v n="$N" 'BEGIN { printf "%.0f", b / n }') bytes/line on average, $((bytes / 1000000)) MB; pinned: ${pin[*]:-no}; load: $(cut -d' ' -f1-3 /proc/loadavg)"
# A cron run with a full history: the file primed (untimed) with the first half of the input,
# so every node and GPU is known, then the second half (later samples) timed.
half=$((N / 2))
head -n "$half" "$tmp/in.jsonl" >"$tmp/first.jsonl"
tail -n "$((N - half))" "$tmp/in.jsonl" >"$tmp/second.jsonl"
state_full() { # name binary args...
    rm -f "$tmp/primed.json"*
    "${pin[@]}" "$2" --state "$tmp/primed.json" <"$tmp/first.jsonl" >/dev/null
    RUN_SETUP=prime_full RUN_IN=$tmp/second.jsonl RUN_N=$((N - half)) \
        run "$1" null "$2" --state "$tmp/full-state.json" "${@:3}"
}
prime_full() {
    rm -f "$tmp/full-state.json"*
    cp -p "$tmp/primed.json" "$tmp/full-state.json"
}
new_state() { rm -f "$tmp/score-state.json"* "$tmp/base-state.json"*; }
run cat null cat
if [ -n "${BASELINE:-}" ]; then
    run baseline null "$BASELINE"
    # A build from before --state (main before issue 16) has the stateless row only.
    if "$BASELINE" --help | grep -q -- '--state'; then
        RUN_SETUP=new_state run "baseline --state new" null "$BASELINE" --state "$tmp/base-state.json"
        state_full "baseline --state full" "$BASELINE"
    fi
fi
# One core: pinned, and decoding on the main thread only (--threads 1).
run ugro-score null "$target/release/ugro-score" --threads 1
RUN_SETUP=new_state run "--state new" null "$target/release/ugro-score" --threads 1 --state "$tmp/score-state.json"
state_bytes=$(stat -c %s "$tmp/score-state.json")
state_full "--state full" "$target/release/ugro-score" --threads 1
# Into a pipe: output is flushed when the input has nothing more waiting, not per record.
run ugro-score pipe "$target/release/ugro-score" --threads 1
# Every CPU: unpinned, --threads at its default (the CPUs available, at most 8).
run_free() {
    local pin=()
    run "$@"
}
RUN_SETUP=new_state run_free "all CPUs --state new" null "$target/release/ugro-score" --state "$tmp/score-state.json"
run_free "all CPUs" pipe "$target/release/ugro-score"
echo "state file after a run: $state_bytes bytes for $NODES nodes ($((state_bytes / NODES)) bytes per 8-GPU node)"
echo "target >= 100000 lines/s on one core, with --state (per CPU-second where the machine is shared):"
keys=("ugro-score null" "--state new null" "--state full null")
[ -n "${BASELINE:-}" ] && keys=("baseline null" "baseline --state new null" "baseline --state full null" "${keys[@]}")
for k in "${keys[@]}"; do
    [ -n "${rate[$k]:-}" ] || continue
    printf '  %-22s %10s lines/s %10s lines/cpu-s\n' "$k" "${rate[$k]}" "${cpurate[$k]:-?}"
done
if [ -n "${BASELINE:-}" ] && [ -n "${cpurate[baseline null]:-}" ]; then
    for k in "--state new null" "--state full null"; do
        awk -v k="$k" -v a="${cpurate[$k]:-0}" -v b="${cpurate[baseline null]}" \
            'BEGIN { if (b > 0) printf "  %-22s %10.2fx the baseline without --state, per CPU-second\n", k, a / b }'
    done
fi
# Instructions per line: callgrind's count over NODES+2 500 lines less its count over NODES+500,
# / 2 000: both runs have seen every node, so a --state run saves the same file in both.
ir_lines() { # binary lines args...
    local bin=$1 lines=$2
    shift 2
    head -n "$lines" "$tmp/in.jsonl" >"$tmp/ir.jsonl"
    rm -f "$tmp/ir-state.json"
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$@" <"$tmp/ir.jsonl" 2>&1 >/dev/null |
        awk '/Collected/ { print $NF }'
}
ir_per_line() { # binary args...
    local a b
    a=$(ir_lines "$1" $((NODES + 500)) "${@:2}")
    b=$(ir_lines "$1" $((NODES + 2500)) "${@:2}")
    awk -v a="$a" -v b="$b" 'BEGIN { printf "%.0f", (b - a) / 2000 }'
}
if [ "${IR:-1}" = 1 ] && command -v valgrind >/dev/null; then
    echo "instructions per line (callgrind, lines $((NODES + 501))-$((NODES + 2500)) of the input):"
    ir_new=$(ir_per_line "$target/release/ugro-score" --threads 1)
    ir_new_state=$(ir_per_line "$target/release/ugro-score" --threads 1 --state "$tmp/ir-state.json")
    printf '  %-22s %10s per line   --state new file %10s per line\n' ugro-score "$ir_new" "$ir_new_state"
    if [ -n "${BASELINE:-}" ]; then
        ir_base=$(ir_per_line "$BASELINE")
        printf '  %-22s %10s per line' baseline "$ir_base"
        if "$BASELINE" --help | grep -q -- '--state'; then
            printf '   --state new file %10s per line' "$(ir_per_line "$BASELINE" --state "$tmp/ir-state.json")"
        fi
        awk -v b="$ir_base" -v n="$ir_new" 'BEGIN { if (n > 0) printf "\n  baseline / this build: %.2fx fewer instructions per line\n", b / n }'
    fi
fi
ratio() { # label u j
    awk -v l="$1" -v u="$2" -v j="$3" 'BEGIN { if (j > 0) printf "  %-34s %6.1fx\n", l, u / j }'
}
if [ "$JQ" = 1 ]; then
    REPS=1 run jq null jq -c -f "$tmp/score.jq"
    echo "ugro-score / jq (target >= 25x):"
    ratio "wall time, both to /dev/null" "${rate[ugro-score null]}" "${rate[jq null]}"
    ratio "wall time, ugro-score into a pipe" "${rate[ugro-score pipe]}" "${rate[jq null]}"
    if $have_time; then
        ratio "CPU time, both to /dev/null" "${cpurate[ugro-score null]}" "${cpurate[jq null]}"
        ratio "CPU time, ugro-score into a pipe" "${cpurate[ugro-score pipe]}" "${cpurate[jq null]}"
    fi
else
    echo "jq skipped (JQ=0)"
    exit 0
fi

# The two must agree on the verdicts they are being compared on.
head -n 10000 "$tmp/in.jsonl" >"$tmp/head.jsonl"
"$target/release/ugro-score" "$tmp/head.jsonl" | jq -r .score.state | sort | uniq -c >"$tmp/states.score"
jq -c -f "$tmp/score.jq" "$tmp/head.jsonl" | jq -r .score.state | sort | uniq -c >"$tmp/states.jq"
echo "states over the first $(wc -l <"$tmp/head.jsonl") lines (ugro-score | jq):"
paste "$tmp/states.score" "$tmp/states.jq"
if ! cmp -s "$tmp/states.score" "$tmp/states.jq"; then
    echo "bench-score: ugro-score and the jq baseline disagree on states" >&2
    exit 70
fi

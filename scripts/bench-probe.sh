#!/usr/bin/env bash
# ugro-probe figures, side by side with a Python psutil probe collecting the same host fields.
#
#  1. one-shot wall time (median, hyperfine): ugro-probe as shipped (NVML attempt, /dev/kmsg,
#     host, disks, network, processes) and host-only, vs scripts/psutil_probe.py with psutil's
#     usual 0.1 s CPU window and without CPU measurement. Target: <= 10 ms median.
#  2. --serve cost per sample: host part, and per GPU from the 8-GPU H200 fixture (conversion
#     and output only: the NVML calls themselves cost about 0.17 ms idle / 0.35 ms busy per GPU
#     on the H200, per ../shared/fixtures/nvml-h200/README.md).
#
# Needs: cargo, hyperfine, /usr/bin/python3 with psutil (Debian python3-psutil). ~1 min.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${RUNS:-60}
serve_n=${SERVE_N:-2000}
py=/usr/bin/python3
command -v hyperfine >/dev/null || { echo "bench-probe: hyperfine is required" >&2; exit 69; }
$py -c 'import psutil' 2>/dev/null || { echo "bench-probe: $py with psutil is required (apt-get install python3-psutil)" >&2; exit 69; }

cargo build --release -q -p ugro-probe
probe=target/release/ugro-probe
fixtures=crates/ugro-probe/fixtures
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
state=(--cpu-state-file "$work/cpu.json")

# Warm the CPU state file so one-shot runs use the previous reading, as in cron use.
$probe "${state[@]}" >/dev/null
sleep 1.1
$probe "${state[@]}" >/dev/null

echo "== one-shot wall time ($runs runs each, $(nproc) CPUs, $(uname -r))"
hyperfine -N --warmup 5 --runs "$runs" --style none --export-json "$work/h.json" \
    -n "ugro-probe (all collectors)" "$probe ${state[*]}" \
    -n "ugro-probe --no-gpu --no-xid (host part)" "$probe ${state[*]} --no-gpu --no-xid" \
    -n "psutil_probe.py (cpu window 0.1 s)" "$py scripts/psutil_probe.py" \
    -n "psutil_probe.py --cpu-window 0" "$py scripts/psutil_probe.py --cpu-window 0" \
    >/dev/null 2>"$work/hyperfine.err"
jq -r '.results[] | [.command, (.median*1000), (.mean*1000), (.min*1000), (.max*1000)] | @tsv' "$work/h.json" |
    awk -F'\t' 'BEGIN {printf "  %-42s %9s %9s %9s %9s\n", "command", "median", "mean", "min", "max"}
                {printf "  %-42s %7.2fms %7.2fms %7.2fms %7.2fms\n", $1, $2, $3, $4, $5}'
med=$(jq '.results[0].median*1000' "$work/h.json")
awk -v m="$med" 'BEGIN {printf "  target <= 10 ms median: %s (%.2f ms)\n", (m <= 10 ? "MET" : "NOT MET"), m}'

echo
echo "== --serve cost per sample ($serve_n samples, after the first)"
serve_ms() { # args…  → ms per sample, excluding process start (1 sample vs N samples)
    local t1 tn
    t1=$( { /usr/bin/time -f %e sh -c "printf '\n' | $probe ${state[*]} --serve $* >/dev/null"; } 2>&1)
    tn=$( { /usr/bin/time -f %e sh -c "yes '' | head -n $serve_n | $probe ${state[*]} --serve $* >/dev/null"; } 2>&1)
    awk -v a="$t1" -v b="$tn" -v n="$serve_n" 'BEGIN {printf "%.3f", (b - a) * 1000 / (n - 1)}'
}
# 64 GPUs (the 8-GPU busy reading repeated) so the per-GPU cost stands out of the noise.
jq '.devices = [range(0; 8) as $k | .devices[] | .index += 8 * $k] | .device_count.ok = 64' \
    $fixtures/h200x8-busy.json >"$work/x64.json"
host=$(serve_ms --no-gpu --no-xid)
g0=$(serve_ms --no-xid --gpu-fixture $fixtures/nvml-driver-not-loaded.json)
g8=$(serve_ms --no-xid --gpu-fixture $fixtures/h200x8-busy.json)
g64=$(serve_ms --no-xid --gpu-fixture "$work/x64.json")
all=$(serve_ms --gpu-fixture $fixtures/h200x8-busy.json)
printf '  %-52s %8s ms\n' "host part (--no-gpu --no-xid)" "$host"
printf '  %-52s %8s ms\n' "host + GPU collector, 0 GPUs (--no-xid)" "$g0"
printf '  %-52s %8s ms\n' "host + 8 fixture GPUs (--no-xid)" "$g8"
printf '  %-52s %8s ms\n' "host + 64 fixture GPUs (--no-xid)" "$g64"
awk -v a="$g0" -v b="$g64" 'BEGIN {printf "  %-52s %8.3f ms\n", "per GPU ((64 GPUs - 0 GPUs) / 64; conversion + JSON)", (b - a) / 64}'
printf '  %-52s %8s ms\n' "host + 8 GPUs + /dev/kmsg XIDs (resident handle)" "$all"
echo "  (NVML per GPU on the H200, from the survey: ~0.17 ms idle, ~0.35 ms busy)"

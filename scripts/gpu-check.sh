#!/usr/bin/env bash
# Checks ugro-probe against real NVIDIA GPUs: every field the H200 readings
# (../shared/fixtures/nvml-h200) show as supported must be present and plausible on every GPU.
# Prints PASS/FAIL per field and GPU, then one-shot timings next to nvidia-smi.
#
#   scripts/gpu-check.sh [--expect-gpus N]
#
# Exit: 0 all PASS, 1 some FAIL, 69 no NVIDIA GPU/driver on this machine.
# Env: UGRO_PROBE=path to an already built probe (default: builds target/release/ugro-probe).
#      UGRO_GPU_CHECK_FIXTURE=FILE checks the script itself on a GPU fixture (no GPU needed).
set -euo pipefail
cd "$(dirname "$0")/.."

expect=()
if [[ "${1:-}" == "--expect-gpus" && -n "${2:-}" ]]; then
    expect=(--expect-gpus "$2")
fi

fixture=("${UGRO_GPU_CHECK_FIXTURE:+--gpu-fixture}" "${UGRO_GPU_CHECK_FIXTURE:-}")
[[ -n "${UGRO_GPU_CHECK_FIXTURE:-}" ]] || fixture=()
have_driver=0
[[ ${#fixture[@]} -gt 0 ]] && have_driver=1
if [[ -e /dev/nvidiactl ]] || ls /dev/nvidia[0-9]* >/dev/null 2>&1; then have_driver=1; fi
if ldconfig -p 2>/dev/null | grep -q 'libnvidia-ml\.so'; then have_driver=1; fi
if [[ $have_driver -eq 0 ]]; then
    echo "gpu-check: no NVIDIA GPU or driver on this machine (no /dev/nvidia*, no libnvidia-ml); nothing to check" >&2
    exit 69
fi
command -v jq >/dev/null || { echo "gpu-check: jq is required (apt-get install jq)" >&2; exit 69; }

probe="${UGRO_PROBE:-}"
if [[ -z "$probe" ]]; then
    cargo build --release -q -p ugro-probe
    probe=target/release/ugro-probe
fi

state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
sample=$("$probe" --cpu-state-file "$state/cpu.json" "${expect[@]}" "${fixture[@]}")

status=$(jq -r '.gpu.status' <<<"$sample")
if [[ "$status" == "absent" ]]; then
    echo "gpu-check: NVML not loadable here: $(jq -r '.gpu.reason' <<<"$sample")" >&2
    exit 69
fi

fails=0
check() { # name jq-filter-returning-bool
    local name=$1 filter=$2 val
    if jq -e "$filter" <<<"$sample" >/dev/null 2>&1; then
        printf 'PASS  %s\n' "$name"
    else
        val=$(jq -c "${3:-null}" <<<"$sample" 2>/dev/null || echo '?')
        printf 'FAIL  %s  (got %s)\n' "$name" "$val"
        fails=$((fails + 1))
    fi
}

check "gpu.status ok" '.gpu.status == "ok"' '[.gpu.status, .gpu.reason]'
check "gpu.driver_version" '.gpu.driver_version | type == "string" and length > 0' '.gpu.driver_version'
check "gpu.cuda_version" '.gpu.cuda_version | test("^[0-9]+\\.[0-9]+$")' '.gpu.cuda_version'
check "gpu.found = devices" '.gpu.found == (.gpu.devices | length) and .gpu.found > 0' '[.gpu.found, (.gpu.devices|length)]'
check "no collector errors" '(.errors // []) | length == 0' '.errors'

n=$(jq '.gpu.devices | length' <<<"$sample")
for ((i = 0; i < n; i++)); do
    d=".gpu.devices[$i]"
    g() { check "gpu$i.$1" "$d | $2" "$d | ${3:-.$1}"; }
    g state '.state == "ok"'
    g uuid '.uuid | test("^GPU-[0-9a-f-]{36}$")'
    g name '.name | type == "string" and length > 0'
    g pci_bus_id '.pci_bus_id | test("^[0-9A-Fa-f]{8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\\.[0-7]$")'
    g utilization_pct '.utilization_pct | type == "number" and . >= 0 and . <= 100'
    g memory_utilization_pct '.memory_utilization_pct | type == "number" and . >= 0 and . <= 100'
    g memory_total_bytes '.memory_total_bytes > 1000000000'
    g memory_used_bytes '.memory_used_bytes >= 0 and .memory_used_bytes <= .memory_total_bytes' '[.memory_used_bytes, .memory_total_bytes]'
    g temperature_c '.temperature_c >= 5 and .temperature_c <= 110'
    g power_w '.power_w > 5 and .power_w < 2000'
    g power_limit_w '.power_limit_w >= 50 and .power_limit_w < 2000'
    g power_within_limit '.power_w <= .power_limit_w * 1.25' '[.power_w, .power_limit_w]'
    g throttle_reasons '.throttle_reasons | type == "array" and all(.[]; test("^[a-z_]+$") and (startswith("unknown_") | not))'
    g ecc.enabled '.ecc.enabled | type == "boolean"'
    g ecc.corrected_volatile '.ecc.corrected_volatile >= 0'
    g ecc.uncorrected_volatile '.ecc.uncorrected_volatile >= 0'
    g ecc.uncorrected_aggregate '.ecc.uncorrected_aggregate >= 0'
    g remapped_rows.correctable '.remapped_rows.correctable >= 0'
    g remapped_rows.uncorrectable '.remapped_rows.uncorrectable >= 0'
    g remapped_rows.pending '.remapped_rows.pending | type == "boolean"'
    g remapped_rows.failure '.remapped_rows.failure | type == "boolean"'
    g pcie.gen '.pcie.gen >= 1 and .pcie.gen <= .pcie.max_gen' '.pcie'
    g pcie.max_gen '.pcie.max_gen >= 1 and .pcie.max_gen <= 7' '.pcie'
    g pcie.width '.pcie.width as $w | [1,2,4,8,16,32] | any(. == $w)' '.pcie'
    g pcie.max_width '.pcie.max_width >= .pcie.width' '.pcie'
    g pcie.replay_counter '.pcie.replay_counter >= 0' '.pcie'
    g persistence_mode '.persistence_mode | type == "boolean"'
    g processes '.processes | type == "array" and all(.[]; .pid > 0)'
    g "absent has none of the above" '(.absent // {}) | keys | map(select(test("^(uuid|name|pci_bus_id|utilization_pct|memory_|temperature_c$|power_|throttle|ecc\\.(enabled|corrected_volatile|uncorrected_)|remapped_rows|pcie|persistence|processes)"))) | length == 0' '.absent'
done

echo
echo "timings (median of 10 whole-process runs):"
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
time_cmd() {
    for _ in $(seq 10); do
        s=$(date +%s%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s%N)
        echo $(((e - s) / 1000))
    done | median
}
ours=$(time_cmd "$probe" --cpu-state-file "$state/cpu.json" --no-xid "${fixture[@]}")
printf '  ugro-probe one-shot          %8.1f ms   (target <= 19 ms)\n' "$(echo "$ours/1000" | bc -l)"
if [[ ${#fixture[@]} -eq 0 ]] && command -v nvidia-smi >/dev/null; then
    smi=$(time_cmd nvidia-smi --query-gpu=utilization.gpu,utilization.memory,memory.used,temperature.gpu,power.draw,clocks_throttle_reasons.active,ecc.errors.uncorrected.volatile.total,pcie.link.width.current --format=csv,noheader)
    printf '  nvidia-smi --query-gpu (8)   %8.1f ms   (31.5 ms on the H200 in anchors.json)\n' "$(echo "$smi/1000" | bc -l)"
fi

echo
if [[ $fails -gt 0 ]]; then
    echo "gpu-check: $fails FAIL"
    exit 1
fi
echo "gpu-check: all PASS on $n GPU(s)"

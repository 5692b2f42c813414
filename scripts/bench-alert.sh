#!/usr/bin/env bash
# ugro-alert throughput: 200 000 scored sample lines over 1 000 nodes through rules, grouping,
# dedup and the stdout receiver, on one core (taskset -c 0), next to `cat` on the same input.
# Target: >= 100 000 lines/s.
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${LINES:-200000}
NODES=${NODES:-1000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release -p ugro-alert >&2
bin=target/release/ugro-alert

# Scored samples as ugro-score writes them (header, a GPU section of 8 devices, score). Most
# nodes are healthy; 5% degraded, 1% critical with a fatal XID, and 2% flap every 20 rounds,
# so alerts fire, repeat, resolve and re-fire.
awk -v lines="$LINES" -v nodes="$NODES" 'BEGIN {
  rounds = int(lines / nodes);
  dev = "";
  for (g = 0; g < 8; g++) {
    dev = dev (g ? "," : "") sprintf("{\"index\":%d,\"state\":\"ok\",\"uuid\":\"GPU-%08d-aaaa\",\"utilization_pct\":97,\"memory_used_bytes\":81604378624,\"temperature_c\":61,\"power_w\":612.5,\"throttle_reasons\":[],\"ecc\":{\"enabled\":true,\"uncorrected_volatile\":0}}", g, g);
  }
  for (r = 0; r < rounds; r++) {
    s = 1795000000 + r * 10;
    ts = strftime("%Y-%m-%dT%H:%M:%S", s, 1) ".000Z";
    for (n = 0; n < nodes; n++) {
      m = n % 100;
      state = "healthy"; total = 96; reasons = "";
      if (m < 5) { state = "degraded"; total = 62;
        reasons = "{\"code\":\"gpu_temperature_high\",\"component\":\"gpu\",\"gpu\":2,\"value\":88,\"threshold\":85,\"deduction\":30,\"action\":\"none\",\"message\":\"GPU 2 at 88 C\"}" }
      else if (m == 5) { state = "critical"; total = 20;
        reasons = "{\"code\":\"xid_fatal\",\"component\":\"gpu\",\"gpu\":3,\"value\":79,\"deduction\":100,\"fatal\":true,\"action\":\"reset_gpu\",\"message\":\"XID 79: GPU has fallen off the bus\"}" }
      else if ((m == 6 || m == 7) && int(r / 20) % 2 == 1) { state = "degraded"; total = 65;
        reasons = "{\"code\":\"pcie_link_degraded\",\"component\":\"gpu\",\"gpu\":1,\"deduction\":20,\"action\":\"reboot\",\"message\":\"PCIe x8 of x16\"}" }
      printf "{\"v\":1,\"kind\":\"sample\",\"ts\":\"%s\",\"node\":\"gpu-%04d\",\"gpu\":{\"status\":\"ok\",\"driver_version\":\"570.86\",\"source\":\"nvml\",\"devices\":[%s]},\"score\":{\"total\":%d,\"state\":\"%s\",\"action\":\"none\",\"components\":{\"gpu\":%d,\"system\":100,\"network\":100,\"process\":100},\"reasons\":[%s],\"summary\":\"%s\"}}\n", ts, n, dev, total, state, total, reasons, state;
    }
  }
}' > "$work/in.jsonl"

n=$(wc -l < "$work/in.jsonl")
bytes=$(wc -c < "$work/in.jsonl")
now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { t = b - a; printf "%8.3f s  %10.0f lines/s", t, n / t }'; }

cat "$work/in.jsonl" > /dev/null   # warm the page cache for both
t0=$(now); taskset -c 0 cat "$work/in.jsonl" | taskset -c 0 wc -l > /dev/null; t1=$(now)
t2=$(now); taskset -c 0 "$bin" --state "$work/state.json" < "$work/in.jsonl" > "$work/alerts.jsonl"; t3=$(now)
alerts=$(wc -l < "$work/alerts.jsonl")
firing=$(grep -c '"status":"firing"' "$work/alerts.jsonl" || true)
resolved=$(grep -c '"status":"resolved"' "$work/alerts.jsonl" || true)

echo "input: $n lines, $((bytes / 1024 / 1024)) MiB, $NODES nodes; one core (taskset -c 0)"
printf '%-12s %s\n' "cat | wc -l" "$(rate "$n" "$t0" "$t1")"
printf '%-12s %s   (%d alert records: %d firing, %d resolved)\n' "ugro-alert" "$(rate "$n" "$t2" "$t3")" "$alerts" "$firing" "$resolved"
echo "target: >= 100000 lines/s for ugro-alert"

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

# A cron run against a webhook that accepts connections and never answers: 10 groups (one per
# node), default delivery settings (10 s per attempt, 20 s budget), next to the same run with the
# stdout receiver. Before delivery had its own workers and a budget this took 155 s.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
held = []
while True:
    c, _ = s.accept(); held.append(c)
' "$port" &
hung=$!
trap 'kill $hung 2>/dev/null || true; rm -rf "$work"' EXIT
head -n 10 "$work/in.jsonl" | sed 's/"state":"healthy"/"state":"critical"/' > "$work/cron.jsonl"
printf 'global: {cluster_min_nodes: 1000}\nroute:\n  receiver: hook\n  group_by: [node]\nreceivers:\n  - name: hook\n    webhook: {url: "http://127.0.0.1:%s/hook"}\n' "$port" > "$work/hung.yaml"
printf 'global: {cluster_min_nodes: 1000}\nroute:\n  receiver: stdout\n  group_by: [node]\n' > "$work/stdout.yaml"
t4=$(now); "$bin" -c "$work/stdout.yaml" --state "$work/c1.json" < "$work/cron.jsonl" > /dev/null; t5=$(now)
t6=$(now); "$bin" -c "$work/hung.yaml" --state "$work/c2.json" < "$work/cron.jsonl" > /dev/null 2>&1; t7=$(now)
left=$(ls "$work/c2.json.spool" | grep -c '\.json$' || true)
echo
echo "cron run, 10 groups, webhook that never answers (default timeout 10s, budget 20s):"
awk -v a="$t4" -v b="$t5" 'BEGIN { printf "%-22s %8.3f s\n", "stdout receiver", b - a }'
awk -v a="$t6" -v b="$t7" -v l="$left" 'BEGIN { printf "%-22s %8.3f s   (%d notifications left in the spool)\n", "hung webhook", b - a, l }'
echo "target: hung webhook <= budget (20 s) + one timeout; was 155 s"

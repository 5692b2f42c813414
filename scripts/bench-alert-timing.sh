#!/usr/bin/env bash
# Alert timing over a labelled trace: 64 nodes x 720 polls (30 s apart, 6 hours) with real
# faults (fatal XID, unreachable outages, a lost GPU, long thermal degradation), one-sample
# blips, two-sample bursts and flapping nodes, through ugro-breaker | ugro-alert with the
# default configuration, once as one stream and once as one cron run per poll (state files
# between runs). Prints, side by side with raw per-sample thresholds and with the figures the
# issue measured before this work (issue 10): time to page and to resolve (in polls), share of
# real faults paged, false alerts, and whether cron and stream wrote the same bytes.
#
# The figures are counts of polls, not speeds: PROFILE=dev (the debug build) gives the same
# numbers as the default release build, sooner. SEED changes the trace.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
SEED=${SEED:-10}
export SEED
NODES=${NODES:-64}
POLLS=${POLLS:-720}

cargo build -q --profile "$PROFILE" -p ugro-alert -p ugro-breaker
dir=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
ALERT=$dir/ugro-alert
BREAKER=$dir/ugro-breaker

work=$(mktemp -d)
[ -n "${KEEP:-}" ] && echo "work dir: $work" >&2 || trap 'rm -rf "$work"' EXIT
mkdir -p "$work/polls" "$work/stream" "$work/cron"

# The trace: one file per poll, the whole stream, and the labels (real faults: node, first bad
# poll, first healthy poll).
python3 - "$work" "$SEED" "$NODES" "$POLLS" <<'EOF'
import json, random, sys, datetime
work, seed, nodes, polls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
t0 = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
XID = {"code": "xid_fatal", "component": "gpu", "gpu": 3, "value": 79, "deduction": 100,
       "fatal": True, "action": "reset_gpu", "message": "XID 79: GPU has fallen off the bus"}
LOST = {"code": "gpu_lost", "component": "gpu", "gpu": 5, "deduction": 100, "fatal": True,
        "action": "reset_gpu", "message": "GPU 5 lost"}
HOT = {"code": "gpu_temperature_high", "component": "gpu", "gpu": 2, "value": 88,
       "threshold": 85, "deduction": 30, "action": "none", "message": "GPU 2 at 88 C"}
# Per node and poll: None (healthy) or the kind of bad sample.
plan = [[None] * polls for _ in range(nodes)]
faults = []
def fault(n, start, length, kind):
    end = min(start + length, polls)
    for p in range(start, end):
        plan[n][p] = kind
    faults.append((f"gpu-{n:03d}", start, end, kind))
roles = ["fault"] * 16 + ["blip"] * 20 + ["burst"] * 12 + ["flap"] * 6
roles += ["healthy"] * (nodes - len(roles))
for n, role in enumerate(roles):
    if role == "fault":
        kind = ["xid", "unreachable", "lost", "thermal"][n % 4]
        length = {"xid": rng.randint(6, 60), "unreachable": rng.randint(6, 20),
                  "lost": rng.randint(10, 90), "thermal": rng.randint(10, 40)}[kind]
        for start in (rng.randint(20, 300), rng.randint(380, polls - 120)):
            fault(n, start, length, kind)
    elif role in ("blip", "burst"):
        width = 1 if role == "blip" else 2
        for start in rng.sample(range(5, polls - 5, 6), 12):
            for p in range(start, start + width):
                plan[n][p] = rng.choice(["critical", "degraded", "unreachable"])
    elif role == "flap":
        # Two stretches of a node that comes and goes: bad 4 to 6 polls (long enough to
        # fire on their own), good 2 or 3.
        for start in (rng.randint(30, 250), rng.randint(400, 550)):
            on, off = rng.choice([(4, 2), (5, 2), (6, 3), (4, 3)])
            p = start
            while p < start + 80:
                for q in range(p, p + on):
                    plan[n][q] = "degraded"
                p += on + off
def line(n, p, kind):
    ts = (t0 + datetime.timedelta(seconds=30 * p)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    rec = {"v": 1, "kind": "sample", "ts": ts, "node": f"gpu-{n:03d}"}
    state, reasons, action, total = "healthy", [], "none", 97
    if kind in ("xid", "critical"):
        state, reasons, action, total = "critical", [XID], "reset_gpu", 0
    elif kind == "lost":
        state, reasons, action, total = "critical", [LOST], "reset_gpu", 0
    elif kind in ("thermal", "degraded"):
        state, reasons, total = "degraded", [HOT], 70
    elif kind == "unreachable":
        rec["unreachable"] = {"cause": "ssh", "message": "connection timed out"}
        state, action, total = "unknown", "check_network", None
        reasons = [{"code": "node_unreachable", "component": "network", "deduction": 100,
                    "fatal": True, "action": "check_network", "message": "unreachable"}]
    score = {"state": state, "action": action, "components": {}, "reasons": reasons,
             "summary": f"{rec['node']} {state}"}
    if total is not None:
        score["total"] = total
    rec["score"] = score
    return json.dumps(rec, separators=(",", ":"))
with open(f"{work}/stream.jsonl", "w") as whole:
    for p in range(polls):
        with open(f"{work}/polls/{p:05d}.jsonl", "w") as f:
            for n in range(nodes):
                l = line(n, p, plan[n][p]) + "\n"
                f.write(l)
                whole.write(l)
bad = sum(1 for n in range(nodes) for p in range(polls) if plan[n][p])
json.dump({"t0": t0.timestamp(), "faults": faults, "roles": roles,
           "bad_samples": bad,
           "bad_in_faults": sum(e - s for _, s, e, _ in faults)},
          open(f"{work}/labels.json", "w"))
EOF

run_pipe() { # state-dir < input >> output
  "$BREAKER" --state "$1/breaker.json" | "$ALERT" --state "$1/alert.json"
}
start=$(date +%s.%N)
run_pipe "$work/stream" < "$work/stream.jsonl" > "$work/stream.out"
mid=$(date +%s.%N)
for f in "$work"/polls/*.jsonl; do
  run_pipe "$work/cron" < "$f" >> "$work/cron.out"
done
end=$(date +%s.%N)

python3 - "$work" "$POLLS" "$start" "$mid" "$end" <<'EOF'
import json, os, sys, datetime, statistics, filecmp
work, polls = sys.argv[1], int(sys.argv[2])
secs = (float(sys.argv[4]) - float(sys.argv[3]), float(sys.argv[5]) - float(sys.argv[4]))
lab = json.load(open(f"{work}/labels.json"))
t0 = lab["t0"]
faults = lab["faults"]
def poll(ts):
    t = datetime.datetime.strptime(ts.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")
    return round((t.timestamp() - t0) / 30)
def analyse(path):
    firing = {}          # fingerprint -> (node, alertname) while firing
    pages = []           # (poll, node, alertname) of each alert that starts firing
    resolved_at = {}     # node -> polls at which the node's last firing alert resolved
    for l in open(path):
        r = json.loads(l)
        if r.get("kind") != "alert" or r["labels"].get("severity") == "info":
            continue
        fp, p = r["fingerprint"], poll(r["ts"])
        node, name = r["labels"].get("node", "*"), r["labels"]["alertname"]
        if r["status"] == "firing" and fp not in firing:
            firing[fp] = (node, name)
            pages.append((p, node, name))
        elif r["status"] == "resolved" and fp in firing:
            del firing[fp]
            if not any(n == node for n, _ in firing.values()):
                resolved_at.setdefault(node, []).append(p)
    detect, resolve, missed, true_pages = [], [], 0, set()
    for node, s, e, kind in faults:
        hits = [i for i, (p, n, a) in enumerate(pages) if n == node and s <= p < e + 3
                and a != "NodeFlapping"]
        true_pages.update(hits)
        if not hits:
            missed += 1
            continue
        detect.append(pages[hits[0]][0] - s)
        after = [p for p in resolved_at.get(node, []) if p >= e]
        resolve.append((after[0] - e) if after else float("inf"))
    flap = sum(1 for _, _, a in pages if a == "NodeFlapping")
    false = [(p, n) for i, (p, n, a) in enumerate(pages)
             if i not in true_pages and a != "NodeFlapping"]
    by_role = {}
    for _, n in false:
        role = lab["roles"][int(n[4:])] if n != "*" else "cluster"
        by_role[role] = by_role.get(role, 0) + 1
    return dict(detect=detect, resolve=resolve, missed=missed, false=len(false), flap=flap,
                pages=len(pages), false_notes=len(set(false)),
                by_role=", ".join(f"{k} {v}" for k, v in sorted(by_role.items())) or "none")
stream, cron = analyse(f"{work}/stream.out"), analyse(f"{work}/cron.out")
raw_false = lab["bad_samples"] - lab["bad_in_faults"]
same = filecmp.cmp(f"{work}/stream.out", f"{work}/cron.out", shallow=False)
def q(v, f):
    return "-" if not v else (f"{f(v):g}" if f(v) != float("inf") else "never")
def fewer(n):
    return f"{100 * (1 - n / raw_false):.1f} % fewer ({n})"
n_f = len(faults)
rows = [
    ("real faults paged", "100 %", "100 %", "100 %",
     f"{100 * (n_f - stream['missed']) / n_f:.0f} % ({n_f - stream['missed']}/{n_f})",
     f"{100 * (n_f - cron['missed']) / n_f:.0f} % ({n_f - cron['missed']}/{n_f})"),
    ("time to page, median (polls)", "6", "-", "0", q(stream["detect"], statistics.median),
     q(cron["detect"], statistics.median)),
    ("time to page, worst (polls)", "54", "<= 3", "0", q(stream["detect"], max),
     q(cron["detect"], max)),
    ("time to resolve after recovery, median", "-", "-", "0",
     q(stream["resolve"], statistics.median), q(cron["resolve"], statistics.median)),
    ("time to resolve after recovery, worst", "110", "<= 2", "0", q(stream["resolve"], max),
     q(cron["resolve"], max)),
    ("false alerts (vs raw)", "97.4 % / 93.6 % cron", ">= 98 % fewer", f"{raw_false}",
     fewer(stream["false"]), fewer(cron["false"])),
    ("false pages (node notifications)", "-", "-", f"{raw_false}",
     fewer(stream["false_notes"]), fewer(cron["false_notes"])),
    ("false alerts by node kind", "-", "-", "-", stream["by_role"], cron["by_role"]),
    ("NodeFlapping warnings", "-", "-", "-", str(stream["flap"]), str(cron["flap"])),
    ("all pages (non-info alerts fired)", "-", "-", str(lab["bad_samples"]),
     str(stream["pages"]), str(cron["pages"])),
]
w = [42, 22, 16, 8, 22, 22]
head = ("figure", "baseline (issue 10)", "target", "raw", "ugro stream", "ugro cron/poll")
print("".join(h.ljust(x) for h, x in zip(head, w)))
for r in rows:
    print("".join(c.ljust(x) for c, x in zip(r, w)))
print(f"cron output == stream output, byte for byte: {'yes' if same else 'NO'}")
print(f"trace (SEED={os.environ.get('SEED', '10')}): {len(lab['roles'])} nodes x {polls} polls, {n_f} real faults, "
      f"{lab['bad_samples']} bad samples ({raw_false} outside real faults); "
      f"stream {secs[0]:.1f} s, {polls} cron runs {secs[1]:.1f} s")
EOF

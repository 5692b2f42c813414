#!/bin/bash
# A fake node for scripts/bench-watch-ha.sh, spoken to like `ugro-probe --serve`: one sample
# line per request line. What the node answers is decided per request by the file DIR/modes/NODE
# (one word; the benchmark rewrites it, by rename, to inject a fault at a chosen moment): MODE
# answers DIR/tpl/MODE.json, a real `ugro-probe --gpu-fixture` sample written once with "@NODE@"
# and "@TS@" in place of the node name and the sample time; `hang` answers nothing (the watcher
# times out, restarts the probe, and the node is unreachable). Only bash builtins run per
# request (no fork), so every watcher can hold one of these per node. Exits at end of input.
#   ha-probe.sh NODE DIR
node=$1 dir=$2
export TZ=UTC
# Started: the benchmark waits until every watcher has a probe on each of its nodes.
: > "$dir/up/$node.$$.$EPOCHREALTIME"
declare -A tpl
for f in "$dir"/tpl/*.json; do
  m=${f##*/}
  IFS= read -r "tpl[${m%.json}]" < "$f"
done
while IFS= read -r _; do
  mode=healthy
  [ -r "$dir/modes/$node" ] && read -r mode < "$dir/modes/$node"
  # Unanswered: the next read waits for the watcher's next request or its end of input.
  [ "$mode" = hang ] && continue
  printf -v ts '%(%Y-%m-%dT%H:%M:%S)T' -1
  frac=${EPOCHREALTIME#*.}
  line=${tpl[$mode]/@NODE@/$node}
  printf '%s\n' "${line/@TS@/$ts.${frac:0:3}Z}"
done

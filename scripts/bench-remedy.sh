#!/usr/bin/env bash
# Remediation against a real Slurm 22.05 (munged + slurmctld + slurmd on loopback, the test
# harness in tests/support/slurm.rs): one long-running `ugro-alert --act` fed a poll a second,
# as under ugro-watch, through three episodes of fault under a job -> DRAIN -> job ends ->
# remediation (a stand-in argv) -> 3 healthy polls -> RESUME. Prints each figure in polls
# beside its target (issue 11: drain <= 3 polls after the fault; resume <= 2 polls after the
# verification passes).
set -euo pipefail
cd "$(dirname "$0")/.."
for p in slurmctld slurmd munged scontrol; do
  command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] || {
    echo "bench-remedy: $p is missing (Debian: slurm-wlm munge)" >&2; exit 69; }
done
echo "building release binaries…" >&2
cargo build --release -q -p ugro-alert
cargo build --release -q -p ugro-e2e --example bench_remedy
echo "### scripts/bench-remedy.sh  ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
target/release/examples/bench_remedy

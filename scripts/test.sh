#!/usr/bin/env bash
# Installs what the tests need (Debian packages, as root) and runs every check and test.
# This is the command the README gives and the one CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests that drive a real component (sshd, Alertmanager, promtool, pdsh, jq, Slurm) fail instead of
# skipping when that component is missing.
export UGRO_REQUIRE_REAL=1
export CARGO_TERM_COLOR=never

packages=(jq mandoc openssh-server openssh-client prometheus prometheus-alertmanager pdsh
          python3-psutil hyperfine procps util-linux bc coreutils slurm-wlm munge)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    exit 69
  fi
  echo "test.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the packages' own services (sshd, prometheus, alertmanager, munge, slurm)
  # from starting:
  # the tests start their own instances on loopback ports. An existing one is put back after.
  rc=/usr/sbin/policy-rc.d
  [ -e "$rc" ] && cp -p "$rc" "$rc.ugro-saved"
  trap '[ -e "$rc.ugro-saved" ] && mv -f "$rc.ugro-saved" "$rc" || rm -f "$rc"' EXIT
  printf '#!/bin/sh\nexit 101\n' > "$rc" && chmod +x "$rc"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -e "$rc.ugro-saved" ]; then mv -f "$rc.ugro-saved" "$rc"; else rm -f "$rc"; fi
  trap - EXIT
fi

step() { printf '\n== %s\n' "$*" >&2; }

step "format"
cargo fmt --all --check

step "build"
cargo build --workspace --all-targets --locked

step "man pages up to date and lint-clean"
cargo xtask man --check
mandoc -Tlint -W warning man/*

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo test --workspace --locked --no-fail-fast 2>&1

#!/usr/bin/env bash
# Installs what the tests need (Debian packages, as root) and runs every check and test.
# This is the command the README gives and the one CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests that drive a real component (sshd, Alertmanager, promtool, pdsh, jq, Slurm, Nagios,
# systemd-analyze, man) fail instead of skipping when that component is missing.
export UGRO_REQUIRE_REAL=1
export CARGO_TERM_COLOR=never

# systemd: systemd-analyze verify for the units (no running init needed); man-db: man -M on
# the installed pages; bsdutils: script(1), a terminal for the log-colour test; nagios4-core:
# the Nagios Core 4 daemon of Debian's nagios4, without its CGIs and web server.
packages=(jq mandoc openssh-server openssh-client prometheus prometheus-alertmanager
          prometheus-node-exporter pdsh
          python3-psutil hyperfine procps util-linux bsdutils bc coreutils systemd man-db
          slurm-wlm munge nagios4-core)
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

step "man pages and completions up to date, pages lint-clean"
cargo xtask man --check
mandoc -Tlint -W style man/*

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# One release build, installed once; tests/install.rs checks that tree (without the variable
# it installs the debug build instead).
step "release build, installed into a temporary prefix"
install_tmp=$(mktemp -d)
trap 'rm -rf "$install_tmp"' EXIT
scripts/install.sh --prefix "$install_tmp/prefix"
export UGRO_INSTALL_PREFIX=$install_tmp/prefix

step "tests"
cargo test --workspace --locked --no-fail-fast 2>&1

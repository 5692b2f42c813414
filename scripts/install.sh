#!/usr/bin/env bash
# Builds the release binaries and installs ugro under a prefix: the five tools, their man
# pages, bash/zsh/fish completions, the systemd units, the sysusers.d entry for ugro-watch's
# user, and examples (crontab, configuration files) with the documentation.
#
#   scripts/install.sh [--prefix DIR] [--destdir DIR] [--profile NAME] [--no-build]
#
#   --prefix DIR    where ugro will live (default /usr/local); the units name DIR/bin
#   --destdir DIR   stage the files under DIR instead of / (for packages); paths inside them
#                   still say PREFIX
#   --profile NAME  the cargo profile to build and install (default release)
#   --no-build      install what target/PROFILE already holds
#
# Exit: 0 installed, 64 usage, 66 a file to install is missing, else cargo's or install's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

prefix=/usr/local destdir="" profile=release build=1
usage() { sed -n '6,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --destdir) [ $# -ge 2 ] || usage; destdir=$2; shift 2 ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    --profile) [ $# -ge 2 ] || usage; profile=$2; shift 2 ;;
    --profile=*) profile=${1#*=}; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown argument: $1" >&2; usage ;;
  esac
done
case "$prefix" in
  /*) prefix=${prefix%/} ;;
  *) echo "install.sh: --prefix must be an absolute path: $prefix" >&2; exit 64 ;;
esac

tools=(ugro-probe ugro-score ugro-breaker ugro-alert ugro-watch)
if [ "$build" -eq 1 ]; then
  packages=()
  for t in "${tools[@]}"; do packages+=(-p "$t"); done
  (cd "$root" && cargo build --locked --profile "$profile" --bins "${packages[@]}")
fi
case "$profile" in dev|test) dir=debug ;; bench) dir=release ;; *) dir=$profile ;; esac
bin=${CARGO_TARGET_DIR:-$root/target}/$dir

dest=$destdir$prefix
need() { [ -e "$1" ] || { echo "install.sh: missing $1" >&2; exit 66; }; }
put() { # mode source target-dir [name]
  need "$2"
  install -D -m "$1" "$2" "$3/${4:-$(basename "$2")}"
}
# Unit files and examples name /usr/local as their prefix; they get the real one.
put_prefixed() { # mode source target-dir [name]
  need "$2"
  local target=$3/${4:-$(basename "$2")}
  install -d "$3"
  sed "s|/usr/local/|$prefix/|g" "$2" > "$target"
  chmod "$1" "$target"
}

for t in "${tools[@]}"; do
  put 0755 "$bin/$t" "$dest/bin"
  put 0644 "$root/man/$t.1" "$dest/share/man/man1"
  put 0644 "$root/completions/bash/$t" "$dest/share/bash-completion/completions"
  put 0644 "$root/completions/zsh/_$t" "$dest/share/zsh/site-functions"
  put 0644 "$root/completions/fish/$t.fish" "$dest/share/fish/vendor_completions.d"
done
put 0644 "$root/man/ugro.7" "$dest/share/man/man7"

for u in ugro-watch.service ugro-check.service ugro-check.timer; do
  put_prefixed 0644 "$root/dist/systemd/$u" "$dest/lib/systemd/system"
done
put_prefixed 0644 "$root/dist/sysusers.d/ugro.conf" "$dest/lib/sysusers.d"

doc=$dest/share/doc/ugro
for f in README.md CHANGELOG.md LICENSE-MIT LICENSE-APACHE; do put 0644 "$root/$f" "$doc"; done
put_prefixed 0644 "$root/dist/cron/ugro-check" "$doc/examples/cron.d"
put 0644 "$root/crates/ugro-watch/examples/cluster.yaml" "$doc/examples"
put 0644 "$root/crates/ugro-score/score.example.yaml" "$doc/examples"
put 0644 "$root/crates/ugro-breaker/breaker.example.yaml" "$doc/examples"
put 0644 "$root/crates/ugro-probe/probe.example.yaml" "$doc/examples"
for f in "$root"/crates/ugro-alert/examples-config/*.yaml; do put 0644 "$f" "$doc/examples/alert"; done

link=""
case "$prefix" in
  /usr|/usr/local) ;;
  *) link="  systemctl link $prefix/lib/systemd/system/ugro-*.{service,timer}   # not on systemd's path
" ;;
esac
cat >&2 <<EOF
installed ugro $(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1) under $dest
next steps (as root):
${link}  systemctl daemon-reload
  systemctl enable --now ugro-check.timer                  # the per-node pipeline, every minute
  systemd-sysusers $prefix/lib/sysusers.d/ugro.conf   # then, with /etc/ugro/cluster.yaml:
  systemctl enable --now ugro-watch.service                # the fleet monitor
EOF

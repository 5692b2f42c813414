# Sourced by the SSH benchmarks: N loopback sshd "nodes" on their own ports (sshd takes at most
# 16 listen sockets, so one sshd per 16), generated host and user keys, a known_hosts with the
# host key, and an ssh_config with aliases node-0 … node-(N-1) (strict host-key checking).
# Sessions get SHLVL=1, so the login user's bash (run by sshd for each command) skips ~/.bashrc:
# these "nodes" share this host's root account, whose .bashrc may run slow tools (pyenv init
# rehashes under a lock, 128 sessions at once wait on each other for a minute), which would
# measure this host's dotfiles, not the watcher.
# Needs $work (a scratch directory). Sets ports=() and sshd_pids=(); call sshd_fleet_stop on exit.

sshd_pids=()
ports=()

sshd_fleet_stop() {
  for pid in "${sshd_pids[@]}"; do
    # sshd's per-connection children call setsid: end them by parent pid, then sshd itself.
    for c in $(ps -o pid= --ppid "$pid" 2>/dev/null); do kill "$c" 2>/dev/null || true; done
    kill "$pid" 2>/dev/null || true
  done
  sshd_pids=()
}

sshd_fleet_start() {
  local n=$1 g p i up hostkey
  ports=()
  sshd_pids=()
  [ -f "$work/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
  [ -f "$work/user_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$work/user_key"
  cp "$work/user_key.pub" "$work/authorized_keys"
  mkdir -p "$work/cache"
  [ "$(id -u)" -eq 0 ] && mkdir -p /run/sshd
  for _ in $(seq 1 "$n"); do
    ports+=("$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')")
  done
  for g in $(seq 0 $(( (n - 1) / 16 ))); do
    {
      for p in "${ports[@]:$((g * 16)):16}"; do echo "ListenAddress 127.0.0.1:$p"; done
      cat <<EOF
HostKey $work/host_key
PidFile $work/sshd-$g.pid
AuthorizedKeysFile $work/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel ERROR
MaxStartups 500:30:1000
MaxSessions 100
SetEnv XDG_CACHE_HOME=$work/cache SHLVL=1
EOF
    } > "$work/sshd_config-$g"
    /usr/sbin/sshd -D -e -f "$work/sshd_config-$g" 2>>"$work/sshd.log" &
    sshd_pids+=($!)
  done
  hostkey=$(cut -d' ' -f1,2 "$work/host_key.pub")
  : > "$work/known_hosts"
  : > "$work/ssh_config"
  for i in $(seq 0 $((n - 1))); do
    p=${ports[$i]}
    echo "[127.0.0.1]:$p $hostkey" >> "$work/known_hosts"
    printf 'Host node-%d\n  HostName 127.0.0.1\n  Port %d\n' "$i" "$p" >> "$work/ssh_config"
  done
  cat >> "$work/ssh_config" <<EOF
Host *
  IdentityFile $work/user_key
  IdentitiesOnly yes
  UserKnownHostsFile $work/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
  LogLevel ERROR
EOF
  for p in "${ports[@]}"; do
    up=0
    for _ in $(seq 200); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then up=1; break; fi
      sleep 0.05
    done
    [ "$up" = 1 ] || { echo "sshd is not listening on $p" >&2; cat "$work/sshd.log" >&2; return 1; }
  done
}

#!/usr/bin/env python3
"""Baseline for scripts/bench-probe.sh: the host fields ugro-probe collects, with psutil.

CPU %, CPU count, load, memory, swap, uptime, local disks (psutil's physical partitions),
interface state/speed, process count with zombie and D-state counts, and training processes
by command-line pattern. Prints one JSON line.

  psutil_probe.py [--cpu-window SECONDS]   (default 0.1, psutil's usual sampling window;
                                            0 = no CPU measurement)
"""
import json
import os
import sys
import time

import psutil

PATTERNS = ["torchrun", "torch.distributed", "deepspeed", "accelerate launch",
            "accelerate-launch", "megatron", "horovodrun", "mpirun"]


def main():
    window = 0.1
    if len(sys.argv) == 3 and sys.argv[1] == "--cpu-window":
        window = float(sys.argv[2])
    host = {}
    if window > 0:
        host["cpu_pct"] = psutil.cpu_percent(interval=window)
        host["cpu_window_ms"] = int(window * 1000)
    host["cpus"] = psutil.cpu_count()
    host["load"] = list(os.getloadavg())
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    host.update(memory_total_bytes=vm.total, memory_available_bytes=vm.available,
                swap_total_bytes=sw.total, swap_used_bytes=sw.used,
                uptime_s=int(time.time() - psutil.boot_time()))
    disks = []
    for p in psutil.disk_partitions(all=False):
        try:
            u = psutil.disk_usage(p.mountpoint)
        except OSError:
            continue
        disks.append({"mount": p.mountpoint, "fstype": p.fstype, "total_bytes": u.total,
                      "used_bytes": u.used, "available_bytes": u.free})
    host["disks"] = disks
    ifs = [{"name": n, "oper_state": "up" if s.isup else "down",
            "speed_mbps": s.speed or None}
           for n, s in sorted(psutil.net_if_stats().items()) if n != "lo"]
    total = zombies = dstate = 0
    training = []
    for p in psutil.process_iter(["pid", "status", "cmdline"]):
        total += 1
        st = p.info["status"]
        if st == psutil.STATUS_ZOMBIE:
            zombies += 1
        elif st == psutil.STATUS_DISK_SLEEP:
            dstate += 1
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd and p.info["pid"] != os.getpid() and any(x in cmd for x in PATTERNS):
            training.append({"pid": p.info["pid"], "command": cmd[:256]})
    print(json.dumps({"kind": "sample", "node": os.uname().nodename, "host": host,
                      "network": {"interfaces": ifs},
                      "processes": {"total": total, "zombies": zombies, "d_state": dstate,
                                    "training": training}}))


main()

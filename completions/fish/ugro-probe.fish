complete -c ugro-probe -s c -l config -d 'YAML configuration file with the same keys as the long options (snake_case)' -r -F
complete -c ugro-probe -l node -d 'Node name in records [default: the host name]' -r
complete -c ugro-probe -l format -d 'Output format [default: json]' -r -f -a "json\t'One `sample` JSON line per sample'
prometheus\t'Prometheus text exposition (textfile collector)'"
complete -c ugro-probe -l metric-names -d 'Names in Prometheus output: ugro\'s own, or dcgm = ugro\'s plus dcgm-exporter\'s names and labels for the GPU readings both have [default: ugro]' -r -f -a "ugro\t'ugro\'s own names only'
dcgm\t'ugro\'s names, and dcgm-exporter\'s names and labels for the GPU readings both have'"
complete -c ugro-probe -s o -l output -d 'Write each sample to FILE instead of standard output, replacing it atomically (temp file in the same directory, mode 0644, rename): for node_exporter\'s textfile collector' -r -F
complete -c ugro-probe -l interval -d 'Write a sample every DUR until stopped (or --count samples)' -r
complete -c ugro-probe -l count -d 'With --interval: stop after N samples' -r
complete -c ugro-probe -l expect-gpus -d 'Number of GPUs this node should have; fewer visible makes gpu.status "missing"' -r
complete -c ugro-probe -l gpu-fixture -d 'Replay recorded GPU readings instead of NVML (see fixtures/README.md)' -r -F
complete -c ugro-probe -l kmsg-file -d 'Read kernel-log lines from FILE instead of /dev/kmsg (replay, tests)' -r -F
complete -c ugro-probe -l boot-id -d 'The boot a --kmsg-file replay (or a fixture\'s kmsg lines) was recorded in, as /proc/sys/kernel/random/boot_id wrote it [default: this host\'s boot id]' -r
complete -c ugro-probe -l sys-root -d 'Where sysfs is mounted: network interfaces, InfiniBand ports and the PCI GPU count are read under it (a container with the host\'s /sys elsewhere, tests) [default: /sys]' -r -F
complete -c ugro-probe -l xid-lookback -d 'Report XIDs logged within this long before the sample [default: 10m]' -r
complete -c ugro-probe -l peer -d 'TCP peer to check (host:port); repeatable' -r
complete -c ugro-probe -l peer-timeout -d 'Connect timeout per peer [default: 1s]' -r
complete -c ugro-probe -l training-pattern -d 'Training command-line pattern (substring); repeatable; replaces the defaults (torchrun, torch.distributed, deepspeed, accelerate launch, megatron, horovodrun, mpirun)' -r
complete -c ugro-probe -l cpu-window -d 'Measuring window when no recent previous CPU reading exists; 0 = report cpu_pct absent' -r
complete -c ugro-probe -l cpu-state-max-age -d 'Use a previous CPU reading only if it is at most this old [default: 5m]' -r
complete -c ugro-probe -l cpu-state-file -d 'Previous-CPU-reading file for one-shot runs (unused with --serve/--interval) [default: $XDG_STATE_HOME/ugro/probe-cpu.json]' -r -F
complete -c ugro-probe -l budget -d 'Collector time budget, NAME=DUR (gpu 5s, xid 1s, host 1s, disks 2s, network 3s, processes 2s); repeatable' -r
complete -c ugro-probe -l serve -d 'Resident mode: one sample per line read on stdin; exit at end of input'
complete -c ugro-probe -l no-gpu -d 'Do not collect GPUs at all'
complete -c ugro-probe -l no-xid -d 'Do not read the kernel log'
complete -c ugro-probe -l include-network-fs -d 'Also report network filesystems'
complete -c ugro-probe -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ugro-probe -s V -l version -d 'Print version'

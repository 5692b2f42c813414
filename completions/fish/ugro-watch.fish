complete -c ugro-watch -s c -l cluster -d 'The cluster file (nodes, SSH defaults, probe, intervals, pipeline files)' -r -F
complete -c ugro-watch -l score-config -d 'ugro-score configuration for --pipeline (overrides the cluster file\'s pipeline.score)' -r -F
complete -c ugro-watch -l breaker-config -d 'ugro-breaker configuration for --pipeline' -r -F
complete -c ugro-watch -l alert-config -d 'ugro-alert configuration for --pipeline' -r -F
complete -c ugro-watch -l breaker-state -d 'Breaker state file for --pipeline [default: STATE_DIR/breaker.json, else ~/.local/state/ugro/watch-breaker.json]' -r -F
complete -c ugro-watch -l alert-state -d 'Alert state file for --pipeline [default: STATE_DIR/alert.json, else ~/.local/state/ugro/watch-alert.json]' -r -F
complete -c ugro-watch -l score-state -d 'The scorer\'s history for --pipeline (XID windows, GPU counts, rates; see ugro-score --state) [default: STATE_DIR/score.json, else ~/.local/state/ugro/watch-score.json]. Replicas on one host need their own, as with --breaker-state and --alert-state' -r -F
complete -c ugro-watch -l state-dir -d 'Keep per-node state files here (latest sample, score, breaker, last alert, history)' -r -F
complete -c ugro-watch -l history -d 'History entries kept per node [default: state.history, 60]' -r
complete -c ugro-watch -l stats-every -d 'Period of `stats` records; 0 turns them off, except those saying the state became unwritable or writable again [default: state.stats_every, 60s]' -r
complete -c ugro-watch -l interval -d 'Base interval (busy or degraded nodes) [default: intervals.base, 5s]' -r
complete -c ugro-watch -l max-interval -d 'Longest interval (idle, healthy nodes) [default: intervals.max, 60s]' -r
complete -c ugro-watch -l timeout -d 'Per-node poll timeout [default: timeout, 10s]' -r
complete -c ugro-watch -l concurrency -d 'Most polls in flight at once [default: concurrency, 64]' -r
complete -c ugro-watch -l activity-file -d 'A file whose recent modification means jobs are running on the whole fleet' -r -F
complete -c ugro-watch -l jobs-cmd -d 'A command printing busy node names (hostlists expanded), run every base interval; split on whitespace, no shell. Example: "squeue -h -t R -o %N"' -r
complete -c ugro-watch -l tag -d 'Only nodes with this tag (repeatable)' -r
complete -c ugro-watch -l shard -d 'Poll only shard I of N (1-based): the nodes that rendezvous hashing of their names gives to shard I, so adding a shard moves about 1/N of the nodes [default: the cluster file\'s shard, else all nodes]. Replicas are watchers started with the same shard' -r
complete -c ugro-watch -l cycles -d 'Stop after this many base-interval cycles (and the polls in flight)' -r
complete -c ugro-watch -l replay -d 'Read a recorded raw stream from FILE (`-` = stdin) instead of polling, and handle it as if just polled (pipeline, state directory, output), through the filters\' own run loop: a bad line is reported as `TOOL: line N: cause` and the exit status is then 65' -r -F
complete -c ugro-watch -l tick -d 'Period of `tick` records in the raw stream, which run the stages\' timers (the tick rule of ugro(7)), and of table and state-directory updates' -r
complete -c ugro-watch -l tee -d 'Also append the raw stream (what enters the pipeline: samples, ticks, stats, errors) to FILE (created mode 0600), for `--replay` or the shell filters later' -r -F
complete -c ugro-watch -l queue -d 'Capacity of the pipeline queue, in records (see "Jobs and queues")' -r
complete -c ugro-watch -l format -d 'Output format' -r -f -a "auto\t'A table on a terminal, JSON lines otherwise'
json\t'JSON lines'
table\t'The live table'"
complete -c ugro-watch -l listen -d 'Serve the fleet\'s metrics (`/metrics`, Prometheus text) and the watcher\'s health (`/healthz`, JSON) over HTTP on ADDR: IP:PORT, [IPv6]:PORT, localhost:PORT, or a bare PORT (on 127.0.0.1). Only a loopback address unless --listen-non-loopback. See "Fleet endpoint"' -r
complete -c ugro-watch -l metric-names -d 'Metric names the endpoint writes: ugro\'s own, or also dcgm-exporter\'s names and labels for the GPU readings both have (as ugro-probe and ugro-score --metric-names)' -r -f -a "ugro\t'ugro\'s own names only'
dcgm\t'ugro\'s names, and dcgm-exporter\'s names and labels for the GPU readings both have'"
complete -c ugro-watch -l metrics-cache -d 'How long a rendered /metrics body is served again before a scrape renders a new one' -r
complete -c ugro-watch -l local -d 'Monitor this machine without SSH (a local resident ugro-probe); no cluster file needed'
complete -c ugro-watch -l pipeline -d 'Run score → breaker → alert in-process and write their output instead of raw samples'
complete -c ugro-watch -l no-deploy -d 'Do not copy ugro-probe to nodes; run probe.path as it is there'
complete -c ugro-watch -l strict -d 'Stop --replay at the first bad line'
complete -c ugro-watch -l pass-unknown-kinds -d 'Pass records of kinds this build does not know (a site\'s own kinds) through instead of rejecting them as bad lines. Without it a typo such as "Sample" or "sample " is a bad line (exit 65), never a sample that goes unscored and unalerted'
complete -c ugro-watch -l check -d 'Check the cluster file, print the nodes as JSON lines, and exit'
complete -c ugro-watch -l listen-non-loopback -d 'Allow --listen on an address other than loopback (the endpoint has no authentication or TLS, and its body names every node and GPU: put a proxy or a firewall in front)'
complete -c ugro-watch -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ugro-watch -s V -l version -d 'Print version'

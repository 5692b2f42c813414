complete -c ugro-score -s c -l config -d 'YAML configuration: weights, thresholds, rule parameters, xid_policy' -r -F
complete -c ugro-score -l weights -d 'Component weights, e.g. gpu=0.4,system=0.3,network=0.2,process=0.1 (unnamed ones keep their configured value; the four must be >= 0 and sum to 1)' -r
complete -c ugro-score -l xid-policy -d 'Site XID policy merged over the built-in one (overrides the config\'s xid_policy)' -r -F
complete -c ugro-score -l critical-below -d 'Total below which the state is critical (default 40)' -r
complete -c ugro-score -l degraded-below -d 'Total below which the state is degraded (default 70)' -r
complete -c ugro-score -s f -l format -d 'Output format' -r -f -a "json\t'The input record with `score` added (JSON lines)'
nagios\t'Monitoring Plugins output: one status line for the worst state, a line per node after it'
table\t'An aligned table for people'
prometheus\t'Prometheus text: the latest scored sample of every node, rewritten as records arrive'"
complete -c ugro-score -l metric-names -d 'Names in Prometheus output: ugro\'s own, or dcgm = ugro\'s plus dcgm-exporter\'s names and labels for the GPU readings both have' -r -f -a "ugro\t'ugro\'s own names only'
dcgm\t'ugro\'s names, and dcgm-exporter\'s names and labels for the GPU readings both have'"
complete -c ugro-score -s o -l output -d 'With --format prometheus: write the exposition to FILE instead of standard output, replaced atomically (temp file in the same directory, mode 0644, rename) each time it is rewritten: for node_exporter\'s textfile collector' -r -F
complete -c ugro-score -l state -d 'Keep the history the rules need (rates, trends, XID windows, reboots, GPU counts) in FILE between runs: locked for the run, rewritten atomically (mode 0600) at the end. Without FILE: $XDG_STATE_HOME/ugro/score.json, else ~/.local/state/ugro/score.json' -r -F
complete -c ugro-score -s w -l warning -d 'Check mode: WARNING when the score alerts against RANGE (Monitoring Plugins syntax [@][start:][end]: `70:` warns below 70, `@0:70` inside 0-70); default `<degraded-below>:`' -r
complete -c ugro-score -l critical -d 'Check mode: CRITICAL when the score alerts against RANGE; default `<critical-below>:`. (Short -c stays --config, as in every ugro tool.)' -r
complete -c ugro-score -l max-perfdata -d 'Check mode: bytes of perfdata on the status line at most (whole values, the worst nodes\' scores first; the text says how many were left out). The whole output stays under 8000 bytes, inside Nagios Core\'s documented 8192 (MAX_PLUGIN_OUTPUT_LENGTH)' -r
complete -c ugro-score -l threads -d 'Threads that decode a backlog of input lines (scoring stays on one of them, in input order, so the output is the same whatever N; the others decode the next batch meanwhile). Default: the CPUs this process may use, at most 8. An idle stream\'s line is decoded and scored at once, without waiting for more' -r
complete -c ugro-score -s e -l exit-status -d 'Exit with the Monitoring Plugins status of the worst state seen (0-3), in JSON mode too'
complete -c ugro-score -l strict -d 'Stop at the first bad input line'
complete -c ugro-score -l reset-state -d 'Start the --state file over (it is removed under its lock first)'
complete -c ugro-score -l pass-unknown-kinds -d 'Pass records of kinds this build does not know (a site\'s own kinds) through instead of rejecting them as bad lines. Without it a typo such as "Sample" or "sample " is a bad line (exit 65), never a sample that goes unscored and unalerted'
complete -c ugro-score -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ugro-score -s V -l version -d 'Print version'

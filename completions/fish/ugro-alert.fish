complete -c ugro-alert -s c -l config -d 'Configuration file (YAML): global, delivery, route, receivers, inhibit_rules, silences_file. Without it everything goes to stdout grouped by alertname' -r -F
complete -c ugro-alert -l state -d 'State file (alerts, groups, notification log). Default: $XDG_STATE_HOME/ugro/alert.json, else ~/.local/state/ugro/alert.json, else $TMPDIR/ugro-UID/alert.json (refused with status 78 unless that directory is the user\'s own, mode 0700)' -r -F
complete -c ugro-alert -l silences -d 'Silences file (YAML or JSON list, Alertmanager\'s silence shape); replaces silences_file' -r -F
complete -c ugro-alert -l spool-dir -d 'Spool directory for undelivered notifications; runs with different --state files may share one. Default: <state>.spool' -r -F
complete -c ugro-alert -l act -d 'Let slurm_drain receivers really run scontrol update (default: dry run)'
complete -c ugro-alert -l no-flush-on-exit -d 'At end of input, wait for group_wait too instead of treating it as elapsed'
complete -c ugro-alert -l reset-state -d 'Delete the state file (under its lock) before starting'
complete -c ugro-alert -l check-config -d 'Validate the configuration (and silences) and exit'
complete -c ugro-alert -l strict -d 'Stop at the first bad input line'
complete -c ugro-alert -l pass-unknown-kinds -d 'Pass records of kinds this build does not know (a site\'s own kinds) through instead of rejecting them as bad lines. Without it a typo such as "Sample" or "sample " is a bad line (exit 65), never a sample that goes unscored and unalerted'
complete -c ugro-alert -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ugro-alert -s V -l version -d 'Print version'

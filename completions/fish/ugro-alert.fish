# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ugro_alert_global_optspecs
    string join \n c/config= state= silences= spool-dir= act no-flush-on-exit reset-state check-config strict pass-unknown-kinds h/help V/version
end

function __fish_ugro_alert_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ugro_alert_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ugro_alert_using_subcommand
    set -l cmd (__fish_ugro_alert_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -s c -l config -d 'Configuration file (YAML): global, delivery, route, receivers, inhibit_rules, silences_file. Without it everything goes to stdout grouped by alertname' -r -F
complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -l state -d 'State file (alerts, groups, notification log). Default: $XDG_STATE_HOME/ugro/alert.json, else ~/.local/state/ugro/alert.json, else $TMPDIR/ugro-UID/alert.json (refused with status 78 unless that directory is the user\'s own, mode 0700)' -r -F
complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -l silences -d 'Silences file (YAML or JSON list, Alertmanager\'s silence shape); replaces silences_file' -r -F
complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -l spool-dir -d 'Spool directory for undelivered notifications; runs with different --state files may share one. Default: <state>.spool' -r -F
complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -l act -d 'Let slurm_drain receivers really run scontrol update (default: dry run)'
complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -l no-flush-on-exit -d 'At end of input, wait for group_wait too instead of treating it as elapsed'
complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -l reset-state -d 'Delete the state file (under its lock) before starting'
complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -l check-config -d 'Validate the configuration (and silences) and exit'
complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -l strict -d 'Stop at the first bad input line'
complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -l pass-unknown-kinds -d 'Pass records of kinds this build does not know (a site\'s own kinds) through instead of rejecting them as bad lines. Without it a typo such as "Sample" or "sample " is a bad line (exit 65), never a sample that goes unscored and unalerted'
complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -s V -l version -d 'Print version'
complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -f -a "budget" -d 'The quarantine budget'
complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -f -a "release" -d 'Let go of a node ugro holds (one that needs service, after a person fixed it): ugro stops holding it, forgets its failed remediations and resolves NodeNeedsService. Slurm is not touched: resume the node yourself (scontrol update NodeName=N State=RESUME)'
complete -c ugro-alert -n "__fish_ugro_alert_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ugro-alert -n "__fish_ugro_alert_using_subcommand budget; and not __fish_seen_subcommand_from reset help" -l state -d 'State file (alerts, groups, notification log). Default: $XDG_STATE_HOME/ugro/alert.json, else ~/.local/state/ugro/alert.json, else $TMPDIR/ugro-UID/alert.json (refused with status 78 unless that directory is the user\'s own, mode 0700)' -r -F
complete -c ugro-alert -n "__fish_ugro_alert_using_subcommand budget; and not __fish_seen_subcommand_from reset help" -s h -l help -d 'Print help'
complete -c ugro-alert -n "__fish_ugro_alert_using_subcommand budget; and not __fish_seen_subcommand_from reset help" -f -a "reset" -d 'Re-arm a tripped budget: ugro drains and remediates again, with an empty window, and QuarantineBudgetExhausted resolves'
complete -c ugro-alert -n "__fish_ugro_alert_using_subcommand budget; and not __fish_seen_subcommand_from reset help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ugro-alert -n "__fish_ugro_alert_using_subcommand budget; and __fish_seen_subcommand_from reset" -l state -d 'State file (alerts, groups, notification log). Default: $XDG_STATE_HOME/ugro/alert.json, else ~/.local/state/ugro/alert.json, else $TMPDIR/ugro-UID/alert.json (refused with status 78 unless that directory is the user\'s own, mode 0700)' -r -F
complete -c ugro-alert -n "__fish_ugro_alert_using_subcommand budget; and __fish_seen_subcommand_from reset" -s h -l help -d 'Print help'
complete -c ugro-alert -n "__fish_ugro_alert_using_subcommand budget; and __fish_seen_subcommand_from help" -f -a "reset" -d 'Re-arm a tripped budget: ugro drains and remediates again, with an empty window, and QuarantineBudgetExhausted resolves'
complete -c ugro-alert -n "__fish_ugro_alert_using_subcommand budget; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ugro-alert -n "__fish_ugro_alert_using_subcommand release" -l state -d 'State file (alerts, groups, notification log). Default: $XDG_STATE_HOME/ugro/alert.json, else ~/.local/state/ugro/alert.json, else $TMPDIR/ugro-UID/alert.json (refused with status 78 unless that directory is the user\'s own, mode 0700)' -r -F
complete -c ugro-alert -n "__fish_ugro_alert_using_subcommand release" -s h -l help -d 'Print help'
complete -c ugro-alert -n "__fish_ugro_alert_using_subcommand help; and not __fish_seen_subcommand_from budget release help" -f -a "budget" -d 'The quarantine budget'
complete -c ugro-alert -n "__fish_ugro_alert_using_subcommand help; and not __fish_seen_subcommand_from budget release help" -f -a "release" -d 'Let go of a node ugro holds (one that needs service, after a person fixed it): ugro stops holding it, forgets its failed remediations and resolves NodeNeedsService. Slurm is not touched: resume the node yourself (scontrol update NodeName=N State=RESUME)'
complete -c ugro-alert -n "__fish_ugro_alert_using_subcommand help; and not __fish_seen_subcommand_from budget release help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ugro-alert -n "__fish_ugro_alert_using_subcommand help; and __fish_seen_subcommand_from budget" -f -a "reset" -d 'Re-arm a tripped budget: ugro drains and remediates again, with an empty window, and QuarantineBudgetExhausted resolves'

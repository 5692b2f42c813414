# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ugro_breaker_global_optspecs
    string join \n c/config= state= reset-state pass-open strict pass-unknown-kinds h/help V/version
end

function __fish_ugro_breaker_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ugro_breaker_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ugro_breaker_using_subcommand
    set -l cmd (__fish_ugro_breaker_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -s c -l config -d 'YAML configuration (keys: resilience4j\'s parameter names in snake case)' -r -F
complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -l state -d 'State file [default: $XDG_STATE_HOME/ugro/breaker.json]' -r -F
complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -l reset-state -d 'Delete the state file first and start from empty (the way out of a corrupt file)'
complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -l pass-open -d 'Pass records of open nodes, annotated, instead of holding them back'
complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -l strict -d 'Stop at the first bad input line instead of reporting and skipping it'
complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -l pass-unknown-kinds -d 'Pass records of kinds this build does not know (a site\'s own kinds) through instead of rejecting them as bad lines. Without it a typo such as "Sample" or "sample " is a bad line (exit 65), never a sample that goes unscored and unalerted'
complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -s V -l version -d 'Print version'
complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -f -a "status" -d 'Show every node\'s breaker'
complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -f -a "reset" -d 'Close NODE\'s breaker and clear its counts (its trip history is kept). Prints the transition record, if the state changed'
complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -f -a "force-open" -d 'Hold NODE\'s breaker open until `reset`. Prints the transition record'
complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -f -a "disable" -d 'Turn NODE\'s breaker off: its records pass, nothing is counted, until `reset`'
complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -f -a "metrics-only" -d 'Count and annotate NODE\'s records but never trip, until `reset`'
complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -f -a "forget" -d 'Remove NODE from the state file (a decommissioned node stops counting as known to the fleet guard). Its next record starts a fresh, closed breaker'
complete -c ugro-breaker -n "__fish_ugro_breaker_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand status" -l format -d 'Output format' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document'"
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand status" -s c -l config -d 'YAML configuration (keys: resilience4j\'s parameter names in snake case)' -r -F
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand status" -l state -d 'State file [default: $XDG_STATE_HOME/ugro/breaker.json]' -r -F
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand status" -l reset-state -d 'Delete the state file first and start from empty (the way out of a corrupt file)'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand reset" -s c -l config -d 'YAML configuration (keys: resilience4j\'s parameter names in snake case)' -r -F
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand reset" -l state -d 'State file [default: $XDG_STATE_HOME/ugro/breaker.json]' -r -F
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand reset" -l reset-state -d 'Delete the state file first and start from empty (the way out of a corrupt file)'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand reset" -s h -l help -d 'Print help'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand force-open" -s c -l config -d 'YAML configuration (keys: resilience4j\'s parameter names in snake case)' -r -F
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand force-open" -l state -d 'State file [default: $XDG_STATE_HOME/ugro/breaker.json]' -r -F
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand force-open" -l reset-state -d 'Delete the state file first and start from empty (the way out of a corrupt file)'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand force-open" -s h -l help -d 'Print help'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand disable" -s c -l config -d 'YAML configuration (keys: resilience4j\'s parameter names in snake case)' -r -F
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand disable" -l state -d 'State file [default: $XDG_STATE_HOME/ugro/breaker.json]' -r -F
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand disable" -l reset-state -d 'Delete the state file first and start from empty (the way out of a corrupt file)'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand disable" -s h -l help -d 'Print help'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand metrics-only" -s c -l config -d 'YAML configuration (keys: resilience4j\'s parameter names in snake case)' -r -F
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand metrics-only" -l state -d 'State file [default: $XDG_STATE_HOME/ugro/breaker.json]' -r -F
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand metrics-only" -l reset-state -d 'Delete the state file first and start from empty (the way out of a corrupt file)'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand metrics-only" -s h -l help -d 'Print help'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand forget" -s c -l config -d 'YAML configuration (keys: resilience4j\'s parameter names in snake case)' -r -F
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand forget" -l state -d 'State file [default: $XDG_STATE_HOME/ugro/breaker.json]' -r -F
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand forget" -l reset-state -d 'Delete the state file first and start from empty (the way out of a corrupt file)'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand forget" -s h -l help -d 'Print help'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand help; and not __fish_seen_subcommand_from status reset force-open disable metrics-only forget help" -f -a "status" -d 'Show every node\'s breaker'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand help; and not __fish_seen_subcommand_from status reset force-open disable metrics-only forget help" -f -a "reset" -d 'Close NODE\'s breaker and clear its counts (its trip history is kept). Prints the transition record, if the state changed'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand help; and not __fish_seen_subcommand_from status reset force-open disable metrics-only forget help" -f -a "force-open" -d 'Hold NODE\'s breaker open until `reset`. Prints the transition record'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand help; and not __fish_seen_subcommand_from status reset force-open disable metrics-only forget help" -f -a "disable" -d 'Turn NODE\'s breaker off: its records pass, nothing is counted, until `reset`'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand help; and not __fish_seen_subcommand_from status reset force-open disable metrics-only forget help" -f -a "metrics-only" -d 'Count and annotate NODE\'s records but never trip, until `reset`'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand help; and not __fish_seen_subcommand_from status reset force-open disable metrics-only forget help" -f -a "forget" -d 'Remove NODE from the state file (a decommissioned node stops counting as known to the fleet guard). Its next record starts a fresh, closed breaker'
complete -c ugro-breaker -n "__fish_ugro_breaker_using_subcommand help; and not __fish_seen_subcommand_from status reset force-open disable metrics-only forget help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'

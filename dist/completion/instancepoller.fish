function __instancepoller_should_offer_completions_for_flags_or_options -a expected_commands
    set -l non_repeating_flags_or_options $argv[2..]
    set -l non_repeating_flags_or_options_absent 0
    set -l positional_index 0
    set -l commands
    __instancepoller_parse_tokens
    test "$commands" = "$expected_commands"; and return $non_repeating_flags_or_options_absent
end

function __instancepoller_should_offer_completions_for_positional -a expected_commands positional_index_comparison expected_positional_index
    set -l non_repeating_flags_or_options
    set -l non_repeating_flags_or_options_absent 0
    set -l positional_index 0
    set -l commands
    __instancepoller_parse_tokens
    test "$commands" = "$expected_commands" -a \( "$positional_index" "$positional_index_comparison" "$expected_positional_index" \)
end

function __instancepoller_parse_tokens -S
    set -l unparsed_tokens (__instancepoller_tokens -pc)
    switch $unparsed_tokens[1]
    case 'instancepoller'
        __instancepoller_parse_subcommand 0 'version' 'h/help'
        switch $unparsed_tokens[1]
        case 'run'
            __instancepoller_parse_subcommand 0 'config=' 'log-level=' 'version' 'h/help'
        case 'check-config'
            __instancepoller_parse_subcommand 1 'connect' 'format=' 'version' 'h/help'
        case 'demo'
            __instancepoller_parse_subcommand 0 'duration=' 'plain' 'version' 'h/help'
        case 'status'
            __instancepoller_parse_subcommand 0 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
        case 'machines'
            __instancepoller_parse_subcommand 0 'version' 'h/help'
            switch $unparsed_tokens[1]
            case 'add'
                __instancepoller_parse_subcommand 1 'provider=' 'credential=' 'instance-id=' 'manual' 'agent-status=' 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
            case 'remove'
                __instancepoller_parse_subcommand 1 'file=' 'input-format=' 'chunk-size=' 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
            case 'list'
                __instancepoller_parse_subcommand 0 'provider=' 'credential=' 'state=' 'group=' 'agent-status=' 'with-error' 'ids-only' 'page-size=' 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
            case 'show'
                __instancepoller_parse_subcommand 1 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
            case 'set-agent-status'
                __instancepoller_parse_subcommand 2 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
            case 'import'
                __instancepoller_parse_subcommand 1 'input-format=' 'update' 'dry-run' 'chunk-size=' 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
            end
        case 'credentials'
            __instancepoller_parse_subcommand 0 'version' 'h/help'
            switch $unparsed_tokens[1]
            case 'set'
                __instancepoller_parse_subcommand 2 'auth-type=' 'file=' 'expires=' 'allow-expired' 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
            case 'list'
                __instancepoller_parse_subcommand 0 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
            case 'validate'
                __instancepoller_parse_subcommand 2 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
            case 'remove'
                __instancepoller_parse_subcommand 2 'force' 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
            case 'new-key'
                __instancepoller_parse_subcommand 0 'file=' 'version' 'h/help'
            case 'reseal'
                __instancepoller_parse_subcommand 0 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
            end
        case 'providers'
            __instancepoller_parse_subcommand 0 'version' 'h/help'
            switch $unparsed_tokens[1]
            case 'list'
                __instancepoller_parse_subcommand 0 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
            case 'swap'
                __instancepoller_parse_subcommand -r 2 'env=+' 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
            end
        case 'watch'
            __instancepoller_parse_subcommand 0 'after=' 'last=' 'no-follow' 'runtime-dir=' 'config=' 'format=' 'version' 'h/help'
        case 'help'
            __instancepoller_parse_subcommand -r 1 'version'
        end
    end
end

function __instancepoller_tokens
    if test (string split -m 1 -f 1 -- . "$FISH_VERSION") -gt 3
        commandline --tokens-raw $argv
    else
        commandline -o $argv
    end
end

function __instancepoller_parse_subcommand -S -a positional_count
    argparse -s r -- $argv
    set -l option_specs $argv[2..]
    set -l is_repeating_positional $_flag_r
    set -el _flag_r
    set -a commands $unparsed_tokens[1]
    set positional_index 0
    while true
        set -e unparsed_tokens[1]
        argparse -sn "$commands" $option_specs -- $unparsed_tokens 2> /dev/null
        set unparsed_tokens $argv
        set positional_index (math $positional_index + 1)
        for non_repeating_flag_or_option in $non_repeating_flags_or_options
            if set -ql "_flag_$(string replace -a - _ -- $non_repeating_flag_or_option)"
                set non_repeating_flags_or_options_absent 1
                break
            end
        end
        test (count $unparsed_tokens) -eq 0 -o \( -z "$is_repeating_positional" -a "$positional_index" -gt "$positional_count" \) && break
    end
end

function __instancepoller_complete_directories
    set -l token (commandline -t)
    string match -- '*/' $token
    set -l subdirs $token*/
    printf %s\n $subdirs
end

function __instancepoller_custom_completion
    set -x SAP_SHELL fish
    set -x SAP_SHELL_VERSION $FISH_VERSION
    set -l tokens (__instancepoller_tokens -p)
    if test -z "$(__instancepoller_tokens -t)"
        set -l index (count (__instancepoller_tokens -pc))
        set tokens $tokens[..$index] \'\' $tokens[(math $index + 1)..]
    end
    command $tokens[1] $argv $tokens
end

complete -c 'instancepoller' -f
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller" -eq 1' -fa 'run' -d 'Run the controller: supervise the provider shims and poll every machine.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller" -eq 1' -fa 'check-config' -d 'Check a config file as the controller would read it, listing every problem.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller" -eq 1' -fa 'demo' -d 'Run the controller on a built-in fleet of 20 machines on two fake clouds and watch it work.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller" -eq 1' -fa 'status' -d 'Show the controller, its providers\' shims and its machines at a glance.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller" -eq 1' -fa 'machines' -d 'Add, remove, list and inspect machine records.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller" -eq 1' -fa 'credentials' -d 'Set, list, validate and remove cloud credentials (secrets are never printed).'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller" -eq 1' -fa 'providers' -d 'List providers\' shims, or swap one live.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller" -eq 1' -fa 'watch' -d 'Print the events log, then follow new events until interrupted.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller" -eq 1' -fa 'help' -d 'Show subcommand help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller run" config' -l 'config' -d 'The config file.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller run" log-level' -l 'log-level' -d 'Overrides the config\'s log level: trace, debug, info, notice, warning, error, critical.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller run" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller run" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller check-config" connect' -l 'connect' -d 'Also start each provider\'s shim, call Health and ValidateCredential for each credential, and stop the shims.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller check-config" format' -l 'format' -d 'Output: table (a summary for people), json or yaml (one document for scripts).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller check-config" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller check-config" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller demo" duration' -l 'duration' -d 'Seconds to run (the script needs about 40).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller demo" plain' -l 'plain' -d 'Print events as plain lines even on a terminal.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller demo" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller demo" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller status" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller status" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller status" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller status" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller status" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller machines" -eq 1' -fa 'add' -d 'Add a machine; it is polled at once.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller machines" -eq 1' -fa 'remove' -d 'Remove a machine, or every machine listed in a file; they are no longer polled.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller machines" -eq 1' -fa 'list' -d 'List machines with their polled status, filtered by the controller.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller machines" -eq 1' -fa 'show' -d 'Show one machine in full: status, interfaces, schedule.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller machines" -eq 1' -fa 'set-agent-status' -d 'Record the status of a machine\'s agent.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller machines" -eq 1' -fa 'import' -d 'Add many machines from a file: CSV, JSON lines or YAML.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines add" provider' -l 'provider' -d 'The configured provider that serves its cloud.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines add" credential' -l 'credential' -d 'The name of the credential its cloud calls use.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines add" instance-id' -l 'instance-id' -d 'The cloud\'s instance id (leave out while not provisioned).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines add" manual' -l 'manual' -d 'Manually provisioned: never polled, marked running.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines add" agent-status' -l 'agent-status' -d 'none (agentless), pending, started, error or down.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines add" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines add" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines add" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines add" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines add" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines remove" file' -l 'file' -d 'Remove the machines listed in this file (- for stdin).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines remove" input-format' -l 'input-format' -d 'ids (one per line), csv, jsonl or yaml (default: from the file\'s extension, else ids).' -rfka 'csv jsonl yaml ids'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines remove" chunk-size' -l 'chunk-size' -d 'Machines per transaction (1 to 2000).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines remove" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines remove" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines remove" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines remove" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines remove" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines list" provider' -l 'provider' -d 'Only this provider\'s machines.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines list" credential' -l 'credential' -d 'Only machines using this credential.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines list" state' -l 'state' -d 'Only machines in this instance state: running, stopped, not-found, unknown, …' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines list" group' -l 'group' -d 'Only machines in this poll group: short, long or none (not tracked).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines list" agent-status' -l 'agent-status' -d 'Only machines with this agent status: none, pending, started, error or down.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines list" with-error' -l 'with-error' -d 'Only machines whose last poll failed.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines list" ids-only' -l 'ids-only' -d 'Print only the ids, one per line.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines list" page-size' -l 'page-size' -d 'Machines per request (1 to 10000).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines list" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines list" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines list" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines list" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines list" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines show" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines show" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines show" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines show" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines show" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines set-agent-status" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines set-agent-status" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines set-agent-status" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines set-agent-status" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines set-agent-status" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines import" input-format' -l 'input-format' -d 'csv, jsonl or yaml (default: from the file\'s extension).' -rfka 'csv jsonl yaml ids'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines import" update' -l 'update' -d 'Replace machines whose id exists (provider, credential, instance id, agent status, manual) instead of refusing them.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines import" dry-run' -l 'dry-run' -d 'Check the file and the controller\'s answers; import nothing.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines import" chunk-size' -l 'chunk-size' -d 'Machines per transaction (1 to 2000).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines import" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines import" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines import" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines import" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller machines import" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller credentials" -eq 1' -fa 'set' -d 'Add or replace a credential.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller credentials" -eq 1' -fa 'list' -d 'List credentials: names, attribute names and validity, never values.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller credentials" -eq 1' -fa 'validate' -d 'Ask the provider\'s shim now whether a credential is usable.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller credentials" -eq 1' -fa 'remove' -d 'Remove a credential.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller credentials" -eq 1' -fa 'new-key' -d 'Put a new credential key first in a credential_key_file (creating it 0600 if missing); prints the key\'s id.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller credentials" -eq 1' -fa 'reseal' -d 'Seal every stored credential again with the first key of the controller\'s credential_key_file.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials set" auth-type' -l 'auth-type' -d 'The auth type, e.g. access-key.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials set" file' -l 'file' -d 'YAML file of attribute: value (0600), or - for stdin.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials set" expires' -l 'expires' -d 'Expiry, e.g. 2027-01-31T00:00:00Z.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials set" allow-expired' -l 'allow-expired' -d 'Set it even though --expires is in the past (its machines pause: the gate refuses it).'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials set" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials set" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials set" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials set" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials set" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials list" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials list" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials list" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials list" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials list" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials validate" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials validate" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials validate" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials validate" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials validate" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials remove" force' -l 'force' -d 'Remove it even while machines use it (they pause).'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials remove" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials remove" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials remove" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials remove" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials remove" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials new-key" file' -l 'file' -d 'The key file (the config\'s credential_key_file).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials new-key" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials new-key" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials reseal" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials reseal" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials reseal" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials reseal" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller credentials reseal" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller providers" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller providers" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller providers" -eq 1' -fa 'list' -d 'List the providers and their shims.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_positional "instancepoller providers" -eq 1' -fa 'swap' -d 'Swap a provider\'s shim live, without restarting the controller.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller providers list" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller providers list" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller providers list" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller providers list" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller providers list" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller providers swap"' -l 'env' -d 'An environment variable the new shim may see (repeat).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller providers swap" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller providers swap" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller providers swap" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller providers swap" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller providers swap" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller watch" after' -l 'after' -d 'Start after this revision.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller watch" last' -l 'last' -d 'Start with the N latest events.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller watch" no-follow' -l 'no-follow' -d 'Print what is there and stop instead of following.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller watch" runtime-dir' -l 'runtime-dir' -d 'The controller\'s runtime directory (holds control.sock). Default: --config\'s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit\'s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller watch" config' -l 'config' -d 'Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).' -rfka ''
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller watch" format' -l 'format' -d 'Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON\'s fields as YAML).' -rfka 'table json jsonl yaml'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller watch" version' -l 'version' -d 'Show the version.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller watch" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'instancepoller' -n '__instancepoller_should_offer_completions_for_flags_or_options "instancepoller help" version' -l 'version' -d 'Show the version.'

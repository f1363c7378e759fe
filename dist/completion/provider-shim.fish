function __provider-shim_should_offer_completions_for_flags_or_options -a expected_commands
    set -l non_repeating_flags_or_options $argv[2..]
    set -l non_repeating_flags_or_options_absent 0
    set -l positional_index 0
    set -l commands
    __provider-shim_parse_tokens
    test "$commands" = "$expected_commands"; and return $non_repeating_flags_or_options_absent
end

function __provider-shim_should_offer_completions_for_positional -a expected_commands positional_index_comparison expected_positional_index
    set -l non_repeating_flags_or_options
    set -l non_repeating_flags_or_options_absent 0
    set -l positional_index 0
    set -l commands
    __provider-shim_parse_tokens
    test "$commands" = "$expected_commands" -a \( "$positional_index" "$positional_index_comparison" "$expected_positional_index" \)
end

function __provider-shim_parse_tokens -S
    set -l unparsed_tokens (__provider-shim_tokens -pc)
    switch $unparsed_tokens[1]
    case 'provider-shim'
        __provider-shim_parse_subcommand 0 'version' 'h/help'
        switch $unparsed_tokens[1]
        case 'fake'
            __provider-shim_parse_subcommand 0 'scenario=' 'manual-clock' 'epoch=' 'call-log=' 'log-level=' 'drain-timeout=' 'version' 'h/help'
        case 'ec2'
            __provider-shim_parse_subcommand 0 'credential-ttl=' 'max-attempts=' 'credential-refresh-margin=' 'log-level=' 'drain-timeout=' 'version' 'h/help'
        case 'vsphere'
            __provider-shim_parse_subcommand 0 'credential-ttl=' 'max-attempts=' 'inventory-ttl=' 'log-level=' 'drain-timeout=' 'version' 'h/help'
        case 'help'
            __provider-shim_parse_subcommand -r 1 'version'
        end
    end
end

function __provider-shim_tokens
    if test (string split -m 1 -f 1 -- . "$FISH_VERSION") -gt 3
        commandline --tokens-raw $argv
    else
        commandline -o $argv
    end
end

function __provider-shim_parse_subcommand -S -a positional_count
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

function __provider-shim_complete_directories
    set -l token (commandline -t)
    string match -- '*/' $token
    set -l subdirs $token*/
    printf %s\n $subdirs
end

function __provider-shim_custom_completion
    set -x SAP_SHELL fish
    set -x SAP_SHELL_VERSION $FISH_VERSION
    set -l tokens (__provider-shim_tokens -p)
    if test -z "$(__provider-shim_tokens -t)"
        set -l index (count (__provider-shim_tokens -pc))
        set tokens $tokens[..$index] \'\' $tokens[(math $index + 1)..]
    end
    command $tokens[1] $argv $tokens
end

complete -c 'provider-shim' -f
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim" version' -l 'version' -d 'Show the version.'
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_positional "provider-shim" -eq 1' -fa 'fake' -d 'A fake cloud driven by a scenario file, for tests and the demo.'
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_positional "provider-shim" -eq 1' -fa 'ec2' -d 'Amazon EC2 over its Query API (HTTPS, Signature V4).'
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_positional "provider-shim" -eq 1' -fa 'vsphere' -d 'VMware vSphere (vCenter) over its Web Services API (SOAP over HTTPS).'
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_positional "provider-shim" -eq 1' -fa 'help' -d 'Show subcommand help information.'
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim fake" scenario' -l 'scenario' -d 'Scenario file (YAML or JSON).' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim fake" manual-clock' -l 'manual-clock' -d 'Run timelines on a clock that moves only by FakeCloud.AdvanceClock.'
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim fake" epoch' -l 'epoch' -d 'Scenario time 0 is this wall-clock time (Unix seconds), so a restarted or swapped-in shim continues the timelines instead of starting them over.' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim fake" call-log' -l 'call-log' -d 'Append a line per start and end of each Instances and NetworkInterfaces call to this file (shared by several shims; for tests).' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim fake" log-level' -l 'log-level' -d 'Log level on stderr: trace, debug, info, notice, warning, error, critical.' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim fake" drain-timeout' -l 'drain-timeout' -d 'Seconds SIGTERM or Shutdown waits for calls in flight.' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim fake" version' -l 'version' -d 'Show the version.'
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim fake" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim ec2" credential-ttl' -l 'credential-ttl' -d 'Seconds a ValidateCredential answer is cached per credential.' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim ec2" max-attempts' -l 'max-attempts' -d 'Attempts per EC2 call on 5xx and connection errors (jittered backoff, within the call\'s deadline).' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim ec2" credential-refresh-margin' -l 'credential-refresh-margin' -d 'Temporary keys (assume-role, instance-role) are obtained anew once fewer than this many seconds, or less than 10 % of their lifetime, are left.' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim ec2" log-level' -l 'log-level' -d 'Log level on stderr: trace, debug, info, notice, warning, error, critical.' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim ec2" drain-timeout' -l 'drain-timeout' -d 'Seconds SIGTERM or Shutdown waits for calls in flight.' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim ec2" version' -l 'version' -d 'Show the version.'
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim ec2" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim vsphere" credential-ttl' -l 'credential-ttl' -d 'Seconds a ValidateCredential answer is cached per credential.' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim vsphere" max-attempts' -l 'max-attempts' -d 'Attempts per vSphere request on 5xx and connection errors (jittered backoff, within the call\'s deadline).' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim vsphere" inventory-ttl' -l 'inventory-ttl' -d 'Seconds a scope\'s VM names and UUIDs are kept between calls, so that a batch reads its own VMs only (0: read the scope every call).' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim vsphere" log-level' -l 'log-level' -d 'Log level on stderr: trace, debug, info, notice, warning, error, critical.' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim vsphere" drain-timeout' -l 'drain-timeout' -d 'Seconds SIGTERM or Shutdown waits for calls in flight.' -rfka ''
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim vsphere" version' -l 'version' -d 'Show the version.'
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim vsphere" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'provider-shim' -n '__provider-shim_should_offer_completions_for_flags_or_options "provider-shim help" version' -l 'version' -d 'Show the version.'

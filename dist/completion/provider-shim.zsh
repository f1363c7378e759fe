#compdef provider-shim

__provider-shim_complete() {
    local -ar non_empty_completions=("${@:#(|:*)}")
    local -ar empty_completions=("${(M)@:#(|:*)}")
    _describe -V '' non_empty_completions -- empty_completions -P $'\'\''
}

__provider-shim_custom_complete() {
    local -a completions
    completions=("${(@f)"$("${command_name}" "${@}" "${command_line[@]}")"}")
    if [[ "${#completions[@]}" -gt 1 ]]; then
        __provider-shim_complete "${completions[@]:0:-1}"
    fi
}

__provider-shim_cursor_index_in_current_word() {
    if [[ -z "${QIPREFIX}${IPREFIX}${PREFIX}" ]]; then
        printf 0
    else
        printf %s "${#${(z)LBUFFER}[-1]}"
    fi
}

_provider-shim() {
    emulate -RL zsh -G
    setopt extendedglob nullglob numericglobsort
    unsetopt aliases banghist

    local -xr SAP_SHELL=zsh
    local -x SAP_SHELL_VERSION
    SAP_SHELL_VERSION="$(builtin emulate zsh -c 'printf %s "${ZSH_VERSION}"')"
    local -r SAP_SHELL_VERSION

    local context state state_descr line
    local -A opt_args

    local -r command_name="${words[1]}"
    local -ar command_line=("${words[@]}")
    local -ir current_word_index="$((CURRENT - 1))"

    local -i ret=1
    local -ar arg_specs=(
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
        '(-): :->command'
        '(-)*:: :->arg'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0
    case "${state}" in
    command)
        local -ar subcommands=(
            'fake:A fake cloud driven by a scenario file, for tests and the demo.'
            'ec2:Amazon EC2 over its Query API (HTTPS, Signature V4).'
            'vsphere:VMware vSphere (vCenter) over its Web Services API (SOAP over HTTPS).'
            'help:Show subcommand help information.'
        )
        _describe -V subcommand subcommands && ret=0
        ;;
    arg)
        case "${words[1]}" in
        fake|ec2|vsphere|help)
            "_provider-shim_${words[1]}" && ret=0
            ;;
        esac
        ;;
    esac

    return "${ret}"
}

_provider-shim_fake() {
    local -i ret=1
    local -ar arg_specs=(
        '--scenario[Scenario file (YAML or JSON).]:scenario:'
        '--manual-clock[Run timelines on a clock that moves only by FakeCloud.AdvanceClock.]'
        '--epoch[Scenario time 0 is this wall-clock time (Unix seconds), so a restarted or swapped-in shim continues the timelines instead of starting them over.]:SECONDS:'
        '--call-log[Append a line per start and end of each Instances and NetworkInterfaces call to this file (shared by several shims; for tests).]:FILE:'
        '--log-level[Log level on stderr\: trace, debug, info, notice, warning, error, critical.]:log-level:'
        '--drain-timeout[Seconds SIGTERM or Shutdown waits for calls in flight.]:drain-timeout:'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_provider-shim_ec2() {
    local -i ret=1
    local -ar arg_specs=(
        '--credential-ttl[Seconds a ValidateCredential answer is cached per credential.]:credential-ttl:'
        '--max-attempts[Attempts per EC2 call on 5xx and connection errors (jittered backoff, within the call'\''s deadline).]:max-attempts:'
        '--credential-refresh-margin[Temporary keys (assume-role, instance-role) are obtained anew once fewer than this many seconds, or less than 10 % of their lifetime, are left.]:SECONDS:'
        '--log-level[Log level on stderr\: trace, debug, info, notice, warning, error, critical.]:log-level:'
        '--drain-timeout[Seconds SIGTERM or Shutdown waits for calls in flight.]:drain-timeout:'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_provider-shim_vsphere() {
    local -i ret=1
    local -ar arg_specs=(
        '--credential-ttl[Seconds a ValidateCredential answer is cached per credential.]:credential-ttl:'
        '--max-attempts[Attempts per vSphere request on 5xx and connection errors (jittered backoff, within the call'\''s deadline).]:max-attempts:'
        '--inventory-ttl[Seconds a scope'\''s VM names and UUIDs are kept between calls, so that a batch reads its own VMs only (0\: read the scope every call).]:inventory-ttl:'
        '--log-level[Log level on stderr\: trace, debug, info, notice, warning, error, critical.]:log-level:'
        '--drain-timeout[Seconds SIGTERM or Shutdown waits for calls in flight.]:drain-timeout:'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_provider-shim_help() {
    local -i ret=1
    local -ar arg_specs=(
        '*:subcommands:'
        '--version[Show the version.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

if [[ "${funcstack[1]}" = _provider-shim ]]; then
    _provider-shim "${@}"
else
    compdef _provider-shim provider-shim
fi

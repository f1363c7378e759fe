#compdef instancepoller

__instancepoller_complete() {
    local -ar non_empty_completions=("${@:#(|:*)}")
    local -ar empty_completions=("${(M)@:#(|:*)}")
    _describe -V '' non_empty_completions -- empty_completions -P $'\'\''
}

__instancepoller_custom_complete() {
    local -a completions
    completions=("${(@f)"$("${command_name}" "${@}" "${command_line[@]}")"}")
    if [[ "${#completions[@]}" -gt 1 ]]; then
        __instancepoller_complete "${completions[@]:0:-1}"
    fi
}

__instancepoller_cursor_index_in_current_word() {
    if [[ -z "${QIPREFIX}${IPREFIX}${PREFIX}" ]]; then
        printf 0
    else
        printf %s "${#${(z)LBUFFER}[-1]}"
    fi
}

_instancepoller() {
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
            'run:Run the controller: supervise the provider shims and poll every machine.'
            'check-config:Check a config file as the controller would read it, listing every problem.'
            'demo:Run the controller on a built-in fleet of 20 machines on two fake clouds and watch it work.'
            'status:Show the controller, its providers'\'' shims and its machines at a glance.'
            'machines:Add, remove, list and inspect machine records.'
            'credentials:Set, list, validate and remove cloud credentials (secrets are never printed).'
            'providers:List providers'\'' shims, or swap one live.'
            'watch:Print the events log, then follow new events until interrupted.'
            'help:Show subcommand help information.'
        )
        _describe -V subcommand subcommands && ret=0
        ;;
    arg)
        case "${words[1]}" in
        run|check-config|demo|status|machines|credentials|providers|watch|help)
            "_instancepoller_${words[1]}" && ret=0
            ;;
        esac
        ;;
    esac

    return "${ret}"
}

_instancepoller_run() {
    local -i ret=1
    local -ar arg_specs=(
        '--config[The config file.]:FILE:'
        '--log-level[Overrides the config'\''s log level\: trace, debug, info, notice, warning, error, critical.]:log-level:'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_check-config() {
    local -i ret=1
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        ':FILE:'
        '--connect[Also start each provider'\''s shim, call Health and ValidateCredential for each credential, and stop the shims.]'
        '--format[Output\: table (a summary for people), json or yaml (one document for scripts).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_demo() {
    local -i ret=1
    local -ar arg_specs=(
        '--duration[Seconds to run (the script needs about 40).]:duration:'
        '--plain[Print events as plain lines even on a terminal.]'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_status() {
    local -i ret=1
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_machines() {
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
            'add:Add a machine; it is polled at once.'
            'remove:Remove a machine, or every machine listed in a file; they are no longer polled.'
            'list:List machines with their polled status, filtered by the controller.'
            'show:Show one machine in full: status, interfaces, schedule.'
            'set-agent-status:Record the status of a machine'\''s agent.'
            'import:Add many machines from a file: CSV, JSON lines or YAML.'
        )
        _describe -V subcommand subcommands && ret=0
        ;;
    arg)
        case "${words[1]}" in
        add|remove|list|show|set-agent-status|import)
            "_instancepoller_machines_${words[1]}" && ret=0
            ;;
        esac
        ;;
    esac

    return "${ret}"
}

_instancepoller_machines_add() {
    local -i ret=1
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        ':id:'
        '--provider[The configured provider that serves its cloud.]:provider:'
        '--credential[The name of the credential its cloud calls use.]:credential:'
        '--instance-id[The cloud'\''s instance id (leave out while not provisioned).]:instance-id:'
        '--manual[Manually provisioned\: never polled, marked running.]'
        '--agent-status[none (agentless), pending, started, error or down.]:agent-status:'
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_machines_remove() {
    local -i ret=1
    local -ar ___input_format=('csv' 'jsonl' 'yaml' 'ids')
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        ':id:'
        '--file[Remove the machines listed in this file (- for stdin).]:FILE:'
        '--input-format[ids (one per line), csv, jsonl or yaml (default\: from the file'\''s extension, else ids).]:input-format:{__instancepoller_complete "${___input_format[@]}"}'
        '--chunk-size[Machines per transaction (1 to 2000).]:chunk-size:'
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_machines_list() {
    local -i ret=1
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        '--provider[Only this provider'\''s machines.]:provider:'
        '--credential[Only machines using this credential.]:credential:'
        '--state[Only machines in this instance state\: running, stopped, not-found, unknown, …]:state:'
        '--group[Only machines in this poll group\: short, long or none (not tracked).]:group:'
        '--agent-status[Only machines with this agent status\: none, pending, started, error or down.]:agent-status:'
        '--with-error[Only machines whose last poll failed.]'
        '--ids-only[Print only the ids, one per line.]'
        '--page-size[Machines per request (1 to 10000).]:page-size:'
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_machines_show() {
    local -i ret=1
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        ':id:'
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_machines_set-agent-status() {
    local -i ret=1
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        ':id:'
        ':status:'
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_machines_import() {
    local -i ret=1
    local -ar ___input_format=('csv' 'jsonl' 'yaml' 'ids')
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        ':FILE:'
        '--input-format[csv, jsonl or yaml (default\: from the file'\''s extension).]:input-format:{__instancepoller_complete "${___input_format[@]}"}'
        '--update[Replace machines whose id exists (provider, credential, instance id, agent status, manual) instead of refusing them.]'
        '--dry-run[Check the file and the controller'\''s answers; import nothing.]'
        '--chunk-size[Machines per transaction (1 to 2000).]:chunk-size:'
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_credentials() {
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
            'set:Add or replace a credential.'
            'list:List credentials: names, attribute names and validity, never values.'
            'validate:Ask the provider'\''s shim now whether a credential is usable.'
            'remove:Remove a credential.'
            'new-key:Put a new credential key first in a credential_key_file (creating it 0600 if missing); prints the key'\''s id.'
            'reseal:Seal every stored credential again with the first key of the controller'\''s credential_key_file.'
        )
        _describe -V subcommand subcommands && ret=0
        ;;
    arg)
        case "${words[1]}" in
        set|list|validate|remove|new-key|reseal)
            "_instancepoller_credentials_${words[1]}" && ret=0
            ;;
        esac
        ;;
    esac

    return "${ret}"
}

_instancepoller_credentials_set() {
    local -i ret=1
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        ':provider:'
        ':name:'
        '--auth-type[The auth type, e.g. access-key.]:auth-type:'
        '--file[YAML file of attribute\: value (0600), or - for stdin.]:FILE:'
        '--expires[Expiry, e.g. 2027-01-31T00\:00\:00Z.]:TIME:'
        '--allow-expired[Set it even though --expires is in the past (its machines pause\: the gate refuses it).]'
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_credentials_list() {
    local -i ret=1
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_credentials_validate() {
    local -i ret=1
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        ':provider:'
        ':name:'
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_credentials_remove() {
    local -i ret=1
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        ':provider:'
        ':name:'
        '--force[Remove it even while machines use it (they pause).]'
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_credentials_new-key() {
    local -i ret=1
    local -ar arg_specs=(
        '--file[The key file (the config'\''s credential_key_file).]:PATH:'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_credentials_reseal() {
    local -i ret=1
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_providers() {
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
            'list:List the providers and their shims.'
            'swap:Swap a provider'\''s shim live, without restarting the controller.'
        )
        _describe -V subcommand subcommands && ret=0
        ;;
    arg)
        case "${words[1]}" in
        list|swap)
            "_instancepoller_providers_${words[1]}" && ret=0
            ;;
        esac
        ;;
    esac

    return "${ret}"
}

_instancepoller_providers_list() {
    local -i ret=1
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_providers_swap() {
    local -i ret=1
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        ':provider:'
        '*--env[An environment variable the new shim may see (repeat).]:NAME:'
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '*:command:'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_watch() {
    local -i ret=1
    local -ar ___format=('table' 'json' 'jsonl' 'yaml')
    local -ar arg_specs=(
        '--after[Start after this revision.]:REV:'
        '--last[Start with the N latest events.]:N:'
        '--no-follow[Print what is there and stop instead of following.]'
        '--runtime-dir[The controller'\''s runtime directory (holds control.sock). Default\: --config'\''s runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root and for the user that owns it (the systemd unit'\''s), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID.]:DIR:'
        '--config[Read the runtime directory from this config file (only runtime_directory is used\: other errors in it are a warning).]:FILE:'
        '--format[Output\: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON'\''s fields as YAML).]:format:{__instancepoller_complete "${___format[@]}"}'
        '--version[Show the version.]'
        '(-h --help)'{-h,--help}'[Show help information.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

_instancepoller_help() {
    local -i ret=1
    local -ar arg_specs=(
        '*:subcommands:'
        '--version[Show the version.]'
    )
    _arguments -w -s -S : "${arg_specs[@]}" && ret=0

    return "${ret}"
}

if [[ "${funcstack[1]}" = _instancepoller ]]; then
    _instancepoller "${@}"
else
    compdef _instancepoller instancepoller
fi

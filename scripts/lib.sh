# shellcheck shell=bash disable=SC2034
# scripts/lib.sh -- shell helpers shared by scripts/deps, scripts/stack and scripts/demo.
# Sourced, never run. Sets EB_ROOT (the repository's top folder) and defines small helpers for
# messages, paths, pid files, loopback ports and waiting. Each caller sets EB_PROG (its name, for
# messages) before sourcing. Nothing here starts or stops anything by itself.

EB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
EB_PROG=${EB_PROG:-evalbus}

# Messages: progress on stdout, warnings and errors on stderr.
eb_say() { printf '%s: %s\n' "$EB_PROG" "$*"; }
eb_warn() { printf '%s: warning: %s\n' "$EB_PROG" "$*" >&2; }
eb_die() {
    printf '%s: error: %s\n' "$EB_PROG" "$*" >&2
    exit 1
}

# eb_abspath PATH -- PATH made absolute against the current folder and normalized; the path
# need not exist.
eb_abspath() { realpath -m -- "$1"; }

# eb_random_hex N -- N random bytes from the kernel's CSPRNG as 2N lowercase hex characters.
eb_random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# eb_pid_of PIDFILE -- prints the pid recorded in PIDFILE; fails if there is none.
eb_pid_of() {
    local pid=""
    [[ -r $1 ]] || return 1
    read -r pid <"$1" 2>/dev/null || true
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "$pid"
}

# eb_proc_alive PID [WORD] -- true if PID is a live process (not a zombie) and, when WORD is
# given, its command line contains WORD (guards against a recycled pid).
eb_proc_alive() {
    local pid=$1 want=${2-} state cmd
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z && $state != X ]] || return 1
    [[ -z $want ]] && return 0
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmd == *"$want"* ]]
}

# eb_pidfile_alive PIDFILE [WORD] -- true if PIDFILE names a live process (see eb_proc_alive).
eb_pidfile_alive() {
    local pid
    pid=$(eb_pid_of "$1") || return 1
    eb_proc_alive "$pid" "${2-}"
}

# eb_stop_pidfile PIDFILE WORD SECONDS -- SIGTERM the process PIDFILE names (if it is alive and
# its command line contains WORD), wait up to SECONDS for it to exit, then SIGKILL it. Removes
# PIDFILE. Returns 0 if nothing is left running.
eb_stop_pidfile() {
    local file=$1 want=$2 secs=$3 pid="" i
    if pid=$(eb_pid_of "$file") && eb_proc_alive "$pid" "$want"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < secs * 10; i++)); do
            eb_proc_alive "$pid" "$want" || break
            sleep 0.1
        done
        if eb_proc_alive "$pid" "$want"; then
            eb_warn "$want (pid $pid) did not stop within ${secs}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f -- "$file"
    if [[ -n $pid ]] && eb_proc_alive "$pid" "$want"; then
        return 1
    fi
    return 0
}

# eb_port_busy PORT -- true if something accepts TCP connections on 127.0.0.1:PORT.
eb_port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# eb_wait_until SECONDS CMD... -- runs CMD every 0.2 s until it succeeds (returns 0) or SECONDS
# have passed (returns 1).
eb_wait_until() {
    local secs=$1 deadline
    shift
    deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        "$@" && return 0
        sleep 0.2
    done
    "$@"
}

# eb_tail_log FILE [LINES] -- prints to stderr, indented, the last LINES lines of FILE written
# since its last start marker (a line beginning with "=== ", see eb_log_marker).
eb_tail_log() {
    local file=$1 lines=${2:-30}
    if [[ -s $file ]]; then
        printf '%s: last lines of %s:\n' "$EB_PROG" "$file" >&2
        awk '/^=== / { n = 0 } { buf[n++] = $0 } END { for (i = 0; i < n; i++) print buf[i] }' \
            "$file" | tail -n "$lines" | sed 's/^/    /' >&2
    else
        printf '%s: %s is empty or missing\n' "$EB_PROG" "$file" >&2
    fi
}

# eb_log_marker FILE WHAT -- appends a start marker line to FILE.
eb_log_marker() { printf '=== %s %s\n' "$(date -u +%FT%TZ)" "$2" >>"$1"; }

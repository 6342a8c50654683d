#!/usr/bin/env bash
# Crash loop of the local test mail server (issue 11): stop and start Postfix
# and Dovecot of a scripts/testserver.sh instance again and again, bounded in
# restarts and time, and leave the server running at the end.
#
# Usage: scripts/crashloop.sh [-u UP] [-d DOWN] [-n COUNT] [-t TOTAL]
#                             [--dovecot-only|--postfix-only] [--kill]
#
#   -u, --up SECONDS     how long the services stay up between restarts
#                        (default 6; fractions allowed)
#   -d, --down SECONDS   how long they stay down (default 3)
#   -n, --count N        at most N restarts (default 10)
#   -t, --total SECONDS  at most this long (default 120): no restart begins
#                        after it and a down phase is cut short at it, so the
#                        loop ends at most one start (about 2 s) later
#   --dovecot-only       restart only Dovecot (IMAP, POP3, LMTP, SASL): SMTP
#                        greets all the time, AUTH and delivery fail while down
#   --postfix-only       restart only Postfix (SMTP, submission, SMTPS)
#   --kill               stop by SIGKILL, like a crash (open connections are
#                        reset), instead of a clean shutdown
#
# The loop begins with an up phase (the server is started first if needed:
# 'testserver.sh resume', which keeps any fault in effect, e.g. 'checks' or
# 'pop3 off'). Each restart is "stop, wait DOWN, start and wait for every
# greeting, wait UP": a period is UP + DOWN + about 1-4 s.
#
# One line per event on stdout, for tests to line up with what a client saw:
#   <unix time, ms> stopping|down|starting|up all|dovecot|postfix
#   <unix time, ms> done <restarts>
# Listeners close right after "stopping" (a clean stop takes 0.2-2.5 s more
# to finish, then "down"); "starting" comes after DOWN seconds and "up" once
# every greeting answers. SIGTERM/SIGINT end the loop at once, with the
# server started.
#
# Instance: the same environment as scripts/testserver.sh (MAILPROBE_TEST_DIR,
# MAILPROBE_TEST_*_PORT); root is needed (testserver.sh re-runs through sudo).
set -euo pipefail

HERE=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
TESTSERVER=$HERE/testserver.sh
SCRIPT_NAME=$(basename -- "${BASH_SOURCE[0]}")

UP=6
DOWN=3
COUNT=10
TOTAL=120
WHICH=all
KILL=()

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { log "error: $*"; exit 2; }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

seconds_arg() { # option value
    [[ $2 =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$1 needs a number of seconds, not '$2'"
    echo "$2"
}

while (($#)); do
    case $1 in
        -u | --up) UP=$(seconds_arg "$1" "${2:-}"); shift 2 ;;
        -d | --down) DOWN=$(seconds_arg "$1" "${2:-}"); shift 2 ;;
        -n | --count)
            [[ ${2:-} =~ ^[0-9]+$ ]] || die "$1 needs a whole number, not '${2:-}'"
            COUNT=$2
            shift 2
            ;;
        -t | --total) TOTAL=$(seconds_arg "$1" "${2:-}"); shift 2 ;;
        --dovecot-only) WHICH=dovecot; shift ;;
        --postfix-only) WHICH=postfix; shift ;;
        --kill) KILL=(--kill); shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

# Milliseconds since the epoch, and "seconds.milliseconds" for the events.
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((10#$t / 1000)); }
event() { local t=$EPOCHREALTIME; printf '%s %s\n' "${t:0:-3}" "$*"; }
to_ms() { # seconds with up to 3 decimals
    local whole=${1%%.*} frac=000
    [[ $1 == *.* ]] && frac=${1#*.}000
    echo $((10#$whole * 1000 + 10#${frac:0:3}))
}

DEADLINE=$(($(now_ms) + $(to_ms "$TOTAL")))
ERR=$(mktemp)
SERVER_DOWN=0
SLEEPER=""

# Run testserver.sh; the daemons it starts inherit these descriptors, so
# never a pipe somebody waits on.
testserver() {
    if ! bash "$TESTSERVER" "$@" </dev/null >/dev/null 2>"$ERR"; then
        cat "$ERR" >&2
        return 1
    fi
}

# Sleep at most until the deadline, interruptibly (a trap runs at once).
# Returns 1 when the deadline cut the sleep short.
sleep_until_deadline() { # seconds
    local want left
    want=$(to_ms "$1")
    left=$((DEADLINE - $(now_ms)))
    ((left > 0)) || return 1
    local cut=0
    if ((want > left)); then
        want=$left
        cut=1
    fi
    sleep "$((want / 1000)).$(printf '%03d' $((want % 1000)))" &
    SLEEPER=$!
    wait "$SLEEPER" || true
    SLEEPER=""
    return "$cut"
}

finish() {
    local status=$?
    trap - EXIT INT TERM
    [[ -z $SLEEPER ]] || kill "$SLEEPER" 2>/dev/null || true
    if ((SERVER_DOWN)); then
        testserver resume "$WHICH" || { log "could not start the server again"; status=1; }
        event up "$WHICH"
    fi
    rm -f "$ERR"
    exit "$status"
}
trap finish EXIT
trap 'log "stopped by a signal"; exit 143' TERM
trap 'log "stopped by a signal"; exit 130' INT

log "restarting $WHICH: up ${UP}s, down ${DOWN}s, at most $COUNT restarts in ${TOTAL}s${KILL:+ (SIGKILL)}"
testserver resume "$WHICH" || die "the test server does not run; start it with scripts/testserver.sh start"
event up "$WHICH"
restarts=0
while ((restarts < COUNT)); do
    sleep_until_deadline "$UP" || break
    SERVER_DOWN=1
    event stopping "$WHICH"
    testserver stop "${KILL[@]}" "$WHICH"
    event down "$WHICH"
    sleep_until_deadline "$DOWN" || true
    event starting "$WHICH"
    testserver resume "$WHICH"
    SERVER_DOWN=0
    event up "$WHICH"
    restarts=$((restarts + 1))
    (($(now_ms) < DEADLINE)) || break
done
event "done" "$restarts"

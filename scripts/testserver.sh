#!/usr/bin/env bash
# Local test mail server for mailprobe: Postfix (SMTP, submission, SMTPS) and
# Dovecot (IMAP, IMAPS, POP3, POP3S, LMTP, SASL) from Debian packages, run as a
# private instance with its own configuration, started WITHOUT systemd.
#
# Usage: scripts/testserver.sh install|start|stop|resume|status|run|env
#                              |reset-config|postconf KEY=VALUE...
#                              |checks KIND RULE...|pop3 on|off
#                              |quota USER BYTES [tempfail]|off
#                              |bounce-large BYTES [data|size]|off
#                              |dsn on|off|junk USER|all on|off
#                              |oauth on|off|token USER [SECONDS] [--bad-signature]
#                              |auth-penalty on|off|purge-queue ADDRESS...
#
#   install       install the Debian packages only (used by start and Docker)
#   start         install if needed, configure, start, wait for every greeting
#                 (idempotent: if everything answers it only re-checks; when
#                 it has to start something, the configuration is pristine)
#   stop [--kill] [postfix|dovecot]
#                 stop Postfix and Dovecot (or only the one named), kill
#                 leftovers (idempotent); --kill: SIGKILL instead of a clean
#                 shutdown, like a crash (connections are reset)
#   resume [postfix|dovecot]
#                 start stopped daemons again WITHOUT rewriting their
#                 configuration (faults stay in effect), wait for their
#                 greetings; used by scripts/crashloop.sh
#   status        exit 0 if every port answers with its greeting, else 1
#   run           start, then stay in the foreground tailing the logs until
#                 SIGTERM/SIGINT (container entry point)
#   env           print `export` lines for the endpoints:
#                 eval "$(scripts/testserver.sh env)"
#   postconf K=V  set Postfix main.cf parameters of the test instance, reload
#   reset-config  rewrite the pristine configuration, reload (undoes every
#                 fault below: checks, pop3, quota, bounce-large, dsn, junk,
#                 oauth, auth-penalty)
#   checks KIND RULE...
#                 fault injection: write the regexp table
#                 etc/postfix/fault-KIND_checks.regexp with one RULE per line
#                 and set KIND_checks to it (KIND: header, mime_header,
#                 nested_header, body), reload; e.g.
#                 checks mime_header '/^Content-Disposition:.*attachment/ HOLD'
#   pop3 on|off   fault injection: remove POP3 (and POP3S) from Dovecot's
#                 protocols, or add them back; waits until the port is closed
#                 or answers again
#   quota USER BYTES [tempfail] | quota USER off
#                 fault injection: a Dovecot quota (quota plugin in LMTP,
#                 Maildir++ "User quota") of BYTES (suffix k, M, G: KiB, MiB,
#                 GiB) for USER (localpart or address of a test user); LMTP
#                 then refuses a message that does not fit with
#                 "552 5.2.2 <user> Quota exceeded (mailbox for user is full)"
#                 at end of DATA and Postfix bounces it to the sender. Leave
#                 room for the bounces (a few KiB each) if USER is the sender.
#                 tempfail: "452 4.2.2 ..." instead; Postfix keeps the message
#                 (retried every 10-60 s: purge-queue it, or it arrives after
#                 'quota USER off') and, with delay_warning_time = 1s while
#                 such a quota exists, sends an "Action: delayed" notice
#   bounce-large BYTES [data|size] | bounce-large off
#                 fault injection: a later hop that refuses large messages
#                 after submission accepted them. Every message is relayed
#                 through a second smtpd on $MAILPROBE_TEST_HOP_PORT (default:
#                 the SMTP port + 1) whose message_size_limit is BYTES; a
#                 larger message bounces to the sender with Status 5.3.4.
#                 data (default): the hop hides SIZE and answers
#                 "552 5.3.4 Error: message file too big" at end of DATA;
#                 size: the hop announces SIZE BYTES and Postfix's SMTP client
#                 gives up before sending (Diagnostic-Code: X-Postfix)
#   dsn on|off    fault injection: off removes DSN from the EHLO reply of every
#                 smtpd (smtpd_discard_ehlo_keywords = dsn); RET/ENVID/NOTIFY
#                 are then refused with "501 5.7.1 DSN support is disabled"
#   junk USER|all on|off
#                 fault injection: a Sieve filter (Debian's dovecot-sieve,
#                 sieve_before at LMTP delivery) files every message with an
#                 attachment (multipart/mixed or a part with
#                 Content-Disposition: attachment) for USER (or everyone)
#                 into the folder Junk (fileinto :create; while junk is on
#                 for anyone, Junk is also auto-created and subscribed for
#                 every user and LIST announces it as \Junk). Junk folders
#                 and their mail stay after off/reset-config.
#   oauth on|off  bearer tokens: Dovecot's oauth2 passdb
#                 validates JWT bearer tokens locally (HS256, key in
#                 $MAILPROBE_TEST_OAUTH_KEY_FILE, base64) for IMAP, POP3 and
#                 Postfix SMTP AUTH (through Dovecot SASL): XOAUTH2 and
#                 OAUTHBEARER are offered besides PLAIN and LOGIN, which
#                 keep working with the password
#   oauth token USER [SECONDS] [--bad-signature]
#                 print a JWT for USER valid for SECONDS (default 3600;
#                 negative: already expired) signed with that key, or with a
#                 corrupted signature; claims: sub (the address), iat, exp
#   auth-penalty on|off
#                 off: switch off Dovecot's growing delay after failed logins
#                 from the same address (consecutive failures answered after
#                 0.5, 4.5, 8.5, then over 10 s; it fades about 30 s after
#                 the last failure), for tests that fail logins on
#                 purpose; on (the default) restores it. Both restart Dovecot
#                 (open sessions end); while off, Dovecot's auth process needs
#                 about 5 s more to start, and a failed login still takes 0.5 s
#   purge-queue ADDRESS...
#                 delete every message in the test instance's queues (hold,
#                 deferred, active, incoming) with one of these recipients
#
# Nothing here touches the distribution's own instances: Postfix runs with
# `postfix -c $MAILPROBE_TEST_DIR/etc/postfix` and Dovecot with
# `dovecot -c $MAILPROBE_TEST_DIR/etc/dovecot/dovecot.conf`, each with its own
# queue/base directories. Only Dovecot 2.3 (Debian 12) syntax is generated.
set -euo pipefail

SELF=$(readlink -f -- "${BASH_SOURCE[0]}")
ORIGINAL_ARGS=("$@")
SCRIPT_NAME=$(basename -- "$SELF")

# ---------------------------------------------------------------------------
# Settings (environment variables with defaults)
# ---------------------------------------------------------------------------
STATE_DIR=${MAILPROBE_TEST_DIR:-/var/lib/mailprobe-testserver}
BIND=${MAILPROBE_TEST_BIND:-127.0.0.1}
SMTP_PORT=${MAILPROBE_TEST_SMTP_PORT:-2525}
SUBMISSION_PORT=${MAILPROBE_TEST_SUBMISSION_PORT:-2587}
SMTPS_PORT=${MAILPROBE_TEST_SMTPS_PORT:-2465}
IMAP_PORT=${MAILPROBE_TEST_IMAP_PORT:-2143}
IMAPS_PORT=${MAILPROBE_TEST_IMAPS_PORT:-2993}
POP3_PORT=${MAILPROBE_TEST_POP3_PORT:-2110}
POP3S_PORT=${MAILPROBE_TEST_POP3S_PORT:-2995}
SIZE_LIMIT=${MAILPROBE_TEST_SIZE_LIMIT:-104857600}
START_TIMEOUT=${MAILPROBE_TEST_START_TIMEOUT:-30}
# Extra certificate SAN DNS names (space separated), e.g. a compose host name.
EXTRA_CERT_NAMES=${MAILPROBE_TEST_CERT_NAMES:-}
# The second smtpd of 'bounce-large' (loopback only).
HOP_PORT=${MAILPROBE_TEST_HOP_PORT:-$((SMTP_PORT + 1))}

DOMAIN=mailprobe.test
MAIL_HOSTNAME=mail.$DOMAIN
USERS=(probe)
for i in $(seq -w 1 32); do USERS+=("test$i"); done
unset i
VMAIL_USER=vmail
PACKAGES=(postfix dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-sieve openssl)

# Layout of the state directory.
ETC_DIR=$STATE_DIR/etc
PF_DIR=$ETC_DIR/postfix                 # postfix -c $PF_DIR
DC_CONF=$ETC_DIR/dovecot/dovecot.conf   # dovecot -c $DC_CONF
DC_USERS=$ETC_DIR/dovecot/users         # passwd-file (passdb + userdb)
TLS_DIR=$STATE_DIR/tls
CA_FILE=$TLS_DIR/ca.pem                 # private CA clients trust
CERT_FILE=$TLS_DIR/server.pem           # leaf cert, signed by the CA
KEY_FILE=$TLS_DIR/server.key
LOG_DIR=$STATE_DIR/log
PF_LOG=$LOG_DIR/postfix.log
DC_LOG=$LOG_DIR/dovecot.log
MAIL_ROOT=$STATE_DIR/mail               # $MAIL_ROOT/<localpart>/Maildir
PASSWORD_FILE=$STATE_DIR/password
PF_QUEUE=$STATE_DIR/spool/postfix       # Postfix queue_directory
PF_DATA=$STATE_DIR/lib/postfix          # Postfix data_directory
DC_BASE=$STATE_DIR/run/dovecot          # Dovecot base_dir (sockets, pid)
DC_STATE=$STATE_DIR/lib/dovecot         # Dovecot state_dir
LMTP_SOCKET=$DC_BASE/lmtp
SASL_SOCKET=$DC_BASE/auth-postfix
DC_INSTANCE=mailprobe-testserver        # Dovecot instance_name (process titles)
# Dovecot-side faults (quota, junk, oauth, auth-penalty) are state files here,
# read by write_dovecot_config; reset-config and a fresh start remove them.
FAULT_DIR=$ETC_DIR/faults
OAUTH_DIR=$STATE_DIR/oauth
OAUTH_KEY_FILE=$OAUTH_DIR/hs256.key     # base64 of the HS256 key
OAUTH_KEY_DICT=$OAUTH_DIR/keys          # Dovecot's local_validation_key_dict

# Address used to probe the listeners: a wildcard bind is still reachable on
# loopback.
case $BIND in
    0.0.0.0 | '*') CHECK_HOST=127.0.0.1; PF_INET_INTERFACES=all; DC_LISTEN='*' ;;
    *) CHECK_HOST=$BIND; PF_INET_INTERFACES=$BIND; DC_LISTEN=$BIND ;;
esac

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] && return 0
    # A user on a fresh machine: re-run through sudo rather than fail.
    if command -v sudo >/dev/null 2>&1; then
        exec sudo --preserve-env "$SELF" "${ORIGINAL_ARGS[@]}"
    fi
    die "must run as root (installs packages, binds ports, owns mail); sudo is not installed"
}

# Serialise state-changing subcommands: parallel test jobs may call `start`
# at the same time. The lock is fd 9 of this shell; daemons are started with
# fd 9 closed (see start_dovecot/start_postfix), otherwise they would inherit
# the open lock file and hold the lock for their whole life.
take_lock() {
    mkdir -p "$STATE_DIR"
    chmod 0755 "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    if ! flock -w 120 9; then
        die "could not lock $STATE_DIR/.lock within 120 s (another $SCRIPT_NAME running?)"
    fi
}

release_lock() { exec 9>&-; }

show_logs() {
    local f
    for f in "$PF_LOG" "$DC_LOG"; do
        [[ -f $f ]] || continue
        log "--- last lines of $f ---"
        tail -n 25 "$f" >&2 || true
    done
}

# ---------------------------------------------------------------------------
# Installation
# ---------------------------------------------------------------------------
packages_installed() {
    local p status
    for p in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ $status == "install ok installed" ]] || return 1
    done
}

cmd_install() {
    need_root
    if packages_installed; then
        return 0
    fi
    log "installing ${PACKAGES[*]} (first run only)"
    # "No configuration": the postinst must not write /etc/postfix/main.cf
    # or ask questions; our instance has its own config directory.
    debconf-set-selections <<EOF
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string $MAIL_HOSTNAME
EOF
    # Without systemd, invoke-rc.d would start the distro instances through
    # their init scripts. If no policy-rc.d exists, install a temporary one
    # that forbids starting services, and remove it afterwards.
    local temp_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        temp_policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# temporary, from %s install\nexit 101\n' "$SCRIPT_NAME" >"$temp_policy"
        chmod 0755 "$temp_policy"
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
    if [[ -n $temp_policy ]]; then
        rm -f "$temp_policy"
        trap - EXIT
    fi
    stop_distro_instances
}

# If a distro instance got started anyway (e.g. a policy-rc.d allowing it),
# stop it: it would occupy 25/143/110/... and confuse anyone testing.
stop_distro_instances() {
    if pid_alive_file /var/spool/postfix/pid/master.pid && [[ -f /etc/postfix/main.cf ]]; then
        log "stopping the distribution's default Postfix instance"
        postfix -c /etc/postfix stop >/dev/null 2>&1 || true
    fi
    if pid_alive_file /run/dovecot/master.pid; then
        log "stopping the distribution's default Dovecot instance"
        dovecot -c /etc/dovecot/dovecot.conf stop >/dev/null 2>&1 || true
    fi
}

check_dovecot_version() {
    local v
    v=$(dovecot --version 2>/dev/null || true)
    case $v in
        2.3.*) ;;
        *) die "Dovecot '$v' found; this script generates Dovecot 2.3 configuration (Debian 12). Dovecot 2.4 changed the config syntax." ;;
    esac
}

# ---------------------------------------------------------------------------
# Process helpers (by pid file and /proc; no ps/pkill needed in slim images)
# ---------------------------------------------------------------------------
# A process that exists and is not a zombie (a daemon's zombie lingers until
# init reaps it, which some container inits do only every second or two).
pid_running() { # pid
    local line
    { IFS= read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
    line=${line##*) }
    [[ ${line%% *} != Z ]]
}

pid_alive_file() { # pidfile
    local pid
    [[ -r $1 ]] || return 1
    read -r pid <"$1" 2>/dev/null || return 1
    pid=${pid//[[:space:]]/}
    [[ $pid =~ ^[0-9]+$ ]] && pid_running "$pid"
}

pid_from_file() { local pid; read -r pid <"$1"; echo "${pid//[[:space:]]/}"; }

# ppid of a process, read with builtins only (this runs for every process).
ppid_of() { # pid
    local line
    { IFS= read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
    # Field 4 is the ppid; the command name (field 2) may contain spaces and
    # parentheses, so cut after the last ") ".
    line=${line##*) }
    line=${line#* }
    echo "${line%% *}"
}

# All descendants of a pid, breadth first, from one pass over /proc.
descendants() { # pid
    local stat pid line c
    local -A kids=()
    for stat in /proc/[0-9]*/stat; do
        pid=${stat#/proc/}
        pid=${pid%/stat}
        { IFS= read -r line <"$stat"; } 2>/dev/null || continue
        line=${line##*) }
        line=${line#* }
        kids[${line%% *}]+=" $pid"
    done
    local queue=("$1")
    while ((${#queue[@]})); do
        for c in ${kids[${queue[0]}]:-}; do
            echo "$c"
            queue+=("$c")
        done
        queue=("${queue[@]:1}")
    done
}

# Wait until none of the given pids is alive, at most $1 seconds.
wait_gone() { # seconds pid...
    local deadline=$((SECONDS + $1)) p alive
    shift
    while :; do
        alive=0
        for p in "$@"; do pid_running "$p" && alive=1; done
        ((alive)) || return 0
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

kill_pids() { # pid...
    local p
    for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
}

postfix_running() { pid_alive_file "$PF_QUEUE/pid/master.pid"; }
dovecot_running() { pid_alive_file "$DC_BASE/master.pid"; }

# ---------------------------------------------------------------------------
# Port probes: a port is "up" only when it sends the protocol greeting (for
# the TLS ports: after a handshake that verifies against our CA).
# ---------------------------------------------------------------------------
plain_greeting() { # port expected-prefix quit-command
    local port=$1 want=$2 quit=$3
    (
        exec 3<>"/dev/tcp/$CHECK_HOST/$port" || exit 1
        line=""
        IFS= read -r -t 3 -u 3 line || exit 1
        printf '%s\r\n' "$quit" >&3 || true
        [[ $line == "$want"* ]]
    ) 2>/dev/null
}

tls_greeting() { # port expected-prefix
    local port=$1 want=$2 out pid line="" i
    [[ -r $CA_FILE ]] || return 1
    out=$(mktemp)
    # -quiet implies -ign_eof, so s_client keeps reading from the server after
    # stdin ends; we stop it ourselves once the greeting has arrived.
    openssl s_client -connect "$CHECK_HOST:$port" -servername localhost \
        -verify_hostname localhost -CAfile "$CA_FILE" -verify_return_error \
        -quiet </dev/null >"$out" 2>/dev/null &
    pid=$!
    for ((i = 0; i < 50; i++)); do
        if [[ -s $out ]]; then
            IFS= read -r line <"$out" || true
            [[ -n $line ]] && break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$out"
    [[ $line == "$want"* ]]
}

# Prints "name port" for every listener that does not answer; returns 1 then.
# With "postfix" or "dovecot" only that daemon's listeners; "dovecot" skips
# POP3 while 'pop3 off' is in effect.
check_ports() { # [all|postfix|dovecot]
    local bad=0 which=${1:-all}
    if [[ $which != dovecot ]]; then
        plain_greeting "$SMTP_PORT" 220 QUIT || { echo "smtp $SMTP_PORT"; bad=1; }
        plain_greeting "$SUBMISSION_PORT" 220 QUIT || { echo "submission $SUBMISSION_PORT"; bad=1; }
        tls_greeting "$SMTPS_PORT" 220 || { echo "smtps $SMTPS_PORT"; bad=1; }
    fi
    [[ $which == postfix ]] && return "$bad"
    plain_greeting "$IMAP_PORT" '* OK' 'a LOGOUT' || { echo "imap $IMAP_PORT"; bad=1; }
    tls_greeting "$IMAPS_PORT" '* OK' || { echo "imaps $IMAPS_PORT"; bad=1; }
    if [[ $which == all ]] || grep -q '^protocols = .*pop3' "$DC_CONF" 2>/dev/null; then
        plain_greeting "$POP3_PORT" '+OK' QUIT || { echo "pop3 $POP3_PORT"; bad=1; }
        tls_greeting "$POP3S_PORT" '+OK' || { echo "pop3s $POP3S_PORT"; bad=1; }
    fi
    [[ -S $LMTP_SOCKET ]] || { echo "lmtp $LMTP_SOCKET"; bad=1; }
    [[ -S $SASL_SOCKET ]] || { echo "sasl $SASL_SOCKET"; bad=1; }
    return "$bad"
}

port_accepts() { # port
    (exec 3<>"/dev/tcp/$CHECK_HOST/$1") 2>/dev/null
}

# Refuse to start on top of something else listening on our ports: the
# greeting checks would then pass against the wrong server.
ensure_ports_free() { # port...
    local p
    for p in "$@"; do
        if port_accepts "$p"; then
            die "port $CHECK_HOST:$p is already in use by another process; set MAILPROBE_TEST_*_PORT"
        fi
    done
}

wait_ready() { # [all|postfix|dovecot]
    local deadline=$((SECONDS + START_TIMEOUT)) missing
    while :; do
        if missing=$(check_ports "${1:-all}"); then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            log "not ready after ${START_TIMEOUT}s; not answering:"
            printf '  %s\n' "${missing//$'\n'/$'\n'  }" >&2
            show_logs
            die "test mail server did not come up"
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------
# State: users, directories, password, certificates, Maildirs
# ---------------------------------------------------------------------------
ensure_vmail_user() {
    if ! getent group "$VMAIL_USER" >/dev/null; then
        groupadd --system "$VMAIL_USER"
    fi
    if ! getent passwd "$VMAIL_USER" >/dev/null; then
        useradd --system --gid "$VMAIL_USER" --home-dir "$MAIL_ROOT" \
            --no-create-home --shell /usr/sbin/nologin "$VMAIL_USER"
    fi
    VMAIL_UID=$(id -u "$VMAIL_USER")
    VMAIL_GID=$(id -g "$VMAIL_USER")
}

ensure_dirs() {
    install -d -m 0755 "$ETC_DIR" "$PF_DIR" "$ETC_DIR/dovecot" "$TLS_DIR" \
        "$STATE_DIR/run" "$STATE_DIR/spool" "$STATE_DIR/lib"
    install -d -m 0755 -o root -g root "$PF_QUEUE"   # Postfix wants root here
    install -d -m 0700 -o postfix -g postfix "$PF_DATA"
    install -d -m 0750 "$DC_STATE"
    install -d -m 0755 "$LOG_DIR"
    install -d -m 0755 -o "$VMAIL_USER" -g "$VMAIL_USER" "$MAIL_ROOT"
}

# One random password for all test users, kept stable across restarts.
# Written without a trailing newline so `cat` and naive readers agree.
ensure_password() {
    if [[ ! -s $PASSWORD_FILE ]]; then
        openssl rand -hex 16 | tr -d '\n' >"$PASSWORD_FILE.tmp"
        mv "$PASSWORD_FILE.tmp" "$PASSWORD_FILE"
    fi
    chmod 0644 "$PASSWORD_FILE"
    PASSWORD=$(<"$PASSWORD_FILE")
    [[ $PASSWORD =~ ^[^:[:space:]]+$ ]] || die "$PASSWORD_FILE: password must not contain ':' or whitespace"
}

# A private CA plus a leaf certificate signed by it. Not a single self-signed
# certificate: rustls/webpki rejects a certificate with CA:TRUE used as the
# server certificate, and may reject a CA:FALSE certificate as a trust anchor
# in other stacks; CA + leaf works with rustls, OpenSSL and curl alike.
ensure_certs() {
    if [[ -s $CA_FILE && -s $CERT_FILE && -s $KEY_FILE ]] &&
        openssl x509 -in "$CERT_FILE" -noout -checkend 86400 >/dev/null 2>&1; then
        return 0
    fi
    log "generating test CA and server certificate in $TLS_DIR"
    local tmp san name
    tmp=$(mktemp -d)
    san="DNS:localhost,DNS:$MAIL_HOSTNAME,DNS:testserver,IP:127.0.0.1,IP:::1"
    for name in $EXTRA_CERT_NAMES; do san+=",DNS:$name"; done
    cat >"$tmp/ca.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = mailprobe test CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    cat >"$tmp/leaf.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    openssl req -x509 -new -newkey rsa:2048 -nodes -days 3650 -sha256 \
        -config "$tmp/ca.cnf" -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
    openssl req -new -newkey rsa:2048 -nodes -sha256 -subj /CN=localhost \
        -keyout "$tmp/server.key" -out "$tmp/server.csr" 2>/dev/null
    openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
        -extfile "$tmp/leaf.ext" -out "$tmp/server.pem" 2>/dev/null
    install -m 0644 "$tmp/ca.pem" "$CA_FILE"
    install -m 0600 "$tmp/ca.key" "$TLS_DIR/ca.key"
    install -m 0644 "$tmp/server.pem" "$CERT_FILE"
    install -m 0600 "$tmp/server.key" "$KEY_FILE"
    rm -rf "$tmp"
}

# Pre-create every Maildir so tests can drop messages into Maildir/new before
# the first delivery, and the layout is predictable.
ensure_maildirs() {
    local u
    for u in "${USERS[@]}"; do
        install -d -m 0700 -o "$VMAIL_USER" -g "$VMAIL_USER" "$MAIL_ROOT/$u" \
            "$MAIL_ROOT/$u/Maildir" "$MAIL_ROOT/$u/Maildir/cur" \
            "$MAIL_ROOT/$u/Maildir/new" "$MAIL_ROOT/$u/Maildir/tmp"
    done
}

# ---------------------------------------------------------------------------
# Configuration files (always regenerated from scratch = pristine)
# ---------------------------------------------------------------------------
write_postfix_config() {
    local u
    {
        for u in "${USERS[@]}"; do printf '%s@%s OK\n' "$u" "$DOMAIN"; done
    } >"$PF_DIR/vmailbox"

    cat >"$PF_DIR/main.cf" <<EOF
# Generated by $SCRIPT_NAME; rewritten by 'start' and 'reset-config'.
# Change parameters with '$SCRIPT_NAME postconf KEY=VALUE'.
compatibility_level = 3.6
queue_directory = $PF_QUEUE
data_directory = $PF_DATA
mail_owner = postfix
setgid_group = postdrop

# Identity and network: loopback (or \$MAILPROBE_TEST_BIND) only, IPv4 only,
# no DNS anywhere (the machine may have no resolver).
myhostname = $MAIL_HOSTNAME
mydomain = $DOMAIN
myorigin = \$mydomain
inet_interfaces = $PF_INET_INTERFACES
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_banner = \$myhostname ESMTP mailprobe test server
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
biff = no
append_dot_mydomain = no

# Delivery: the only destination is the virtual domain, handed to Dovecot
# over LMTP. Nothing is delivered locally and nothing leaves the machine.
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
local_transport = error:local delivery is disabled on the mailprobe test server
relay_domains =
relayhost =
default_transport = error:outbound mail is disabled on the mailprobe test server
virtual_mailbox_domains = $DOMAIN
virtual_mailbox_maps = texthash:$PF_DIR/vmailbox
virtual_alias_maps =
virtual_transport = lmtp:unix:$LMTP_SOCKET
recipient_delimiter = +

# Sizes and timeouts: tests send ~70 MB messages.
message_size_limit = $SIZE_LIMIT
mailbox_size_limit = 0
virtual_mailbox_limit = 0
header_size_limit = 1024000
smtpd_timeout = 300s
lmtp_data_xfer_timeout = 600s
lmtp_data_done_timeout = 600s
smtpd_error_sleep_time = 0
# A deferred delivery (e.g. Dovecot restarting) is retried within seconds.
queue_run_delay = 10s
minimal_backoff_time = 10s
maximal_backoff_time = 60s
delay_warning_time = 0
# smtpd on the SMTPS port exits when Dovecot's auth socket is missing (e.g.
# Dovecot restarting); the master then throttles the service for 60 s by
# default. Retry quickly instead.
service_throttle_time = 2s

# TLS: STARTTLS offered on port $SMTP_PORT, required on submission.
smtpd_tls_cert_file = $CERT_FILE
smtpd_tls_key_file = $KEY_FILE
smtpd_tls_security_level = may
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtp_tls_security_level = none

# SASL through Dovecot; enabled per service in master.cf (submission, smtps).
smtpd_sasl_type = dovecot
smtpd_sasl_path = $SASL_SOCKET
smtpd_sasl_auth_enable = no
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = noanonymous
smtpd_tls_auth_only = yes

# Port $SMTP_PORT (like port 25): mail for \$virtual_mailbox_domains from
# anyone without AUTH, no relaying - not even for \$mynetworks.
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = reject_unlisted_recipient
# Submission/SMTPS (referenced from master.cf): authenticated users only.
mua_client_restrictions = permit_sasl_authenticated, reject
mua_relay_restrictions = permit_sasl_authenticated, reject
mua_recipient_restrictions = permit_sasl_authenticated, reject

# Logging to a file through postlogd (no syslog daemon needed).
maillog_file = $PF_LOG
maillog_file_prefixes = /var, /dev/stdout, $LOG_DIR
EOF

    # master.cf: nothing chrooted (the Debian default chroots, which would
    # need copies of /etc files and breaks absolute socket paths).
    local a=""
    [[ $PF_INET_INTERFACES == all ]] || a="$BIND:"
    cat >"$PF_DIR/master.cf" <<EOF
# Generated by $SCRIPT_NAME.
# service      type  private unpriv chroot wakeup maxproc command + args
${a}$SMTP_PORT inet  n       -      n      -      -       smtpd
${a}$SUBMISSION_PORT inet n     -      n      -      -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=\$mua_client_restrictions
  -o smtpd_relay_restrictions=\$mua_relay_restrictions
  -o smtpd_recipient_restrictions=\$mua_recipient_restrictions
${a}$SMTPS_PORT inet  n       -      n      -      -       smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=\$mua_client_restrictions
  -o smtpd_relay_restrictions=\$mua_relay_restrictions
  -o smtpd_recipient_restrictions=\$mua_recipient_restrictions
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
lmtp       unix  -       -       n       -       -       lmtp
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
EOF
}

write_dovecot_config() {
    local u dh_line="" oauth_mechanisms="" password_mechanisms=""
    # Debian ships DH parameters; without them a DHE cipher suite fails.
    [[ -r /usr/share/dovecot/dh.pem ]] && dh_line="ssl_dh = </usr/share/dovecot/dh.pem"
    if fault_on oauth; then
        oauth_mechanisms=" xoauth2 oauthbearer"
        # The password file must not judge tokens (each would log a mismatch).
        password_mechanisms=$'\n  mechanisms = plain login'
    fi

    umask 027
    {
        for u in "${USERS[@]}"; do
            # user:password:uid:gid:gecos:home:shell:extra (userdb_* fields)
            printf '%s@%s:{PLAIN}%s:%s:%s::%s::%s\n' "$u" "$DOMAIN" "$PASSWORD" \
                "$VMAIL_UID" "$VMAIL_GID" "$MAIL_ROOT/$u" "$(user_quota_field "$u")"
        done
    } >"$DC_USERS"
    umask 022
    chown root:dovecot "$DC_USERS"
    chmod 0640 "$DC_USERS"

    cat >"$DC_CONF" <<EOF
# Generated by $SCRIPT_NAME (Dovecot 2.3 syntax); rewritten by 'start' and
# 'reset-config'. Own base_dir/state_dir so the distro instance is untouched.
instance_name = $DC_INSTANCE
base_dir = $DC_BASE
state_dir = $DC_STATE
protocols = imap pop3 lmtp
listen = $DC_LISTEN
hostname = $MAIL_HOSTNAME
login_greeting = mailprobe test server ready.
verbose_proctitle = yes
log_path = $DC_LOG
auth_verbose = yes

# Plaintext logins are allowed without TLS (loopback test server; Dovecot
# 2.3 name - 2.4 renamed it auth_allow_cleartext).
disable_plaintext_auth = no
auth_mechanisms = plain login$oauth_mechanisms
auth_failure_delay = 0
auth_username_format = %Lu

ssl = yes
ssl_cert = <$CERT_FILE
ssl_key = <$KEY_FILE
ssl_min_protocol = TLSv1.2
$dh_line

# Virtual users: passwd-file holds the password, uid/gid (vmail) and home.
passdb {
  driver = passwd-file$password_mechanisms
  args = scheme=PLAIN username_format=%Lu $DC_USERS
}
userdb {
  driver = passwd-file
  args = username_format=%Lu $DC_USERS
}
first_valid_uid = $VMAIL_UID
first_valid_gid = $VMAIL_GID
mail_location = maildir:~/Maildir
recipient_delimiter = +
lmtp_save_to_detail_mailbox = no
postmaster_address = postmaster@$DOMAIN
pop3_uidl_format = %08Xu%08Xv
# Parallel tests log in many times per user from the same address.
mail_max_userip_connections = 200

service imap-login {
  inet_listener imap {
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = $IMAPS_PORT
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3 {
    port = $POP3_PORT
  }
  inet_listener pop3s {
    port = $POP3S_PORT
    ssl = yes
  }
}
# Postfix's lmtp client (user postfix) delivers through this socket.
service lmtp {
  unix_listener lmtp {
    mode = 0600
    user = postfix
    group = postfix
  }
}
# Postfix smtpd asks Dovecot to check AUTH PLAIN/LOGIN.
service auth {
  unix_listener auth-postfix {
    mode = 0660
    user = postfix
    group = postfix
  }
}
EOF
    write_dovecot_faults >>"$DC_CONF"
}

write_config() {
    write_postfix_config
    write_dovecot_config
}

# ---------------------------------------------------------------------------
# Dovecot-side faults: state files in $FAULT_DIR, turned into configuration
# by write_dovecot_config (no state files = the pristine configuration).
#   quota         lines "localpart bytes" (removed when empty)
#   junk          lines "localpart" or "all" (removed when empty); the
#                 filter is junk.sieve
#   oauth         present: oauth2 passdb on, settings in oauth2.conf.ext
#   auth-penalty  present: Dovecot's failed-login penalty off
# ---------------------------------------------------------------------------
fault_on() { [[ -e $FAULT_DIR/$1 ]]; }

# The userdb fields giving one user a quota (empty without one).
user_quota_field() { # localpart
    local user bytes mode
    [[ -s $FAULT_DIR/quota ]] || return 0
    while read -r user bytes mode; do
        [[ $user == "$1" ]] || continue
        printf 'userdb_quota_rule=*:storage=%sB' "$bytes"
        [[ $mode == tempfail ]] && printf ' userdb_quota_full_tempfail=yes'
        return 0
    done <"$FAULT_DIR/quota"
}

write_dovecot_faults() {
    local plugins=""
    fault_on quota && plugins+=" quota"
    fault_on junk && plugins+=" sieve"
    fault_on quota || fault_on junk || fault_on oauth || fault_on auth-penalty || return 0
    echo
    echo "# --- Faults injected by $SCRIPT_NAME; 'reset-config' removes them. ---"
    if [[ -n $plugins ]]; then
        cat <<EOF
protocol lmtp {
  mail_plugins = \$mail_plugins$plugins
}
EOF
    fi
    if fault_on quota; then
        # Limits per user come from userdb_quota_rule in $DC_USERS; LMTP
        # checks them at end of DATA and answers 552 5.2.2 when full.
        cat <<EOF
plugin {
  quota = maildir:User quota
}
EOF
    fi
    if fault_on junk; then
        cat <<EOF
plugin {
  sieve_before = $FAULT_DIR/junk.sieve
}
namespace inbox {
  inbox = yes
  mailbox Junk {
    special_use = \\Junk
    auto = subscribe
  }
}
EOF
    fi
    if fault_on oauth; then
        cat <<EOF
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $FAULT_DIR/oauth2.conf.ext
}
EOF
    fi
    if fault_on auth-penalty; then
        # Without the anvil-auth-penalty socket the auth process disables its
        # penalty (a listener with mode 0 is not created).
        cat <<EOF
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
EOF
    fi
}

# ---------------------------------------------------------------------------
# Start / stop of the two daemons
# ---------------------------------------------------------------------------
start_dovecot() {
    if dovecot_running; then
        dovecot -c "$DC_CONF" reload
        return 0
    fi
    ensure_ports_free "$IMAP_PORT" "$IMAPS_PORT" "$POP3_PORT" "$POP3S_PORT"
    # A killed master may still be a zombie; Dovecot would take its pid file
    # for a running instance.
    rm -f "$DC_BASE/master.pid"
    # Check the syntax first: 'doveconf -n' gives a clearer message.
    doveconf -c "$DC_CONF" -n >/dev/null || die "invalid Dovecot configuration $DC_CONF"
    dovecot -c "$DC_CONF" 9>&- || { show_logs; die "dovecot failed to start"; }
}

start_postfix() {
    if postfix_running; then
        postfix -c "$PF_DIR" reload >/dev/null 2>&1
        return 0
    fi
    ensure_ports_free "$SMTP_PORT" "$SUBMISSION_PORT" "$SMTPS_PORT"
    # 'postfix start' creates the queue directory tree and fixes permissions.
    postfix -c "$PF_DIR" start >/dev/null 2>&1 9>&- || { show_logs; die "postfix failed to start (postfix -c $PF_DIR check)"; }
}

stop_postfix() { # [1: SIGKILL at once, like a crash]
    local pidfile=$PF_QUEUE/pid/master.pid master kids
    [[ -d $PF_DIR ]] || return 0
    if pid_alive_file "$pidfile"; then
        master=$(pid_from_file "$pidfile")
        kids=$(descendants "$master")
        if [[ ${1:-0} == 1 ]]; then
            # shellcheck disable=SC2086
            kill_pids "$master" $kids
        else
            postfix -c "$PF_DIR" stop >/dev/null 2>&1 || kill -TERM "$master" 2>/dev/null || true
        fi
        # shellcheck disable=SC2086
        if ! wait_gone 10 "$master" $kids; then
            log "postfix did not stop in 10s; killing its processes"
            # shellcheck disable=SC2086
            kill_pids "$master" $kids
        fi
    fi
    kill_orphans MAIL_CONFIG="$PF_DIR"
}

stop_dovecot() { # [1: SIGKILL at once, like a crash]
    local pidfile=$DC_BASE/master.pid master kids
    if pid_alive_file "$pidfile"; then
        master=$(pid_from_file "$pidfile")
        kids=$(descendants "$master")
        if [[ ${1:-0} == 1 ]]; then
            # shellcheck disable=SC2086
            kill_pids "$master" $kids
        else
            kill -TERM "$master" 2>/dev/null || true
        fi
        if ! wait_gone 10 "$master"; then
            log "dovecot did not stop in 10s; killing its processes"
            # shellcheck disable=SC2086
            kill_pids "$master" $kids
        fi
        # The auth process outlives the master while a client (Postfix's
        # smtpd) stays connected, and log/stats/anvil wait for it: once the
        # master is gone, they are leftovers.
        # shellcheck disable=SC2086
        wait_gone 1 $kids || kill_pids $kids
    fi
    kill_dovecot_orphans
}

# Postfix processes of our instance left behind by a crashed/killed master:
# they carry our unique config path in their environment.
kill_orphans() { # NAME=VALUE
    local marker=$1 envf pid found=()
    # One grep over all environments (NUL-separated entries, exact match).
    while IFS= read -r envf; do
        pid=${envf#/proc/}
        pid=${pid%/environ}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        found+=("$pid")
    done < <(grep -lzxF -- "$marker" /proc/[0-9]*/environ 2>/dev/null || true)
    if ((${#found[@]})); then
        log "killing leftover processes (${marker%%=*}): ${found[*]}"
        kill_pids "${found[@]}"
    fi
}

# Dovecot overwrites its children's environment with the process title, but
# the title starts with "dovecot-$DC_INSTANCE/" (instance_name). Children
# whose parent is no longer a Dovecot master are leftovers of ours.
kill_dovecot_orphans() {
    local cmdf pid ppid parent found=()
    while IFS= read -r cmdf; do
        pid=${cmdf#/proc/}
        pid=${pid%/cmdline}
        ppid=$(ppid_of "$pid") || continue
        parent=$({ tr '\0' ' ' <"/proc/$ppid/cmdline"; } 2>/dev/null || true)
        [[ $parent == */dovecot\ * ]] && continue
        found+=("$pid")
    done < <(grep -laE -- "^dovecot-$DC_INSTANCE/" /proc/[0-9]*/cmdline 2>/dev/null || true)
    if ((${#found[@]})); then
        log "killing leftover Dovecot processes: ${found[*]}"
        kill_pids "${found[@]}"
    fi
}

# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------
print_env() {
    local name
    for name in \
        "MAILPROBE_TEST_HOST=$CHECK_HOST" \
        "MAILPROBE_TEST_BIND=$BIND" \
        "MAILPROBE_TEST_SMTP_PORT=$SMTP_PORT" \
        "MAILPROBE_TEST_SUBMISSION_PORT=$SUBMISSION_PORT" \
        "MAILPROBE_TEST_SMTPS_PORT=$SMTPS_PORT" \
        "MAILPROBE_TEST_IMAP_PORT=$IMAP_PORT" \
        "MAILPROBE_TEST_IMAPS_PORT=$IMAPS_PORT" \
        "MAILPROBE_TEST_POP3_PORT=$POP3_PORT" \
        "MAILPROBE_TEST_POP3S_PORT=$POP3S_PORT" \
        "MAILPROBE_TEST_LMTP_SOCKET=$LMTP_SOCKET" \
        "MAILPROBE_TEST_DIR=$STATE_DIR" \
        "MAILPROBE_TEST_PASSWORD_FILE=$PASSWORD_FILE" \
        "MAILPROBE_TEST_CA_FILE=$CA_FILE" \
        "MAILPROBE_TEST_MAILDIR_ROOT=$MAIL_ROOT" \
        "MAILPROBE_TEST_DOMAIN=$DOMAIN" \
        "MAILPROBE_TEST_USER=probe@$DOMAIN" \
        "MAILPROBE_TEST_USERS=${USERS[*]/%/@$DOMAIN}" \
        "MAILPROBE_TEST_SIZE_LIMIT=$SIZE_LIMIT" \
        "MAILPROBE_TEST_POSTFIX_LOG=$PF_LOG" \
        "MAILPROBE_TEST_DOVECOT_LOG=$DC_LOG" \
        "MAILPROBE_TEST_HOP_PORT=$HOP_PORT" \
        "MAILPROBE_TEST_OAUTH_KEY_FILE=$OAUTH_KEY_FILE"; do
        printf 'export %s=%q\n' "${name%%=*}" "${name#*=}"
    done
    echo "# Maildir of user <localpart>@$DOMAIN: \$MAILPROBE_TEST_MAILDIR_ROOT/<localpart>/Maildir"
}

print_ready() {
    echo "mailprobe test mail server ready"
    cat <<EOF
  smtp        smtp://$CHECK_HOST:$SMTP_PORT    (STARTTLS offered, no AUTH, mail for $DOMAIN only)
  submission  smtp://$CHECK_HOST:$SUBMISSION_PORT    (STARTTLS required, AUTH PLAIN/LOGIN)
  smtps       smtps://$CHECK_HOST:$SMTPS_PORT   (implicit TLS, AUTH PLAIN/LOGIN)
  imap        imap://$CHECK_HOST:$IMAP_PORT    (STARTTLS offered, plaintext login allowed)
  imaps       imaps://$CHECK_HOST:$IMAPS_PORT
  pop3        pop3://$CHECK_HOST:$POP3_PORT    (STLS offered, plaintext login allowed)
  pop3s       pop3s://$CHECK_HOST:$POP3S_PORT
  lmtp        unix:$LMTP_SOCKET
  users       probe@$DOMAIN, test01@$DOMAIN .. test32@$DOMAIN
  password    $PASSWORD_FILE
  CA file     $CA_FILE  (server cert valid for localhost, 127.0.0.1, $MAIL_HOSTNAME, testserver)
  Maildirs    $MAIL_ROOT/<localpart>/Maildir
  logs        $PF_LOG, $DC_LOG
EOF
}

# ---------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------
cmd_start() {
    need_root
    cmd_install
    check_dovecot_version
    take_lock
    if postfix_running && dovecot_running && check_ports >/dev/null; then
        release_lock
        print_ready
        return 0
    fi
    ensure_vmail_user
    ensure_dirs
    ensure_password
    ensure_certs
    ensure_maildirs
    ensure_oauth_key
    clear_faults
    write_config
    start_dovecot
    start_postfix
    wait_ready
    release_lock
    print_ready
}

cmd_stop() {
    need_root
    local hard=0
    if [[ ${1:-} == --kill ]]; then
        hard=1
        shift
    fi
    local which
    which=$(daemon_choice "stop [--kill]" "$@")
    take_lock
    if [[ $which != dovecot ]] && command -v postfix >/dev/null; then stop_postfix "$hard"; fi
    if [[ $which != postfix ]] && command -v dovecot >/dev/null; then stop_dovecot "$hard"; fi
    case $which in
        all) echo "mailprobe test mail server stopped" ;;
        *) echo "mailprobe test mail server: $which stopped" ;;
    esac
}

# "postfix", "dovecot" or (no argument) "all".
daemon_choice() { # usage-prefix [postfix|dovecot]
    case ${2:-all} in
        all | postfix | dovecot) echo "${2:-all}" ;;
        *) die "usage: $SCRIPT_NAME $1 [postfix|dovecot]" ;;
    esac
}

# Start stopped daemons with the configuration they had (faults included).
cmd_resume() {
    need_root
    local which
    which=$(daemon_choice resume "$@")
    [[ -f $PF_DIR/main.cf && -f $DC_CONF ]] || die "no test configuration yet; run '$SCRIPT_NAME start' first"
    take_lock
    if [[ $which != postfix ]] && ! dovecot_running; then
        start_dovecot
    fi
    if [[ $which != dovecot ]] && ! postfix_running; then
        start_postfix
    fi
    # Per daemon, so that a 'pop3 off' in effect is honoured.
    [[ $which == dovecot ]] || wait_ready postfix
    [[ $which == postfix ]] || wait_ready dovecot
    release_lock
    echo "mailprobe test mail server: $which running"
}

cmd_status() {
    local missing
    if missing=$(check_ports); then
        echo "mailprobe test mail server is up"
        return 0
    fi
    echo "mailprobe test mail server is not (fully) up; not answering:"
    printf '  %s\n' "${missing//$'\n'/$'\n'  }"
    return 1
}

cmd_postconf() {
    need_root
    (($#)) || die "usage: $SCRIPT_NAME postconf KEY=VALUE..."
    [[ -f $PF_DIR/main.cf ]] || die "no test configuration yet; run '$SCRIPT_NAME start' first"
    take_lock
    local kv
    for kv in "$@"; do
        [[ $kv == *=* ]] || die "not KEY=VALUE: $kv"
    done
    postconf -c "$PF_DIR" -e "$@"
    reload_postfix
    log "set $*"
}

cmd_reset_config() {
    need_root
    take_lock
    ensure_vmail_user
    ensure_dirs
    ensure_password
    ensure_certs
    ensure_maildirs
    ensure_oauth_key
    rm -f "$PF_DIR"/fault-*_checks.regexp
    local restart=0
    fault_on auth-penalty && restart=1 # see cmd_auth_penalty
    clear_faults
    write_config
    if dovecot_running && ((restart)); then
        restart_dovecot
    elif dovecot_running; then
        reload_dovecot
        # A reload after 'pop3 off' reopens the POP3 listeners: wait for them.
        wait_greeting "$POP3_PORT" '+OK' QUIT 50 ||
            log "warning: pop3 port not answering after reload"
    fi
    # After Dovecot: new LMTP deliveries and SASL lookups reach new processes.
    reload_postfix
    log "pristine configuration restored"
}

# Forget every Dovecot-side fault (state files, quota counters).
clear_faults() {
    local u
    rm -rf "$FAULT_DIR"
    for u in "${USERS[@]}"; do rm -f "$MAIL_ROOT/$u/Maildir/maildirsize"; done
}

# Wait until a plain port answers with its greeting (tries x 0.1 s).
wait_greeting() { # port expected-prefix quit-command tries
    local i
    for ((i = 0; i < $4; i++)); do
        plain_greeting "$1" "$2" "$3" && return 0
        sleep 0.1
    done
    return 1
}

# Fault injection: Postfix header/body checks from a regexp table of ours.
cmd_checks() {
    need_root
    (($# >= 2)) || die "usage: $SCRIPT_NAME checks header|mime_header|nested_header|body RULE..."
    local kind=$1 table
    shift
    case $kind in
        header | mime_header | nested_header | body) ;;
        *) die "checks: unknown kind '$kind' (header, mime_header, nested_header, body)" ;;
    esac
    [[ -f $PF_DIR/main.cf ]] || die "no test configuration yet; run '$SCRIPT_NAME start' first"
    take_lock
    table=$PF_DIR/fault-${kind}_checks.regexp
    printf '%s\n' "$@" >"$table.tmp"
    chmod 0644 "$table.tmp"
    mv "$table.tmp" "$table"
    postconf -c "$PF_DIR" -e "${kind}_checks=regexp:$table"
    reload_postfix
    log "${kind}_checks: $*"
}

# Fault injection: stop or restart only Dovecot's POP3 listeners.
cmd_pop3() {
    need_root
    local want=${1:-}
    [[ $want == on || $want == off ]] || die "usage: $SCRIPT_NAME pop3 on|off"
    [[ -f $DC_CONF ]] || die "no test configuration yet; run '$SCRIPT_NAME start' first"
    dovecot_running || die "dovecot is not running"
    take_lock
    local protocols=imap
    [[ $want == on ]] && protocols="imap pop3"
    sed -i "s/^protocols = .*/protocols = $protocols lmtp/" "$DC_CONF"
    dovecot -c "$DC_CONF" reload
    local i
    if [[ $want == off ]]; then
        for ((i = 0; i < 50; i++)); do
            port_accepts "$POP3_PORT" || { log "pop3 listeners stopped"; return 0; }
            sleep 0.1
        done
        die "pop3 port $POP3_PORT still accepts connections"
    fi
    wait_greeting "$POP3_PORT" '+OK' QUIT 50 || die "pop3 port $POP3_PORT does not answer"
    log "pop3 listeners started"
}

# ---------------------------------------------------------------------------
# Fault injection beyond Postfix parameters: quota, bounce-large, dsn, junk,
# oauth, auth-penalty (see the usage at the top)
# ---------------------------------------------------------------------------
need_config() {
    [[ -f $PF_DIR/main.cf && -f $DC_CONF ]] || die "no test configuration yet; run '$SCRIPT_NAME start' first"
}

# A test user given as localpart or address -> its localpart.
resolve_user() { # user
    local want=${1,,} u
    want=${want%@"$DOMAIN"}
    for u in "${USERS[@]}"; do
        [[ $u == "$want" ]] && { echo "$u"; return 0; }
    done
    die "'$1' is not a test user (probe, test01 .. test32, optionally @$DOMAIN)"
}

# 123, 10k, 5M, 1G (binary multiples) -> bytes.
parse_bytes() { # size
    [[ $1 =~ ^([0-9]+)([kKmMgG]?)$ ]] || die "not a size in bytes (suffix k, M or G allowed): $1"
    local n=$((10#${BASH_REMATCH[1]}))
    case ${BASH_REMATCH[2]} in
        k | K) n=$((n * 1024)) ;;
        m | M) n=$((n * 1024 * 1024)) ;;
        g | G) n=$((n * 1024 * 1024 * 1024)) ;;
    esac
    ((n > 0)) || die "size must be positive: $1"
    echo "$n"
}

# Replace (or with no LINE remove) the line starting with "KEY" or equal to
# KEY in a state file; the file disappears when it becomes empty.
set_state_line() { # file key [line]
    local file=$1 key=$2 line=${3:-} tmp
    install -d -m 0755 "$FAULT_DIR"
    tmp=$(mktemp "$FAULT_DIR/.state.XXXXXX")
    if [[ -f $file ]]; then
        grep -v -e "^$key\$" -e "^$key " "$file" >"$tmp" || true
    fi
    [[ -n $line ]] && echo "$line" >>"$tmp"
    if [[ -s $tmp ]]; then
        chmod 0644 "$tmp"
        mv "$tmp" "$file"
    else
        rm -f "$tmp" "$file"
    fi
}

# Regenerate Dovecot's configuration from the pristine one plus the fault
# state files and make it effective for new connections (with "restart":
# by restarting Dovecot, see cmd_auth_penalty).
apply_dovecot_faults() { # [restart]
    ensure_vmail_user
    ensure_password
    write_dovecot_config
    if dovecot_running && [[ ${1:-} == restart ]]; then
        restart_dovecot
    elif dovecot_running; then
        reload_dovecot
    fi
    # Postfix keeps LMTP sessions (connection cache) and its SASL connection
    # to processes of the old configuration; its reload drops them.
    reload_postfix
}

restart_dovecot() {
    doveconf -c "$DC_CONF" -n >/dev/null || die "invalid Dovecot configuration $DC_CONF"
    stop_dovecot
    start_dovecot
    wait_ready dovecot
}

# A reload makes the master reread its configuration; processes it starts
# afterwards (logins, auth, lmtp) use the new one, old ones finish their
# clients. Give the master a moment before the caller's next connection.
reload_dovecot() {
    doveconf -c "$DC_CONF" -n >/dev/null || die "invalid Dovecot configuration $DC_CONF"
    dovecot -c "$DC_CONF" reload
    sleep 0.2
    wait_greeting "$IMAP_PORT" '* OK' 'a LOGOUT' 50 || log "warning: imap port not answering after reload"
}

cmd_quota() {
    need_root
    if (($# < 2 || $# > 3)) || [[ $2 == off && $# == 3 ]] || [[ $# == 3 && $3 != tempfail ]]; then
        die "usage: $SCRIPT_NAME quota USER BYTES [tempfail] | quota USER off"
    fi
    need_config
    local user bytes line
    user=$(resolve_user "$1")
    [[ $2 == off ]] || bytes=$(parse_bytes "$2")
    take_lock
    if [[ $2 == off ]]; then
        set_state_line "$FAULT_DIR/quota" "$user"
    else
        line="$user $bytes${3:+ $3}"
        set_state_line "$FAULT_DIR/quota" "$user" "$line"
    fi
    # Maildir++ keeps a usage cache; without it Dovecot counts the mailbox anew.
    rm -f "$MAIL_ROOT/$user/Maildir/maildirsize"
    # A temporary refusal leads to a delay notice at once, not after hours.
    if grep -qs ' tempfail$' "$FAULT_DIR/quota"; then
        postconf -c "$PF_DIR" -e 'delay_warning_time=1s'
    else
        postconf -c "$PF_DIR" -e 'delay_warning_time=0' # the pristine value
    fi
    apply_dovecot_faults
    if [[ $2 == off ]]; then
        log "quota for $user@$DOMAIN removed"
    else
        log "quota for $user@$DOMAIN: $bytes bytes${3:+ ($3)}"
    fi
}

cmd_junk() {
    need_root
    if (($# != 2)) || [[ $2 != on && $2 != off ]]; then
        die "usage: $SCRIPT_NAME junk USER|all on|off"
    fi
    need_config
    local who
    if [[ ${1,,} == all ]]; then who=all; else who=$(resolve_user "$1"); fi
    [[ $2 == off ]] || cmd_install # dovecot-sieve on a machine set up before it was needed
    take_lock
    if [[ $2 == on ]]; then
        set_state_line "$FAULT_DIR/junk" "$who" "$who"
    elif [[ $who == all ]]; then
        rm -f "$FAULT_DIR/junk" # every junk rule
    else
        set_state_line "$FAULT_DIR/junk" "$who"
    fi
    if fault_on junk; then
        write_junk_sieve
    else
        rm -f "$FAULT_DIR/junk.sieve" "$FAULT_DIR/junk.svbin"
    fi
    apply_dovecot_faults
    if fault_on junk; then
        log "messages with attachments go to Junk for: $(tr '\n' ' ' <"$FAULT_DIR/junk")"
    else
        log "no junk filing"
    fi
}

# The sieve_before script: attachments for the listed users (or all) -> Junk.
write_junk_sieve() {
    local who=() u recipients="true" script=$FAULT_DIR/junk.sieve
    mapfile -t who <"$FAULT_DIR/junk"
    if ! printf '%s\n' "${who[@]}" | grep -qx all; then
        recipients='envelope :is "to" ['
        for u in "${who[@]}"; do recipients+="\"$u@$DOMAIN\", "; done
        recipients="${recipients%, }]"
    fi
    cat >"$script.tmp" <<EOF
# Generated by $SCRIPT_NAME 'junk': a spam filter that dislikes attachments.
require ["fileinto", "mailbox", "envelope", "mime"];
if allof ($recipients,
          anyof (header :contains "Content-Type" "multipart/mixed",
                 header :mime :anychild :contains "Content-Disposition" "attachment")) {
    fileinto :create "Junk";
    stop;
}
EOF
    chmod 0644 "$script.tmp"
    mv "$script.tmp" "$script"
    # Compiled here (as root): LMTP runs as $VMAIL_USER and could not save it.
    sievec "$script" || die "sievec could not compile $script"
    chmod 0644 "$FAULT_DIR/junk.svbin"
}

cmd_dsn() {
    need_root
    [[ ${1:-} == on || ${1:-} == off ]] || die "usage: $SCRIPT_NAME dsn on|off"
    need_config
    take_lock
    if [[ $1 == off ]]; then
        postconf -c "$PF_DIR" -e 'smtpd_discard_ehlo_keywords=dsn'
    else
        postconf -c "$PF_DIR" -X smtpd_discard_ehlo_keywords
    fi
    reload_postfix
    log "DSN $1"
}

cmd_bounce_large() {
    need_root
    need_config
    local limit mode service=$CHECK_HOST:$HOP_PORT/inet i
    if [[ ${1:-} == off ]]; then
        take_lock
        postconf -c "$PF_DIR" -X content_filter
        postconf -c "$PF_DIR" -MX "$service" 2>/dev/null || true
        reload_postfix
        for ((i = 0; i < 50; i++)); do
            port_accepts "$HOP_PORT" || { log "large-message hop removed"; return 0; }
            sleep 0.1
        done
        die "hop port $HOP_PORT still accepts connections"
    fi
    (($# == 1 || $# == 2)) || die "usage: $SCRIPT_NAME bounce-large BYTES [data|size] | off"
    limit=$(parse_bytes "$1")
    mode=${2:-data}
    [[ $mode == data || $mode == size ]] || die "bounce-large: mode is data or size, not '$mode'"
    ((limit < SIZE_LIMIT)) || die "bounce-large: BYTES must be below the submission limit $SIZE_LIMIT"
    take_lock
    if ! postconf -c "$PF_DIR" -M "$service" 2>/dev/null | grep -q .; then
        ensure_ports_free "$HOP_PORT"
    fi
    # The hop is an smtpd of this instance on loopback: mail relayed to it
    # (content_filter) is queued again and delivered over LMTP. Its own
    # content_filter is empty (no loop), and its host name differs from
    # myhostname, or Postfix's SMTP client would see "mail loops back to
    # myself".
    postconf -c "$PF_DIR" -M "$service=$CHECK_HOST:$HOP_PORT inet n - n - - smtpd"
    postconf -c "$PF_DIR" -P \
        "$service/syslog_name=postfix/hop" \
        "$service/myhostname=hop.$DOMAIN" \
        "$service/content_filter=" \
        "$service/message_size_limit=$limit"
    if [[ $mode == data ]]; then
        # Without SIZE in its EHLO reply, the client sends everything and the
        # hop answers 552 at end of DATA.
        postconf -c "$PF_DIR" -P "$service/smtpd_discard_ehlo_keywords=silent-discard,size"
    else
        postconf -c "$PF_DIR" -PX "$service/smtpd_discard_ehlo_keywords" 2>/dev/null || true
    fi
    postconf -c "$PF_DIR" -e "content_filter=smtp:[$CHECK_HOST]:$HOP_PORT"
    reload_postfix
    wait_greeting "$HOP_PORT" 220 QUIT 50 || die "hop port $HOP_PORT does not answer"
    log "messages over $limit bytes bounce after acceptance (hop $CHECK_HOST:$HOP_PORT, mode $mode)"
}

cmd_oauth() {
    case ${1:-} in
        on | off) cmd_oauth_switch "$1" ;;
        token) shift; cmd_oauth_token "$@" ;;
        *) die "usage: $SCRIPT_NAME oauth on|off|token USER [SECONDS] [--bad-signature]" ;;
    esac
}

cmd_oauth_switch() { # on|off
    need_root
    need_config
    take_lock
    if [[ $1 == on ]]; then
        ensure_oauth_key
        install -d -m 0755 "$FAULT_DIR"
        cat >"$FAULT_DIR/oauth2.conf.ext" <<EOF
# Generated by $SCRIPT_NAME 'oauth on'. JWTs are validated locally: the key is
# looked up as <azp>/<alg>/<kid> under the dict prefix ("default" for a
# missing azp or kid); its value is the base64 of the HS256 key.
introspection_mode = local
local_validation_key_dict = fs:posix:prefix=$OAUTH_KEY_DICT/
username_attribute = sub
EOF
        chmod 0644 "$FAULT_DIR/oauth2.conf.ext"
        : >"$FAULT_DIR/oauth"
    else
        rm -f "$FAULT_DIR/oauth" "$FAULT_DIR/oauth2.conf.ext"
    fi
    apply_dovecot_faults
    # The IMAP greeting lists the new auth process's mechanisms.
    local i greeting
    for ((i = 0; i < 50; i++)); do
        greeting=$(imap_greeting)
        if [[ $1 == on && $greeting == *AUTH=XOAUTH2* ]] ||
            [[ $1 == off && -n $greeting && $greeting != *AUTH=XOAUTH2* ]]; then
            log "oauth $1"
            return 0
        fi
        sleep 0.1
    done
    die "oauth $1: the IMAP greeting does not show it: $greeting"
}

imap_greeting() {
    (
        exec 3<>"/dev/tcp/$CHECK_HOST/$IMAP_PORT" || exit 1
        IFS= read -r -t 3 -u 3 line || exit 1
        printf 'a LOGOUT\r\n' >&3 || true
        echo "$line"
    ) 2>/dev/null || true
}

# The HS256 key (base64 of 32 random bytes), stable across restarts, and its
# copy where Dovecot's local validation looks it up.
ensure_oauth_key() {
    install -d -m 0755 "$OAUTH_DIR"
    if [[ ! -s $OAUTH_KEY_FILE ]]; then
        openssl rand -base64 32 | tr -d '\n' >"$OAUTH_KEY_FILE.tmp"
        mv "$OAUTH_KEY_FILE.tmp" "$OAUTH_KEY_FILE"
    fi
    # Readable like the password file: a throwaway key of a loopback server.
    chmod 0644 "$OAUTH_KEY_FILE"
    install -d -m 0750 -o root -g dovecot "$OAUTH_KEY_DICT" "$OAUTH_KEY_DICT/default" \
        "$OAUTH_KEY_DICT/default/HS256"
    install -m 0640 -o root -g dovecot "$OAUTH_KEY_FILE" "$OAUTH_KEY_DICT/default/HS256/default"
}

base64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

cmd_oauth_token() { # USER [SECONDS] [--bad-signature]
    local user ttl=3600 bad=0 arg now exp iat header payload sig hexkey
    (($#)) || die "usage: $SCRIPT_NAME oauth token USER [SECONDS] [--bad-signature]"
    user=$(resolve_user "$1")
    shift
    for arg in "$@"; do
        case $arg in
            --bad-signature) bad=1 ;;
            -[0-9]* | [0-9]*) [[ $arg =~ ^-?[0-9]+$ ]] || die "not a number of seconds: $arg"; ttl=$arg ;;
            *) die "oauth token: unknown argument '$arg'" ;;
        esac
    done
    [[ -r $OAUTH_KEY_FILE ]] || die "no key in $OAUTH_KEY_FILE; run '$SCRIPT_NAME oauth on' first"
    now=$(date +%s)
    exp=$((now + ttl))
    iat=$(((exp < now ? exp : now) - 5))
    header=$(printf '{"alg":"HS256","typ":"JWT"}' | base64url)
    payload=$(printf '{"sub":"%s@%s","iat":%d,"exp":%d}' "$user" "$DOMAIN" "$iat" "$exp" | base64url)
    # The key is world-readable anyway (see ensure_oauth_key), so passing it
    # to openssl as an argument exposes nothing new.
    hexkey=$(openssl base64 -d -A <"$OAUTH_KEY_FILE" | od -An -v -tx1 | tr -d ' \n')
    sig=$(printf '%s.%s' "$header" "$payload" |
        openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64url)
    if ((bad)); then
        # Same length and alphabet, different first character.
        if [[ ${sig:0:1} == A ]]; then sig=B${sig:1}; else sig=A${sig:1}; fi
    fi
    printf '%s.%s.%s\n' "$header" "$payload" "$sig"
}

cmd_auth_penalty() {
    need_root
    [[ ${1:-} == on || ${1:-} == off ]] || die "usage: $SCRIPT_NAME auth-penalty on|off"
    need_config
    take_lock
    if [[ $1 == off ]]; then
        install -d -m 0755 "$FAULT_DIR"
        : >"$FAULT_DIR/auth-penalty"
    else
        rm -f "$FAULT_DIR/auth-penalty"
    fi
    # Dovecot 2.3.19's master crashes (SIGSEGV) when a reload adds the
    # anvil-auth-penalty listener back: restart instead (ends open sessions).
    apply_dovecot_faults restart
    log "auth penalty $1"
}

# Delete queued messages of the test instance addressed to these recipients.
cmd_purge_queue() {
    need_root
    (($#)) || die "usage: $SCRIPT_NAME purge-queue ADDRESS..."
    [[ -d $PF_DIR ]] || return 0
    postfix_running || return 0
    local line id addr ids=() want
    while IFS= read -r line; do
        [[ $line =~ \"queue_id\":\ *\"([0-9A-Za-z]+)\" ]] || continue
        id=${BASH_REMATCH[1]}
        for want in "$@"; do
            addr=${want,,}
            if [[ ${line,,} == *"\"address\": \"$addr\""* || ${line,,} == *"\"address\":\"$addr\""* ]]; then
                ids+=("$id")
                break
            fi
        done
    done < <(postqueue -c "$PF_DIR" -j 2>/dev/null || true)
    if ((${#ids[@]})); then
        printf '%s\n' "${ids[@]}" | postsuper -c "$PF_DIR" -d - >/dev/null 2>&1 || true
        log "deleted ${#ids[@]} queued message(s) for $*"
    fi
}

# A reload lets new connections use the new main.cf; idle smtpd processes of
# the old generation exit on their own. Wait until the greeting is back so a
# caller's next connection sees the new settings.
reload_postfix() {
    postfix_running || return 0
    postfix -c "$PF_DIR" reload >/dev/null 2>&1
    local i
    for ((i = 0; i < 50; i++)); do
        plain_greeting "$SMTP_PORT" 220 QUIT && return 0
        sleep 0.1
    done
    log "warning: smtp port not answering after reload"
}

cmd_run() {
    cmd_start
    # Keep the container alive and its log visible; stop cleanly on TERM.
    local tail_pid
    tail -n 0 -F "$PF_LOG" "$DC_LOG" 9>&- &
    tail_pid=$!
    trap 'kill "$tail_pid" 2>/dev/null || true; cmd_stop; exit 0' TERM INT
    wait "$tail_pid" || true
}

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$SELF"
}

main() {
    local cmd=${1:-}
    (($#)) && shift
    case $cmd in
        install) cmd_install ;;
        start) cmd_start ;;
        stop) cmd_stop "$@" ;;
        resume) cmd_resume "$@" ;;
        status) cmd_status ;;
        run) cmd_run ;;
        env) print_env ;;
        postconf) cmd_postconf "$@" ;;
        reset-config) cmd_reset_config ;;
        checks) cmd_checks "$@" ;;
        pop3) cmd_pop3 "$@" ;;
        quota) cmd_quota "$@" ;;
        bounce-large) cmd_bounce_large "$@" ;;
        dsn) cmd_dsn "$@" ;;
        junk) cmd_junk "$@" ;;
        oauth) cmd_oauth "$@" ;;
        auth-penalty) cmd_auth_penalty "$@" ;;
        purge-queue) cmd_purge_queue "$@" ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"

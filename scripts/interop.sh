#!/usr/bin/env bash
# Interop mail servers for mailprobe: Exim 4 (SMTP, submission, SMTPS) and
# GNU Mailutils imap4d/pop3d (IMAP, IMAPS, POP3, POP3S), from Debian packages,
# started on loopback as a private instance WITHOUT systemd, next to (not
# instead of) the Postfix + Dovecot of scripts/testserver.sh.
#
# Usage: scripts/interop.sh install|start|stop|status|env
#
#   install   install the packages only (used by start): mailutils-imap4d and
#             mailutils-pop3d with apt; exim4-daemon-light is downloaded with
#             apt and unpacked with `dpkg -x` into the state directory,
#             because Debian's Exim conflicts with the installed Postfix
#   start     install if needed, configure, start, wait for every greeting
#             (idempotent: if everything answers it only re-checks; run stop
#             first to apply changed MAILPROBE_INTEROP_* settings)
#   stop      stop every daemon of this instance (idempotent)
#   status    exit 0 if every port answers with its greeting, else 1
#   env       print `export MAILPROBE_INTEROP_...` lines for the endpoints:
#             eval "$(scripts/interop.sh env)"
#
# Endpoints (default ports; MAILPROBE_INTEROP_<NAME>_PORT overrides each):
#   smtp            3525  Exim, STARTTLS offered, AUTH offered after TLS only,
#                         mail for mailprobe.test, SIZE 52428800
#   submission      3587  Exim, MAIL before STARTTLS: 530 5.7.0 TLS required,
#                         MAIL without AUTH: 530 5.7.0 Authentication required
#   smtps           3465  Exim, implicit TLS with the SELF-SIGNED certificate
#                         (CA:TRUE, as `openssl req -x509` makes it), AUTH required
#   smtp_small      3526  as smtp, SIZE 2097152, Exim's own refusal
#                         "552 Message size exceeds maximum permitted"
#   smtp_toobig     3527  as smtp, SIZE 52428800 advertised, but anything over
#                         2097152 refused with "550 Message too big!"
#   imap            3143  imap4d, STARTTLS, LOGINDISABLED until TLS
#   imaps           3993  imap4d, implicit TLS
#   imap_tls_required 3144 a second imap4d, tls-mode required: XTLSREQUIRED
#                         but no LOGINDISABLED; LOGIN before STARTTLS is
#                         answered "NO LOGIN Command disabled"
#   pop3            3110  pop3d, STLS offered, USER/PASS allowed without TLS
#   pop3_tls_required 3111 pop3d, tls-mode required: USER answered
#                         "-ERR Incorrect state" until STLS
#   pop3s           3995  pop3d, implicit TLS
#   pop3_delay      3112  a second pop3d with login-delay 60: a second login
#                         within 60 s gets "-ERR [LOGIN-DELAY] ..."
# Users probe@mailprobe.test and test01..test16@mailprobe.test share one random
# password (see `env`). Mail is delivered by Exim into
# $STATE/mail/<localpart>/Maildir, which imap4d and pop3d read (as <home>/INBOX).
# TLS: every endpoint but smtps uses a leaf certificate of a private CA
# (MAILPROBE_INTEROP_CA_FILE); smtps uses MAILPROBE_INTEROP_SELF_SIGNED_CERT.
#
# The distribution's own configuration and instances are left alone (only
# packages are installed): Exim runs from
# $STATE/pkg/exim4/usr/sbin/exim4 with `-C $STATE/etc/exim/exim.conf`, imap4d
# and pop3d with `--config-file=$STATE/etc/mailutils/*.conf`. Exim's binary
# needs its compiled-in user Debian-exim, which is created if missing (as the
# exim4-base package would); it drops root because of -C and then receives and
# delivers as Debian-exim, which owns the Maildirs.
set -euo pipefail

SELF=$(readlink -f -- "${BASH_SOURCE[0]}")
ORIGINAL_ARGS=("$@")
SCRIPT_NAME=$(basename -- "$SELF")

# ---------------------------------------------------------------------------
# Settings (environment variables with defaults)
# ---------------------------------------------------------------------------
STATE_DIR=${MAILPROBE_INTEROP_DIR:-/var/lib/mailprobe-interop}
HOST=${MAILPROBE_INTEROP_HOST:-127.0.0.1}
SMTP_PORT=${MAILPROBE_INTEROP_SMTP_PORT:-3525}
SUBMISSION_PORT=${MAILPROBE_INTEROP_SUBMISSION_PORT:-3587}
SMTPS_PORT=${MAILPROBE_INTEROP_SMTPS_PORT:-3465}
SMTP_SMALL_PORT=${MAILPROBE_INTEROP_SMTP_SMALL_PORT:-3526}
SMTP_TOOBIG_PORT=${MAILPROBE_INTEROP_SMTP_TOOBIG_PORT:-3527}
IMAP_PORT=${MAILPROBE_INTEROP_IMAP_PORT:-3143}
IMAP_TLS_REQUIRED_PORT=${MAILPROBE_INTEROP_IMAP_TLS_REQUIRED_PORT:-3144}
IMAPS_PORT=${MAILPROBE_INTEROP_IMAPS_PORT:-3993}
POP3_PORT=${MAILPROBE_INTEROP_POP3_PORT:-3110}
POP3_TLS_REQUIRED_PORT=${MAILPROBE_INTEROP_POP3_TLS_REQUIRED_PORT:-3111}
POP3S_PORT=${MAILPROBE_INTEROP_POP3S_PORT:-3995}
POP3_DELAY_PORT=${MAILPROBE_INTEROP_POP3_DELAY_PORT:-3112}
SIZE_LIMIT=${MAILPROBE_INTEROP_SIZE_LIMIT:-52428800}
SMALL_SIZE_LIMIT=${MAILPROBE_INTEROP_SMALL_SIZE_LIMIT:-2097152}
LOGIN_DELAY=${MAILPROBE_INTEROP_LOGIN_DELAY:-60}
START_TIMEOUT=${MAILPROBE_INTEROP_START_TIMEOUT:-30}

DOMAIN=mailprobe.test
MAIL_HOSTNAME=mail.$DOMAIN
USERS=(probe)
for i in $(seq -w 1 16); do USERS+=("test$i"); done
unset i
# Logs in once to the LOGIN-DELAY pop3d at the first start (see init_login_stat).
STAT_INIT_USER=login-stat-init
# The user name is compiled into Debian's Exim binary.
EXIM_USER=Debian-exim
EXIM_PACKAGE=exim4-daemon-light
APT_PACKAGES=(mailutils-imap4d mailutils-pop3d openssl)

ETC_DIR=$STATE_DIR/etc
EXIM_CONF=$ETC_DIR/exim/exim.conf
EXIM_USERS=$ETC_DIR/exim/users           # lsearch: localpart -> mailbox name
EXIM_LOGINS=$ETC_DIR/exim/logins         # lsearch: login name -> localpart
MU_DIR=$ETC_DIR/mailutils
MU_PASSWD_DIR=$MU_DIR/passwd             # virtdomain: one passwd file per domain
IMAP4D_CONF=$MU_DIR/imap4d.conf
IMAP4D_TLSREQ_CONF=$MU_DIR/imap4d-tls-required.conf
POP3D_CONF=$MU_DIR/pop3d.conf
POP3D_DELAY_CONF=$MU_DIR/pop3d-delay.conf
PKG_DIR=$STATE_DIR/pkg
EXIM_ROOT=$PKG_DIR/exim4                 # dpkg -x target
EXIM_BIN=$EXIM_ROOT/usr/sbin/exim4
TLS_DIR=$STATE_DIR/tls
CA_FILE=$TLS_DIR/ca.pem
CERT_FILE=$TLS_DIR/server.pem
KEY_FILE=$TLS_DIR/server.key
SELF_SIGNED_CERT=$TLS_DIR/selfsigned.pem
SELF_SIGNED_KEY=$TLS_DIR/selfsigned.key
CA_BUNDLE=$TLS_DIR/bundle.pem            # CA + self-signed: trusts every endpoint
LOG_DIR=$STATE_DIR/log
EXIM_LOG_DIR=$LOG_DIR/exim
RUN_DIR=$STATE_DIR/run
LOCK_DIR=$STATE_DIR/lock                 # pop3d's mandatory mailbox locks
LIB_DIR=$STATE_DIR/lib
SPOOL_DIR=$STATE_DIR/spool/exim
MAIL_ROOT=$STATE_DIR/mail                # $MAIL_ROOT/<localpart>/Maildir
PASSWORD_FILE=$STATE_DIR/password
LOGIN_STAT_FILE=$LIB_DIR/pop3d-login.stat

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] && return 0
    if command -v sudo >/dev/null 2>&1; then
        exec sudo --preserve-env "$SELF" "${ORIGINAL_ARGS[@]}"
    fi
    die "must run as root (installs packages, binds ports, owns mail); sudo is not installed"
}

check_settings() {
    # Loopback only: the servers must never listen anywhere else.
    [[ $HOST =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] ||
        die "MAILPROBE_INTEROP_HOST=$HOST: only an IPv4 loopback address (127.x.y.z) is allowed"
    local n
    for n in SMTP_PORT SUBMISSION_PORT SMTPS_PORT SMTP_SMALL_PORT SMTP_TOOBIG_PORT \
        IMAP_PORT IMAP_TLS_REQUIRED_PORT IMAPS_PORT POP3_PORT POP3_TLS_REQUIRED_PORT \
        POP3S_PORT POP3_DELAY_PORT SIZE_LIMIT SMALL_SIZE_LIMIT LOGIN_DELAY START_TIMEOUT; do
        [[ ${!n} =~ ^[0-9]+$ ]] || die "MAILPROBE_INTEROP_$n=${!n} is not a number"
    done
}

# Serialise state-changing subcommands (parallel test jobs may call start).
# Daemons are started with fd 9 closed so they do not hold the lock.
take_lock() {
    mkdir -p "$STATE_DIR"
    chmod 0755 "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    flock -w 120 9 || die "could not lock $STATE_DIR/.lock within 120 s (another $SCRIPT_NAME running?)"
}

release_lock() { exec 9>&-; }

show_logs() {
    local f
    for f in "$EXIM_LOG_DIR/mainlog" "$EXIM_LOG_DIR/paniclog" "$EXIM_LOG_DIR/daemon.out" \
        "$LOG_DIR/imap4d.log" "$LOG_DIR/imap4d-tls-required.log" "$LOG_DIR/pop3d.log" \
        "$LOG_DIR/pop3d-delay.log"; do
        [[ -s $f ]] || continue
        log "--- last lines of $f ---"
        tail -n 20 "$f" >&2 || true
    done
}

# ---------------------------------------------------------------------------
# Installation
# ---------------------------------------------------------------------------
apt_installed() { # package...
    local p status
    for p in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ $status == "install ok installed" ]] || return 1
    done
}

# apt-get install without starting the distribution's services (no systemd
# here, so invoke-rc.d would run the init scripts): a temporary policy-rc.d
# forbids it when the machine has none.
apt_install() { # package...
    local temp_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        temp_policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# temporary, from %s install\nexit 101\n' "$SCRIPT_NAME" >"$temp_policy"
        chmod 0755 "$temp_policy"
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "$@"; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends "$@"
    fi
    if [[ -n $temp_policy ]]; then
        rm -f "$temp_policy"
        trap - EXIT
    fi
}

# Exim's library dependencies from the .deb's Depends field: every "lib*"
# entry (first of an alternative), without version constraints. exim4-base
# and debconf are not needed to run the binary.
exim_library_deps() { # deb
    dpkg-deb -f "$1" Depends | tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/[[:space:]]//g' |
        grep '^lib' || true
}

install_exim() {
    local tmp deb version libs=()
    if [[ -x $EXIM_BIN && -s $PKG_DIR/exim4.version ]]; then
        return 0
    fi
    log "downloading $EXIM_PACKAGE and unpacking it into $EXIM_ROOT (dpkg -x, not installed)"
    tmp=$(mktemp -d)
    # apt's download sandbox user must be able to write there.
    if id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
    if ! (cd "$tmp" && apt-get download -q "$EXIM_PACKAGE"); then
        apt-get update -q
        (cd "$tmp" && apt-get download -q "$EXIM_PACKAGE") || die "apt-get download $EXIM_PACKAGE failed"
    fi
    deb=$(echo "$tmp"/"$EXIM_PACKAGE"_*.deb)
    [[ -f $deb ]] || die "apt-get download did not produce ${EXIM_PACKAGE}_*.deb"
    version=$(dpkg-deb -f "$deb" Version)
    mapfile -t libs < <(exim_library_deps "$deb")
    if ((${#libs[@]})) && ! apt_installed "${libs[@]}"; then
        apt_install "${libs[@]}"
    fi
    rm -rf "$EXIM_ROOT.new"
    mkdir -p "$PKG_DIR"
    dpkg -x "$deb" "$EXIM_ROOT.new"
    # The packaged binary is setuid root. Started by root with -C it gives up
    # root anyway, so a private copy needs no setuid bit lying around.
    chmod u-s "$EXIM_ROOT.new/usr/sbin/exim4"
    rm -rf "$EXIM_ROOT"
    mv "$EXIM_ROOT.new" "$EXIM_ROOT"
    printf '%s\n' "$version" >"$PKG_DIR/exim4.version"
    rm -rf "$tmp"
    [[ -x $EXIM_BIN ]] || die "$EXIM_BIN missing after dpkg -x"
}

# The Exim binary looks up its compiled-in user before reading any
# configuration; create it as exim4-base's postinst would.
ensure_exim_user() {
    if ! getent group "$EXIM_USER" >/dev/null; then
        groupadd --system "$EXIM_USER"
    fi
    if ! getent passwd "$EXIM_USER" >/dev/null; then
        useradd --system --gid "$EXIM_USER" --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin "$EXIM_USER"
    fi
}

cmd_install() {
    need_root
    if ! apt_installed "${APT_PACKAGES[@]}"; then
        log "installing ${APT_PACKAGES[*]} (first run only)"
        apt_install "${APT_PACKAGES[@]}"
    fi
    ensure_exim_user
    install_exim
}

# ---------------------------------------------------------------------------
# Processes: ours are recognised by their configuration path on the command
# line (Exim's re-executed children carry `-C <conf>`, Mailutils' forked
# children the parent's `--config-file=<conf>`).
# ---------------------------------------------------------------------------
pids_with_arg() { # exact-argument
    local f pid
    while IFS= read -r f; do
        pid=${f#/proc/}
        pid=${pid%/cmdline}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        echo "$pid"
    done < <(grep -lzxF -- "$1" /proc/[0-9]*/cmdline 2>/dev/null || true)
}

daemon_running() { # pidfile exact-argument
    local pid
    [[ -r $1 ]] || return 1
    read -r pid <"$1" 2>/dev/null || return 1
    pid=${pid//[[:space:]]/}
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    grep -qzxF -- "$2" "/proc/$pid/cmdline" 2>/dev/null
}

# TERM every process of one daemon, KILL what is left after 10 s.
stop_daemon() { # name exact-argument pidfile
    local name=$1 arg=$2 pidfile=$3 pids p deadline
    mapfile -t pids < <(pids_with_arg "$arg")
    rm -f "$pidfile"
    ((${#pids[@]})) || return 0
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        mapfile -t pids < <(pids_with_arg "$arg")
        ((${#pids[@]})) || return 0
        sleep 0.1
    done
    log "$name did not stop within 10 s; killing ${pids[*]}"
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}

stop_all() {
    stop_daemon exim "$EXIM_CONF" "$RUN_DIR/exim.pid"
    stop_daemon imap4d "--config-file=$IMAP4D_CONF" "$RUN_DIR/imap4d.pid"
    stop_daemon imap4d-tls-required "--config-file=$IMAP4D_TLSREQ_CONF" "$RUN_DIR/imap4d-tls-required.pid"
    stop_daemon pop3d "--config-file=$POP3D_CONF" "$RUN_DIR/pop3d.pid"
    stop_daemon pop3d-delay "--config-file=$POP3D_DELAY_CONF" "$RUN_DIR/pop3d-delay.pid"
}

all_running() {
    daemon_running "$RUN_DIR/exim.pid" "$EXIM_CONF" &&
        daemon_running "$RUN_DIR/imap4d.pid" "--config-file=$IMAP4D_CONF" &&
        daemon_running "$RUN_DIR/imap4d-tls-required.pid" "--config-file=$IMAP4D_TLSREQ_CONF" &&
        daemon_running "$RUN_DIR/pop3d.pid" "--config-file=$POP3D_CONF" &&
        daemon_running "$RUN_DIR/pop3d-delay.pid" "--config-file=$POP3D_DELAY_CONF"
}

# ---------------------------------------------------------------------------
# Port probes: up = the protocol greeting arrives (TLS ports: after a
# handshake verified against the file the clients are told to trust).
# ---------------------------------------------------------------------------
plain_greeting() { # port expected-prefix quit-command
    (
        exec 3<>"/dev/tcp/$HOST/$1" || exit 1
        line=""
        IFS= read -r -t 3 -u 3 line || exit 1
        printf '%s\r\n' "$3" >&3 || true
        [[ $line == "$2"* ]]
    ) 2>/dev/null
}

tls_greeting() { # port expected-prefix trust-file
    local out pid line="" i
    [[ -r $3 ]] || return 1
    out=$(mktemp)
    # -quiet implies -ign_eof: s_client keeps reading after stdin ends, so it
    # is stopped here once the greeting is in (at most 5 s).
    openssl s_client -connect "$HOST:$1" -servername localhost -verify_hostname localhost \
        -CAfile "$3" -verify_return_error -quiet </dev/null >"$out" 2>/dev/null &
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
    [[ $line == "$2"* ]]
}

# Prints "name port" for every endpoint that does not greet; returns 1 then.
check_ports() {
    local bad=0
    plain_greeting "$SMTP_PORT" 220 QUIT || { echo "smtp $SMTP_PORT"; bad=1; }
    plain_greeting "$SUBMISSION_PORT" 220 QUIT || { echo "submission $SUBMISSION_PORT"; bad=1; }
    tls_greeting "$SMTPS_PORT" 220 "$SELF_SIGNED_CERT" || { echo "smtps $SMTPS_PORT"; bad=1; }
    plain_greeting "$SMTP_SMALL_PORT" 220 QUIT || { echo "smtp_small $SMTP_SMALL_PORT"; bad=1; }
    plain_greeting "$SMTP_TOOBIG_PORT" 220 QUIT || { echo "smtp_toobig $SMTP_TOOBIG_PORT"; bad=1; }
    plain_greeting "$IMAP_PORT" '* OK' 'a LOGOUT' || { echo "imap $IMAP_PORT"; bad=1; }
    plain_greeting "$IMAP_TLS_REQUIRED_PORT" '* OK' 'a LOGOUT' ||
        { echo "imap_tls_required $IMAP_TLS_REQUIRED_PORT"; bad=1; }
    tls_greeting "$IMAPS_PORT" '* OK' "$CA_FILE" || { echo "imaps $IMAPS_PORT"; bad=1; }
    plain_greeting "$POP3_PORT" '+OK' QUIT || { echo "pop3 $POP3_PORT"; bad=1; }
    plain_greeting "$POP3_TLS_REQUIRED_PORT" '+OK' QUIT ||
        { echo "pop3_tls_required $POP3_TLS_REQUIRED_PORT"; bad=1; }
    tls_greeting "$POP3S_PORT" '+OK' "$CA_FILE" || { echo "pop3s $POP3S_PORT"; bad=1; }
    plain_greeting "$POP3_DELAY_PORT" '+OK' QUIT || { echo "pop3_delay $POP3_DELAY_PORT"; bad=1; }
    return "$bad"
}

port_accepts() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Something else on one of our ports would pass the greeting checks.
ensure_ports_free() { # port...
    local p
    for p in "$@"; do
        port_accepts "$p" && die "port $HOST:$p is already in use by another process; set MAILPROBE_INTEROP_*_PORT"
    done
    return 0
}

wait_ready() {
    local deadline=$((SECONDS + START_TIMEOUT)) missing
    while :; do
        missing=$(check_ports) && return 0
        if ((SECONDS >= deadline)); then
            log "not ready after ${START_TIMEOUT}s; not answering:"
            printf '  %s\n' "${missing//$'\n'/$'\n'  }" >&2
            show_logs
            die "interop mail servers did not come up"
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------
# State: directories, password, users, certificates, Maildirs
# ---------------------------------------------------------------------------
ensure_dirs() {
    install -d -m 0755 "$ETC_DIR" "$ETC_DIR/exim" "$MU_DIR" "$MU_PASSWD_DIR" "$TLS_DIR" \
        "$LOG_DIR" "$RUN_DIR" "$LIB_DIR" "$STATE_DIR/spool" "$MAIL_ROOT"
    install -d -m 0700 "$LOCK_DIR"
    install -d -m 0750 -o "$EXIM_USER" -g "$EXIM_USER" "$SPOOL_DIR" "$EXIM_LOG_DIR"
}

# One random password for every user, stable across restarts, no newline.
ensure_password() {
    if [[ ! -s $PASSWORD_FILE ]]; then
        openssl rand -hex 16 | tr -d '\n' >"$PASSWORD_FILE.tmp"
        mv "$PASSWORD_FILE.tmp" "$PASSWORD_FILE"
    fi
    chmod 0644 "$PASSWORD_FILE"
    [[ $(<"$PASSWORD_FILE") =~ ^[0-9a-f]+$ ]] || die "$PASSWORD_FILE: expected a hex password"
}

# Two kinds of server certificate:
# - a private CA and a leaf it signed (CA:FALSE), for every endpoint but smtps;
# - a self-signed certificate made the usual way, `openssl req -x509` with the
#   distribution's defaults, which marks it CA:TRUE: the certificate many small
#   servers run with, on smtps.
ensure_certs() {
    local san="DNS:localhost,DNS:$MAIL_HOSTNAME,IP:127.0.0.1"
    if ! { [[ -s $CA_FILE && -s $CERT_FILE && -s $KEY_FILE ]] &&
        openssl x509 -in "$CERT_FILE" -noout -checkend 86400 >/dev/null 2>&1; }; then
        log "generating the interop CA and server certificate in $TLS_DIR"
        local tmp
        tmp=$(mktemp -d)
        openssl req -x509 -new -newkey rsa:2048 -nodes -days 3650 -sha256 \
            -subj "/CN=mailprobe interop CA" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
        openssl req -new -newkey rsa:2048 -nodes -sha256 -subj /CN=localhost \
            -keyout "$tmp/server.key" -out "$tmp/server.csr" 2>/dev/null
        printf '%s\n' "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" "subjectAltName=$san" >"$tmp/leaf.ext"
        openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
            -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
            -extfile "$tmp/leaf.ext" -out "$tmp/server.pem" 2>/dev/null
        install -m 0644 "$tmp/ca.pem" "$CA_FILE"
        install -m 0600 "$tmp/ca.key" "$TLS_DIR/ca.key"
        install -m 0644 "$tmp/server.pem" "$CERT_FILE"
        install -m 0600 "$tmp/server.key" "$KEY_FILE"
        rm -rf "$tmp"
    fi
    if ! { [[ -s $SELF_SIGNED_CERT && -s $SELF_SIGNED_KEY ]] &&
        openssl x509 -in "$SELF_SIGNED_CERT" -noout -checkend 86400 >/dev/null 2>&1; }; then
        log "generating the self-signed certificate $SELF_SIGNED_CERT"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
            -addext "subjectAltName=$san" \
            -keyout "$SELF_SIGNED_KEY.tmp" -out "$SELF_SIGNED_CERT.tmp" 2>/dev/null
        mv "$SELF_SIGNED_KEY.tmp" "$SELF_SIGNED_KEY"
        mv "$SELF_SIGNED_CERT.tmp" "$SELF_SIGNED_CERT"
        chmod 0644 "$SELF_SIGNED_CERT"
    fi
    # The point of this certificate is CA:TRUE; say so if a changed
    # openssl.cnf stopped adding it.
    openssl x509 -in "$SELF_SIGNED_CERT" -noout -ext basicConstraints 2>/dev/null | grep -q 'CA:TRUE' ||
        die "$SELF_SIGNED_CERT is not CA:TRUE (openssl.cnf without v3_ca?); remove it and check openssl req -x509"
    # Exim reads its keys as Debian-exim (it drops root because of -C).
    chown "root:$EXIM_USER" "$KEY_FILE" "$SELF_SIGNED_KEY"
    chmod 0640 "$KEY_FILE" "$SELF_SIGNED_KEY"
    cat "$CA_FILE" "$SELF_SIGNED_CERT" >"$CA_BUNDLE.tmp"
    chmod 0644 "$CA_BUNDLE.tmp"
    mv "$CA_BUNDLE.tmp" "$CA_BUNDLE"
}

# Exim delivers into <localpart>/Maildir; Mailutils' virtual domains read
# <home>/INBOX, so INBOX is a symlink to the Maildir. Both exist up front so
# tests can plant mail before the first delivery.
ensure_maildirs() {
    local u d
    for u in "${USERS[@]}" "$STAT_INIT_USER"; do
        d=$MAIL_ROOT/$u
        install -d -m 0700 -o "$EXIM_USER" -g "$EXIM_USER" "$d" "$d/Maildir" \
            "$d/Maildir/cur" "$d/Maildir/new" "$d/Maildir/tmp"
        [[ -L $d/INBOX ]] || ln -sfn Maildir "$d/INBOX"
    done
}

write_user_tables() {
    local u hash uid gid
    uid=$(id -u "$EXIM_USER")
    gid=$(id -g "$EXIM_USER")
    hash=$(openssl passwd -6 -stdin <"$PASSWORD_FILE")
    {
        echo "# Generated by $SCRIPT_NAME: local part -> Maildir name"
        for u in "${USERS[@]}"; do echo "$u: $u"; done
    } >"$EXIM_USERS"
    {
        echo "# Generated by $SCRIPT_NAME: SMTP AUTH login -> local part"
        for u in "${USERS[@]}"; do echo "$u@$DOMAIN: $u"; done
    } >"$EXIM_LOGINS"
    # Mailutils virtdomain: passwd(5) format, crypt() hash, home = mailbox dir.
    for u in "${USERS[@]}" "$STAT_INIT_USER"; do
        echo "$u:$hash:$uid:$gid:mailprobe interop:$MAIL_ROOT/$u:/usr/sbin/nologin"
    done >"$MU_PASSWD_DIR/$DOMAIN.tmp"
    chmod 0600 "$MU_PASSWD_DIR/$DOMAIN.tmp"
    mv "$MU_PASSWD_DIR/$DOMAIN.tmp" "$MU_PASSWD_DIR/$DOMAIN"
    chmod 0644 "$EXIM_USERS" "$EXIM_LOGINS"
}

# ---------------------------------------------------------------------------
# Configuration files (regenerated on every start)
# ---------------------------------------------------------------------------
write_exim_config() {
    local i="$HOST"
    cat >"$EXIM_CONF.tmp" <<EOF
# Exim of the mailprobe interop instance. Generated by $SCRIPT_NAME on every
# start; edit the script, not this file. The port a client connected to
# (\$received_port) selects the policy: see the ACLs.
exim_path = $EXIM_BIN
primary_hostname = $MAIL_HOSTNAME
qualify_domain = $DOMAIN
domainlist local_domains = $DOMAIN

local_interfaces = <; $i.$SMTP_PORT ; $i.$SUBMISSION_PORT ; $i.$SMTPS_PORT ; $i.$SMTP_SMALL_PORT ; $i.$SMTP_TOOBIG_PORT
tls_on_connect_ports = $SMTPS_PORT
disable_ipv6 = true
# No DNS and no ident: the machine may have no resolver.
host_lookup =
rfc1413_hosts =
keep_environment =

spool_directory = $SPOOL_DIR
log_file_path = $EXIM_LOG_DIR/%slog
pid_file_path = $RUN_DIR/exim.pid
log_selector = +smtp_protocol_error +smtp_syntax_error +received_recipients +tls_peerdn
never_users = root
smtp_accept_max = 64
smtp_accept_queue_per_connection = 0
# Nothing leaves this machine: a bounce to an outside sender is dropped.
ignore_bounce_errors_after = 0s
timeout_frozen_after = 1h

# Advertised in EHLO as SIZE; Exim refuses bigger messages itself with
# "552 Message size exceeds maximum permitted" (at MAIL FROM when SIZE= says
# so, after DATA otherwise).
message_size_limit = \${if eq{\$received_port}{$SMTP_SMALL_PORT}{$SMALL_SIZE_LIMIT}{$SIZE_LIMIT}}

tls_advertise_hosts = *
tls_certificate = \${if eq{\$received_port}{$SMTPS_PORT}{$SELF_SIGNED_CERT}{$CERT_FILE}}
tls_privatekey = \${if eq{\$received_port}{$SMTPS_PORT}{$SELF_SIGNED_KEY}{$KEY_FILE}}
# AUTH is offered only once the session is encrypted.
auth_advertise_hosts = \${if eq{\$tls_in_cipher}{}{}{*}}

acl_smtp_mail = acl_check_mail
acl_smtp_rcpt = acl_check_rcpt
acl_smtp_data = acl_check_data

begin acl

acl_check_mail:
  # Submission: TLS first, then AUTH; the reply texts are this instance's own.
  deny    condition = \${if eq{\$received_port}{$SUBMISSION_PORT}}
          !encrypted = *
          message = 530 5.7.0 TLS required on this port
  deny    condition = \${if inlist{\$received_port}{$SUBMISSION_PORT:$SMTPS_PORT}}
          !authenticated = *
          message = 530 5.7.0 Authentication required
  # A size refusal without any enhanced code, judged on the declared SIZE=.
  deny    condition = \${if eq{\$received_port}{$SMTP_TOOBIG_PORT}}
          condition = \${if >{\$message_size}{$SMALL_SIZE_LIMIT}}
          message = Message too big!
  accept

acl_check_rcpt:
  deny    !domains = +local_domains
          !authenticated = *
          message = relay not permitted
  # Unknown local users and every outside domain: "550 Unrouteable address".
  require verify = recipient
  accept

acl_check_data:
  deny    condition = \${if eq{\$received_port}{$SMTP_TOOBIG_PORT}}
          condition = \${if >{\$message_size}{$SMALL_SIZE_LIMIT}}
          message = Message too big!
  accept

begin routers

# The only router: local mailboxes. There is no DNS router, so nothing is
# ever sent to another host.
mailbox:
  driver = accept
  domains = +local_domains
  local_parts = lsearch;$EXIM_USERS
  transport = maildir

begin transports

maildir:
  driver = appendfile
  directory = $MAIL_ROOT/\${local_part_data}/Maildir
  maildir_format
  create_directory
  directory_mode = 0700
  mode = 0600
  user = $EXIM_USER
  group = $EXIM_USER
  delivery_date_add
  envelope_to_add
  return_path_add

begin retry

*   *   F,1h,2s

begin authenticators

plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = \${if and{{eq{\${lookup{\$auth2}lsearch{$EXIM_LOGINS}{yes}{no}}}{yes}}{eq{\$auth3}{\${readfile{$PASSWORD_FILE}}}}}}
  server_set_id = \$auth2

login:
  driver = plaintext
  public_name = LOGIN
  server_prompts = <| Username: | Password:
  server_condition = \${if and{{eq{\${lookup{\$auth1}lsearch{$EXIM_LOGINS}{yes}{no}}}{yes}}{eq{\$auth2}{\${readfile{$PASSWORD_FILE}}}}}}
  server_set_id = \$auth1
EOF
    # Exim refuses a -C file not owned by root or writable by others.
    chmod 0644 "$EXIM_CONF.tmp"
    mv "$EXIM_CONF.tmp" "$EXIM_CONF"
    "$EXIM_BIN" -C "$EXIM_CONF" -bV >/dev/null 2>"$RUN_DIR/exim-bV.err" ||
        { cat "$RUN_DIR/exim-bV.err" >&2; die "invalid Exim configuration $EXIM_CONF"; }
}

# What imap4d and both pop3d share.
mailutils_common() { # pidfile
    cat <<EOF
logging { syslog no; }
tcp-wrappers { enable no; }
# Virtual users: user@$DOMAIN is looked up in passwd-dir/$DOMAIN, checked
# against its crypt() hash; the mailbox is <home>/INBOX, a Maildir.
auth { authentication generic; authorization virtdomain; }
virtdomain { passwd-dir "$MU_PASSWD_DIR"; }
mailbox { mailbox-type maildir; }
# The key is group-readable for Exim's user.
tls-file-checks { key-file -grdfil; }
tls { ssl-certificate-file "$CERT_FILE"; ssl-key-file "$KEY_FILE"; }
mode daemon;
foreground yes;
max-children 64;
pidfile "$1";
EOF
}

write_mailutils_config() {
    {
        echo "# imap4d of the mailprobe interop instance. Generated by $SCRIPT_NAME."
        mailutils_common "$RUN_DIR/imap4d.pid"
        cat <<EOF
# LOGINDISABLED until STARTTLS (or on the implicit-TLS port).
login-disabled yes;
server $HOST:$IMAP_PORT { tls-mode ondemand; }
server $HOST:$IMAPS_PORT { tls-mode connection; }
EOF
    } >"$IMAP4D_CONF"
    {
        # login-disabled applies to a whole imap4d, hence a second one.
        echo "# imap4d with tls-mode required of the mailprobe interop instance. Generated by $SCRIPT_NAME."
        mailutils_common "$RUN_DIR/imap4d-tls-required.pid"
        echo "server $HOST:$IMAP_TLS_REQUIRED_PORT { tls-mode required; }"
    } >"$IMAP4D_TLSREQ_CONF"
    {
        echo "# pop3d of the mailprobe interop instance. Generated by $SCRIPT_NAME."
        mailutils_common "$RUN_DIR/pop3d.pid"
        cat <<EOF
mandatory-locking { enable yes; lock-directory "$LOCK_DIR"; }
server $HOST:$POP3_PORT { tls-mode ondemand; }
server $HOST:$POP3_TLS_REQUIRED_PORT { tls-mode required; }
server $HOST:$POP3S_PORT { tls-mode connection; }
EOF
    } >"$POP3D_CONF"
    {
        echo "# pop3d with LOGIN-DELAY of the mailprobe interop instance. Generated by $SCRIPT_NAME."
        mailutils_common "$RUN_DIR/pop3d-delay.pid"
        cat <<EOF
mandatory-locking { enable yes; lock-directory "$LOCK_DIR"; }
# A user's next login within this many seconds gets -ERR [LOGIN-DELAY].
login-delay $LOGIN_DELAY;
stat-file "$LOGIN_STAT_FILE";
server $HOST:$POP3_DELAY_PORT { tls-mode ondemand; }
EOF
    } >"$POP3D_DELAY_CONF"
    chmod 0644 "$IMAP4D_CONF" "$IMAP4D_TLSREQ_CONF" "$POP3D_CONF" "$POP3D_DELAY_CONF"
}

# ---------------------------------------------------------------------------
# Start
# ---------------------------------------------------------------------------
start_mailutils() { # program config log
    local prog=$1 conf=$2 logf=$3
    "$prog" --config-file="$conf" --config-lint >/dev/null 2>"$RUN_DIR/lint.err" ||
        { cat "$RUN_DIR/lint.err" >&2; die "invalid $prog configuration $conf"; }
    # umask 077: pop3d refuses a group-readable login statistics file, and
    # creates it with mode 0660 otherwise.
    (
        umask 077
        exec setsid "$prog" --config-file="$conf" </dev/null >>"$logf" 2>&1 9>&-
    ) &
}

start_exim() {
    # -bd forks the listening daemon and returns; -q2s runs the queue every 2 s, so
    # that a delivery Mailutils broke (it empties tmp/ when a session opens the
    # Maildir, docs/INTEROP.md) is retried within seconds, as the retry rule allows.
    setsid "$EXIM_BIN" -C "$EXIM_CONF" -bd -q2s </dev/null >>"$EXIM_LOG_DIR/daemon.out" 2>&1 9>&- ||
        { show_logs; die "exim failed to start"; }
}

start_all() {
    ensure_ports_free "$SMTP_PORT" "$SUBMISSION_PORT" "$SMTPS_PORT" "$SMTP_SMALL_PORT" \
        "$SMTP_TOOBIG_PORT" "$IMAP_PORT" "$IMAP_TLS_REQUIRED_PORT" "$IMAPS_PORT" \
        "$POP3_PORT" "$POP3_TLS_REQUIRED_PORT" "$POP3S_PORT" "$POP3_DELAY_PORT"
    start_mailutils imap4d "$IMAP4D_CONF" "$LOG_DIR/imap4d.log"
    start_mailutils imap4d "$IMAP4D_TLSREQ_CONF" "$LOG_DIR/imap4d-tls-required.log"
    start_mailutils pop3d "$POP3D_CONF" "$LOG_DIR/pop3d.log"
    start_mailutils pop3d "$POP3D_DELAY_CONF" "$LOG_DIR/pop3d-delay.log"
    start_exim
}

# One POP3 login (USER/PASS/QUIT); the password stays inside this shell.
pop3_login() { # port user
    (
        exec 3<>"/dev/tcp/$HOST/$1" || exit 1
        line=""
        IFS= read -r -t 3 -u 3 line || exit 1
        printf 'USER %s\r\n' "$2" >&3
        IFS= read -r -t 3 -u 3 line || exit 1
        printf 'PASS %s\r\n' "$(<"$PASSWORD_FILE")" >&3
        IFS= read -r -t 3 -u 3 line || exit 1
        [[ $line == +OK* ]] || exit 1
        printf 'QUIT\r\n' >&3
        IFS= read -r -t 3 -u 3 line || true
    ) 2>/dev/null
}

# pop3d creates its login statistics (GDBM) file with mode 0660 whatever the
# umask, and then ignores it as unsafe ("statistics db fails safety check"),
# so LOGIN-DELAY would silently never apply. Let it create the file with one
# login of an internal user, then make it private; it is kept across restarts.
init_login_stat() {
    if [[ ! -e $LOGIN_STAT_FILE ]]; then
        pop3_login "$POP3_DELAY_PORT" "$STAT_INIT_USER@$DOMAIN" ||
            { show_logs; die "login to pop3_delay on port $POP3_DELAY_PORT failed"; }
        [[ -e $LOGIN_STAT_FILE ]] || die "pop3d did not create $LOGIN_STAT_FILE"
    fi
    chmod 0600 "$LOGIN_STAT_FILE"
}

# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------
exim_version() { cat "$PKG_DIR/exim4.version" 2>/dev/null || echo unknown; }
mailutils_version() { dpkg-query -W -f='${Version}' mailutils-imap4d 2>/dev/null || echo unknown; }

print_env() {
    local kv
    for kv in \
        "MAILPROBE_INTEROP_HOST=$HOST" \
        "MAILPROBE_INTEROP_SMTP_PORT=$SMTP_PORT" \
        "MAILPROBE_INTEROP_SUBMISSION_PORT=$SUBMISSION_PORT" \
        "MAILPROBE_INTEROP_SMTPS_PORT=$SMTPS_PORT" \
        "MAILPROBE_INTEROP_SMTP_SMALL_PORT=$SMTP_SMALL_PORT" \
        "MAILPROBE_INTEROP_SMTP_TOOBIG_PORT=$SMTP_TOOBIG_PORT" \
        "MAILPROBE_INTEROP_IMAP_PORT=$IMAP_PORT" \
        "MAILPROBE_INTEROP_IMAP_TLS_REQUIRED_PORT=$IMAP_TLS_REQUIRED_PORT" \
        "MAILPROBE_INTEROP_IMAPS_PORT=$IMAPS_PORT" \
        "MAILPROBE_INTEROP_POP3_PORT=$POP3_PORT" \
        "MAILPROBE_INTEROP_POP3_TLS_REQUIRED_PORT=$POP3_TLS_REQUIRED_PORT" \
        "MAILPROBE_INTEROP_POP3S_PORT=$POP3S_PORT" \
        "MAILPROBE_INTEROP_POP3_DELAY_PORT=$POP3_DELAY_PORT" \
        "MAILPROBE_INTEROP_DOMAIN=$DOMAIN" \
        "MAILPROBE_INTEROP_USER=probe@$DOMAIN" \
        "MAILPROBE_INTEROP_USERS=${USERS[*]/%/@$DOMAIN}" \
        "MAILPROBE_INTEROP_PASSWORD_FILE=$PASSWORD_FILE" \
        "MAILPROBE_INTEROP_CA_FILE=$CA_FILE" \
        "MAILPROBE_INTEROP_SELF_SIGNED_CERT=$SELF_SIGNED_CERT" \
        "MAILPROBE_INTEROP_CA_BUNDLE=$CA_BUNDLE" \
        "MAILPROBE_INTEROP_MAILDIR_ROOT=$MAIL_ROOT" \
        "MAILPROBE_INTEROP_SIZE_LIMIT=$SIZE_LIMIT" \
        "MAILPROBE_INTEROP_SMALL_SIZE_LIMIT=$SMALL_SIZE_LIMIT" \
        "MAILPROBE_INTEROP_LOGIN_DELAY=$LOGIN_DELAY" \
        "MAILPROBE_INTEROP_SMTP_SOFTWARE=Exim $(exim_version)" \
        "MAILPROBE_INTEROP_IMAP_SOFTWARE=GNU Mailutils imap4d $(mailutils_version)" \
        "MAILPROBE_INTEROP_POP3_SOFTWARE=GNU Mailutils pop3d $(mailutils_version)" \
        "MAILPROBE_INTEROP_DIR=$STATE_DIR" \
        "MAILPROBE_INTEROP_EXIM_LOG=$EXIM_LOG_DIR/mainlog" \
        "MAILPROBE_INTEROP_IMAP_LOG=$LOG_DIR/imap4d.log" \
        "MAILPROBE_INTEROP_POP3_LOG=$LOG_DIR/pop3d.log"; do
        printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
    done
    echo "# Maildir of <localpart>@$DOMAIN: \$MAILPROBE_INTEROP_MAILDIR_ROOT/<localpart>/Maildir"
}

print_ready() {
    cat <<EOF
mailprobe interop mail servers ready (Exim $(exim_version), GNU Mailutils $(mailutils_version))
  smtp               smtp://$HOST:$SMTP_PORT   (STARTTLS, AUTH after TLS, optional)
  submission         smtp://$HOST:$SUBMISSION_PORT   (STARTTLS and AUTH required: 530)
  smtps              smtps://$HOST:$SMTPS_PORT  (self-signed CA:TRUE certificate, AUTH required)
  smtp_small         smtp://$HOST:$SMTP_SMALL_PORT   (SIZE $SMALL_SIZE_LIMIT, Exim's 552)
  smtp_toobig        smtp://$HOST:$SMTP_TOOBIG_PORT   (SIZE $SIZE_LIMIT, over $SMALL_SIZE_LIMIT: 550 Message too big!)
  imap               imap://$HOST:$IMAP_PORT   (STARTTLS, LOGINDISABLED before it)
  imap_tls_required  imap://$HOST:$IMAP_TLS_REQUIRED_PORT   (XTLSREQUIRED, no LOGINDISABLED)
  imaps              imaps://$HOST:$IMAPS_PORT
  pop3               pop3://$HOST:$POP3_PORT   (STLS, plaintext USER/PASS allowed)
  pop3_tls_required  pop3://$HOST:$POP3_TLS_REQUIRED_PORT   (XTLSREQUIRED)
  pop3s              pop3s://$HOST:$POP3S_PORT
  pop3_delay         pop3://$HOST:$POP3_DELAY_PORT   (LOGIN-DELAY $LOGIN_DELAY)
  users              probe@$DOMAIN, test01@$DOMAIN .. test16@$DOMAIN
  password           $PASSWORD_FILE
  CA file            $CA_FILE (all but smtps), $SELF_SIGNED_CERT (smtps), $CA_BUNDLE (both)
  Maildirs           $MAIL_ROOT/<localpart>/Maildir
  logs               $EXIM_LOG_DIR/mainlog, $LOG_DIR/{imap4d,imap4d-tls-required,pop3d,pop3d-delay}.log
EOF
}

# ---------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------
cmd_start() {
    need_root
    check_settings
    cmd_install
    take_lock
    if all_running && check_ports >/dev/null; then
        release_lock
        print_ready
        return 0
    fi
    # Partly running: start over from a clean slate.
    stop_all
    ensure_dirs
    ensure_password
    ensure_certs
    ensure_maildirs
    write_user_tables
    write_exim_config
    write_mailutils_config
    start_all
    wait_ready
    init_login_stat
    release_lock
    print_ready
}

cmd_stop() {
    need_root
    take_lock
    stop_all
    echo "mailprobe interop mail servers stopped"
}

cmd_status() {
    local missing
    check_settings
    if missing=$(check_ports); then
        echo "mailprobe interop mail servers are up"
        return 0
    fi
    echo "mailprobe interop mail servers are not (fully) up; not answering:"
    printf '  %s\n' "${missing//$'\n'/$'\n'  }"
    return 1
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
        stop) cmd_stop ;;
        status) cmd_status ;;
        env) print_env ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"

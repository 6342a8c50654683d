#!/usr/bin/env bash
# Benchmarks of issue #7 against the local test mail server (scripts/testserver.sh),
# every comparison side by side in the same run, median of RUNS runs:
#
#   1. send throughput: mailprobe --smtp-only --rounds N (concurrency 1 and 16) vs
#      Postfix's smtp-source -m N (-s 1 and 16), both against smtp-sink on a free
#      loopback port (10 KiB x 1000 and 1 MiB x 160);
#   2. one full default round (profile probes/local.toml: plain + 10KiB, 1MiB, 5MiB,
#      SMTP + IMAP + POP3, verified, deleted) vs the same work scripted with swaks + curl,
#      and the server's own delivery floor for the same ladder (scripts/bench-floor.py:
#      SMTP acceptance until the file is in the Maildir, watched with inotify);
#   3. peak memory (max RSS) of a 50 MiB attachment round trip (shared test server)
#      and of a 150 MiB one (a private instance with a 300 MiB size limit, started
#      and stopped here: /var/lib/mailprobe-bench, ports 7xxx);
#   4. client CPU per verified message vs the server's (Postfix + Dovecot) CPU,
#      with the test server to ourselves (exclusive turn on the tests' lock file).
#
# Rounds run without the liveness sampler (--sample-interval 0): its greeting
# probes every 250 ms would count as send and CPU cost of the messages.
#
# Usage: scripts/bench.sh [send|round|memory|cpu|all]   (RUNS=5, MAILPROBE_BIN=...)
# Needs root for smtp-sink's -u and the test server's files. Everything is bounded
# by `timeout`. Mailbox: test24@mailprobe.test (cleared before each round).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
WHAT=${1:-all}
BIN=${MAILPROBE_BIN:-target/release/mailprobe}
WORK=$(mktemp -d /tmp/mailprobe-bench.XXXXXX)
SINK_PID=
PRIVATE_STARTED=
# The private instance for the 150 MiB round trip: its own state and ports.
PRIVATE=(MAILPROBE_TEST_DIR=/var/lib/mailprobe-bench MAILPROBE_TEST_SIZE_LIMIT=314572800
  MAILPROBE_TEST_SMTP_PORT=7525 MAILPROBE_TEST_SUBMISSION_PORT=7587 MAILPROBE_TEST_SMTPS_PORT=7465
  MAILPROBE_TEST_IMAP_PORT=7143 MAILPROBE_TEST_IMAPS_PORT=7993 MAILPROBE_TEST_POP3_PORT=7110
  MAILPROBE_TEST_POP3S_PORT=7995)
cleanup() {
  [[ -n $SINK_PID ]] && kill "$SINK_PID" 2>/dev/null || true
  [[ -n $PRIVATE_STARTED ]] && env "${PRIVATE[@]}" timeout 120 scripts/testserver.sh stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { # command package
  command -v "$1" >/dev/null && return
  echo "installing $2 (for $1)" >&2
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
need /usr/sbin/smtp-source postfix
need swaks swaks
# swaks does STARTTLS and AUTH only with these (recommended, so not installed above).
perl -MNet::SSLeay -MIO::Socket::SSL -MAuthen::SASL -e1 2>/dev/null ||
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends \
    libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl >/dev/null
need curl curl
need /usr/bin/time time
need flock util-linux

if [[ -z ${MAILPROBE_BIN:-} ]]; then
  timeout 1200 cargo build --release -q
fi
eval "$(scripts/testserver.sh env)"
H=$MAILPROBE_TEST_HOST
PW=$(head -n1 "$MAILPROBE_TEST_PASSWORD_FILE")
CA=$MAILPROBE_TEST_CA_FILE
BOX=test24
USER_ADDR=$BOX@$MAILPROBE_TEST_DOMAIN
MAILDIR=$MAILPROBE_TEST_MAILDIR_ROOT/$BOX/Maildir
LOCK=${TMPDIR:-/tmp}/mailprobe-testserver.lock
PROFILE=(--profile probes/local.toml --user "$USER_ADDR" --from "$USER_ADDR" --to "$USER_ADDR")

median() { sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.4f\n", b-a}'; }
clear_box() { find "$MAILDIR/new" "$MAILDIR/cur" -type f -delete 2>/dev/null || true; }
encoded_bytes() { grep -o '"encoded_bytes": *[0-9]*' | head -n1 | grep -o '[0-9]*$'; }

# ------------------------------------------------------------------ 1. send
bench_send() {
  local port
  for port in $(seq 39025 39125); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
  done
  timeout 3600 smtp-sink -u nobody "127.0.0.1:$port" 1024 &
  SINK_PID=$!
  sleep 0.5
  local sink=(--smtp "smtp://127.0.0.1:$port" --starttls never --no-smtp-auth --smtp-only
    --from bench@example.test --to sink@example.test)
  echo "## Send throughput (messages/s, median of $RUNS; smtp-sink on 127.0.0.1:$port)"
  echo "| message | concurrency | messages | mailprobe --rounds N | smtp-source -m N | ratio |"
  echo "|---|---|---|---|---|---|"
  local size n c
  for size in 10KiB 1MiB; do
    local len
    # Exit code 1 (degraded: smtp-only leaves its messages behind) is expected.
    len=$({ timeout 60 "$BIN" check "${sink[@]}" --sizes "$size" --format json || true; } | encoded_bytes)
    if [[ $size == 10KiB ]]; then n=1000; else n=160; fi
    for c in 1 16; do
      local mp=() ss=() t
      for _ in $(seq "$RUNS"); do
        t=$(now)
        timeout 600 "$BIN" check "${sink[@]}" --quiet --sizes "$size" --rounds "$n" --concurrency "$c" \
          --sample-interval 0 || [[ $? -le 2 ]]
        mp+=("$(awk -v n="$n" -v s="$(elapsed "$t")" 'BEGIN {printf "%.0f", n/s}')")
        t=$(now)
        timeout 600 smtp-source -s "$c" -m "$n" -l "$len" -f bench@example.test -t sink@example.test "127.0.0.1:$port"
        ss+=("$(awk -v n="$n" -v s="$(elapsed "$t")" 'BEGIN {printf "%.0f", n/s}')")
      done
      local m s
      m=$(printf '%s\n' "${mp[@]}" | median)
      s=$(printf '%s\n' "${ss[@]}" | median)
      echo "| $size ($len B) | $c | $n | $m | $s | $(awk -v a="$m" -v b="$s" 'BEGIN {printf "%.2f", a/b}') |"
      echo "runs (messages/s): mailprobe ${mp[*]}; smtp-source ${ss[*]}"
    done
  done
  kill "$SINK_PID" 2>/dev/null || true
  SINK_PID=
}

# ------------------------------------------------------------------ 2. round
# The default round done by hand: 4 messages with swaks (STARTTLS + AUTH on
# submission), wait until IMAP sees all 4, fetch them over IMAP (STARTTLS) and POP3
# (implicit TLS) with curl, compare every attachment's SHA-256, delete over IMAP.
scripted_round() {
  local dir=$WORK/round id=bench-$RANDOM$RANDOM
  mkdir -p "$dir"
  local sizes=(0 10240 1048576 5242880) k
  for k in 0 1 2 3; do
    local args=()
    if ((sizes[k] > 0)); then
      head -c "${sizes[k]}" /dev/urandom >"$dir/a$k.bin"
      sha256sum <"$dir/a$k.bin" | cut -d' ' -f1 >"$dir/a$k.sha"
      args=(--attach "@$dir/a$k.bin" --attach-name "a$k.bin")
    fi
    timeout 120 swaks --silent 2 --server "$H:$MAILPROBE_TEST_SUBMISSION_PORT" --tls --tls-verify \
      --tls-ca-path "$CA" --auth PLAIN --auth-user "$USER_ADDR" --auth-password "$PW" \
      --from "$USER_ADDR" --to "$USER_ADDR" --header "X-Bench-Id: $id-$k" \
      --header "Subject: bench $id $k" --body "bench message $id $k" "${args[@]}" >/dev/null
  done
  local curl=(timeout 120 curl -sS --ssl-reqd --cacert "$CA" -u "$USER_ADDR:$PW")
  local imap=imap://$H:$MAILPROBE_TEST_IMAP_PORT/INBOX uids='' _
  for _ in $(seq 300); do
    uids=$("${curl[@]}" "$imap" -X "UID SEARCH HEADER X-Bench-Id $id" | tr -d '\r' | sed -n 's/^\* SEARCH *//p')
    [[ $(wc -w <<<"$uids") -eq 4 ]] && break
    sleep 0.1
  done
  [[ $(wc -w <<<"$uids") -eq 4 ]] || { echo "scripted round: messages not delivered" >&2; return 1; }
  local urls=() u
  for u in $uids; do urls+=("$imap;UID=$u" -o "$dir/imap-$u.eml"); done
  "${curl[@]}" "${urls[@]}"
  local pop=pop3s://$H:$MAILPROBE_TEST_POP3S_PORT nums
  nums=$("${curl[@]}" "$pop/" | tr -d '\r' | cut -d' ' -f1)
  urls=()
  for u in $nums; do urls+=("$pop/$u" -o "$dir/pop-$u.eml"); done
  "${curl[@]}" "${urls[@]}"
  local f ok=0
  for f in "$dir"/imap-*.eml "$dir"/pop-*.eml; do
    k=$(tr -d '\r' <"$f" | sed -n "s/^X-Bench-Id: $id-//p" | head -n1)
    [[ -n $k ]] || continue
    if ((sizes[k] == 0)); then
      if grep -q "bench message $id $k" "$f"; then ok=$((ok + 1)); fi
    else
      local got
      got=$(tr -d '\r' <"$f" | awk '/^Content-Disposition: attachment/ {h=1} h && /^$/ {b=1; next} b && /^--/ {exit} b {print}' |
        base64 -d | sha256sum | cut -d' ' -f1)
      if [[ $got == "$(cat "$dir/a$k.sha")" ]]; then ok=$((ok + 1)); fi
    fi
  done
  [[ $ok -eq 8 ]] || { echo "scripted round: $ok of 8 copies verified" >&2; return 1; }
  local set
  set=$(tr ' ' ',' <<<"$uids" | sed 's/,*$//')
  "${curl[@]}" "$imap" -X "UID STORE $set +FLAGS.SILENT (\\Deleted)" >/dev/null
  "${curl[@]}" "$imap" -X "UID EXPUNGE $set" >/dev/null
  rm -rf "$dir"
}

# The server's own floor for the default ladder: SMTP acceptance to the file in
# the Maildir, summed over the rungs (prints floor_ms=... smtp_ms=... each=...).
server_floor() {
  timeout 300 python3 scripts/bench-floor.py "$H" "$MAILPROBE_TEST_SUBMISSION_PORT" "$CA" \
    "$USER_ADDR" "$MAILPROBE_TEST_PASSWORD_FILE" "$MAILDIR" 0 10240 1048576 5242880
}

bench_round() {
  echo "## One full default round (seconds, median of $RUNS; mailbox $USER_ADDR)"
  local mp=() sc=() fl=() t f
  for _ in $(seq "$RUNS"); do
    clear_box
    t=$(now)
    timeout 300 "$BIN" check "${PROFILE[@]}" --quiet || [[ $? -le 2 ]]
    mp+=("$(elapsed "$t")")
    clear_box
    t=$(now)
    scripted_round
    sc+=("$(elapsed "$t")")
    clear_box
    f=$(server_floor)
    fl+=("$(sed -n 's/^floor_ms=\([0-9.]*\).*/\1/p' <<<"$f")")
    echo "floor run: $f"
  done
  clear_box
  local m s fm
  m=$(printf '%s\n' "${mp[@]}" | median)
  s=$(printf '%s\n' "${sc[@]}" | median)
  fm=$(printf '%s\n' "${fl[@]}" | median)
  echo "| mailprobe | swaks + curl | speed-up | server floor (accepted → Maildir, summed) | mailprobe overhead (round − floor) |"
  echo "|---|---|---|---|---|"
  echo "| $m | $s | $(awk -v a="$m" -v b="$s" 'BEGIN {printf "%.1fx", b/a}') | $(awk -v f="$fm" 'BEGIN {printf "%.3f", f/1000}') | $(awk -v a="$m" -v f="$fm" 'BEGIN {printf "%.3f", a-f/1000}') |"
  echo "runs: mailprobe ${mp[*]}; swaks+curl ${sc[*]}; floor (ms) ${fl[*]}"
}

# ------------------------------------------------------------------ 3. memory
# Max RSS of RUNS round trips of one attachment size: "<encoded bytes> <median KiB> <runs>".
rss_round_trips() { # size maildir profile-args...
  local size=$1 maildir=$2 rss=() len=''
  shift 2
  for _ in $(seq "$RUNS"); do
    find "$maildir/new" "$maildir/cur" -type f -delete 2>/dev/null || true
    timeout 900 /usr/bin/time -f %M -o "$WORK/rss" "$BIN" check "$@" --sizes "$size" \
      --format json >"$WORK/rt.json" || [[ $? -le 2 ]]
    grep -q '"verdict": *"healthy"' "$WORK/rt.json" || { echo "$size round trip not healthy:" >&2; head -c 2000 "$WORK/rt.json" >&2; }
    len=$(encoded_bytes <"$WORK/rt.json")
    rss+=("$(tail -n1 "$WORK/rss")")
  done
  find "$maildir/new" "$maildir/cur" -type f -delete 2>/dev/null || true
  echo "$len $(printf '%s\n' "${rss[@]}" | median) ${rss[*]}"
}

bench_memory() {
  echo "## Peak memory of an attachment round trip, SMTP + IMAP + POP3, verified (median of $RUNS)"
  local fifty big
  fifty=$(rss_round_trips 50MiB "$MAILDIR" "${PROFILE[@]}")
  # 150 MiB is beyond the shared server's 100 MiB limit: a private instance.
  env "${PRIVATE[@]}" timeout 300 scripts/testserver.sh start >/dev/null
  PRIVATE_STARTED=1
  local penv pdir
  penv=$(env "${PRIVATE[@]}" scripts/testserver.sh env)
  pdir=$(sed -n 's/^export MAILPROBE_TEST_DIR=//p' <<<"$penv")
  sed -e "s#/var/lib/mailprobe-testserver#$pdir#g" -e 's/:2587"/:7587"/' -e 's/:2143"/:7143"/' \
    -e 's/:2995"/:7995"/' -e 's/^data = .*/data = "600s"/' -e 's/^delivery = .*/delivery = "300s"/' \
    probes/local.toml >"$WORK/private.toml"
  big=$(rss_round_trips 150MiB "$pdir/mail/$BOX/Maildir" --profile "$WORK/private.toml" \
    --user "$USER_ADDR" --from "$USER_ADDR" --to "$USER_ADDR")
  env "${PRIVATE[@]}" timeout 120 scripts/testserver.sh stop >/dev/null
  PRIVATE_STARTED=
  echo "| attachment | encoded message | max RSS | target |"
  echo "|---|---|---|---|"
  local row
  for row in "50 MiB|$fifty" "150 MiB|$big"; do
    local what=${row%%|*} fields
    read -r -a fields <<<"${row#*|}"
    echo "| $what | ${fields[0]} B | $(awk -v k="${fields[1]}" 'BEGIN {printf "%.1f MiB", k/1024}') | ≤ 30 MiB |"
    echo "runs (KiB, $what): ${fields[*]:2}"
  done
}

# ------------------------------------------------------------------ 4. cpu
# utime+stime+cutime+cstime (clock ticks) of a process tree: reaped children
# count in their parent's cutime, live ones in their own, so a before/after
# difference covers every Postfix and Dovecot process that worked in between.
server_ticks() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v roots="$*" '
    { pid = $1; line = $0; sub(/^.*\) /, "", line); split(line, f, " ");
      ppid[pid] = f[2]; t[pid] = f[12] + f[13] + f[14] + f[15] }
    END { n = split(roots, r, " "); for (i = 1; i <= n; i++) tree[r[i]] = 1
      do { changed = 0
        for (p in ppid) if (!(p in tree) && (ppid[p] in tree)) { tree[p] = 1; changed = 1 }
      } while (changed)
      s = 0; for (p in tree) s += t[p]; print s }'
}

bench_cpu() {
  local pf dc hz rounds=5
  pf=$(tr -d ' ' <"$MAILPROBE_TEST_DIR/spool/postfix/pid/master.pid")
  dc=$(tr -d ' ' <"$MAILPROBE_TEST_DIR/run/dovecot/master.pid")
  hz=$(getconf CLK_TCK)
  echo "## CPU per verified message: client vs server (default ladder x $rounds rounds, median of $RUNS)"
  # The server to ourselves: other test processes wait for this lock.
  exec 9>"$LOCK"
  timeout 1200 flock -x 9 || { echo "no exclusive turn on $LOCK" >&2; return 1; }
  local cl=() sv=() before after
  for _ in $(seq "$RUNS"); do
    clear_box
    sleep 0.5
    before=$(server_ticks "$pf" "$dc")
    timeout 600 /usr/bin/time -f "%U %S" -o "$WORK/cpu" "$BIN" check "${PROFILE[@]}" --rounds "$rounds" --quiet \
      --sample-interval 0
    after=$(server_ticks "$pf" "$dc")
    cl+=("$(awk '{printf "%.3f", $1+$2}' "$WORK/cpu")")
    sv+=("$(awk -v d=$((after - before)) -v hz="$hz" 'BEGIN {printf "%.3f", d/hz}')")
  done
  flock -u 9
  local c s n=$((rounds * 4))
  c=$(printf '%s\n' "${cl[@]}" | median)
  s=$(printf '%s\n' "${sv[@]}" | median)
  echo "| client CPU/message | server CPU/message | client/server |"
  echo "|---|---|---|"
  awk -v c="$c" -v s="$s" -v n=$n 'BEGIN {printf "| %.1f ms | %.1f ms | %.0f %% |\n", c*1000/n, s*1000/n, 100*c/s}'
  echo "runs (s, $n messages each): client ${cl[*]}; server ${sv[*]}"
}

echo "mailprobe bench: $("$BIN" --version), $(nproc) CPUs, $(date -u +%FT%TZ)"
case $WHAT in
  send) bench_send ;;
  round) bench_round ;;
  memory) bench_memory ;;
  cpu) bench_cpu ;;
  all) bench_send; bench_round; bench_memory; bench_cpu ;;
  *) echo "usage: $0 [send|round|memory|cpu|all]" >&2; exit 3 ;;
esac

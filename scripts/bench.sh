#!/usr/bin/env bash
# Benchmarks of issue #7 against the local test mail server (scripts/testserver.sh),
# every comparison side by side in the same run, median of RUNS runs:
#
#   1. send throughput: mailprobe --smtp-only vs Postfix's smtp-source, both
#      against smtp-sink on a free loopback port (10 KiB and 1 MiB, concurrency 1 and 16);
#   2. one full default round (profile probes/local.toml: plain + 10KiB, 1MiB, 5MiB,
#      SMTP + IMAP + POP3, verified, deleted) vs the same work scripted with swaks + curl;
#   3. peak memory (max RSS) of a 50 MiB attachment round trip;
#   4. client CPU per verified message vs the server's (Postfix + Dovecot) CPU,
#      with the test server to ourselves (exclusive turn on the tests' lock file).
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
cleanup() {
  [[ -n $SINK_PID ]] && kill "$SINK_PID" 2>/dev/null || true
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
  echo "| message | concurrency | messages | mailprobe | smtp-source | ratio |"
  echo "|---|---|---|---|---|---|"
  local size n c
  for size in 10KiB 1MiB; do
    local len
    # Exit code 1 (degraded: smtp-only leaves its messages behind) is expected.
    len=$({ timeout 60 "$BIN" check "${sink[@]}" --sizes "$size" --format json || true; } | encoded_bytes)
    for c in 1 16; do
      if [[ $size == 10KiB ]]; then n=2000; else n=160; fi
      local list
      list=$(printf "$size,%.0s" $(seq "$n"))
      list=${list%,}
      local mp=() ss=() t
      for _ in $(seq "$RUNS"); do
        t=$(now)
        timeout 600 "$BIN" check "${sink[@]}" --quiet --sizes "$list" --concurrency "$c" || [[ $? -le 2 ]]
        mp+=("$(awk -v n="$n" -v s="$(elapsed "$t")" 'BEGIN {printf "%.0f", n/s}')")
        t=$(now)
        timeout 600 smtp-source -s "$c" -m "$n" -l "$len" -f bench@example.test -t sink@example.test "127.0.0.1:$port"
        ss+=("$(awk -v n="$n" -v s="$(elapsed "$t")" 'BEGIN {printf "%.0f", n/s}')")
      done
      local m s
      m=$(printf '%s\n' "${mp[@]}" | median)
      s=$(printf '%s\n' "${ss[@]}" | median)
      echo "| $size ($len B) | $c | $n | $m | $s | $(awk -v a="$m" -v b="$s" 'BEGIN {printf "%.2f", a/b}') |"
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

bench_round() {
  echo "## One full default round (seconds, median of $RUNS; mailbox $USER_ADDR)"
  local mp=() sc=() t
  for _ in $(seq "$RUNS"); do
    clear_box
    t=$(now)
    timeout 300 "$BIN" check "${PROFILE[@]}" --quiet || [[ $? -le 2 ]]
    mp+=("$(elapsed "$t")")
    clear_box
    t=$(now)
    scripted_round
    sc+=("$(elapsed "$t")")
  done
  local m s
  m=$(printf '%s\n' "${mp[@]}" | median)
  s=$(printf '%s\n' "${sc[@]}" | median)
  echo "| mailprobe | swaks + curl | speed-up |"
  echo "|---|---|---|"
  echo "| $m | $s | $(awk -v a="$m" -v b="$s" 'BEGIN {printf "%.1fx", b/a}') |"
  echo "runs: mailprobe ${mp[*]}; swaks+curl ${sc[*]}"
}

# ------------------------------------------------------------------ 3. memory
bench_memory() {
  echo "## Peak memory, 50 MiB attachment round trip (median of $RUNS)"
  local rss=() len=''
  for _ in $(seq "$RUNS"); do
    clear_box
    timeout 600 /usr/bin/time -f %M -o "$WORK/rss" "$BIN" check "${PROFILE[@]}" --sizes 50MiB \
      --format json >"$WORK/50.json" || [[ $? -le 2 ]]
    len=$(encoded_bytes <"$WORK/50.json")
    rss+=("$(tail -n1 "$WORK/rss")")
  done
  local m
  m=$(printf '%s\n' "${rss[@]}" | median)
  echo "| encoded message | max RSS | ratio |"
  echo "|---|---|---|"
  echo "| $len B | $((m * 1024)) B | $(awk -v a="$m" -v b="$len" 'BEGIN {printf "%.2f", a*1024/b}') |"
  echo "runs (KiB): ${rss[*]}"
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
    timeout 600 /usr/bin/time -f "%U %S" -o "$WORK/cpu" "$BIN" check "${PROFILE[@]}" --rounds "$rounds" --quiet
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

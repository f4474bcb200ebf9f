#!/usr/bin/env bash
# Signed Twilio status callbacks against callbot, measured from outside the process with wrk
# (one thread, 32 connections), beside a bare axum endpoint on the same machine.
#
#   bash benches/wrk_callbacks.sh            20 alternating rounds of 3 s per scenario
#   bash benches/wrk_callbacks.sh --smoke    2 rounds of 1 s (CI: checks it runs, not the ratio)
#   ROUNDS=10 SECONDS_PER_ROUND=5 bash benches/wrk_callbacks.sh
#   NO_BUILD=1 bash benches/wrk_callbacks.sh   use the release binaries already built
#   SCENARIOS=unknown PERF_DATA=cb.data bash benches/wrk_callbacks.sh
#                    one scenario, callbot profiled with `perf record -g` during the rounds
#   STORE=redis REDIS_URL=redis://127.0.0.1:6379/0 bash benches/wrk_callbacks.sh
#                    callbot on the Redis store (CALLBOT_STORE=redis) under a prefix of its
#                    own, deleted afterwards (with redis-cli, when installed); run it beside a
#                    default (memory) run to compare the two stores
#   BIN=target/debug NO_BUILD=1 bash benches/wrk_callbacks.sh --smoke
#                    the debug binaries already built (a smoke run without a release build)
#
# Two scenarios, each compared with the bare endpoint (examples/wrk_peer.rs, POST answers
# 200) receiving the same path, headers and body:
#   unknown   callbacks for a call callbot does not know (normal after a restart with the
#             memory store): signature checked, 200, nothing to update;
#   repeated  the same callback of a known, live call again and again (Twilio retries):
#             signature checked, the call found and the status change ignored.
# callbot is the release binary as a user starts it: Twilio credentials in the environment,
# default logging (no RUST_LOG), stderr to a file whose size is reported; the known call's
# time limit is 4 hours so the stale-call reaper does not end it during a run. Rounds alternate
# callbot / bare so that the host's drift hits both alike; the ratio printed is the median
# of the per-round ratios. Each round also reports the server's CPU time (user + system, from
# /proc) per request, which moves less with the host's load than the rates do. Needs wrk and
# curl (apt-get install wrk curl).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-20}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-3}
if [ "${1:-}" = "--smoke" ]; then
  ROUNDS=2
  SECONDS_PER_ROUND=1
fi
CONNECTIONS=32
SCENARIOS=${SCENARIOS:-unknown repeated}

for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "wrk_callbacks: $tool is not installed (apt-get install $tool)" >&2; exit 1; }
done

STORE=${STORE:-memory}
STORE_ENV=(CALLBOT_STORE="$STORE")
if [ "$STORE" = redis ]; then
  [ -n "${REDIS_URL:-}" ] || { echo "wrk_callbacks: STORE=redis needs REDIS_URL" >&2; exit 1; }
  REDIS_PREFIX="wrk-callbacks-$$"
  STORE_ENV+=(REDIS_URL="$REDIS_URL" CALLBOT_STORE__REDIS_PREFIX="$REDIS_PREFIX")
fi

[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin callbot --example wrk_peer
BIN=${BIN:-target/release}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  if [ -n "${REDIS_PREFIX:-}" ] && command -v redis-cli >/dev/null; then
    redis-cli -u "$REDIS_URL" --scan --pattern "{$REDIS_PREFIX}:*" |
      xargs -r -n 500 redis-cli -u "$REDIS_URL" DEL >/dev/null || true
  fi
}
trap cleanup EXIT

# Waits until FILE has a first line; prints it.
first_line() {
  for _ in $(seq 1 200); do
    if [ -s "$1" ]; then head -n1 "$1"; return; fi
    sleep 0.05
  done
  echo "wrk_callbacks: $1 stayed empty" >&2
  exit 1
}

"$BIN/examples/wrk_peer" serve >"$WORK/peer.out" &
PEER_PID=$!
PIDS+=("$PEER_PID")
PEER=$(first_line "$WORK/peer.out")

SID="AC$(printf '0%.0s' $(seq 1 30))be"
TOKEN="bench-auth-token-0123456789abcdef"
FROM="+15005550006"
printf '[twilio]\nfrom_number = "%s"\n' "$FROM" >"$WORK/callbot.toml"
# Twilio calls back only with a public URL set (without one callbot polls Twilio instead):
# here the bound address itself, on a free port chosen first.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
env -u RUST_LOG \
  "${STORE_ENV[@]}" \
  CALLBOT_BIND="127.0.0.1:$PORT" \
  CALLBOT_PUBLIC_URL="http://127.0.0.1:$PORT" \
  TWILIO_ACCOUNT_SID="$SID" \
  TWILIO_AUTH_TOKEN="$TOKEN" \
  TWILIO_API_BASE="$PEER" \
  CALLBOT_CALLS__TIME_LIMIT_SECS=14400 \
  "$BIN/callbot" --config "$WORK/callbot.toml" serve >"$WORK/callbot.out" 2>"$WORK/callbot.err" &
CALLBOT_PID=$!
PIDS+=("$CALLBOT_PID")
for _ in $(seq 1 200); do
  grep -q "web console at" "$WORK/callbot.err" 2>/dev/null && break
  sleep 0.05
done
CALLBOT=$(grep -o "web console at http://[0-9.:]*" "$WORK/callbot.err" | head -n1 | sed 's/web console at //')
[ -n "$CALLBOT" ] || { echo "wrk_callbacks: callbot did not start:" >&2; cat "$WORK/callbot.err" >&2; exit 1; }

# The known call: placed through the console, created at the fake Twilio.
curl -fsS -X POST "$CALLBOT/ai_prompt" -H 'Content-Type: application/json' \
  -d '{"command": "call +91 98765 43210"}' >/dev/null
CALLBACK=""
for _ in $(seq 1 200); do
  CALLBACK=$(curl -fsS "$PEER/last-callback")
  [ -n "$CALLBACK" ] && break
  sleep 0.05
done
[ -n "$CALLBACK" ] || { echo "wrk_callbacks: the call was never created" >&2; exit 1; }
QUERY="/webhooks/status?${CALLBACK#*\?}"
UNKNOWN_QUERY="/webhooks/status?call_id=lost-in-a-restart-0123"

fields() { # status sid
  printf 'AccountSid=%s&ApiVersion=2010-04-01&CallSid=%s&CallStatus=%s&CallbackSource=call-progress-events&Direction=outbound-api&From=%%2B15005550006&SequenceNumber=1&Timestamp=Tue%%2C+01+Dec+2026+10%%3A00%%3A00+%%2B0000&To=%%2B919876543210' "$SID" "$2" "$1"
}
KNOWN_BODY=$(fields ringing CA0000000000000000000000000000beef)
UNKNOWN_BODY=$(fields completed CA00000000000000000000000000000bad)
KNOWN_SIG=$("$BIN/examples/wrk_peer" sign "$TOKEN" "$CALLBOT$QUERY" "$KNOWN_BODY")
UNKNOWN_SIG=$("$BIN/examples/wrk_peer" sign "$TOKEN" "$CALLBOT$UNKNOWN_QUERY" "$UNKNOWN_BODY")

# The first one applies "ringing"; every later one is a repeat.
curl -fsS -X POST "$CALLBOT$QUERY" -H "X-Twilio-Signature: $KNOWN_SIG" \
  -H 'Content-Type: application/x-www-form-urlencoded' --data "$KNOWN_BODY" >/dev/null

cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["X-Twilio-Signature"] = os.getenv("WRK_SIG")
LUA

# CPU time (user + system, clock ticks) the process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# One wrk round; prints requests per second and the server's CPU microseconds per request.
# Fails on any non-2xx answer (a signature callbot refused would measure the wrong path).
round() { # base path body sig pid
  local out before after
  before=$(cpu_ticks "$5")
  out=$(WRK_BODY="$3" WRK_SIG="$4" wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_ROUND}s" \
    -s "$WORK/post.lua" "$1$2")
  after=$(cpu_ticks "$5")
  if grep -q "Non-2xx" <<<"$out"; then
    echo "wrk_callbacks: non-2xx answers from $1:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk -v ticks=$((after - before)) -v tick="$TICK" '
    /Requests\/sec:/ {rate = $2}
    /requests in/ {n = $1}
    END {printf "%s %.2f\n", rate, (n > 0 ? ticks * 1e6 / tick / n : 0)}' <<<"$out"
}

median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

echo "callbot $CALLBOT (store: $STORE) vs bare axum $PEER: $ROUNDS alternating rounds of ${SECONDS_PER_ROUND}s," \
  "wrk -t1 -c$CONNECTIONS, $(nproc) CPUs"
if [ -n "${PERF_DATA:-}" ]; then
  perf record -F 999 -g -p "$CALLBOT_PID" -o "$PERF_DATA" 2>"$WORK/perf.err" &
  PERF_PID=$!
fi
for scenario in $SCENARIOS; do
  if [ "$scenario" = unknown ]; then
    path=$UNKNOWN_QUERY body=$UNKNOWN_BODY sig=$UNKNOWN_SIG
  else
    path=$QUERY body=$KNOWN_BODY sig=$KNOWN_SIG
  fi
  : >"$WORK/$scenario.rates"
  log_before=$(stat -c %s "$WORK/callbot.err")
  for i in $(seq 1 "$ROUNDS"); do
    read -r c c_cpu <<<"$(round "$CALLBOT" "$path" "$body" "$sig" "$CALLBOT_PID")"
    read -r b b_cpu <<<"$(round "$PEER" "$path" "$body" "$sig" "$PEER_PID")"
    echo "$c $b $c_cpu $b_cpu" >>"$WORK/$scenario.rates"
    printf '  %-8s round %2d: callbot %9.0f/s  bare %9.0f/s  ratio %.2f  CPU per request: callbot %5.1f µs, bare %5.1f µs\n' \
      "$scenario" "$i" "$c" "$b" "$(awk -v c="$c" -v b="$b" 'BEGIN {print c/b}')" "$c_cpu" "$b_cpu"
  done
  log_bytes=$(($(stat -c %s "$WORK/callbot.err") - log_before))
  c_med=$(awk '{print $1}' "$WORK/$scenario.rates" | median)
  b_med=$(awk '{print $2}' "$WORK/$scenario.rates" | median)
  r_med=$(awk '{print $1/$2}' "$WORK/$scenario.rates" | median)
  c_cpu_med=$(awk '{print $3}' "$WORK/$scenario.rates" | median)
  b_cpu_med=$(awk '{print $4}' "$WORK/$scenario.rates" | median)
  printf '%-8s median: callbot %.0f/s, bare %.0f/s, ratio %.2f (median of per-round ratios); CPU per request: callbot %.1f µs, bare %.1f µs; log written: %d bytes\n' \
    "$scenario" "$c_med" "$b_med" "$r_med" "$c_cpu_med" "$b_cpu_med" "$log_bytes"
done
if [ -n "${PERF_DATA:-}" ]; then
  kill -INT "$PERF_PID"
  wait "$PERF_PID" || true
  echo "profile of callbot: perf report -i $PERF_DATA --no-children"
fi

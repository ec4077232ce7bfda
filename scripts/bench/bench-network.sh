#!/usr/bin/env bash
# Speed over a long link (issue: speed over a real network), against SeaweedFS on loopback
# behind scripts/harness/netdelay, a proxy adding a round trip to every exchange.
#
#   scripts/bench/bench-network.sh [OBJECTS] [RTTS_MS] [BIG_MIB]
#       (default 10000 objects of 1 KiB, "0 20 50 100", one 1024 MiB object)
#
# At each RTT, in the same run:
#   - a first backup of OBJECTS x 1 KiB by `sync` with the default settings (--jobs auto),
#     by `sync --jobs 32` (the fixed default before --jobs auto), and by
#     `rclone copy --transfers 64 --checkers 64`: objects/s, peak RSS, downloads in flight
#     reached (from --report);
#   - one BIG_MIB object (16 multipart parts) by `get` (16 parallel ranges) and by
#     `rclone copyto` (its defaults: --multi-thread-streams 4): MiB/s.
# The proxy gives each direction of each connection a 4 MiB window (one stream: at most
# 4 MiB per RTT, as a real TCP stream's window limits it). At "0" the proxy adds no delay;
# "direct" rows skip the proxy, to show it is not the bottleneck.
# Then at 50 ms with 5% of GETs answered 503 SlowDown (scripts/harness/faultproxy.py behind
# the delay): the run's rate and its concurrency curve (from --report).
# Env: WINDOW=BYTES (default 4194304), SKIP_BIG=1, SKIP_SLOWDOWN=1, SKIP_RCLONE=1,
# BASELINE=BINARY (another build's `get` of the big object, in the same run).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/bench-common.sh
objects=${1:-10000}
rtts=${2:-"0 20 50 100"}
big_mib=${3:-1024}
window=${WINDOW:-4194304}
cargo build --release --locked --quiet --bin s3invbackup
cargo build --release --quiet --manifest-path scripts/harness/netdelay/Cargo.toml \
  --target-dir target/harness
bench_start bench-network
bin=$PWD/target/release/s3invbackup
netdelay=$PWD/target/harness/release/netdelay

"$venv/bin/python" scripts/bench/bench_sync_setup.py --endpoint "$endpoint" --bucket small \
    --keys "$objects" --versions 1 --layout spread --out "$work/small"
if [ -z "${SKIP_BIG:-}" ]; then
  part=$((big_mib / 16))
  echo "[{\"key\": \"big.bin\", \"size\": $((big_mib << 20)), \"parts\": [$(python3 -c "print(','.join(['$((part << 20))']*16))")], \"no_file\": true}]" \
    | "$venv/bin/python" scripts/harness/put_objects.py --endpoint "$endpoint" --bucket big --out "$work/bigsrc" > "$work/big.json"
  big_vid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["version_id"])' "$work/big.json")
fi

proxy_pids=()
stop_proxies() { for p in "${proxy_pids[@]}"; do kill "$p" 2>/dev/null || true; done; proxy_pids=(); }
bench_on_exit() { stop_proxies; }

start_delay() { # rtt_ms upstream: starts a proxy, sets $ep (not in a subshell: its pid is kept)
  "$netdelay" --upstream "$2" --rtt-ms "$1" --window "$window" > "$work/nd.$1.json" 2>/dev/null &
  proxy_pids+=($!)
  for _ in $(seq 100); do [ -s "$work/nd.$1.json" ] && break; sleep 0.05; done
  ep=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoint"])' "$work/nd.$1.json")
}

run_sync() { # label endpoint args... -> "label objects/s rss_mib reached"  ($set: small)
  local label=$1 ep=$2 set=${set:-small} objects=${set_objects:-$objects}; shift 2
  rm -rf "$work/backup" "$work/report.json"
  local t; t=$(mktemp)
  AWS_ENDPOINT_URL=$ep /usr/bin/time -f '%e %M' -o "$t" \
    "$bin" sync "$work/$set/inventory" "$work/backup" --progress none --report "$work/report.json" "$@" > /dev/null 2>&1 || true
  python3 - "$label" "$objects" "$(tail -1 "$t")" "$work/report.json" <<'PY'
import json, sys
label, n, (wall, rss), rep = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4]
try:
    r = json.load(open(rep)); o = r["dates"][0]["outcome"]; got = o["downloaded"]; c = o["concurrency"]
    reached = f'{c["reached"]} ({c["mode"]}, {c["last"]} at the end)'
except Exception as e:
    got, reached = 0, f"no report ({e})"
ok = "" if got == n else f"  ONLY {got} of {n} FETCHED"
print(f"  {label:<26} {n/float(wall):>7.0f} objects/s  {float(wall):6.2f} s  RSS {int(rss)/1024:4.0f} MiB  in flight: {reached}{ok}")
PY
  rm -f "$t"
}

run_rclone() { # label endpoint
  rm -rf "$work/rclone"
  local start end
  start=$(date +%s.%N)
  env -u AWS_CA_BUNDLE rclone copy ":s3,provider=Other,endpoint='$2',access_key_id=testkey,secret_access_key=testsecret:small" \
    "$work/rclone" --transfers 64 --checkers 64 > "$work/rclone.log" 2>&1 || tail -3 "$work/rclone.log" >&2
  end=$(date +%s.%N)
  local got; got=$(find "$work/rclone" -type f 2>/dev/null | wc -l)
  python3 -c "import sys; n,w,g=int(sys.argv[1]),float(sys.argv[3])-float(sys.argv[2]),int(sys.argv[4]); print(f'  {sys.argv[5]:<26} {n/w:>7.0f} objects/s  {w:6.2f} s' + ('' if g==n else f'  ONLY {g} of {n}'))" \
    "$objects" "$start" "$end" "$got" "$1"
}

run_big() { # label endpoint
  rm -f "$work/big.out"
  local start end
  start=$(date +%s.%N)
  if [ "$1" = rclone ]; then
    env -u AWS_CA_BUNDLE rclone copyto ":s3,provider=Other,endpoint='$2',access_key_id=testkey,secret_access_key=testsecret:big/big.bin" \
      "$work/big.out" > "$work/rclone.log" 2>&1 || tail -3 "$work/rclone.log" >&2
  else
    AWS_ENDPOINT_URL=$2 "${getbin:-$bin}" get s3://big/big.bin --version-id "$big_vid" -o "$work/big.out" > /dev/null 2>&1 || true
  fi
  end=$(date +%s.%N)
  local size; size=$(stat -c %s "$work/big.out" 2>/dev/null || echo 0)
  python3 -c "import sys; m,w,s=int(sys.argv[1]),float(sys.argv[3])-float(sys.argv[2]),int(sys.argv[4]); print(f'  {sys.argv[5]:<26} {m/w:>7.0f} MiB/s    {w:6.2f} s' + ('' if s==m<<20 else f'  INCOMPLETE ({s} bytes)'))" \
    "$big_mib" "$start" "$end" "$size" "$3"
  rm -f "$work/big.out"
}

echo "objects: $objects x 1 KiB; window ${window} bytes per direction per connection"
echo "direct (no proxy):"
run_sync "sync (auto)" "$endpoint"
run_sync "sync --jobs 32" "$endpoint" --jobs 32
for rtt in $rtts; do
  start_delay "$rtt" "$endpoint"
  echo "rtt $rtt ms:"
  run_sync "sync (auto)" "$ep"
  run_sync "sync --jobs 32" "$ep" --jobs 32
  if [ -z "${SKIP_RCLONE:-}" ]; then run_rclone "rclone --transfers 64" "$ep"; fi
  if [ -z "${SKIP_BIG:-}" ]; then
    run_big get "$ep" "get ${big_mib} MiB (16 ranges)"
    if [ -n "${BASELINE:-}" ]; then getbin=$BASELINE run_big get "$ep" "baseline get ${big_mib} MiB"; fi
    if [ -z "${SKIP_RCLONE:-}" ]; then run_big rclone "$ep" "rclone copyto ${big_mib} MiB"; fi
  fi
  stop_proxies
done

if [ -z "${SKIP_SLOWDOWN:-}" ]; then
  # Through the Python fault proxy (a few hundred requests a second): a smaller bucket.
  set=throttled set_objects=${SLOWDOWN_OBJECTS:-2000}
  "$venv/bin/python" scripts/bench/bench_sync_setup.py --endpoint "$endpoint" --bucket throttled \
      --keys "$set_objects" --versions 1 --layout spread --out "$work/throttled"
  echo "rtt 50 ms, 5% of GETs answered 503 SlowDown, $set_objects objects:"
  "$venv/bin/python" scripts/harness/faultproxy.py --upstream "$endpoint" --watch-pid $$ > "$work/fp.json" &
  proxy_pids+=($!)
  for _ in $(seq 100); do [ -s "$work/fp.json" ] && break; sleep 0.05; done
  fp=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoint"])' "$work/fp.json")
  start_delay 50 "${fp#http://}"
  run_sync "sync (auto), no faults" "$ep"
  curl -s -X POST "$fp/__proxy/rules" -d '[{"method": "GET", "path": "^/throttled/", "fault": "status", "status": 503, "code": "SlowDown", "probability": 0.05}]' > /dev/null
  run_sync "sync (auto), 5% SlowDown" "$ep"
  python3 - "$work/report.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))["dates"][0]["outcome"]; c = o["concurrency"]
print(f"  throttled: {c['throttled']}; the curve (t s: limit, objects/s, throttled in the window):")
print("   " + "; ".join(f"{s['t']:.1f}: {s['limit']}, {s['objects_per_s']:.0f}, {s['throttled']}" for s in c["curve"]))
PY
  run_sync "sync --jobs 32, 5% SlowDown" "$ep" --jobs 32
  stop_proxies
fi

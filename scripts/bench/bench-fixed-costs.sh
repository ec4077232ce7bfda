#!/usr/bin/env bash
# The fixed cost of a run over a long link (issue: speed over a real network, item 5): the
# round trips a sync pays before and around its downloads, against an inventory on S3 with
# years of date folders, through scripts/harness/netdelay at each RTT.
#
#   BASELINE=BINARY scripts/bench/bench-fixed-costs.sh [RTTS_MS] [HISTORY_DAYS]
#       (default "0 50 100" ms, 1500 days of date folders)
#
# Per RTT and per binary (this build, and BASELINE's if given, alternating), wall seconds of:
#   dates   `dates s3://…`: every date folder listed;
#   first   the first backup of the newest-but-one date: 200 small objects and 50 multipart
#           objects of 2 parts (5 MiB + 1 KiB) (`sync --end-date`, which lists every date);
#   night   the next date, with nothing new to fetch: listing, manifest, data files, plan;
#   quiet   the same command again, with no date to apply.
# For this build also the requests each made (`RUST_LOG=s3invbackup::requests=trace`).
# Prints one `RESULT bench=fixed_costs rtt_ms=… step=… wall_s=… requests=… baseline_wall_s=…`
# line per step and RTT.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/bench-common.sh
rtts=${1:-"0 50 100"}
history=${2:-1500}
cargo build --release --locked --quiet --bin s3invbackup
cargo build --release --quiet --manifest-path scripts/harness/netdelay/Cargo.toml \
  --target-dir target/harness
bench_start bench-fixed-costs
bin=$PWD/target/release/s3invbackup
netdelay=$PWD/target/harness/release/netdelay

setup=$("$venv/bin/python" scripts/bench/bench_fixed_costs_setup.py --endpoint "$endpoint" \
  --bucket src --inventory-bucket inv --history "$history" --out "$work/setup")
prefix=$(echo "$setup" | python3 -c 'import json,sys; print(json.load(sys.stdin)["prefix"])')
first=$(echo "$setup" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dates"][0])')
echo "inventory: s3://inv/$prefix/ with $history earlier date folders; first date $first; $(echo "$setup" | python3 -c 'import json,sys; print(json.load(sys.stdin)["versions"])') versions"

proxy_pid=
bench_on_exit() { [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null || true; }

step() { # binary label ep args... -> "wall requests" (requests: -1 when not counted)
  local b=$1 ep=$3; shift 3
  local t; t=$(mktemp)
  local start end
  start=$(date +%s.%N)
  AWS_ENDPOINT_URL=$ep RUST_LOG="error,s3invbackup::requests=trace" "$b" "$@" > /dev/null 2> "$t" || true
  end=$(date +%s.%N)
  python3 -c 'import sys; print(f"{float(sys.argv[2])-float(sys.argv[1]):.2f}", sum("request: " in l for l in open(sys.argv[3])))' "$start" "$end" "$t"
  rm -f "$t"
}

for rtt in $rtts; do
  "$netdelay" --upstream "$endpoint" --rtt-ms "$rtt" > "$work/nd.json" 2>/dev/null &
  proxy_pid=$!
  for _ in $(seq 100); do [ -s "$work/nd.json" ] && break; sleep 0.05; done
  ep=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoint"])' "$work/nd.json")
  declare -A wall=() reqs=()
  for who in ${BASELINE:+baseline} this; do
    b=$bin; [ "$who" = baseline ] && b=$BASELINE
    rm -rf "$work/backup.$who"
    read -r w r < <(step "$b" dates "$ep" dates "s3://inv/$prefix/"); wall[$who.dates]=$w; reqs[$who.dates]=$r
    read -r w r < <(step "$b" first "$ep" sync "s3://inv/$prefix/" "$work/backup.$who" --end-date "$first" --progress none); wall[$who.first]=$w; reqs[$who.first]=$r
    read -r w r < <(step "$b" night "$ep" sync "s3://inv/$prefix/" "$work/backup.$who" --progress none); wall[$who.night]=$w; reqs[$who.night]=$r
    read -r w r < <(step "$b" quiet "$ep" sync "s3://inv/$prefix/" "$work/backup.$who" --progress none); wall[$who.quiet]=$w; reqs[$who.quiet]=$r
  done
  for s in dates first night quiet; do
    base=""
    [ -n "${BASELINE:-}" ] && base=" baseline_wall_s=${wall[baseline.$s]}"
    echo "RESULT bench=fixed_costs rtt_ms=$rtt step=$s wall_s=${wall[this.$s]} requests=${reqs[this.$s]}$base"
  done
  kill "$proxy_pid" 2>/dev/null || true; proxy_pid=
  unset wall reqs
done

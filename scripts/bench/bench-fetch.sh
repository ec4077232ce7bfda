#!/usr/bin/env bash
# Benchmark of the fetcher (issue: verified object fetcher), against SeaweedFS on loopback.
#
#   scripts/bench/bench-fetch.sh [COUNT] [BIG_BYTES]      (default 20000 objects of 1 KiB; 1 GiB)
#
# (a) COUNT small objects: `fetch_many` (the library's fetcher, 32 threads, every object
#     verified, written and its mtime set) against `xargs -P 32 -n 50 curl -s -o /dev/null`
#     over presigned URLs of the same versions. (b) one multipart object of BIG_BYTES:
#     `s3invbackup get` against one `curl -o /dev/null`. Wall time, CPU time and peak RSS
#     from /usr/bin/time; the server runs on the same 2 cores. BASELINE=DIR also measures
#     another build (its target/release) in the same run.
set -euo pipefail
cd "$(dirname "$0")/../.."
count=${1:-20000}
big=${2:-1073741824}
venv=$(scripts/dev/setup-venv.sh)
cargo build --release --locked --quiet --bin s3invbackup --example fetch_many
work=$(mktemp -d "${BENCH_DIR:-/tmp}/bench-fetch.XXXXXX")
server=$("$venv/bin/python" scripts/harness/s3server.py start --dir "$work/seaweedfs" --watch-pid $$ \
         --access-key testkey --secret-key testsecret)
pid=$(echo "$server" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
endpoint=$(echo "$server" | python3 -c 'import json,sys; print(json.load(sys.stdin)["endpoint"])')
trap '"$venv/bin/python" scripts/harness/s3server.py stop --pid '"$pid"'; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=testkey AWS_SECRET_ACCESS_KEY=testsecret AWS_ENDPOINT_URL="$endpoint"
"$venv/bin/python" scripts/bench/bench_fetch_setup.py --endpoint "$endpoint" --bucket bench \
    --count "$count" --size 1024 --big "$big" --out "$work/setup"

measure() { # label, command...: prints "label wall user sys rss_kib"
  local label=$1; shift
  local t; t=$(mktemp)
  /usr/bin/time -f '%e %U %S %M' -o "$t" "$@" > /dev/null
  echo "$label $(cat "$t")"; rm -f "$t"
}
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $count objects of 1 KiB; big object $big bytes"
read -r _ cw cu cs cr < <(measure curl sh -c "xargs -P 32 -n 50 curl -s -o /dev/null < $work/setup/urls.txt")
rm -rf "$work/out"
read -r _ fw fu fs fr < <(measure fetch target/release/examples/fetch_many "$work/setup/objects.jsonl" "$work/out" 32)
got=$(find "$work/out" -type f | wc -l)
read -r _ bcw _ _ _ < <(measure curl-big curl -s -o /dev/null "$(cat "$work/setup/big.url")")
vid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version_id"])' "$work/setup/big.json")
read -r _ bw bu bs br < <(measure get-big target/release/s3invbackup get s3://bench/big.bin --version-id "$vid" -o "$work/big.out" --jobs 8)
report() { # label count got cw fw fu fs fr big bcw bw bu bs br
python3 - "$@" <<'PY'
import sys
label, count, got = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cw, fw, fu, fs, fr = (float(x) for x in sys.argv[4:9])
big, bcw, bw, bu, bs, br = int(sys.argv[9]), *(float(x) for x in sys.argv[10:15])
print(f"{label}(a) {count} x 1 KiB: curl {count/cw:.0f} objects/s | fetcher {count/fw:.0f} objects/s = {cw/fw:.2f}x curl, "
      f"{got} files verified; CPU {1000*(fu+fs)/count:.3f} s per 1,000 objects; peak RSS {fr/1024:.0f} MiB")
print(f"{label}(b) {big/2**30:.2f} GiB: curl {big/bcw/1e6:.0f} MB/s | get {big/bw/1e6:.0f} MB/s = {bcw/bw:.2f}x curl; "
      f"CPU {(bu+bs)/(big/2**30):.2f} s per GiB; peak RSS {br/1024:.0f} MiB")
PY
}
report "" "$count" "$got" "$cw" "$fw" "$fu" "$fs" "$fr" "$big" "$bcw" "$bw" "$bu" "$bs" "$br"
# BASELINE=DIR (another build's target/release): the same measurements of that build, in
# the same run, against the same server and objects, for a ratio that the machine's noise
# does not decide.
if [ -n "${BASELINE:-}" ]; then
  rm -rf "$work/out"
  read -r _ fw fu fs fr < <(measure fetch "$BASELINE/examples/fetch_many" "$work/setup/objects.jsonl" "$work/out" 32)
  got=$(find "$work/out" -type f | wc -l)
  rm -f "$work/big.out"
  read -r _ bw bu bs br < <(measure get-big "$BASELINE/s3invbackup" get s3://bench/big.bin --version-id "$vid" -o "$work/big.out" --jobs 8)
  report "baseline " "$count" "$got" "$cw" "$fw" "$fu" "$fs" "$fr" "$big" "$bcw" "$bw" "$bu" "$bs" "$br"
fi

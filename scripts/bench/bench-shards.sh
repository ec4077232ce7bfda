#!/usr/bin/env bash
# What sharding costs on one machine (issue: shards on a job array), against SeaweedFS on
# loopback: the first backup of KEYS x VERSIONS versions (default 20000 x 3 = 60,000 of
# 1 KiB, the fixture of bench-sync.sh) by one `sync`, then by N = 2 and 4 `sync --shard I/N`
# processes started at the same moment on an empty directory, against one server, each
# with 32/N downloads in flight (the same total). Sharding gains from more hosts; here the
# point is that it costs nothing: total versions/s within 10% of the single process.
# The single run is measured before and after the sharded ones (these machines are noisy).
#
#   scripts/bench/bench-shards.sh [KEYS] [VERSIONS]
#
# Also, from each run's log: the creation (the creator's index build and cut, the others'
# wait) and the spine's versions JSON per commit, in milliseconds.
# Prints one machine-readable line per run:
#   RESULT shards=N versions=V rate=R ratio=X wall_s=W create_ms=C wait_ms=M spine_ms=S
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/bench-common.sh
keys=${1:-20000}
versions=${2:-3}
cargo build --release --locked --quiet --bin s3invbackup
bench_start bench-shards
bin=target/release/s3invbackup
"$venv/bin/python" scripts/bench/bench_sync_setup.py --endpoint "$endpoint" --bucket first \
    --keys "$keys" --versions "$versions" --layout spread --out "$work/first"
n=$(wc -l < "$work/first/urls.txt")
base_rate=""
run() { # shards label
  local shards=$1 backup="$work/backup-$2" start end
  rm -rf "$backup"
  start=$(date +%s.%N)
  if [ "$shards" = 1 ]; then
    $bin sync "$work/first/inventory" "$backup" --jobs 32 --progress none -v 2> "$work/log-$2-0" > /dev/null
  else
    local pids=()
    for ((i = 0; i < shards; i++)); do
      $bin sync "$work/first/inventory" "$backup" --shard "$i/$shards" --jobs $((32 / shards)) \
          --progress none -v 2> "$work/log-$2-$i" > /dev/null &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
  fi
  end=$(date +%s.%N)
  placed=$(find "$backup" -path "$backup/.s3invbackup" -prune -o -type f ! -name '.s3invbackup-versions.json' -print | wc -l)
  [ "$placed" -eq "$n" ] || { echo "run $2: $placed files placed, $n expected" >&2; exit 1; }
  python3 - "$shards" "$n" "$start" "$end" "${base_rate:-0}" "$work" "$2" <<'PY'
import glob, re, sys
shards, n, start, end, base = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
work, label = sys.argv[6], sys.argv[7]
logs = "".join(open(p, errors="replace").read() for p in glob.glob(f"{work}/log-{label}-*"))
create = [float(x) for x in re.findall(r"shards cut at .*?, ([0-9.]+) s\)", logs)]
wait = [float(x) for x in re.findall(r"created by another shard \(([0-9.]+) s waited\)", logs)]
spine = [float(x) for x in re.findall(r"spine versions JSON: .* in ([0-9.]+) s", logs)]
wall = end - start
rate = n / wall
ratio = rate / base if base else 1.0
print(f"RESULT shards={shards} versions={n} rate={rate:.0f} ratio={ratio:.2f} wall_s={wall:.2f} "
      f"create_ms={1000*max(create, default=0):.0f} wait_ms={1000*max(wait, default=0):.0f} "
      f"spine_ms={1000*max(spine, default=0):.0f}")
PY
}
out=$(run 1 single-a); echo "$out"
base_rate=$(echo "$out" | sed -n 's/.* rate=\([0-9]*\).*/\1/p')
run 2 two
run 4 four
run 1 single-b

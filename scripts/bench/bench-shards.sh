#!/usr/bin/env bash
# What sharding costs on one machine (issue: shards on a job array), against SeaweedFS on
# loopback: the first backup of KEYS x VERSIONS versions (default 20000 x 3 = 60,000 of
# 1 KiB, the fixture of bench-sync.sh) by one `sync`, then by N = 2 and 4 `sync --shard I/N`
# processes started at the same moment on an empty directory, against one server, each
# with 32/N downloads in flight (the same total; JOBS_PER_SHARD=J gives each J instead). Sharding gains from more hosts; here the
# point is that it costs nothing: total versions/s within 10% of the single process.
# The single run is measured before and after the sharded ones (these machines are noisy).
#
#   scripts/bench/bench-shards.sh [KEYS] [VERSIONS]
#
# Also, from each run's log: the creation (the creator's index build and cut, the others'
# wait) and the spine's versions JSON per commit, in milliseconds.
# SHOW_PHASES=1 also prints each process's plan, execute, commit and spine times.
# Prints one machine-readable line per run:
#   RESULT shards=N versions=V rate=R ratio=X wall_s=W create_ms=C wait_ms=M spine_ms=S cpu_ms_per_1000=U
# (U: the user + system CPU of all the processes per 1,000 versions; SeaweedFS's not counted).
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
    /usr/bin/time -f '%U %S' -o "$work/cpu-$2-0" \
        $bin sync "$work/first/inventory" "$backup" --jobs 32 --progress none -v 2> "$work/log-$2-0" > /dev/null
  else
    local pids=()
    for ((i = 0; i < shards; i++)); do
      /usr/bin/time -f '%U %S' -o "$work/cpu-$2-$i" \
          $bin sync "$work/first/inventory" "$backup" --shard "$i/$shards" --jobs "${JOBS_PER_SHARD:-$((32 / shards))}" \
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
cpu = sum(sum(float(x) for x in open(p).read().split()[-2:]) for p in glob.glob(f"{work}/cpu-{label}-*"))
wall = end - start
rate = n / wall
ratio = rate / base if base else 1.0
if __import__("os").environ.get("SHOW_PHASES"):
    for path in sorted(glob.glob(f"{work}/log-{label}-*")):
        text = open(path, errors="replace").read()
        phases = {k: sum(float(x) for x in re.findall(rf"{k} in ([0-9.]+) s", text))
                  for k in ["planned", "executed", "committed", "spine versions JSON: .*"]}
        print(f"  {path.rsplit('/', 1)[1]}: " + ", ".join(f"{k.split(':')[0]} {v:.2f} s" for k, v in phases.items()))
print(f"RESULT shards={shards} versions={n} rate={rate:.0f} ratio={ratio:.2f} wall_s={wall:.2f} "
      f"create_ms={1000*max(create, default=0):.0f} wait_ms={1000*max(wait, default=0):.0f} "
      f"spine_ms={1000*max(spine, default=0):.0f} cpu_ms_per_1000={1000*cpu*1000/n:.0f}")
PY
}
out=$(run 1 single-a); echo "$out"
base_rate=$(echo "$out" | sed -n 's/.* rate=\([0-9]*\).*/\1/p')
run 2 two
run 4 four
run 1 single-b

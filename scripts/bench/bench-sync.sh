#!/usr/bin/env bash
# Benchmarks of sync's first backup (issue: the backup itself), against SeaweedFS on loopback.
#
#   scripts/bench/bench-sync.sh [KEYS] [VERSIONS]        (default 20000 keys x 3 versions of 1 KiB)
#
# (a) First backup of KEYS x VERSIONS versions spread over directories of 1,000 keys:
#     `s3invbackup sync` (index build, plan, 32 download threads, every version verified,
#     placed and its mtime set, versions JSON, commit) against
#     `xargs -P 32 -n 50 curl -s -o /dev/null` over presigned URLs of the same versions, in the
#     same run. Peak RSS from /usr/bin/time.
# (c) Wide directories: a first backup of one directory holding 500, 5,000 and 50,000 keys,
#     twice each; versions/s of the whole run, and of its per-object part (the executed and
#     committed phases from `-v`: downloads, placement, the directory's versions JSON), which
#     is what must not grow with the directory's width. The whole-run rate of 500 keys is
#     dominated by the fixed costs (process start, index build, two filesystem syncs).
#     SKIP_A=1 runs (c) only; SKIP_C=1 runs (a) only.
# BASELINE=DIR also runs (a) with another build, alternately (see below), and prints
#   RESULT bench=first_backup versions=V baseline_rate=B rate=R ratio=X (medians of ROUNDS, default 5)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/bench-common.sh
keys=${1:-20000}
versions=${2:-3}
cargo build --release --locked --quiet --bin s3invbackup
bench_start bench-sync
bin=target/release/s3invbackup

setup() { # bucket keys versions layout
  "$venv/bin/python" scripts/bench/bench_sync_setup.py --endpoint "$endpoint" --bucket "$1" \
      --keys "$2" --versions "$3" --layout "$4" --out "$work/$1"
}

if [ -z "${SKIP_A:-}" ]; then
setup first "$keys" "$versions" spread
n=$(wc -l < "$work/first/urls.txt")
read -r _ cw _ _ _ < <(measure curl sh -c "xargs -P 32 -n 50 curl -s -o /dev/null < $work/first/urls.txt")
read -r _ sw su ss sr < <(measure sync $bin sync "$work/first/inventory" "$work/first/backup" --jobs 32 --progress none)
placed=$(find "$work/first/backup" -path "$work/first/backup/.s3invbackup" -prune -o -type f ! -name '.s3invbackup-versions.json' -print | wc -l)
python3 - "$n" "$placed" "$cw" "$sw" "$su" "$ss" "$sr" <<'PY'
import sys
n, placed = int(sys.argv[1]), int(sys.argv[2])
cw, sw, su, ss, sr = (float(x) for x in sys.argv[3:8])
print(f"(a) first backup, {n} versions: curl {n/cw:.0f} GETs/s | sync {n/sw:.0f} versions/s = {cw/sw:.2f}x curl; "
      f"{placed} files placed; CPU {1000*(su+ss)/n:.3f} s per 1,000 versions; peak RSS {sr/1024:.0f} MiB")
PY
# BASELINE=DIR: the same first backup by another build (DIR/target/release/s3invbackup) and by
# this one, alternately, ROUNDS times (default 5) on fresh directories: the cost of a change
# such as the fsync policy, measured in the same run.
if [ -n "${BASELINE:-}" ]; then
  rates_b=(); rates_c=()
  for round in $(seq "${ROUNDS:-5}"); do
    for which in baseline current; do
      b=$bin; [ "$which" = baseline ] && b=$BASELINE/target/release/s3invbackup
      rm -rf "$work/first/cmp"
      read -r _ w _ _ _ < <(measure "$which" "$b" sync "$work/first/inventory" "$work/first/cmp" --jobs 32 --progress none)
      rate=$(python3 -c "print(round($n/$w))")
      echo "(a) round $round $which: $rate versions/s (${w}s)"
      if [ "$which" = baseline ]; then rates_b+=("$rate"); else rates_c+=("$rate"); fi
    done
  done
  python3 - "$n" "${rates_b[*]}" "${rates_c[*]}" <<'PY'
import statistics, sys
n, b, c = int(sys.argv[1]), [int(x) for x in sys.argv[2].split()], [int(x) for x in sys.argv[3].split()]
mb, mc = statistics.median(b), statistics.median(c)
print(f"RESULT bench=first_backup versions={n} baseline_rate={mb:.0f} rate={mc:.0f} ratio={mc/mb:.3f}")
PY
fi
fi

for width in ${SKIP_C:+}500 5000 50000; do
  [ -n "${SKIP_C:-}" ] && break
  setup "wide$width" "$width" 1 wide
  for run in 1 2; do
    start=$(date +%s.%N)
    $bin sync "$work/wide$width/inventory" "$work/wide$width/backup" --jobs 32 --progress none -v 2> "$work/log" > /dev/null
    end=$(date +%s.%N)
    python3 - "$width" "$start" "$end" "$work/log" "$run" <<'PY'
import re, sys
n, start, end, log, run = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), open(sys.argv[4]).read(), sys.argv[5]
phase = sum(float(x) for x in re.findall(r"(?:executed|committed) in ([0-9.]+) s", log))
print(f"(c) one directory of {n} keys, run {run}: {n/(end-start):.0f} versions/s whole run ({end-start:.2f} s); "
      f"{n/phase:.0f} versions/s in the per-object phases ({phase:.2f} s)")
PY
    rm -rf "$work/wide$width/backup"
  done
done

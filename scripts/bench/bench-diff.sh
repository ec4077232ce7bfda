#!/usr/bin/env bash
# Benchmark of `diff` (issue: offline diff of two inventory dates).
#
#   scripts/bench/bench-diff.sh [ROWS]          (default 10000000)
#
# Builds two synthetic indexes of ROWS versions that differ in 1% of keys, then measures in
# the same run: the full diff (summary), its peak RSS, and the diff of one prefix holding a
# single Zarr store. /usr/bin/time gives wall time and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-10000000}
data=${BENCH_DIR:-bench-data}/diff-$rows
cargo build --release --locked --quiet --bin s3invbackup --example synth_index_pair
bin=target/release/s3invbackup
if [ ! -f "$data/prefix" ]; then
  mkdir -p "$data"
  target/release/examples/synth_index_pair "$data" "$rows" > "$data/prefix.tmp"
  mv "$data/prefix.tmp" "$data/prefix"
fi
prefix=$(cat "$data/prefix")
sync                              # no writeback of freshly generated files during the runs
cat "$data"/*.s3inv > /dev/null   # same page-cache state for every run

measure() { # prints "wall_s rss_kib" and keeps the command's stdout in $data/out
  local t; t=$(mktemp)
  /usr/bin/time -f '%e %M' -o "$t" "$@" > "$data/out"
  cat "$t"; rm -f "$t"
}
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; rows=$rows"
# Three runs each; the median is reported (this machine is noisy), all three are shown.
runs=()
for _ in 1 2 3; do
  read -r w r < <(measure $bin diff "$data/A.s3inv" "$data/B.s3inv" --progress none)
  runs+=("$w"); full_rss=$r
done
full_wall=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p)
echo "full diff runs: ${runs[*]} s (median $full_wall s)"
records=$(awk '/records read/ {gsub(/[^0-9 ]/," "); print $2+$3}' "$data/out")
keys=$(awk '/keys compared/ {gsub(/[^0-9 ]/," "); print $1}' "$data/out")
changes=$(awk '$1=="total" {print $2}' "$data/out")
pre_runs=()
for _ in 1 2 3; do
  read -r w _ < <(measure $bin diff "$data/A.s3inv" "$data/B.s3inv" --progress none --prefix "$prefix")
  pre_runs+=("$w")
done
pre_wall=$(printf '%s\n' "${pre_runs[@]}" | sort -n | sed -n 2p)
echo "--prefix runs: ${pre_runs[*]} s (median $pre_wall s)"
pre_keys=$(awk '/keys compared/ {gsub(/[^0-9 ]/," "); print $1}' "$data/out")
python3 - "$full_wall" "$full_rss" "$records" "$keys" "$changes" "$pre_wall" "$pre_keys" "$prefix" <<'PY'
import sys
fw, frss, rec, keys, changes, pw, pkeys, prefix = sys.argv[1:]
fw, frss, rec, keys, changes, pw, pkeys = float(fw), int(frss), int(rec), int(keys), int(changes), float(pw), int(pkeys)
print(f"full diff: {rec} records ({keys} keys, {changes} changes) in {fw:.2f}s = {rec/fw/1e6:.1f} M records/s, peak RSS {frss/1024:.0f} MiB")
print(f"--prefix {prefix}: {pkeys} keys ({100*pkeys/keys:.2f}% of keys) in {pw:.3f}s = {100*pw/fw:.2f}% of the full diff's time")
PY

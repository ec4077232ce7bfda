#!/usr/bin/env bash
# Benchmark of `index` (issue: inventory reader and compact index).
#
#   scripts/bench/bench-index.sh [ROWS] [FILES]        (default 10000000 rows, 24 files)
#
# Generates a synthetic inventory that looks like a real one (Zarr keys, 32-character random
# version ids, random MD5 ETags, ~3 versions per key, delete markers), once with every file
# sorted by key and covering disjoint ranges (as AWS writes them) and once shuffled within and
# across files. Then measures, in the same run, `gzip -dc` of the same files (the baseline)
# and `s3invbackup index`, with wall time and peak RSS from /usr/bin/time. Then the same
# inventories rewritten by pyarrow as Parquet (Snappy) and ORC (zlib), indexed in the same
# run: time against the CSV index of the same rows, peak RSS against the --memory budget.
# FORMATS=0 skips that part.
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-10000000}
files=${2:-24}
data=${BENCH_DIR:-bench-data}
cargo build --release --locked --quiet --bin s3invbackup --example synth_inventory
bin=target/release/s3invbackup
for kind in sorted shuffled; do
  if [ ! -f "$data/$kind-$rows/2024-11-06T01-00Z/manifest.checksum" ]; then
    rm -rf "$data/$kind-$rows"
    extra=""; [ $kind = shuffled ] && extra=shuffle
    target/release/examples/synth_inventory "$data/$kind-$rows" "$rows" "$files" $extra
  fi
done

measure() { # label, command...: prints "label wall_s rss_kib"
  local label=$1; shift
  local t; t=$(mktemp)
  /usr/bin/time -f '%e %M' -o "$t" "$@" > /dev/null 2>"$t.err" || { cat "$t.err" >&2; exit 1; }
  echo "$label $(cat "$t")"
  rm -f "$t" "$t.err"
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; rows=$rows files=$files"
for kind in sorted shuffled; do
  dir="$data/$kind-$rows"
  gz_bytes=$(cat "$dir"/data/*.csv.gz | wc -c)
  sync
  # Warm the page cache the same way for both measurements.
  cat "$dir"/data/*.csv.gz > /dev/null
  read -r _ gz_wall _ < <(measure gzip sh -c "gzip -dc $dir/data/*.csv.gz > /dev/null")
  mem=1GiB; [ $kind = shuffled ] && mem=256MiB
  read -r _ idx_wall idx_rss < <(measure index $bin index "$dir" --date 2024-11-06 -o "$data/$kind.idx" \
      --memory $mem --tmp-dir "$data" --progress none)
  idx_bytes=$(stat -c %s "$data/$kind.idx")
  python3 - "$kind" "$rows" "$gz_bytes" "$gz_wall" "$idx_wall" "$idx_rss" "$idx_bytes" "$mem" <<'PY'
import sys
kind, rows, gz, gzw, iw, rss, ib, mem = sys.argv[1:]
rows, gz, gzw, iw, rss, ib = int(rows), int(gz), float(gzw), float(iw), int(rss), int(ib)
print(f"{kind:9s} --memory {mem:7s} gzip -dc {gzw:6.2f}s | index {iw:6.2f}s = {iw/gzw:.2f}x gzip, "
      f"{rows/iw/1e6:.2f} M rows/s, peak RSS {rss/1024:.0f} MiB | "
      f"index {ib/2**20:.0f} MiB / csv.gz {gz/2**20:.0f} MiB = {ib/gz:.2f}x")
PY
done

[ "${FORMATS:-1}" = 0 ] && exit 0
py=$(scripts/dev/setup-venv.sh)/bin/python
for kind in sorted shuffled; do
  dir="$data/$kind-$rows"
  for fmt in parquet orc; do
    if [ ! -f "$dir-$fmt/2024-11-06T01-00Z/manifest.checksum" ]; then
      rm -rf "$dir-$fmt"
      "$py" scripts/bench/helpers/csv_to_columnar.py "$dir" 2024-11-06T01-00Z "$dir-$fmt" $fmt
    fi
  done
  mem=1GiB; [ $kind = shuffled ] && mem=256MiB
  line="$kind --memory $mem:"
  csv_wall=
  for fmt in csv parquet orc; do
    src=$dir; [ $fmt = csv ] || src="$dir-$fmt"
    cat "$src"/data/* > /dev/null
    read -r _ wall rss < <(measure $fmt $bin index "$src" --date 2024-11-06 -o "$data/$kind-$fmt.idx" \
        --memory $mem --tmp-dir "$data" --progress none)
    [ -n "$csv_wall" ] || csv_wall=$wall
    bytes=$(cat "$src"/data/* | wc -c)
    line="$line $(python3 -c "print(f'$fmt {$wall:.2f}s = {$wall/$csv_wall:.2f}x CSV, RSS {$rss/1024:.0f} MiB, files {$bytes/2**20:.0f} MiB |', end='')")"
  done
  echo "$line"
  # The three indexes hold the same records (the header differs: it keeps the fileSchema).
  for fmt in parquet orc; do
    cmp <($bin dump "$data/$kind-csv.idx") <($bin dump "$data/$kind-$fmt.idx") \
      || { echo "$kind: the $fmt index differs from the CSV one" >&2; exit 1; }
  done
done

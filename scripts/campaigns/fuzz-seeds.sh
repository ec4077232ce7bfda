#!/usr/bin/env bash
# Writes the seed corpora of the fuzz targets into fuzz/seeds/<target>/ (committed) from a small
# synthetic inventory (its manifest, rows, keys and index), so that the fuzzers start from
# well-formed inputs. Usage: scripts/campaigns/fuzz-seeds.sh [BIN]  (default target/debug/s3invbackup)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/debug/s3invbackup}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo run -q --example synth_inventory -- "$work/inv" 40 2 >/dev/null
date=$(ls "$work/inv" | grep '^[0-9]' | head -1)
"$bin" index "$work/inv" --date "$date" -o "$work/small.s3inv" --progress none 2>/dev/null
for t in key_decode csv_row manifest index_reader; do mkdir -p "fuzz/seeds/$t"; done
cp "$work/inv/$date/manifest.json" fuzz/seeds/manifest/synthetic.json
cp "$work/small.s3inv" fuzz/seeds/index_reader/small.s3inv
gzip -dc "$work"/inv/data/*.csv.gz | head -20 > fuzz/seeds/csv_row/rows.csv
i=0
gzip -dc "$work"/inv/data/*.csv.gz | head -8 | cut -d, -f2 | tr -d '"' | while read -r key; do
  printf '%s' "$key" > "fuzz/seeds/key_decode/key$i"; i=$((i + 1))
done
printf 'with+space%%2Band%%25percent/%%C3%%A9t%%C3%%A9' > fuzz/seeds/key_decode/escaped
echo "seeds written under fuzz/seeds/"

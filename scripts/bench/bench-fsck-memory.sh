#!/usr/bin/env bash
# Memory of `fsck --verify-content` on big files (issue 19: a 300 GB NWB file must not be
# read into memory): a backup holding one single-part and one multipart object of SIZE
# bytes (default 4 GiB each; zeros, as sparse files, so the disk needs no space), checked
# with every byte hashed. Prints wall time, peak RSS and a RESULT line.
#
#   scripts/bench/bench-fsck-memory.sh [SIZE]
set -euo pipefail
cd "$(dirname "$0")/../.."
size=${1:-4294967296}
cargo build --release --locked --quiet --bin s3invbackup --example big_inventory --example seed_backup
work=$(mktemp -d "${BENCH_DIR:-/tmp}/bench-fsck.XXXXXX")
trap 'rm -rf "$work"' EXIT
target/release/examples/big_inventory "$work/inventory" "$size"
printf 'big/single.bin\nbig/multipart.bin\n' > "$work/keys"
target/release/examples/seed_backup "$work/inventory" 2024-11-06 "$work/backup" "$work/keys"
# The seeder writes no versions JSON: one offline repair writes it (no content read).
target/release/s3invbackup fsck "$work/backup" --repair --no-fetch --progress none > /dev/null || true
t=$(mktemp)
/usr/bin/time -f '%e %M' -o "$t" target/release/s3invbackup fsck "$work/backup" --verify-content \
    --progress none > "$work/fsck.out"
read -r wall rss < "$t"; rm -f "$t"
cat "$work/fsck.out"
grep -q ' 0 problem(s)' "$work/fsck.out" || { echo "fsck found problems" >&2; exit 1; }
grep -q ' 0 checkable by size only' "$work/fsck.out" || { echo "some file was not hashed" >&2; exit 1; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; 2 files of $size bytes"
echo "RESULT fsck_verify_bytes=$((2 * size)) wall_s=$wall peak_rss_mib=$((rss / 1024))"

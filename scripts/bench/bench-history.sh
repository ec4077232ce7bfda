#!/usr/bin/env bash
# Benchmarks of reading a backup (issue: status, fsck, rollback, locate, restore, prune).
#
#   scripts/bench/bench-history.sh [KEYS]        (default 20000 keys x 3 versions of 1 KiB)
#
# A first backup of KEYS x 3 versions from SeaweedFS (as in bench-sync.sh), then, in the
# same run: `fsck` (metadata) in files/s; `fsck --verify-content` against `md5sum` of the same
# files with the same parallelism (xargs -P nproc); `restore` of the current files by hard
# link in files/s. And `locate` on a 1,000,000-version catalog (a synthetic inventory, seeded
# with scripts/bench/helpers/seed_backup.rs): wall time per key, process start included, over 200 keys.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/bench-common.sh
keys=${1:-20000}
cargo build --release --locked --quiet --bin s3invbackup --example seed_backup --example synth_inventory
bench_start bench-history
bin=target/release/s3invbackup
"$venv/bin/python" scripts/bench/bench_sync_setup.py --endpoint "$endpoint" --bucket hist \
    --keys "$keys" --versions 3 --layout spread --out "$work/hist" 2>/dev/null
b=$work/hist/backup
$bin sync "$work/hist/inventory" "$b" --progress none > /dev/null 2>&1
files=$(find "$b" -path "$b/.s3invbackup" -prune -o -type f ! -name '.s3invbackup-versions.json' -print | wc -l)
sync_fs() { sync; sleep 1; }

sync_fs
read -r _ fw _ _ fr < <(measure fsck $bin fsck "$b")
read -r _ vw _ _ vr < <(measure fsck-content $bin fsck "$b" --verify-content)
read -r _ mw _ _ _ < <(measure md5sum sh -c "find '$b' -path '$b/.s3invbackup' -prune -o -type f ! -name '.s3invbackup-versions.json' -print0 | xargs -0 -P $(nproc) -n 500 md5sum")
read -r _ rw _ _ rr < <(measure restore $bin restore "$b" --at 2100-01-01 "$work/restored" --progress none)
restored=$(find "$work/restored" -type f | wc -l)
python3 - "$files" "$fw" "$fr" "$vw" "$mw" "$restored" "$rw" "$rr" <<'PY'
import sys
files, fw, fr, vw, mw, restored, rw, rr = int(sys.argv[1]), *map(float, sys.argv[2:6]), int(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
print(f"fsck (metadata): {files} files in {fw:.2f} s = {files/fw:.0f} files/s (peak RSS {fr/1024:.0f} MiB)")
print(f"fsck --verify-content: {vw:.2f} s | md5sum -P same files: {mw:.2f} s = {vw/mw:.2f}x")
print(f"restore by hard link: {restored} files in {rw:.2f} s = {restored/rw:.0f} files/s (peak RSS {rr/1024:.0f} MiB)")
PY

# locate on a 1,000,000-version catalog
target/release/examples/synth_inventory "$work/synth" 1000000 8 2>/dev/null
: > "$work/none.txt"
target/release/examples/seed_backup "$work/synth" 2024-11-06T01-00Z "$work/big" "$work/none.txt" 2>/dev/null
$bin dump "$work/big/.s3invbackup/indexes/2024-11-06T01-00Z.s3inv" --format csv | awk -F, 'NR>1 && NR%5000==0 {print $1}' | head -200 > "$work/keys.txt"
python3 - "$bin" "$work/big" "$work/keys.txt" <<'PY'
import subprocess, sys, time
bin, backup, keys = sys.argv[1], sys.argv[2], [k.strip('"') for k in open(sys.argv[3]).read().split("\n") if k]
times = []
for k in keys:
    t = time.perf_counter()
    out = subprocess.run([bin, "locate", backup, k], capture_output=True)
    times.append(time.perf_counter() - t)
    assert out.returncode == 0 and out.stdout, (k, out.stderr)
times.sort()
print(f"locate on 1,000,000 versions: {len(keys)} keys, median {1000*times[len(times)//2]:.1f} ms, "
      f"max {1000*times[-1]:.1f} ms per key (process start included)")
PY

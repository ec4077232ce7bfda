#!/usr/bin/env bash
# Benchmark of sync's nightly increment (issue: the backup itself), against SeaweedFS.
#
#   scripts/bench/bench-sync-nightly.sh [KEYS]        (default 333,334 keys x 3 = 1,000,002 versions)
#
# A backup holding date 1 (1,000,002 versions) is seeded directly (scripts/bench/helpers/seed_backup.rs: the
# catalog lists every version as held; only the files that will move exist). Date 2 adds a
# new version of 1/K of the keys (K = 1000 and 100: 0.1% and 1%), uploaded for real.
# Measured in the same run: `sync` applying date 2, against the sum of its two unavoidable
# parts measured alone -- `s3invbackup index` of date 2 and `xargs -P 32 curl` of the changed
# versions. Then the same sync under `strace -c -f` on a fresh seed: its syscall count must
# grow with the changes, not with the catalog. BASELINE=DIR also times another build's sync
# (DIR/target/release/s3invbackup) on a fresh seed in the same run.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/bench-common.sh
keys=${1:-333334}
cargo build --release --locked --quiet --bin s3invbackup --example seed_backup
bench_start bench-nightly
bin=target/release/s3invbackup
seed=target/release/examples/seed_backup

"$venv/bin/python" scripts/bench/bench_sync_nightly_setup.py --endpoint "$endpoint" --bucket nightly \
    --keys "$keys" --every 1000 --every 100 --out "$work"
for every in 1000 100; do
  inv=$work/inv-$every
  changed=$(wc -l < "$work/keys-$every.txt")
  $seed "$inv" 2024-11-06 "$work/b-$every" "$work/keys-$every.txt" 2>/dev/null
  read -r _ iw _ _ _ < <(measure index $bin index "$inv" --date 2024-11-07 -o "$work/d2-$every.idx" --progress none)
  read -r _ cw _ _ _ < <(measure curl sh -c "xargs -P 32 -n 50 curl -s -o /dev/null < $work/urls-$every.txt")
  read -r _ sw su ss sr < <(measure sync $bin sync "$inv" "$work/b-$every" --jobs 32 --progress none)
  rm -rf "$work/b-$every"
  if [ -n "${BASELINE:-}" ]; then
    $seed "$inv" 2024-11-06 "$work/b-$every" "$work/keys-$every.txt" 2>/dev/null
    read -r _ bw _ _ _ < <(measure baseline "$BASELINE/target/release/s3invbackup" sync "$inv" "$work/b-$every" --jobs 32 --progress none)
    rm -rf "$work/b-$every"
    echo "(b) 1 key in $every changed: baseline sync $bw s, this build $sw s (ratio $(python3 -c "print(f'{$sw/$bw:.2f}')"))"
  fi
  $seed "$inv" 2024-11-06 "$work/b-$every" "$work/keys-$every.txt" 2>/dev/null
  strace -c -f -o "$work/strace-$every.txt" $bin sync "$inv" "$work/b-$every" --jobs 32 --progress none > /dev/null 2>&1 || true
  calls=$(awk '/total/{print $4}' "$work/strace-$every.txt")
  top=$(sort -k4 -n -r "$work/strace-$every.txt" | awk 'NF>=5 && $NF!="total"{printf "%s %s, ", $NF, $4}' | head -c 200)
  rm -rf "$work/b-$every"
  python3 - "$every" "$changed" "$iw" "$cw" "$sw" "$su" "$ss" "$sr" "$calls" "$top" <<'PY'
import sys
every, changed = int(sys.argv[1]), int(sys.argv[2])
iw, cw, sw, su, ss, sr = (float(x) for x in sys.argv[3:9])
calls, top = sys.argv[9], sys.argv[10]
print(f"(b) {100/every:.1f}% of keys changed ({changed} new versions): index {iw:.2f} s + curl {cw:.2f} s = {iw+cw:.2f} s | "
      f"sync {sw:.2f} s = {sw/(iw+cw):.2f}x; CPU {su+ss:.2f} s; peak RSS {sr/1024:.0f} MiB; syscalls {calls} ({top.rstrip(', ')})")
PY
done

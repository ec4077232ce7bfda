#!/usr/bin/env bash
# Benchmark of sync's nightly increment (issue: the backup itself), against SeaweedFS.
#
#   scripts/bench/bench-sync-nightly.sh [KEYS]        (default 333,334 keys x 3 = 1,000,002 versions)
#
# A backup holding date 1 (1,000,002 versions) is seeded directly (scripts/bench/helpers/seed_backup.rs: the
# catalog lists every version as held; only the files that will move exist). Date 2 adds a
# new version of 1/K of the keys (K = 1000 and 100: 0.1% and 1%), uploaded for real.
# Measured in the same run: `sync` applying date 2, against the sum of its two unavoidable
# parts measured alone -- `gzip -dc` of date 2's data files to /dev/null and
# `xargs -P 32 curl` of the changed versions -- and the bytes the sync wrote to disk (the
# kernel's block-output count, /usr/bin/time's %O, x 512) against the catalog's size. Prints
# per change rate:
#   RESULT versions=V changed_pct=P ratio=R written_bytes=W catalog_bytes=C rss_mib=M
# Then the first backup's index + plan of date 1 (`sync --dry-run`) on 1 core and on all.
# STRACE=1 also counts the sync's syscalls (they must grow with the changes, not with the
# catalog). BASELINE=DIR also times another build's sync (DIR/target/release/s3invbackup) on
# a fresh seed in the same run.
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
measure_io() { # label, command...: "label wall user sys rss_kib blocks_written" (512-byte blocks)
  local label=$1; shift
  local t; t=$(mktemp)
  /usr/bin/time -f '%e %U %S %M %O' -o "$t" "$@" > /dev/null 2>&1 || true
  echo "$label $(tail -1 "$t")"; rm -f "$t"
}
for every in 1000 100; do
  inv=$work/inv-$every
  changed=$(wc -l < "$work/keys-$every.txt")
  manifest=$(find "$inv" -path '*2024-11-07T01-00Z/manifest.json' | head -1)
  gz_files=$(python3 - "$manifest" <<'PY'
import json, os, sys
m = sys.argv[1]
data = os.path.join(os.path.dirname(os.path.dirname(m)), "data")
print(" ".join(os.path.join(data, os.path.basename(f["key"])) for f in json.load(open(m))["files"]))
PY
)
  $seed "$inv" 2024-11-06 "$work/b-$every" "$work/keys-$every.txt" 2>/dev/null
  sync
  read -r _ gw _ _ _ < <(measure gzip sh -c "cat $gz_files | gzip -dc > /dev/null")
  read -r _ cw _ _ _ < <(measure curl sh -c "xargs -P 32 -n 50 curl -s -o /dev/null < $work/urls-$every.txt")
  read -r _ sw su ss sr so < <(measure_io sync $bin sync "$inv" "$work/b-$every" --jobs 32 --progress none)
  catalog_bytes=$(du -sb "$work/b-$every/.s3invbackup/catalog" | cut -f1)
  # What the writes were: the tree's versions JSON (each changed directory's, whole) and the
  # catalog's parts, by size after the run.
  json_bytes=$(find "$work/b-$every" -name '.s3invbackup-versions.json' -newer "$work/b-$every/.s3invbackup/config.json" -printf '%s\n' | awk '{s+=$1} END {print s+0}')
  echo "(b) 1 key in $every: versions JSON rewritten $json_bytes bytes; catalog parts: $(cat "$work/b-$every/.s3invbackup/catalog/manifest.json" | python3 -c 'import json,sys; m=json.load(sys.stdin); print("base", m["base"]["bytes"], "deltas", [d["bytes"] for d in m["deltas"]])')"
  versions=$(python3 -c "import json; print(json.load(open('$work/b-$every/.s3invbackup/state.json'))['applied'][-1]['versions'])")
  rm -rf "$work/b-$every"
  if [ -n "${BASELINE:-}" ]; then
    $seed "$inv" 2024-11-06 "$work/b-$every" "$work/keys-$every.txt" 2>/dev/null
    read -r _ bw _ _ _ < <(measure baseline "$BASELINE/target/release/s3invbackup" sync "$inv" "$work/b-$every" --jobs 32 --progress none)
    rm -rf "$work/b-$every"
    echo "(b) 1 key in $every changed: baseline sync $bw s, this build $sw s (ratio $(python3 -c "print(f'{$sw/$bw:.2f}')"))"
  fi
  calls=-; top=-
  if [ -n "${STRACE:-}" ]; then
    $seed "$inv" 2024-11-06 "$work/b-$every" "$work/keys-$every.txt" 2>/dev/null
    strace -c -f -o "$work/strace-$every.txt" $bin sync "$inv" "$work/b-$every" --jobs 32 --progress none > /dev/null 2>&1 || true
    calls=$(awk '/total/{print $4}' "$work/strace-$every.txt")
    top=$(sort -k4 -n -r "$work/strace-$every.txt" | awk 'NF>=5 && $NF!="total"{printf "%s %s, ", $NF, $4}' | head -c 200)
    rm -rf "$work/b-$every"
  fi
  python3 - "$every" "$changed" "$gw" "$cw" "$sw" "$su" "$ss" "$sr" "$so" "$catalog_bytes" "$versions" "$calls" "$top" <<'PY'
import sys
every, changed = int(sys.argv[1]), int(sys.argv[2])
gw, cw, sw, su, ss, sr = (float(x) for x in sys.argv[3:9])
written, catalog, versions = int(sys.argv[9]) * 512, int(sys.argv[10]), int(sys.argv[11])
calls, top = sys.argv[12], sys.argv[13]
print(f"(b) {100/every:.1f}% of keys changed ({changed} new versions): gzip -dc {gw:.2f} s + curl {cw:.2f} s = {gw+cw:.2f} s | "
      f"sync {sw:.2f} s; CPU {su+ss:.2f} s; wrote {written/2**20:.1f} MiB = {100*written/catalog:.2f}% of the "
      f"{catalog/2**20:.1f} MiB catalog; syscalls {calls} ({top.rstrip(', ')})")
print(f"RESULT versions={versions} changed_pct={100/every:g} ratio={sw/(gw+cw):.2f} written_bytes={written} "
      f"catalog_bytes={catalog} rss_mib={sr/1024:.0f}")
PY
done
# The first backup's fixed cost: index + plan of date 1 (a dry run plans without fetching).
inv=$work/inv-1000
for cores in 1 all; do
  pin=(); [ "$cores" = 1 ] && pin=(taskset -c 0)
  read -r _ fw fu fs fr < <(measure first "${pin[@]}" $bin sync "$inv" "$work/first-$cores" --dry-run --end-date 2024-11-06 --progress none)
  rows=$((keys * 3))
  echo "(b) first backup index+plan of $rows versions on $cores core(s): $fw s ($(python3 -c "print(f'{$rows/$fw/1e3:.0f}')")k versions/s); CPU $(python3 -c "print(f'{$fu+$fs:.1f}')") s; peak RSS $((fr / 1024)) MiB"
done

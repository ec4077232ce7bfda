#!/usr/bin/env bash
# A tour on a fresh machine: builds the tool, starts a throw-away SeaweedFS on loopback, and
# plays five days of a versioned bucket's life (uploads, overwrites, deletes, undeletes,
# expirations, a file that becomes a directory and back, multipart uploads, keys the backup
# cannot hold). After each day it writes that day's S3 Inventory, exactly as AWS would, and
# runs the nightly `sync`; then it shows the tree, one directory's versions JSON, the state,
# status, locate, restore, fsck, a dry run, and the inventory tools (dates, index, dump, diff,
# get).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=$(scripts/dev/setup-venv.sh)
cargo build --release --locked --quiet
bin=$PWD/target/release/s3invbackup
work=$(mktemp -d)
server=$("$venv/bin/python" scripts/harness/s3server.py start --dir "$work/seaweedfs" --watch-pid $$ \
         --access-key demo --secret-key demosecret)
pid=$(echo "$server" | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
endpoint=$(echo "$server" | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["endpoint"])')
trap '"$venv/bin/python" scripts/harness/s3server.py stop --pid '"$pid"'; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demosecret AWS_ENDPOINT_URL="$endpoint"
inv=s3://inventories/inv/demo-archive/all/
backup=$work/backup

run() { echo; echo "\$ ${*//$work/\$WORK}"; "$@"; }

# The bucket's life, one day at a time: the generator stops after each day's inventory.
coproc GEN { "$venv/bin/python" scripts/harness/fixtures.py --endpoint "$endpoint" --access-key demo \
  --secret-key demosecret --bucket demo-archive --inventory-bucket inventories \
  --inventory-prefix inv/demo-archive/all --local-dir "$work/inventory" --scenario sync --step \
  2>/dev/null; }
day=0
while read -r line <&"${GEN[0]}"; do
  day=$((day + 1))
  echo; echo "=== day $day: $line"
  if [ $day = 1 ]; then
    # Two keys in the bucket collide with names the backup reserves: refused, nothing made.
    run $bin sync "$inv" "$backup" --progress plain || echo "(exit $?; $backup not created: $(test -e "$backup" && echo no || echo right))"
  fi
  run $bin sync "$inv" "$backup" --on-bad-key skip --progress plain || echo "(exit $?)"
  echo >&"${GEN[1]}"
done

(cd "$backup" && run sh -c "find . -path ./.s3invbackup -prune -o -print | sort")
run cat "$backup/zarr/0/.s3invbackup-versions.json"
run cat "$backup/.s3invbackup/state.json"
run $bin sync "$inv" "$backup" --on-bad-key skip
run $bin status "$backup"
run $bin locate "$backup" a.txt
run $bin restore "$backup" --at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --prefix zarr/ "$work/restored" || echo "(exit $?)"
run $bin fsck "$backup" --verify-content
run $bin sync "$inv" "$work/another" --start-date 2024-11-04 --end-date 2024-11-05 --on-bad-key skip --dry-run

run $bin dates "$inv"
run $bin index "$inv" --date 2024-11-03 -o "$work/2024-11-03.idx"
run $bin index "$work/inventory" --date 2024-11-03 -o "$work/local.idx"
run cmp "$work/2024-11-03.idx" "$work/local.idx"
echo "(identical indexes from S3 and from the local copy)"
run $bin dump "$work/2024-11-03.idx" --prefix x --format jsonl
run $bin diff "$inv@2024-11-02" "$inv@2024-11-03" --cache-dir "$work/cache" --format jsonl
run $bin get s3://demo-archive/big/multipart.bin -o "$work/multipart.bin"

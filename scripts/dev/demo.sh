#!/usr/bin/env bash
# A tour on a fresh machine: builds the tool, starts a throw-away SeaweedFS on loopback, and
# plays five days of a versioned bucket's life (uploads, overwrites, deletes, undeletes,
# expirations, a file that becomes a directory and back, multipart uploads, keys the backup
# cannot hold). After each day it writes that day's S3 Inventory, exactly as AWS would, and
# runs the nightly `sync`; then it shows the tree, one directory's versions JSON, the state,
# status, locate, restore, fsck, a dry run, and the inventory tools (dates, index, dump, diff,
# get).
#
#   scripts/dev/demo.sh          # everything is removed on exit
#   scripts/dev/demo.sh --keep   # the server and the data stay; the commands to try next
#                                # are printed (and written to $WORK/env.sh)
#
# The inventory dates are the last five days (so nothing warns of a stale inventory); the
# objects carry the real clock of the moment each day was played, which the narration
# prints, so `restore --at` and `locate --at` can be tried at each day's moment.
set -euo pipefail
keep=false
[ "${1:-}" = "--keep" ] && keep=true
cd "$(dirname "$0")/../.."
venv=$(scripts/dev/setup-venv.sh)
cargo build --release --locked --quiet
bin=$PWD/target/release/s3invbackup
work=$(mktemp -d)
server=$("$venv/bin/python" scripts/harness/s3server.py start --dir "$work/seaweedfs" --watch-pid $$ \
         --access-key demo --secret-key demosecret)
pid=$(echo "$server" | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
endpoint=$(echo "$server" | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["endpoint"])')
if $keep; then
  trap 'echo; echo "(demo.sh --keep: the server (pid $pid) and $work are left running; stop with: kill $pid; rm -rf $work)"' EXIT
else
  trap '"$venv/bin/python" scripts/harness/s3server.py stop --pid '"$pid"'; rm -rf "$work"' EXIT
fi
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demosecret AWS_ENDPOINT_URL="$endpoint"
inv=s3://inventories/inv/demo-archive/all/
backup=$work/backup

run() { echo; echo "\$ ${*//$work/\$WORK}"; "$@"; }

# What happens in the bucket on each day of the scenario (scripts/harness/fixtures.py, "sync").
story=(
  ""
  "the first uploads: files, a folder marker, keys with spaces, percent signs and Unicode, a 10 MiB multipart upload, 12 Zarr chunks, and two keys whose names the backup reserves"
  "a.txt overwritten, dir/b.txt deleted, a key written twice in one day, 4 Zarr chunks rewritten, 'both' is a file and a directory prefix at once"
  "dir/b.txt undeleted (its delete marker removed), a noncurrent version expires, x becomes a directory and y a file, a.txt overwritten again"
  "y becomes a directory again, the multipart file re-uploaded, a key and a folder marker deleted, every version of keep/1.txt removed from the bucket, 3 Zarr chunks deleted"
  "a.txt overwritten, a deleted key written again, x becomes a file again"
)
# Five days up to yesterday: dated as a real daily inventory would be.
start=$(date -u -d "5 days ago" +%Y-%m-%dT01:00:00)
day_date() { date -u -d "$((6 - $1)) days ago" +%F; }   # day 1 .. 5 as YYYY-MM-DD
# The bucket's life, one day at a time: the generator stops after each day's inventory.
coproc GEN { "$venv/bin/python" scripts/harness/fixtures.py --endpoint "$endpoint" --access-key demo \
  --secret-key demosecret --bucket demo-archive --inventory-bucket inventories \
  --inventory-prefix inv/demo-archive/all --local-dir "$work/inventory" --scenario sync --step \
  --start-date "$start" 2>/dev/null; }
day=0
moments=()
while read -r line <&"${GEN[0]}"; do
  day=$((day + 1))
  date=$(echo "$line" | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["date"])')
  moments[$day]=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  sleep 1   # the next day's objects get a later second than this day's moment
  echo; echo "=== day $day (inventory $date; the objects' clock: ${moments[$day]})"
  echo "    in the bucket: ${story[$day]}"
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
run $bin status "$backup" --check
run $bin locate "$backup" a.txt --at "${moments[2]}"
echo "(a.txt as it was at the end of day 2: the objects' LastModified are the real clock)"
run $bin restore "$backup" --at "${moments[3]}" --prefix zarr/ "$work/restored-day-3" || echo "(exit $?)"
run $bin restore "$backup" --at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --prefix zarr/ "$work/restored" || echo "(exit $?)"
run $bin fsck "$backup" --verify-content
run $bin sync "$inv" "$work/another" --start-date $(day_date 4) --end-date $(day_date 5) --on-bad-key skip --dry-run

run $bin dates "$inv"
run $bin index "$inv" --date $(day_date 3) -o "$work/day3.idx"
run $bin index "$work/inventory" --date $(day_date 3) -o "$work/local.idx"
run cmp "$work/day3.idx" "$work/local.idx"
echo "(identical indexes from S3 and from the local copy)"
run $bin dump "$work/day3.idx" --prefix x --format jsonl
run $bin diff "$inv@$(day_date 2)" "$inv@$(day_date 3)" --cache-dir "$work/cache" --format jsonl
run $bin get s3://demo-archive/big/multipart.bin -o "$work/multipart.bin"

if $keep; then
  cat > "$work/env.sh" <<ENV
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demosecret AWS_ENDPOINT_URL=$endpoint
bin=$bin; inv=$inv; backup=$backup
ENV
  cat <<NEXT

=== try it yourself (the server and the data stay):
  source $work/env.sh
  \$bin status \$backup                       # what the backup holds, its last runs
  \$bin status \$backup --check               # one line for a monitor
  \$bin locate \$backup a.txt                 # every version of a key, and where
  \$bin locate \$backup a.txt --at ${moments[1]}
  \$bin restore \$backup --at ${moments[4]} $work/day4   # the bucket at the end of day 4
  \$bin fsck \$backup --verify-content        # prove the tree matches the catalog
  rm \$backup/a.txt; \$bin fsck \$backup; \$bin fsck \$backup --repair   # break it, repair it
  \$bin diff "\$inv@$(date -u -d "4 days ago" +%F)" "\$inv@$(date -u -d "3 days ago" +%F)"   # what day 2 changed
  \$bin sync \$backup --dry-run               # the next night's run (up to date)
  ls $work/inventory                          # the inventory, as S3 writes it
NEXT
fi

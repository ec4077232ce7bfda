#!/usr/bin/env bash
# A tour on a fresh machine: builds the tool, starts a throw-away SeaweedFS on loopback,
# creates a versioned bucket with three days of changes and writes their S3 Inventories
# (to an inventory bucket and a local copy), then lists, indexes, dumps and diffs them, and
# fetches one multipart object with full verification.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(scripts/setup-venv.sh)
cargo build --release --locked --quiet
bin=target/release/s3invbackup
work=$(mktemp -d)
server=$("$venv/bin/python" scripts/s3server.py start --dir "$work/seaweedfs" --watch-pid $$ \
         --access-key demo --secret-key demosecret)
pid=$(echo "$server" | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
endpoint=$(echo "$server" | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["endpoint"])')
trap '"$venv/bin/python" scripts/s3server.py stop --pid '"$pid"'; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demosecret AWS_ENDPOINT_URL="$endpoint"

"$venv/bin/python" scripts/fixtures.py --endpoint "$endpoint" --access-key demo --secret-key demosecret \
  --bucket demo-archive --inventory-bucket inventories --inventory-prefix inv/demo-archive/all \
  --local-dir "$work/inventory" --files 3
inv=s3://inventories/inv/demo-archive/all/

run() { echo; echo "\$ $*"; "$@"; }
run $bin dates "$inv"
run $bin index "$inv" --date 2024-11-03 -o "$work/2024-11-03.idx"
run $bin index "$work/inventory" --date 2024-11-03 -o "$work/local.idx"
run cmp "$work/2024-11-03.idx" "$work/local.idx"
echo "(identical indexes from S3 and from the local copy)"
run $bin dump "$work/2024-11-03.idx" --format csv
run $bin dump "$work/2024-11-03.idx" --prefix x --format jsonl
run $bin diff "$inv@2024-11-01" "$inv@2024-11-03" --cache-dir "$work/cache" --depth 1
run $bin diff "$inv@2024-11-02" "$inv@2024-11-03" --cache-dir "$work/cache" --format jsonl
run $bin get s3://demo-archive/big/multipart.bin -o "$work/multipart.bin"

# Sourced by the scripts/bench-*.sh that need an S3 server: starts a throw-away SeaweedFS on
# loopback (stopped, with the work directory, when the script exits) and defines `measure`.
#
#   bench_start NAME    sets $venv, $work, $endpoint and the AWS_* variables

bench_start() {
  venv=$(scripts/dev/setup-venv.sh)
  work=$(mktemp -d "${BENCH_DIR:-/tmp}/$1.XXXXXX")
  local server pid
  server=$("$venv/bin/python" scripts/harness/s3server.py start --dir "$work/seaweedfs" --watch-pid $$ \
           --access-key testkey --secret-key testsecret)
  pid=$(echo "$server" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
  endpoint=$(echo "$server" | python3 -c 'import json,sys; print(json.load(sys.stdin)["endpoint"])')
  # A script's own clean-up, if it defines bench_on_exit, runs first.
  trap 'if declare -F bench_on_exit > /dev/null; then bench_on_exit; fi; "$venv/bin/python" scripts/harness/s3server.py stop --pid '"$pid"'; rm -rf "$work"' EXIT
  export AWS_ACCESS_KEY_ID=testkey AWS_SECRET_ACCESS_KEY=testsecret AWS_ENDPOINT_URL="$endpoint"
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
}

measure() { # label, command...: prints "label wall user sys rss_kib" (the command's output is dropped)
  local label=$1; shift
  local t; t=$(mktemp)
  /usr/bin/time -f '%e %U %S %M' -o "$t" "$@" > /dev/null 2>&1 || true
  echo "$label $(tail -1 "$t")"; rm -f "$t"
}

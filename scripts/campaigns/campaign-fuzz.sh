#!/usr/bin/env bash
# Fuzzing campaign: each cargo-fuzz target (fuzz/fuzz_targets/) for a bounded time.
#
#   scripts/campaigns/campaign-fuzz.sh [SECONDS_PER_TARGET] [dev]   (default 300, optimized build)
#
# `dev` builds the targets unoptimized: a third of the build time from nothing (2 min
# instead of 6 here), 10-20x fewer runs per second. CI uses it for its short run, whose
# point is to replay the seeds (every input that ever found a bug) and explore a little.
#
# Targets: key_decode (the key decoder against percent-encoding, and encode/decode round
# trips), csv_row (rows of a data file), manifest (manifest.json and the checks behind it),
# index_reader (index files; built with --cfg fuzzing, the reader skips its CRC checks so
# that mutations reach the decoders), parquet_file and orc_file (data files of the columnar
# formats; a panic inside the format's crate is caught and reported as the file's error, one
# that escapes the reader fails the run). Each starts from fuzz/seeds/<target>/ (committed:
# well-formed inputs and the inputs of every bug found so far) in a working corpus under
# fuzz/corpus/. A crash, panic, leak or an allocation over 2 GiB fails the campaign; the
# input is left in fuzz/artifacts/<target>/. cargo-fuzz is installed if missing; the
# toolchain here is stable, so RUSTC_BOOTSTRAP=1 lets cargo-fuzz use its -Z flags.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-300}
profile=-O
if [ "${2:-}" = dev ]; then profile=--dev; fi
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo fuzz build $profile
status=0
for target in key_decode csv_row manifest index_reader parquet_file orc_file; do
    mkdir -p "fuzz/corpus/$target"
    cp -n "fuzz/seeds/$target"/* "fuzz/corpus/$target/" 2>/dev/null || true
    log=$(mktemp)
    if cargo fuzz run $profile "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len=65536 \
        >"$log" 2>&1; then
        runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' || echo "?")
        cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+' || echo "?")
        echo "$target: ${seconds}s, $runs runs, coverage $cov edges, corpus $(ls "fuzz/corpus/$target" | wc -l) inputs: no failure"
    else
        echo "$target: FAILED"
        grep -E 'ERROR|panicked|SUMMARY|Test unit written' "$log" | head -5
        status=1
    fi
    rm -f "$log"
done
exit $status

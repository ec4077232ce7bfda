#!/usr/bin/env bash
# CPU per GiB of verification: MD5 (what an ETag check costs) against S3's additional
# checksums (what the fetcher uses when S3 offers one). Same buffer, same code as the
# fetcher, thread CPU time. Usage: scripts/bench/bench-checksums.sh [GIB]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet --example hash_speed
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "algorithm  cpu_s_per_GiB  GiB_per_s"
target/release/examples/hash_speed "${1:-2}"

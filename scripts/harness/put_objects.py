#!/usr/bin/env python3
"""Uploads test objects with boto3 and reports what S3 made of them.

    put_objects.py --endpoint URL --bucket B --out DIR < spec.json

spec.json is a list of {"key", "size", "parts": [part sizes] (multipart), "no_checksum": true
(no additional checksum), "storage_class": "GLACIER", "null": true
(written before versioning is enabled), "no_file": true, "seed"}. Content is deterministic
pseudo-random bytes (a repeated 1 MiB pattern for big objects). Each object's bytes are also
written to DIR/<n> so tests can compare, unless "no_file" (big objects: the disk of a CI machine
is small). Prints a JSON list: {"key", "version_id", "etag", "size", "last_modified" (epoch
seconds), "md5" (of the bytes sent, by hashlib), "file"}.
"""
import argparse
import hashlib
import json
import os
import random
import sys

import boto3
from botocore.config import Config


def content(size, seed):
    rng = random.Random(seed)
    block = rng.randbytes(min(size, 1 << 20))
    reps, rest = divmod(size, len(block)) if block else (0, 0)
    return block * reps + block[:rest]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--access-key", default="testkey")
    p.add_argument("--secret-key", default="testsecret")
    p.add_argument("--bucket", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    spec = json.load(sys.stdin)
    s3 = boto3.client("s3", endpoint_url=args.endpoint, aws_access_key_id=args.access_key,
                      aws_secret_access_key=args.secret_key, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
    # An upload without an additional checksum (boto3 sends CRC32 unless told not to).
    plain = boto3.client("s3", endpoint_url=args.endpoint, aws_access_key_id=args.access_key,
                         aws_secret_access_key=args.secret_key, region_name="us-east-1",
                         config=Config(s3={"addressing_style": "path"},
                                       request_checksum_calculation="when_required"))
    s3.create_bucket(Bucket=args.bucket)
    os.makedirs(args.out, exist_ok=True)
    for o in (o for o in spec if o.get("null")):
        put(plain if o.get("no_checksum") else s3, args, o, spec.index(o))
    s3.put_bucket_versioning(Bucket=args.bucket, VersioningConfiguration={"Status": "Enabled"})
    results = []
    for n, o in enumerate(spec):
        if not o.get("null"):
            put(plain if o.get("no_checksum") else s3, args, o, n)
    for n, o in enumerate(spec):
        head = s3.head_object(Bucket=args.bucket, Key=o["key"], ChecksumMode="ENABLED",
                              **({"VersionId": o["vid"]} if o.get("vid") else {}))
        # The additional checksum the server keeps (boto3 sends CRC32 by default), as botocore
        # reads it: the name of the algorithm, and whether it is a composite ("…-N").
        checksum = next((alg for alg in ("CRC64NVME", "CRC32C", "CRC32", "SHA1", "SHA256")
                         if head.get("Checksum" + alg)), None)
        composite = bool(checksum) and "-" in head["Checksum" + checksum]
        results.append({"key": o["key"], "version_id": head.get("VersionId", "null") or "null",
                        "etag": head["ETag"].strip('"'), "size": head["ContentLength"],
                        "last_modified": head["LastModified"].timestamp(),
                        "checksum": checksum, "checksum_composite": composite, "md5": o["md5"],
                        "file": os.path.join(args.out, str(n))})
    print(json.dumps(results))


def put(s3, args, o, n):
    body = content(o["size"], o.get("seed", n))
    o["md5"] = hashlib.md5(body).hexdigest()
    if not o.get("no_file"):
        with open(os.path.join(args.out, str(n)), "wb") as f:
            f.write(body)
    if o.get("parts"):
        mp = s3.create_multipart_upload(Bucket=args.bucket, Key=o["key"])
        parts, at = [], 0
        for i, size in enumerate(o["parts"], 1):
            r = s3.upload_part(Bucket=args.bucket, Key=o["key"], UploadId=mp["UploadId"], PartNumber=i,
                               Body=body[at:at + size])
            parts.append({"PartNumber": i, "ETag": r["ETag"]})
            at += size
        assert at == len(body), "part sizes must add up to size"
        r = s3.complete_multipart_upload(Bucket=args.bucket, Key=o["key"], UploadId=mp["UploadId"],
                                         MultipartUpload={"Parts": parts})
    else:
        extra = {"StorageClass": o["storage_class"]} if o.get("storage_class") else {}
        r = s3.put_object(Bucket=args.bucket, Key=o["key"], Body=body, **extra)
    o["vid"] = r.get("VersionId")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Sets up the fetch benchmark: N small objects (and optionally one big one) in a bucket.

    bench_fetch_setup.py --endpoint URL --bucket B --count N --size BYTES --out DIR [--big BYTES]

Writes DIR/objects.jsonl (bucket, key, version_id, size, etag, last_modified for the
fetcher), DIR/urls.txt (a presigned GET URL per object, with its versionId, for curl), and
for --big, DIR/big.json and DIR/big.url.
"""
import argparse
import concurrent.futures
import json
import os
import random

import boto3
from botocore.config import Config


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--access-key", default="testkey")
    p.add_argument("--secret-key", default="testsecret")
    p.add_argument("--bucket", required=True)
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--big", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    s3 = boto3.client("s3", endpoint_url=a.endpoint, aws_access_key_id=a.access_key,
                      aws_secret_access_key=a.secret_key, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}, max_pool_connections=32,
                                    retries={"max_attempts": 10}))
    s3.create_bucket(Bucket=a.bucket)
    s3.put_bucket_versioning(Bucket=a.bucket, VersioningConfiguration={"Status": "Enabled"})
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(1)
    bodies = [rng.randbytes(a.size) for _ in range(64)]

    def put(i):
        key = f"zarr/bench/{i // 1000}/{i % 1000}"
        r = s3.put_object(Bucket=a.bucket, Key=key, Body=bodies[i % 64])
        return key, r["VersionId"], r["ETag"].strip('"')

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        done = list(pool.map(put, range(a.count)))
    with open(os.path.join(a.out, "objects.jsonl"), "w") as objs, open(os.path.join(a.out, "urls.txt"), "w") as urls:
        for key, vid, etag in done:
            objs.write(json.dumps({"bucket": a.bucket, "key": key, "version_id": vid, "size": a.size,
                                   "etag": etag, "last_modified": "2024-11-06T01:00:00.000Z"}) + "\n")
            urls.write(s3.generate_presigned_url("get_object", Params={"Bucket": a.bucket, "Key": key, "VersionId": vid},
                                                 ExpiresIn=36000) + "\n")
    if a.big:
        mp = s3.create_multipart_upload(Bucket=a.bucket, Key="big.bin")
        part = 64 << 20
        block = rng.randbytes(1 << 20)
        parts = []
        for n, start in enumerate(range(0, a.big, part), 1):
            size = min(part, a.big - start)
            r = s3.upload_part(Bucket=a.bucket, Key="big.bin", UploadId=mp["UploadId"], PartNumber=n,
                               Body=(block * (size // len(block) + 1))[:size])
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        r = s3.complete_multipart_upload(Bucket=a.bucket, Key="big.bin", UploadId=mp["UploadId"],
                                         MultipartUpload={"Parts": parts})
        with open(os.path.join(a.out, "big.json"), "w") as f:
            json.dump({"version_id": r["VersionId"]}, f)
        with open(os.path.join(a.out, "big.url"), "w") as f:
            f.write(s3.generate_presigned_url("get_object", Params={"Bucket": a.bucket, "Key": "big.bin",
                                                                    "VersionId": r["VersionId"]}, ExpiresIn=36000))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Sets up the fixed-cost benchmark: an inventory on S3 with years of dates, as a real
bucket's inventory destination has after a few years of daily reports.

    bench_fixed_costs_setup.py --endpoint URL --bucket B --inventory-bucket I --out DIR
        [--keys N] [--multipart M] [--history DAYS]

Uploads N small keys and M multipart objects (2 parts: 5 MiB, SeaweedFS's minimum, and
1 KiB) to the versioned bucket B, and writes into I under `inv/B/all/`:
  - the date after the history (`--history` days of date folders before it, each holding a
    copy of that date's manifest.json and manifest.checksum: what a listing must walk);
  - the last date, the same rows a day later (a night with nothing new to fetch).
Prints JSON: {"prefix", "dates": [the two real dates], "versions"}.
"""
import argparse
import concurrent.futures
import datetime as dt
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "harness"))
import fixtures  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--access-key", default="testkey")
    p.add_argument("--secret-key", default="testsecret")
    p.add_argument("--bucket", required=True)
    p.add_argument("--inventory-bucket", required=True)
    p.add_argument("--keys", type=int, default=200)
    p.add_argument("--multipart", type=int, default=50)
    p.add_argument("--history", type=int, default=1500)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    s3 = fixtures.client(a.endpoint, a.access_key, a.secret_key, pool=32)
    for b in (a.bucket, a.inventory_bucket):
        s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=a.bucket, VersioningConfiguration={"Status": "Enabled"})
    rng = random.Random(1)

    def put_small(i):
        s3.put_object(Bucket=a.bucket, Key=f"zarr/x/{i // 100}/{i % 100}", Body=random.Random(i).randbytes(1024))

    def put_multipart(i):
        key = f"nwb/sub-{i}/file.nwb"
        mp = s3.create_multipart_upload(Bucket=a.bucket, Key=key)
        parts = []
        for n, size in ((1, 5 << 20), (2, 1024)):
            body = random.Random(i * 10 + n).randbytes(size)
            r = s3.upload_part(Bucket=a.bucket, Key=key, UploadId=mp["UploadId"], PartNumber=n, Body=body)
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        s3.complete_multipart_upload(Bucket=a.bucket, Key=key, UploadId=mp["UploadId"],
                                     MultipartUpload={"Parts": parts})

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        list(pool.map(put_small, range(a.keys)))
        list(pool.map(put_multipart, range(a.multipart)))
    rows = fixtures.inventory_rows(s3, a.bucket)
    prefix = f"inv/{a.bucket}/all"
    args = argparse.Namespace(schema=fixtures.DEFAULT_SCHEMA, shuffle=False, files=4, bucket=a.bucket,
                              inventory_bucket=a.inventory_bucket, local_dir=os.path.join(a.out, "inventory"),
                              inventory_prefix=prefix)
    start = dt.datetime(2026, 11, 1, 1, 0, tzinfo=dt.timezone.utc) - dt.timedelta(days=a.history)
    first = start + dt.timedelta(days=a.history)
    last = first + dt.timedelta(days=1)
    for date in (first, last):
        fixtures.write_inventory(s3, [("csv", fixtures.Writer(s3, args))], args, date, rows, rng)
    folder = first.strftime("%Y-%m-%dT%H-%MZ")
    files = {n: s3.get_object(Bucket=a.inventory_bucket, Key=f"{prefix}/{folder}/{n}")["Body"].read()
             for n in ("manifest.json", "manifest.checksum")}

    def put_history(d):
        name = (start + dt.timedelta(days=d)).strftime("%Y-%m-%dT%H-%MZ")
        for n, body in files.items():
            s3.put_object(Bucket=a.inventory_bucket, Key=f"{prefix}/{name}/{n}", Body=body)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        list(pool.map(put_history, range(a.history)))
    print(json.dumps({"prefix": prefix, "versions": len(rows),
                      "dates": [d.strftime("%Y-%m-%dT%H-%MZ") for d in (first, last)]}))


if __name__ == "__main__":
    main()

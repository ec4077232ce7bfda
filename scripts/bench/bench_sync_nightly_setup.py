#!/usr/bin/env python3
"""Sets up the nightly-increment benchmark of sync: a big first date and a small change.

    bench_sync_nightly_setup.py --endpoint URL --bucket B --keys N --out DIR --every 100 --every 1000

Date 1 (2024-11-06) lists N keys x 3 versions with made-up version ids (never fetched: the
benchmark seeds the backup's catalog with them). For each --every K, date 2 (2024-11-07)
also lists a new version of every K-th key, uploaded for real to B (1 KiB each), so 1/K of
the keys change. Writes, per K: DIR/inv-K/ (both dates, AWS format), DIR/keys-K.txt (the
changed keys) and DIR/urls-K.txt (presigned GETs of their new versions, for curl).
"""
import argparse
import concurrent.futures
import datetime as dt
import hashlib
import os
import random
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "harness"))
import fixtures  # noqa: E402


def key(i):
    return f"zarr/{i // 1000:04d}/{i % 1000}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--access-key", default="testkey")
    p.add_argument("--secret-key", default="testsecret")
    p.add_argument("--bucket", required=True)
    p.add_argument("--keys", type=int, default=333334)
    p.add_argument("--every", type=int, action="append", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    s3 = fixtures.client(a.endpoint, a.access_key, a.secret_key, pool=32)
    s3.create_bucket(Bucket=a.bucket)
    s3.put_bucket_versioning(Bucket=a.bucket, VersioningConfiguration={"Status": "Enabled"})
    rng = random.Random(1)
    d1 = dt.datetime(2024, 11, 6, 1, 0, tzinfo=dt.timezone.utc)
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    rows = []
    for i in range(a.keys):
        for v in range(3):
            h = hashlib.md5(f"{i}/{v}".encode()).hexdigest()
            rows.append({"key": key(i), "version_id": h, "is_latest": v == 2, "is_delete_marker": False,
                         "size": 1024, "last_modified": base + dt.timedelta(seconds=i * 3 + v),
                         "etag": hashlib.md5(h.encode()).hexdigest(), "storage_class": "STANDARD"})
    rows.sort(key=lambda r: (r["key"].encode(), -r["last_modified"].timestamp()))
    body = rng.randbytes(1024)
    for every in a.every:
        root = os.path.join(a.out, f"inv-{every}")
        args = argparse.Namespace(schema=fixtures.DEFAULT_SCHEMA, shuffle=False, files=8, bucket=a.bucket,
                                  inventory_bucket=None, local_dir=root, inventory_prefix="inventory")
        fixtures.write_inventory(s3, [("csv", fixtures.Writer(s3, args))], args, d1, rows, rng)
        changed = [key(i) for i in range(0, a.keys, every)]

        def put(k):
            vid = s3.put_object(Bucket=a.bucket, Key=k, Body=body)["VersionId"]
            head = s3.head_object(Bucket=a.bucket, Key=k, VersionId=vid)
            return k, vid, head["ETag"].strip('"'), head["LastModified"]

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            new = {k: (vid, etag, lm) for k, vid, etag, lm in pool.map(put, changed)}
        rows2 = []
        for r in rows:
            if r["key"] in new and r["is_latest"]:
                vid, etag, lm = new[r["key"]]
                rows2.append({**r, "version_id": vid, "etag": etag, "last_modified": lm})
                r = {**r, "is_latest": False}
            rows2.append(r)
        rows2.sort(key=lambda r: (r["key"].encode(), -r["last_modified"].timestamp()))
        fixtures.write_inventory(s3, [("csv", fixtures.Writer(s3, args))], args, d1 + dt.timedelta(days=1), rows2, rng)
        with open(os.path.join(a.out, f"keys-{every}.txt"), "w") as f:
            f.write("".join(k + "\n" for k in changed))
        with open(os.path.join(a.out, f"urls-{every}.txt"), "w") as f:
            for k, (vid, _, _) in new.items():
                f.write(s3.generate_presigned_url("get_object", Params={"Bucket": a.bucket, "Key": k, "VersionId": vid},
                                                  ExpiresIn=36000) + "\n")
        print(f"inv-{every}: {len(rows)} + {len(changed)} versions, {len(changed)} keys changed", file=sys.stderr)


if __name__ == "__main__":
    main()

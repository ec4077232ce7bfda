#!/usr/bin/env python3
"""Sets up a sync benchmark: a versioned bucket of small objects and its S3 Inventory.

    bench_sync_setup.py --endpoint URL --bucket B --keys N --versions V --layout spread|wide --out DIR

Uploads N keys x V versions of --size bytes (32 threads), lists the bucket with
ListObjectVersions and writes one inventory date in AWS's format to DIR/inventory (with the
fixture generator's writer), and DIR/urls.txt: a presigned GET URL with its versionId for every
version, for the curl baseline. Layouts: "spread" puts 1,000 keys per directory
(zarr/bench/<i/1000>/<i%1000>), "wide" puts every key in one directory (wide/<i>).
"""
import argparse
import concurrent.futures
import datetime as dt
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
    p.add_argument("--keys", type=int, default=20000)
    p.add_argument("--versions", type=int, default=3)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--layout", choices=["spread", "wide"], default="spread")
    p.add_argument("--date", default="2024-11-06T01:00:00")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    s3 = fixtures.client(a.endpoint, a.access_key, a.secret_key, pool=32)
    s3.create_bucket(Bucket=a.bucket)
    s3.put_bucket_versioning(Bucket=a.bucket, VersioningConfiguration={"Status": "Enabled"})
    rng = random.Random(1)
    bodies = [rng.randbytes(a.size) for _ in range(64)]

    def key(i):
        return f"zarr/bench/{i // 1000}/{i % 1000}" if a.layout == "spread" else f"wide/{i}"

    def put(n):
        i, v = divmod(n, a.versions)
        s3.put_object(Bucket=a.bucket, Key=key(i), Body=bodies[(i + v) % 64])

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        for _ in pool.map(put, range(a.keys * a.versions), chunksize=64):
            pass
    rows = fixtures.inventory_rows(s3, a.bucket)
    args = argparse.Namespace(schema=fixtures.DEFAULT_SCHEMA, shuffle=False, files=4, bucket=a.bucket,
                              inventory_bucket=None, local_dir=os.path.join(a.out, "inventory"),
                              inventory_prefix="inventory")
    date = dt.datetime.fromisoformat(a.date).replace(tzinfo=dt.timezone.utc)
    fixtures.write_inventory(s3, [("csv", fixtures.Writer(s3, args))], args, date, rows, rng)
    with open(os.path.join(a.out, "urls.txt"), "w") as urls:
        for r in rows:
            urls.write(s3.generate_presigned_url(
                "get_object", Params={"Bucket": a.bucket, "Key": r["key"], "VersionId": r["version_id"]},
                ExpiresIn=36000) + "\n")
    print(f"{a.bucket}: {len(rows)} versions of {a.keys} keys", file=sys.stderr)


if __name__ == "__main__":
    main()

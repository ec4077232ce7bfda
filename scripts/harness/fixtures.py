#!/usr/bin/env python3
"""Build a versioned test bucket from a scenario and write S3 Inventories of it.

For each simulated day the scenario's operations are applied to the source bucket with boto3,
then the bucket is listed with ListObjectVersions -- as AWS's inventory job does -- and an
inventory for that date is written in AWS's exact format:

    <root>/<YYYY-MM-DDTHH-MMZ>/manifest.json        (pretty-printed like Jackson: "key" : value)
    <root>/<YYYY-MM-DDTHH-MMZ>/manifest.checksum    (hex MD5 of manifest.json)
    <root>/data/<uuid>.csv.gz                       (gzip, no header, every field quoted,
                                                     keys form-encoded: space is +)
    <root>/hive/dt=YYYY-MM-DD-HH-MM/symlink.txt

into an inventory bucket (s3://INV_BUCKET/ROOT/) and/or a local directory (LOCAL/ holds what
ROOT holds). --formats csv,parquet,orc writes the same rows in each format, as AWS does for
an inventory configured with that format: the first to ROOT and LOCAL, each other one to
ROOT-<format> and LOCAL-<format>. Parquet and ORC files are written by pyarrow (snake_case
columns, keys not URL-encoded, last_modified_date a timestamp, data/<uuid>.parquet or .orc),
with AWS's fileSchema strings in the manifest. Rows are sorted by key and split into --files contiguous files (as AWS does in
practice, versions of a key newest first), or shuffled within and across files (--shuffle).

--model FILE writes the independent oracle: for every date, the versions that the listing
returned, as plain JSON, for tests to compare an index against.

Scenarios: "basic" (three days of puts, overwrites, deletes, undeletes, expirations,
multipart uploads, a pre-versioning object, tricky keys) and "random" (--keys keys over
--days days of random operations).
"""
import argparse
import datetime as dt
import gzip
import hashlib
import io
import json
import random
import time
import sys
import urllib.parse
import uuid

import boto3
from botocore.config import Config

DEFAULT_SCHEMA = ("Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, "
                  "ETag, StorageClass, IsMultipartUploaded, ReplicationStatus, EncryptionStatus, "
                  "ObjectLockRetainUntilDate, ObjectLockMode, ObjectLockLegalHoldStatus")

TRICKY_KEYS = [
    "with space/and+plus.txt",
    "percent%25/equals=sign&amp.txt",
    "unicode/ünïcødé-日本.txt",
    "deep/a/b/c/d/e/f/g.txt",
]


def client(endpoint, access_key, secret_key, pool=10):
    """A boto3 S3 client for the test server: path-style, patient retries."""
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, max_pool_connections=pool,
                                      retries={"max_attempts": 10}))


class Bucket:
    def __init__(self, s3, name):
        self.s3, self.name = s3, name
        # MD5 of every body written, by (key, version id): the oracle for the bytes a backup
        # holds, independent of ETags (which for multipart uploads are not the body's MD5).
        self.bodies = {}

    def put(self, key, body):
        vid = self.s3.put_object(Bucket=self.name, Key=key, Body=body).get("VersionId") or "null"
        self.bodies[(key, vid)] = hashlib.md5(body).hexdigest()
        return vid

    def delete(self, key):
        """Adds a delete marker; returns its version id."""
        return self.s3.delete_object(Bucket=self.name, Key=key).get("VersionId")

    def delete_version(self, key, version_id):
        """Removes one version for good (what a lifecycle expiration does)."""
        self.s3.delete_object(Bucket=self.name, Key=key, VersionId=version_id)

    def versions(self, key):
        out = []
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.name, Prefix=key):
            out += [v for v in page.get("Versions", []) if v["Key"] == key]
            out += [d for d in page.get("DeleteMarkers", []) if d["Key"] == key]
        return out

    def multipart(self, key, part_sizes, rng):
        mp = self.s3.create_multipart_upload(Bucket=self.name, Key=key)
        parts = []
        whole = hashlib.md5()
        for n, size in enumerate(part_sizes, 1):
            body = rng.randbytes(size)
            whole.update(body)
            r = self.s3.upload_part(Bucket=self.name, Key=key, UploadId=mp["UploadId"], PartNumber=n, Body=body)
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        r = self.s3.complete_multipart_upload(Bucket=self.name, Key=key, UploadId=mp["UploadId"],
                                              MultipartUpload={"Parts": parts})
        vid = r.get("VersionId") or "null"
        self.bodies[(key, vid)] = whole.hexdigest()
        return vid


def scenario_basic(b, s3, rng, args):
    """Three days. Returns a list of callables, one per day."""
    def day1():
        b.put("pre-versioning.txt", b"written before versioning was enabled")
        s3.put_bucket_versioning(Bucket=b.name, VersioningConfiguration={"Status": "Enabled"})
        b.put("a.txt", b"a version 1")
        b.put("dir/b.txt", b"b version 1")
        b.put("folder/", b"")
        b.put("empty.bin", b"")
        b.put("x", b"x is a file")
        b.put("to-expire.txt", b"expires on day 3")
        for k in TRICKY_KEYS:
            b.put(k, k.encode())
        b.multipart("big/multipart.bin", [5 * 1024 * 1024, 1024], rng)

    def day2():
        b.put("a.txt", b"a version 2, longer")
        b.delete("dir/b.txt")
        b.put("to-expire.txt", b"second version")
        b.put("new/on-day-2.txt", b"added on day 2")

    def day3():
        markers = [v for v in b.versions("dir/b.txt") if "Size" not in v]
        for m in markers:                           # undelete: remove the delete marker
            b.delete_version("dir/b.txt", m["VersionId"])
        for v in b.versions("to-expire.txt"):       # expiration of a noncurrent version
            if not v["IsLatest"]:
                b.delete_version("to-expire.txt", v["VersionId"])
        b.delete("x")                                # x: file -> directory
        b.put("x/y", b"x is now a directory")
        b.put("a.txt", b"a version 3")
    return [day1, day2, day3]


BAD_KEYS = [
    "bad/.s3invbackup-versions.json",
    "bad/file.old.v1.0123456789abcdef0123456789abcdef",
]


def scenario_sync(b, s3, rng, args):
    """Five days for the sync tests: every transition the backup layout must handle."""
    def day1():
        b.put("pre-versioning.txt", b"written before versioning was enabled")
        s3.put_bucket_versioning(Bucket=b.name, VersioningConfiguration={"Status": "Enabled"})
        b.put("a.txt", b"a version 1")
        b.put("dir/b.txt", b"b version 1")
        b.put("folder/", b"")
        b.put("empty.bin", b"")
        b.put("x", b"x is a file")
        b.put("y/z", b"y is a directory")
        b.put("keep/1.txt", b"all versions of this key expire on day 4")
        b.put("to-expire.txt", b"expires on day 3")
        for k in TRICKY_KEYS:
            b.put(k, k.encode())
        for k in BAD_KEYS:
            b.put(k, b"a key the backup cannot hold")
        b.multipart("big/multipart.bin", [5 * 1024 * 1024, 1024], rng)
        for i in range(12):
            b.put(f"zarr/0/{i}", rng.randbytes(rng.randrange(1, 3000)))

    def day2():
        b.put("a.txt", b"a version 2, longer")
        b.delete("dir/b.txt")
        b.put("to-expire.txt", b"second version")
        b.put("new/on-day-2.txt", b"added on day 2")
        b.delete("y/z")
        b.put("pre-versioning.txt", b"overwritten after versioning")   # null -> noncurrent
        b.put("fast.txt", b"first of two writes in one day")            # never seen current
        b.put("fast.txt", b"second of two writes in one day")
        for i in range(0, 12, 3):
            b.put(f"zarr/0/{i}", rng.randbytes(rng.randrange(1, 3000)))
        b.put("both", b"a file and a directory prefix at once")     # conflict: the directory wins
        b.put("both/inner", b"inside both/")

    def day3():
        for m in [v for v in b.versions("dir/b.txt") if "Size" not in v]:
            b.delete_version("dir/b.txt", m["VersionId"])               # undelete
        for v in b.versions("to-expire.txt"):                           # noncurrent expiration
            if not v["IsLatest"]:
                b.delete_version("to-expire.txt", v["VersionId"])
        b.delete("x")                                                   # x: file -> directory
        b.put("x/y", b"x is now a directory")
        b.put("y", b"y is now a file")                                  # y: directory -> file
        b.put("a.txt", b"a version 3")
        b.delete("both/inner")                                          # conflict over: both is a file

    def day4():
        b.delete("y")                                                   # y: file -> directory again
        b.put("y/w", b"a new file in a new y/")
        b.multipart("big/multipart.bin", [5 * 1024 * 1024, 5 * 1024 * 1024, 7], rng)
        b.delete(TRICKY_KEYS[0])
        b.delete("folder/")
        b.put("nested/deep/", b"")
        for v in b.versions("keep/1.txt"):                              # gone from the bucket
            b.delete_version("keep/1.txt", v["VersionId"])
        for i in range(12):
            if i % 4 == 0:
                b.delete(f"zarr/0/{i}")

    def day5():
        b.put("a.txt", b"a version 4")
        b.put(TRICKY_KEYS[0], b"back again")
        b.put("x", b"x is a file again")                                # x: directory -> file
        b.delete("x/y")
    return [day1, day2, day3, day4, day5]


def scenario_deep(b, s3, rng, args):
    """File <-> directory flips more than 64 directories down (keys of up to 1,024 bytes
    have up to 511): a directory displaced at level 69 and one at level 129, each holding
    an old version, then each a directory again."""
    deep = {"/".join(["d"] * 70): 2, "/".join(["e"] * 130): 2}

    def day1():
        s3.put_bucket_versioning(Bucket=b.name, VersioningConfiguration={"Status": "Enabled"})
        for d in deep:
            b.put(f"{d}/x", b"x version 1")
            b.put(f"{d}/x", b"x version 2")
            b.put(f"{d}/y", b"y, a file beside x")
        b.put("top.txt", b"a shallow key")

    def day2():
        for d in deep:                                   # d: directory -> file
            b.delete(f"{d}/x")
            b.delete(f"{d}/y")
            b.put(d, b"d is now a file")

    def day3():
        for d in deep:                                   # d: file -> directory again
            b.delete(d)
            for m in [v for v in b.versions(f"{d}/x") if "Size" not in v]:
                b.delete_version(f"{d}/x", m["VersionId"])   # undelete x
        b.put("top.txt", b"a shallow key, version 2")
    return [day1, day2, day3]


def scenario_random(b, s3, rng, args):
    s3.put_bucket_versioning(Bucket=b.name, VersioningConfiguration={"Status": "Enabled"})
    keys = [f"zarr/{rng.randrange(4)}/{i // 16}/{i % 16}" for i in range(args.keys)]

    def day():
        for k in rng.sample(keys, max(1, len(keys) // 3)):
            op = rng.random()
            if op < 0.6:
                b.put(k, rng.randbytes(rng.randrange(0, 2048)))
            elif op < 0.85:
                b.delete(k)
            else:
                vs = b.versions(k)
                if vs:
                    b.delete_version(k, rng.choice(vs)["VersionId"])
    return [day] * args.days


def scenario_soak(b, s3, rng, args):
    """Many nights of everything (the thirty-night soak): on every date a quarter of the keys
    change (new versions, deletes, a version permanently deleted: undeletes of delete markers
    and expirations of noncurrent versions), one of four keys flips between file and
    directory, and now and then the bucket's versioning is suspended for an overwrite (null
    versions, several with one ETag) and a multipart object gets a new version."""
    keys = [f"zarr/{i // 16}/{i % 16}" for i in range(args.keys)]
    flips = [f"flip/{i}" for i in range(4)]

    def first():
        b.put("null/pre.txt", b"written before versioning was enabled")
        s3.put_bucket_versioning(Bucket=b.name, VersioningConfiguration={"Status": "Enabled"})
        for k in keys:
            b.put(k, rng.randbytes(rng.randrange(0, 2048)))
        for f in flips:
            b.put(f, f"{f} starts as a file".encode())
        b.multipart("big/multipart.bin", [5 * 1024 * 1024, 1024], rng)

    def night(n):
        for k in rng.sample(keys, max(1, len(keys) // 4)):
            op = rng.random()
            if op < 0.6:
                b.put(k, rng.randbytes(rng.randrange(0, 2048)))
            elif op < 0.8:
                b.delete(k)
            else:
                vs = b.versions(k)
                markers = [v for v in vs if "Size" not in v and v["IsLatest"]]
                noncurrent = [v for v in vs if not v["IsLatest"]]
                if markers:                                       # undelete
                    b.delete_version(k, markers[0]["VersionId"])
                elif noncurrent:                                  # expiration
                    b.delete_version(k, rng.choice(noncurrent)["VersionId"])
        f = flips[n % len(flips)]
        if any(v["IsLatest"] and "Size" in v for v in b.versions(f)):
            b.delete(f)                                           # file -> directory
            b.put(f"{f}/inside", f"{f} is a directory on night {n}".encode())
        else:
            b.delete(f"{f}/inside")                               # directory -> file
            b.put(f, f"{f} is a file again on night {n}".encode())
        if n % 6 == 2:
            s3.put_bucket_versioning(Bucket=b.name, VersioningConfiguration={"Status": "Suspended"})
            b.put("null/suspended.txt", rng.choice([b"content A", b"content B"]))
            s3.put_bucket_versioning(Bucket=b.name, VersioningConfiguration={"Status": "Enabled"})
        if n % 9 == 4:
            b.multipart("big/multipart.bin", [5 * 1024 * 1024, rng.randrange(1, 4096)], rng)
    return [first] + [lambda n=n: night(n) for n in range(1, args.days)]


def inventory_rows(s3, bucket):
    """Rows as the inventory job would write them, from ListObjectVersions."""
    rows = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            rows.append({"key": v["Key"], "version_id": v["VersionId"], "is_latest": v["IsLatest"],
                         "is_delete_marker": False, "size": v["Size"],
                         "last_modified": v["LastModified"], "etag": v["ETag"].strip('"'),
                         "storage_class": v.get("StorageClass", "STANDARD")})
        for d in page.get("DeleteMarkers", []):
            rows.append({"key": d["Key"], "version_id": d["VersionId"], "is_latest": d["IsLatest"],
                         "is_delete_marker": True, "size": None, "last_modified": d["LastModified"],
                         "etag": None, "storage_class": None})
    # AWS lists a key's versions newest first; keep that order within a key.
    rows.sort(key=lambda r: (r["key"].encode(), -r["last_modified"].timestamp()))
    return rows


def fmt_time(t):
    t = t.astimezone(dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def csv_field(row, name, source_bucket):
    dm = row["is_delete_marker"]
    vid = row["version_id"]
    values = {
        "Bucket": source_bucket,
        "Key": urllib.parse.quote_plus(row["key"], safe="/*"),
        "VersionId": "" if vid == "null" else vid,
        "IsLatest": "true" if row["is_latest"] else "false",
        "IsDeleteMarker": "true" if dm else "false",
        "Size": "" if dm else str(row["size"]),
        "LastModifiedDate": fmt_time(row["last_modified"]),
        "ETag": "" if dm else row["etag"],
        "StorageClass": "" if dm else row["storage_class"],
        "IsMultipartUploaded": "" if dm else ("true" if "-" in row["etag"] else "false"),
        "EncryptionStatus": "" if dm else "SSE-S3",
    }
    return values.get(name, "")


def gzip_csv(rows, fields, source_bucket):
    buf = io.StringIO()
    for row in rows:
        buf.write(",".join('"' + csv_field(row, f, source_bucket) + '"' for f in fields) + "\n")
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue().encode())
    return out.getvalue()


def snake(name):
    """AWS's columnar name for a CSV column name (ETag is e_tag)."""
    if name == "ETag":
        return "e_tag"
    out = ""
    for i, c in enumerate(name):
        if c.isupper() and i > 0:
            out += "_"
        out += c.lower()
    return out


# The Arrow type and the fileSchema spellings (Parquet, ORC) of each columnar column.
COLUMNAR_TYPES = {
    "size": ("int64", "int64", "bigint"),
    "is_latest": ("bool", "boolean", "boolean"),
    "is_delete_marker": ("bool", "boolean", "boolean"),
    "is_multipart_uploaded": ("bool", "boolean", "boolean"),
    "last_modified_date": ("timestamp", "int64", "timestamp"),
    "object_lock_retain_until_date": ("timestamp", "int64", "timestamp"),
}


def columnar_value(row, name, source_bucket, fmt):
    """A row's value for a columnar column: None is null."""
    dm = row["is_delete_marker"]
    vid = row["version_id"]
    t = row["last_modified"].astimezone(dt.timezone.utc)
    values = {
        "bucket": source_bucket,
        "key": row["key"],
        # Parquet writes the null version id as a null, ORC as an empty string: both occur.
        "version_id": (None if fmt == "parquet" else "") if vid == "null" else vid,
        "is_latest": bool(row["is_latest"]),
        "is_delete_marker": bool(dm),
        "size": None if dm else row["size"],
        "last_modified_date": t.replace(microsecond=t.microsecond // 1000 * 1000),
        "e_tag": None if dm else row["etag"],
        "storage_class": None if dm else row["storage_class"],
        "is_multipart_uploaded": None if dm else ("-" in row["etag"]),
        "encryption_status": None if dm else "SSE-S3",
    }
    return values.get(name)


def columnar_schema(columns, fmt):
    """The manifest's fileSchema as AWS writes it for `fmt`."""
    if fmt == "parquet":
        fields = []
        for c in columns:
            _, ptype, _ = COLUMNAR_TYPES.get(c, ("string", "binary", "string"))
            rep = "required" if c in ("bucket", "key") else "optional"
            note = {"binary": " (STRING)"}.get(ptype, "")
            if c.endswith("_date"):
                note = " (TIMESTAMP(MILLIS,true))"
            fields.append(f"{rep} {ptype} {c}{note};")
        return "message s3.inventory {  " + "  ".join(fields) + "}"
    return "struct<" + ",".join(f"{c}:{COLUMNAR_TYPES.get(c, ('', '', 'string'))[2]}"
                                for c in columns) + ">"


def columnar_file(rows, columns, source_bucket, fmt, row_group_rows):
    """One Parquet (snappy) or ORC (zlib) data file, written by pyarrow."""
    import pyarrow as pa
    import pyarrow.orc
    import pyarrow.parquet

    arrow_type = {"int64": pa.int64(), "bool": pa.bool_(), "timestamp": pa.timestamp("ms", tz="UTC"),
                  "string": pa.string()}
    fields, arrays = [], []
    for c in columns:
        t = arrow_type[COLUMNAR_TYPES.get(c, ("string",))[0]]
        fields.append(pa.field(c, t, nullable=c not in ("bucket", "key")))
        arrays.append(pa.array([columnar_value(r, c, source_bucket, fmt) for r in rows], type=t))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    out = io.BytesIO()
    if fmt == "parquet":
        pyarrow.parquet.write_table(table, out, compression="snappy",
                                    row_group_size=row_group_rows or None)
    else:
        pyarrow.orc.write_table(table, out, compression="zlib")
    return out.getvalue()


def jackson(manifest):
    """json.dumps shaped like AWS's Jackson output ("key" : value, 2-space indent)."""
    text = json.dumps(manifest, indent=2)
    return text.replace('": ', '" : ')


class Writer:
    """Writes one inventory file to the local directory and/or the inventory bucket."""
    def __init__(self, s3, args, suffix="", seed=0):
        self.s3, self.args = s3, args
        self.root = args.inventory_prefix.strip("/") + suffix
        self.local_dir = args.local_dir and args.local_dir.rstrip("/") + suffix
        self.names = random.Random(seed)

    def write(self, rel, data):
        if self.local_dir:
            import os
            path = os.path.join(self.local_dir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        if self.args.inventory_bucket:
            self.s3.put_object(Bucket=self.args.inventory_bucket, Key=f"{self.root}/{rel}", Body=data)


CURRENT_ONLY_DROP = ("VersionId", "IsLatest", "IsDeleteMarker")


def write_inventory(s3, writers, args, date, rows, rng):
    """Writes the inventory of `date` with each writer (one per format, the first CSV-or-
    whatever comes first in --formats); every format holds the same rows in the same files."""
    fields = [f.strip() for f in args.schema.split(",")]
    if getattr(args, "current_only", False):
        # A current-versions-only inventory: the latest version of each key that is not
        # deleted, and no version columns.
        fields = [f for f in fields if f not in CURRENT_ONLY_DROP]
        rows = [r for r in rows if r["is_latest"] and not r["is_delete_marker"]]
    if args.shuffle:
        rows = rows[:]
        rng.shuffle(rows)
    n = max(1, min(args.files, len(rows) or 1))
    chunks = [rows[i * len(rows) // n:(i + 1) * len(rows) // n] for i in range(n)]
    folder = date.strftime("%Y-%m-%dT%H-%MZ")
    for fmt, writer in writers:
        # CSV draws its file names from the scenario's generator, as it always has (so the
        # CSV fixtures do not change); the other formats from their own.
        names = rng if fmt == "csv" else writer.names
        columns = [snake(f) for f in fields]
        files = []
        for chunk in chunks:
            ext = {"csv": "csv.gz", "parquet": "parquet", "orc": "orc"}[fmt]
            name = f"{uuid.UUID(int=names.getrandbits(128), version=4)}.{ext}"
            if fmt == "csv":
                data = gzip_csv(chunk, fields, args.bucket)
            else:
                data = columnar_file(chunk, columns, args.bucket, fmt, args.row_group_rows)
            writer.write(f"data/{name}", data)
            files.append({"key": f"{writer.root}/data/{name}", "size": len(data),
                          "MD5checksum": hashlib.md5(data).hexdigest()})
        created = int(date.timestamp() * 1000)
        manifest = {
            "sourceBucket": args.bucket,
            "destinationBucket": f"arn:aws:s3:::{args.inventory_bucket or 'inventory'}",
            "version": "2016-11-30",
            "creationTimestamp": str(created),
            "fileFormat": {"csv": "CSV", "parquet": "Parquet", "orc": "ORC"}[fmt],
            "fileSchema": ", ".join(fields) if fmt == "csv" else columnar_schema(columns, fmt),
            "files": files,
        }
        body = jackson(manifest).encode()
        writer.write(f"{folder}/manifest.json", body)
        writer.write(f"{folder}/manifest.checksum", (hashlib.md5(body).hexdigest() + "\n").encode())
        symlinks = "".join(f"s3://{args.inventory_bucket or 'inventory'}/{f['key']}\n" for f in files)
        writer.write(f"hive/dt={date.strftime('%Y-%m-%d-%H-%M')}/symlink.txt", symlinks.encode())
    return folder


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--access-key", default="testkey")
    p.add_argument("--secret-key", default="testsecret")
    p.add_argument("--bucket", required=True, help="source bucket (created, versioned)")
    p.add_argument("--scenario", default="basic", choices=["basic", "random", "sync", "soak", "deep"])
    p.add_argument("--keys", type=int, default=50)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--inventory-bucket", help="bucket to write the inventory into (created)")
    p.add_argument("--inventory-prefix", default="inventory/source/all-versions",
                   help="ROOT: the folder holding the dated folders")
    p.add_argument("--local-dir", help="also write the inventory here (same layout as ROOT)")
    p.add_argument("--files", type=int, default=3, help="data files per date")
    p.add_argument("--shuffle", action="store_true", help="shuffle rows within and across files")
    p.add_argument("--schema", default=DEFAULT_SCHEMA)
    p.add_argument("--formats", default="csv",
                   help="comma-separated csv, parquet, orc: the first goes to ROOT and LOCAL, "
                        "the others to ROOT-<format> and LOCAL-<format>")
    p.add_argument("--row-group-rows", type=int, default=0,
                   help="rows per Parquet row group (0: pyarrow's default)")
    p.add_argument("--current-only", action="store_true",
                   help="write current-versions-only inventories (no VersionId, IsLatest, IsDeleteMarker)")
    p.add_argument("--start-date", default="2024-11-01T01:00:00")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--model", help="write the oracle (versions per date) as JSON here")
    p.add_argument("--step", action="store_true",
                   help="after each date, print {\"date\": ...} and wait for a line on stdin "
                        "(so a test can back up each date while the bucket is in that state)")
    p.add_argument("--real-dates", action="store_true",
                   help="date each inventory at the minute after its day's writes (waiting for "
                        "it), not --start-date plus whole days")
    p.add_argument("--pause", type=float, default=0,
                   help="seconds to wait after each date (so that dates do not share a second "
                        "of LastModified, and `restore --at` can name the end of each)")
    args = p.parse_args()

    s3 = client(args.endpoint, args.access_key, args.secret_key)
    rng = random.Random(args.seed)
    s3.create_bucket(Bucket=args.bucket)
    if args.inventory_bucket:
        try:
            s3.create_bucket(Bucket=args.inventory_bucket)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
    b = Bucket(s3, args.bucket)
    days = {"basic": scenario_basic, "random": scenario_random,
            "sync": scenario_sync, "soak": scenario_soak, "deep": scenario_deep}[args.scenario](b, s3, rng, args)
    formats = [f.strip().lower() for f in args.formats.split(",")]
    for f in formats:
        if f not in ("csv", "parquet", "orc"):
            p.error(f"unknown format {f!r}")
    writers = [(f, Writer(s3, args, "" if i == 0 else f"-{f}", seed=args.seed * 1000 + i))
               for i, f in enumerate(formats)]
    start = dt.datetime.fromisoformat(args.start_date).replace(tzinfo=dt.timezone.utc)
    model = {}
    for i, day in enumerate(days):
        day()
        rows = inventory_rows(s3, args.bucket)
        when = start + dt.timedelta(days=i)
        if args.real_dates:
            # The inventory of the minute after the day's last write, and the next day's
            # writes after that minute: the dates and LastModified share one timeline, as on
            # AWS, so `restore --at` a date's moment is that date's bucket.
            now = dt.datetime.now(dt.timezone.utc)
            when = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
            time.sleep((when - now).total_seconds() + 1.2)  # LastModified has whole seconds
        folder = write_inventory(s3, writers, args, when, rows, rng)
        model[folder] = [{**r, "last_modified": fmt_time(r["last_modified"]),
                          "body_md5": b.bodies.get((r["key"], r["version_id"]))} for r in rows]
        print(f"{folder}: {len(rows)} rows", file=sys.stderr)
        if args.model:
            with open(args.model, "w") as f:
                json.dump(model, f, indent=1)
        if args.step:
            print(json.dumps({"date": folder}), flush=True)
            sys.stdin.readline()
        time.sleep(args.pause)


if __name__ == "__main__":
    main()

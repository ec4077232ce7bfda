#!/usr/bin/env python3
"""Damage one data file of a local Parquet or ORC inventory, as a test of the reader.

    bad_columnar.py INVENTORY_DIR DATE MODE

The first data file of DATE's manifest is rewritten (with pyarrow) or altered in place, and
unless the mode is about the manifest's MD5 itself, the manifest's size and MD5 and
manifest.checksum are updated to match, so that only the reader can tell the file is bad.
Prints the damaged file's name and the column at fault (or "-") as JSON.

Modes:
  md5            one byte flipped, the manifest left as it was
  truncated      the file cut in half (manifest updated: its MD5 matches)
  missing-column the e_tag column dropped from the file (fileSchema still lists it)
  wrong-type     size written as strings
  null-key       key null in the second row
  null-time      last_modified_date null in the second row
  brotli         every column compressed with Brotli (Parquet only)
  encrypted      the footer magic of an encrypted file, PARE (Parquet only)
"""
import hashlib
import json
import os
import sys

import pyarrow as pa
import pyarrow.orc
import pyarrow.parquet


def main():
    root, date, mode = sys.argv[1:4]
    mpath = os.path.join(root, date, "manifest.json")
    with open(mpath) as f:
        manifest = json.load(f)
    fmt = manifest["fileFormat"].lower()
    entry = manifest["files"][0]
    path = os.path.join(root, "data", entry["key"].rsplit("/data/", 1)[1])
    with open(path, "rb") as f:
        data = f.read()

    def read():
        if fmt == "parquet":
            return pyarrow.parquet.read_table(path)
        return pyarrow.orc.read_table(path)

    def write(table, **kw):
        if fmt == "parquet":
            pyarrow.parquet.write_table(table, path, compression=kw.get("compression", "snappy"))
        else:
            pyarrow.orc.write_table(table, path, compression="zlib")

    def replace(table, name, array, field):
        i = table.schema.get_field_index(name)
        return table.set_column(i, field, array)

    column = "-"
    if mode == "md5":
        with open(path, "wb") as f:
            f.write(data[:10] + bytes([data[10] ^ 0xFF]) + data[11:])
    elif mode == "truncated":
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    elif mode == "missing-column":
        t = read()
        write(t.drop_columns(["e_tag"]))
        column = "e_tag"
    elif mode == "wrong-type":
        t = read()
        sizes = pa.array([None if v is None else str(v) for v in t["size"].to_pylist()])
        write(replace(t, "size", sizes, pa.field("size", pa.string())))
        column = "size"
    elif mode in ("null-key", "null-time"):
        name = "key" if mode == "null-key" else "last_modified_date"
        t = read()
        values = t[name].to_pylist()
        values[1] = None
        field = t.schema.field(name).with_nullable(True)
        write(replace(t, name, pa.array(values, type=field.type), field))
        column = name
    elif mode == "brotli":
        write(read(), compression="brotli")
        column = "bucket"
    elif mode == "encrypted":
        with open(path, "wb") as f:
            f.write(data[:-4] + b"PARE")
    else:
        sys.exit(f"unknown mode {mode!r}")

    if mode != "md5":
        with open(path, "rb") as f:
            data = f.read()
        entry["size"] = len(data)
        entry["MD5checksum"] = hashlib.md5(data).hexdigest()
        body = json.dumps(manifest, indent=2).encode()
        with open(mpath, "wb") as f:
            f.write(body)
        with open(os.path.join(root, date, "manifest.checksum"), "w") as f:
            f.write(hashlib.md5(body).hexdigest() + "\n")
    print(json.dumps({"file": os.path.basename(path), "column": column}))


if __name__ == "__main__":
    main()

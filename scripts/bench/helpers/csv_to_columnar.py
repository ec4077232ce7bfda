#!/usr/bin/env python3
"""Rewrite a local CSV inventory (one date) as Parquet or ORC, with pyarrow, in AWS's layout.

    csv_to_columnar.py CSV_INVENTORY DATE OUT_DIR parquet|orc

Every data file becomes one columnar file with the same rows in the same order (keys
URL-decoded, snake_case columns, last_modified_date a millisecond UTC timestamp, size null
for delete markers), Parquet with Snappy and pyarrow's default row groups, ORC with zlib;
the manifest keeps the source's fields and gets AWS's fileSchema for the format.
"""
import hashlib
import json
import os
import sys
import urllib.parse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.orc
import pyarrow.parquet

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../harness"))
import fixtures  # noqa: E402


def convert(table, columns):
    arrays, fields = [], []
    for name, col in zip(columns, table.columns):
        if name == "key":
            col = pa.array([urllib.parse.unquote_plus(k) for k in col.to_pylist()], pa.string())
        elif name in ("size",):
            col = pc.cast(pc.if_else(pc.equal(col, ""), None, col), pa.int64())
        elif name.startswith("is_"):
            col = pc.if_else(pc.equal(col, ""), None, pc.equal(col, "true"))
        elif name.endswith("_date"):
            # Arrow's ISO 8601 cast reads the fraction and the Z.
            col = pc.cast(pc.if_else(pc.equal(col, ""), None, col), pa.timestamp("ms", tz="UTC"))
        else:
            col = pc.if_else(pc.equal(col, ""), None, col) if name not in ("bucket", "key") else col
        arrays.append(col)
        fields.append(pa.field(name, col.type, nullable=name not in ("bucket", "key")))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def main():
    src, date, out, fmt = sys.argv[1:5]
    with open(os.path.join(src, date, "manifest.json")) as f:
        manifest = json.load(f)
    names = [n.strip() for n in manifest["fileSchema"].split(",")]
    columns = [fixtures.snake(n) for n in names]
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    os.makedirs(os.path.join(out, date), exist_ok=True)
    files = []
    for entry in manifest["files"]:
        rel = "data/" + entry["key"].rsplit("/data/", 1)[1]
        table = pyarrow.csv.read_csv(
            os.path.join(src, rel),
            read_options=pyarrow.csv.ReadOptions(column_names=columns, block_size=64 << 20),
            convert_options=pyarrow.csv.ConvertOptions(
                column_types={c: pa.string() for c in columns}, strings_can_be_null=False,
                quoted_strings_can_be_null=False))
        table = convert(table, columns)
        name = rel[len("data/"):].replace(".csv.gz", "." + fmt)
        path = os.path.join(out, "data", name)
        if fmt == "parquet":
            pyarrow.parquet.write_table(table, path, compression="snappy")
        else:
            pyarrow.orc.write_table(table, path, compression="zlib")
        with open(path, "rb") as f:
            data = f.read()
        files.append({"key": entry["key"].rsplit("/data/", 1)[0] + "/data/" + name,
                      "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()})
    manifest["fileFormat"] = {"parquet": "Parquet", "orc": "ORC"}[fmt]
    manifest["fileSchema"] = fixtures.columnar_schema(columns, fmt)
    manifest["files"] = files
    body = fixtures.jackson(manifest).encode()
    with open(os.path.join(out, date, "manifest.json"), "wb") as f:
        f.write(body)
    with open(os.path.join(out, date, "manifest.checksum"), "w") as f:
        f.write(hashlib.md5(body).hexdigest() + "\n")


if __name__ == "__main__":
    main()

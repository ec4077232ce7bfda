#!/usr/bin/env python3
"""Parses a Prometheus text-format file with prometheus_client's own parser (the format's
reference implementation in Python) and prints its samples as JSON:

    metrics_json.py FILE  ->  [{"name", "labels": {...}, "value", "type"}, ...]

Exits non-zero, with the parser's message, if the file is not valid exposition text.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    samples = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.append({"name": s.name, "labels": s.labels, "value": s.value,
                            "type": family.type})
    print(json.dumps(samples))


if __name__ == "__main__":
    main()

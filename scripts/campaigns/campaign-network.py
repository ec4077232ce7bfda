#!/usr/bin/env python3
"""Network campaign: sync and fsck --repair through a proxy that breaks ~10% of requests.

    campaign-network.py --bin target/debug/s3invbackup [--rounds 5] [--seed 1] [--rate 0.10]

Starts its own SeaweedFS and generates two buckets with their inventories (written to an
inventory bucket and to a local copy): "varied" (the five-date "sync" scenario: overwrites,
deletes, undeletes, expirations, file <-> directory, multipart objects, null versions, tricky
keys) and "wide" (800 keys over four dates). Each is backed up once directly from the local
inventory copy: the reference.

Then, per round, a fresh fault proxy (seeded: round seed = --seed + round) sits between the
binary and SeaweedFS and breaks --rate of all requests -- inventory reads, HEADs and GETs
alike -- spread evenly over six kinds: connection reset mid-body, clean truncation mid-body,
500 InternalError, 503 SlowDown, one flipped byte at a random offset, 300 ms of latency. For
each bucket:

  1. `sync` of every date from the S3 inventory, through the proxy. After every attempt,
     every data file in the tree must be byte-identical to the reference's file at that path
     (nothing corrupt is ever placed); a run that ends with versions it could not fetch is
     rerun (as the next night's would), at most 3 attempts. Then the tree must equal the
     reference and `fsck --verify-content` must be clean.
  2. The tree is damaged (files deleted, truncated, a byte flipped with the mtime kept, a
     stray added), then `fsck --verify-content --repair` runs through the proxy (it downloads
     the damaged versions again); same checks.

Prints one line per round and bucket, the faults injected by kind, and a summary; exit 1 if
any check failed.
"""
import argparse
import json
import os
import random
import subprocess
import sys

from campaign_common import HARNESS, KINDS, Campaign, applied, data_files, first_differences, proxy_call, rules, snapshot

ATTEMPTS = 3


def damage(root, rng, stem="s3invbackup"):
    """Deletes, truncates and corrupts a few data files, adds a stray; returns what it did."""
    files = sorted(p for p, (size, _, _) in data_files(snapshot(root, stem)).items() if size > 1)
    picked = rng.sample(files, min(len(files), 8))
    done = []
    for i, rel in enumerate(picked):
        path = os.path.join(root, rel)
        st = os.stat(path)
        if i < 3:
            os.remove(path)
            done.append(f"deleted {rel}")
        elif i < 5:
            os.truncate(path, st.st_size // 2)
            done.append(f"truncated {rel}")
        else:
            with open(path, "r+b") as f:
                at = rng.randrange(st.st_size)
                f.seek(at)
                byte = f.read(1)
                f.seek(at)
                f.write(bytes([byte[0] ^ 0x5A]))
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
            done.append(f"flipped byte {at} of {rel}")
    with open(os.path.join(root, "stray-from-campaign"), "wb") as f:
        f.write(b"not from the bucket")
    done.append("stray stray-from-campaign")
    return done


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=0.10)
    a = p.parse_args()
    binary = os.path.abspath(a.bin)
    c = Campaign("network")
    try:
        sources = {}
        for name, args in [("varied", ["--scenario", "sync"]),
                           ("wide", ["--scenario", "random", "--keys", "800", "--days", "4"])]:
            local, url, dates = c.fixture(name, *args)
            reference = c.path(f"{name}-reference")
            r = subprocess.run([binary, "sync", local, reference, "--progress", "none", "--start-date", dates[0],
                                "--on-bad-key", "skip"], env=c.env, capture_output=True, text=True)
            assert r.returncode in (0, 2), r.stderr
            sources[name] = (url, dates, snapshot(reference), applied(reference), r.returncode)

        totals = {kind: 0 for kind, _ in KINDS}
        requests = failures = reruns = 0
        for rnd in range(a.rounds):
            seed = a.seed + rnd
            proxy = c.start([sys.executable, os.path.join(HARNESS, "faultproxy.py"), "--upstream", c.endpoint,
                             "--seed", str(seed), "--watch-pid", str(os.getpid())])
            proxy_call(proxy["endpoint"], "/__proxy/rules", json.dumps(rules(a.rate)).encode())
            env = dict(c.env, AWS_ENDPOINT_URL=proxy["endpoint"])
            rng = random.Random(seed)
            for name, (url, dates, want, want_dates, want_code) in sources.items():
                backup = c.path(f"{name}-round-{rnd}")
                problems = []

                def check_placed(what):
                    # Between dates a path may hold an older version than at the end, but
                    # every file must be the bytes (and mtime) of some version the reference
                    # holds: a corrupt or half-written file matches none.
                    got = data_files(snapshot(backup))
                    bad = [p for p, v in got.items() if v not in held]
                    if bad:
                        problems.append(f"{what}: {len(bad)} file(s) unlike the reference, e.g. {bad[:3]}")

                def check_final(what):
                    got = snapshot(backup)
                    if got != want:
                        problems.append(f"{what}: tree differs: {first_differences(got, want)}")
                    fsck = subprocess.run([binary, "fsck", backup, "--verify-content", "--progress", "none"],
                                          env=c.env, capture_output=True, text=True)
                    if fsck.returncode != 0:
                        problems.append(f"{what}: fsck: {fsck.stdout.strip()[:300]}")

                held = set(data_files(want).values())
                attempts, errors = [], []
                for attempt in range(ATTEMPTS):
                    r = subprocess.run([binary, "sync", url, backup, "--progress", "none", "--start-date", dates[0],
                                        "--on-bad-key", "skip"], env=env, capture_output=True, text=True)
                    attempts.append(r.returncode)
                    if r.returncode not in (0, 2):
                        errors.append(r.stderr.strip().splitlines()[-1][:300])
                    if os.path.exists(backup):
                        check_placed(f"sync attempt {attempt + 1}")
                    if r.returncode == want_code and snapshot(backup) == want:
                        break
                if applied(backup) != want_dates:
                    problems.append("applied dates differ")
                check_final("sync")
                damaged = damage(backup, rng)
                repairs = []
                for attempt in range(ATTEMPTS):
                    r = subprocess.run([binary, "fsck", backup, "--verify-content", "--repair", "--progress", "none"],
                                       env=env, capture_output=True, text=True)
                    repairs.append(r.returncode)
                    check_placed(f"fsck --repair attempt {attempt + 1}")
                    # 0 repaired everything, 2 some versions wait for a later run, 1 problems
                    # remain (a fault broke the repair): all may happen here.
                    if r.returncode not in (0, 1, 2):
                        problems.append(f"fsck --repair exit {r.returncode}: {r.stderr.strip()[-300:]}")
                        break
                    if snapshot(backup) == want:
                        break
                check_final("fsck --repair")
                reruns += len(attempts) - 1 + len(repairs) - 1
                failures += bool(problems)
                print(f"round {rnd + 1}/{a.rounds} (seed {seed}) {name}: sync exits {attempts}, "
                      f"{len(damaged)} defects, fsck --repair exits {repairs}: "
                      f"{'ok' if not problems else 'FAILED: ' + '; '.join(problems)}", flush=True)
                for e in errors:
                    print(f"  sync error: {e}", flush=True)
            stats = proxy_call(proxy["endpoint"], "/__proxy/stats")
            requests += stats["requests"]
            for i, (kind, _) in enumerate(KINDS):
                totals[kind] += stats["hits"].get(str(i), 0)
        injected = sum(totals.values())
        print(f"faults injected: {injected} of {requests} requests ({100 * injected / max(requests, 1):.1f}%): "
              + ", ".join(f"{k} {v}" for k, v in totals.items()))
        print(f"{2 * a.rounds - failures}/{2 * a.rounds} runs: tree identical to the reference after sync and "
              f"after fsck --repair, fsck --verify-content clean, no unverified byte ever placed "
              f"({reruns} extra attempts needed; seed {a.seed}, rate {a.rate})")
        return 1 if failures else 0
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())

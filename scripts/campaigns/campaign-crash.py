#!/usr/bin/env python3
"""Crash campaign: a five-date sync killed at N points, each resumed and checked.

    campaign-crash.py --bin target/debug/s3invbackup [--n 100] [--seed 1]

Starts its own SeaweedFS, generates the "sync" scenario (five dates of every transition),
backs it up once uninterrupted (the reference), then for each of N kill points chosen from a
seed -- after the k-th journal entry (moves, placements, versions JSON, commit) or at a named
failpoint (index-built, planned, catalog-replaced, state-written of the k-th date; plan-batch
inside a streamed plan; compaction-written, compaction-committed inside a catalog compaction;
k up to the count the uninterrupted run reached, from S3INVBACKUP_FAILPOINT_LOG) -- runs the
same sync from an empty directory until it aborts (as kill -9 would), resumes it with a plain
`sync`, and checks: the resumed run succeeds, `fsck --verify-content` is clean, and the tree
(every file's path, size, mtime and MD5; versions JSON by content) and the applied dates equal
the reference. Prints one line per point and a summary; exit 1 if any point failed.
"""
import argparse
import json
import os
import random
import subprocess
import sys

from campaign_common import Campaign, applied, first_differences, snapshot

FAILPOINTS = ["index-built", "planned", "catalog-replaced", "state-written", "plan-batch",
              "compaction-written", "compaction-committed"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    binary = os.path.abspath(a.bin)
    c = Campaign("crash")
    env = c.env
    try:
        inv, _, dates = c.fixture("campaign", "--scenario", "sync")
        args = ["--progress", "none", "--start-date", dates[0], "--on-bad-key", "skip"]

        def sync(backup, extra_env=None):
            return subprocess.run([binary, "sync", inv, backup, *args], env=dict(env, **(extra_env or {})),
                                  capture_output=True, text=True)

        reference = c.path("reference")
        report = c.path("reference.json")
        hits_log = c.path("failpoints.log")
        r = subprocess.run([binary, "sync", inv, reference, *args, "--report", report],
                           env=dict(env, S3INVBACKUP_FAILPOINT_LOG=hits_log), capture_output=True, text=True)
        assert r.returncode in (0, 2), r.stderr
        with open(hits_log) as f:
            names = f.read().split()
        reached = {name: names.count(name) for name in FAILPOINTS}
        missing = [name for name, n in reached.items() if n == 0]
        assert not missing, f"the uninterrupted run never reached {missing}: the campaign would not test them"
        want, want_dates = snapshot(reference), applied(reference)
        with open(report) as f:
            rep = json.load(f)
        total = sum(d["outcome"][k] for d in rep["dates"]
                    for k in ("renamed", "downloaded", "reused_from_staging", "displaced"))
        total += sum(d["plan"]["mkdirs"] + 2 for d in rep["dates"])
        # A phase first (journal entries, or one of the named failpoints), then the point in
        # it: every phase is hit about as often, however many journal entries there are.
        rng = random.Random(a.seed)
        chosen = []
        for _ in range(a.n):
            phase = rng.choice(["journal"] + FAILPOINTS)
            if phase == "journal":
                chosen.append(("S3INVBACKUP_CRASH_AFTER", str(rng.randint(1, total))))
            else:
                chosen.append(("S3INVBACKUP_FAILPOINT", f"{phase}:{rng.randint(1, reached[phase])}"))
        failures = 0
        for i, (var, value) in enumerate(chosen):
            backup = c.path(f"b{i}")
            crashed = sync(backup, {var: value})
            problems = []
            if crashed.returncode >= 0:
                problems.append(f"did not crash (exit {crashed.returncode})")
            resumed = sync(backup)
            if resumed.returncode not in (0, 2):
                problems.append(f"resume failed: {resumed.stderr.strip()[-300:]}")
            fsck = subprocess.run([binary, "fsck", backup, "--verify-content"], env=env, capture_output=True, text=True)
            if fsck.returncode != 0:
                problems.append(f"fsck: {fsck.stdout.strip()[:300]}")
            if not problems:
                got = snapshot(backup)
                if got != want:
                    problems.append(f"tree differs: {first_differences(got, want)}")
                if applied(backup) != want_dates:
                    problems.append("applied dates differ")
            failures += bool(problems)
            print(f"{i + 1:3}/{a.n} {var}={value}: {'ok' if not problems else 'FAILED: ' + '; '.join(problems)}",
                  flush=True)
            subprocess.run(["rm", "-rf", backup])
        print(f"{a.n - failures}/{a.n} kill points: tree identical to the uninterrupted run, fsck --verify-content "
              f"clean, every applied date recorded ({total} journal entries and {sum(reached.values())} "
              f"named failpoint hits to choose from, seed {a.seed})")
        return 1 if failures else 0
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())

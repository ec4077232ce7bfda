#!/usr/bin/env python3
"""Resource campaign: sync on a filesystem that fills up, and with too few file descriptors.

    campaign-resources.py --bin target/debug/s3invbackup [--points 16] [--seed 1]

Needs root (it mounts tmpfs filesystems). Starts its own SeaweedFS, generates the five-date
"sync" scenario (multipart objects included), and backs it up once on the ordinary disk:
the reference. Then:

  Disk full, first backup: for each of --points sizes, spread from almost nothing to a little
  more than the backup needs, the whole five-date sync runs with the backup on a tmpfs of
  that size. Disk full, nightly run: a backup holding the first date, on a roomy tmpfs, with
  a filler file leaving only F bytes free, F from 0 to more than the four other dates need
  (4 KiB steps at first), so that space runs out in every phase of the increment in turn
  (index build, plan, journal, staging downloads, versions JSON, catalog, state).

  Each run must either finish as the reference did (same exit, same versions failed) or stop
  with exit 1 naming "No space left on device" -- never exit 2 with more failures (a full
  disk is not a version that failed) -- and place no file that is not byte-identical to one
  of the reference's. Then space is given back (remount, or the filler removed) and a plain
  `sync` must finish the backup: tree identical to the reference, `fsck --verify-content`
  clean.

  Too many open files: the same sync under RLIMIT_NOFILE limits from 8 to 64, each then
  resumed without the limit; the same checks ("Too many open files" for the message).

Prints one line per point and a summary; exit 1 if any point failed.
"""
import argparse
import json
import os
import random
import resource
import subprocess
import sys

from campaign_common import Campaign, data_files, first_differences, snapshot

NOFILE_LIMITS = [8, 12, 16, 20, 24, 32, 48, 64]


def failed_versions(report):
    with open(report) as f:
        r = json.load(f)
    return {(x["key"], x["version_id"]) for d in r["dates"] if d.get("outcome")
            for x in d["outcome"]["failures"]}


PHASES = [("staging", "download"), ("-versions.json", "versions JSON"), ("catalog", "catalog"),
          ("journal", "journal"), ("indexes", "index build"), ("plan", "plan"), ("state", "state"),
          ("dirty", "plan")]


def phase(stderr):
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    return next((name for word, name in PHASES if word in last), "other")


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def tree_bytes(root):
    total = 0
    for dirpath, _, filenames in os.walk(root):
        total += sum(os.lstat(os.path.join(dirpath, n)).st_size for n in filenames)
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--points", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip-nofile", action="store_true")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("campaign-resources.py needs root: it mounts small tmpfs filesystems")
    binary = os.path.abspath(a.bin)
    c = Campaign("resources")
    mounted = []
    try:
        inv, _, dates = c.fixture("resources", "--scenario", "sync")
        args = ["--progress", "none", "--start-date", dates[0], "--on-bad-key", "skip"]
        reference = c.path("reference")
        report = c.path("report.json")
        r = subprocess.run([binary, "sync", inv, reference, *args, "--report", report], env=c.env,
                           capture_output=True, text=True)
        assert r.returncode in (0, 2), r.stderr
        want, want_code = snapshot(reference), r.returncode
        want_failed = failed_versions(report)
        # A run of an up-to-date backup: exit 0 once the versions lost before they were
        # backed up are "vanished" (said by the run that lost them), 2 if some listed ones
        # are still not held.
        rerun = subprocess.run([binary, "sync", inv, reference, *args], env=c.env,
                               capture_output=True, text=True)
        rerun_code = rerun.returncode
        assert rerun_code in (0, 2), rerun.stderr
        held = set(data_files(want).values())
        need = tree_bytes(reference)

        def run(backup, extra=(), preexec=None):
            if os.path.exists(report):
                os.remove(report)
            return subprocess.run([binary, "sync", inv, backup, *args, "--report", report, *extra], env=c.env,
                                  capture_output=True, text=True, preexec_fn=preexec)

        def check(backup, first, message):
            problems = []
            if first.returncode not in (1, want_code):
                problems.append(f"exit {first.returncode}: {first.stderr.strip()[-300:]}")
            if first.returncode == 2 and failed_versions(report) != want_failed:
                extra = failed_versions(report) - want_failed
                problems.append(f"exit 2 with failures the reference did not have: {sorted(extra)[:3]}")
            if first.returncode == 1 and message not in first.stderr:
                problems.append(f"exit 1 without {message!r}: {first.stderr.strip()[-300:]}")
            if os.path.exists(backup):
                bad = [p for p, v in data_files(snapshot(backup)).items() if v not in held]
                if bad:
                    problems.append(f"placed files unlike any reference file: {bad[:3]}")
            return problems

        def resume_and_compare(backup, problems, first):
            resumed = run(backup)
            # After a finished run: an up-to-date rerun. After a stopped one: the rest of
            # the run, which says the loss (2) if it applies the date where versions
            # vanished, or nothing more (the rerun's code) if the stopped run applied it.
            allowed = (rerun_code,) if first.returncode != 1 else (want_code, rerun_code)
            if resumed.returncode not in allowed:
                problems.append(f"resume exit {resumed.returncode}: {resumed.stderr.strip()[-300:]}")
            got = snapshot(backup)
            if got != want:
                problems.append(f"tree differs: {first_differences(got, want)}")
            fsck = subprocess.run([binary, "fsck", backup, "--verify-content", "--progress", "none"],
                                  env=c.env, capture_output=True, text=True)
            if fsck.returncode != 0:
                problems.append(f"fsck: {fsck.stdout.strip()[:300]}")

        # Sizes from 16 KiB to 1.25x what the backup needs: a fixed spread (every phase),
        # the rest drawn from the seed.
        rng = random.Random(a.seed)
        fixed = [0.002, 0.05, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25]
        fractions = fixed[:a.points] + [rng.uniform(0.002, 1.25) for _ in range(a.points - len(fixed))]
        failures = 0
        outcomes = {"finished": 0, "stopped": 0}
        phases = {}
        for i, f in enumerate(sorted(fractions)):
            size = max(16 << 10, int(need * f)) // 4096 * 4096
            mnt = c.path(f"mnt{i}")
            os.makedirs(mnt)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mnt], check=True)
            mounted.append(mnt)
            backup = os.path.join(mnt, "backup")
            first = run(backup)
            problems = check(backup, first, "No space left on device")
            outcomes["stopped" if first.returncode == 1 else "finished"] += 1
            if first.returncode == 1:
                phases[phase(first.stderr)] = phases.get(phase(first.stderr), 0) + 1
            last = first.stderr.strip().splitlines()[-1][:140] if first.stderr.strip() else ""
            subprocess.run(["mount", "-o", "remount,size=1g", mnt], check=True)
            resume_and_compare(backup, problems, first)
            failures += bool(problems)
            print(f"disk {size >> 10:6} KiB ({f:.3f} of {need >> 10} KiB): exit {first.returncode} "
                  f"[{last}]: {'ok' if not problems else 'FAILED: ' + '; '.join(problems)}", flush=True)
            subprocess.run(["umount", mnt], check=True)
            mounted.remove(mnt)
        points = len(fractions)

        # The nightly run: the first date on a roomy tmpfs, then only F bytes left free.
        mnt = c.path("nightly")
        os.makedirs(mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", mnt], check=True)
        mounted.append(mnt)
        first_date = os.path.join(mnt, "first-date")
        r = run(first_date, extra=["--end-date", dates[0]])
        assert r.returncode in (0, 2), r.stderr
        increment = tree_bytes(reference) - tree_bytes(first_date)
        # Every 4 KiB page at first (index, plan, journal, first downloads), a spread over the
        # increment, then pages around the point where the downloads fit but the run's
        # commit (versions JSON, catalog, state) may not.
        steps = ([k * 4096 for k in range(0, 16)] + [int(increment * f) for f in (0.25, 0.5, 0.75, 1.5, 3)]
                 + [increment + k * 4096 for k in range(-4, 40)])
        for free in steps:
            backup = os.path.join(mnt, "backup")
            subprocess.run(["cp", "-a", first_date, backup], check=True)
            filler = os.path.join(mnt, "filler")
            with open(filler, "wb") as f:
                left = free_bytes(mnt) - free
                while left > 0:
                    chunk = min(left, 1 << 20)
                    f.write(b"\0" * chunk)
                    left -= chunk
            first = run(backup)
            problems = check(backup, first, "No space left on device")
            outcomes["stopped" if first.returncode == 1 else "finished"] += 1
            where = phase(first.stderr) if first.returncode == 1 else "-"
            if first.returncode == 1:
                phases[where] = phases.get(where, 0) + 1
            os.remove(filler)
            resume_and_compare(backup, problems, first)
            failures += bool(problems)
            print(f"nightly run, {free >> 10:5} KiB free (increment {increment >> 10} KiB): exit {first.returncode} "
                  f"in {where}: {'ok' if not problems else 'FAILED: ' + '; '.join(problems)}", flush=True)
            if where == "other":
                print(f"  {first.stderr.strip().splitlines()[-1][:200]}")
            subprocess.run(["rm", "-rf", backup], check=True)
        points += len(steps)
        nofile_failures = 0
        if not a.skip_nofile:
            for limit in NOFILE_LIMITS:
                backup = c.path(f"nofile-{limit}")

                def lower(limit=limit):
                    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

                first = run(backup, preexec=lower)
                problems = check(backup, first, "Too many open files")
                outcomes["stopped" if first.returncode == 1 else "finished"] += 1
                last = first.stderr.strip().splitlines()[-1][:140] if first.stderr.strip() else ""
                resume_and_compare(backup, problems, first)
                nofile_failures += bool(problems)
                print(f"RLIMIT_NOFILE {limit:3}: exit {first.returncode} [{last}]: "
                      f"{'ok' if not problems else 'FAILED: ' + '; '.join(problems)}", flush=True)
        total = points + (0 if a.skip_nofile else len(NOFILE_LIMITS))
        bad = failures + nofile_failures
        print(f"{total - bad}/{total} points ({points} disk sizes, "
              f"{0 if a.skip_nofile else len(NOFILE_LIMITS)} descriptor limits): stopped cleanly (exit 1, "
              f"cause named) or finished, nothing unverified placed, resumed to the reference tree, fsck "
              f"clean; {outcomes['stopped']} stopped, {outcomes['finished']} finished at once (seed {a.seed})")
        print("disk full hit: " + ", ".join(f"{k} {v}" for k, v in sorted(phases.items())))
        return 1 if bad else 0
    finally:
        for mnt in mounted:
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        c.close()


if __name__ == "__main__":
    sys.exit(main())

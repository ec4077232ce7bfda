#!/usr/bin/env python3
"""Power-loss campaign: runs cut by a power loss that loses what was not synced, each resumed
and checked.

    campaign-powerloss.py --bin target/debug/s3invbackup [--n 200] [--seed 1]

The binary must be a `failpoints` build (it announces each syncfs to the filesystem below).
Starts its own SeaweedFS and generates the "sync" scenario (five dates of every transition).
Four phases, each run once uninterrupted on a plain directory (the reference) and once through
the recording filesystem (scripts/harness/powercut.py) to count its changes:

  first       the first backup (the first date, into an empty directory)
  nightly     the second date's sync (catalog compaction turned off)
  compaction  the third date's sync, cut only inside its catalog compaction
  repair      `fsck --repair --verify-content` of the complete backup after files were deleted, truncated and
              overwritten by hand and a directory removed

Then for each of N points (phase, cut, crash mode, all from the seed): the phase runs through
the filesystem until the power goes at the chosen change; the state a power loss may leave is
built from the record (unsynced changes dropped, kept at random, kept as a prefix, or kept
with zeroed bytes: see powercut.py); and on that state the phase is resumed (the same command;
for repair, `fsck --repair --verify-content` again and then `sync`). Checked: the resume succeeds, `fsck
--verify-content` is clean, and the tree (every file's path, size, mtime and MD5; versions
JSON by content) and the applied dates equal the reference. Prints one line per point and a
summary; exit 1 if any point failed.
"""
import argparse
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import time

from campaign_common import HARNESS, Campaign, applied, first_differences, snapshot

POWERCUT = os.path.join(HARNESS, "powercut.py")
MODES = ["drop", "random", "prefix", "torn"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--phases", default="first,nightly,compaction,repair")
    p.add_argument("--modes", default=",".join(MODES))
    a = p.parse_args()
    binary = os.path.abspath(a.bin)
    c = Campaign("powerloss")
    env = c.env
    mnt = c.path("mnt")
    os.mkdir(mnt)
    try:
        inv, _, dates = c.fixture("campaign", "--scenario", "sync")
        common = ["--progress", "none", "--on-bad-key", "skip"]

        boot = {"S3INVBACKUP_BOOT_ID": "first"}

        def run(argv, extra_env=None, timeout=300):
            return subprocess.run([binary, *argv], env=dict(env, **boot, **(extra_env or {})),
                                  capture_output=True, text=True, timeout=timeout)

        def sync_to(backup, date, extra_env=None):
            return run(["sync", inv, backup, *common, "--start-date", dates[0], "--end-date", date], extra_env)

        no_compaction = {"S3INVBACKUP_NO_COMPACTION": "1"}

        def damage(backup):
            """What an operator's slip does: files gone, truncated, rewritten; a directory gone."""
            files = sorted(p for p in snapshot(backup) if not p.endswith("-versions.json"))
            rng = random.Random(7)
            victims = rng.sample(files, min(6, len(files)))
            for path in victims[:2]:
                os.remove(os.path.join(backup, path))
            for path in victims[2:4]:
                with open(os.path.join(backup, path), "r+b") as f:
                    f.truncate(max(0, os.path.getsize(f.name) // 2))
            for path in victims[4:]:
                full = os.path.join(backup, path)
                st = os.stat(full)
                with open(full, "r+b") as f:
                    f.write(b"X")
                os.utime(full, ns=(st.st_atime_ns, st.st_mtime_ns))
            dirs = sorted(d for d in (os.path.dirname(p) for p in files) if d)
            if dirs:
                shutil.rmtree(os.path.join(backup, dirs[0]))

        # Each phase: the state it starts from, the command, how to resume, the end state.
        phases = {}
        empty = c.path("start-first")
        os.mkdir(empty)
        phases["first"] = dict(start=empty, cmd=lambda b: sync_to(b, dates[0]),
                               resume=lambda b: [sync_to(b, dates[0])])
        after0 = c.path("start-nightly")
        r = sync_to(after0, dates[0])
        assert r.returncode in (0, 2), r.stderr
        phases["nightly"] = dict(start=after0, cmd=lambda b: sync_to(b, dates[1], no_compaction),
                                 resume=lambda b: [sync_to(b, dates[1], no_compaction)])
        after1 = c.path("start-compaction")
        r = sync_to(after1, dates[0])
        assert r.returncode in (0, 2), r.stderr
        r = sync_to(after1, dates[1], no_compaction)
        assert r.returncode in (0, 2), r.stderr
        phases["compaction"] = dict(start=after1, cmd=lambda b: sync_to(b, dates[2]),
                                    resume=lambda b: [sync_to(b, dates[2])])
        damaged = c.path("start-repair")
        r = sync_to(damaged, dates[-1])
        assert r.returncode in (0, 2), r.stderr
        damage(damaged)
        phases["repair"] = dict(start=damaged, cmd=lambda b: run(["fsck", b, "--repair", "--verify-content"]),
                                resume=lambda b: [run(["fsck", b, "--repair", "--verify-content"]),
                                                  sync_to(b, dates[-1])])
        chosen_phases = a.phases.split(",")

        def mounted(backing, log, cut):
            """Starts the recording filesystem over `backing`; returns its process."""
            for leftover in (log, log + ".cut"):
                if os.path.exists(leftover):
                    os.remove(leftover)
            proc = subprocess.Popen([sys.executable, POWERCUT, "mount", backing, mnt, "--log", log,
                                     "--cut", str(cut)], stderr=subprocess.PIPE, text=True)
            deadline = time.time() + 20
            while not os.path.ismount(mnt):
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the recording filesystem did not mount: {proc.stderr.read()}")
                time.sleep(0.02)
            return proc

        def unmount(proc):
            if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mnt], capture_output=True)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        # References: each phase's end state, on a plain directory and (the same, or the
        # recording filesystem is wrong) through the filesystem, whose record gives the count.
        for name, ph in phases.items():
            plain = c.path(f"ref-{name}")
            shutil.copytree(ph["start"], plain, symlinks=True)
            r = ph["cmd"](plain)
            if name != "repair":
                assert r.returncode in (0, 2), f"{name}: {r.stderr}"
            else:
                r = sync_to(plain, dates[-1])
                assert r.returncode in (0, 2), f"{name}: {r.stderr}"
            ph["want"], ph["dates"] = snapshot(plain), applied(plain)
            backing, log = c.path(f"count-{name}"), c.path(f"count-{name}.log")
            shutil.copytree(ph["start"], backing, symlinks=True)
            fs = mounted(backing, log, 0)
            r = ph["cmd"](mnt)
            unmount(fs)
            assert r.returncode in (0, 2), f"{name} through the recording filesystem: {r.stderr}"
            if name == "repair":
                r = sync_to(backing, dates[-1])
            got = snapshot(backing)
            assert got == ph["want"], f"{name}: the recording filesystem changed the result: " \
                                      f"{first_differences(got, ph['want'])}"
            if os.environ.get("KEEP_FAILED"):
                shutil.copy(log, f"/tmp/powerloss-count-{name}.log")
            with open(log, "rb") as f:
                changes = pickle.load(f)["changes"]
            window = (1, len(changes))
            if name == "compaction":
                starts = [n for n, ch in enumerate(changes)
                          if ch[1] == "create" and ch[3].startswith((".base", "base", ".delta-compact"))]
                assert starts, "the compaction phase did not compact: the campaign would not test it"
                window = (starts[0] + 1, len(changes))
            ph["window"] = window
            ph["syncs"] = sum(ch[1] in ("fsync", "fsyncdir", "syncfs") for ch in changes)
            print(f"{name}: {len(changes)} changes ({ph['syncs']} syncs), cut points {window[0]}..{window[1]}",
                  flush=True)

        rng = random.Random(a.seed)
        points = [(rng.choice(chosen_phases), rng.random(), rng.choice(a.modes.split(",")), rng.randrange(1 << 30))
                  for _ in range(a.n)]
        failures, lost_total, cut_hit = 0, 0, 0
        for i, (name, where, mode, seed) in enumerate(points):
            ph = phases[name]
            lo, hi = ph["window"]
            cut = lo + int(where * (hi - lo + 1))
            backing, log, crashed = c.path("backing"), c.path("run.log"), c.path("crashed")
            for d in (backing, crashed):
                shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(ph["start"], backing, symlinks=True)
            boot["S3INVBACKUP_BOOT_ID"] = "first"
            fs = mounted(backing, log, cut)
            problems = []
            try:
                r = ph["cmd"](mnt)
                first_rc = r.returncode
            except subprocess.TimeoutExpired:
                first_rc = "timeout"
                problems.append("the cut run hung")
            was_cut = os.path.exists(log + ".cut")
            cut_hit += was_cut
            unmount(fs)
            # The machine comes back: a new boot (the resumed attempt knows the cut one's
            # unsynced bytes may be gone).
            boot["S3INVBACKUP_BOOT_ID"] = "after-the-cut"
            out = subprocess.run([sys.executable, POWERCUT, "crash", log, crashed, "--seed", str(seed),
                                  "--mode", mode], capture_output=True, text=True)
            if out.returncode != 0:
                problems.append(f"crash state: {out.stderr.strip()[-300:]}")
                counts = {}
            else:
                counts = json.loads(out.stdout)
                lost_total += counts["lost"]
                for step in ph["resume"](crashed):
                    if step.returncode not in (0, 2):
                        problems.append(f"resume ({' '.join(step.args[1:3])}) exit {step.returncode}: "
                                        f"{step.stderr.strip()[-400:]}")
                        break
                fsck = run(["fsck", crashed, "--verify-content"])
                if fsck.returncode != 0:
                    problems.append(f"fsck: {fsck.stdout.strip()[:400]} {fsck.stderr.strip()[-200:]}")
                if not problems:
                    got = snapshot(crashed)
                    if got != ph["want"]:
                        problems.append(f"tree differs: {first_differences(got, ph['want'])}")
                    if applied(crashed) != ph["dates"]:
                        problems.append(f"applied dates differ: {applied(crashed)}")
            failures += bool(problems)
            print(f"{i + 1:3}/{a.n} {name} cut {cut}{'' if was_cut else ' (run ended first)'} {mode} "
                  f"(exit {first_rc}; {counts.get('unsynced', '?')} unsynced, {counts.get('lost', '?')} lost): "
                  f"{'ok' if not problems else 'FAILED: ' + '; '.join(problems)}", flush=True)
            if problems and os.environ.get("KEEP_FAILED"):
                kept = f"/tmp/powerloss-failed-{i}"
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(crashed, kept, symlinks=True)
                shutil.copy(log, kept + ".log")
                print(f"    kept in {kept}", flush=True)
        print(f"{a.n - failures}/{a.n} power cuts ({cut_hit} inside the run, {lost_total} unsynced changes "
              f"lost in all): resumed, fsck --verify-content clean, tree identical to the uninterrupted run "
              f"(phases {a.phases}, seed {a.seed})")
        return 1 if failures else 0
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        c.close()


if __name__ == "__main__":
    sys.exit(main())

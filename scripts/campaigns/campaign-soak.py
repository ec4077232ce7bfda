#!/usr/bin/env python3
"""The long run: a bucket history of many nights, each night's backup hit by network faults,
a kill and a full disk, and checked.

    campaign-soak.py --bin target/debug/s3invbackup [--nights 30] [--keys 64] [--seed 1]

Needs root (the backup lives on a tmpfs, which a filler file fills). Starts its own SeaweedFS
and generates the "soak" scenario date by date (scripts/harness/fixtures.py --step
--real-dates: each inventory dated the minute after its writes, so a night takes a minute): on every
date a quarter of the keys get new versions, delete markers, undeletes or expirations, one of
four keys flips between file and directory, and now and then a null version is overwritten
(versioning suspended) and a multipart object gets a new version. After each date, while the
bucket is in that state, that night's backup runs through the fault proxy (the network
campaign's six kinds of fault on --rate of all requests):

  1. a sync killed at a random journal entry (abort, as kill -9: S3INVBACKUP_CRASH_AFTER);
  2. a sync with the disk all but full (a filler leaves 0 to 1 MiB free), then the filler gone;
  3. syncs until one finishes (exit 0; exit 2, versions the faults kept from it, is rerun as
     the next night would);
  4. `fsck` (every fifth night `fsck --verify-content`), which must be clean.

At the end: every version any inventory listed is held, byte-identical to what was written
(MD5 of the body written), or reported with its reason (`locate --json`: vanished before it
could be backed up); `restore --at` every date's moment gives exactly that date's bucket
(its latest versions, as the model recorded them); and no version was downloaded whole and
unharmed by the proxy in two attempts that both ended normally (nothing verified once is
downloaded again; downloads repeated after a kill or a full disk are counted apart). Prints
one line per night and the figures (versions, faults injected, kills, disk-fulls, restarts,
bytes downloaded and refetched); exit 1 if any check failed.
"""
import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time

from campaign_common import HARNESS, KINDS, Campaign, data_files, proxy_call, rules, snapshot


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--nights", type=int, default=30)
    p.add_argument("--keys", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=0.05)
    a = p.parse_args()
    binary = os.path.abspath(a.bin)
    rng = random.Random(a.seed)
    c = Campaign("soak")
    disk = c.path("disk")
    os.mkdir(disk)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", disk], check=True)
    try:
        proxy = c.start([sys.executable, os.path.join(HARNESS, "faultproxy.py"), "--upstream", c.endpoint,
                         "--seed", str(a.seed), "--watch-pid", str(os.getpid())])
        proxy_call(proxy["endpoint"], "/__proxy/rules", json.dumps(rules(a.rate)).encode())
        env = dict(c.env, AWS_ENDPOINT_URL=proxy["endpoint"])
        inv, model_path = c.path("inventory"), c.path("model.json")
        gen = subprocess.Popen([sys.executable, os.path.join(HARNESS, "fixtures.py"), "--endpoint", c.endpoint,
                                "--bucket", "soak", "--scenario", "soak", "--keys", str(a.keys), "--days",
                                str(a.nights), "--local-dir", inv, "--step", "--real-dates", "--seed",
                                str(a.seed), "--model", model_path],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        backup = os.path.join(disk, "backup")
        filler = os.path.join(disk, "filler")
        ends, failures = {}, []
        figures = dict(kills=0, disk_fulls=0, restarts=0, attempts=0, reruns_for_faults=0)
        # Whole, unharmed GETs per object: those of attempts that ended normally, and the rest.
        normal_gets, other_gets = {}, {}
        first = None

        def gets():
            st = proxy_call(proxy["endpoint"], "/__proxy/stats")
            return st["clean"], st["faulted"]

        def sync(date, extra_env=None):
            before, faulted_before = gets()
            args = [binary, "sync", inv, backup, "--progress", "none", "--on-bad-key", "skip",
                    "--start-date", first, "--end-date", date]
            r = subprocess.run(args, env=dict(env, **(extra_env or {})), capture_output=True, text=True,
                               timeout=600)
            figures["attempts"] += 1
            after, faulted_after = gets()
            normal = r.returncode in (0, 2) and "No space left" not in r.stderr
            for k, n in after.items():
                d = n - before.get(k, 0)
                if d:
                    # (whole GETs, faulted GETs) of the object in this attempt
                    url = k.split(" ")[0]
                    f = faulted_after.get(url, 0) - faulted_before.get(url, 0)
                    into = normal_gets if normal else other_gets
                    into.setdefault(k, []).append((d, f))
            return r

        for night in range(1, a.nights + 1):
            line = gen.stdout.readline()
            if not line:
                failures.append(f"the generator stopped before night {night}")
                break
            date = json.loads(line)["date"]
            first = first or date
            # The date's moment (--real-dates: after its writes, before the next date's).
            ends[date] = f"{date[:13]}:{date[14:16]}:00Z"
            notes = []
            r = sync(date, {"S3INVBACKUP_CRASH_AFTER": str(rng.randint(1, 12))})
            if r.returncode is not None and r.returncode < 0:
                figures["kills"] += 1
                notes.append("killed")
            st = os.statvfs(disk)
            free = st.f_bavail * st.f_frsize
            leave = rng.choice([0, 1024, 4096, 16384, 65536, 1 << 20])
            with open(filler, "wb") as f:
                try:
                    f.truncate(0)
                    left = max(0, free - leave)
                    while left > 0:
                        n = min(left, 1 << 20)
                        f.write(b"\0" * n)
                        left -= n
                    f.flush()
                except OSError:
                    pass
            r = sync(date)
            os.remove(filler)
            figures["restarts"] += 1
            if "No space left" in r.stderr:
                figures["disk_fulls"] += 1
                notes.append(f"disk full ({leave} B free)")
            elif r.returncode not in (0, 2):
                failures.append(f"night {night}: sync on a nearly full disk failed otherwise: {r.stderr.strip()[-300:]}")
            for attempt in range(8):
                if attempt == 0 and r.returncode == 0:
                    break
                figures["restarts"] += 1
                r = sync(date)
                if r.returncode == 0:
                    break
                if r.returncode == 2:
                    figures["reruns_for_faults"] += 1
                    continue
                failures.append(f"night {night}: sync exit {r.returncode}: {r.stderr.strip()[-300:]}")
                break
            if r.returncode != 0:
                failures.append(f"night {night}: no sync finished (last exit {r.returncode})")
            check = ["fsck", backup] + (["--verify-content"] if night % 5 == 0 else [])
            f = subprocess.run([binary, *check], env=env, capture_output=True, text=True)
            if f.returncode != 0:
                failures.append(f"night {night}: {' '.join(check[:1] + check[2:])}: {f.stdout.strip()[:300]}")
            print(f"night {night:2}/{a.nights} {date}: {', '.join(notes) or 'no kill hit'}; sync finished after "
                  f"{figures['attempts']} attempts in all; fsck {'clean' if f.returncode == 0 else 'FAILED'}",
                  flush=True)
            gen.stdin.write("\n")
            gen.stdin.flush()
        gen.wait(timeout=60)
        with open(model_path) as f:
            model = json.load(f)

        # Every version ever listed: held with the bytes written, or reported with its reason.
        listed = {}
        for rows in model.values():
            for r in rows:
                if not r["is_delete_marker"]:
                    listed[(r["key"], r["version_id"], r["etag"])] = r["body_md5"]
        held = reported = held_bytes = 0
        by_key = {}
        for key, vid, etag in listed:
            by_key.setdefault(key, []).append((vid, etag))
        for key, versions in sorted(by_key.items()):
            out = subprocess.run([binary, "locate", backup, key, "--json"], env=env, capture_output=True, text=True)
            found = {}
            for line in out.stdout.splitlines():
                v = json.loads(line)
                found[(v.get("version_id"), v.get("etag"))] = v
            for vid, etag in versions:
                v = found.get((vid, etag))
                if v is None:
                    failures.append(f"{key} {vid}: listed, not in the catalog")
                    continue
                path = v.get("path")
                if path:
                    path = os.path.join(backup, path)
                    held_bytes += os.path.getsize(path)
                    with open(path, "rb") as fh:
                        if hashlib.md5(fh.read()).hexdigest() != listed[(key, vid, etag)]:
                            failures.append(f"{key} {vid}: held, but not the bytes written")
                    held += 1
                elif v.get("local", "").startswith(("vanished", "gone")):
                    reported += 1
                else:
                    failures.append(f"{key} {vid}: not held ({v.get('local')})")

        # restore --at the end of every date: that date's bucket.
        for date, rows in sorted(model.items()):
            want = {r["key"]: r["body_md5"] for r in rows if r["is_latest"] and not r["is_delete_marker"]}
            dest = c.path(f"restore-{date}")
            r = subprocess.run([binary, "restore", "--at", ends[date], "--progress", "none", backup, dest],
                               env=env, capture_output=True, text=True)
            got = {p: md5 for p, (_, _, md5) in data_files(snapshot(dest)).items()} if r.returncode == 0 else {}
            if r.returncode != 0:
                failures.append(f"restore --at {ends[date]}: exit {r.returncode}: {r.stderr.strip()[-200:]}")
            elif got != want:
                extra = sorted(set(got.items()) - set(want.items()))[:3]
                lacking = sorted(set(want.items()) - set(got.items()))[:3]
                failures.append(f"restore --at {ends[date]} ({date}) differs from that date's bucket: "
                                f"restored and not in the bucket {extra}, in the bucket and not restored {lacking}")
                for key, _ in (extra + lacking)[:2]:
                    out = subprocess.run([binary, "locate", backup, key], env=env, capture_output=True, text=True)
                    print(f"    locate {key}:\n{out.stdout}    model: "
                          f"{[(d, r['version_id'], r['is_latest'], r['last_modified']) for d, rr in sorted(model.items()) for r in rr if r['key'] == key]}")
            subprocess.run(["rm", "-rf", dest])

        # An object fetched whole in a normal attempt with no fault on it was verified there:
        # no later attempt may fetch it again.
        twice = {}
        for k, per_attempt in normal_gets.items():
            verified = [i for i, (d, f) in enumerate(per_attempt) if f == 0]
            if verified and len(per_attempt) > verified[0] + 1:
                twice[k] = per_attempt
        for k in sorted(twice)[:5]:
            failures.append(f"downloaded whole in more than one normal attempt: {k} {twice[k]}")
        repeated_after_interruption = sum(1 for k in other_gets if k in normal_gets)
        stats = proxy_call(proxy["endpoint"], "/__proxy/stats")
        faults = {name: stats["hits"].get(str(i), 0) for i, (name, _) in enumerate(KINDS)}
        all_gets = sum(d for n in list(normal_gets.values()) + list(other_gets.values()) for d, _ in n)
        print(f"versions listed {len(listed)} ({held} held, {reported} reported vanished); "
              f"requests {stats['requests']}, faults injected {sum(faults.values())} ({faults}); "
              f"attempts {figures['attempts']}: kills {figures['kills']}, disk full {figures['disk_fulls']}, "
              f"restarts {figures['restarts']}, reruns for faults {figures['reruns_for_faults']}; "
              f"whole GETs {all_gets}, of versions fetched again after an interrupted attempt "
              f"{repeated_after_interruption}; body bytes sent {stats['bytes']} for {held_bytes} held: "
              f"{stats['bytes'] - held_bytes} refetched")
        for f in failures:
            print("FAILED:", f)
        print(f"{a.nights} nights: {'ok' if not failures else f'{len(failures)} failure(s)'} (seed {a.seed})")
        return 1 if failures else 0
    finally:
        subprocess.run(["umount", "-l", disk], capture_output=True)
        c.close()


if __name__ == "__main__":
    sys.exit(main())

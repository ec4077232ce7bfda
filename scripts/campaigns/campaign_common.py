"""What the reliability campaigns (scripts/campaign-*.py) share: a throw-away SeaweedFS, the
fixture bucket, the environment the binary runs in, and a snapshot of a backup tree."""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
# The test harness (server, fixtures, fault proxy) lives beside the campaigns.
HARNESS = os.path.join(os.path.dirname(HERE), "harness")
KEY, SECRET = "testkey", "testsecret"


class Campaign:
    """A work directory and a SeaweedFS server, both removed by close()."""

    def __init__(self, name):
        self.work = tempfile.mkdtemp(prefix=f"campaign-{name}-")
        self.server = json.loads(subprocess.run(
            [sys.executable, os.path.join(HARNESS, "s3server.py"), "start",
             "--dir", os.path.join(self.work, "seaweedfs"), "--watch-pid", str(os.getpid()),
             "--access-key", KEY, "--secret-key", SECRET],
            check=True, capture_output=True, text=True).stdout)
        self.endpoint = self.server["endpoint"]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET,
                   AWS_ENDPOINT_URL=self.endpoint, HOME="/nonexistent")
        for var in ("AWS_PROFILE", "S3INVBACKUP_CRASH_AFTER", "S3INVBACKUP_FAILPOINT"):
            env.pop(var, None)
        self.env = env
        self.children = []

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def fixture(self, bucket, *args):
        """Generates a bucket and its inventory (local copy under work/<bucket>-inventory and
        in the bucket "inventory" under <bucket>/); returns (local dir, s3 url, dates)."""
        local = self.path(f"{bucket}-inventory")
        prefix = f"{bucket}/all-versions"
        subprocess.run([sys.executable, os.path.join(HARNESS, "fixtures.py"), "--endpoint", self.endpoint,
                        "--bucket", bucket, "--local-dir", local, "--inventory-bucket", "inventory",
                        "--inventory-prefix", prefix, *args],
                       check=True, capture_output=True)
        dates = sorted(d for d in os.listdir(local) if d[0].isdigit())
        return local, f"s3://inventory/{prefix}/", dates

    def start(self, argv):
        """Starts a helper (the fault proxy) that prints one JSON line; returns that line."""
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.children.append(proc)
        return json.loads(proc.stdout.readline())

    def close(self):
        for proc in self.children:
            proc.kill()
            proc.wait()
        subprocess.run([sys.executable, os.path.join(HARNESS, "s3server.py"), "stop",
                        "--pid", str(self.server["pid"])], capture_output=True)
        subprocess.run(["rm", "-rf", self.work])


def snapshot(root, stem="s3invbackup"):
    """Every file of a backup tree but its state directory: path -> (size, mtime ms, MD5);
    versions JSON by content only (its mtime is the run's)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.relpath(dirpath, root) == ".":
            dirnames[:] = [d for d in dirnames if d != f".{stem}"]
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.stat(path)
            with open(path, "rb") as f:
                md5 = hashlib.md5(f.read()).hexdigest()
            mtime = 0 if name.endswith("-versions.json") else st.st_mtime_ns // 1_000_000
            out[rel] = (st.st_size, mtime, md5)
    return out


def data_files(snap):
    """A snapshot without the versions JSON (which lists only what is held)."""
    return {p: v for p, v in snap.items() if not p.endswith("-versions.json")}


def first_differences(got, want, n=4):
    return sorted(set(got.items()) ^ set(want.items()))[:n]


def applied(root, stem="s3invbackup"):
    with open(os.path.join(root, f".{stem}", "state.json")) as f:
        return [a["date"] for a in json.load(f)["applied"]]


# The network campaign's faults (scripts/harness/faultproxy.py rules), by kind.
KINDS = [
    ("reset", {"fault": "reset", "after": "random"}),
    ("truncate", {"fault": "truncate", "after": "random"}),
    ("500", {"fault": "status", "status": 500, "code": "InternalError"}),
    ("503 SlowDown", {"fault": "status", "status": 503, "code": "SlowDown"}),
    ("flipped byte", {"fault": "flip", "after": "random"}),
    ("latency 300 ms", {"fault": "latency", "delay_ms": 300}),
]


def rules(rate):
    # The first rule that fires wins, so each kind gets p such that 1 - (1 - p)^6 = rate.
    p = 1 - (1 - rate) ** (1 / len(KINDS))
    return [dict(rule, probability=p) for _, rule in KINDS]


def proxy_call(endpoint, path, body=None):
    req = urllib.request.Request(endpoint + path, data=body, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")

#!/usr/bin/env python3
"""An S3 front that answers as AWS does, on AWS's real host names, for tests.

    aws_s3.py start --dir DIR --world WORLD.json
        Starts, in a private network + mount namespace (unshare -mn: only loopback exists,
        and /etc/hosts is our own), a moto server as the storage behind, and this front on
        127.0.0.1:443 with TLS from a test CA made here (DIR/ca.pem). Prints one JSON line
        {"pid", "ca", "dir", "moto"} once it answers. Run commands inside with
        `nsenter -t PID -m -n -- CMD` (tests do; AWS_CA_BUNDLE=DIR/ca.pem).
    aws_s3.py serve ...      (what `start` runs inside the namespace)

What the front does, per AWS's documentation (S3 API reference: Error responses, Signing
requests, Virtual hosting, Requester Pays, checksums):
- routes virtual-hosted (`b.s3.<region>.amazonaws.com`, `b.s3.amazonaws.com`) and path-style
  (`s3.<region>.amazonaws.com/b`) requests, dualstack and FIPS host names included;
- a request to another region's endpoint: 301 PermanentRedirect with `x-amz-bucket-region`
  (no Location); a right endpoint signed for the wrong region: 400
  AuthorizationHeaderMalformed naming the region; an unsigned HEAD of a bucket answers with
  `x-amz-bucket-region` whatever its status;
- verifies SigV4 in headers itself (an implementation independent of the tool's):
  InvalidAccessKeyId, SignatureDoesNotMatch, RequestTimeTooSkewed (its clock can be set off),
  InvalidToken / ExpiredToken for session tokens (`credential_process` credentials from
  aws_credential_process.py), AccessDenied for anonymous requests to private buckets and for
  requester-pays buckets without `x-amz-request-payer`;
- faults from the world file, re-read when it changes: a burst of 503 SlowDown (with
  Retry-After), SSE-KMS headers on a prefix;
- forwards everything else to moto (versions, ranges, checksums, storage classes and
  InvalidObjectState are moto's).

WORLD.json: {"buckets": {"name": {"region": "us-east-2", "public": true, "requester_pays":
false, "kms_prefix": "secret/"}}, "keys": {"AKID": "secret"}, "clock_skew_s": 0,
"slowdown": 0, "retry_after": null, "expired_below": 0}
"""
import argparse
import datetime as dt
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

REGIONS = ["us-east-1", "us-east-2", "us-west-2", "eu-west-1"]
UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"


def quote(s, safe=""):
    return urllib.parse.quote(s, safe=UNRESERVED + safe)


# ---------------------------------------------------------------- set-up (outside)

def make_ca(d, buckets):
    """A CA and a server certificate for every AWS S3 host name the tests use."""
    names = {"s3.amazonaws.com", "*.s3.amazonaws.com"}
    for r in REGIONS:
        for host in (f"s3.{r}.amazonaws.com", f"s3.dualstack.{r}.amazonaws.com",
                     f"s3-fips.{r}.amazonaws.com", f"s3-fips.dualstack.{r}.amazonaws.com"):
            names |= {host, "*." + host}
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-subj", "/CN=s3invbackup test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{d}/server.key",
        "-out", f"{d}/server.csr", "-subj", "/CN=s3.amazonaws.com")
    with open(f"{d}/san.ext", "w") as f:
        f.write("subjectAltName=" + ",".join(f"DNS:{n}" for n in sorted(names)) + "\n")
    run("openssl", "x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.pem",
        "-CAkey", f"{d}/ca.key", "-CAcreateserial", "-days", "2", "-out", f"{d}/server.pem",
        "-extfile", f"{d}/san.ext")
    hosts = {"s3.amazonaws.com"}
    for b in buckets:
        hosts.add(f"{b}.s3.amazonaws.com")
        for r in REGIONS:
            for host in (f"s3.{r}.amazonaws.com", f"s3.dualstack.{r}.amazonaws.com",
                         f"s3-fips.{r}.amazonaws.com", f"s3-fips.dualstack.{r}.amazonaws.com"):
                hosts |= {host, f"{b}.{host}"}
    with open(f"{d}/hosts", "w") as f:
        f.write("127.0.0.1 localhost\n")
        for h in sorted(hosts):
            f.write(f"127.0.0.1 {h}\n")


def start(args):
    os.makedirs(args.dir, exist_ok=True)
    world = json.load(open(args.world))
    make_ca(args.dir, world["buckets"])
    ready = os.path.join(args.dir, "ready.json")
    if os.path.exists(ready):
        os.remove(ready)
    log = open(os.path.join(args.dir, "front.log"), "ab")
    proc = subprocess.Popen(
        ["unshare", "--mount", "--net", "--fork", "--kill-child",
         sys.executable, os.path.abspath(__file__), "serve", "--dir", args.dir,
         "--world", os.path.abspath(args.world)]
        + (["--watch-pid", str(args.watch_pid)] if args.watch_pid else []),
        stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.exists(ready):
            info = json.load(open(ready))
            info["unshare_pid"] = proc.pid
            print(json.dumps(info))
            return
        if proc.poll() is not None:
            sys.exit(f"aws_s3.py serve exited {proc.returncode}; see {args.dir}/front.log")
        time.sleep(0.1)
    proc.kill()
    sys.exit("aws_s3.py serve did not come up in 60 s")


# ---------------------------------------------------------------- inside the namespace

class World:
    """The world file, re-read when it changes, and the front's counters."""

    def __init__(self, path):
        self.path, self.mtime, self.data = path, None, {}
        self.lock = threading.Lock()
        self.slowdown_left = 0
        self.requests = []  # (method, host, path+query, status) for the tests to read

    def get(self):
        with self.lock:
            m = os.stat(self.path).st_mtime_ns
            if m != self.mtime:
                self.mtime = m
                self.data = json.load(open(self.path))
                self.slowdown_left = self.data.get("slowdown", 0)
            return self.data

    def take_slowdown(self):
        with self.lock:
            if self.slowdown_left > 0:
                self.slowdown_left -= 1
                return True
            return False


def route(host, path):
    """(bucket, raw key as sent, endpoint region) from the Host and path, as S3 routes them.
    The endpoint region is None for the global virtual-hosted name (b.s3.amazonaws.com),
    which DNS sends to the bucket's own region."""
    host = host.split(":")[0]
    m = re.fullmatch(r"(?:(?P<b>[a-z0-9.-]+)\.)?s3(?:-fips)?(?:\.dualstack)?(?:\.(?P<r>[a-z0-9-]+))?\.amazonaws\.com", host)
    if not m:
        return None, None, None
    raw = path.split("?", 1)[0]
    if m.group("b"):
        return m.group("b"), raw[1:], m.group("r")
    parts = raw[1:].split("/", 1)
    return (urllib.parse.unquote(parts[0]) or None, parts[1] if len(parts) > 1 else "",
            m.group("r") or "us-east-1")


def canonical_query(query):
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(pairs))


def signing_key(secret, date, region):
    k = ("AWS4" + secret).encode()
    for part in (date, region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


class Front(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    world = None
    moto = None

    def log_message(self, fmt, *a):
        sys.stderr.write("front: " + fmt % a + "\n")

    def server_now(self):
        return time.time() + self.world.get().get("clock_skew_s", 0)

    def date_time_string(self, timestamp=None):
        # send_response's Date header: the front's own (possibly skewed) clock.
        return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(self.server_now()))

    def reply(self, status, code=None, message="", headers=None, extra=""):
        headers = dict(headers or {})
        body = b""
        if code and self.command != "HEAD":
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    f"<Message>{message}</Message>{extra}<RequestId>TEST</RequestId></Error>").encode()
            headers["Content-Type"] = "application/xml"
        self.send_response(status)
        headers["Content-Length"] = str(len(body))
        headers["x-amz-request-id"] = "TEST"
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(body)
        if code:
            sys.stderr.write(f"front: {self.command} {self.headers.get('Host')}{self.path}: {status} {code}\n")
        self.note(status)

    def note(self, status):
        with self.world.lock:
            self.world.requests.append([self.command, self.headers.get("Host", ""), self.path, status])
        with open(os.path.join(self.server.dir, "requests.jsonl"), "a") as f:
            f.write(json.dumps([self.command, self.headers.get("Host", ""), self.path, status]) + "\n")

    def do_GET(self):
        self.handle_s3()

    def do_HEAD(self):
        self.handle_s3()

    def do_PUT(self):
        self.handle_s3()

    def do_POST(self):
        self.handle_s3()

    def do_DELETE(self):
        self.handle_s3()

    def authenticate(self, world, bucket_region):
        """None when the request may proceed (signer: access key or None), else an error
        reply already sent."""
        auth = self.headers.get("Authorization")
        if not auth:
            return ("anonymous", None)
        m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/s3/aws4_request, ?"
                         r"SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})", auth)
        if not m:
            self.reply(400, "AuthorizationHeaderMalformed", "The authorization header is malformed")
            return None
        akid, date, region, signed, signature = m.groups()
        if region != bucket_region:
            self.reply(400, "AuthorizationHeaderMalformed",
                       f"The authorization header is malformed; the region '{region}' is wrong; expecting '{bucket_region}'",
                       {"x-amz-bucket-region": bucket_region}, f"<Region>{bucket_region}</Region>")
            return None
        secret, token_ok = None, True
        token = self.headers.get("x-amz-security-token")
        pm = re.fullmatch(r"ASIATEST(\d+)", akid)
        if pm:
            n = int(pm.group(1))
            secret = f"process-secret-{n}"
            tm = re.fullmatch(rf"process-token-{n}-(\d+)", token or "")
            if not tm:
                self.reply(403, "InvalidToken", "The provided token is malformed or otherwise invalid.")
                return None
            if n < world.get("expired_below", 0) or int(tm.group(1)) < self.server_now():
                self.reply(400, "ExpiredToken", "The provided token has expired.")
                return None
        else:
            secret = world.get("keys", {}).get(akid)
        if secret is None:
            self.reply(403, "InvalidAccessKeyId",
                       "The AWS Access Key Id you provided does not exist in our records.")
            return None
        amz_date = self.headers.get("x-amz-date", "")
        try:
            t = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc).timestamp()
        except ValueError:
            self.reply(403, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
            return None
        if abs(t - self.server_now()) > 15 * 60:
            self.reply(403, "RequestTimeTooSkewed",
                       "The difference between the request time and the current time is too large.",
                       extra=f"<RequestTime>{amz_date}</RequestTime>")
            return None
        path, _, query = self.path.partition("?")
        canon_headers = "".join(
            f"{h}:{' '.join((self.headers.get(h) or '').split())}\n" for h in signed.split(";"))
        payload = self.headers.get("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        creq = "\n".join([self.command, path, canonical_query(query), canon_headers, signed, payload])
        sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, f"{date}/{region}/s3/aws4_request",
                         hashlib.sha256(creq.encode()).hexdigest()])
        want = hmac.new(signing_key(secret, date, region), sts.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, signature):
            sys.stderr.write(f"front: signature mismatch; canonical request:\n{creq}\n")
            self.reply(403, "SignatureDoesNotMatch",
                       "The request signature we calculated does not match the signature you provided.")
            return None
        unsigned_amz = [h for h in self.headers.keys() if h.lower().startswith("x-amz-")
                        and h.lower() not in signed.split(";") and h.lower() != "x-amz-content-sha256"]
        if unsigned_amz:
            self.reply(403, "AccessDenied", f"There were headers present in the request which were not signed: {unsigned_amz}")
            return None
        return ("signed", akid)

    def handle_s3(self):
        world = self.world.get()
        bucket, raw_key, endpoint_region = route(self.headers.get("Host", ""), self.path)
        key = urllib.parse.unquote(raw_key or "")
        if bucket is None or bucket not in world["buckets"]:
            if bucket is not None and self.command in ("PUT",):
                pass  # bucket creation through the front is not offered
            self.reply(404, "NoSuchBucket", "The specified bucket does not exist")
            return
        b = world["buckets"][bucket]
        region = b["region"]
        if endpoint_region not in (None, region):
            self.reply(301, "PermanentRedirect",
                       "The bucket you are attempting to access must be addressed using the specified endpoint.",
                       {"x-amz-bucket-region": region},
                       f"<Endpoint>{bucket}.s3.{region}.amazonaws.com</Endpoint><Bucket>{bucket}</Bucket>")
            return
        who = self.authenticate(world, region)
        if who is None:
            return
        if who[0] == "anonymous" and not b.get("public"):
            status = 403
            self.reply(status, "AccessDenied", "Access Denied", {"x-amz-bucket-region": region})
            return
        if b.get("requester_pays") and self.headers.get("x-amz-request-payer") != "requester":
            self.reply(403, "AccessDenied", "Access Denied", {"x-amz-bucket-region": region})
            return
        if self.world.take_slowdown():
            h = {}
            if world.get("retry_after") is not None:
                h["Retry-After"] = str(world["retry_after"])
            self.reply(503, "SlowDown", "Please reduce your request rate.", h)
            return
        self.forward(bucket, raw_key, key, region, b)

    def forward(self, bucket, raw_key, key, region, b):
        _, _, query = self.path.partition("?")
        target = f"/{quote(bucket)}/{raw_key}" + (f"?{query}" if query else "")
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "authorization", "x-amz-security-token",
                                        "x-amz-request-payer", "x-amz-date", "connection")}
        # moto picks the service from the credential scope, and does not check signatures.
        headers["Authorization"] = ("AWS4-HMAC-SHA256 Credential=front/20260101/us-east-1/s3/"
                                    "aws4_request, SignedHeaders=host, Signature=" + "0" * 64)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        conn = http.client.HTTPConnection("127.0.0.1", self.moto, timeout=60)
        conn.request(self.command, target, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() in ("content-length", "connection", "transfer-encoding", "server", "date",
                             "x-amz-bucket-region"):
                continue
            self.send_header(k, v)
        kms = b.get("kms_prefix")
        if kms is not None and key.startswith(kms) and r.status < 300:
            self.send_header("x-amz-server-side-encryption", "aws:kms")
            self.send_header("x-amz-server-side-encryption-aws-kms-key-id",
                             f"arn:aws:kms:{region}:111122223333:key/test")
        if b.get("requester_pays"):
            self.send_header("x-amz-request-charged", "requester")
        if self.command == "HEAD" and not key:
            self.send_header("x-amz-bucket-region", region)
        self.send_header("Content-Length", r.getheader("Content-Length", str(len(data))) if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()
        self.note(r.status)


class TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(args):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "--bind", os.path.join(args.dir, "hosts"), "/etc/hosts"], check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        moto_port = s.getsockname()[1]
    moto_log = open(os.path.join(args.dir, "moto.log"), "ab")
    import ctypes
    libc = ctypes.CDLL(None)
    # moto dies with the front (PR_SET_PDEATHSIG), so the namespace goes when the test does.
    moto = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"),
                             "-H", "127.0.0.1", "-p", str(moto_port)], stdout=moto_log, stderr=moto_log,
                            preexec_fn=lambda: libc.prctl(1, 9))
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", moto_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    Front.world = World(args.world)
    Front.moto = moto_port
    httpd = TLSServer(("127.0.0.1", 443), Front)
    httpd.dir = args.dir
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(args.dir, "server.pem"), os.path.join(args.dir, "server.key"))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    if args.watch_pid:
        def watch():
            while True:
                try:
                    os.kill(args.watch_pid, 0)
                except OSError:
                    moto.kill()
                    os._exit(0)
                time.sleep(1)
        threading.Thread(target=watch, daemon=True).start()
    with open(os.path.join(args.dir, "ready.json.tmp"), "w") as f:
        json.dump({"pid": os.getpid(), "ca": os.path.join(args.dir, "ca.pem"), "dir": args.dir,
                   "moto": f"http://127.0.0.1:{moto_port}"}, f)
    os.rename(os.path.join(args.dir, "ready.json.tmp"), os.path.join(args.dir, "ready.json"))
    try:
        httpd.serve_forever()
    finally:
        moto.kill()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("start", "serve"):
        s = sub.add_parser(name)
        s.add_argument("--dir", required=True)
        s.add_argument("--world", required=True)
        s.add_argument("--watch-pid", type=int)
    args = p.parse_args()
    (start if args.cmd == "start" else serve)(args)


if __name__ == "__main__":
    main()

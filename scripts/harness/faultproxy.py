#!/usr/bin/env python3
"""A fault-injecting HTTP proxy for tests: sits between a client and SeaweedFS on loopback.

    faultproxy.py --upstream http://127.0.0.1:PORT [--port 0] [--watch-pid PID]

Prints one JSON line {"pid", "endpoint"} once listening. Requests are forwarded unchanged
(the Host header too, so SigV4 signatures made for the proxy's address still verify). Faults
are chosen per request by rules, set with `POST /__proxy/rules` (a JSON list) and counted at
`GET /__proxy/stats` (with the body bytes sent and, per object -- path?query --, how many GETs
were answered whole and unfaulted -- "path?query etag last-modified" -- and how many were
faulted -- "path?query"). A rule:

    {"method": "GET", "path": "regex", "query": "regex",     (all optional; match = search)
     "ranged": true | false,                                  (only requests with / without Range)
     "fault": "reset" | "truncate" | "stall" | "status" | "flip" | "latency",
     "probability": 1.0, "times": N,                          (at most N hits; default unlimited)
     "after": BYTES | "random",                               (reset/truncate/flip: body offset)
     "status": 503, "code": "SlowDown",                       (status)
     "delay_ms": 200}                                         (latency)

reset: send headers and `after` body bytes, then close with RST. truncate: the same, but a
clean close (the client sees a short body). stall: the same, then nothing for `delay_ms`
(the client's read timeout should fire first), then a close. flip: invert one byte at `after`. status: answer
with an S3 XML error instead of forwarding. The first matching rule that fires wins; the
random choices come from a seeded generator (--seed), so a run is repeatable.
"""
import argparse
import http.client
import json
import os
import random
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"rules": [], "hits": {}, "requests": 0, "clean": {}, "faulted": {}, "bytes": 0}
LOCK = threading.Lock()
RNG = random.Random(1)
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def pick_fault(method, path, query, ranged=False):
    with LOCK:
        STATE["requests"] += 1
        for i, rule in enumerate(STATE["rules"]):
            if rule.get("method") and rule["method"] != method:
                continue
            if rule.get("path") and not re.search(rule["path"], path):
                continue
            if rule.get("query") and not re.search(rule["query"], query):
                continue
            if "ranged" in rule and rule["ranged"] != ranged:
                continue
            if "times" in rule and STATE["hits"].get(i, 0) >= rule["times"]:
                continue
            if RNG.random() >= rule.get("probability", 1.0):
                continue
            STATE["hits"][i] = STATE["hits"].get(i, 0) + 1
            return rule
    return None


def offset(rule, default, length):
    after = rule.get("after", default)
    if after == "random":
        with LOCK:
            return RNG.randrange(length)
    return after


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None

    def log_message(self, *args):
        pass

    def control(self):
        if self.path == "/__proxy/rules" and self.command == "POST":
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with LOCK:
                STATE["rules"] = json.loads(body or b"[]")
                STATE["hits"] = {}
            return self.reply(200, b"{}")
        if self.path == "/__proxy/stats":
            with LOCK:
                data = json.dumps({"requests": STATE["requests"], "hits": STATE["hits"], "bytes": STATE["bytes"],
                                   "clean": STATE["clean"], "faulted": STATE["faulted"]}).encode()
            return self.reply(200, data)
        return self.reply(404, b"{}")

    def reply(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def forward(self):
        if self.path.startswith("/__proxy/"):
            return self.control()
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length", 0) or 0)
        body = self.rfile.read(length) if length else None
        rule = pick_fault(self.command, url.path, url.query, "Range" in self.headers)
        if rule and rule.get("fault") != "latency" and self.command == "GET":
            with LOCK:
                k = f"{url.path}?{url.query}"
                STATE["faulted"][k] = STATE["faulted"].get(k, 0) + 1
        if rule and rule.get("fault") == "latency":
            time.sleep(rule.get("delay_ms", 100) / 1000)
            rule = None
        if rule and rule["fault"] == "status":
            code = rule.get("code", "InternalError")
            xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                   f'<Message>injected by faultproxy</Message></Error>').encode()
            return self.reply(rule.get("status", 500), xml, [("Content-Type", "application/xml")])
        up = urllib.parse.urlsplit(self.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            # A HEAD's Content-Length describes the object, not the (empty) body: keep it.
            if k.lower() not in HOP and (k.lower() != "content-length" or self.command == "HEAD"):
                self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if rule and rule["fault"] in ("reset", "truncate", "stall") and len(data) > 0:
            cut = min(offset(rule, len(data) // 2, len(data)), len(data) - 1)
            self.wfile.write(data[:cut])
            self.wfile.flush()
            if rule["fault"] == "stall":
                time.sleep(rule.get("delay_ms", 10000) / 1000)
            if rule["fault"] == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if rule and rule["fault"] == "flip" and len(data) > 0:
            at = min(offset(rule, 0, len(data)), len(data) - 1)
            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client went away (killed): not a whole download
        with LOCK:
            STATE["bytes"] += len(data)
            # GETs answered whole and unharmed, per object (path and query, Range aside): how
            # often each version was really downloaded.
            if self.command == "GET" and resp.status in (200, 206) and not rule:
                # Also by ETag and Last-Modified: a null version overwritten (versioning
                # suspended) is a new version under the same URL.
                key = f"{url.path}?{url.query} {resp.getheader('ETag')} {resp.getheader('Last-Modified')}"
                STATE["clean"][key] = STATE["clean"].get(key, 0) + 1

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--watch-pid", type=int)
    args = p.parse_args()
    RNG.seed(args.seed)
    Proxy.upstream = args.upstream
    # A test may hold thousands of connections open through the proxy.
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The listen backlog: the default 5 drops connections when many arrive at once.
    ThreadingHTTPServer.request_queue_size = 4096
    ThreadingHTTPServer.daemon_threads = True
    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            # A client killed mid-request (the campaigns kill theirs) is not the proxy's error.
            if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
                return
            super().handle_error(request, client_address)

    server = Server(("127.0.0.1", args.port), Proxy)
    server.daemon_threads = True
    print(json.dumps({"pid": os.getpid(), "endpoint": f"http://127.0.0.1:{server.server_address[1]}"}), flush=True)
    if args.watch_pid:
        def watch():
            while True:
                try:
                    os.kill(args.watch_pid, 0)
                except ProcessLookupError:
                    os._exit(0)
                time.sleep(0.5)
        threading.Thread(target=watch, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()

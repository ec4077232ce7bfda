#!/usr/bin/env python3
"""Start or stop a throw-away SeaweedFS S3 server on 127.0.0.1 for tests and benchmarks.

    s3server.py start --dir DIR [--watch-pid PID] [--access-key K --secret-key S] [--kind moto]
        Picks free loopback ports for every SeaweedFS service (so several servers can run
        side by side), starts `weed mini`, waits until the S3 port answers, and prints one
        JSON line: {"pid", "endpoint", "dir", "log"}. With --watch-pid, a watchdog process
        kills the server (by PID) as soon as PID exits, so a crashed test run leaves no
        server behind.
    s3server.py stop --pid PID
        Kills the server by PID (its process group).

--kind moto starts a moto server instead (a second S3 implementation, to catch
SeaweedFS-specific assumptions; it does not check signatures).

Only loopback addresses are used, and the server is never reached by name.
"""
import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


def free_port():
    return free_ports(1)[0]


def free_ports(n):
    """n distinct free loopback ports, below the kernel's ephemeral range.

    weed binds its ports one service at a time, seconds after they are chosen. A port from
    the ephemeral range can be taken in between as the local end of any outgoing connection
    (tests make thousands), and weed then dies on the bind with exit 255. Below that range
    only explicit binds take ports. The sockets stay bound until all n are chosen, so no port
    is handed out twice. gRPC ports are asked for explicitly, never left to weed's +10000."""
    low, high = ephemeral_range()
    candidates = list(range(10000, low)) if low > 12000 else []
    random.shuffle(candidates)
    socks = []
    try:
        for port in candidates:
            if len(socks) == n:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
                socks.append(s)
            except OSError:
                s.close()
        while len(socks) < n:  # no room below the range: fall back to the kernel's choice
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = f.read().split()
            return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def weed_binary():
    here = os.path.dirname(os.path.abspath(sys.executable))
    candidate = os.path.join(here, "weed")
    return candidate if os.path.exists(candidate) else "weed"


def start(args):
    os.makedirs(args.dir, exist_ok=True)
    if args.kind == "moto":
        return start_moto(args)
    # A port chosen here can still be taken by another process before weed binds it (tests
    # and benchmarks start servers side by side); weed then exits at once. Such a start is
    # tried again on fresh ports; an exit after the S3 port answered is never retried.
    for attempt in range(1, 4):
        proc, endpoint, log_path = launch_weed(args)
        deadline = time.time() + args.timeout
        while True:
            if proc.poll() is not None:
                break
            if answers(endpoint):
                break
            if time.time() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                sys.exit(f"weed did not answer on {endpoint} within {args.timeout}s; "
                         f"see {log_path}")
            time.sleep(0.2)
        if proc.poll() is None:
            break
        print(f"weed exited with {proc.returncode} before answering (attempt {attempt}); "
              f"log tail:\n{tail(log_path)}", file=sys.stderr)
    else:
        sys.exit(f"weed exited before answering, 3 times; see {log_path}")
    if args.watch_pid:
        watchdog(args.watch_pid, proc.pid)
    print(json.dumps({"pid": proc.pid, "endpoint": endpoint, "dir": args.dir, "log": log_path}),
          flush=True)


def launch_weed(args):
    names = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
             "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
             "admin.port", "admin.port.grpc", "webdav.port")
    ports = dict(zip(names, free_ports(len(names))))
    cmd = [weed_binary(), "mini", f"-dir={args.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
           # Nothing leaves loopback: weed reports statistics to seaweedfs.com by default.
           "-master.telemetry=false",
           # Every bucket is a collection with volumes of its own. Left to itself (0), weed
           # allows free disk / volume size limit volumes: with 10 GB free that is 9, and the
           # tenth bucket's PutObject fails with InternalError ("no free volumes left").
           # Volumes are sparse files, so a fixed high count costs nothing.
           "-volume.max=1000", "-master.volumeSizeLimitMB=64"]
    cmd += [f"-{name}={port}" for name, port in ports.items()]
    env = dict(os.environ)
    if args.access_key:
        env["AWS_ACCESS_KEY_ID"] = args.access_key
        env["AWS_SECRET_ACCESS_KEY"] = args.secret_key
    log_path = os.path.join(args.dir, "weed.log")
    log = open(log_path, "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=args.dir, start_new_session=True)
    return proc, f"http://127.0.0.1:{ports['s3.port']}", log_path


def tail(path, lines=15):
    try:
        with open(path, "rb") as f:
            return b"".join(f.readlines()[-lines:]).decode("utf-8", "replace")
    except OSError as e:
        return f"({e})"


def start_moto(args):
    port = free_port()
    log_path = os.path.join(args.dir, "moto.log")
    log = open(log_path, "ab")
    moto = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "moto_server")
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, cwd=args.dir, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + args.timeout
    while not answers(endpoint):
        if proc.poll() is not None or time.time() > deadline:
            kill(proc.pid)
            sys.exit(f"moto_server did not answer on {endpoint}; see {log_path}")
        time.sleep(0.2)
    if args.watch_pid:
        watchdog(args.watch_pid, proc.pid)
    print(json.dumps({"pid": proc.pid, "endpoint": endpoint, "dir": args.dir, "log": log_path,
                      "kind": "moto"}), flush=True)


def answers(endpoint):
    """The S3 gateway is up once it answers a bucket listing, with any HTTP status: a
    signature error still proves that the filer behind it is ready to take requests."""
    try:
        urllib.request.urlopen(endpoint + "/", timeout=1).read()
        return True
    except urllib.error.HTTPError as e:
        return e.code in (200, 403)
    except OSError:
        return False


def watchdog(parent, server):
    if os.fork() != 0:
        return
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    while alive(parent) and alive(server):
        time.sleep(0.5)
    kill(server)
    os._exit(0)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def kill(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start")
    p.add_argument("--dir", required=True)
    p.add_argument("--watch-pid", type=int)
    p.add_argument("--access-key")
    p.add_argument("--secret-key")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--kind", choices=["seaweedfs", "moto"], default="seaweedfs")
    p = sub.add_parser("stop")
    p.add_argument("--pid", type=int, required=True)
    args = parser.parse_args()
    if args.command == "start":
        start(args)
    else:
        kill(args.pid)


if __name__ == "__main__":
    main()

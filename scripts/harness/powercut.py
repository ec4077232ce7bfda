#!/usr/bin/env python3
"""A filesystem that can lose power: a FUSE passthrough that records every change and every
fsync, and builds the directory a power cut would have left.

    powercut.py mount BACKING MOUNTPOINT --log LOG [--cut N]
        Serves BACKING at MOUNTPOINT (foreground; libfuse3 through mfusepy) and records every
        change made through it: creates, writes, truncations, times, modes, links, renames,
        removals, each fsync of a file or directory, and the `syncfs` marker (below). With
        --cut N the power goes at the N-th change: it and everything after fail with EIO, and
        the record (the state at mount plus the N-1 changes before the cut) is written to LOG,
        then the file LOG.cut appears. Without --cut the record is written at unmount (a
        reference run, to count the changes).

    powercut.py crash LOG OUT --seed S [--mode drop|random|prefix|torn]
        Builds in OUT the state a power loss at the cut may leave, per what POSIX and the
        Linux filesystems promise and no more:
          - a change to a file's bytes, size, times or mode survives if a later fsync of that
            file preceded the cut;
          - a change to a directory's entries (create, mkdir, link, symlink, unlink, rmdir,
            rename -- a rename whole, as every journalling filesystem commits it) survives if
            a later fsync of that directory (or, for a rename, of either directory) preceded
            the cut;
          - everything before a completed `syncfs` survives;
          - anything else may or may not: `drop` loses all of it, `random` keeps each change
            with a seeded probability, `prefix` keeps a prefix of it in order (a journal that
            committed part of its queue), `torn` is `random` with some kept writes zeroed
            (the size reached the disk, the bytes did not: ext4 delalloc and XFS after a
            crash).
        Changes apply to inodes, not names: a write to a file whose creation was lost still
        lands in the inode, which a surviving rename may then put in place.

FUSE cannot see `syncfs(2)`: the kernel does not pass it to a FUSE daemon. A `failpoints`
build of s3invbackup therefore asks for the extended attribute `user.s3invbackup.syncfs` of
the backup's root right after each successful syncfs; this filesystem records that as the
syncfs and answers ENODATA.
"""
import argparse
import errno
import json
import os
import pickle
import random
import stat
import sys
import threading
import time

SYNCFS_MARK = "user.s3invbackup.syncfs"


def serve(backing, mountpoint, log, cut):
    import mfusepy as fuse

    class PowerCut(fuse.Operations):
        use_ns = True

        def __init__(self):
            self.mutex = threading.RLock()
            self.ids = {}  # mount path -> inode id
            self.next_id = 1
            self.fds = {}  # fh -> (os fd, inode id)
            self.next_fh = 1
            self.changes = []
            self.initial = self.snapshot()
            self.frozen = False

        def snapshot(self):
            """The state at mount: every path with its inode id, kind, mode, mtime, bytes."""
            out, seen = [], {}

            def register(path):
                full = backing + (path if path != "/" else "")
                st = os.lstat(full)
                key = (st.st_dev, st.st_ino)
                if key in seen and not stat.S_ISDIR(st.st_mode):
                    self.ids[path] = seen[key]
                    out.append((path, seen[key], "link", None, None, None))
                    return
                i = self.new_id()
                seen[key] = i
                self.ids[path] = i
                if stat.S_ISDIR(st.st_mode):
                    out.append((path, i, "d", stat.S_IMODE(st.st_mode), st.st_mtime_ns, None))
                elif stat.S_ISLNK(st.st_mode):
                    out.append((path, i, "l", 0o777, st.st_mtime_ns, os.readlink(full)))
                else:
                    with open(full, "rb") as f:
                        out.append((path, i, "f", stat.S_IMODE(st.st_mode), st.st_mtime_ns, f.read()))

            register("/")
            for dirpath, dirnames, filenames in os.walk(backing):
                dirnames.sort()
                rel = "/" if dirpath == backing else "/" + os.path.relpath(dirpath, backing)
                for name in sorted(filenames) + dirnames:
                    register(os.path.join(rel, name))
            return out

        def new_id(self):
            i = self.next_id
            self.next_id += 1
            return i

        def real(self, path):
            return backing + path

        def record(self, *change):
            """Counts a change; at the cut the power goes (this change and all later fail)."""
            if self.frozen:
                raise fuse.FuseOSError(errno.EIO)
            if cut and len(self.changes) + 1 >= cut:
                self.frozen = True
                self.dump()
                with open(log + ".cut", "w") as f:
                    f.write(str(len(self.changes)))
                raise fuse.FuseOSError(errno.EIO)
            self.changes.append((time.time_ns(),) + change)

        def dump(self):
            with open(log + ".tmp", "wb") as f:
                pickle.dump({"init": self.initial, "changes": self.changes}, f)
            os.rename(log + ".tmp", log)

        def check(self):
            if self.frozen:
                raise fuse.FuseOSError(errno.EIO)

        def parent(self, path):
            d, name = os.path.split(path)
            return self.ids[d], name

        def move_ids(self, old, new):
            moved = {}
            for p in list(self.ids):
                if p == old or p.startswith(old + "/"):
                    moved[new + p[len(old):]] = self.ids.pop(p)
            for p in [p for p in self.ids if p == new or p.startswith(new + "/")]:
                del self.ids[p]
            self.ids.update(moved)

        def forget(self, path):
            for p in [p for p in self.ids if p == path or p.startswith(path + "/")]:
                del self.ids[p]

        # Reads: passed through.
        def getattr(self, path, fh=None):
            self.check()
            try:
                st = os.fstat(self.fds[fh][0]) if fh in self.fds else os.lstat(self.real(path))
            except OSError as e:
                raise fuse.FuseOSError(e.errno)
            return {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_size", "st_uid", "st_gid",
                                                  "st_blocks")} | {
                "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns}

        def readdir(self, path, fh):
            self.check()
            return [".", ".."] + os.listdir(self.real(path))

        def readlink(self, path):
            self.check()
            return os.readlink(self.real(path))

        def statfs(self, path):
            s = os.statvfs(self.real(path))
            return {k: getattr(s, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                 "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

        def access(self, path, amode):
            self.check()
            if not os.access(self.real(path), amode, follow_symlinks=False):
                raise fuse.FuseOSError(errno.EACCES)
            return 0

        def getxattr(self, path, name, position=0):
            if name == SYNCFS_MARK:
                with self.mutex:
                    self.record("syncfs")
            raise fuse.FuseOSError(errno.ENODATA)

        def listxattr(self, path):
            return []

        def setxattr(self, path, name, value, options, position=0):
            raise fuse.FuseOSError(errno.ENOTSUP)

        def open(self, path, flags):
            with self.mutex:
                self.check()
                i = self.ids[path]
                if flags & os.O_TRUNC:
                    self.record("truncate", i, 0)
                return self.handle(os.open(self.real(path), flags & ~os.O_CREAT), i)

        def handle(self, fd, i):
            """A file handle for descriptor `fd` of inode `i`."""
            with self.mutex:
                fh = self.next_fh
                self.next_fh += 1
                self.fds[fh] = (fd, i)
                return fh

        def opendir(self, path):
            self.check()
            return 0

        def read(self, path, size, offset, fh):
            self.check()
            return os.pread(self.fds[fh][0], size, offset)

        def release(self, path, fh):
            with self.mutex:
                fd, _ = self.fds.pop(fh)
                os.close(fd)
            return 0

        def flush(self, path, fh):
            return 0

        # Changes: recorded, then done on the backing directory.
        def create(self, path, mode, fi=None):
            with self.mutex:
                i, fd = self.add("create", path, stat.S_IMODE(mode),
                                 lambda: os.open(self.real(path), os.O_CREAT | os.O_RDWR | os.O_TRUNC,
                                                 stat.S_IMODE(mode)))
                return self.handle(fd, i)

        def mknod(self, path, mode, dev):
            raise fuse.FuseOSError(errno.EPERM)

        def write(self, path, data, offset, fh):
            with self.mutex:
                fd, i = self.fds[fh]
                self.record("write", i, offset, bytes(data))
                return os.pwrite(fd, data, offset)

        def truncate(self, path, length, fh=None):
            with self.mutex:
                if path is None:
                    return 0
                self.record("truncate", self.ids[path], length)
                os.truncate(self.real(path), length)
                return 0

        def utimens(self, path, times=None):
            with self.mutex:
                if path is None:
                    return 0
                now = time.time_ns()
                atime, mtime = times if times else (now, now)
                self.record("utime", self.ids[path], mtime)
                os.utime(self.real(path), ns=(atime, mtime), follow_symlinks=False)
                return 0

        def chmod(self, path, mode):
            with self.mutex:
                self.record("chmod", self.ids[path], stat.S_IMODE(mode))
                os.chmod(self.real(path), stat.S_IMODE(mode))
                return 0

        def chown(self, path, uid, gid):
            return 0

        def add(self, op, path, extra, make):
            """A new inode at `path`: recorded, made by `make()`, named; returns what make did."""
            with self.mutex:
                d, name = self.parent(path)
                i = self.next_id
                self.record(op, d, name, i, extra)
                made = make()
                self.new_id()
                self.ids[path] = i
                return i, made

        def mkdir(self, path, mode):
            self.add("mkdir", path, stat.S_IMODE(mode), lambda: os.mkdir(self.real(path), stat.S_IMODE(mode)))
            return 0

        def symlink(self, target, source):
            self.add("symlink", target, source, lambda: os.symlink(source, self.real(target)))
            return 0

        def link(self, target, source):
            with self.mutex:
                d, name = self.parent(target)
                i = self.ids[source]
                self.record("link", d, name, i)
                os.link(self.real(source), self.real(target))
                self.ids[target] = i
                return 0

        def remove(self, op, path, undo):
            with self.mutex:
                d, name = self.parent(path)
                self.record(op, d, name, self.ids[path])
                undo(self.real(path))
                self.forget(path)
                return 0

        def unlink(self, path):
            return self.remove("unlink", path, os.unlink)

        def rmdir(self, path):
            return self.remove("rmdir", path, os.rmdir)

        def rename(self, old, new):
            with self.mutex:
                sd, sname = self.parent(old)
                dd, dname = self.parent(new)
                self.record("rename", sd, sname, dd, dname, self.ids[old])
                os.rename(self.real(old), self.real(new))
                self.move_ids(old, new)
                return 0

        def fsync(self, path, datasync, fh):
            with self.mutex:
                fd, i = self.fds[fh]
                self.record("fsync", i)
                os.fsync(fd)
                return 0

        def fsyncdir(self, path, datasync, fh):
            with self.mutex:
                self.record("fsyncdir", self.ids[path])
                return 0

        def destroy(self, path):
            if not self.frozen:
                self.dump()

    fuse.FUSE(PowerCut(), mountpoint, foreground=True, nothreads=False, hard_remove=True)


# The crash state.

DATA = {"write", "truncate", "utime", "chmod"}
ENTRIES = {"create", "mkdir", "symlink", "link", "unlink", "rmdir", "rename"}


class Node:
    def __init__(self, kind, mode, mtime, data=None, target=None):
        self.kind, self.mode, self.mtime = kind, mode, mtime
        self.data = bytearray(data or b"")
        self.target = target
        self.entries = {}


def survivors(changes):
    """Which changes a power loss cannot take: those a later fsync, fsync of a directory or
    syncfs before the cut made durable."""
    last_fsync, last_dir, last_syncfs = {}, {}, -1
    for n, c in enumerate(changes):
        if c[1] == "fsync":
            last_fsync[c[2]] = n
        elif c[1] == "fsyncdir":
            last_dir[c[2]] = n
        elif c[1] == "syncfs":
            last_syncfs = n
    forced = []
    for n, c in enumerate(changes):
        op = c[1]
        if n < last_syncfs:
            forced.append(True)
        elif op in DATA:
            forced.append(n < last_fsync.get(c[2], -1))
        elif op == "rename":
            forced.append(n < max(last_dir.get(c[2], -1), last_dir.get(c[4], -1)))
        elif op in ENTRIES:
            forced.append(n < last_dir.get(c[2], -1))
        else:
            forced.append(True)  # the syncs themselves change nothing
    return forced


def crash_state(record, mode, rng):
    """The inodes and root a power loss at the cut may leave (see the module comment); also
    counts what was lost."""
    nodes = {}
    id_of = {p: i for p, i, *_ in record["init"]}
    for path, i, kind, fmode, mtime, payload in record["init"]:
        if kind == "link":
            pass
        elif kind == "l":
            nodes[i] = Node("l", fmode, mtime, target=payload)
        else:
            nodes[i] = Node(kind, fmode, mtime, data=payload if kind == "f" else None)
        if path != "/":
            d, name = os.path.split(path)
            nodes[id_of[d]].entries[name] = i
    changes = record["changes"]
    forced = survivors(changes)
    unforced = [n for n, f in enumerate(forced) if not f]
    if mode == "drop":
        keep = set()
    elif mode == "prefix":
        keep = set(unforced[:rng.randint(0, len(unforced))])
    else:
        p = rng.choice([0.25, 0.5, 0.75])
        keep = {n for n in unforced if rng.random() < p}
    zeroed = 0
    for n, c in enumerate(changes):
        t, op, *a = c
        if op in ("create", "mkdir", "symlink"):
            d, name, i, extra = a
            if i not in nodes:
                nodes[i] = (Node("l", 0o777, t, target=extra) if op == "symlink"
                            else Node("f" if op == "create" else "d", extra, t))
        if not (forced[n] or n in keep):
            continue
        if op in ("create", "mkdir", "symlink", "link"):
            nodes[a[0]].entries[a[1]] = a[2]
        elif op in ("unlink", "rmdir"):
            d, name, i = a
            if nodes[d].entries.get(name) == i:
                del nodes[d].entries[name]
        elif op == "rename":
            sd, sname, dd, dname, i = a
            if nodes[sd].entries.get(sname) == i:
                del nodes[sd].entries[sname]
            nodes[dd].entries[dname] = i
        elif op == "write":
            i, off, data = a
            node = nodes[i]
            if mode == "torn" and not forced[n] and rng.random() < 0.3:
                data = bytes(len(data))
                zeroed += 1
            if len(node.data) < off:
                node.data.extend(bytes(off - len(node.data)))
            node.data[off:off + len(data)] = data
            node.mtime = t
        elif op == "truncate":
            i, size = a
            node = nodes[i]
            del node.data[size:]
            node.data.extend(bytes(size - len(node.data)))
            node.mtime = t
        elif op == "utime":
            nodes[a[0]].mtime = a[1]
        elif op == "chmod":
            nodes[a[0]].mode = a[1]
    lost = len(unforced) - len(keep)
    return nodes, {"changes": len(changes), "unsynced": len(unforced), "lost": lost, "zeroed": zeroed}


def materialize(nodes, out):
    """Writes the tree reachable from the root; an inode named twice becomes a hard link."""
    placed = {}
    os.makedirs(out, exist_ok=True)

    def walk(i, path, seen):
        for name, j in sorted(nodes[i].entries.items()):
            node, full = nodes[j], os.path.join(path, name)
            if node.kind == "d":
                if j in seen:
                    continue  # a cycle (renames of directories, half of them lost)
                os.mkdir(full)
                walk(j, full, seen | {j})
                os.chmod(full, node.mode)
            elif node.kind == "l":
                os.symlink(node.target, full)
            elif j in placed:
                os.link(placed[j], full)
            else:
                with open(full, "wb") as f:
                    f.write(node.data)
                os.chmod(full, node.mode)
                os.utime(full, ns=(node.mtime, node.mtime))
                placed[j] = full

    walk(1, out, {1})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mount")
    m.add_argument("backing")
    m.add_argument("mountpoint")
    m.add_argument("--log", required=True)
    m.add_argument("--cut", type=int, default=0)
    c = sub.add_parser("crash")
    c.add_argument("log")
    c.add_argument("out")
    c.add_argument("--seed", type=int, required=True)
    c.add_argument("--mode", choices=["drop", "random", "prefix", "torn"], default="random")
    a = p.parse_args()
    if a.cmd == "mount":
        serve(os.path.abspath(a.backing), a.mountpoint, os.path.abspath(a.log), a.cut)
    else:
        with open(a.log, "rb") as f:
            record = pickle.load(f)
        nodes, counts = crash_state(record, a.mode, random.Random(a.seed))
        materialize(nodes, a.out)
        print(json.dumps(counts))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Hold COUNT idle keep-alive HTTP/1.1 connections to HOST:PORT (bench/run.sh, footprint).

usage: idle_conns.py HOST PORT COUNT DEADLINE_SECONDS

Opens COUNT connections (at most WINDOW at a time still connecting or waiting for
their answer), sends one `GET /` on each and reads the whole answer, so every
connection is established in the proxy and idle between requests. Then prints

    ready OK FAILED SECONDS

(OK connections answered 200 "ok" and stay open; FAILED did not; SECONDS it took)
and waits for a
line on stdin. On "check" it prints

    open N

(how many of the OK connections the proxy has not closed), closes them all and
exits. EOF on stdin, or DEADLINE_SECONDS after the start, closes and exits too:
nothing here runs unbounded. Opening stops early when no connection has been
answered for STALL seconds (a proxy at its connection limit leaves the rest in
its backlog); those count as FAILED.
"""

import errno
import os
import resource
import selectors
import socket
import sys
import time

WINDOW = 256
STALL = 10.0


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        try:  # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return
        except (ValueError, OSError):
            need = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


class Conn:
    """One connection: connect, send the request, read the answer."""

    def __init__(self, request):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.out = request
        self.buf = b""

    def answer(self):
        """None while incomplete; else True for 200 "ok", False for anything else."""
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self.buf[:head_end].decode("latin-1").lower().split("\r\n")
        body = self.buf[head_end + 4:]
        ok_status = head[0].split(" ")[1:2] == ["200"]
        length = None
        chunked = False
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip() == "content-length":
                length = int(value.strip())
            elif name.strip() == "transfer-encoding" and "chunked" in value:
                chunked = True
        if chunked:
            if not body.endswith(b"0\r\n\r\n"):
                return None
            return ok_status and b"ok" in body
        if length is None:
            return False  # no framing: the proxy could not keep the connection
        if len(body) < length:
            return None
        return ok_status and body[:length] == b"ok"


def open_all(host, port, count, deadline):
    request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: idle_conns\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    done, failed, started, pending = [], 0, 0, 0

    def finish(c, good):
        nonlocal failed, pending, progress
        sel.unregister(c.sock)
        pending -= 1
        progress = time.monotonic()
        if good:
            done.append(c.sock)
        else:
            failed += 1
            c.sock.close()

    progress = time.monotonic()
    while (started < count or pending) and time.monotonic() < min(deadline, progress + STALL):
        while started < count and pending < WINDOW:
            c = Conn(request)
            started += 1
            pending += 1
            rc = c.sock.connect_ex((host, port))
            if rc not in (0, errno.EINPROGRESS):
                pending -= 1
                failed += 1
                c.sock.close()
                continue
            sel.register(c.sock, selectors.EVENT_WRITE, c)
        for key, _ in sel.select(timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
            c = key.data
            try:
                if c.out:
                    if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        finish(c, False)
                        continue
                    c.out = c.out[c.sock.send(c.out):]
                    if not c.out:
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                data = c.sock.recv(65536)
                if not data:
                    finish(c, False)
                    continue
                c.buf += data
                good = c.answer()
                if good is not None:
                    finish(c, good)
            except (OSError, ValueError, IndexError):
                finish(c, False)
    for key in list(sel.get_map().values()):  # deadline or stall: pending ones failed
        key.fileobj.close()
        failed += 1
    sel.close()
    failed += count - started
    return done, failed


def still_open(socks):
    """Connections the proxy has not closed (nor written anything unexpected on)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = 0
    for key, _ in sel.select(timeout=0):
        try:
            if key.fileobj.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    sel.close()
    return len(socks) - closed


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    host, port, count, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    start = time.monotonic()
    deadline = start + limit
    raise_fd_limit(count + 64)
    socks, failed = open_all(host, port, count, deadline)
    print(f"ready {len(socks)} {failed} {time.monotonic() - start:.1f}", flush=True)
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = sys.stdin.readline()
        if not line:
            break  # EOF
        if line.strip() == "check":
            print(f"open {still_open(socks)}", flush=True)
            break
    for s in socks:
        s.close()
    os._exit(0)  # skip interpreter teardown of 10 000 objects


if __name__ == "__main__":
    main()

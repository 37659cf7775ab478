#!/usr/bin/env python3
# nbdraw.py SOCKET SCENARIO: a hand-made NBD client that misbehaves on
# purpose, for the blkmirror tests.  It prints one line per answer it got
# ("reply ERRNO", "opt-reply TYPE", "closed") and exits 0; anything
# unexpected (a timeout, a malformed answer) exits 1.
import os
import socket
import struct
import sys

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3E889045565A9
REQMAGIC = 0x25609513
REPLYMAGIC = 0x67446698


def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            return None
        b += c
    return b


def closed(s):
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)
    types = []
    while True:
        h = recvn(s, 20)
        magic, o, typ, ln = struct.unpack(">QIII", h)
        assert magic == REPMAGIC and o == opt, h
        recvn(s, ln)
        types.append(typ)
        if typ != 3:            # NBD_REP_INFO comes before the final one
            return types


def hello(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    h = recvn(s, 18)
    magic, ihave, flags = struct.unpack(">QQH", h)
    assert magic == NBDMAGIC and ihave == IHAVEOPT and flags & 1, h
    s.sendall(struct.pack(">I", 3))
    return s


def go(s):
    t = option(s, 7, struct.pack(">IH", 0, 0))
    assert t[-1] == 1, t
    return s


def request(s, typ, off, ln, flags=0, data=b"", magic=REQMAGIC):
    s.sendall(struct.pack(">IHHQQI", magic, flags, typ, 0x1234, off, ln)
              + data)


def reply(s, readlen=0):
    h = recvn(s, 16)
    if h is None:
        return "closed"
    magic, err, cookie = struct.unpack(">IIQ", h)
    assert magic == REPLYMAGIC and cookie == 0x1234, h
    if err == 0 and readlen:
        recvn(s, readlen)
    return "reply %d" % err


def main():
    path, what = sys.argv[1], sys.argv[2]
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    if what == "options":
        s = hello(path)
        print("starttls", " ".join("%x" % t for t in option(s, 5)))
        print("unknown", " ".join("%x" % t for t in option(s, 99, b"xy")))
        print("list-data", " ".join("%x" % t for t in option(s, 3, b"x")))
        print("go-bad", " ".join("%x" % t for t in
                                  option(s, 7, b"\0\0\0\x09ab")))
        print("go-unknown", " ".join("%x" % t for t in
                                     option(s, 7, b"\0\0\0\x02zz\0\0")))
        print("go", " ".join("%x" % t for t in option(s, 7, b"\0" * 6)))
        request(s, 0, 0, 512)
        print("read", reply(s, 512))
        request(s, 2, 0, 0)
        print("disc", "closed" if closed(s) else "open")
    elif what == "garbage":
        s = hello(path)
        s.sendall(os.urandom(64))
        print("garbage", "closed" if closed(s) else "open")
    elif what == "badmagic":
        s = go(hello(path))
        request(s, 0, 0, 512, magic=0xDEADBEEF)
        print("badmagic", reply(s))
    elif what == "requests":
        s = go(hello(path))
        request(s, 0, 0, 64 << 20)
        print("read-huge", reply(s))
        request(s, 0, size, 512)
        print("read-past-end", reply(s))
        request(s, 0, size - 512, 1024)
        print("read-across-end", reply(s))
        request(s, 0, 2**64 - 512, 1024)
        print("read-wrapping", reply(s))
        request(s, 1, size - 4096, 8192, data=b"x" * 8192)
        print("write-past-end", reply(s))
        request(s, 4, size, 4096)
        print("trim-past-end", reply(s))
        request(s, 6, size - 1, 2)
        print("zero-past-end", reply(s))
        request(s, 42, 0, 4096)
        print("unknown-command", reply(s))
        request(s, 1, 0, 4096, data=b"y" * 4096)
        print("write", reply(s))
        request(s, 0, 0, 4096)
        print("read", reply(s, 4096))
        request(s, 1, 0, 64 << 20)
        print("write-huge", reply(s))
    elif what == "overlap":
        # Pairs of overlapping writes sent back to back: the later one
        # must win, whatever order the disk finishes them in.
        s = go(hello(path))
        bad = 0
        for i in range(50):
            off = i * (1 << 20)
            request(s, 1, off, 1 << 20, data=bytes([i % 250 + 1]) * (1 << 20))
            request(s, 1, off + 4096, 4096, data=b"\xee" * 4096)
            request(s, 1, off + 8192, 4096, flags=1, data=b"\xdd" * 4096)
            for _ in range(3):
                assert reply(s) == "reply 0"
            request(s, 0, off, 16384)
            assert reply(s, 16384) == "reply 0"
        s.close()
        s = go(hello(path))
        for i in range(50):
            off = i * (1 << 20)
            request(s, 0, off, 16384)
            h = recvn(s, 16)
            d = recvn(s, 16384)
            want = (bytes([i % 250 + 1]) * 4096 + b"\xee" * 4096 +
                    b"\xdd" * 4096 + bytes([i % 250 + 1]) * 4096)
            bad += d != want
        print("overlap", "ok" if bad == 0 else "%d wrong" % bad)
    elif what == "write-noflush":
        # One write at offset SIZE, then a clean disconnect: no FLUSH
        # (qemu-io would send one when it closes).
        s = go(hello(path))
        request(s, 1, size, 4096, data=b"\x5a" * 4096)
        print("write", reply(s))
        request(s, 2, 0, 0)
    elif what == "flush":
        # A FLUSH even when this connection wrote nothing (qemu-io skips
        # it then).
        s = go(hello(path))
        request(s, 3, 0, 0)
        print("flush", reply(s))
        request(s, 2, 0, 0)
    else:
        sys.exit("nbdraw.py: unknown scenario " + what)


main()

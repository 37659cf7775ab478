#!/usr/bin/env python3
# nbdflood.py SOCKET PID: a client that sends 32 MiB reads and never reads
# the replies, 4 at a time up to 64 (2 GiB), watching the resident memory
# of process PID.  Prints the largest VmRSS seen, in MiB; stops early once
# it passes 1 GiB, so that a server without a bound does not take the
# machine's memory.
# nbdflood.py SOCKET PID burst N: N reads of 32 MiB sent at once, then
# every reply read (each within 30 s); prints the replies received.
import socket
import struct
import sys
import time

IHAVEOPT = 0x49484156454F5054


def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("connection closed")
        b += c
    return b


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    recvn(s, 18)
    s.sendall(struct.pack(">I", 3))
    s.sendall(struct.pack(">QIIIH", IHAVEOPT, 7, 6, 0, 0))
    while True:             # NBD_REP_INFO (3) until the ACK (1)
        magic, opt, typ, ln = struct.unpack(">QIII", recvn(s, 20))
        recvn(s, ln)
        if typ != 3:
            assert typ == 1, typ
            return s


def rss(pid):
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def burst(s, n):
    s.sendall(b"".join(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, 0,
                                   32 << 20) for i in range(n)))
    s.settimeout(30)
    for i in range(n):
        magic, err, handle = struct.unpack(">IIQ", recvn(s, 16))
        assert magic == 0x67446698 and err == 0, (magic, err)
        recvn(s, 32 << 20)
    print(n)


def main():
    path, pid = sys.argv[1], sys.argv[2]
    s = connect(path)
    if len(sys.argv) > 4 and sys.argv[3] == "burst":
        burst(s, int(sys.argv[4]))
        return
    top = 0
    for i in range(16):
        for j in range(4):
            s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, i * 4 + j,
                                  0, 32 << 20))
        time.sleep(0.3)
        top = max(top, rss(pid))
        if top > 1024:
            break
    print(top)
    s.close()


main()

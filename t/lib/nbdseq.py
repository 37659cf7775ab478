#!/usr/bin/env python3
# nbdseq.py write SOCKET LOG BLOCKS: write 4 KiB blocks numbered 1, 2, ...
#	(block n at offset (n % BLOCKS) * 4096, filled with n), one at a
#	time, appending n to LOG after its reply came; until the connection
#	ends.
# nbdseq.py epochs SOCKET LOG BLOCKS: epoch e = 1, 2, ... writes e into
#	blocks 0..BLOCKS-1 and ends with a FLUSH; until the connection ends.
# nbdseq.py prefix FILE - BLOCKS: every block of the store FILE holds the
#	same epoch number (a whole epoch, never part of one); prints it.
# nbdseq.py check SOCKET LOG BLOCKS: read every block back and check that
#	each holds the last acknowledged number for it, or a later one.
#	Prints "checked N acknowledged writes" or exits 1 naming a block.
import struct
import socket
import sys

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REQMAGIC = 0x25609513
REPLYMAGIC = 0x67446698
BS = 4096


def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b


def connect(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    magic, opt, flags = struct.unpack(">QQH", recvn(s, 18))
    assert magic == NBDMAGIC and opt == IHAVEOPT
    s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    s.sendall(struct.pack(">QII", IHAVEOPT, 1, 0))  # EXPORT_NAME ""
    recvn(s, 10)
    return s


def request(s, typ, off, data=b"", ln=0):
    s.sendall(struct.pack(">IHHQQI", REQMAGIC, 0, typ, 1, off,
                          len(data) or ln) + data)
    magic, err, cookie = struct.unpack(">IIQ", recvn(s, 16))
    assert magic == REPLYMAGIC
    if err:
        raise IOError(err)
    return recvn(s, ln) if typ == 0 else None


def main():
    mode, path, log, blocks = sys.argv[1:5]
    blocks = int(blocks)
    if mode == "prefix":
        with open(path, "rb") as f:
            got = set(struct.unpack("<Q", f.read(BS)[:8])[0]
                      for _ in range(blocks))
        if len(got) != 1:
            print("blocks from several epochs: %s" % sorted(got))
            return 1
        print("epoch %d" % got.pop())
        return 0
    s = connect(path)
    if mode == "epochs":
        e = 0
        try:
            while True:
                e += 1
                for b in range(blocks):
                    request(s, 1, b * BS, struct.pack("<Q", e) * (BS // 8))
                request(s, 3, 0)
        except (EOFError, OSError):
            return 0
    if mode == "write":
        with open(log, "a") as f:
            n = 0
            try:
                while True:
                    n += 1
                    request(s, 1, (n % blocks) * BS,
                            struct.pack("<Q", n) * (BS // 8))
                    f.write("%d\n" % n)
                    f.flush()
            except (EOFError, OSError):
                return 0
    last = {}
    count = 0
    for line in open(log):
        n = int(line)
        last[n % blocks] = n
        count += 1
    for blk, n in sorted(last.items()):
        got = struct.unpack("<Q", request(s, 0, blk * BS, ln=BS)[:8])[0]
        if got < n:
            print("block %d holds %d, acknowledged %d" % (blk, got, n))
            return 1
    print("checked %d acknowledged writes" % count)
    return 0


sys.exit(main())

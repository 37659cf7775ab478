/* See LICENSE file for copyright and license details. */
/* Unit tests for lib/nbd.c's protocol helpers. */
#include <errno.h>
#include <stdint.h>

#include "hatrio.h"
#include "nbd.h"
#include "unit.h"

int
main(void)
{
	unsigned char	b[8];
	uint64_t	size = 1 << 20;

	put_be64(b, 0x0102030405060708ULL);
	ok(b[0] == 1 && b[7] == 8, "put64 is big-endian");
	ok(get_be64(b) == 0x0102030405060708ULL, "get64");
	put_be32(b, 0x25609513);
	ok(get_be32(b) == NBD_REQUEST_MAGIC && b[0] == 0x25, "put32/get32");
	put_be16(b, 0xabcd);
	ok(get_be16(b) == 0xabcd && b[0] == 0xab, "put16/get16");

	ok(nbd_check_request(NBD_CMD_READ, 0, 4096, size) == 0, "read ok");
	ok(nbd_check_request(NBD_CMD_READ, size - 4096, 4096, size) == 0,
	    "read up to the end");
	ok(nbd_check_request(NBD_CMD_READ, size, 1, size) == EINVAL,
	    "read past the end: EINVAL");
	ok(nbd_check_request(NBD_CMD_READ, UINT64_MAX - 10, 100, size) ==
	    EINVAL, "read with a wrapping offset: EINVAL");
	ok(nbd_check_request(NBD_CMD_READ, 0, NBD_MAX_PAYLOAD + 1, 1ULL << 40)
	    == EINVAL, "oversized read: EINVAL");
	ok(nbd_check_request(NBD_CMD_WRITE, size - 1, 2, size) == ENOSPC,
	    "write past the end: ENOSPC");
	ok(nbd_check_request(NBD_CMD_WRITE, 0, NBD_MAX_PAYLOAD + 1,
	    1ULL << 40) == -1, "oversized write: disconnect");
	ok(nbd_check_request(NBD_CMD_TRIM, 0, UINT32_MAX, 1ULL << 40) == 0,
	    "a long trim is fine");
	ok(nbd_check_request(NBD_CMD_WRITE_ZEROES, size, 1, size) == ENOSPC,
	    "zeroes past the end: ENOSPC");
	ok(nbd_check_request(NBD_CMD_FLUSH, 0, 0, size) == 0, "flush");
	ok(nbd_check_request(42, 0, 0, size) == EINVAL, "unknown: EINVAL");

	ok(nbd_errno(0) == 0 && nbd_errno(EPERM) == NBD_EPERM &&
	    nbd_errno(EROFS) == NBD_EPERM && nbd_errno(ENOSPC) == NBD_ENOSPC &&
	    nbd_errno(EIO) == NBD_EIO && nbd_errno(EBADF) == NBD_EIO &&
	    nbd_errno(EINVAL) == NBD_EINVAL, "errno mapping");
	ok(nbd_bufclass(1) == 0 && nbd_bufclass(4096) == 0 &&
	    nbd_bufclass(4097) == 1 && nbd_bufclass(1 << 20) == 8 &&
	    nbd_bufclass(NBD_MAX_PAYLOAD) == 13, "buffer classes");
	return done_testing();
}

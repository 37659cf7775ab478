/* See LICENSE file for copyright and license details. */
/*
 * Unit tests for lib/repl.c: every message survives a round trip, and
 * decoding refuses wrong lengths and ranges outside the resource.
 */
#include <stdlib.h>
#include <string.h>

#include "hatrio.h"
#include "nbd.h"
#include "repl.h"
#include "unit.h"

#define SIZE	(64ULL << 20)

static unsigned char	 buf[REPL_DATA_HDR + REPL_CHUNK + 1];

static void
test_hello(void)
{
	struct repl_hello	 h, g;
	size_t			 n;
	int			 i;

	memset(&h, 0, sizeof(h));
	memset(&g, 0, sizeof(g));	/* the padding too */
	h.version = REPL_VERSION;
	h.size = SIZE;
	h.flags = REPL_F_PRIMARY | REPL_F_CRASHED;
	h.current = 0x1234567890abcdefULL;
	h.bitmap = 3;
	for (i = 0; i < GI_HISTORY; i++)
		h.history[i] = 100 + i;
	h.promoted_at = 1764000000000000ULL;
	h.oos_blocks = 77;
	n = repl_hello_enc(buf, &h);
	ok(n == REPL_HELLO_SIZE, "hello: size");
	ok(repl_hello_dec(buf, n, &g) == 0 && memcmp(&h, &g, sizeof(h)) == 0,
	    "hello: round trip");
	ok(repl_hello_dec(buf, n - 1, &g) == -1, "hello: short refused");
	ok(repl_hello_dec(buf, n + 1, &g) == -1, "hello: long refused");
}

static void
test_data(void)
{
	struct repl_data	 d, g;
	size_t			 n;

	memset(&d, 0, sizeof(d));
	d.seq = 5;
	d.epoch = 2;
	d.offset = SIZE - 8192;
	d.len = 8192;
	d.cmd = NBD_CMD_WRITE;
	d.flags = REPL_D_FUA;
	n = repl_data_enc(buf, &d);
	memset(buf + n, 0xab, d.len);
	ok(repl_data_dec(buf, n + d.len, SIZE, &g) == 0 && g.seq == 5 &&
	    g.epoch == 2 && g.offset == SIZE - 8192 && g.len == 8192 &&
	    g.cmd == NBD_CMD_WRITE && g.flags == REPL_D_FUA &&
	    g.data == buf + REPL_DATA_HDR, "data: write round trip");
	ok(repl_data_dec(buf, n + d.len - 1, SIZE, &g) == -1,
	    "data: write shorter than its length refused");
	ok(repl_data_dec(buf, n + d.len + 1, SIZE, &g) == -1,
	    "data: write longer than its length refused");
	ok(repl_data_dec(buf, n - 1, SIZE, &g) == -1, "data: short header");
	ok(repl_data_dec(buf, n + d.len, SIZE - 4096, &g) == -1,
	    "data: past the end refused");
	d.offset = UINT64_MAX - 100;
	repl_data_enc(buf, &d);
	ok(repl_data_dec(buf, n + d.len, SIZE, &g) == -1,
	    "data: offset overflow refused");
	d.offset = 0;
	d.len = REPL_CHUNK + 1;
	repl_data_enc(buf, &d);
	ok(repl_data_dec(buf, n + d.len, SIZE, &g) == -1,
	    "data: more than a chunk refused");
	d.len = 0;
	repl_data_enc(buf, &d);
	ok(repl_data_dec(buf, n, SIZE, &g) == -1, "data: empty refused");
	d.len = 4096;
	d.cmd = NBD_CMD_TRIM;
	repl_data_enc(buf, &d);
	ok(repl_data_dec(buf, n, SIZE, &g) == 0 && g.data == NULL,
	    "data: trim without payload");
	ok(repl_data_dec(buf, n + 1, SIZE, &g) == -1,
	    "data: trim with payload refused");
	d.cmd = NBD_CMD_READ;
	repl_data_enc(buf, &d);
	ok(repl_data_dec(buf, n, SIZE, &g) == -1, "data: read refused");
}

static void
test_small(void)
{
	struct repl_flush	 f = { 9, 4, REPL_D_ASYNC }, g;
	uint64_t		 seq, cur, hist[GI_HISTORY];
	uint64_t		 h0[GI_HISTORY] = { 1, 2, 3, 4 };
	uint32_t		 e, fl;
	size_t			 n;

	n = repl_flush_enc(buf, &f);
	ok(repl_flush_dec(buf, n, &g) == 0 && g.seq == 9 && g.epoch == 4 &&
	    g.flags == REPL_D_ASYNC, "flush: round trip");
	ok(repl_flush_dec(buf, n - 1, &g) == -1, "flush: short refused");
	n = repl_ack_enc(buf, 42, 5);
	ok(repl_ack_dec(buf, n, &seq, &e) == 0 && seq == 42 && e == 5,
	    "ack: round trip");
	ok(repl_ack_dec(buf, n + 1, &seq, &e) == -1, "ack: long refused");
	n = repl_gi_enc(buf, 77, h0);
	ok(repl_gi_dec(buf, n, &cur, hist) == 0 && cur == 77 &&
	    memcmp(hist, h0, sizeof(h0)) == 0, "gi: round trip");
	n = repl_gi_enc(buf, 0, h0);
	ok(repl_gi_dec(buf, n, &cur, hist) == -1, "gi: zero refused");
	n = repl_state_enc(buf, REPL_F_PEER_PRIMARY);
	ok(repl_state_dec(buf, n, &fl) == 0 && fl == REPL_F_PEER_PRIMARY,
	    "state: round trip");
	ok(repl_state_dec(buf, n - 1, &fl) == -1, "state: short refused");
}

static void
test_resync(void)
{
	static unsigned char	 hashes[REPL_RS_BLOCKS * REPL_RS_HASH];
	unsigned char		 mask[REPL_RS_BLOCKS / 8];
	const unsigned char	*bits, *mp;
	struct repl_csum	 c = { 7, 8192, 3 * 4096, REPL_RS_VERIFY,
				    hashes }, g;
	uint64_t		 off, id;
	uint32_t		 fl, blocks;
	size_t			 n, nb;

	n = repl_bitmap_enc(buf, 4096, REPL_BM_LAST);
	memset(buf + n, 0xa5, 100);
	ok(repl_bitmap_dec(buf, n + 100, 8192, &off, &fl, &bits, &nb) == 0 &&
	    off == 4096 && fl == REPL_BM_LAST && nb == 100 && bits[99] == 0xa5,
	    "bitmap: round trip");
	ok(repl_bitmap_dec(buf, n + 100, 4100, &off, &fl, &bits, &nb) == -1,
	    "bitmap: piece past the receiver's bitmap refused");
	repl_bitmap_enc(buf, 0, 0x80);
	ok(repl_bitmap_dec(buf, n, 8192, &off, &fl, &bits, &nb) == -1,
	    "bitmap: unknown flag refused");
	ok(repl_bitmap_dec(buf, n - 1, 8192, &off, &fl, &bits, &nb) == -1,
	    "bitmap: short refused");

	memset(hashes, 0x3c, sizeof(hashes));
	n = repl_csum_enc(buf, &c);
	ok(n == REPL_RS_CSUM_HDR + 3 * REPL_RS_HASH, "csum: size");
	ok(repl_csum_dec(buf, n, SIZE, &g) == 0 && g.id == 7 &&
	    g.offset == 8192 && g.len == 3 * 4096 && g.flags == REPL_RS_VERIFY
	    && g.hashes[0] == 0x3c, "csum: round trip");
	ok(repl_csum_dec(buf, n - 1, SIZE, &g) == -1, "csum: short refused");
	ok(repl_csum_dec(buf, n, 8192, &g) == -1, "csum: past the end refused");
	c.offset = 100;
	n = repl_csum_enc(buf, &c);
	ok(repl_csum_dec(buf, n, SIZE, &g) == -1, "csum: unaligned refused");
	c.offset = 0;
	c.len = REPL_CHUNK + 4096;
	put_be32(buf + 16, c.len);
	ok(repl_csum_dec(buf, n, SIZE, &g) == -1, "csum: oversized refused");

	memset(mask, 0, sizeof(mask));
	mask[1] = 0x81;
	n = repl_diff_enc(buf, 9, 16, mask);
	ok(repl_diff_dec(buf, n, &id, &blocks, &mp) == 0 && id == 9 &&
	    blocks == 16 && mp[1] == 0x81, "diff: round trip");
	ok(repl_diff_dec(buf, n + 1, &id, &blocks, &mp) == -1,
	    "diff: long refused");
	n = repl_diff_enc(buf, 9, REPL_RS_BLOCKS, mask);
	put_be32(buf + 8, REPL_RS_BLOCKS + 8);
	ok(repl_diff_dec(buf, n + 1, &id, &blocks, &mp) == -1,
	    "diff: too many blocks refused");
	n = repl_id_enc(buf, 12);
	ok(repl_id_dec(buf, n, &id) == 0 && id == 12, "id: round trip");
	ok(repl_id_dec(buf, n - 1, &id) == -1, "id: short refused");
}

static void
test_read(void)
{
	const unsigned char	*dp;
	uint64_t		 id, off;
	uint32_t		 len, e;
	size_t			 n, dn;

	n = repl_read_enc(buf, 7, SIZE - REPL_CHUNK, REPL_CHUNK);
	ok(n == REPL_READ_SIZE, "read: size");
	ok(repl_read_dec(buf, n, SIZE, &id, &off, &len) == 0 && id == 7 &&
	    off == SIZE - REPL_CHUNK && len == REPL_CHUNK, "read: round trip");
	ok(repl_read_dec(buf, n - 1, SIZE, &id, &off, &len) == -1,
	    "read: short refused");
	ok(repl_read_dec(buf, n, SIZE - 4096, &id, &off, &len) == -1,
	    "read: past the end refused");
	repl_read_enc(buf, 7, 0, REPL_CHUNK + 4096);
	ok(repl_read_dec(buf, n, SIZE, &id, &off, &len) == -1,
	    "read: over a chunk refused");
	repl_read_enc(buf, 7, 0, 0);
	ok(repl_read_dec(buf, n, SIZE, &id, &off, &len) == -1,
	    "read: empty refused");

	n = repl_rdata_enc(buf, 8, 0);
	memset(buf + n, 0x5a, 4096);
	ok(repl_rdata_dec(buf, n + 4096, &id, &e, &dp, &dn) == 0 && id == 8 &&
	    e == 0 && dn == 4096 && dp == buf + REPL_READ_DATA_HDR &&
	    dp[4095] == 0x5a, "read data: round trip");
	n = repl_rdata_enc(buf, 9, 5);
	ok(repl_rdata_dec(buf, n, &id, &e, &dp, &dn) == 0 && id == 9 &&
	    e == 5 && dn == 0, "read data: an error, no data");
	ok(repl_rdata_dec(buf, n + 1, &id, &e, &dp, &dn) == -1,
	    "read data: an error with data refused");
	ok(repl_rdata_dec(buf, n - 1, &id, &e, &dp, &dn) == -1,
	    "read data: short refused");
	ok(repl_rdata_dec(buf, n + REPL_CHUNK + 1, &id, &e, &dp, &dn) == -1,
	    "read data: over a chunk refused");
}

int
main(void)
{
	test_hello();
	test_data();
	test_small();
	test_resync();
	test_read();
	return done_testing();
}

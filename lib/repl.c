/* See LICENSE file for copyright and license details. */
/*
 * repl.c: encoding and checked decoding of blkmirror's replication
 * messages (see repl.h).  A decoder returns 0, or -1 when the message is
 * too short, too long, or names something out of range; the caller then
 * ends the link.
 */
#include <string.h>

#include "hatrio.h"
#include "nbd.h"
#include "repl.h"

size_t
repl_hello_enc(unsigned char *b, const struct repl_hello *h)
{
	int	i;

	put_be32(b, h->version);
	put_be64(b + 4, h->size);
	put_be32(b + 12, h->flags);
	put_be64(b + 16, h->current);
	put_be64(b + 24, h->bitmap);
	for (i = 0; i < GI_HISTORY; i++)
		put_be64(b + 32 + 8 * i, h->history[i]);
	put_be64(b + 32 + 8 * GI_HISTORY, h->promoted_at);
	put_be64(b + 40 + 8 * GI_HISTORY, h->oos_blocks);
	return REPL_HELLO_SIZE;
}

int
repl_hello_dec(const unsigned char *b, size_t len, struct repl_hello *h)
{
	int	i;

	if (len != REPL_HELLO_SIZE)
		return -1;
	h->version = get_be32(b);
	h->size = get_be64(b + 4);
	h->flags = get_be32(b + 12);
	h->current = get_be64(b + 16);
	h->bitmap = get_be64(b + 24);
	for (i = 0; i < GI_HISTORY; i++)
		h->history[i] = get_be64(b + 32 + 8 * i);
	h->promoted_at = get_be64(b + 32 + 8 * GI_HISTORY);
	h->oos_blocks = get_be64(b + 40 + 8 * GI_HISTORY);
	return 0;
}

size_t
repl_data_enc(unsigned char *b, const struct repl_data *d)
{
	put_be64(b, d->seq);
	put_be64(b + 8, d->epoch);
	put_be64(b + 16, d->offset);
	put_be32(b + 24, d->len);
	put_be16(b + 28, d->cmd);
	put_be16(b + 30, d->flags);
	return REPL_DATA_HDR;
}

/* size: of the resource; the range must lie inside it. */
int
repl_data_dec(const unsigned char *b, size_t len, uint64_t size,
    struct repl_data *d)
{
	if (len < REPL_DATA_HDR)
		return -1;
	d->seq = get_be64(b);
	d->epoch = get_be64(b + 8);
	d->offset = get_be64(b + 16);
	d->len = get_be32(b + 24);
	d->cmd = get_be16(b + 28);
	d->flags = get_be16(b + 30);
	if (d->len == 0 || d->len > REPL_CHUNK || d->offset > size ||
	    d->len > size - d->offset)
		return -1;
	switch (d->cmd) {
	case NBD_CMD_WRITE:
		if (len != REPL_DATA_HDR + (size_t)d->len)
			return -1;
		d->data = b + REPL_DATA_HDR;
		break;
	case NBD_CMD_TRIM:
	case NBD_CMD_WRITE_ZEROES:
		if (len != REPL_DATA_HDR)
			return -1;
		d->data = NULL;
		break;
	default:
		return -1;
	}
	return 0;
}

size_t
repl_flush_enc(unsigned char *b, const struct repl_flush *f)
{
	put_be64(b, f->seq);
	put_be64(b + 8, f->epoch);
	put_be16(b + 16, f->flags);
	return REPL_FLUSH_SIZE;
}

int
repl_flush_dec(const unsigned char *b, size_t len, struct repl_flush *f)
{
	if (len != REPL_FLUSH_SIZE)
		return -1;
	f->seq = get_be64(b);
	f->epoch = get_be64(b + 8);
	f->flags = get_be16(b + 16);
	return 0;
}

size_t
repl_ack_enc(unsigned char *b, uint64_t seq, uint32_t err)
{
	put_be64(b, seq);
	put_be32(b + 8, err);
	return REPL_ACK_SIZE;
}

int
repl_ack_dec(const unsigned char *b, size_t len, uint64_t *seq,
    uint32_t *err)
{
	if (len != REPL_ACK_SIZE)
		return -1;
	*seq = get_be64(b);
	*err = get_be32(b + 8);
	return 0;
}

size_t
repl_gi_enc(unsigned char *b, uint64_t cur, const uint64_t *hist)
{
	int	i;

	put_be64(b, cur);
	for (i = 0; i < GI_HISTORY; i++)
		put_be64(b + 8 + 8 * i, hist[i]);
	return REPL_GI_SIZE;
}

int
repl_gi_dec(const unsigned char *b, size_t len, uint64_t *cur,
    uint64_t *hist)
{
	int	i;

	if (len != REPL_GI_SIZE)
		return -1;
	*cur = get_be64(b);
	for (i = 0; i < GI_HISTORY; i++)
		hist[i] = get_be64(b + 8 + 8 * i);
	return *cur == 0 ? -1 : 0;
}

size_t
repl_state_enc(unsigned char *b, uint32_t flags)
{
	put_be32(b, flags);
	return REPL_STATE_SIZE;
}

int
repl_state_dec(const unsigned char *b, size_t len, uint32_t *flags)
{
	if (len != REPL_STATE_SIZE)
		return -1;
	*flags = get_be32(b);
	return 0;
}

/*
 * BITMAP: the header; the caller puts the bitmap bytes after it.  On
 * decoding, bm_bytes is the receiver's bitmap size: the piece must fit.
 */
size_t
repl_bitmap_enc(unsigned char *b, uint64_t off, uint32_t flags)
{
	put_be64(b, off);
	put_be32(b + 8, flags);
	return REPL_BITMAP_HDR;
}

int
repl_bitmap_dec(const unsigned char *b, size_t len, size_t bm_bytes,
    uint64_t *off, uint32_t *flags, const unsigned char **bits, size_t *n)
{
	if (len < REPL_BITMAP_HDR || len - REPL_BITMAP_HDR > REPL_CHUNK)
		return -1;
	*off = get_be64(b);
	*flags = get_be32(b + 8);
	*n = len - REPL_BITMAP_HDR;
	*bits = b + REPL_BITMAP_HDR;
	if (*off > bm_bytes || *n > bm_bytes - *off ||
	    (*flags & ~(uint32_t)REPL_BM_LAST) != 0)
		return -1;
	return 0;
}

/* RS_CSUM: the header and the hashes, one per 4 KiB block. */
size_t
repl_csum_enc(unsigned char *b, const struct repl_csum *c)
{
	size_t	n = (size_t)(c->len / REPL_RS_BLOCK) * REPL_RS_HASH;

	put_be64(b, c->id);
	put_be64(b + 8, c->offset);
	put_be32(b + 16, c->len);
	put_be16(b + 20, c->flags);
	memcpy(b + REPL_RS_CSUM_HDR, c->hashes, n);
	return REPL_RS_CSUM_HDR + n;
}

int
repl_csum_dec(const unsigned char *b, size_t len, uint64_t size,
    struct repl_csum *c)
{
	if (len < REPL_RS_CSUM_HDR)
		return -1;
	c->id = get_be64(b);
	c->offset = get_be64(b + 8);
	c->len = get_be32(b + 16);
	c->flags = get_be16(b + 20);
	c->hashes = b + REPL_RS_CSUM_HDR;
	if (c->len == 0 || c->len > REPL_CHUNK || c->len % REPL_RS_BLOCK ||
	    c->offset % REPL_RS_BLOCK || c->offset > size ||
	    c->len > size - c->offset ||
	    (c->flags & ~(uint16_t)REPL_RS_VERIFY) != 0 ||
	    len != REPL_RS_CSUM_HDR + (size_t)(c->len / REPL_RS_BLOCK) *
	    REPL_RS_HASH)
		return -1;
	return 0;
}

/* RS_DIFF: a bit per block, block i in byte i / 8, bit i % 8. */
size_t
repl_diff_enc(unsigned char *b, uint64_t id, uint32_t blocks,
    const unsigned char *mask)
{
	put_be64(b, id);
	put_be32(b + 8, blocks);
	memcpy(b + REPL_RS_DIFF_HDR, mask, (blocks + 7) / 8);
	return REPL_RS_DIFF_HDR + (blocks + 7) / 8;
}

int
repl_diff_dec(const unsigned char *b, size_t len, uint64_t *id,
    uint32_t *blocks, const unsigned char **mask)
{
	if (len < REPL_RS_DIFF_HDR)
		return -1;
	*id = get_be64(b);
	*blocks = get_be32(b + 8);
	*mask = b + REPL_RS_DIFF_HDR;
	if (*blocks == 0 || *blocks > REPL_RS_BLOCKS ||
	    len != REPL_RS_DIFF_HDR + (*blocks + 7) / 8)
		return -1;
	return 0;
}

size_t
repl_id_enc(unsigned char *b, uint64_t id)
{
	put_be64(b, id);
	return REPL_ID_SIZE;
}

int
repl_id_dec(const unsigned char *b, size_t len, uint64_t *id)
{
	if (len != REPL_ID_SIZE)
		return -1;
	*id = get_be64(b);
	return 0;
}

/* READ: a range of the receiver's store, at most REPL_CHUNK bytes. */
size_t
repl_read_enc(unsigned char *b, uint64_t id, uint64_t off, uint32_t len)
{
	put_be64(b, id);
	put_be64(b + 8, off);
	put_be32(b + 16, len);
	return REPL_READ_SIZE;
}

int
repl_read_dec(const unsigned char *b, size_t len, uint64_t size,
    uint64_t *id, uint64_t *off, uint32_t *n)
{
	if (len != REPL_READ_SIZE)
		return -1;
	*id = get_be64(b);
	*off = get_be64(b + 8);
	*n = get_be32(b + 16);
	if (*n == 0 || *n > REPL_CHUNK || *off > size || *n > size - *off)
		return -1;
	return 0;
}

/* READ_DATA: the header; the data (when no error) follows it. */
size_t
repl_rdata_enc(unsigned char *b, uint64_t id, uint32_t err)
{
	put_be64(b, id);
	put_be32(b + 8, err);
	return REPL_READ_DATA_HDR;
}

int
repl_rdata_dec(const unsigned char *b, size_t len, uint64_t *id,
    uint32_t *err, const unsigned char **data, size_t *n)
{
	if (len < REPL_READ_DATA_HDR)
		return -1;
	*id = get_be64(b);
	*err = get_be32(b + 8);
	*data = b + REPL_READ_DATA_HDR;
	*n = len - REPL_READ_DATA_HDR;
	if (*n > REPL_CHUNK || (*err != 0 && *n != 0))
		return -1;
	return 0;
}

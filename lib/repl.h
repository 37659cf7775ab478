/* See LICENSE file for copyright and license details. */
/*
 * repl.h: blkmirror's replication messages, carried by the secure link
 * (link.h) between two nodes.  Every message has a fixed header in network
 * byte order; DATA is followed by the data of a WRITE.  Decoding checks every
 * length and range before anything is used.
 *
 *	HELLO	version, size, flags, current, bitmap (for the receiver),
 *		history[4], promoted_at, oos_blocks
 *	STATE	flags: role changes and "connected to a primary"
 *	GI	a primary's new current GI and history, for in-sync peers
 *	DATA	seq, epoch, offset, length, command, flags [, data]
 *	FLUSH	seq, epoch, flags
 *	ACK	seq, error (0 or an errno); for async peers cumulative
 *
 * Diskless (a primary whose store failed reads through its sync peer):
 *	READ	id, offset, length: read from the receiver's store
 *	READ_DATA id, error (0 or an errno) [, the data when 0]
 *
 * Resync, between a sync source and its target (see blkmirror(8)):
 *	BITMAP	offset into the sender's dirty bitmap for the receiver,
 *		flags (LAST: the sender's bitmap is complete), bitmap bytes
 *	RS_DATA	as DATA; seq is the source's request id
 *	RS_CSUM	id, offset, length, flags, a hash per 4 KiB block
 *	RS_DIFF	id, blocks, a bit per block whose hash differed
 *	RS_FLUSH id: make every acknowledged resync write durable
 *	RS_ACK	as ACK, for RS_DATA and RS_FLUSH
 *	RS_DONE	as GI: the source's identifiers; the target is in sync
 *
 * Split brain, between two nodes whose data diverged (blkmirror.c):
 *	SB	code (DISCARD: a person chose the receiver as the victim;
 *		SAVED: the sender, the victim, saved its blocks and is the
 *		receiver's sync target now), then the save file's path
 */
#ifndef REPL_H
#define REPL_H

#include <stddef.h>
#include <stdint.h>

#include "gi.h"

#define REPL_VERSION	1

enum repl_type {
	REPL_HELLO = 1,
	REPL_STATE,
	REPL_GI,
	REPL_DATA,
	REPL_FLUSH,
	REPL_ACK,
	REPL_BITMAP,
	REPL_RS_DATA,
	REPL_RS_CSUM,
	REPL_RS_DIFF,
	REPL_RS_FLUSH,
	REPL_RS_ACK,
	REPL_RS_DONE,
	REPL_READ,
	REPL_READ_DATA,
	REPL_SB = 32,
	REPL_PING,		/* empty: the link is alive */
};

/* HELLO and STATE flags */
#define REPL_F_PRIMARY		0x01	/* primary now */
#define REPL_F_CRASHED		0x02	/* crashed as primary */
#define REPL_F_PEER_PRIMARY	0x04	/* connected to another primary */
#define REPL_F_INSYNC		0x08	/* STATE: the sender counts us as
					   in sync */
#define REPL_F_INCONSISTENT	0x10	/* a resync into the sender
					   is unfinished */
#define REPL_F_STARTING		0x20	/* started with -p, primary once
					   it has quorum and no veto */

/* DATA and FLUSH flags */
#define REPL_D_FUA		0x01
#define REPL_D_ASYNC		0x02	/* epoch stream to a DR node */

#define REPL_HELLO_SIZE		(4 + 8 + 4 + 8 + 8 + 8 * GI_HISTORY + 8 + 8)
#define REPL_STATE_SIZE		4
#define REPL_GI_SIZE		(8 + 8 * GI_HISTORY)
#define REPL_DATA_HDR		(8 + 8 + 8 + 4 + 2 + 2)
#define REPL_FLUSH_SIZE		(8 + 8 + 2)
#define REPL_ACK_SIZE		(8 + 4)
#define REPL_CHUNK		(1u << 20)	/* data per DATA message */

/* BITMAP flags */
#define REPL_BM_LAST		0x01

/* RS_CSUM flags */
#define REPL_RS_VERIFY		0x01	/* only compare: report, move nothing */

#define REPL_BITMAP_HDR		(8 + 4)
#define REPL_RS_BLOCK		4096
#define REPL_RS_HASH		16	/* BLAKE2b bytes per block */
#define REPL_RS_BLOCKS		(REPL_CHUNK / REPL_RS_BLOCK)
#define REPL_RS_CSUM_HDR	(8 + 8 + 4 + 2)
#define REPL_RS_CSUM_MAX	(REPL_RS_CSUM_HDR + REPL_RS_BLOCKS * REPL_RS_HASH)
#define REPL_RS_DIFF_HDR	(8 + 4)
#define REPL_RS_DIFF_MAX	(REPL_RS_DIFF_HDR + REPL_RS_BLOCKS / 8)
#define REPL_ID_SIZE		8
#define REPL_READ_SIZE		(8 + 8 + 4)
#define REPL_READ_DATA_HDR	(8 + 4)

struct repl_hello {
	uint32_t	 version;
	uint64_t	 size;
	uint32_t	 flags;
	uint64_t	 current, bitmap;
	uint64_t	 history[GI_HISTORY];
	uint64_t	 promoted_at;
	uint64_t	 oos_blocks;
};

struct repl_data {
	uint64_t	 seq, epoch, offset;
	uint32_t	 len;
	uint16_t	 cmd, flags;
	const unsigned char *data;	/* WRITE: len bytes, else NULL */
};

struct repl_flush {
	uint64_t	 seq, epoch;
	uint16_t	 flags;
};

struct repl_csum {
	uint64_t	 id, offset;
	uint32_t	 len;
	uint16_t	 flags;
	const unsigned char *hashes;	/* REPL_RS_HASH per block */
};

size_t	 repl_hello_enc(unsigned char *, const struct repl_hello *);
int	 repl_hello_dec(const unsigned char *, size_t, struct repl_hello *);
size_t	 repl_data_enc(unsigned char *, const struct repl_data *);
int	 repl_data_dec(const unsigned char *, size_t, uint64_t,
	    struct repl_data *);
size_t	 repl_flush_enc(unsigned char *, const struct repl_flush *);
int	 repl_flush_dec(const unsigned char *, size_t, struct repl_flush *);
size_t	 repl_ack_enc(unsigned char *, uint64_t, uint32_t);
int	 repl_ack_dec(const unsigned char *, size_t, uint64_t *, uint32_t *);
size_t	 repl_gi_enc(unsigned char *, uint64_t, const uint64_t *);
int	 repl_gi_dec(const unsigned char *, size_t, uint64_t *, uint64_t *);
size_t	 repl_state_enc(unsigned char *, uint32_t);
int	 repl_state_dec(const unsigned char *, size_t, uint32_t *);
size_t	 repl_bitmap_enc(unsigned char *, uint64_t, uint32_t);
int	 repl_bitmap_dec(const unsigned char *, size_t, size_t, uint64_t *,
	    uint32_t *, const unsigned char **, size_t *);
size_t	 repl_csum_enc(unsigned char *, const struct repl_csum *);
int	 repl_csum_dec(const unsigned char *, size_t, uint64_t,
	    struct repl_csum *);
size_t	 repl_diff_enc(unsigned char *, uint64_t, uint32_t,
	    const unsigned char *);
int	 repl_diff_dec(const unsigned char *, size_t, uint64_t *, uint32_t *,
	    const unsigned char **);
size_t	 repl_id_enc(unsigned char *, uint64_t);
int	 repl_id_dec(const unsigned char *, size_t, uint64_t *);
size_t	 repl_read_enc(unsigned char *, uint64_t, uint64_t, uint32_t);
int	 repl_read_dec(const unsigned char *, size_t, uint64_t, uint64_t *,
	    uint64_t *, uint32_t *);
size_t	 repl_rdata_enc(unsigned char *, uint64_t, uint32_t);
int	 repl_rdata_dec(const unsigned char *, size_t, uint64_t *,
	    uint32_t *, const unsigned char **, size_t *);

#endif /* REPL_H */

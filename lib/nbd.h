/* See LICENSE file for copyright and license details. */
/*
 * nbd.h: the NBD protocol (fixed newstyle, simple replies) and an NBD
 * server on libevent: handshake, request framing and checks, reply queues
 * and reusable request buffers.  What a request does to the disk is left
 * to the caller's submit function, which answers with nbd_req_done().
 */
#ifndef NBD_H
#define NBD_H

#include <sys/queue.h>

#include <stddef.h>
#include <stdint.h>

#include "ioq.h"

#define NBD_MAGIC		0x4e42444d41474943ULL	/* "NBDMAGIC" */
#define NBD_IHAVEOPT		0x49484156454f5054ULL
#define NBD_REP_MAGIC		0x0003e889045565a9ULL
#define NBD_REQUEST_MAGIC	0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC	0x67446698u

#define NBD_FLAG_FIXED_NEWSTYLE	0x0001
#define NBD_FLAG_NO_ZEROES	0x0002
#define NBD_FLAG_C_FIXED_NEWSTYLE 0x0001
#define NBD_FLAG_C_NO_ZEROES	0x0002

#define NBD_OPT_EXPORT_NAME	1
#define NBD_OPT_ABORT		2
#define NBD_OPT_LIST		3
#define NBD_OPT_STARTTLS	5
#define NBD_OPT_INFO		6
#define NBD_OPT_GO		7
#define NBD_OPT_STRUCTURED_REPLY 8

#define NBD_REP_ACK		1
#define NBD_REP_SERVER		2
#define NBD_REP_INFO		3
#define NBD_REP_FLAG_ERROR	0x80000000u
#define NBD_REP_ERR_UNSUP	(NBD_REP_FLAG_ERROR | 1)
#define NBD_REP_ERR_POLICY	(NBD_REP_FLAG_ERROR | 2)
#define NBD_REP_ERR_INVALID	(NBD_REP_FLAG_ERROR | 3)
#define NBD_REP_ERR_UNKNOWN	(NBD_REP_FLAG_ERROR | 6)

#define NBD_INFO_EXPORT		0
#define NBD_INFO_NAME		1
#define NBD_INFO_DESCRIPTION	2
#define NBD_INFO_BLOCK_SIZE	3

#define NBD_FLAG_HAS_FLAGS	0x0001
#define NBD_FLAG_READ_ONLY	0x0002
#define NBD_FLAG_SEND_FLUSH	0x0004
#define NBD_FLAG_SEND_FUA	0x0008
#define NBD_FLAG_SEND_TRIM	0x0020
#define NBD_FLAG_SEND_WRITE_ZEROES 0x0040
#define NBD_FLAG_CAN_MULTI_CONN	0x0100

#define NBD_CMD_READ		0
#define NBD_CMD_WRITE		1
#define NBD_CMD_DISC		2
#define NBD_CMD_FLUSH		3
#define NBD_CMD_TRIM		4
#define NBD_CMD_WRITE_ZEROES	6
#define NBD_CMD_FLAG_FUA	0x0001
#define NBD_CMD_FLAG_NO_HOLE	0x0002

#define NBD_EPERM		1
#define NBD_EIO			5
#define NBD_ENOMEM		12
#define NBD_EINVAL		22
#define NBD_ENOSPC		28
#define NBD_EOVERFLOW		75
#define NBD_ENOTSUP		95
#define NBD_ESHUTDOWN		108

#define NBD_REQ_SIZE		28
#define NBD_REPLY_SIZE		16
#define NBD_MAX_PAYLOAD		(32u << 20)	/* READ and WRITE */
#define NBD_MIN_BLOCK		1
#define NBD_PREF_BLOCK		4096
#define NBD_OPT_MAX		4096		/* option data we accept */
#define NBD_CONN_INFLIGHT	256		/* then stop reading */
#define NBD_CONN_BYTES		(64u << 20)	/* buffers, then stop reading */
#define NBD_FREE_MAX		(64u << 20)	/* buffers kept for reuse */

#define EARLY_NONE		0
#define EARLY_SENT		1
#define EARLY_PARTIAL		2

struct nbd_conn;
struct nbd_server;

struct nbd_req {
	struct ioq_job		 job;
	TAILQ_ENTRY(nbd_req)	 entry;		/* reply queue, free list */
	TAILQ_ENTRY(nbd_req)	 wentry;	/* for the submit side */
	struct nbd_conn		*conn;
	unsigned char		 cookie[8];
	uint64_t		 offset;
	uint32_t		 len;
	uint16_t		 type, flags;
	unsigned char		*buf;		/* READ, WRITE: len bytes */
	int			 bclass;
	int			 err;		/* errno for the reply */
	unsigned char		 rhdr[NBD_REPLY_SIZE];
	size_t			 sent;
	int			 early;		/* see nbd_req_reply_early */
	/* free for the submit side */
	int			 state;
	uint64_t		 cur, end, need_gen;
	uint32_t		 ext_lo, ext_hi;
	int			 fd;
	/* replication (blkmirror) */
	unsigned int		 acks;		/* peer ACKs still awaited */
	int			 local_done, lerr, early_ok, repl;
	int			 wb;		/* start writeback when written */
	uint64_t		 need_bm;	/* metadata generation to wait for */
	uint64_t		 t0;		/* submitted (now_usec) */
};

struct nbd_stats {
	uint64_t	reads, writes, flushes, trims, zeroes;
	uint64_t	read_bytes, written_bytes, errors;
	uint64_t	conns_total;
};

struct nbd_hooks {
	/* Start one checked request; answer with nbd_req_done(). */
	void	(*submit)(struct nbd_req *, void *);
	/* A connection came or went: event, then key=value details. */
	void	(*note)(void *, const char *, const char *);
	/* After reading from a client: collect finished requests. */
	void	(*poll)(void *);
	void	*arg;
};

struct nbd_server *nbd_server_new(struct event_base *, uint64_t,
		    const char *, const struct nbd_hooks *);
int		 nbd_listen_unix(struct nbd_server *, const char *);
int		 nbd_listen_tcp(struct nbd_server *, const char *);
void		 nbd_set_readonly(struct nbd_server *, int);
void		 nbd_req_done(struct nbd_req *, int);
int		 nbd_req_reply_early(struct nbd_req *);
void		 nbd_server_flush(struct nbd_server *);
void		 nbd_server_stop(struct nbd_server *);
int		 nbd_server_drained(struct nbd_server *);
unsigned int	 nbd_server_conns(struct nbd_server *);
const struct nbd_stats *nbd_server_stats(struct nbd_server *);
void		 nbd_server_free(struct nbd_server *);

/* Protocol helpers (also for the unit tests). */
int	 nbd_errno(int);
int	 nbd_check_request(uint16_t, uint64_t, uint32_t, uint64_t);
int	 nbd_bufclass(uint32_t);

#endif /* NBD_H */

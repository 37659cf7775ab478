/* See LICENSE file for copyright and license details. */
/*
 * hb.h: heartbeat packets, shared by hbsend and hbwatch.
 *
 * A packet is a fixed header, a body and an authentication tag:
 *
 *	magic	4	"HThb"
 *	version	1	HB_VERSION
 *	type	1	HB_TYPE_HEARTBEAT or HB_TYPE_LEAVING
 *	flags	2	0 (anything else is refused)
 *	length	2	length of the body
 *	body		incarnation u64, seq u64, time u64 (the sender's wall
 *			clock in microseconds since the epoch), then three
 *			strings, each a length byte and that many bytes:
 *			cluster, node, status
 *	tag	32	HMAC-SHA-512-256 of header and body
 *
 * Integers are big-endian.  The tag key is derived from the cluster key,
 * so the cluster key itself never authenticates anything directly.
 */
#ifndef HB_H
#define HB_H

#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

#include "hatrio.h"

struct event;
struct event_base;
struct evbuffer;

#define HB_MAGIC		"HThb"
#define HB_VERSION		2	/* 2: the time field */
#define HB_TYPE_HEARTBEAT	1
#define HB_TYPE_LEAVING		2
#define HB_HDR_LEN		10
#define HB_TAG_LEN		32
#define HB_NAME_MAX		64
#define HB_STATUS_MAX		200
#define HB_BODY_FIXED		(8 + 8 + 8)
#define HB_BODY_MIN		(HB_BODY_FIXED + 1 + 1 + 1 + 1 + 1)
#define HB_BODY_MAX		(HB_BODY_FIXED + 3 + 2 * HB_NAME_MAX + \
				    HB_STATUS_MAX)
#define HB_PKT_MIN		(HB_HDR_LEN + HB_BODY_MIN + HB_TAG_LEN)
#define HB_PKT_MAX		(HB_HDR_LEN + HB_BODY_MAX + HB_TAG_LEN)

/* A packet received out of order by at most this many is not a replay. */
#define HB_REORDER_WINDOW	8

enum hb_err {
	HB_OK = 0,
	HB_ESHORT,	/* shorter than the smallest packet */
	HB_EMAGIC,
	HB_EVERSION,
	HB_ETYPE,
	HB_EFLAGS,
	HB_ELENGTH,	/* length field does not match the packet */
	HB_EAUTH,	/* wrong key or altered packet */
	HB_EBODY,	/* authentic but malformed body */
	HB_NERR
};

struct hb_packet {
	uint8_t		 type;
	uint64_t	 incarnation;
	uint64_t	 seq;
	uint64_t	 time;		/* sender's wall clock, usec */
	char		 cluster[HB_NAME_MAX + 1];
	char		 node[HB_NAME_MAX + 1];
	char		 status[HB_STATUS_MAX + 1];
};

/* The highest (incarnation, seq) accepted from one source. */
struct hb_replay {
	int		 seen;
	uint64_t	 incarnation;
	uint64_t	 seq;
};

/*
 * stdout as a stream (hbsend's pipe medium, hbwatch's event lines): what
 * is queued in buf is written without blocking when stdout is a pipe or
 * a socket, so that a slow reader never stops the event loop.
 */
struct hb_out {
	struct evbuffer	*buf;
	struct event	*ev;	/* write interest; NULL: stdout blocks */
	const char	*what;	/* names stdout when a write fails */
};

/* A medium as given on the command line. */
#define HB_MEDIUM_UDP	1
#define HB_MEDIUM_MCAST	2
#define HB_MEDIUM_BCAST	3
#define HB_MEDIUM_PIPE	4

struct hb_medium {
	int			 kind;
	struct sockaddr_storage	 ss;	/* address and port (not PIPE) */
	socklen_t		 sslen;
	unsigned int		 ifindex;	/* MCAST %IFACE, BCAST IFACE */
	char			 ifname[32];
	int			 any;	/* udp:*:PORT */
};

void		 hb_derive_key(const unsigned char [HATRIO_KEY_BYTES],
		    unsigned char [HB_TAG_LEN]);
int		 hb_valid_name(const char *);
int		 hb_valid_status(const char *);
size_t		 hb_encode(const struct hb_packet *, const unsigned char *,
		    unsigned char *, size_t);
int		 hb_header(const unsigned char *, size_t, size_t *);
int		 hb_parse_body(const unsigned char *, size_t,
		    struct hb_packet *);
int		 hb_decode(const unsigned char *, size_t, const unsigned char *,
		    struct hb_packet *);
const char	*hb_strerror(int);
int		 hb_newer(const struct hb_replay *, uint64_t, uint64_t);
int		 hb_fresh(uint64_t, uint64_t, uint64_t, int64_t *);
void		 hb_accept(struct hb_replay *, uint64_t, uint64_t);
const char	*hb_medium_parse(const char *, int, struct hb_medium *);
const char	*hb_medium_arg(const char *, int, struct hb_medium *, int *);
const char	*hb_addr_str(const struct sockaddr *, char *, size_t);
void		 hb_status_clean(char *);

/*
 * What hbsend and hbwatch both do around the packets: option errors, the
 * heartbeat key, the node name, the event base, stdout and stdin.
 */
void		 hb_badopt(int, const char *, const char *)
		    __attribute__((noreturn));
const char	*hb_opt_name(int, const char *);
void		 hb_opt_duration(int, const char *, uint64_t *);
void		 hb_opt_fd(int, const char *, int *);
const char	*hb_key_load(const char *, unsigned char [HB_TAG_LEN]);
const char	*hb_node_default(char *, size_t);
struct event_base *hb_base_new(void);
int		 hb_out_nonblock(int);
int		 hb_out_flush(struct evbuffer *, int, struct event *);
void		 hb_out_block(int);
void		 hb_out_open(struct hb_out *, struct event_base *,
		    const char *);
void		 hb_out_write(struct hb_out *);
void		 hb_out_close(struct hb_out *);
int		 hb_stdin_read(struct evbuffer *, int);

#endif /* HB_H */

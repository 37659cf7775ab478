/* See LICENSE file for copyright and license details. */
/*
 * nbd.c: an NBD server (fixed newstyle handshake, simple replies) on
 * libevent.  Requests are read straight into buffers from per-size free
 * lists that are never given back, replies leave with writev() in batches,
 * and a connection stops reading while NBD_CONN_INFLIGHT of its requests
 * are in flight.  A peer that breaks the protocol loses its connection;
 * nobody else notices.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "hatrio.h"
#include "nbd.h"

#define RBUF_SIZE	(64 * 1024)
#define NCLASS		14		/* 4 KiB << 0 .. 13 = 32 MiB */
#define IOV_BATCH	64
#define MAX_LISTEN	4

enum cstate { HS_FLAGS, HS_OPT, TX_HDR, TX_PAYLOAD };

struct nbd_conn {
	TAILQ_ENTRY(nbd_conn)	 entry;
	TAILQ_ENTRY(nbd_conn)	 dirty_entry;
	struct nbd_server	*srv;
	int			 fd;
	unsigned int		 id;
	char			 peer[96];
	struct event		*rev, *wev;
	int			 reading;	/* rev is added */
	int			 writing;	/* wev is added */
	int			 dirty;		/* on srv->dirty */
	int			 closing;	/* after replies: close */
	int			 dead;		/* fd closed, await inflight */
	int			 busy;		/* in conn_kill: keep it */
	int			 announced;	/* client-connect noted */
	int			 no_zeroes;
	enum cstate		 state;
	unsigned char		*rbuf;
	size_t			 rstart, rend;
	struct nbd_req		*cur;		/* payload being read */
	uint32_t		 got;
	unsigned char		*obuf;		/* handshake output */
	size_t			 olen, ooff, ocap;
	TAILQ_HEAD(, nbd_req)	 outq;
	unsigned int		 inflight;
	size_t			 inbytes;	/* buffers of its requests */
	/*
	 * wlock guards the socket's write side, outq and the handshake
	 * output against the I/O threads' early replies; stuck: a thread
	 * wrote part of a reply, whose rest must go first.
	 */
	pthread_mutex_t		 wlock;
	int			 stuck;
};

struct nbd_server {
	struct event_base	*base;
	uint64_t		 size;
	char			*name;
	struct nbd_hooks	 hooks;
	int			 readonly;
	int			 stopped;
	int			 lfd[MAX_LISTEN];
	char			*lpath[MAX_LISTEN];
	struct event		*lev[MAX_LISTEN];
	int			 nlisten;
	TAILQ_HEAD(, nbd_conn)	 conns;
	TAILQ_HEAD(, nbd_conn)	 dirty;
	unsigned int		 nconns, nextid;
	TAILQ_HEAD(, nbd_req)	 freereq;
	struct bufl {
		void		*next;
	}			*freebuf[NCLASS];
	size_t			 freebytes;	/* on the free lists */
	struct nbd_stats	 st;
};

static void	conn_read(evutil_socket_t, short, void *);
static void	conn_write(evutil_socket_t, short, void *);
static void	conn_flush(struct nbd_conn *);
static void	conn_kill(struct nbd_conn *, const char *);
static void	conn_maybe_free(struct nbd_conn *);
static void	req_release(struct nbd_req *);
static void	mark_dirty(struct nbd_conn *);

/* nbd_errno: the protocol's error number for a system errno. */
int
nbd_errno(int e)
{
	switch (e) {
	case 0:
		return 0;
	case EPERM:
	case EROFS:
		return NBD_EPERM;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
		return NBD_EINVAL;
	case ENOSPC:
	case EFBIG:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP:
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

/*
 * nbd_check_request: 0 if a request may go on, else the errno to reply
 * with, or -1 when the connection must be dropped (a write payload too big
 * to read).  Writes past the end get ENOSPC, other commands EINVAL.
 */
int
nbd_check_request(uint16_t type, uint64_t off, uint32_t len, uint64_t size)
{
	int	inrange = off <= size && len <= size - off;

	switch (type) {
	case NBD_CMD_READ:
		if (len > NBD_MAX_PAYLOAD)
			return EINVAL;
		return inrange ? 0 : EINVAL;
	case NBD_CMD_WRITE:
		if (len > NBD_MAX_PAYLOAD)
			return -1;
		return inrange ? 0 : ENOSPC;
	case NBD_CMD_TRIM:
	case NBD_CMD_WRITE_ZEROES:
		return inrange ? 0 : ENOSPC;
	case NBD_CMD_FLUSH:
	case NBD_CMD_DISC:
		return 0;
	default:
		return EINVAL;
	}
}

/* nbd_bufclass: the free list for a buffer of len bytes. */
int
nbd_bufclass(uint32_t len)
{
	int	k = 0;

	while (k < NCLASS - 1 && ((size_t)4096 << k) < len)
		k++;
	return k;
}

static unsigned char *
buf_get(struct nbd_server *s, int k)
{
	struct bufl	*b;
	void		*p;

	if ((b = s->freebuf[k]) != NULL) {
		s->freebuf[k] = b->next;
		s->freebytes -= (size_t)4096 << k;
		return (unsigned char *)b;
	}
	if (posix_memalign(&p, 4096, (size_t)4096 << k) != 0)
		return NULL;
	return p;
}

static void
buf_put(struct nbd_server *s, int k, unsigned char *p)
{
	struct bufl	*b = (struct bufl *)(void *)p;

	/* What a burst took goes back beyond a bound. */
	if (s->freebytes + ((size_t)4096 << k) > NBD_FREE_MAX) {
		free(p);
		return;
	}
	s->freebytes += (size_t)4096 << k;
	b->next = s->freebuf[k];
	s->freebuf[k] = b;
}

static struct nbd_req *
req_get(struct nbd_conn *c)
{
	struct nbd_server	*s = c->srv;
	struct nbd_req		*r;

	if ((r = TAILQ_FIRST(&s->freereq)) != NULL)
		TAILQ_REMOVE(&s->freereq, r, entry);
	else if ((r = malloc(sizeof(*r))) == NULL)
		return NULL;
	memset(r, 0, offsetof(struct nbd_req, state));
	r->bclass = -1;
	r->conn = c;
	c->inflight++;
	return r;
}

static void
req_release(struct nbd_req *r)
{
	struct nbd_conn		*c = r->conn;
	struct nbd_server	*s = c->srv;

	if (r->buf != NULL) {
		c->inbytes -= (size_t)4096 << r->bclass;
		buf_put(s, r->bclass, r->buf);
	}
	r->buf = NULL;
	TAILQ_INSERT_HEAD(&s->freereq, r, entry);
	c->inflight--;
	if (c->dead)
		conn_maybe_free(c);
	else if (c->closing && c->inflight == 0)
		/*
		 * The last answer of a closing connection (perhaps one a
		 * worker sent early, before the loop saw the DISC): the next
		 * flush closes it.
		 */
		mark_dirty(c);
	else if (!c->reading && !c->closing && !s->stopped &&
	    c->inflight < NBD_CONN_INFLIGHT / 2 &&
	    c->inbytes <= NBD_CONN_BYTES / 2) {
		event_add(c->rev, NULL);
		c->reading = 1;
		/* requests already read wait in rbuf: no readable event
		   may ever come for them */
		if (c->rstart < c->rend)
			event_active(c->rev, EV_READ, 0);
	}
}

static void
mark_dirty(struct nbd_conn *c)
{
	if (!c->dirty && !c->dead) {
		c->dirty = 1;
		TAILQ_INSERT_TAIL(&c->srv->dirty, c, dirty_entry);
	}
}

/* Queue a reply; it leaves at the next nbd_server_flush(). */
void
nbd_req_done(struct nbd_req *r, int err)
{
	struct nbd_conn		*c = r->conn;
	struct nbd_server	*s = c->srv;

	r->err = nbd_errno(err);
	if (r->err != 0)
		s->st.errors++;
	else if (r->type == NBD_CMD_READ) {
		s->st.reads++;
		s->st.read_bytes += r->len;
	} else if (r->type == NBD_CMD_WRITE) {
		s->st.writes++;
		s->st.written_bytes += r->len;
	} else if (r->type == NBD_CMD_FLUSH)
		s->st.flushes++;
	else if (r->type == NBD_CMD_TRIM)
		s->st.trims++;
	else if (r->type == NBD_CMD_WRITE_ZEROES)
		s->st.zeroes++;
	if (c->dead || r->early == EARLY_SENT) {
		req_release(r);
		return;
	}
	pthread_mutex_lock(&c->wlock);
	if (r->early == EARLY_PARTIAL) {
		/* Its first bytes are out: the rest goes before anything. */
		TAILQ_INSERT_HEAD(&c->outq, r, entry);
		c->stuck = 0;
	} else {
		put_be32(r->rhdr, NBD_SIMPLE_REPLY_MAGIC);
		put_be32(r->rhdr + 4, r->err);
		memcpy(r->rhdr + 8, r->cookie, 8);
		r->sent = 0;
		TAILQ_INSERT_TAIL(&c->outq, r, entry);
	}
	pthread_mutex_unlock(&c->wlock);
	mark_dirty(c);
}

/*
 * nbd_req_reply_early: called by an I/O thread when r succeeded, to send
 * its reply at once if nothing else is waiting to be written on that
 * connection; this saves a trip through the event loop.  nbd_req_done()
 * must still follow, from the loop, and then only does the bookkeeping.
 * Returns 1 when the loop need not be woken for it: never on a connection
 * that is closing, which the loop closes only once nothing is in flight.
 */
int
nbd_req_reply_early(struct nbd_req *r)
{
	struct nbd_conn	*c = r->conn;
	struct iovec	 iov[2];
	ssize_t		 n;
	int		 niov = 1, closing;

	put_be32(r->rhdr, NBD_SIMPLE_REPLY_MAGIC);
	put_be32(r->rhdr + 4, 0);
	memcpy(r->rhdr + 8, r->cookie, 8);
	iov[0].iov_base = r->rhdr;
	iov[0].iov_len = NBD_REPLY_SIZE;
	if (r->type == NBD_CMD_READ && r->len > 0) {
		iov[1].iov_base = r->buf;
		iov[1].iov_len = r->len;
		niov = 2;
	}
	if (pthread_mutex_trylock(&c->wlock) != 0)
		return 0;
	closing = c->closing;
	if (!c->dead && !c->stuck && c->olen == 0 &&
	    TAILQ_EMPTY(&c->outq)) {
		n = writev(c->fd, iov, niov);
		if (n == (ssize_t)(NBD_REPLY_SIZE + (niov == 2 ? r->len : 0)))
			r->early = EARLY_SENT;
		else if (n > 0) {
			r->sent = n;
			r->early = EARLY_PARTIAL;
			c->stuck = 1;
		}
	}
	pthread_mutex_unlock(&c->wlock);
	return r->early == EARLY_SENT && !closing;
}

void
nbd_server_flush(struct nbd_server *s)
{
	struct nbd_conn	*c;

	while ((c = TAILQ_FIRST(&s->dirty)) != NULL) {
		TAILQ_REMOVE(&s->dirty, c, dirty_entry);
		c->dirty = 0;
		conn_flush(c);
	}
}

static void
note(struct nbd_server *s, const char *ev, const char *fmt, ...)
{
	char	buf[256];
	va_list	ap;

	if (s->hooks.note == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	s->hooks.note(s->hooks.arg, ev, buf);
}

/* Append handshake output. */
static int
out_add(struct nbd_conn *c, const void *p, size_t len)
{
	unsigned char	*n;
	size_t		 cap;

	if (c->olen + len > c->ocap) {
		cap = c->ocap ? c->ocap * 2 : 1024;
		while (cap < c->olen + len)
			cap *= 2;
		if (cap > 1 << 20 || (n = realloc(c->obuf, cap)) == NULL)
			return -1;
		c->obuf = n;
		c->ocap = cap;
	}
	memcpy(c->obuf + c->olen, p, len);
	c->olen += len;
	return 0;
}

static void
opt_reply(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *data,
    uint32_t len)
{
	unsigned char	h[20];

	put_be64(h, NBD_REP_MAGIC);
	put_be32(h + 8, opt);
	put_be32(h + 12, type);
	put_be32(h + 16, len);
	if (out_add(c, h, sizeof(h)) == -1 ||
	    (len > 0 && out_add(c, data, len) == -1))
		c->closing = 1;
}

static void
opt_error(struct nbd_conn *c, uint32_t opt, uint32_t type, const char *msg)
{
	opt_reply(c, opt, type, msg, strlen(msg));
}

static uint16_t
tx_flags(struct nbd_server *s)
{
	uint16_t	f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
	    NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |
	    NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_CAN_MULTI_CONN;

	if (s->readonly)
		f |= NBD_FLAG_READ_ONLY;
	return f;
}

static int
export_known(struct nbd_server *s, const unsigned char *name, uint32_t len)
{
	return len == 0 ||
	    (len == strlen(s->name) && memcmp(name, s->name, len) == 0);
}

static void
go_transmission(struct nbd_conn *c)
{
	c->state = TX_HDR;
	c->announced = 1;
	note(c->srv, "client-connect", "conn=%u peer=%s", c->id, c->peer);
}

/* NBD_OPT_INFO and NBD_OPT_GO. */
static void
opt_info(struct nbd_conn *c, uint32_t opt, const unsigned char *d,
    uint32_t len)
{
	struct nbd_server	*s = c->srv;
	unsigned char		 info[18];
	uint32_t		 nlen, i;
	uint16_t		 nreq;
	int			 want_bs = 0;

	if (len < 6 || (nlen = get_be32(d)) > len - 6 ||
	    (nreq = get_be16(d + 4 + nlen), len != 6 + nlen + 2u * nreq)) {
		opt_error(c, opt, NBD_REP_ERR_INVALID, "malformed request");
		return;
	}
	if (!export_known(s, d + 4, nlen)) {
		opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "no such export");
		return;
	}
	for (i = 0; i < nreq; i++)
		if (get_be16(d + 6 + nlen + 2 * i) == NBD_INFO_BLOCK_SIZE)
			want_bs = 1;
	put_be16(info, NBD_INFO_EXPORT);
	put_be64(info + 2, s->size);
	put_be16(info + 10, tx_flags(s));
	opt_reply(c, opt, NBD_REP_INFO, info, 12);
	if (want_bs) {
		put_be16(info, NBD_INFO_BLOCK_SIZE);
		put_be32(info + 2, NBD_MIN_BLOCK);
		put_be32(info + 6, NBD_PREF_BLOCK);
		put_be32(info + 10, NBD_MAX_PAYLOAD);
		opt_reply(c, opt, NBD_REP_INFO, info, 14);
	}
	opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
	if (opt == NBD_OPT_GO)
		go_transmission(c);
}

static void
opt_list_one(struct nbd_conn *c, const char *name)
{
	unsigned char	b[4 + 64];
	size_t		n = strlen(name);

	if (n > 64)
		n = 64;
	put_be32(b, n);
	memcpy(b + 4, name, n);
	opt_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, b, 4 + n);
}

/* Handle one option; d holds its len bytes of data. */
static void
handle_option(struct nbd_conn *c, uint32_t opt, const unsigned char *d,
    uint32_t len)
{
	struct nbd_server	*s = c->srv;
	unsigned char		 b[10 + 124];

	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		if (!export_known(s, d, len)) {
			/* No way to say "no" here but hanging up. */
			log_debug("conn %u: unknown export", c->id);
			c->closing = 1;
			return;
		}
		put_be64(b, s->size);
		put_be16(b + 8, tx_flags(s));
		memset(b + 10, 0, 124);
		if (out_add(c, b, c->no_zeroes ? 10 : sizeof(b)) == -1)
			c->closing = 1;
		go_transmission(c);
		break;
	case NBD_OPT_ABORT:
		opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
		c->closing = 1;
		break;
	case NBD_OPT_LIST:
		if (len != 0) {
			opt_error(c, opt, NBD_REP_ERR_INVALID,
			    "data with LIST");
			break;
		}
		opt_list_one(c, "");
		opt_list_one(c, s->name);
		opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
		break;
	case NBD_OPT_STARTTLS:
		opt_error(c, opt, NBD_REP_ERR_UNSUP, "TLS is not supported");
		break;
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		opt_info(c, opt, d, len);
		break;
	default:
		opt_error(c, opt, NBD_REP_ERR_UNSUP, "unsupported option");
		break;
	}
}

/* Check a request header and start it, or answer it at once. */
static int
handle_request(struct nbd_conn *c, const unsigned char *h)
{
	struct nbd_server	*s = c->srv;
	struct nbd_req		*r;
	int			 e;

	if (get_be32(h) != NBD_REQUEST_MAGIC) {
		conn_kill(c, "bad request magic");
		return -1;
	}
	if ((r = req_get(c)) == NULL) {
		conn_kill(c, "out of memory");
		return -1;
	}
	r->flags = get_be16(h + 4);
	r->type = get_be16(h + 6);
	memcpy(r->cookie, h + 8, 8);
	r->offset = get_be64(h + 16);
	r->len = get_be32(h + 24);
	e = nbd_check_request(r->type, r->offset, r->len, s->size);
	if (e == -1) {
		req_release(r);
		conn_kill(c, "write request longer than the maximum");
		return -1;
	}
	if (r->type == NBD_CMD_DISC) {
		req_release(r);
		/* under wlock: see nbd_req_reply_early */
		pthread_mutex_lock(&c->wlock);
		c->closing = 1;
		pthread_mutex_unlock(&c->wlock);
		return 1;
	}
	if (r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) {
		if (e == 0 || r->type == NBD_CMD_WRITE) {
			r->bclass = nbd_bufclass(r->len);
			if ((r->buf = buf_get(s, r->bclass)) == NULL) {
				req_release(r);
				conn_kill(c, "out of memory");
				return -1;
			}
			c->inbytes += (size_t)4096 << r->bclass;
		}
	}
	if (e == 0 && s->readonly && (r->type == NBD_CMD_WRITE ||
	    r->type == NBD_CMD_TRIM || r->type == NBD_CMD_WRITE_ZEROES))
		e = EPERM;
	if (e == 0 && s->stopped)
		e = ESHUTDOWN;
	r->err = e;
	if (r->type == NBD_CMD_WRITE && r->len > 0) {
		c->cur = r;
		c->got = 0;
		c->state = TX_PAYLOAD;
		return 0;
	}
	if (e != 0)
		nbd_req_done(r, e);
	else
		s->hooks.submit(r, s->hooks.arg);
	return 0;
}

/* A write's payload is in: start it (or refuse it now). */
static void
payload_done(struct nbd_conn *c)
{
	struct nbd_req	*r = c->cur;

	c->cur = NULL;
	c->state = TX_HDR;
	if (r->err != 0)
		nbd_req_done(r, r->err);
	else
		c->srv->hooks.submit(r, c->srv->hooks.arg);
}

/*
 * Parse what rbuf holds.  Returns 1 if something was consumed, 0 if more
 * bytes are needed, -1 if the connection is gone.
 */
static int
parse(struct nbd_conn *c)
{
	unsigned char	*p = c->rbuf + c->rstart;
	size_t		 avail = c->rend - c->rstart;
	uint32_t	 f, opt, len;

	switch (c->state) {
	case HS_FLAGS:
		if (avail < 4)
			return 0;
		f = get_be32(p);
		c->rstart += 4;
		if (f & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE |
		    NBD_FLAG_C_NO_ZEROES)) {
			conn_kill(c, "unknown client flags");
			return -1;
		}
		c->no_zeroes = (f & NBD_FLAG_C_NO_ZEROES) != 0;
		c->state = HS_OPT;
		return 1;
	case HS_OPT:
		if (avail < 16)
			return 0;
		if (get_be64(p) != NBD_IHAVEOPT) {
			conn_kill(c, "bad option magic");
			return -1;
		}
		opt = get_be32(p + 8);
		len = get_be32(p + 12);
		if (len > NBD_OPT_MAX) {
			conn_kill(c, "option too long");
			return -1;
		}
		if (avail < 16 + len)
			return 0;
		c->rstart += 16 + len;
		handle_option(c, opt, p + 16, len);
		return 1;
	case TX_HDR:
		if (avail < NBD_REQ_SIZE)
			return 0;
		c->rstart += NBD_REQ_SIZE;
		return handle_request(c, p) == -1 ? -1 : 1;
	case TX_PAYLOAD:
		len = c->cur->len - c->got;
		if (avail < len)
			len = avail;
		memcpy(c->cur->buf + c->got, p, len);
		c->got += len;
		c->rstart += len;
		if (c->got == c->cur->len)
			payload_done(c);
		return len > 0;
	}
	return 0;
}

static void
conn_read(evutil_socket_t fd, short what, void *arg)
{
	struct nbd_conn		*c = arg;
	struct nbd_server	*s = c->srv;
	ssize_t			 n;
	size_t			 want;
	int		 rv, rounds = 0, drained = 0;

	(void)what;
	/*
	 * A read shorter than asked emptied the socket: rather than a read
	 * that would fail with EAGAIN, wait for the next readable event
	 * (level-triggered: data that came since is not missed).
	 */
	while (!c->closing && c->inflight < NBD_CONN_INFLIGHT &&
	    c->inbytes < NBD_CONN_BYTES && rounds++ < 256) {
		if (c->state == TX_PAYLOAD && c->rstart == c->rend) {
			if (drained)
				break;
			/* Large payloads go straight to their buffer. */
			want = c->cur->len - c->got;
			n = read(fd, c->cur->buf + c->got, want);
			if (n > 0) {
				drained = (size_t)n < want;
				c->got += n;
				if (c->got == c->cur->len)
					payload_done(c);
				continue;
			}
		} else {
			if ((rv = parse(c)) == -1)
				return;
			if (rv == 1)
				continue;
			if (drained)
				break;
			if (c->rstart > 0) {
				memmove(c->rbuf, c->rbuf + c->rstart,
				    c->rend - c->rstart);
				c->rend -= c->rstart;
				c->rstart = 0;
			}
			want = RBUF_SIZE - c->rend;
			n = read(fd, c->rbuf + c->rend, want);
			if (n > 0) {
				drained = (size_t)n < want;
				c->rend += n;
				continue;
			}
		}
		if (n == 0) {
			conn_kill(c, NULL);
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)
			break;
		conn_kill(c, errno == ECONNRESET ? NULL : "read");
		return;
	}
	if (c->reading && (c->closing || c->inflight >= NBD_CONN_INFLIGHT ||
	    c->inbytes >= NBD_CONN_BYTES)) {
		event_del(c->rev);
		c->reading = 0;
	}
	mark_dirty(c);
	/* From here on c may be freed. */
	if (s->hooks.poll != NULL)
		s->hooks.poll(s->hooks.arg);
	nbd_server_flush(s);
}

static void
conn_write(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_flush(arg);
}

/* Send what can be sent: handshake bytes, then queued replies. */
static void
conn_flush(struct nbd_conn *c)
{
	struct iovec	 iov[2 * IOV_BATCH];
	struct nbd_req	*r, *next;
	ssize_t		 n;
	size_t		 k, left;
	int		 niov;

	if (c->dead)
		return;
	pthread_mutex_lock(&c->wlock);
	if (c->stuck) {
		/* A thread's partial reply is on its way to nbd_req_done. */
		pthread_mutex_unlock(&c->wlock);
		return;
	}
	while (c->ooff < c->olen) {
		n = write(c->fd, c->obuf + c->ooff, c->olen - c->ooff);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			goto wait;
		if (n == -1) {
			pthread_mutex_unlock(&c->wlock);
			conn_kill(c, errno == EPIPE || errno == ECONNRESET ?
			    NULL : "write");
			return;
		}
		c->ooff += n;
	}
	c->olen = c->ooff = 0;
	while (!TAILQ_EMPTY(&c->outq)) {
		niov = 0;
		TAILQ_FOREACH(r, &c->outq, entry) {
			if (niov >= 2 * IOV_BATCH - 1)
				break;
			if (r->sent < NBD_REPLY_SIZE) {
				iov[niov].iov_base = r->rhdr + r->sent;
				iov[niov++].iov_len = NBD_REPLY_SIZE - r->sent;
			}
			if (r->type == NBD_CMD_READ && r->err == 0 &&
			    r->len > 0) {
				k = r->sent > NBD_REPLY_SIZE ?
				    r->sent - NBD_REPLY_SIZE : 0;
				iov[niov].iov_base = r->buf + k;
				iov[niov++].iov_len = r->len - k;
			}
		}
		n = writev(c->fd, iov, niov);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			goto wait;
		if (n == -1) {
			pthread_mutex_unlock(&c->wlock);
			conn_kill(c, errno == EPIPE || errno == ECONNRESET ?
			    NULL : "write");
			return;
		}
		for (r = TAILQ_FIRST(&c->outq); r != NULL && n > 0; r = next) {
			next = TAILQ_NEXT(r, entry);
			left = NBD_REPLY_SIZE - r->sent;
			if (r->type == NBD_CMD_READ && r->err == 0)
				left += r->len;
			if ((size_t)n < left) {
				r->sent += n;
				break;
			}
			n -= left;
			TAILQ_REMOVE(&c->outq, r, entry);
			req_release(r);
		}
	}
	pthread_mutex_unlock(&c->wlock);
	if (c->writing) {
		event_del(c->wev);
		c->writing = 0;
	}
	if (c->closing && c->inflight == 0 && c->state != TX_PAYLOAD)
		conn_kill(c, NULL);
	return;
 wait:
	pthread_mutex_unlock(&c->wlock);
	if (!c->writing) {
		event_add(c->wev, NULL);
		c->writing = 1;
	}
}

static void
conn_maybe_free(struct nbd_conn *c)
{
	struct nbd_server	*s = c->srv;

	if (!c->dead || c->busy || c->inflight > 0)
		return;
	if (c->dirty)
		TAILQ_REMOVE(&s->dirty, c, dirty_entry);
	TAILQ_REMOVE(&s->conns, c, entry);
	s->nconns--;
	pthread_mutex_destroy(&c->wlock);
	free(c->rbuf);
	free(c->obuf);
	free(c);
}

/*
 * conn_kill: close the socket now; the structure stays until the requests
 * still in the I/O pool come back.  why is NULL for an orderly end.
 */
static void
conn_kill(struct nbd_conn *c, const char *why)
{
	struct nbd_server	*s = c->srv;
	struct nbd_req		*r;

	if (c->dead)
		return;
	if (why != NULL)
		log_warnx("client %u (%s): %s, disconnecting", c->id, c->peer,
		    why);
	if (c->announced)
		note(s, "client-disconnect", "conn=%u peer=%s%s%s", c->id,
		    c->peer, why ? " reason=" : "", why ? why : "");
	c->dead = 1;
	c->busy = 1;
	event_free(c->rev);
	event_free(c->wev);
	pthread_mutex_lock(&c->wlock);
	close(c->fd);
	c->fd = -1;
	pthread_mutex_unlock(&c->wlock);
	if (c->cur != NULL) {
		r = c->cur;
		c->cur = NULL;
		req_release(r);
	}
	while ((r = TAILQ_FIRST(&c->outq)) != NULL) {
		TAILQ_REMOVE(&c->outq, r, entry);
		req_release(r);
	}
	c->busy = 0;
	conn_maybe_free(c);
}

static void
do_accept(evutil_socket_t lfd, short what, void *arg)
{
	struct nbd_server	*s = arg;
	struct nbd_conn		*c;
	struct sockaddr_storage	 ss;
	socklen_t		 sl = sizeof(ss);
	unsigned char		 hello[18];
	char			 host[64], serv[16];
	int			 fd, one = 1;

	(void)what;
	if ((fd = accept4(lfd, (struct sockaddr *)&ss, &sl,
	    SOCK_NONBLOCK | SOCK_CLOEXEC)) == -1) {
		if (errno != EAGAIN && errno != EINTR)
			log_warn("accept");
		return;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->rbuf = malloc(RBUF_SIZE)) == NULL) {
		log_warn("accept");
		free(c);
		close(fd);
		return;
	}
	c->srv = s;
	c->fd = fd;
	c->id = ++s->nextid;
	pthread_mutex_init(&c->wlock, NULL);
	TAILQ_INIT(&c->outq);
	if (ss.ss_family == AF_UNIX)
		snprintf(c->peer, sizeof(c->peer), "unix");
	else {
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (getnameinfo((struct sockaddr *)&ss, sl, host,
		    sizeof(host), serv, sizeof(serv),
		    NI_NUMERICHOST | NI_NUMERICSERV) == 0)
			snprintf(c->peer, sizeof(c->peer), "%s:%s", host,
			    serv);
	}
	c->rev = event_new(s->base, fd, EV_READ | EV_PERSIST, conn_read, c);
	c->wev = event_new(s->base, fd, EV_WRITE | EV_PERSIST, conn_write, c);
	TAILQ_INSERT_TAIL(&s->conns, c, entry);
	s->nconns++;
	s->st.conns_total++;
	c->state = HS_FLAGS;
	put_be64(hello, NBD_MAGIC);
	put_be64(hello + 8, NBD_IHAVEOPT);
	put_be16(hello + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	out_add(c, hello, sizeof(hello));
	event_add(c->rev, NULL);
	c->reading = 1;
	conn_flush(c);
}

struct nbd_server *
nbd_server_new(struct event_base *base, uint64_t size, const char *name,
    const struct nbd_hooks *hooks)
{
	struct nbd_server	*s;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	if ((s->name = strdup(name)) == NULL) {
		free(s);
		return NULL;
	}
	s->base = base;
	s->size = size;
	s->hooks = *hooks;
	TAILQ_INIT(&s->conns);
	TAILQ_INIT(&s->dirty);
	TAILQ_INIT(&s->freereq);
	return s;
}

static int
add_listener(struct nbd_server *s, int fd, const char *path)
{
	if (s->nlisten == MAX_LISTEN) {
		close(fd);
		errno = EMFILE;
		return -1;
	}
	s->lfd[s->nlisten] = fd;
	s->lpath[s->nlisten] = path ? strdup(path) : NULL;
	s->lev[s->nlisten] = event_new(s->base, fd, EV_READ | EV_PERSIST,
	    do_accept, s);
	event_add(s->lev[s->nlisten], NULL);
	s->nlisten++;
	return 0;
}

/* nbd_listen_unix: a stale socket at path is replaced. */
int
nbd_listen_unix(struct nbd_server *s, const char *path)
{
	struct sockaddr_un	sun;
	struct stat		st;
	int			fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sun.sun_path, path);
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1)
		return -1;
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    listen(fd, 64) == -1) {
		close(fd);
		return -1;
	}
	return add_listener(s, fd, path);
}

/* nbd_listen_tcp: "HOST:PORT", or "PORT" for 127.0.0.1. */
int
nbd_listen_tcp(struct nbd_server *s, const char *spec)
{
	struct addrinfo	 hints, *res;
	char		*host, *port, *copy;
	int		 fd, one = 1, rv;

	if ((copy = strdup(spec)) == NULL)
		return -1;
	if ((port = strrchr(copy, ':')) != NULL) {
		*port++ = '\0';
		host = copy;
		if (host[0] == '[' && host[strlen(host) - 1] == ']') {
			host[strlen(host) - 1] = '\0';
			host++;
		}
	} else {
		host = "127.0.0.1";
		port = copy;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	if ((rv = getaddrinfo(host, port, &hints, &res)) != 0) {
		free(copy);
		errno = EINVAL;
		return -1;
	}
	free(copy);
	fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1) {
		freeaddrinfo(res);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) == -1 ||
	    listen(fd, 64) == -1) {
		freeaddrinfo(res);
		close(fd);
		return -1;
	}
	freeaddrinfo(res);
	return add_listener(s, fd, NULL);
}

void
nbd_set_readonly(struct nbd_server *s, int ro)
{
	s->readonly = ro;
}

/*
 * nbd_server_stop: no new connections and no new requests; the requests
 * in flight finish and their replies are sent.
 */
void
nbd_server_stop(struct nbd_server *s)
{
	struct nbd_conn	*c, *tmp;
	int		 i;

	s->stopped = 1;
	for (i = 0; i < s->nlisten; i++) {
		event_free(s->lev[i]);
		close(s->lfd[i]);
		if (s->lpath[i] != NULL)
			unlink(s->lpath[i]);
		free(s->lpath[i]);
	}
	s->nlisten = 0;
	TAILQ_FOREACH_SAFE(c, &s->conns, entry, tmp) {
		if (c->dead)
			continue;
		if (c->reading) {
			event_del(c->rev);
			c->reading = 0;
		}
		c->closing = 1;
		conn_flush(c);
	}
}

/* nbd_server_drained: every reply has been sent. */
int
nbd_server_drained(struct nbd_server *s)
{
	struct nbd_conn	*c;

	TAILQ_FOREACH(c, &s->conns, entry)
		if (!c->dead && (!TAILQ_EMPTY(&c->outq) || c->olen > 0))
			return 0;
	return 1;
}

unsigned int
nbd_server_conns(struct nbd_server *s)
{
	struct nbd_conn	*c;
	unsigned int	 n = 0;

	TAILQ_FOREACH(c, &s->conns, entry)
		if (!c->dead)
			n++;
	return n;
}

const struct nbd_stats *
nbd_server_stats(struct nbd_server *s)
{
	return &s->st;
}

/* nbd_server_free: only when idle. */
void
nbd_server_free(struct nbd_server *s)
{
	struct nbd_conn	*c;
	struct nbd_req	*r;
	struct bufl	*b;
	int		 k;

	if (s == NULL)
		return;
	if (!s->stopped)
		nbd_server_stop(s);
	while ((c = TAILQ_FIRST(&s->conns)) != NULL) {
		conn_kill(c, NULL);
		if (c == TAILQ_FIRST(&s->conns)) {
			/* Requests still out: only when not idle. */
			TAILQ_REMOVE(&s->conns, c, entry);
		}
	}
	while ((r = TAILQ_FIRST(&s->freereq)) != NULL) {
		TAILQ_REMOVE(&s->freereq, r, entry);
		free(r);
	}
	for (k = 0; k < NCLASS; k++)
		while ((b = s->freebuf[k]) != NULL) {
			s->freebuf[k] = b->next;
			free(b);
		}
	free(s->name);
	free(s);
}

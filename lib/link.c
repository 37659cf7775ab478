/* See LICENSE file for copyright and license details. */
/*
 * link.c: the secure, compressed message link between nodes (see link.h
 * and hatrio-link(7) for the protocol).
 *
 * On the wire, both ends first send a HELLO in clear (magic, version, role,
 * receive limit, node name, a nonce and an ephemeral crypto_kx public key).
 * From the two HELLOs each side computes the transcript hash T and the
 * crypto_kx session keys, and mixes them with the cluster key into one
 * secretstream key per direction and one confirmation value per role.  Each
 * side then sends AUTH: the header of its outgoing secretstream hashed
 * with its confirmation value as the key, and the header itself.  A peer
 * without the cluster key cannot produce that hash, and the session keys
 * depend on ephemeral secrets that are wiped, so a recorded session stays
 * secret if the cluster key is stolen later.
 *
 * After that the stream is a sequence of frames: a 4-byte big-endian length
 * and a secretstream ciphertext of that length whose additional data is the
 * length itself.  The plaintext holds the message type (2 bytes), flags (1
 * byte) and the payload, zstd-compressed when the flag says so.  A message
 * tagged FINAL closes the stream cleanly (its payload is the reason), so an
 * end of file without it is a truncation.  The sender tags a message REKEY
 * after LINK_REKEY_BYTES or LINK_REKEY_USEC, and both sides rekey there.
 *
 * When both HELLOs offer it (byte 7, bit 0: the CPU has AES-NI), frames are
 * AES-256-GCM instead, faster than secretstream here: the tag travels as the
 * first plaintext byte, the nonce is the count of frames under the current
 * key (never sent, so replay, reordering and loss fail authentication), and
 * REKEY hashes the key of its direction.  The offers are part of T.
 *
 * Output goes through a libevent bufferevent, whose write watermarks give
 * the backpressure (on_drain); the frames themselves live in a ring of
 * ours.  Input is read with a plain event straight into one buffer per
 * link that holds a whole frame, and decrypted from there.  During the
 * handshake a link holds only small buffers (a few KiB): the large ones,
 * sized by the message maximum, are allocated once, when the peer has
 * proved it holds the cluster key, so unauthenticated connections cost
 * little memory.
 */
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <zstd.h>

#include "hatrio.h"
#include "link.h"

#define HELLO_MAGIC	"HTRL"
#define HELLO_LEN	(4 + 1 + 1 + 1 + 1 + 4 + LINK_NAME_MAX + 32 + \
			    crypto_kx_PUBLICKEYBYTES)
#define AUTH_LEN	(32 + crypto_secretstream_xchacha20poly1305_HEADERBYTES)
#define ABYTES		crypto_secretstream_xchacha20poly1305_ABYTES
#define INNER_HDR	3		/* type (2), flags (1) */
#define GCM_ABYTES	crypto_aead_aes256gcm_ABYTES
#define GCM_HDR		4		/* tag (1), type (2), flags (1) */
#define IHDR_MAX	4
#define OVERHEAD	20		/* either cipher: ABYTES + INNER_HDR */
#define HELLO_F_GCM	0x01		/* HELLO byte 7: AES-256-GCM here */
#define GCM_REKEY_MSGS	(1ULL << 31)	/* messages under one GCM key */
#define GCM_MSGS_MAX	(1ULL << 32)
#define TAG_MESSAGE	crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
#define TAG_REKEY	crypto_secretstream_xchacha20poly1305_TAG_REKEY
#define TAG_FINAL	crypto_secretstream_xchacha20poly1305_TAG_FINAL
#define FRAME_HDR	4
#define REASON_MAX	256
#define READ_CHUNK	(1024 * 1024)
#define DELAY_MAX	(256 * 1024)	/* a delayed link writes beyond */
#define HS_UNIT		(HELLO_LEN + AUTH_LEN)
#define HS_RCAP		(2 * HS_UNIT)	/* input buffer in the handshake */
#define ZMIN		64		/* smaller messages are never compressed */
#define ZPAY_SHIFT	2		/* zstd must save len >> this ... */
#define ZFAILS_MAX	7		/* ... or up to 63 messages go raw */
#define T_LABEL		"hatrio link 1"

enum link_state {
	LS_HELLO,	/* waiting for the peer's HELLO */
	LS_AUTH,	/* HELLO done, waiting for the peer's AUTH */
	LS_OPEN,
	LS_CLOSING,	/* our FINAL is queued, flushing */
	LS_DONE		/* torn down, on_close called or due */
};

/*
 * Outgoing frames are encrypted straight into a ring allocated once per
 * link and handed to libevent by reference; libevent gives each region back
 * when it has written it, in order.  So the steady state neither copies
 * nor allocates message-sized buffers (nor faults in fresh pages).  The
 * ring outlives its link while libevent still holds regions of it.
 */
struct oring {
	unsigned char	*buf;
	size_t		 size, head, tail;
	unsigned	 inflight;
	int		 orphan;
};

struct link {
	struct event_base	*base;
	struct bufferevent	*wbev;		/* output, with watermarks */
	struct event		*rev;		/* input */
	int			 rfd, wfd;	/* the same for a socket */
	unsigned char		*rbuf;		/* input, read straight in */
	size_t			 rcap, rchunk, roff, rlen;
	enum link_state		 state;
	struct link_cb		 cb;
	void			*arg;
	struct link_client	*client;
	int			 counted;	/* in nhandshake */
	struct event		*timer;		/* handshake, close, on_close */
	struct event		*flush_ev;	/* end of this loop round */
	int			 flush_due;	/* flush_ev is active */
	struct event		*delay_ev;	/* end of a delay_usec wait */
	int			 delayed;	/* writing is off until then */
	int			 nodirect;	/* wfd is no socket */
	uint64_t		 delay_usec;

	enum link_role		 role;
	unsigned char		 key[HATRIO_KEY_BYTES];
	char			 name[LINK_NAME_MAX + 1];
	char			 want[LINK_NAME_MAX + 1];
	char			 peer[LINK_NAME_MAX + 1];	/* authenticated */
	char			 claimed[LINK_NAME_MAX + 1];	/* in its HELLO */
	char			 addr[128];
	char			 reason[REASON_MAX];
	int			 zlevel;
	size_t			 zmin_queued;
	unsigned int		 zskip;		/* raw messages to come */
	unsigned int		 zfails;	/* poor results in a row */
	size_t			 max_msg, send_max;
	size_t			 hiwat, lowat, queue_max;
	uint64_t		 hs_usec, rekey_bytes, rekey_usec;

	unsigned char		 kx_pk[crypto_kx_PUBLICKEYBYTES];
	unsigned char		 kx_sk[crypto_kx_SECRETKEYBYTES];
	unsigned char		 hello[2][HELLO_LEN];	/* client, server */
	unsigned char		 confirm_peer[32];
	unsigned char		 rx_key[32];
	crypto_secretstream_xchacha20poly1305_state tx, rx;

	/*
	 * AES-256-GCM instead, when both ends have AES-NI: one key per
	 * direction, the nonce a message counter that is never sent.
	 */
	int			 gcm, gcm_ok;
	size_t			 abytes, ihdr;	/* per cipher, sum OVERHEAD */
	EVP_CIPHER_CTX		*gtx, *grx;	/* libcrypto: VAES, AVX */
	unsigned char		 gtx_key[32], grx_key[32];
	uint64_t		 gtx_n, grx_n;

	struct oring		*ring;		/* outgoing frames */
	unsigned char		*obuf;		/* outgoing plaintext */
	unsigned char		*zbuf;		/* outgoing, compressed */
	unsigned char		*ibuf;		/* incoming plaintext */
	unsigned char		*dbuf;		/* decompressed */
	ZSTD_CCtx		*cctx;
	ZSTD_DCtx		*dctx;

	uint64_t		 since_rekey, rekey_at;
	int			 drain_wanted;
	int			 busy, freed, closed_cb, lingering;
	struct link_stats	 st;
};

struct link_client {
	struct event_base	*base;
	char			*host, *port;
	struct link_opts	 o;
	unsigned char		 key[HATRIO_KEY_BYTES];
	char			 name[LINK_NAME_MAX + 1];
	char			 want[LINK_NAME_MAX + 1];
	struct link_cb		 cb;
	void			*arg;
	uint64_t		 min, max, delay;
	struct event		*timer, *cev;
	struct evutil_addrinfo	*ai0, *ai;
	int			 numeric;	/* ai0 kept, never resolved */
	struct evdns_base	*dns;		/* for names, made on demand */
	struct evdns_getaddrinfo_request *dreq;
	int			 fd;
	struct link		*link;
	int			 busy, freed;
	char			 err[256];
};

static int	 name_ok(const char *);
static void	 fmt_addr(int, int, char *, size_t);
static void	 timer_in(struct event *, uint64_t);
static unsigned char *oring_get(struct oring *, size_t);
static void	 oring_release(const void *, size_t, void *);
static void	 oring_free(struct oring *);
static void	 link_fail(struct link *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static void	 link_teardown(struct link *);
static void	 link_flush_once(struct link *);
static void	 link_destroy(struct link *);
static void	 link_release(struct link *);
static void	 link_closed(struct link *);
static void	 link_read_cb(evutil_socket_t, short, void *);
static void	 link_write_cb(struct bufferevent *, void *);
static void	 link_event_cb(struct bufferevent *, short, void *);
static void	 link_timer_cb(evutil_socket_t, short, void *);
static void	 link_flush_cb(evutil_socket_t, short, void *);
static void	 link_round_end_due(struct link *);
static void	 link_delay_cb(evutil_socket_t, short, void *);
static void	 link_undelay(struct link *);
static void	 link_input(struct link *);
static int	 link_hello(struct link *);
static int	 link_auth(struct link *);
static int	 link_frame(struct link *);
static ssize_t	 link_read(struct link *);
static void	 link_consume(struct link *, size_t);
static void	 link_ended(struct link *, int);
static int	 link_deliver(struct link *, const unsigned char *, size_t);
static int	 link_push(struct link *, unsigned char *, size_t,
		    const unsigned char *, size_t,
		    unsigned char);
static size_t	 link_direct(struct link *, unsigned char,
		    const unsigned char *, size_t);
static void	 derive(unsigned char [32], const char *,
		    const unsigned char *, const unsigned char *,
		    const unsigned char *, const unsigned char *);
static int	 looks_random(const unsigned char *, size_t);
static void	 client_try(struct link_client *);
static void	 client_next(struct link_client *);
static void	 client_retry(struct link_client *, const char *);
static void	 client_timer_cb(evutil_socket_t, short, void *);
static void	 client_connect_cb(evutil_socket_t, short, void *);
static void	 client_dns_cb(int, struct evutil_addrinfo *, void *);
static void	 client_link_closed(struct link *);
static int	 link_alloc(struct link *);
static void	 gcm_nonce(unsigned char [12], uint64_t);
static int	 link_seal(struct link *, unsigned char *, unsigned char *,
		    size_t, const unsigned char *, size_t, unsigned char);
static int	 gcm_rekey(EVP_CIPHER_CTX *, unsigned char [32], uint64_t *,
		    int);
static int	 gcm_key(EVP_CIPHER_CTX *, const unsigned char [32], int);
static int	 gcm_seal(EVP_CIPHER_CTX *, unsigned char *,
		    const unsigned char *, size_t, const unsigned char *,
		    size_t, const unsigned char [4], const unsigned char [12]);
static int	 gcm_open(EVP_CIPHER_CTX *, unsigned char *,
		    const unsigned char *, size_t, const unsigned char [4],
		    const unsigned char [12]);
static void	 link_uncount(struct link *);

static unsigned	 nhandshake;	/* links in the handshake, process-wide */

/* A contiguous region of n bytes at the head of the ring, or NULL. */
static unsigned char *
oring_get(struct oring *r, size_t n)
{
	if (r->inflight == 0)
		r->head = r->tail = 0;
	if (r->head >= r->tail) {
		if (r->size - r->head >= n)
			return r->buf + r->head;
		if (r->tail > n) {
			/* Wrap; the end stays unused this round. */
			r->head = 0;
			return r->buf;
		}
		return NULL;
	}
	if (r->tail - r->head > n)
		return r->buf + r->head;
	return NULL;
}

/* libevent wrote (or dropped) the region: regions come back in order. */
static void
oring_release(const void *data, size_t len, void *arg)
{
	struct oring	*r = arg;

	r->tail = ((const unsigned char *)data - r->buf) + len;
	if (--r->inflight == 0) {
		r->head = r->tail = 0;
		if (r->orphan) {
			free(r->buf);
			free(r);
		}
	}
}

static void
oring_free(struct oring *r)
{
	if (r == NULL)
		return;
	if (r->inflight > 0) {
		r->orphan = 1;
		return;
	}
	free(r->buf);
	free(r);
}

static void
timer_in(struct event *ev, uint64_t us)
{
	struct timeval	tv;

	tv.tv_sec = us / 1000000;
	tv.tv_usec = us % 1000000;
	evtimer_add(ev, &tv);
}

/* Node names: 1 to 64 of [A-Za-z0-9._-], safe to print and to quote. */
static int
name_ok(const char *s)
{
	size_t	i;

	for (i = 0; s[i] != '\0'; i++) {
		if (i >= LINK_NAME_MAX)
			return 0;
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= 'A' && s[i] <= 'Z') ||
		    (s[i] >= '0' && s[i] <= '9') ||
		    s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return 0;
	}
	return i > 0;
}

void
link_nodelay(int fd)
{
	int	one = 1;

	/* Fails harmlessly (ENOTSOCK, EOPNOTSUPP) on pipes and unix sockets. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* The peer's address as people write it, for messages. */
static void
fmt_addr(int rfd, int wfd, char *buf, size_t len)
{
	struct sockaddr_storage	 ss;
	socklen_t		 sl = sizeof(ss);
	char			 h[INET6_ADDRSTRLEN];

	if (rfd != wfd || getpeername(rfd, (struct sockaddr *)&ss, &sl) == -1) {
		snprintf(buf, len, rfd != wfd ? "pipe" : "unconnected peer");
		if (rfd == wfd && errno == ENOTSOCK)
			snprintf(buf, len, "pipe");
		return;
	}
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &s4->sin_addr, h, sizeof(h));
		snprintf(buf, len, "%s:%u", h, ntohs(s4->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, h, sizeof(h));
		snprintf(buf, len, "[%s]:%u", h, ntohs(s6->sin6_port));
	} else
		snprintf(buf, len, "unix socket");
}

void
link_opts_init(struct link_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->role = LINK_CLIENT;
	o->zlevel = LINK_ZLEVEL_DEFAULT;
	o->max_msg = LINK_MSG_MAX_DEFAULT;
	o->hiwat = LINK_HIWAT_DEFAULT;
	o->lowat = LINK_LOWAT_DEFAULT;
	o->handshake_usec = LINK_HANDSHAKE_USEC;
	o->rekey_bytes = LINK_REKEY_BYTES;
	o->rekey_usec = LINK_REKEY_USEC;
}

struct link *
link_new(struct event_base *base, int rfd, int wfd, const struct link_opts *o,
    const struct link_cb *cb, void *arg)
{
	struct link	*l;
	unsigned char	*h;
	size_t		 fmax;

	if (wfd == -1)
		wfd = rfd;
	if (o->key == NULL || o->name == NULL || !name_ok(o->name) ||
	    (o->peer != NULL && !name_ok(o->peer)) || o->zlevel < 0 ||
	    o->zlevel > LINK_ZLEVEL_MAX || o->max_msg > LINK_MSG_MAX_LIMIT ||
	    (o->cipher != LINK_CIPHER_AUTO && o->cipher != LINK_CIPHER_XCHACHA) ||
	    (o->role != LINK_CLIENT && o->role != LINK_SERVER) || rfd < 0) {
		errno = EINVAL;
		return NULL;
	}
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return NULL;
	l->base = base;
	l->rfd = l->wfd = -1;
	l->cb = *cb;
	l->arg = arg;
	l->role = o->role;
	memcpy(l->key, o->key, sizeof(l->key));
	snprintf(l->name, sizeof(l->name), "%s", o->name);
	if (o->peer != NULL)
		snprintf(l->want, sizeof(l->want), "%s", o->peer);
	l->zlevel = o->zlevel;
	l->zmin_queued = o->zmin_queued;
	l->delay_usec = o->delay_usec;
	l->gcm_ok = o->cipher != LINK_CIPHER_XCHACHA &&
	    crypto_aead_aes256gcm_is_available();
	l->abytes = ABYTES;
	l->ihdr = INNER_HDR;
	l->max_msg = o->max_msg ? o->max_msg : LINK_MSG_MAX_DEFAULT;
	l->hiwat = o->hiwat ? o->hiwat : LINK_HIWAT_DEFAULT;
	l->lowat = o->lowat ? o->lowat : LINK_LOWAT_DEFAULT;
	if (l->lowat > l->hiwat)
		l->lowat = l->hiwat;
	fmax = FRAME_HDR + OVERHEAD + l->max_msg;
	l->queue_max = o->queue_max ? o->queue_max : l->hiwat + 2 * fmax;
	l->hs_usec = o->handshake_usec ? o->handshake_usec :
	    LINK_HANDSHAKE_USEC;
	l->rekey_bytes = o->rekey_bytes ? o->rekey_bytes : LINK_REKEY_BYTES;
	l->rekey_usec = o->rekey_usec ? o->rekey_usec : LINK_REKEY_USEC;
	if (o->peer_addr != NULL)
		snprintf(l->addr, sizeof(l->addr), "%s", o->peer_addr);
	else
		fmt_addr(rfd, wfd, l->addr, sizeof(l->addr));

	/*
	 * The handshake needs only a small input buffer; link_alloc() adds
	 * the large ones once the peer is authenticated.
	 */
	l->rchunk = HS_UNIT;
	l->rcap = HS_RCAP;
	if ((l->timer = evtimer_new(base, link_timer_cb, l)) == NULL ||
	    (l->flush_ev = event_new(base, -1, 0, link_flush_cb, l)) ==
	    NULL || (l->delay_usec > 0 && (l->delay_ev = evtimer_new(base,
	    link_delay_cb, l)) == NULL) || (l->rbuf = malloc(l->rcap)) ==
	    NULL)
		goto fail;
	evutil_make_socket_nonblocking(rfd);
	evutil_make_socket_nonblocking(wfd);
	link_nodelay(rfd);
	l->rfd = rfd;
	l->wfd = wfd;
	if ((l->wbev = bufferevent_socket_new(base, wfd,
	    BEV_OPT_CLOSE_ON_FREE)) == NULL ||
	    (l->rev = event_new(base, rfd, EV_READ | EV_PERSIST, link_read_cb,
	    l)) == NULL)
		goto fail;
	bufferevent_setcb(l->wbev, NULL, link_write_cb, link_event_cb, l);
	bufferevent_setwatermark(l->wbev, EV_WRITE, l->lowat, 0);
	bufferevent_set_max_single_write(l->wbev, READ_CHUNK);

	/* HELLO */
	crypto_kx_keypair(l->kx_pk, l->kx_sk);
	h = l->hello[l->role == LINK_CLIENT ? 0 : 1];
	memcpy(h, HELLO_MAGIC, 4);
	h[4] = LINK_PROTO_VERSION;
	h[5] = l->role;
	h[6] = strlen(l->name);
	h[7] = l->gcm_ok ? HELLO_F_GCM : 0;
	put_be32(h + 8, l->max_msg);
	memset(h + 12, 0, LINK_NAME_MAX);
	memcpy(h + 12, l->name, strlen(l->name));
	randombytes_buf(h + 12 + LINK_NAME_MAX, 32);
	memcpy(h + 12 + LINK_NAME_MAX + 32, l->kx_pk, sizeof(l->kx_pk));
	if (bufferevent_write(l->wbev, h, HELLO_LEN) == -1)
		goto fail;
	l->state = LS_HELLO;
	bufferevent_disable(l->wbev, EV_READ);
	bufferevent_enable(l->wbev, EV_WRITE);
	event_add(l->rev, NULL);
	timer_in(l->timer, l->hs_usec);
	l->counted = 1;
	nhandshake++;
	return l;

fail:
	/* Leave the descriptors to the caller, as promised. */
	if (l->rev != NULL)
		event_free(l->rev);
	if (l->wbev != NULL) {
		bufferevent_setfd(l->wbev, -1);
		bufferevent_free(l->wbev);
	}
	l->rev = NULL;
	l->wbev = NULL;
	l->rfd = l->wfd = -1;
	link_destroy(l);
	errno = ENOMEM;
	return NULL;
}

/*
 * Every buffer the steady state needs, allocated once the peer proved it
 * holds the cluster key.  The input buffer holds a whole frame plus one
 * read (links of small messages read less), and at least what the
 * handshake buffer may still hold.
 */
static int
link_alloc(struct link *l)
{
	unsigned char	*rbuf;
	size_t		 fmax, rchunk, rcap;

	fmax = FRAME_HDR + OVERHEAD + l->max_msg;
	rchunk = fmax < READ_CHUNK ? fmax : READ_CHUNK;
	rcap = fmax + rchunk;
	if (rcap < HS_RCAP)
		rcap = HS_RCAP;
	if ((l->ring = calloc(1, sizeof(*l->ring))) == NULL ||
	    (l->ring->buf = malloc(l->queue_max)) == NULL)
		return -1;
	l->ring->size = l->queue_max;
	if ((l->obuf = malloc(IHDR_MAX + l->max_msg)) == NULL ||
	    (l->zbuf = malloc(IHDR_MAX + l->max_msg)) == NULL ||
	    (l->ibuf = malloc(IHDR_MAX + l->max_msg)) == NULL ||
	    (l->dctx = ZSTD_createDCtx()) == NULL)
		return -1;
	if (l->zlevel > 0 && ((l->cctx = ZSTD_createCCtx()) == NULL ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(l->cctx,
	    ZSTD_c_compressionLevel, l->zlevel))))
		return -1;
	/* The peer may compress even if we do not. */
	if ((l->dbuf = malloc(l->max_msg ? l->max_msg : 1)) == NULL)
		return -1;
	if ((rbuf = malloc(rcap)) == NULL)
		return -1;
	/* What the peer sent after its AUTH moves along. */
	memcpy(rbuf, l->rbuf + l->roff, l->rlen);
	free(l->rbuf);
	l->rbuf = rbuf;
	l->roff = 0;
	l->rcap = rcap;
	l->rchunk = rchunk;
	return 0;
}

/* Leave the count of links in the handshake. */
static void
link_uncount(struct link *l)
{
	if (l->counted) {
		l->counted = 0;
		nhandshake--;
	}
}

unsigned
link_handshakes(void)
{
	return nhandshake;
}

void *
link_arg(struct link *l)
{
	return l->arg;
}

void
link_set_arg(struct link *l, void *arg)
{
	l->arg = arg;
}

void
link_set_cb(struct link *l, const struct link_cb *cb)
{
	l->cb = *cb;
}

size_t
link_queued_bytes(struct link *l)
{
	if (l->wbev == NULL)
		return 0;
	return evbuffer_get_length(bufferevent_get_output(l->wbev));
}

int
link_writable(struct link *l)
{
	if (l->state != LS_OPEN)
		return 0;
	if (link_queued_bytes(l) >= l->hiwat) {
		l->drain_wanted = 1;
		return 0;
	}
	return 1;
}

size_t
link_max_msg(struct link *l)
{
	return l->state == LS_OPEN ? l->send_max : l->max_msg;
}

int
link_is_ready(struct link *l)
{
	return l->state == LS_OPEN;
}

const char *
link_peer_name(struct link *l)
{
	return l->peer;
}

const char *
link_cipher(struct link *l)
{
	if (l->state != LS_OPEN && l->state != LS_CLOSING)
		return "";
	return l->gcm ? "aes256gcm" : "xchacha20poly1305";
}

const char *
link_peer_addr(struct link *l)
{
	return l->addr;
}

int
link_fd(struct link *l)
{
	return l->rfd;
}

void
link_get_stats(struct link *l, struct link_stats *st)
{
	*st = l->st;
}

/* Release the descriptors and events; the struct stays for its owner. */
static void
link_teardown(struct link *l)
{
	if (l->rev != NULL)
		event_free(l->rev);
	l->rev = NULL;
	if (l->wbev != NULL)
		bufferevent_free(l->wbev);	/* closes wfd */
	l->wbev = NULL;
	if (l->rfd != -1 && l->rfd != l->wfd)
		close(l->rfd);
	l->rfd = l->wfd = -1;
	l->roff = l->rlen = 0;
	link_uncount(l);
	if (l->timer != NULL)
		evtimer_del(l->timer);
	if (l->flush_ev != NULL)
		event_del(l->flush_ev);
	l->flush_due = 0;
	if (l->delay_ev != NULL)
		evtimer_del(l->delay_ev);
	l->delayed = 0;
	sodium_memzero(l->kx_sk, sizeof(l->kx_sk));
	sodium_memzero(&l->tx, sizeof(l->tx));
	sodium_memzero(&l->rx, sizeof(l->rx));
	EVP_CIPHER_CTX_free(l->gtx);	/* wipes the key schedule */
	EVP_CIPHER_CTX_free(l->grx);
	l->gtx = l->grx = NULL;
	sodium_memzero(l->gtx_key, sizeof(l->gtx_key));
	sodium_memzero(l->grx_key, sizeof(l->grx_key));
	sodium_memzero(l->rx_key, sizeof(l->rx_key));
}

static void
link_destroy(struct link *l)
{
	link_teardown(l);
	if (l->timer != NULL)
		event_free(l->timer);
	if (l->flush_ev != NULL)
		event_free(l->flush_ev);
	if (l->delay_ev != NULL)
		event_free(l->delay_ev);
	sodium_memzero(l->key, sizeof(l->key));
	oring_free(l->ring);
	free(l->obuf);
	free(l->zbuf);
	free(l->ibuf);
	free(l->dbuf);
	free(l->rbuf);
	ZSTD_freeCCtx(l->cctx);
	ZSTD_freeDCtx(l->dctx);
	free(l);
}

/* Leave a callback of ours: free the link if its owner asked meanwhile. */
static void
link_release(struct link *l)
{
	if (--l->busy == 0 && l->freed)
		link_destroy(l);
}

void
link_free(struct link *l)
{
	struct link_client	*c;

	if (l == NULL)
		return;
	if ((c = l->client) != NULL) {
		/* The client frees its links itself after on_close. */
		if (l->closed_cb)
			return;
		/* Otherwise detach it: the client reconnects later. */
		c->link = NULL;
		l->client = NULL;
		client_retry(c, NULL);
	}
	l->freed = 1;
	l->state = LS_DONE;
	link_teardown(l);
	if (l->busy == 0)
		link_destroy(l);
}

/* Tear down and tell the owner, once. */
static void
link_closed(struct link *l)
{
	link_teardown(l);
	l->state = LS_DONE;
	if (l->closed_cb || l->freed)
		return;
	l->closed_cb = 1;
	if (l->client != NULL)
		client_link_closed(l);
	else if (l->cb.on_close != NULL)
		l->cb.on_close(l, l->reason);
}

/*
 * Before closing on a failure: push out what is queued (during the
 * handshake that is our AUTH, which lets the peer tell a wrong key from a
 * crash) and consume what the peer sent, so that the close is a FIN and
 * not a reset that could destroy those bytes in transit.  Never blocks.
 */
static void
link_flush_once(struct link *l)
{
	struct evbuffer	*out;
	unsigned char	*p, junk[4096];
	size_t		 n;
	int		 i;

	/* libevent freezes its buffers, so use the descriptors directly. */
	if (l->wbev != NULL && l->state != LS_OPEN) {
		out = bufferevent_get_output(l->wbev);
		n = evbuffer_get_length(out);
		if (n > 0 && (p = evbuffer_pullup(out, n)) != NULL)
			(void)write(bufferevent_getfd(l->wbev), p, n);
	}
	if (l->rfd == -1)
		return;
	for (i = 0; i < 256; i++)
		if (read(l->rfd, junk, sizeof(junk)) <= 0)
			break;
}

static void
link_fail(struct link *l, const char *fmt, ...)
{
	va_list	ap;

	if (l->state == LS_DONE)
		return;
	va_start(ap, fmt);
	vsnprintf(l->reason, sizeof(l->reason), fmt, ap);
	va_end(ap);
	link_flush_once(l);
	link_closed(l);
}

void
link_close(struct link *l, const char *reason)
{
	size_t	n;

	if (l->state == LS_DONE || l->state == LS_CLOSING)
		return;
	link_undelay(l);
	snprintf(l->reason, sizeof(l->reason), "%s",
	    reason != NULL ? reason : "closed");
	if (l->state != LS_OPEN) {
		/* Nothing authenticated to say yet: close, report soon. */
		link_teardown(l);
		l->state = LS_DONE;
		timer_in(l->timer, 0);
		return;
	}
	n = reason != NULL ? strlen(reason) : 0;
	if (n > REASON_MAX - 1)
		n = REASON_MAX - 1;
	/* The peer refuses frames over its limit: cut the reason to fit. */
	if (n > l->send_max)
		n = l->send_max;
	memset(l->obuf, 0, l->ihdr);
	if (n > 0)
		memcpy(l->obuf + l->ihdr, reason, n);
	if (link_push(l, l->obuf, l->ihdr + n, NULL, 0, TAG_FINAL) == -1) {
		link_closed(l);		/* with our reason, unchanged */
		return;
	}
	l->state = LS_CLOSING;
	bufferevent_setwatermark(l->wbev, EV_WRITE, 0, 0);
	timer_in(l->timer, l->hs_usec);
	if (link_queued_bytes(l) == 0)
		link_write_cb(l->wbev, l);
}

static void
link_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct link	*l = arg;
	char		 d[32];

	(void)fd;
	(void)ev;
	l->busy++;
	switch (l->state) {
	case LS_HELLO:
	case LS_AUTH:
		link_fail(l, "handshake timed out after %s (peer %s)",
		    fmt_duration(l->hs_usec, d, sizeof(d)), l->addr);
		break;
	case LS_CLOSING:
		if (l->lingering)
			link_closed(l);
		else {
			char	why[REASON_MAX];

			/* link_fail() writes l->reason: copy it first. */
			snprintf(why, sizeof(why), "%s", l->reason);
			link_fail(l, "%s (final data not flushed: peer %s "
			    "stopped reading)", why, l->addr);
		}
		break;
	case LS_DONE:
		link_closed(l);
		break;
	default:
		break;
	}
	link_release(l);
}

static void
link_write_cb(struct bufferevent *bev, void *arg)
{
	struct link	*l = arg;

	(void)bev;
	l->busy++;
	if (l->state == LS_CLOSING && !l->lingering &&
	    link_queued_bytes(l) == 0) {
		/*
		 * Tell the peer we are done writing, then wait for its end of
		 * file: closing now with its data unread would reset the
		 * connection and could destroy our final message in transit.
		 */
		l->lingering = 1;
		if (l->wfd != l->rfd) {
			bufferevent_free(l->wbev);	/* closes wfd */
			l->wbev = NULL;
			l->wfd = -1;
		} else
			shutdown(bufferevent_getfd(l->wbev), SHUT_WR);
	} else if (l->state == LS_OPEN && l->drain_wanted &&
	    link_queued_bytes(l) <= l->lowat) {
		l->drain_wanted = 0;
		if (l->cb.on_drain != NULL)
			l->cb.on_drain(l);
	}
	link_release(l);
}

/* An error while writing (the peer went away, or worse). */
static void
link_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct link	*l = arg;
	int		 e = errno;
	ssize_t		 n;
	int		 i;

	(void)bev;
	(void)what;
	l->busy++;
	/*
	 * Whatever arrived before the end counts first: a write that failed
	 * because the peer closed may leave its last words (a failed
	 * handshake's AUTH, a final message) unread.
	 */
	for (i = 0; i < 16 && l->rfd != -1 && !l->freed &&
	    l->state != LS_DONE; i++) {
		if ((n = link_read(l)) <= 0)
			break;
		link_input(l);
	}
	link_input(l);
	if (l->state != LS_DONE && !l->freed)
		link_ended(l, e == 0 ? EIO : e);
	link_release(l);
}

/*
 * The stream ended: e is 0 for an end of file, else the error.  A clean
 * end has been seen by now (a final message, or our own close).  An end
 * of file between messages is the peer closing without one (a program
 * that stopped, or crashed): only one inside a message is a truncation.
 */
static void
link_ended(struct link *l, int e)
{
	if (l->state == LS_CLOSING)
		link_closed(l);
	else if (l->state != LS_OPEN && (e == 0 || e == EPIPE ||
	    e == ECONNRESET))
		link_fail(l, "peer closed the connection during the "
		    "handshake (peer %s)", l->addr);
	else if (l->state != LS_OPEN)
		link_fail(l, "connection to %s failed during the "
		    "handshake: %s", l->addr, strerror(e));
	else if (e != 0)
		link_fail(l, "connection to %s failed: %s", l->addr,
		    strerror(e));
	else if (l->rlen > 0)
		link_fail(l, "stream truncated: the connection from "
		    "%s ended inside a message", l->addr);
	else
		link_fail(l, "peer closed the connection without a final "
		    "message (peer %s)", l->addr);
}

/*
 * One read into the input buffer, which always has room for a whole
 * frame: a partial frame left at the end is moved to the front first.
 * Returns what read(2) returned.
 */
static ssize_t
link_read(struct link *l)
{
	size_t	room;
	ssize_t	n;

	if (l->roff > 0 && l->rcap - l->roff - l->rlen < l->rchunk) {
		memmove(l->rbuf, l->rbuf + l->roff, l->rlen);
		l->roff = 0;
	}
	room = l->rcap - l->roff - l->rlen;
	if (room > l->rchunk)
		room = l->rchunk;
	if (room == 0) {
		/* Cannot happen: whole frames are always consumed. */
		errno = ENOBUFS;
		return -1;
	}
	do
		n = read(l->rfd, l->rbuf + l->roff + l->rlen, room);
	while (n == -1 && errno == EINTR);
	if (n > 0)
		l->rlen += n;
	return n;
}

static void
link_consume(struct link *l, size_t n)
{
	l->roff += n;
	l->rlen -= n;
	if (l->rlen == 0)
		l->roff = 0;
}

static void
link_read_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct link	*l = arg;
	ssize_t		 n;

	(void)fd;
	(void)ev;
	l->busy++;
	n = link_read(l);
	if (n > 0)
		link_input(l);
	else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
		link_ended(l, n == 0 ? 0 : errno);
	link_release(l);
}

/* Consume whatever whole units the input holds. */
static void
link_input(struct link *l)
{
	int	r = 1;

	while (r > 0 && !l->freed && l->rfd != -1) {
		switch (l->state) {
		case LS_HELLO:
			r = link_hello(l);
			break;
		case LS_AUTH:
			r = link_auth(l);
			break;
		case LS_OPEN:
			r = link_frame(l);
			break;
		case LS_CLOSING:
			/* Nothing is delivered after link_close(). */
			link_consume(l, l->rlen);
			r = 0;
			break;
		default:
			r = 0;
			break;
		}
	}
}

/* A keyed hash of a label, two secrets and the transcript. */
static void
derive(unsigned char out[32], const char *label, const unsigned char *key,
    const unsigned char *a, const unsigned char *b, const unsigned char *t)
{
	crypto_generichash_state	st;

	crypto_generichash_init(&st, key, HATRIO_KEY_BYTES, 32);
	crypto_generichash_update(&st, (const unsigned char *)label,
	    strlen(label) + 1);
	crypto_generichash_update(&st, a, 32);
	crypto_generichash_update(&st, b, 32);
	crypto_generichash_update(&st, t, crypto_generichash_BYTES_MAX);
	crypto_generichash_final(&st, out, 32);
	sodium_memzero(&st, sizeof(st));
}

/* Returns 1 when consumed, 0 when more is needed, -1 when failed. */
static int
link_hello(struct link *l)
{
	unsigned char	 h[HELLO_LEN], c2s[32], s2c[32], t[64];
	unsigned char	 k_tx[32], confirm[32], auth[AUTH_LEN];
	crypto_generichash_state st;
	const unsigned char *pk;
	uint32_t	 pmax;
	size_t		 n = l->rlen, i;
	int		 r;

	if (n < 5)
		return 0;
	memcpy(h, l->rbuf + l->roff, 5);
	if (memcmp(h, HELLO_MAGIC, 4) != 0) {
		link_fail(l, "peer %s does not speak the hatrio link protocol "
		    "(bad magic)", l->addr);
		return -1;
	}
	if (h[4] != LINK_PROTO_VERSION) {
		link_fail(l, "peer speaks protocol version %u, we speak %u "
		    "(peer %s)", h[4], LINK_PROTO_VERSION, l->addr);
		return -1;
	}
	if (n < HELLO_LEN)
		return 0;
	memcpy(h, l->rbuf + l->roff, HELLO_LEN);
	link_consume(l, HELLO_LEN);
	pmax = get_be32(h + 8);
	if (h[6] == 0 || h[6] > LINK_NAME_MAX ||
	    pmax == 0 || pmax > LINK_MSG_MAX_LIMIT) {
		link_fail(l, "malformed hello from %s", l->addr);
		return -1;
	}
	for (i = h[6]; i < LINK_NAME_MAX; i++)
		if (h[12 + i] != 0)
			break;
	/* Only claimed until AUTH: link_peer_name() says nothing yet. */
	memcpy(l->claimed, h + 12, h[6]);
	l->claimed[h[6]] = '\0';
	if (i != LINK_NAME_MAX || !name_ok(l->claimed)) {
		l->claimed[0] = '\0';
		link_fail(l, "malformed hello from %s (bad node name)",
		    l->addr);
		return -1;
	}
	if (h[5] == l->role) {
		link_fail(l, "peer %s is also a %s: one end must be the "
		    "client, the other the server", l->addr,
		    l->role == LINK_CLIENT ? "client" : "server");
		return -1;
	}
	if (h[5] != LINK_CLIENT && h[5] != LINK_SERVER) {
		link_fail(l, "malformed hello from %s (role %u)", l->addr,
		    h[5]);
		return -1;
	}
	memcpy(l->hello[h[5] == LINK_CLIENT ? 0 : 1], h, HELLO_LEN);
	l->send_max = pmax < l->max_msg ? pmax : l->max_msg;
	pk = h + 12 + LINK_NAME_MAX + 32;

	/* Session keys from the exchange; c2s is the client's tx. */
	if (l->role == LINK_CLIENT)
		r = crypto_kx_client_session_keys(s2c, c2s, l->kx_pk,
		    l->kx_sk, pk);
	else
		r = crypto_kx_server_session_keys(c2s, s2c, l->kx_pk,
		    l->kx_sk, pk);
	sodium_memzero(l->kx_sk, sizeof(l->kx_sk));
	if (r != 0) {
		link_fail(l, "malformed hello from %s (bad public key)",
		    l->addr);
		return -1;
	}
	crypto_generichash_init(&st, NULL, 0, sizeof(t));
	crypto_generichash_update(&st, (const unsigned char *)T_LABEL,
	    sizeof(T_LABEL));
	crypto_generichash_update(&st, l->hello[0], HELLO_LEN);
	crypto_generichash_update(&st, l->hello[1], HELLO_LEN);
	crypto_generichash_final(&st, t, sizeof(t));

	if (l->role == LINK_CLIENT) {
		derive(k_tx, "c2s", l->key, c2s, s2c, t);
		derive(l->rx_key, "s2c", l->key, c2s, s2c, t);
		derive(confirm, "client confirm", l->key, c2s, s2c, t);
		derive(l->confirm_peer, "server confirm", l->key, c2s, s2c, t);
	} else {
		derive(k_tx, "s2c", l->key, c2s, s2c, t);
		derive(l->rx_key, "c2s", l->key, c2s, s2c, t);
		derive(confirm, "server confirm", l->key, c2s, s2c, t);
		derive(l->confirm_peer, "client confirm", l->key, c2s, s2c, t);
	}
	/*
	 * AES-256-GCM if both ends offered it.  The offers are in the HELLOs,
	 * so in T: an attacker who strips one fails AUTH.
	 */
	l->gcm = l->gcm_ok && (l->hello[0][7] & l->hello[1][7] & HELLO_F_GCM);
	if (l->gcm) {
		derive(l->gtx_key, l->role == LINK_CLIENT ? "c2s gcm" :
		    "s2c gcm", l->key, c2s, s2c, t);
		derive(l->grx_key, l->role == LINK_CLIENT ? "s2c gcm" :
		    "c2s gcm", l->key, c2s, s2c, t);
		if ((l->gtx = EVP_CIPHER_CTX_new()) == NULL ||
		    (l->grx = EVP_CIPHER_CTX_new()) == NULL ||
		    gcm_key(l->gtx, l->gtx_key, 1) == -1 ||
		    gcm_key(l->grx, l->grx_key, 0) == -1) {
			sodium_memzero(c2s, sizeof(c2s));
			sodium_memzero(s2c, sizeof(s2c));
			sodium_memzero(k_tx, sizeof(k_tx));
			sodium_memzero(confirm, sizeof(confirm));
			link_fail(l, "cannot set up AES-256-GCM");
			return -1;
		}
		l->gtx_n = l->grx_n = 0;
		l->abytes = GCM_ABYTES;
		l->ihdr = GCM_HDR;
	}
	sodium_memzero(c2s, sizeof(c2s));
	sodium_memzero(s2c, sizeof(s2c));
	/* The confirmation also authenticates our stream's header. */
	crypto_secretstream_xchacha20poly1305_init_push(&l->tx, auth + 32,
	    k_tx);
	crypto_generichash(auth, 32, auth + 32,
	    crypto_secretstream_xchacha20poly1305_HEADERBYTES, confirm,
	    sizeof(confirm));
	sodium_memzero(confirm, sizeof(confirm));
	sodium_memzero(k_tx, sizeof(k_tx));
	if (bufferevent_write(l->wbev, auth, sizeof(auth)) == -1) {
		link_fail(l, "out of memory");
		return -1;
	}
	l->state = LS_AUTH;
	return 1;
}

static int
link_auth(struct link *l)
{
	unsigned char	a[AUTH_LEN], want[32];

	if (l->rlen < AUTH_LEN)
		return 0;
	memcpy(a, l->rbuf + l->roff, AUTH_LEN);
	link_consume(l, AUTH_LEN);
	crypto_generichash(want, sizeof(want), a + 32,
	    crypto_secretstream_xchacha20poly1305_HEADERBYTES, l->confirm_peer,
	    sizeof(l->confirm_peer));
	sodium_memzero(l->confirm_peer, sizeof(l->confirm_peer));
	if (crypto_verify_32(a, want) != 0) {
		link_fail(l, "wrong cluster key: peer %s does not hold ours "
		    "(or the handshake was tampered with)", l->addr);
		return -1;
	}
	if (crypto_secretstream_xchacha20poly1305_init_pull(&l->rx, a + 32,
	    l->rx_key) != 0) {
		link_fail(l, "malformed handshake from %s", l->addr);
		return -1;
	}
	sodium_memzero(l->rx_key, sizeof(l->rx_key));
	if (link_alloc(l) == -1) {
		link_fail(l, "out of memory for the link to %s", l->addr);
		return -1;
	}
	/* Authenticated: the claimed name is the peer's name now. */
	memcpy(l->peer, l->claimed, sizeof(l->peer));
	link_uncount(l);
	evtimer_del(l->timer);
	l->state = LS_OPEN;
	l->rekey_at = now_usec() + l->rekey_usec;
	if (l->want[0] != '\0' && strcmp(l->want, l->peer) != 0) {
		char	why[REASON_MAX];

		snprintf(why, sizeof(why), "unexpected node name '%s' "
		    "(want '%s')", l->peer, l->want);
		/* The peer learns why from our final message. */
		link_close(l, why);
		return -1;
	}
	if (l->client != NULL)
		l->client->delay = l->client->min;
	if (l->cb.on_ready != NULL)
		l->cb.on_ready(l, l->peer);
	return l->state == LS_OPEN && !l->freed ? 1 : -1;
}

static int
link_frame(struct link *l)
{
	unsigned char		*p = l->rbuf + l->roff;
	unsigned long long	 mlen;
	unsigned char		 tag;
	size_t			 flen, fmax;
	int			 r;

	if (l->rlen < FRAME_HDR)
		return 0;
	flen = get_be32(p);
	fmax = OVERHEAD + l->max_msg;
	if (flen < OVERHEAD || flen > fmax) {
		link_fail(l, "frame length %zu from %s is outside %zu..%zu: "
		    "corrupt or hostile stream", flen, l->addr,
		    (size_t)OVERHEAD, fmax);
		return -1;
	}
	if (l->rlen < FRAME_HDR + flen)
		return 0;
	/* Decrypt straight from the input buffer. */
	if (l->gcm) {
		unsigned char	nonce[crypto_aead_aes256gcm_NPUBBYTES];

		if (l->grx_n >= GCM_MSGS_MAX) {
			link_fail(l, "too many messages from %s without a "
			    "rekey", l->addr);
			return -1;
		}
		gcm_nonce(nonce, l->grx_n++);
		r = gcm_open(l->grx, l->ibuf, p + FRAME_HDR, flen, p, nonce);
		mlen = flen - GCM_ABYTES;
		tag = r == 0 ? l->ibuf[0] : 0;
		if (r == 0 && tag == TAG_REKEY &&
		    gcm_rekey(l->grx, l->grx_key, &l->grx_n, 0) == -1) {
			link_fail(l, "cannot rekey AES-256-GCM");
			return -1;
		}
	} else
		r = crypto_secretstream_xchacha20poly1305_pull(&l->rx, l->ibuf,
		    &mlen, &tag, p + FRAME_HDR, flen, p, FRAME_HDR);
	link_consume(l, FRAME_HDR + flen);
	if (r != 0) {
		link_fail(l, "message authentication failed: forged, "
		    "modified, replayed or reordered data from %s", l->addr);
		return -1;
	}
	l->st.wire_in += FRAME_HDR + flen;
	if (tag == TAG_FINAL) {
		char	why[REASON_MAX];
		size_t	i, k = 0;

		/* Keep the peer's reason printable. */
		for (i = l->ihdr; i < mlen && k < sizeof(why) - 1; i++)
			why[k++] = l->ibuf[i] >= ' ' && l->ibuf[i] < 127 ?
			    l->ibuf[i] : '?';
		why[k] = '\0';
		if (k > 0)
			link_fail(l, "peer closed the connection: %s", why);
		else
			link_fail(l, "peer closed the connection");
		return -1;
	}
	if (tag == TAG_REKEY)
		l->st.rekeys_in++;
	else if (tag != TAG_MESSAGE) {
		link_fail(l, "unexpected stream tag %u from %s", tag, l->addr);
		return -1;
	}
	/* The tag byte of GCM goes: type and flags follow as always. */
	return link_deliver(l, l->ibuf + (l->ihdr - INNER_HDR),
	    mlen - (l->ihdr - INNER_HDR));
}

static int
link_deliver(struct link *l, const unsigned char *p, size_t n)
{
	unsigned long long	 csize;
	unsigned		 type, flags;
	size_t			 r;

	type = (unsigned)p[0] << 8 | p[1];
	flags = p[2];
	p += INNER_HDR;
	n -= INNER_HDR;
	if (flags & ~LINK_F_ZSTD) {
		link_fail(l, "unknown message flags 0x%02x from %s", flags,
		    l->addr);
		return -1;
	}
	if (flags & LINK_F_ZSTD) {
		/* Bounded: the frame must declare a size within our limit. */
		csize = ZSTD_getFrameContentSize(p, n);
		if (csize == ZSTD_CONTENTSIZE_ERROR ||
		    csize == ZSTD_CONTENTSIZE_UNKNOWN || csize > l->max_msg) {
			link_fail(l, "bad compressed message from %s: %s",
			    l->addr, csize == ZSTD_CONTENTSIZE_ERROR ?
			    "not a zstd frame" : "size unknown or over the "
			    "maximum");
			return -1;
		}
		r = ZSTD_decompressDCtx(l->dctx, l->dbuf, l->max_msg, p, n);
		if (ZSTD_isError(r) || r != csize) {
			link_fail(l, "bad compressed message from %s: %s",
			    l->addr, ZSTD_isError(r) ? ZSTD_getErrorName(r) :
			    "size mismatch");
			return -1;
		}
		p = l->dbuf;
		n = r;
	}
	l->st.msgs_in++;
	l->st.bytes_in += n;
	if (l->cb.on_message != NULL)
		l->cb.on_message(l, type, p, n);
	return l->state == LS_OPEN && !l->freed ? 1 : -1;
}

/*
 * A cheap guess whether data is already compressed or random: a byte
 * histogram of 4 KiB sampled across the message, tested against the flat
 * distribution (chi-square).  It saves the cost of a zstd pass that would
 * not pay; a message that passes and still does not shrink is sent raw.
 */
static int
looks_random(const unsigned char *p, size_t n)
{
	unsigned	cnt[256], i, j;
	size_t		step;
	uint64_t	sq = 0;
	int		d;

	if (n < 16 * 1024)
		return 0;
	memset(cnt, 0, sizeof(cnt));
	step = (n - 256) / 15;
	for (i = 0; i < 16; i++)
		for (j = 0; j < 256; j++)
			cnt[p[i * step + j]]++;
	for (i = 0; i < 256; i++) {
		d = (int)cnt[i] - 16;
		sq += (uint64_t)(d * d);
	}
	/* Flat data gives about 255 * 16; text is hundreds of times that. */
	return sq < 3 * 255 * 16;
}

/*
 * Encrypt m[0..mlen) behind the length at p (AES-256-GCM puts the tag in
 * m[0]), and rekey after a REKEY.
 */
static int
link_seal(struct link *l, unsigned char *p, unsigned char *m, size_t mlen,
    const unsigned char *t, size_t tlen, unsigned char tag)
{
	unsigned char	nonce[crypto_aead_aes256gcm_NPUBBYTES];

	if (!l->gcm) {
		/* link_send_msg() gives a tail only to GCM. */
		if (tlen != 0)
			return -1;
		crypto_secretstream_xchacha20poly1305_push(&l->tx,
		    p + FRAME_HDR, NULL, m, mlen, p, FRAME_HDR, tag);
		return 0;
	}
	m[0] = tag;
	gcm_nonce(nonce, l->gtx_n++);
	if (gcm_seal(l->gtx, p + FRAME_HDR, m, mlen, t, tlen, p, nonce) == -1)
		return -1;
	if (tag == TAG_REKEY &&
	    gcm_rekey(l->gtx, l->gtx_key, &l->gtx_n, 1) == -1)
		return -1;
	return 0;
}

/*
 * AES-256-GCM through libcrypto, which uses VAES and AVX where the CPU has
 * them (twice libsodium's speed here); the format is standard GCM: the
 * ciphertext, then the 16-byte tag, the frame length as additional data.
 * The plaintext may come in two pieces, m then t (a message's header and
 * the data it carries, sealed where they are instead of copied together).
 */
static int
gcm_key(EVP_CIPHER_CTX *ctx, const unsigned char key[32], int enc)
{
	return EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, NULL,
	    enc) == 1 ? 0 : -1;
}

static int
gcm_seal(EVP_CIPHER_CTX *ctx, unsigned char *c, const unsigned char *m,
    size_t mlen, const unsigned char *t, size_t tlen,
    const unsigned char ad[FRAME_HDR], const unsigned char nonce[12])
{
	int	n, nt = 0, k;

	if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &n, ad, FRAME_HDR) != 1 ||
	    EVP_EncryptUpdate(ctx, c, &n, m, (int)mlen) != 1 ||
	    (tlen > 0 && EVP_EncryptUpdate(ctx, c + n, &nt, t, (int)tlen) !=
	    1) ||
	    EVP_EncryptFinal_ex(ctx, c + n + nt, &k) != 1 ||
	    (size_t)n + nt + k != mlen + tlen ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_ABYTES,
	    c + mlen + tlen) != 1)
		return -1;
	return 0;
}

/* Decrypt c[0..clen) into m; -1 if it does not authenticate. */
static int
gcm_open(EVP_CIPHER_CTX *ctx, unsigned char *m, const unsigned char *c,
    size_t clen, const unsigned char ad[FRAME_HDR],
    const unsigned char nonce[12])
{
	int	n, k;

	if (clen < GCM_ABYTES ||
	    EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_DecryptUpdate(ctx, NULL, &n, ad, FRAME_HDR) != 1 ||
	    EVP_DecryptUpdate(ctx, m, &n, c, (int)(clen - GCM_ABYTES)) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_ABYTES,
	    (void *)(c + clen - GCM_ABYTES)) != 1 ||
	    EVP_DecryptFinal_ex(ctx, m + n, &k) != 1)
		return -1;
	return 0;
}

/* The nonce of message n under the current key: never sent. */
static void
gcm_nonce(unsigned char nonce[12], uint64_t n)
{
	memset(nonce, 0, 4);
	put_be32(nonce + 4, n >> 32);
	put_be32(nonce + 8, n);
}

/* Both ends derive the next key at a REKEY message, and count anew. */
static int
gcm_rekey(EVP_CIPHER_CTX *ctx, unsigned char key[32], uint64_t *n, int enc)
{
	unsigned char	next[32];

	crypto_generichash(next, sizeof(next),
	    (const unsigned char *)"hatrio link gcm rekey", 22, key, 32);
	memcpy(key, next, 32);
	sodium_memzero(next, sizeof(next));
	*n = 0;
	return EVP_CipherInit_ex(ctx, NULL, NULL, key, NULL, enc) == 1 ? 0 : -1;
}

/*
 * Write what is queued now, as far as the socket takes it, rather than
 * after the loop's next poll: a message that waits for an answer (a
 * replicated write, its ACK) should not wait for the rest of this round.
 * Errors are left to the bufferevent, whose write event is still pending.
 */
static void
link_write_now(struct link *l)
{
	struct evbuffer	*out;

	if (l->wbev == NULL || l->state != LS_OPEN)
		return;
	out = bufferevent_get_output(l->wbev);
	if (evbuffer_get_length(out) == 0)
		return;
	/* The bufferevent keeps its output's start frozen but to write. */
	evbuffer_unfreeze(out, 1);
	(void)evbuffer_write_atmost(out, bufferevent_getfd(l->wbev),
	    READ_CHUNK);
	evbuffer_freeze(out, 1);
}

/*
 * The first message of a round of the loop leaves at once; the others
 * queue behind it and leave together at the end of the round
 * (link_flush_cb), in as few writes as the socket allows.
 */
static void
link_kick(struct link *l)
{
	if (l->flush_due || l->flush_ev == NULL)
		return;
	link_write_now(l);
	link_round_end_due(l);
}

/* What else is sent in this round of the loop leaves at its end. */
static void
link_round_end_due(struct link *l)
{
	l->flush_due = 1;
	event_active(l->flush_ev, EV_TIMEOUT, 0);
}

static void
link_flush_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct link	*l = arg;

	(void)fd;
	(void)ev;
	l->flush_due = 0;
	l->busy++;
	link_write_now(l);
	/* What the bufferevent would do after its own write. */
	if (l->state == LS_OPEN && l->wbev != NULL)
		link_write_cb(l->wbev, l);
	link_release(l);
}

/*
 * A delayed link: the bufferevent does not write until delay_usec after
 * the first message waiting, or until DELAY_MAX bytes wait.
 */
static void
link_delay(struct link *l)
{
	if (l->wbev == NULL || l->state != LS_OPEN)
		return;
	if (link_queued_bytes(l) >= DELAY_MAX) {
		link_undelay(l);
		return;
	}
	if (l->delayed)
		return;
	l->delayed = 1;
	bufferevent_disable(l->wbev, EV_WRITE);
	timer_in(l->delay_ev, l->delay_usec);
}

static void
link_undelay(struct link *l)
{
	if (!l->delayed)
		return;
	l->delayed = 0;
	evtimer_del(l->delay_ev);
	if (l->wbev != NULL)
		bufferevent_enable(l->wbev, EV_WRITE);
}

static void
link_delay_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct link	*l = arg;

	(void)fd;
	(void)ev;
	link_undelay(l);
}

/*
 * The first message of a round, with nothing queued before it, goes
 * straight to the socket: the bufferevent would arm its write event for
 * it, and disarm it after, two more system calls each way for a small
 * message that the socket takes at once.  The rest of the round queues
 * (link_kick).  Returns how much was written; what is not, and any
 * error, is the bufferevent's.
 */
static size_t
link_direct(struct link *l, unsigned char tag, const unsigned char *p,
    size_t n)
{
	ssize_t	w;

	if (l->nodirect || l->flush_due || l->flush_ev == NULL ||
	    l->delay_usec > 0 || tag == TAG_FINAL ||
	    l->state != LS_OPEN ||
	    evbuffer_get_length(bufferevent_get_output(l->wbev)) != 0)
		return 0;
	w = send(bufferevent_getfd(l->wbev), p, n, MSG_DONTWAIT |
	    MSG_NOSIGNAL);
	if (w == -1) {
		if (errno == ENOTSOCK)
			l->nodirect = 1;
		return 0;
	}
	link_round_end_due(l);
	return w;
}

/*
 * Encrypt m[0..mlen), then t[0..tlen) (GCM only), as one frame straight
 * into the output buffer.
 */
static int
link_push(struct link *l, unsigned char *m, size_t mlen,
    const unsigned char *t, size_t tlen, unsigned char tag)
{
	struct evbuffer	*out = bufferevent_get_output(l->wbev);
	struct evbuffer_iovec v;
	unsigned char	*p;
	size_t		 flen = l->abytes + mlen + tlen, sent;

	if (tag == TAG_MESSAGE) {
		l->since_rekey += mlen + tlen;
		if (l->since_rekey >= l->rekey_bytes ||
		    (l->gcm && l->gtx_n >= GCM_REKEY_MSGS) ||
		    now_usec() >= l->rekey_at) {
			tag = TAG_REKEY;
			l->since_rekey = 0;
			l->rekey_at = now_usec() + l->rekey_usec;
			l->st.rekeys_out++;
		}
	}
	if ((p = oring_get(l->ring, FRAME_HDR + flen)) != NULL) {
		put_be32(p, flen);
		if (link_seal(l, p, m, mlen, t, tlen, tag) == -1) {
			errno = EIO;
			return -1;
		}
		if ((sent = link_direct(l, tag, p, FRAME_HDR + flen)) ==
		    FRAME_HDR + flen) {
			l->st.wire_out += sent;
			return 0;
		}
		l->ring->head = p - l->ring->buf + FRAME_HDR + flen;
		l->ring->inflight++;
		if (evbuffer_add_reference(out, p + sent, FRAME_HDR + flen -
		    sent, oring_release, l->ring) == -1) {
			l->ring->head = p - l->ring->buf;
			l->ring->inflight--;
			errno = ENOMEM;
			return -1;
		}
	} else {
		/* The ring is full (only past queue_max): copy instead. */
		if (evbuffer_reserve_space(out, FRAME_HDR + flen, &v, 1) < 1 ||
		    v.iov_len < FRAME_HDR + flen) {
			errno = ENOMEM;
			return -1;
		}
		p = v.iov_base;
		put_be32(p, flen);
		if (link_seal(l, p, m, mlen, t, tlen, tag) == -1) {
			errno = EIO;
			return -1;
		}
		v.iov_len = FRAME_HDR + flen;
		if (evbuffer_commit_space(out, &v, 1) == -1) {
			errno = ENOMEM;
			return -1;
		}
	}
	l->st.wire_out += FRAME_HDR + flen;
	if (evbuffer_get_length(out) >= l->hiwat)
		l->drain_wanted = 1;
	if (tag == TAG_FINAL)
		;
	else if (l->delay_usec > 0)
		link_delay(l);
	else
		link_kick(l);
	return 0;
}

/*
 * After k messages in a row that zstd shrank by less than a quarter, the
 * next 2^(k-1) - 1 (at most 2^(ZFAILS_MAX-1) - 1) go raw without a try:
 * data that compresses that badly (fio's: random blocks with a few
 * zeroes) costs the sender's loop more than it saves on the wire.  One
 * poor message alone (half random, half text) skips nothing; one that
 * pays starts over.
 */
static int
link_zskip(struct link *l)
{
	if (l->zskip == 0)
		return 0;
	l->zskip--;
	return 1;
}

/*
 * Compress and send buf, or send it raw when zstd is off, the data looks
 * incompressible or does not shrink.  buf may be obuf + INNER_HDR (the
 * zero-copy path of link_msg_buf()), which then needs no copy.
 */
static int
link_send_msg(struct link *l, unsigned type, unsigned flags, const void *buf,
    size_t len, const void *tail, size_t tlen, int zok)
{
	unsigned char	*m = l->obuf;
	size_t		 r, plen;
	int		 zwant;

	if (l->state != LS_OPEN) {
		errno = ENOTCONN;
		return -1;
	}
	if (type > 0xffff || flags > 0xff) {
		errno = EINVAL;
		return -1;
	}
	if (len > l->send_max || tlen > l->send_max - len) {
		errno = EMSGSIZE;
		return -1;
	}
	if (link_queued_bytes(l) >= l->queue_max) {
		l->drain_wanted = 1;
		errno = ENOBUFS;
		return -1;
	}
	zwant = zok && l->cctx != NULL && len + tlen >= ZMIN &&
	    link_queued_bytes(l) >= l->zmin_queued;
	/*
	 * A tail is sealed where it is, unless zstd may want the message
	 * whole or the cipher takes it only in one piece.
	 */
	if (tlen > 0 && (!l->gcm || zwant)) {
		memcpy(l->obuf + l->ihdr + len, tail, tlen);
		len += tlen;
		tlen = 0;
	}
	plen = len;
	if (zwant && !link_zskip(l) && !looks_random(buf, len)) {
		/* Worth it only if it shrinks: capacity len - 1. */
		r = ZSTD_compress2(l->cctx, l->zbuf + l->ihdr, len - 1, buf,
		    len);
		if (!ZSTD_isError(r)) {
			flags |= LINK_F_ZSTD;
			plen = r;
			m = l->zbuf;
			l->st.compressed_out++;
		}
		/* Did not pay for its CPU: the next few go raw. */
		if (ZSTD_isError(r) || r > len - (len >> ZPAY_SHIFT)) {
			if (l->zfails < ZFAILS_MAX)
				l->zfails++;
			l->zskip = (1u << (l->zfails - 1)) - 1;
		} else
			l->zfails = 0;
	}
	if (m == l->obuf && buf != l->obuf + l->ihdr)
		memcpy(l->obuf + l->ihdr, buf, len);
	m[l->ihdr - 3] = type >> 8;
	m[l->ihdr - 2] = type;
	m[l->ihdr - 1] = flags;
	if (link_push(l, m, l->ihdr + plen, tail, tlen, TAG_MESSAGE) == -1)
		return -1;
	l->st.msgs_out++;
	l->st.bytes_out += len + tlen;
	return 0;
}

int
link_send(struct link *l, unsigned type, const void *buf, size_t len)
{
	return link_send_msg(l, type, 0, buf, len, NULL, 0, 1);
}

void *
link_msg_buf(struct link *l)
{
	/* No buffer before the handshake is done. */
	return l->obuf != NULL ? l->obuf + l->ihdr : NULL;
}

int
link_send_buf(struct link *l, unsigned type, size_t len)
{
	return link_send_msg(l, type, 0, l->obuf + l->ihdr, len, NULL, 0, 1);
}

int
link_send_tail(struct link *l, unsigned type, size_t len, const void *tail,
    size_t tlen)
{
	if (l->obuf == NULL) {
		errno = ENOTCONN;
		return -1;
	}
	return link_send_msg(l, type, 0, l->obuf + l->ihdr, len, tail, tlen,
	    1);
}

int
link_send_raw(struct link *l, unsigned type, unsigned flags, const void *buf,
    size_t len)
{
	return link_send_msg(l, type, flags, buf, len, NULL, 0, 0);
}

/*
 * The reconnecting client.
 */
struct link_client *
link_client_new(struct event_base *base, const char *host, const char *port,
    const struct link_opts *o, const struct link_cb *cb, void *arg,
    uint64_t min_usec, uint64_t max_usec)
{
	struct link_client	*c;
	struct evutil_addrinfo	 hints;

	if (o->key == NULL || o->name == NULL || !name_ok(o->name) ||
	    (o->peer != NULL && !name_ok(o->peer))) {
		errno = EINVAL;
		return NULL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->base = base;
	c->fd = -1;
	c->o = *o;
	c->o.role = LINK_CLIENT;
	memcpy(c->key, o->key, sizeof(c->key));
	c->o.key = c->key;
	snprintf(c->name, sizeof(c->name), "%s", o->name);
	c->o.name = c->name;
	if (o->peer != NULL) {
		snprintf(c->want, sizeof(c->want), "%s", o->peer);
		c->o.peer = c->want;
	}
	c->o.peer_addr = NULL;
	c->cb = *cb;
	c->arg = arg;
	c->min = min_usec ? min_usec : 100000;
	c->max = max_usec >= c->min ? max_usec : c->min;
	c->delay = c->min;
	if ((c->host = strdup(host)) == NULL ||
	    (c->port = strdup(port)) == NULL ||
	    (c->timer = evtimer_new(base, client_timer_cb, c)) == NULL) {
		link_client_free(c);
		errno = ENOMEM;
		return NULL;
	}
	/* An address and a port number need no resolver, now or later. */
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = EVUTIL_AI_NUMERICHOST | EVUTIL_AI_NUMERICSERV;
	if (evutil_getaddrinfo(host, port, &hints, &c->ai0) == 0)
		c->numeric = 1;
	else
		c->ai0 = NULL;
	timer_in(c->timer, 0);
	return c;
}

struct link *
link_client_link(struct link_client *c)
{
	return c->link != NULL && link_is_ready(c->link) ? c->link : NULL;
}

void
link_client_free(struct link_client *c)
{
	if (c == NULL)
		return;
	if (c->busy) {
		/* From inside on_close: finish when it returns. */
		c->freed = 1;
		return;
	}
	if (c->link != NULL) {
		c->link->client = NULL;
		link_free(c->link);
	}
	if (c->cev != NULL)
		event_free(c->cev);
	if (c->fd != -1)
		close(c->fd);
	if (c->dreq != NULL)
		evdns_getaddrinfo_cancel(c->dreq);	/* calls back now */
	c->dreq = NULL;
	if (c->dns != NULL)
		evdns_base_free(c->dns, 0);
	if (c->ai0 != NULL)
		evutil_freeaddrinfo(c->ai0);
	if (c->timer != NULL)
		event_free(c->timer);
	sodium_memzero(c->key, sizeof(c->key));
	free(c->host);
	free(c->port);
	free(c);
}

static void
client_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	client_try(arg);
}

/*
 * Connect: to the numeric address parsed once, or resolve the name first,
 * with libevent's asynchronous resolver (never blocking the loop, however
 * long DNS takes to fail).
 */
static void
client_try(struct link_client *c)
{
	struct evutil_addrinfo	hints;

	c->err[0] = '\0';
	if (c->numeric) {
		c->ai = c->ai0;
		client_next(c);
		return;
	}
	if (c->ai0 != NULL)
		evutil_freeaddrinfo(c->ai0);
	c->ai0 = c->ai = NULL;
	if (c->dns == NULL && (c->dns = evdns_base_new(c->base,
	    EVDNS_BASE_INITIALIZE_NAMESERVERS |
	    EVDNS_BASE_DISABLE_WHEN_INACTIVE)) == NULL &&
	    (c->dns = evdns_base_new(c->base,
	    EVDNS_BASE_DISABLE_WHEN_INACTIVE)) == NULL) {
		client_retry(c, "cannot start the resolver");
		return;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	/* May call back at once (NULL then): from /etc/hosts, say. */
	c->dreq = evdns_getaddrinfo(c->dns, c->host, c->port, &hints,
	    client_dns_cb, c);
}

static void
client_dns_cb(int r, struct evutil_addrinfo *ai, void *arg)
{
	struct link_client	*c = arg;

	c->dreq = NULL;
	if (r == EVUTIL_EAI_CANCEL) {
		/* link_client_free() is under way. */
		if (ai != NULL)
			evutil_freeaddrinfo(ai);
		return;
	}
	if (r != 0) {
		snprintf(c->err, sizeof(c->err), "%s port %s: %s", c->host,
		    c->port, evutil_gai_strerror(r));
		if (ai != NULL)
			evutil_freeaddrinfo(ai);
		client_retry(c, c->err);
		return;
	}
	c->ai0 = c->ai = ai;
	client_next(c);
}

/* Try the next address, or give up on this round. */
static void
client_next(struct link_client *c)
{
	for (; c->ai != NULL; c->ai = c->ai->ai_next) {
		if ((c->fd = socket(c->ai->ai_family, c->ai->ai_socktype |
		    SOCK_NONBLOCK | SOCK_CLOEXEC, c->ai->ai_protocol)) == -1) {
			snprintf(c->err, sizeof(c->err), "socket: %s",
			    strerror(errno));
			continue;
		}
		link_nodelay(c->fd);
		if (connect(c->fd, c->ai->ai_addr, c->ai->ai_addrlen) == 0 ||
		    errno == EINPROGRESS) {
			c->cev = event_new(c->base, c->fd, EV_WRITE,
			    client_connect_cb, c);
			if (c->cev == NULL)
				fatalx("event_new");
			event_add(c->cev, NULL);
			return;
		}
		snprintf(c->err, sizeof(c->err), "connect to %s port %s: %s",
		    c->host, c->port, strerror(errno));
		close(c->fd);
		c->fd = -1;
	}
	client_retry(c, c->err[0] ? c->err : "no address");
}

static void
client_connect_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct link_client	*c = arg;
	socklen_t		 sl = sizeof(int);
	int			 e = 0;

	(void)ev;
	event_free(c->cev);
	c->cev = NULL;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) == -1)
		e = errno;
	if (e != 0) {
		snprintf(c->err, sizeof(c->err), "connect to %s port %s: %s",
		    c->host, c->port, strerror(e));
		close(c->fd);
		c->fd = -1;
		c->ai = c->ai->ai_next;
		client_next(c);
		return;
	}
	if (!c->numeric) {
		evutil_freeaddrinfo(c->ai0);
		c->ai0 = NULL;
	}
	c->ai = NULL;
	if ((c->link = link_new(c->base, c->fd, c->fd, &c->o, &c->cb,
	    c->arg)) == NULL) {
		snprintf(c->err, sizeof(c->err), "link: %s", strerror(errno));
		close(c->fd);
		c->fd = -1;
		client_retry(c, c->err);
		return;
	}
	c->fd = -1;	/* the link owns it now */
	c->link->client = c;
}

static void
client_retry(struct link_client *c, const char *why)
{
	char		d[32];
	uint64_t	us;

	/* Jitter of +-25% keeps many clients from reconnecting in step. */
	us = c->delay - c->delay / 4 +
	    randombytes_uniform((uint32_t)(c->delay / 2 + 1));
	if (why != NULL)
		log_warnx("%s; next try in %s", why,
		    fmt_duration(us / 1000 * 1000, d, sizeof(d)));
	timer_in(c->timer, us);
	c->delay = c->delay * 2 > c->max ? c->max : c->delay * 2;
}

/* A link of ours ended: tell the owner, free it, try again later. */
static void
client_link_closed(struct link *l)
{
	struct link_client	*c = l->client;

	c->busy = 1;
	l->busy++;
	if (l->cb.on_close != NULL)
		l->cb.on_close(l, l->reason);
	l->busy--;
	c->busy = 0;
	c->link = NULL;
	l->client = NULL;
	link_free(l);
	if (c->freed)
		link_client_free(c);
	else
		client_retry(c, NULL);
}

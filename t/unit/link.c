/* See LICENSE file for copyright and license details. */
/*
 * Unit tests for lib/link.c: two link endpoints in one process, on one
 * event_base, over socketpairs or pipes, with a tampering relay between
 * them for the attacks (flipped bytes, replay, reorder, drop, truncation,
 * an oversized length, a reader that stops).
 */
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <sodium.h>

#include "hatrio.h"
#include "link.h"
#include "unit.h"

#define HS_BYTES	196	/* HELLO (140) + AUTH (56) */
#define ADDR		"127.0.0.1:4444"
#define MAXMSG		(256 * 1024)

struct end {
	struct link	*l;
	int		 ready, closed, nmsg, bad;
	char		 peer[LINK_NAME_MAX + 1];
	char		 reason[256];
	size_t		 bytes;
	int		 drains;
};

enum relay_op { R_NONE, R_FLIP, R_REPLAY, R_SWAP, R_DROP, R_TRUNC,
    R_TRUNC_MID, R_BIGLEN, R_STALL };

struct relay {
	struct bufferevent	*a, *b;	/* a faces the client, b the server */
	enum relay_op		 op;
	int			 k, frame, done, shut_b, shut_a;
	size_t			 flip_at, off, boff, bflip;
	unsigned char		*acc, *held;
	size_t			 acclen, accsize, heldlen;
};

static struct event_base	*base;
static unsigned char		 key1[HATRIO_KEY_BYTES], key2[HATRIO_KEY_BYTES];
static struct end		 ce, se;
static uint64_t			 rekey_us;
static int			 cipher = LINK_CIPHER_AUTO;

static void
gen(unsigned char *p, size_t n, unsigned seed, int compressible)
{
	size_t		i;
	uint32_t	x = seed * 2654435761U + 1;

	for (i = 0; i < n; i++) {
		x = x * 1103515245 + 12345;
		p[i] = compressible ? "hatrio link "[(x >> 16) % 12] ^
		    (i % 64 == 0) : (int)(x >> 16);
	}
}

/* The receiving side checks every message against the generator. */
static size_t		 exp_len[256];
static int		 exp_z[256];
static unsigned char	*chk;

static void
on_ready(struct link *l, const char *peer)
{
	struct end *e = link_arg(l);

	e->ready++;
	snprintf(e->peer, sizeof(e->peer), "%s", peer);
}

static void
on_message(struct link *l, unsigned type, const void *buf, size_t len)
{
	struct end *e = link_arg(l);

	if (e->closed)
		e->bad++;	/* delivered after the end */
	if (type != (unsigned)(e->nmsg % 256) + 7 ||
	    len != exp_len[e->nmsg % 256])
		e->bad++;
	else {
		gen(chk, len, e->nmsg, exp_z[e->nmsg % 256]);
		if (memcmp(chk, buf, len) != 0)
			e->bad++;
	}
	e->nmsg++;
	e->bytes += len;
}

static void
on_drain(struct link *l)
{
	struct end *e = link_arg(l);

	e->drains++;
}

static void
on_close(struct link *l, const char *reason)
{
	struct end *e = link_arg(l);

	e->closed++;
	snprintf(e->reason, sizeof(e->reason), "%s", reason);
	if (ce.closed && se.closed)
		event_base_loopbreak(base);
}

static const struct link_cb cbs = { on_ready, on_message, on_drain,
    on_close };

static void
opts(struct link_opts *o, enum link_role role, const unsigned char *key,
    const char *name, const char *peer, int z)
{
	link_opts_init(o);
	o->role = role;
	o->key = key;
	o->name = name;
	o->peer = peer;
	o->zlevel = z;
	o->max_msg = MAXMSG;
	o->handshake_usec = 300000;
	o->peer_addr = ADDR;
	o->rekey_usec = rekey_us;
	o->cipher = cipher;
}

static void
stop_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	event_base_loopbreak(base);
}

/* Run the loop until both ends closed, or ms passed. */
static void
run(int ms)
{
	struct event	*t = evtimer_new(base, stop_cb, NULL);
	struct timeval	 tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(t, &tv);
	if (!(ce.closed && se.closed))
		event_base_dispatch(base);
	event_free(t);
}

static void
reset(void)
{
	link_free(ce.l);
	link_free(se.l);
	memset(&ce, 0, sizeof(ce));
	memset(&se, 0, sizeof(se));
}

/* A client and a server link over one socketpair each way or a relay. */
static void
pair(int cfd, int sfd, const unsigned char *ckey, const unsigned char *skey,
    const char *cname, const char *cwant, const char *sname, int z)
{
	struct link_opts	o;

	reset();
	opts(&o, LINK_CLIENT, ckey, cname, cwant, z);
	ce.l = link_new(base, cfd, -1, &o, &cbs, &ce);
	opts(&o, LINK_SERVER, skey, sname, NULL, z);
	se.l = link_new(base, sfd, -1, &o, &cbs, &se);
	if (ce.l == NULL || se.l == NULL)
		fatal("link_new");
}

static void
direct_pair(int z)
{
	int	sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		fatal("socketpair");
	pair(sv[0], sv[1], key1, key1, "a", "b", "b", z);
}

/* Wait until both are ready (or closed). */
static int
wait_ready(void)
{
	int	i;

	for (i = 0; i < 200 && !(ce.ready && se.ready) && !ce.closed &&
	    !se.closed; i++)
		event_base_loop(base, EVLOOP_ONCE);
	return ce.ready && se.ready;
}

/* Send n messages client -> server with the given sizes. */
static int
send_all(const size_t *sizes, int n, int z)
{
	unsigned char	*buf = malloc(MAXMSG + 1);
	size_t		 h;
	int		 i, r = 0;

	for (i = 0; i < n && r == 0; i++) {
		exp_len[i % 256] = sizes[i];
		exp_z[i % 256] = z && i % 3 != 2;
		gen(buf, sizes[i], i, exp_z[i % 256]);
		if (i % 4 == 1) {
			/* A head at link_msg_buf() and a tail elsewhere. */
			h = sizes[i] > 0 ? randombytes_uniform(sizes[i]) : 0;
			memcpy(link_msg_buf(ce.l), buf, h);
			r = link_send_tail(ce.l, (i % 256) + 7, h, buf + h,
			    sizes[i] - h);
		} else
			r = link_send(ce.l, (i % 256) + 7, buf, sizes[i]);
		while (r == 0 && !link_writable(ce.l))
			event_base_loop(base, EVLOOP_ONCE);
	}
	free(buf);
	return r;
}

static void
test_roundtrip(int z)
{
	size_t		 sizes[64];
	unsigned char	*big = calloc(1, MAXMSG + 1);
	struct link_stats st;
	int		 i, n = 0;

	sizes[n++] = 0;
	sizes[n++] = 1;
	sizes[n++] = MAXMSG;
	sizes[n++] = 2;
	sizes[n++] = 63;
	sizes[n++] = 64;
	sizes[n++] = 65536;
	sizes[n++] = MAXMSG - 1;
	for (i = 0; i < 30; i++)
		sizes[n++] = randombytes_uniform(i % 2 ? 4096 : MAXMSG + 1);
	direct_pair(z);
	ok(wait_ready(), "z=%d: both ends ready", z);
	is_str(ce.peer, "b", "z=%d: client sees peer b", z);
	is_str(se.peer, "a", "z=%d: server sees peer a", z);
	ok(link_max_msg(ce.l) == MAXMSG, "z=%d: max message %d", z, MAXMSG);
	ok(send_all(sizes, n, z) == 0, "z=%d: %d messages queued", z, n);
	ok(link_send(ce.l, 1, big, MAXMSG + 1) == -1 && errno == EMSGSIZE,
	    "z=%d: a message over the maximum is refused with EMSGSIZE", z);
	ok(link_send_tail(ce.l, 1, 16, big, MAXMSG - 15) == -1 &&
	    errno == EMSGSIZE, "z=%d: so is a head and tail over it", z);
	link_close(ce.l, NULL);
	run(5000);
	ok(se.nmsg == n && se.bad == 0, "z=%d: all %d messages arrived "
	    "intact and in order (got %d, %d bad)", z, n, se.nmsg, se.bad);
	is_str(se.reason, "peer closed the connection",
	    "z=%d: server: clean close", z);
	is_str(ce.reason, "closed", "z=%d: client: closed", z);
	ok(ce.closed == 1 && se.closed == 1, "z=%d: on_close once each", z);
	link_get_stats(ce.l, &st);
	if (z)
		ok(st.compressed_out > 0 && st.wire_out < st.bytes_out,
		    "z=%d: compressed (%llu of %llu bytes on the wire)", z,
		    (unsigned long long)st.wire_out,
		    (unsigned long long)st.bytes_out);
	else
		ok(st.compressed_out == 0, "z=0: nothing compressed");
	free(big);
}

static void
test_wrong_key(void)
{
	int	sv[2];

	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	pair(sv[0], sv[1], key1, key2, "a", "b", "b", 0);
	run(3000);
	is_str(ce.reason, "wrong cluster key: peer " ADDR " does not hold "
	    "ours (or the handshake was tampered with)", "wrong key: client");
	is_str(se.reason, "wrong cluster key: peer " ADDR " does not hold "
	    "ours (or the handshake was tampered with)", "wrong key: server");
	ok(!ce.ready && !se.ready, "wrong key: neither became ready");
	/* The name in a HELLO is only a claim until AUTH proved it. */
	is_str(link_peer_name(ce.l), "", "wrong key: the client does not "
	    "report the server's unproven name");
	is_str(link_peer_name(se.l), "", "wrong key: the server does not "
	    "report the client's unproven name");
}

static void
test_names(void)
{
	int	sv[2];

	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	pair(sv[0], sv[1], key1, key1, "a", "b", "x", 0);
	run(3000);
	is_str(ce.reason, "unexpected node name 'x' (want 'b')",
	    "wrong peer name: client says why");
	is_str(se.reason, "peer closed the connection: unexpected node name "
	    "'x' (want 'b')", "wrong peer name: server learns why");
	ok(!ce.ready, "wrong peer name: client never ready");

	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	pair(sv[0], sv[1], key1, key1, "a", NULL, "anyname", 0);
	ok(wait_ready(), "peer NULL accepts any name");
	is_str(ce.peer, "anyname", "the name is reported");
	is_str(link_peer_name(ce.l), "anyname", "link_peer_name() once "
	    "authenticated");
}

/* Tiny message limits still allow the handshake and a final reason. */
static void
test_small_max(void)
{
	struct link_opts	o;
	unsigned char		m[64];
	int			sv[2];

	reset();
	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	opts(&o, LINK_CLIENT, key1, "a", "b", 0);
	o.max_msg = 20;
	ce.l = link_new(base, sv[0], -1, &o, &cbs, &ce);
	opts(&o, LINK_SERVER, key1, "b", NULL, 0);
	o.max_msg = 1;
	se.l = link_new(base, sv[1], -1, &o, &cbs, &se);
	ok(wait_ready(), "max_msg 20 and 1: the handshake completes "
	    "(client '%s', server '%s')", ce.reason, se.reason);
	ok(link_max_msg(ce.l) == 1, "the client sends at most the server's "
	    "1 byte (%zu)", link_max_msg(ce.l));
	exp_len[0] = 1;
	exp_z[0] = 0;
	gen(m, 1, 0, 0);
	ok(link_send(ce.l, 7, m, 1) == 0, "a 1-byte message is queued");
	ok(link_send(ce.l, 7, m, 2) == -1 && errno == EMSGSIZE,
	    "a 2-byte message is refused with EMSGSIZE");
	link_close(ce.l, "bye");
	run(3000);
	ok(se.nmsg == 1 && se.bad == 0, "the 1-byte message arrived");
	is_str(se.reason, "peer closed the connection: b", "the final "
	    "reason is cut to the server's maximum");
	is_str(ce.reason, "bye", "the client: closed");
}

/* A close reason longer than the peer's maximum message. */
static void
test_long_reason(void)
{
	struct link_opts	o;
	char			why[251], want[256];
	int			sv[2];

	memset(why, 'x', sizeof(why) - 1);
	why[sizeof(why) - 1] = '\0';
	reset();
	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	opts(&o, LINK_CLIENT, key1, "a", "b", 0);
	ce.l = link_new(base, sv[0], -1, &o, &cbs, &ce);
	opts(&o, LINK_SERVER, key1, "b", NULL, 0);
	o.max_msg = 100;
	se.l = link_new(base, sv[1], -1, &o, &cbs, &se);
	ok(wait_ready(), "server max_msg 100: ready");
	link_close(ce.l, why);
	run(3000);
	snprintf(want, sizeof(want), "peer closed the connection: %.100s",
	    why);
	is_str(se.reason, want, "a 250-byte reason reaches a peer of "
	    "max_msg 100 as its first 100 bytes");
	is_str(ce.reason, why, "the closing side keeps its whole reason");
}

/*
 * Before authentication a link holds only small buffers: many pending
 * handshakes cost little memory (they used to cost about 37 MiB each).
 */
static size_t
heap(void)
{
	struct mallinfo2	mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

static void
test_handshake_memory(void)
{
	struct link_opts	 o;
	struct link		*ls[64];
	int			 fds[64], sv[2], i;
	size_t			 before, pending, open;

	reset();
	before = heap();
	for (i = 0; i < 64; i++) {
		socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
		opts(&o, LINK_SERVER, key1, "b", NULL, 0);
		o.max_msg = LINK_MSG_MAX_DEFAULT;
		ls[i] = link_new(base, sv[1], -1, &o, &cbs, &se);
		fds[i] = sv[0];
	}
	pending = heap() - before;
	ok(link_handshakes() == 64, "64 links in the handshake counted (%u)",
	    link_handshakes());
#if defined(__SANITIZE_ADDRESS__)
	ok(1, "# SKIP heap size under ASan (%zu)", pending);
#else
	ok(pending < 64 * 16384, "64 unauthenticated links hold %zu bytes "
	    "(under 16 KiB each)", pending);
#endif
	for (i = 0; i < 64; i++) {
		link_free(ls[i]);
		close(fds[i]);
	}
	ok(link_handshakes() == 0, "freed links leave the count (%u)",
	    link_handshakes());

	before = heap();
	direct_pair(0);
	ok(link_handshakes() == 2, "a pair in the handshake: 2");
	ok(wait_ready(), "authenticated pair: ready");
	open = heap() - before;
	ok(link_handshakes() == 0, "ready links left the count");
#if defined(__SANITIZE_ADDRESS__)
	ok(1, "# SKIP heap size under ASan (%zu)", open);
#else
	ok(open > 2 * 4 * MAXMSG, "the large buffers come after "
	    "authentication (%zu bytes)", open);
#endif
	reset();
}

/* Raw bytes from a fake peer into a server link. */
static void
test_raw(const void *bytes, size_t n, int close_after, const char *want,
    const char *what)
{
	struct link_opts	o;
	int			sv[2];

	reset();
	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	opts(&o, LINK_SERVER, key1, "b", NULL, 0);
	se.l = link_new(base, sv[1], -1, &o, &cbs, &se);
	ce.closed = 1;
	if (n > 0 && write(sv[0], bytes, n) != (ssize_t)n)
		fatal("write");
	if (close_after)
		close(sv[0]);
	run(3000);
	is_str(se.reason, want, "%s", what);
	if (!close_after)
		close(sv[0]);
}

static void
test_handshake_failures(void)
{
	unsigned char	h[140];

	memset(h, 0, sizeof(h));
	memcpy(h, "HTRL", 4);
	h[4] = 9;
	test_raw(h, sizeof(h), 0, "peer speaks protocol version 9, we speak "
	    "1 (peer " ADDR ")", "unknown protocol version");
	test_raw("GET / HTTP/1.0\r\n", 16, 0, "peer " ADDR " does not speak "
	    "the hatrio link protocol (bad magic)", "bad magic");
	test_raw("HTRL", 4, 1, "peer closed the connection during the "
	    "handshake (peer " ADDR ")", "peer closed during the handshake");
	test_raw(NULL, 0, 0, "handshake timed out after 300ms (peer " ADDR ")",
	    "handshake timeout");
	h[4] = 1;
	h[5] = LINK_CLIENT;
	h[6] = 1;
	h[8] = 1;
	h[12] = '$';
	test_raw(h, sizeof(h), 0, "malformed hello from " ADDR " (bad node "
	    "name)", "bad node name");
	h[5] = LINK_SERVER;
	h[12] = 'a';
	test_raw(h, sizeof(h), 0, "peer " ADDR " is also a server: one end "
	    "must be the client, the other the server", "two servers");
}

/*
 * The relay: forwards both directions, and tampers with the client's
 * stream to the server as op says.
 */
static void
relay_shut(struct bufferevent *bev, int *flag)
{
	*flag = 1;
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		shutdown(bufferevent_getfd(bev), SHUT_WR);
}

static void
relay_fwd(struct relay *r, const unsigned char *p, size_t n)
{
	if (!r->done)
		bufferevent_write(r->b, p, n);
}

static void
relay_frames(struct relay *r)
{
	size_t		 flen, used = 0;
	unsigned char	*p;

	while (!r->done) {
		p = r->acc + used;
		if (r->off + used < HS_BYTES) {
			flen = HS_BYTES - (r->off + used);
			if (flen > r->acclen - used)
				flen = r->acclen - used;
			if (flen == 0)
				break;
			relay_fwd(r, p, flen);
			used += flen;
			if (r->off + used == HS_BYTES && r->op == R_STALL)
				bufferevent_disable(r->a, EV_READ);
			continue;
		}
		if (r->acclen - used < 4)
			break;
		flen = 4 + ((size_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]);
		if (r->acclen - used < flen)
			break;
		used += flen;
		if (r->frame == r->k) {
			switch (r->op) {
			case R_REPLAY:
				relay_fwd(r, p, flen);
				relay_fwd(r, p, flen);
				break;
			case R_SWAP:
				r->held = malloc(flen);
				memcpy(r->held, p, flen);
				r->heldlen = flen;
				break;
			case R_DROP:
				break;
			case R_TRUNC:
				relay_shut(r->b, &r->shut_b);
				r->done = 1;
				break;
			case R_TRUNC_MID:
				relay_fwd(r, p, flen / 2);
				relay_shut(r->b, &r->shut_b);
				r->done = 1;
				break;
			case R_BIGLEN:
				p[0] = 0;
				p[1] = 0x04;	/* 256 KiB + 17 + 3 + 1 */
				p[2] = 0;
				p[3] = 21;
				relay_fwd(r, p, flen);
				break;
			default:
				relay_fwd(r, p, flen);
			}
		} else {
			relay_fwd(r, p, flen);
			if (r->op == R_SWAP && r->frame == r->k + 1) {
				relay_fwd(r, r->held, r->heldlen);
				free(r->held);
				r->held = NULL;
			}
		}
		r->frame++;
	}
	memmove(r->acc, r->acc + used, r->acclen - used);
	r->acclen -= used;
	r->off += used;
}

static void
relay_read_a(struct bufferevent *bev, void *arg)
{
	struct relay	*r = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	size_t		 n = evbuffer_get_length(in);

	if (r->acclen + n > r->accsize) {
		r->accsize = r->acclen + n + 4096;
		r->acc = realloc(r->acc, r->accsize);
	}
	evbuffer_remove(in, r->acc + r->acclen, n);
	if (r->op == R_FLIP && r->flip_at >= r->off + r->acclen &&
	    r->flip_at < r->off + r->acclen + n)
		r->acc[r->flip_at - r->off] ^= 0x01;
	r->acclen += n;
	if (r->op == R_FLIP || r->op == R_NONE) {
		relay_fwd(r, r->acc, r->acclen);
		r->off += r->acclen;
		r->acclen = 0;
	} else
		relay_frames(r);
}

static void
relay_read_b(struct bufferevent *bev, void *arg)
{
	struct relay	*r = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	size_t		 n = evbuffer_get_length(in);
	unsigned char	*p;

	/* The server's stream: flip one bit at offset bflip - 1 if set. */
	if (r->bflip > r->boff && r->bflip - 1 < r->boff + n) {
		p = evbuffer_pullup(in, n);
		p[r->bflip - 1 - r->boff] ^= 0x01;
	}
	r->boff += n;
	bufferevent_write_buffer(r->a, in);
}

static void
relay_write(struct bufferevent *bev, void *arg)
{
	struct relay	*r = arg;

	if ((bev == r->b && r->shut_b) || (bev == r->a && r->shut_a))
		shutdown(bufferevent_getfd(bev), SHUT_WR);
}

static void
relay_event(struct bufferevent *bev, short what, void *arg)
{
	struct relay	*r = arg;

	(void)what;
	bufferevent_disable(bev, EV_READ);
	if (bev == r->a)
		relay_shut(r->b, &r->shut_b);
	else
		relay_shut(r->a, &r->shut_a);
}

static struct relay *
relay_pair(enum relay_op op, int k, size_t flip_at, int z)
{
	struct relay	*r = calloc(1, sizeof(*r));
	int		 c[2], s[2];

	socketpair(AF_UNIX, SOCK_STREAM, 0, c);
	socketpair(AF_UNIX, SOCK_STREAM, 0, s);
	r->op = op;
	r->k = k;
	r->flip_at = flip_at;
	r->a = bufferevent_socket_new(base, c[1], BEV_OPT_CLOSE_ON_FREE);
	r->b = bufferevent_socket_new(base, s[1], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(r->a, relay_read_a, relay_write, relay_event, r);
	bufferevent_setcb(r->b, relay_read_b, relay_write, relay_event, r);
	bufferevent_enable(r->a, EV_READ | EV_WRITE);
	bufferevent_enable(r->b, EV_READ | EV_WRITE);
	pair(c[0], s[0], key1, key1, "a", "b", "b", z);
	return r;
}

static void
relay_free(struct relay *r)
{
	bufferevent_free(r->a);
	bufferevent_free(r->b);
	free(r->acc);
	free(r->held);
	free(r);
}

/* Five messages of 100 bytes and a clean close, through the relay. */
static void
five(void)
{
	size_t	sizes[5] = { 100, 100, 100, 100, 100 };

	if (wait_ready())
		send_all(sizes, 5, 0);
	if (!ce.closed)
		link_close(ce.l, NULL);
	run(3000);
}

static void
test_frames(void)
{
	struct relay	*r;
	const char	*auth = "message authentication failed: forged, "
			    "modified, replayed or reordered data from " ADDR;

	r = relay_pair(R_NONE, 0, 0, 0);
	five();
	ok(se.nmsg == 5 && se.bad == 0, "relay: untouched stream delivers 5");
	is_str(se.reason, "peer closed the connection", "relay: clean close");
	relay_free(r);

	r = relay_pair(R_REPLAY, 2, 0, 0);
	five();
	is_str(se.reason, auth, "replayed message detected");
	ok(se.nmsg == 3 && se.bad == 0, "replay: the 3 genuine messages "
	    "arrived, nothing after (got %d)", se.nmsg);
	relay_free(r);

	r = relay_pair(R_SWAP, 1, 0, 0);
	five();
	is_str(se.reason, auth, "reordered messages detected");
	ok(se.nmsg == 1 && se.bad == 0, "reorder: only the first arrived");
	relay_free(r);

	r = relay_pair(R_DROP, 3, 0, 0);
	five();
	is_str(se.reason, auth, "dropped message detected");
	ok(se.nmsg == 3 && se.bad == 0, "drop: messages before it arrived");
	relay_free(r);

	r = relay_pair(R_TRUNC, 4, 0, 0);
	five();
	is_str(se.reason, "peer closed the connection without a final "
	    "message (peer " ADDR ")", "truncation between messages");
	ok(se.nmsg == 4 && se.bad == 0, "truncation: 4 arrived");
	relay_free(r);

	r = relay_pair(R_TRUNC, 5, 0, 0);
	five();
	is_str(se.reason, "peer closed the connection without a final "
	    "message (peer " ADDR ")", "final message cut off");
	ok(se.nmsg == 5 && se.bad == 0, "final cut off: 5 arrived");
	relay_free(r);

	r = relay_pair(R_TRUNC_MID, 2, 0, 0);
	five();
	is_str(se.reason, "stream truncated: the connection from " ADDR
	    " ended inside a message", "truncation inside a message");
	ok(se.nmsg == 2 && se.bad == 0, "truncation inside: 2 arrived");
	relay_free(r);

	r = relay_pair(R_BIGLEN, 1, 0, 0);
	five();
	is_str(se.reason, "frame length 262165 from " ADDR " is outside "
	    "20..262164: corrupt or hostile stream", "length over the maximum");
	ok(se.nmsg == 1 && se.bad == 0, "length over max: 1 arrived");
	relay_free(r);
}

/* One flipped bit at every offset of the client's stream. */
static void
test_flips(void)
{
	struct relay	*r;
	size_t		 len, at;
	int		 fails = 0, leaks = 0, silent = 0;

	r = relay_pair(R_NONE, 0, 0, 0);
	five();
	len = r->off;
	relay_free(r);
	ok(len == HS_BYTES + 5 * 124 + 24, "client stream is %zu bytes", len);
	for (at = 0; at < len; at++) {
		r = relay_pair(R_FLIP, 0, at, 0);
		five();
		if (se.bad || ce.bad)
			leaks++;
		if (!se.closed || strcmp(se.reason,
		    "peer closed the connection") == 0) {
			silent++;
			if (silent < 5)
				printf("# flip at %zu: server %s\n", at,
				    se.reason);
		}
		if (at >= HS_BYTES && se.nmsg > (int)((at - HS_BYTES) / 124))
			fails++;
		relay_free(r);
	}
	ok(silent == 0, "every flipped byte failed the link (%d did not)",
	    silent);

	/* The server's handshake, byte by byte: the client refuses it. */
	silent = 0;
	for (at = 0; at < HS_BYTES; at++) {
		r = relay_pair(R_NONE, 0, 0, 0);
		r->bflip = at + 1;
		five();
		if (!ce.closed || ce.ready || se.nmsg != 0 ||
		    strncmp(ce.reason, "peer closed", 11) == 0) {
			silent++;
			if (silent < 5)
				printf("# server flip at %zu: client %s\n", at,
				    ce.reason);
		}
		relay_free(r);
	}
	ok(silent == 0, "every flipped byte of the server's handshake was "
	    "refused by the client (%d were not)", silent);
	ok(leaks == 0, "no modified message was ever delivered");
	ok(fails == 0, "nothing delivered at or after the flipped message");
}

/* A reader that stops: the sender's queue stays bounded. */
static int		 producing;
static size_t		 maxq;

static void
produce(void)
{
	static unsigned char	buf[65536];
	size_t			q;

	while (producing && link_writable(ce.l)) {
		exp_len[ce.nmsg % 256] = sizeof(buf);
		exp_z[ce.nmsg % 256] = 0;
		gen(buf, sizeof(buf), ce.nmsg, 0);
		if (link_send(ce.l, (ce.nmsg % 256) + 7, buf, sizeof(buf)))
			break;
		ce.nmsg++;
		if ((q = link_queued_bytes(ce.l)) > maxq)
			maxq = q;
	}
}

static void
drain_produce(struct link *l)
{
	on_drain(l);
	produce();
}

static void
test_backpressure(void)
{
	struct relay		*r;
	struct link_cb		 cb = cbs;
	struct link_stats	 st;
	unsigned char		 buf[65536];
	int			 n, sent;
	size_t			 q;

	r = relay_pair(R_STALL, 0, 0, 0);
	cb.on_drain = drain_produce;
	link_set_cb(ce.l, &cb);
	ok(wait_ready(), "stall: ready");
	producing = 1;
	maxq = 0;
	produce();
	run(500);
	ok(maxq <= LINK_HIWAT_DEFAULT + 65536 + 64 && maxq >= 1U << 20,
	    "stalled peer: queue peaked at %zu, bounded by the high "
	    "watermark", maxq);
	sent = ce.nmsg;
	gen(buf, sizeof(buf), 0, 0);
	for (n = 0; n < 10000; n++)
		if (link_send(ce.l, 1, buf, sizeof(buf)) == -1)
			break;
	q = link_queued_bytes(ce.l);
	ok(n < 10000 && errno == ENOBUFS, "a sender ignoring backpressure "
	    "gets ENOBUFS after %d more", n);
	ok(q <= LINK_HIWAT_DEFAULT + 2 * (MAXMSG + 24) + 65536 + 64,
	    "queue stays bounded (%zu)", q);
	producing = 0;
	/* Closing with the peer not reading: bounded by a timeout. */
	link_close(ce.l, "going away");
	ok(ce.closed == 0, "link_close does not call on_close at once");
	for (n = 0; n < 100 && !ce.closed; n++)
		event_base_loop(base, EVLOOP_ONCE);
	is_str(ce.reason, "going away (final data not flushed: peer " ADDR
	    " stopped reading)", "close times out on a peer that stopped "
	    "reading");
	relay_free(r);
	(void)sent;

	/* link_close during the handshake: on_close follows, once. */
	direct_pair(0);
	link_close(ce.l, NULL);
	ok(ce.closed == 0, "handshake: link_close defers on_close");
	run(1000);
	is_str(ce.reason, "closed", "handshake: closed by us");
	is_str(se.reason, "peer closed the connection during the handshake "
	    "(peer " ADDR ")", "handshake: the peer sees the close");
	ok(ce.closed == 1 && !ce.ready, "handshake: on_close once, never "
	    "ready");

	/* The same, but the reader resumes: everything arrives. */
	r = relay_pair(R_STALL, 0, 0, 0);
	link_set_cb(ce.l, &cb);
	wait_ready();
	producing = 1;
	maxq = 0;
	produce();
	run(200);
	bufferevent_enable(r->a, EV_READ);
	while (se.nmsg < 400 && !se.closed)
		event_base_loop(base, EVLOOP_ONCE);
	producing = 0;
	link_get_stats(ce.l, &st);
	ok(ce.drains > 0, "on_drain called when the queue emptied (%d)",
	    ce.drains);
	ok(se.nmsg >= 400 && se.bad == 0, "resumed reader got %d intact "
	    "messages", se.nmsg);
	relay_free(r);
	reset();
}

static void
test_rekey_and_pipes(void)
{
	struct link_opts	 o;
	struct link_stats	 cs, ss;
	size_t			 sizes[200];
	int			 p1[2], p2[2], i;

	for (i = 0; i < 200; i++)
		sizes[i] = 1000;
	reset();
	if (pipe(p1) == -1 || pipe(p2) == -1)
		fatal("pipe");
	opts(&o, LINK_CLIENT, key1, "a", "b", 3);
	o.rekey_bytes = 10000;
	o.peer_addr = NULL;
	ce.l = link_new(base, p1[0], p2[1], &o, &cbs, &ce);
	opts(&o, LINK_SERVER, key1, "b", "a", 3);
	o.peer_addr = NULL;
	se.l = link_new(base, p2[0], p1[1], &o, &cbs, &se);
	ok(wait_ready(), "pipes: ready");
	is_str(link_peer_addr(ce.l), "pipe", "pipes: the address is 'pipe'");
	send_all(sizes, 200, 1);
	link_close(ce.l, "done here");
	run(3000);
	ok(se.nmsg == 200 && se.bad == 0, "pipes: 200 messages arrived");
	is_str(se.reason, "peer closed the connection: done here",
	    "pipes: the close reason crosses");
	link_get_stats(ce.l, &cs);
	link_get_stats(se.l, &ss);
	ok(cs.rekeys_out >= 5 && cs.rekeys_out == ss.rekeys_in,
	    "rekeyed %llu times, both sides in step",
	    (unsigned long long)cs.rekeys_out);
}

/*
 * The steady state reuses its buffers: after a warm-up, moving 256 MiB in
 * 256 KiB messages faults in almost no fresh pages (a fresh 256 KiB buffer
 * per message would be 64 faults each, 65536 in all).
 */
static long
minflt(void)
{
	struct rusage	ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_minflt;
}

static void
test_steady_state(void)
{
	static size_t	 sizes[256];
	long		 before = 0;
	int		 i, round;

	for (i = 0; i < 256; i++)
		sizes[i] = MAXMSG;
	direct_pair(0);
	ok(wait_ready(), "steady state: ready");
	for (round = 0; round < 5; round++) {
		if (round == 1)
			before = minflt();
		se.nmsg = 0;
		send_all(sizes, round == 0 ? 64 : 256, 0);
		while (se.nmsg < (round == 0 ? 64 : 256) && !se.closed)
			event_base_loop(base, EVLOOP_ONCE);
	}
	before = minflt() - before;
#if defined(__SANITIZE_ADDRESS__)
	/* ASan's allocator quarantines freed memory: faults mean nothing. */
	ok(se.bad == 0, "256 MiB intact # SKIP page faults under ASan (%ld)",
	    before);
#else
	ok(before < 2048 && se.bad == 0, "256 MiB in 256 KiB messages cost "
	    "%ld page faults", before);
#endif
}

/* Rekeying after a time bound: the sender tags, both sides follow. */
static void
test_rekey_time(void)
{
	struct link_stats	 cs, ss;
	size_t			 sizes[1] = { 500 };
	int			 i;

	rekey_us = 20000;
	direct_pair(0);
	rekey_us = 0;
	ok(wait_ready(), "time rekey: ready");
	for (i = 0; i < 6; i++) {
		usleep(25000);
		send_all(sizes, 1, 0);
		se.nmsg = 0;	/* send_all numbers from 0 each time */
		run(20);
	}
	link_get_stats(ce.l, &cs);
	link_get_stats(se.l, &ss);
	ok(cs.rekeys_out >= 5 && cs.rekeys_out == ss.rekeys_in &&
	    se.bad == 0 && !se.closed, "rekeyed %llu times after 20ms each, "
	    "messages intact", (unsigned long long)cs.rekeys_out);
}

/*
 * Calls of the blocking resolver (getaddrinfo without AI_NUMERICHOST)
 * made by this process: the link client must make none.
 */
static int	 nresolve;

int
getaddrinfo(const char *node, const char *service,
    const struct addrinfo *hints, struct addrinfo **res)
{
	static int (*real)(const char *, const char *,
	    const struct addrinfo *, struct addrinfo **);

	if (real == NULL)
		*(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
	if (hints == NULL || !(hints->ai_flags & AI_NUMERICHOST))
		nresolve++;
	return real(node, service, hints, res);
}

/* TCP: TCP_NODELAY on both ends, and the reconnecting client. */
static struct end	 acc_end;
static int		 nready, naccept;
static struct link	*acc_link;

static void
acc_ready(struct link *l, const char *peer)
{
	(void)l;
	(void)peer;
}

static void
acc_close(struct link *l, const char *reason)
{
	(void)reason;
	if (l == acc_link)
		acc_link = NULL;
	link_free(l);
}

static void
accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
    int sl, void *arg)
{
	struct link_opts	o;
	struct link_cb		cb = { acc_ready, NULL, NULL, acc_close };

	(void)lis;
	(void)sa;
	(void)sl;
	(void)arg;
	naccept++;
	opts(&o, LINK_SERVER, key1, "b", "a", 0);
	o.peer_addr = NULL;
	if (acc_link != NULL)
		link_free(acc_link);
	acc_link = link_new(base, fd, -1, &o, &cb, &acc_end);
}

static int	 nodelay(int);
static int	 cl_nodelay = -2, srv_nodelay = -2;

static void
cl_ready(struct link *l, const char *peer)
{
	(void)peer;
	nready++;
	cl_nodelay = nodelay(link_fd(l));
	if (acc_link != NULL)
		srv_nodelay = nodelay(link_fd(acc_link));
	event_base_loopbreak(base);
}

static struct link_client	*tc;
static int			 free_in_close;

static void
cl_close(struct link *l, const char *reason)
{
	(void)l;
	(void)reason;
	if (free_in_close) {
		link_client_free(tc);
		tc = NULL;
	}
}

static int
nodelay(int fd)
{
	int		v = 0;
	socklen_t	sl = sizeof(v);

	if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &sl) == -1)
		return -1;
	return v;
}

static void
test_tcp(void)
{
	struct sockaddr_in	 sin;
	socklen_t		 sl = sizeof(sin);
	struct evconnlistener	*lis;
	struct link_client	*c;
	struct link_opts	 o;
	struct link_cb		 cb = { cl_ready, NULL, NULL, cl_close };
	char			 port[16];
	int			 s, i;

	reset();
	/* A port nobody listens on yet. */
	s = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(s, (struct sockaddr *)&sin, sizeof(sin));
	getsockname(s, (struct sockaddr *)&sin, &sl);
	snprintf(port, sizeof(port), "%u", ntohs(sin.sin_port));
	opts(&o, LINK_CLIENT, key1, "a", "b", 0);
	o.peer_addr = NULL;
	nresolve = 0;
	c = tc = link_client_new(base, "127.0.0.1", port, &o, &cb, NULL,
	    20000, 80000);
	run(300);	/* several refused attempts with backoff */
	ok(nready == 0, "no server: not ready");
	ok(nresolve == 0, "a numeric host: no blocking resolver call in "
	    "the retries (%d)", nresolve);
	listen(s, 8);
	evutil_make_socket_nonblocking(s);
	lis = evconnlistener_new(base, accept_cb, NULL,
	    LEV_OPT_CLOSE_ON_FREE, -1, s);
	run(2000);
	ok(nready == 1, "reconnecting client: ready once the server listens");
	ok(link_client_link(c) != NULL && acc_link != NULL,
	    "client and server links exist");
	ok(cl_nodelay == 1 && srv_nodelay == 1, "TCP_NODELAY set on both "
	    "ends (client %d, server %d)", cl_nodelay, srv_nodelay);
	ok(strncmp(link_peer_addr(acc_link), "127.0.0.1:", 10) == 0,
	    "server sees the client's address %s", link_peer_addr(acc_link));
	/* The server drops the link: the client reconnects by itself. */
	link_close(acc_link, "restart");
	for (i = 0; i < 50 && nready < 2; i++)
		run(100);
	ok(nready == 2 && naccept == 2, "after the server closed, the client "
	    "reconnected (%d ready, %d accepted)", nready, naccept);
	/* The owner frees the client from inside on_close: no reconnect. */
	free_in_close = 1;
	link_close(acc_link, "restart");
	for (i = 0; i < 50 && tc != NULL; i++)
		run(100);
	run(200);
	ok(tc == NULL && naccept == 2, "client freed from inside on_close, "
	    "no more connections (%d accepted)", naccept);
	(void)c;
	link_free(acc_link);
	acc_link = NULL;
	evconnlistener_free(lis);
}

/*
 * The owner of a link_client's link calls link_free() on it: from on_ready
 * (the client must drop the link and reconnect), from on_close (the client
 * frees it itself: no double free).  And a client of a host name resolves
 * it without the blocking resolver.
 */
static int		 cf_mode, cf_ready, cf_closed;
static struct link	*cf_first;

static void
cf_on_ready(struct link *l, const char *peer)
{
	(void)peer;
	cf_ready++;
	if (cf_mode == 1 && cf_ready == 1) {
		cf_first = l;
		link_free(l);
	}
	event_base_loopbreak(base);
}

static void
cf_on_close(struct link *l, const char *reason)
{
	(void)reason;
	cf_closed++;
	if (cf_mode == 2)
		link_free(l);
	event_base_loopbreak(base);
}

static struct evconnlistener *
listen_any(char *port, size_t len)
{
	struct sockaddr_in	sin;
	socklen_t		sl = sizeof(sin);
	int			s;

	s = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(s, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    getsockname(s, (struct sockaddr *)&sin, &sl) == -1 ||
	    listen(s, 8) == -1)
		fatal("listen");
	snprintf(port, len, "%u", ntohs(sin.sin_port));
	evutil_make_socket_nonblocking(s);
	return evconnlistener_new(base, accept_cb, NULL,
	    LEV_OPT_CLOSE_ON_FREE, -1, s);
}

static void
test_client_owned(void)
{
	struct evconnlistener	*lis;
	struct link_client	*c;
	struct link_opts	 o;
	struct link_cb		 cb = { cf_on_ready, NULL, NULL, cf_on_close };
	char			 port[16];
	int			 i;

	reset();
	naccept = 0;
	lis = listen_any(port, sizeof(port));
	opts(&o, LINK_CLIENT, key1, "a", "b", 0);
	o.peer_addr = NULL;

	/* link_free() from on_ready: detached, the client reconnects. */
	cf_mode = 1;
	c = link_client_new(base, "127.0.0.1", port, &o, &cb, NULL, 20000,
	    80000);
	for (i = 0; i < 50 && cf_ready < 2; i++)
		run(100);
	ok(cf_ready == 2 && naccept == 2, "link_free() of a client's link "
	    "in on_ready: the client reconnected (%d ready, %d accepted)",
	    cf_ready, naccept);
	ok(link_client_link(c) != NULL && link_client_link(c) != cf_first,
	    "the client holds the new link, not the freed one");
	ok(cf_closed == 0, "no on_close for the freed link");

	/* link_free() from on_close: ignored, the client frees it. */
	cf_mode = 2;
	link_close(acc_link, "restart");
	for (i = 0; i < 50 && cf_ready < 3; i++)
		run(100);
	ok(cf_closed == 1 && cf_ready == 3, "link_free() in on_close: "
	    "closed once, reconnected (%d closed, %d ready)", cf_closed,
	    cf_ready);
	link_client_free(c);
	link_free(acc_link);
	acc_link = NULL;

	/* A host name: resolved by libevent, not getaddrinfo(3). */
	cf_mode = 0;
	cf_ready = 0;
	nresolve = 0;
	c = link_client_new(base, "localhost", port, &o, &cb, NULL, 20000,
	    80000);
	for (i = 0; i < 50 && cf_ready < 1; i++)
		run(100);
	ok(cf_ready == 1, "a client of 'localhost' connects");
	ok(nresolve == 0, "without the blocking resolver (%d calls)",
	    nresolve);
	link_client_free(c);
	link_free(acc_link);
	acc_link = NULL;
	evconnlistener_free(lis);
}

/* Both offer AES-256-GCM: it is used; one refuses: secretstream. */
static void
test_cipher(void)
{
	struct link_opts	o;
	const char		*want;
	int			sv[2];

	want = crypto_aead_aes256gcm_is_available() ? "aes256gcm" :
	    "xchacha20poly1305";
	direct_pair(0);
	is_str(link_cipher(ce.l), "", "no cipher before the handshake");
	ok(wait_ready(), "auto: ready");
	is_str(link_cipher(ce.l), want, "auto on both ends: client %s", want);
	is_str(link_cipher(se.l), want, "auto on both ends: server %s", want);

	reset();
	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	opts(&o, LINK_CLIENT, key1, "a", "b", 0);
	ce.l = link_new(base, sv[0], -1, &o, &cbs, &ce);
	opts(&o, LINK_SERVER, key1, "b", NULL, 0);
	o.cipher = LINK_CIPHER_XCHACHA;
	se.l = link_new(base, sv[1], -1, &o, &cbs, &se);
	ok(wait_ready(), "one end secretstream only: ready");
	is_str(link_cipher(ce.l), "xchacha20poly1305", "the client follows "
	    "a server without AES: xchacha20poly1305");
	is_str(link_cipher(se.l), "xchacha20poly1305", "the server: "
	    "xchacha20poly1305");
	opts(&o, LINK_CLIENT, key1, "a", "b", 0);
	o.cipher = 7;
	ok(link_new(base, 0, -1, &o, &cbs, &ce) == NULL && errno == EINVAL,
	    "an unknown cipher is refused with EINVAL");
	reset();
}

/* Send one 4 KiB message number i, compressible or not. */
static int
send_one(int i, int z)
{
	unsigned char	buf[4096];

	exp_len[i % 256] = sizeof(buf);
	exp_z[i % 256] = z;
	gen(buf, sizeof(buf), i, z);
	return link_send(ce.l, (i % 256) + 7, buf, sizeof(buf));
}

/*
 * zstd that does not pay backs off: after k poor results in a row the
 * next 2^(k-1) - 1 messages go raw untried; one that pays starts over.
 */
static void
test_zstd_backoff(void)
{
	struct link_stats	st;
	int			i, n = 0, r = 0;

	direct_pair(1);
	ok(wait_ready(), "zstd backoff: ready");
	/* Tried at 0, 1, 3, 7 (each fails), skipped 8..14. */
	for (i = 0; i < 8; i++)
		r |= send_one(n++, 0);
	for (i = 0; i < 7; i++)
		r |= send_one(n++, 1);
	link_get_stats(ce.l, &st);
	ok(r == 0 && st.compressed_out == 0, "zstd backoff: after four "
	    "incompressible messages tried the next seven go untried (%llu "
	    "compressed)", (unsigned long long)st.compressed_out);
	for (i = 0; i < 8; i++)
		r |= send_one(n++, 1);
	link_get_stats(ce.l, &st);
	ok(r == 0 && st.compressed_out == 8, "zstd backoff: then tried "
	    "again, and every one that pays (%llu of 8)",
	    (unsigned long long)st.compressed_out);
	link_close(ce.l, NULL);
	run(5000);
	ok(se.nmsg == n && se.bad == 0, "zstd backoff: all %d messages "
	    "intact (got %d, %d bad)", n, se.nmsg, se.bad);
	reset();
}

/* Every attack, on the cipher set now. */
static void
attacks(void)
{
	test_roundtrip(0);
	test_roundtrip(3);
	test_wrong_key();
	test_names();
	test_small_max();
	test_long_reason();
	test_frames();
	test_flips();
	test_rekey_and_pipes();
	test_rekey_time();
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (sodium_init() == -1)
		fatalx("sodium_init");
	log_init("unit/link", 0);
	base = event_base_new();
	chk = malloc(MAXMSG + 1);
	randombytes_buf(key1, sizeof(key1));
	randombytes_buf(key2, sizeof(key2));

	test_cipher();
	printf("# cipher: auto (%s)\n", crypto_aead_aes256gcm_is_available() ?
	    "aes256gcm" : "xchacha20poly1305");
	attacks();
	printf("# cipher: xchacha20poly1305\n");
	cipher = LINK_CIPHER_XCHACHA;
	attacks();
	cipher = LINK_CIPHER_AUTO;
	test_handshake_memory();
	test_handshake_failures();
	test_backpressure();
	test_steady_state();
	test_tcp();
	test_client_owned();
	test_zstd_backoff();
	reset();
	free(chk);
	event_base_free(base);
	return done_testing();
}

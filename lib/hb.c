/* See LICENSE file for copyright and license details. */
/*
 * hb.c: heartbeat packets (see hb.h for the layout): key derivation,
 * encoding, checking cheapest first and authenticating before the body is
 * even looked at, the replay rule, and the media addresses both programs
 * take on their command lines.  Then what else hbsend and hbwatch do
 * alike, kept here so that they cannot drift apart: option errors, the
 * key and node name they start with, the event base, stdout written
 * without blocking on a slow reader, and stdin read as a stream.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <sys/stat.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <sodium.h>

#include "hatrio.h"
#include "hb.h"

static int	parse_port(const char *, int, uint16_t *);
static void	evlog(int, const char *);
static void	out_cb(evutil_socket_t, short, void *);

static const char *hb_errstr[HB_NERR] = {
	"ok",
	"too short",
	"bad magic",
	"unknown version",
	"unknown type",
	"unknown flags",
	"bad length",
	"bad authentication tag (wrong key?)",
	"malformed body",
};

const char *
hb_strerror(int e)
{
	if (e < 0 || e >= HB_NERR)
		return "unknown error";
	return hb_errstr[e];
}

/*
 * The heartbeat key is a keyed BLAKE2b hash of a fixed context string
 * under the cluster key: another use of the same cluster key (the secure
 * link) derives a different key, so nothing signed for one is valid for
 * the other.
 */
void
hb_derive_key(const unsigned char ck[HATRIO_KEY_BYTES],
    unsigned char hk[HB_TAG_LEN])
{
	static const char	ctx[] = "hatrio heartbeat v1";

	crypto_generichash(hk, HB_TAG_LEN, (const unsigned char *)ctx,
	    sizeof(ctx) - 1, ck, HATRIO_KEY_BYTES);
}

/* Names: 1 to HB_NAME_MAX of [A-Za-z0-9._-]. */
int
hb_valid_name(const char *s)
{
	size_t	n;

	for (n = 0; s[n] != '\0'; n++) {
		if (n >= HB_NAME_MAX)
			return 0;
		if (!((s[n] >= 'a' && s[n] <= 'z') ||
		    (s[n] >= 'A' && s[n] <= 'Z') ||
		    (s[n] >= '0' && s[n] <= '9') ||
		    s[n] == '.' || s[n] == '_' || s[n] == '-'))
			return 0;
	}
	return n > 0;
}

/* A status: 0 to HB_STATUS_MAX printable ASCII characters. */
int
hb_valid_status(const char *s)
{
	size_t	n;

	for (n = 0; s[n] != '\0'; n++)
		if (n >= HB_STATUS_MAX || s[n] < 0x20 || s[n] > 0x7e)
			return 0;
	return 1;
}

/* hb_status_clean: make any line a valid status (truncate, mask). */
void
hb_status_clean(char *s)
{
	size_t	n;

	for (n = 0; s[n] != '\0'; n++) {
		if (n >= HB_STATUS_MAX) {
			s[n] = '\0';
			break;
		}
		if (s[n] < 0x20 || s[n] > 0x7e)
			s[n] = '?';
	}
}

/*
 * Encode pkt into buf with the tag made with key.  Returns the length of
 * the packet, or 0 when a field is invalid or buf too small.
 */
size_t
hb_encode(const struct hb_packet *pkt, const unsigned char *key,
    unsigned char *buf, size_t len)
{
	const char	*str[3];
	size_t		 body, off, n, i;

	if (!hb_valid_name(pkt->cluster) || !hb_valid_name(pkt->node) ||
	    !hb_valid_status(pkt->status) ||
	    (pkt->type != HB_TYPE_HEARTBEAT && pkt->type != HB_TYPE_LEAVING))
		return 0;
	str[0] = pkt->cluster;
	str[1] = pkt->node;
	str[2] = pkt->status;
	body = HB_BODY_FIXED + 3 + strlen(str[0]) + strlen(str[1]) +
	    strlen(str[2]);
	if (len < HB_HDR_LEN + body + HB_TAG_LEN)
		return 0;
	memcpy(buf, HB_MAGIC, 4);
	buf[4] = HB_VERSION;
	buf[5] = pkt->type;
	buf[6] = buf[7] = 0;
	buf[8] = body >> 8;
	buf[9] = body & 0xff;
	off = HB_HDR_LEN;
	put_be64(buf + off, pkt->incarnation);
	put_be64(buf + off + 8, pkt->seq);
	put_be64(buf + off + 16, pkt->time);
	off += HB_BODY_FIXED;
	for (i = 0; i < 3; i++) {
		n = strlen(str[i]);
		buf[off++] = n;
		memcpy(buf + off, str[i], n);
		off += n;
	}
	crypto_auth_hmacsha512256(buf + off, buf, off, key);
	return off + HB_TAG_LEN;
}

/*
 * Check a header (at least HB_HDR_LEN bytes) and give the length of the
 * whole packet it announces.  Used alone on a stream, to frame it.
 */
int
hb_header(const unsigned char *buf, size_t len, size_t *pktlen)
{
	size_t	body;

	if (len < HB_HDR_LEN)
		return HB_ESHORT;
	if (memcmp(buf, HB_MAGIC, 4) != 0)
		return HB_EMAGIC;
	if (buf[4] != HB_VERSION)
		return HB_EVERSION;
	if (buf[5] != HB_TYPE_HEARTBEAT && buf[5] != HB_TYPE_LEAVING)
		return HB_ETYPE;
	if (buf[6] != 0 || buf[7] != 0)
		return HB_EFLAGS;
	body = (size_t)buf[8] << 8 | buf[9];
	if (body < HB_BODY_MIN || body > HB_BODY_MAX)
		return HB_ELENGTH;
	*pktlen = HB_HDR_LEN + body + HB_TAG_LEN;
	return HB_OK;
}

/*
 * Parse a body that is already authenticated.  Every length is checked
 * against what is left, and the body must be consumed exactly.
 */
int
hb_parse_body(const unsigned char *b, size_t len, struct hb_packet *pkt)
{
	char	*dst[3];
	size_t	 max[3] = { HB_NAME_MAX, HB_NAME_MAX, HB_STATUS_MAX };
	size_t	 off, n, i;

	if (len < HB_BODY_FIXED + 3)
		return HB_EBODY;
	pkt->incarnation = get_be64(b);
	pkt->seq = get_be64(b + 8);
	pkt->time = get_be64(b + 16);
	if (pkt->incarnation == 0 || pkt->seq == 0 || pkt->time == 0)
		return HB_EBODY;
	dst[0] = pkt->cluster;
	dst[1] = pkt->node;
	dst[2] = pkt->status;
	off = HB_BODY_FIXED;
	for (i = 0; i < 3; i++) {
		if (off >= len)
			return HB_EBODY;
		n = b[off++];
		if (n > max[i] || n > len - off ||
		    memchr(b + off, '\0', n) != NULL)
			return HB_EBODY;
		memcpy(dst[i], b + off, n);
		dst[i][n] = '\0';
		off += n;
	}
	if (off != len)
		return HB_EBODY;
	if (!hb_valid_name(pkt->cluster) || !hb_valid_name(pkt->node) ||
	    !hb_valid_status(pkt->status))
		return HB_EBODY;
	return HB_OK;
}

/*
 * Decode one datagram: cheap checks first (length, magic, version, type,
 * flags, length field), then the tag in constant time, and only then the
 * body.  On error pkt may hold garbage and must not be used.
 */
int
hb_decode(const unsigned char *buf, size_t len, const unsigned char *key,
    struct hb_packet *pkt)
{
	size_t	pktlen;
	int	e;

	if (len < HB_PKT_MIN)
		return HB_ESHORT;
	if ((e = hb_header(buf, len, &pktlen)) != HB_OK)
		return e;
	if (pktlen != len)
		return HB_ELENGTH;
	if (crypto_auth_hmacsha512256_verify(buf + len - HB_TAG_LEN, buf,
	    len - HB_TAG_LEN, key) != 0)
		return HB_EAUTH;
	pkt->type = buf[5];
	return hb_parse_body(buf + HB_HDR_LEN, len - HB_HDR_LEN - HB_TAG_LEN,
	    pkt);
}

/* Is (inc, seq) strictly newer than what r has accepted? */
int
hb_newer(const struct hb_replay *r, uint64_t inc, uint64_t seq)
{
	if (!r->seen)
		return 1;
	if (inc != r->incarnation)
		return inc > r->incarnation;
	return seq > r->seq;
}

/*
 * The freshness rule: a packet whose time is further than window from
 * now (both wall-clock usec), either way, is refused; a window of 0
 * turns the rule off.  *age is now - t (negative: from the future).
 */
int
hb_fresh(uint64_t now, uint64_t t, uint64_t window, int64_t *age)
{
	uint64_t	d;

	if (now >= t) {
		d = now - t;
		*age = d > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)d;
	} else {
		d = t - now;
		*age = d > (uint64_t)INT64_MAX ? -INT64_MAX : -(int64_t)d;
	}
	return window == 0 || d <= window;
}

void
hb_accept(struct hb_replay *r, uint64_t inc, uint64_t seq)
{
	r->seen = 1;
	r->incarnation = inc;
	r->seq = seq;
}

static int
parse_port(const char *s, int zero, uint16_t *port)
{
	char		*end;
	unsigned long	 v;

	if (*s < '0' || *s > '9')
		return -1;
	v = strtoul(s, &end, 10);
	if (*end != '\0' || v > 65535 || (v == 0 && !zero))
		return -1;
	*port = v;
	return 0;
}

/*
 * Parse a medium: "udp:HOST:PORT", "mcast:GROUP:PORT[%IFACE]",
 * "bcast:IFACE:PORT" or "-".  HOST may be an IPv6 address in brackets,
 * and, when listening, "*" for any address.  Returns NULL or a reason.
 */
const char *
hb_medium_parse(const char *s, int listen, struct hb_medium *m)
{
	struct addrinfo	 hints, *res;
	struct ifaddrs	*ifa, *i;
	char		 buf[256], *host, *port, *iface = NULL;
	uint16_t	 p;
	int		 ok;

	memset(m, 0, sizeof(*m));
	if (strcmp(s, "-") == 0) {
		m->kind = HB_MEDIUM_PIPE;
		return NULL;
	}
	if (strlen(s) >= sizeof(buf))
		return "too long";
	strcpy(buf, s);
	if (strncmp(buf, "udp:", 4) == 0)
		m->kind = HB_MEDIUM_UDP;
	else if (strncmp(buf, "mcast:", 6) == 0)
		m->kind = HB_MEDIUM_MCAST;
	else if (strncmp(buf, "bcast:", 6) == 0)
		m->kind = HB_MEDIUM_BCAST;
	else
		return "unknown medium (udp:, mcast:, bcast: or -)";
	host = strchr(buf, ':') + 1;
	if (m->kind == HB_MEDIUM_MCAST && (iface = strchr(host, '%')) != NULL)
		*iface++ = '\0';
	if ((port = strrchr(host, ':')) == NULL)
		return "no port";
	*port++ = '\0';
	if (parse_port(port, 0, &p) == -1)
		return "bad port";
	if (*host == '[' && host[strlen(host) - 1] == ']') {
		host[strlen(host) - 1] = '\0';
		host++;
	}
	if (*host == '\0')
		return "no address";

	if (m->kind == HB_MEDIUM_BCAST) {
		if (strlen(host) >= sizeof(m->ifname))
			return "interface name too long";
		strcpy(m->ifname, host);
		if ((m->ifindex = if_nametoindex(host)) == 0)
			return "no such interface";
		if (listen) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&m->ss;

			sin->sin_family = AF_INET;
			sin->sin_port = htons(p);
			m->sslen = sizeof(*sin);
			m->any = 1;
			return NULL;
		}
		if (getifaddrs(&ifa) == -1)
			return "getifaddrs failed";
		ok = 0;
		for (i = ifa; i != NULL; i = i->ifa_next) {
			struct sockaddr_in	*sin;

			if (i->ifa_addr == NULL ||
			    i->ifa_addr->sa_family != AF_INET ||
			    strcmp(i->ifa_name, host) != 0 ||
			    !(i->ifa_flags & IFF_BROADCAST) ||
			    i->ifa_netmask == NULL)
				continue;
			/* from address and mask: "brd" is often not set */
			memcpy(&m->ss, i->ifa_addr, sizeof(*sin));
			sin = (struct sockaddr_in *)&m->ss;
			sin->sin_addr.s_addr |= ~((struct sockaddr_in *)
			    i->ifa_netmask)->sin_addr.s_addr;
			sin->sin_port = htons(p);
			m->sslen = sizeof(struct sockaddr_in);
			ok = 1;
			break;
		}
		freeifaddrs(ifa);
		return ok ? NULL : "interface has no IPv4 broadcast address";
	}

	if (strcmp(host, "*") == 0) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&m->ss;

		if (!listen || m->kind != HB_MEDIUM_UDP)
			return "\"*\" is only for listening on udp";
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_any;
		sin6->sin6_port = htons(p);
		m->sslen = sizeof(*sin6);
		m->any = 1;
		return NULL;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_DGRAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return "not a numeric IPv4 or IPv6 address";
	memcpy(&m->ss, res->ai_addr, res->ai_addrlen);
	m->sslen = res->ai_addrlen;
	freeaddrinfo(res);
	if (m->kind == HB_MEDIUM_MCAST) {
		ok = m->ss.ss_family == AF_INET ?
		    IN_MULTICAST(ntohl(((struct sockaddr_in *)&m->ss)->
		    sin_addr.s_addr)) :
		    IN6_IS_ADDR_MULTICAST(&((struct sockaddr_in6 *)&m->ss)->
		    sin6_addr);
		if (!ok)
			return "not a multicast group";
		if (iface != NULL) {
			if (strlen(iface) >= sizeof(m->ifname))
				return "interface name too long";
			strcpy(m->ifname, iface);
			if ((m->ifindex = if_nametoindex(iface)) == 0)
				return "no such interface";
		}
	}
	return NULL;
}

/*
 * A medium as an argument: parsed as by hb_medium_parse, and the pipe
 * medium counted in *npipe, since there is one stdin and one stdout to
 * carry one stream each.  Returns NULL or a reason.
 */
const char *
hb_medium_arg(const char *s, int listen, struct hb_medium *m, int *npipe)
{
	const char	*e;

	if ((e = hb_medium_parse(s, listen, m)) != NULL)
		return e;
	if (m->kind == HB_MEDIUM_PIPE && (*npipe)++ > 0)
		return "given twice";
	return NULL;
}

/* The address of sa as "HOST:PORT", IPv6 in brackets, mapped IPv4 plain. */
const char *
hb_addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
	char	 host[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(sin->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], host,
			    sizeof(host));
			snprintf(buf, len, "%s:%u", host,
			    ntohs(s6->sin6_port));
		} else {
			inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
			snprintf(buf, len, "[%s]:%u", host,
			    ntohs(s6->sin6_port));
		}
	} else
		snprintf(buf, len, "?");
	return buf;
}

/*
 * A bad option argument ends either program the same way: "-C x: why" and
 * the usage exit code, since only the command line can fix it.
 */
void
hb_badopt(int ch, const char *arg, const char *why)
{
	log_warnx("-%c %s: %s", ch, arg, why);
	exit(EXIT_USAGE);
}

/* A cluster or node name as an option argument: arg, or the usage exit. */
const char *
hb_opt_name(int ch, const char *arg)
{
	if (!hb_valid_name(arg))
		hb_badopt(ch, arg, "not a valid name");
	return arg;
}

/* A duration as an option argument, into *us, or the usage exit. */
void
hb_opt_duration(int ch, const char *arg, uint64_t *us)
{
	const char	*e;

	if ((e = parse_duration(arg, us)) != NULL)
		hb_badopt(ch, arg, e);
}

/* A file descriptor (-d, readiness) as an option argument, or the exit. */
void
hb_opt_fd(int ch, const char *arg, int *fd)
{
	const char	*e;

	if ((e = parse_fd(arg, fd)) != NULL)
		hb_badopt(ch, arg, e);
}

/*
 * Load the cluster key from path and derive the heartbeat key from it into
 * hk.  The cluster key is wiped at once: the heartbeat key is all either
 * program keeps.  Returns NULL, or key_load's message (hk is then left
 * as it was).  libsodium is set up here, as this is its first use.
 */
const char *
hb_key_load(const char *path, unsigned char hk[HB_TAG_LEN])
{
	unsigned char	 ck[HATRIO_KEY_BYTES];
	const char	*e;

	if (sodium_init() == -1)
		fatalx("sodium_init failed");
	if ((e = key_load(path, ck)) == NULL)
		hb_derive_key(ck, hk);
	sodium_memzero(ck, sizeof(ck));
	return e;
}

/*
 * The node name when -n is not given: the host name up to its first dot,
 * kept in buf.  A host name that is not a valid node name ends the program
 * with the usage exit code, as a bad option would: -n is the fix.
 */
const char *
hb_node_default(char *buf, size_t len)
{
	char	*p;

	if (gethostname(buf, len) == -1)
		fatal("gethostname");
	buf[len - 1] = '\0';
	if ((p = strchr(buf, '.')) != NULL)
		*p = '\0';
	if (!hb_valid_name(buf)) {
		log_warnx("host name %s is not a valid node name; use -n", buf);
		exit(EXIT_USAGE);
	}
	return buf;
}

/* libevent's own messages: the failures it reports are handled here. */
static void
evlog(int severity, const char *msg)
{
	(void)severity;
	log_debug("libevent: %s", msg);
}

/*
 * The event base, and what both programs need before it: a reader of
 * stdout that goes away must give EPIPE (and the exit code for it), not
 * kill us with SIGPIPE, and libevent's messages go to the debug log.
 */
struct event_base *
hb_base_new(void)
{
	signal(SIGPIPE, SIG_IGN);
	event_set_log_callback(evlog);
	return event_base_new();
}

/*
 * Make fd (stdout) non-blocking when it is a pipe or a socket, whose reader
 * may be slow: the event loop must go on meanwhile.  A file or a terminal
 * is left blocking, as a write to it does not wait on anybody.  Returns 1
 * when fd is now non-blocking, 0 when it was left alone, -1 on an error.
 */
int
hb_out_nonblock(int fd)
{
	struct stat	st;
	int		flags;

	if (fstat(fd, &st) == -1)
		return -1;
	if (!S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode))
		return 0;
	if ((flags = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1)
		return -1;
	return 1;
}

/*
 * Write what buf holds to fd until it is empty or fd would block.  The
 * write event ev (NULL for a blocking fd) is armed while anything is left
 * and removed once all is written.  Returns 0, or -1 with errno when the
 * write failed (a reader that went away: EPIPE).
 */
int
hb_out_flush(struct evbuffer *buf, int fd, struct event *ev)
{
	int	n;

	while (evbuffer_get_length(buf) > 0) {
		n = evbuffer_write(buf, fd);
		if (n > 0)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
			if (ev != NULL)
				event_add(ev, NULL);
			return 0;
		}
		return -1;
	}
	if (ev != NULL)
		event_del(ev);
	return 0;
}

/*
 * Make fd blocking again, at exit: what is still queued for it (a leaving
 * packet, the last event lines) must be written before we go.  An error
 * only means that the last write may stop short; there is nothing more to
 * do about it.
 */
void
hb_out_block(int fd)
{
	int	flags;

	if ((flags = fcntl(fd, F_GETFL)) != -1)
		fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
}

/*
 * Set up the stream o on stdout, with the event base for its write event.
 * what names stdout in the message when a write fails (hbsend: "-: write",
 * the medium).  Any failure here ends the program.
 */
void
hb_out_open(struct hb_out *o, struct event_base *base, const char *what)
{
	int	nb;

	o->what = what;
	o->ev = NULL;
	if ((o->buf = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	if ((nb = hb_out_nonblock(STDOUT_FILENO)) == -1)
		fatal("stdout");
	if (nb == 1 && (o->ev = event_new(base, STDOUT_FILENO, EV_WRITE,
	    out_cb, o)) == NULL)
		fatalx("event_new");
}

/*
 * Write what o has queued.  A reader that went away ends the program with
 * EXIT_SYS: the pipeline around it is to be restarted.
 */
void
hb_out_write(struct hb_out *o)
{
	if (hb_out_flush(o->buf, STDOUT_FILENO, o->ev) == -1)
		fatal("%s", o->what);
}

static void
out_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	hb_out_write(arg);
}

/*
 * At exit: what is still queued (the leaving packet, the last event lines)
 * is written, blocking if need be, before the stream goes.
 */
void
hb_out_close(struct hb_out *o)
{
	if (o->ev != NULL && evbuffer_get_length(o->buf) > 0)
		hb_out_block(STDOUT_FILENO);
	hb_out_write(o);
	if (o->ev != NULL)
		event_free(o->ev);
	evbuffer_free(o->buf);
	o->ev = NULL;
	o->buf = NULL;
}

/*
 * Read what fd, standard input, has for us into buf.  Returns 1 when
 * something was read, 0 when there is nothing yet, and -1 at the end of
 * the input; a read error is logged, then taken as the end, since stdin
 * cannot be opened again.
 */
int
hb_stdin_read(struct evbuffer *buf, int fd)
{
	int	n;

	n = evbuffer_read(buf, fd, 4096);
	if (n > 0)
		return 1;
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n == -1)
		log_warn("stdin");
	return -1;
}

/* See LICENSE file for copyright and license details. */
/*
 * linkpump: pump a byte stream across one hatrio link, for tests and the
 * link benchmark.  One end sends (-s) its input in messages of -b bytes and
 * closes the link at end of file; the other writes what arrives to its
 * output and exits 0 when the sender closed cleanly.  Either end may listen
 * or connect; "stdio" runs the link over descriptors 0 and 1 (a pipe
 * transport such as ssh), the data then coming from -i and going to -o.
 * -R sends plain TCP instead of a link, as the benchmark's baseline.
 * -X uses the secretstream cipher even where AES-256-GCM would do.
 * -M reads the whole input into memory before connecting, so that a
 * benchmark measures the link and not the file system.
 * At the end a line of statistics goes to stderr.
 *
 * usage: linkpump [-MRsvX] [-b size] [-d fd] [-i file] [-k keyfile] [-m size]
 *	    [-n name] [-o file] [-p peer] [-z level] listen|connect host port
 *	linkpump ... stdio client|server
 */
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <sodium.h>

#include "hatrio.h"
#include "link.h"

static struct event_base	*base;
static struct link_opts		 lo;
static unsigned char		 key[HATRIO_KEY_BYTES];
static unsigned char		*buf;
static size_t			 bsize = 256 * 1024;
static int			 sflag, Rflag, vflag;
static unsigned char		*mem;		/* -M: the input */
static size_t			 memlen, memoff;
static int			 infd = 0, outfd = 1, status = EXIT_SYS;
static uint64_t			 t0, t1;
static double			 cpu0;
static struct link		*lk;

static void	 usage(void) __attribute__((noreturn));
static void	 pump(struct link *);
static void	 report(const struct link_stats *);
static int	 tcp_fd(const char *, const char *, const char *, int);
static void	 raw(int);
static ssize_t	 input(void *, size_t);
static void	 preload(void);

/* The next part of the input: from memory (-M) or read(2). */
static ssize_t
input(void *p, size_t n)
{
	if (mem == NULL)
		return read(infd, p, n);
	if (n > memlen - memoff)
		n = memlen - memoff;
	memcpy(p, mem + memoff, n);
	memoff += n;
	return n;
}

static void
preload(void)
{
	size_t	cap = 1 << 20;
	ssize_t	n;

	if ((mem = malloc(cap)) == NULL)
		err(EXIT_SYS, "malloc");
	for (;;) {
		if (memlen == cap && (mem = realloc(mem, cap *= 2)) == NULL)
			err(EXIT_SYS, "realloc");
		if ((n = read(infd, mem + memlen, cap - memlen)) == -1) {
			if (errno == EINTR)
				continue;
			err(EXIT_SYS, "read");
		}
		if (n == 0)
			break;
		memlen += n;
	}
}

static void
usage(void)
{
	fprintf(stderr, "usage: linkpump [-MRsvX] [-b size] [-d fd] [-i file] "
	    "[-k keyfile] [-m size]\n"
	    "\t[-n name] [-o file] [-p peer] [-z level] "
	    "listen|connect host port\n"
	    "       linkpump ... stdio client|server\n");
	exit(EXIT_USAGE);
}

/* CPU time tells the cost on one core even on a busy machine. */
static double
cpu_now(void)
{
	struct rusage	ru;

	if (getrusage(RUSAGE_SELF, &ru) == -1)
		return 0;
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	    ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* The CPU time counts from the start of the transfer, like the wall time. */
static void
report(const struct link_stats *st)
{
	double		s = (t1 - t0) / 1e6, bytes, wire, cpu;

	cpu = cpu_now() - cpu0;

	bytes = sflag ? st->bytes_out : st->bytes_in;
	wire = sflag ? st->wire_out : st->wire_in;
	if (s <= 0)
		s = 1e-6;
	fprintf(stderr, "linkpump: %s %.0f bytes, %.0f on the wire "
	    "(ratio %.3f), %.3f s, %.1f MB/s, cpu %.3f s\n",
	    sflag ? "sent" : "received", bytes, wire,
	    wire > 0 ? bytes / wire : 0, s, bytes / s / 1e6, cpu);
}

/* Send while the queue is below its high watermark; close at EOF. */
static void
pump(struct link *l)
{
	ssize_t	n;

	while (link_writable(l)) {
		n = input(link_msg_buf(l), bsize);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			fatal("read");
		if (n == 0) {
			link_close(l, NULL);
			return;
		}
		if (link_send_buf(l, 1, n) == -1)
			fatal("link_send");
	}
}

static void
on_ready(struct link *l, const char *peer)
{
	log_debug("link to %s (%s) ready, %s", peer, link_peer_addr(l),
	    link_cipher(l));
	t0 = now_usec();
	cpu0 = cpu_now();
	if (sflag)
		pump(l);
}

static void
on_message(struct link *l, unsigned type, const void *p, size_t len)
{
	const char	*q = p;
	ssize_t		 n;

	(void)l;
	(void)type;
	while (len > 0) {
		if ((n = write(outfd, q, len)) == -1) {
			if (errno == EINTR)
				continue;
			fatal("write");
		}
		q += n;
		len -= n;
	}
}

static void
on_close(struct link *l, const char *reason)
{
	struct link_stats	st;

	t1 = now_usec();
	link_get_stats(l, &st);
	if (strcmp(reason, sflag ? "closed" : "peer closed the connection")
	    == 0) {
		report(&st);
		status = EXIT_OK;
	} else
		log_warnx("%s", reason);
	event_base_loopbreak(base);
}

static const struct link_cb	cbs = { on_ready, on_message, pump, on_close };

/* Listen for one connection, or connect; returns the connected socket. */
static int
tcp_fd(const char *how, const char *host, const char *port, int dfd)
{
	struct addrinfo		 hints, *ai;
	struct sockaddr_storage	 ss;
	socklen_t		 sl = sizeof(ss);
	char			 pb[NI_MAXSERV];
	int			 s, c, one = 1, r;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = strcmp(how, "listen") == 0 ? AI_PASSIVE : 0;
	if ((r = getaddrinfo(host, port, &hints, &ai)) != 0)
		fatalx("%s port %s: %s", host, port, gai_strerror(r));
	if ((s = socket(ai->ai_family, SOCK_STREAM, 0)) == -1)
		fatal("socket");
	if (strcmp(how, "connect") == 0) {
		if (connect(s, ai->ai_addr, ai->ai_addrlen) == -1)
			fatal("connect to %s port %s", host, port);
		freeaddrinfo(ai);
		ready_notify(dfd);
		return s;
	}
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, ai->ai_addr, ai->ai_addrlen) == -1 || listen(s, 1) == -1)
		fatal("listen on %s port %s", host, port);
	freeaddrinfo(ai);
	if (getsockname(s, (struct sockaddr *)&ss, &sl) == -1 ||
	    getnameinfo((struct sockaddr *)&ss, sl, NULL, 0, pb, sizeof(pb),
	    NI_NUMERICSERV) != 0)
		fatal("getsockname");
	if (dfd != -1) {
		/* The port first (port 0 picks one), then readiness. */
		dprintf(dfd, "%s", pb);
		ready_notify(dfd);
	}
	if ((c = accept(s, NULL, NULL)) == -1)
		fatal("accept");
	close(s);
	return c;
}

/* The baseline: the same stream over plain TCP. */
static void
raw(int fd)
{
	struct link_stats	st;
	ssize_t			n, w, off;
	int			from = sflag ? infd : fd, to = sflag ? fd : outfd;

	link_nodelay(fd);
	memset(&st, 0, sizeof(st));
	t0 = now_usec();
	cpu0 = cpu_now();
	for (;;) {
		if ((n = sflag ? input(buf, bsize) :
		    read(from, buf, bsize)) == -1) {
			if (errno == EINTR)
				continue;
			fatal("read");
		}
		if (n == 0)
			break;
		for (off = 0; off < n; off += w)
			if ((w = write(to, buf + off, n - off)) == -1)
				fatal("write");
		if (sflag)
			st.bytes_out += n;
		else
			st.bytes_in += n;
	}
	st.wire_out = st.bytes_out;
	st.wire_in = st.bytes_in;
	t1 = now_usec();
	report(&st);
	exit(EXIT_OK);
}

int
main(int argc, char *argv[])
{
	const char	*e, *kfile = NULL;
	uint64_t	 v;
	int		 ch, dfd = -1, fd, n, Mflag = 0;

	log_init(argv[0], 0);
	link_opts_init(&lo);
	lo.name = "pump";
	while ((ch = getopt(argc, argv, "MRb:d:i:k:m:n:o:p:svXz:")) != -1) {
		switch (ch) {
		case 'M':
			Mflag = 1;
			break;
		case 'R':
			Rflag = 1;
			break;
		case 'b':
			if ((e = parse_size(optarg, &v)) != NULL || v == 0 ||
			    v > LINK_MSG_MAX_LIMIT)
				errx(EXIT_USAGE, "-b %s: %s", optarg,
				    e ? e : "out of range");
			bsize = v;
			break;
		case 'd':
			if ((e = parse_fd(optarg, &dfd)) != NULL)
				errx(EXIT_USAGE, "-d %s: %s", optarg, e);
			break;
		case 'i':
			if ((infd = open(optarg, O_RDONLY | O_CLOEXEC)) == -1)
				err(EXIT_SYS, "%s", optarg);
			break;
		case 'k':
			kfile = optarg;
			break;
		case 'm':
			if ((e = parse_size(optarg, &v)) != NULL || v == 0 ||
			    v > LINK_MSG_MAX_LIMIT)
				errx(EXIT_USAGE, "-m %s: %s", optarg,
				    e ? e : "out of range");
			lo.max_msg = v;
			break;
		case 'n':
			lo.name = optarg;
			break;
		case 'o':
			if ((outfd = open(optarg, O_WRONLY | O_CREAT | O_TRUNC |
			    O_CLOEXEC, 0644)) == -1)
				err(EXIT_SYS, "%s", optarg);
			break;
		case 'p':
			lo.peer = optarg;
			break;
		case 's':
			sflag = 1;
			break;
		case 'v':
			vflag++;
			break;
		case 'X':
			lo.cipher = LINK_CIPHER_XCHACHA;
			break;
		case 'z':
			n = atoi(optarg);
			if (n < 0 || n > LINK_ZLEVEL_MAX ||
			    strspn(optarg, "0123456789") != strlen(optarg))
				errx(EXIT_USAGE, "-z %s: a level 0 to %d",
				    optarg, LINK_ZLEVEL_MAX);
			lo.zlevel = n;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	log_setverbose(vflag);
	if (!(argc == 3 && (strcmp(argv[0], "listen") == 0 ||
	    strcmp(argv[0], "connect") == 0)) &&
	    !(argc == 2 && strcmp(argv[0], "stdio") == 0 &&
	    (strcmp(argv[1], "client") == 0 || strcmp(argv[1], "server") == 0)))
		usage();
	if (!Rflag && kfile == NULL)
		errx(EXIT_USAGE, "-k keyfile is required");
	if (bsize > lo.max_msg)
		errx(EXIT_USAGE, "-b is larger than -m");
	if (Rflag && argc == 2)
		errx(EXIT_USAGE, "-R needs listen or connect");
	if (sodium_init() == -1)
		errx(EXIT_SYS, "sodium_init failed");
	if (kfile != NULL && (e = key_load(kfile, key)) != NULL)
		errx(EXIT_USAGE, "%s", e);
	lo.key = key;
	lo.role = strcmp(argv[0], "listen") == 0 || (argc == 2 &&
	    strcmp(argv[1], "server") == 0) ? LINK_SERVER : LINK_CLIENT;
	signal(SIGPIPE, SIG_IGN);
	if ((buf = malloc(bsize)) == NULL)
		err(EXIT_SYS, "malloc");
	if (Mflag && sflag)
		preload();

	if (argc == 3)
		fd = tcp_fd(argv[0], argv[1], argv[2], dfd);
	else {
		if (sflag ? infd == 0 : outfd == 1)
			errx(EXIT_USAGE, "stdio needs -i or -o for the data");
		fd = -1;
		ready_notify(dfd);
	}
	if (Rflag)
		raw(fd);
	if ((base = event_base_new()) == NULL)
		errx(EXIT_SYS, "event_base_new failed");
	if (fd != -1)
		lk = link_new(base, fd, -1, &lo, &cbs, NULL);
	else
		lk = link_new(base, 0, 1, &lo, &cbs, NULL);
	if (lk == NULL)
		err(EXIT_SYS, "link_new");
	event_base_dispatch(base);
	link_free(lk);
	event_base_free(base);
	free(buf);
	free(mem);
	return status;
}

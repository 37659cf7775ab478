/* See LICENSE file for copyright and license details. */
/*
 * hbsend says "I am alive": every interval it sends one authenticated
 * heartbeat on every medium it was given at once (UDP unicast, multicast,
 * broadcast, standard output), and a "leaving" packet on SIGTERM so that
 * the peers know the stop was planned.  It never waits for a peer.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <limits.h>
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

#define OUT_PIPE_MAX	(64 * 1024)	/* packets queued for stdout */
#define STATUS_LINE_MAX	4096

struct out {
	TAILQ_ENTRY(out)	 entry;
	const char		*spec;
	struct hb_medium	 m;
	int			 fd;
	uint64_t		 lastwarn;
	unsigned long		 errors;
};
TAILQ_HEAD(outq, out);

static struct event_base	*base;
static struct outq		 outs = TAILQ_HEAD_INITIALIZER(outs);
static struct hb_packet		 pkt;
static unsigned char		 hkey[HB_TAG_LEN];
/*
 * The medium "-", stdout.  A reader that went away ends hbsend with 111,
 * so that the pipeline around it is restarted.
 */
static struct hb_out		 pipeout;
static struct evbuffer		*statusbuf;
static struct event		*status_ev;
static unsigned long		 pipe_dropped;

static void	 usage(void) __attribute__((noreturn));
static void	 out_open(struct out *);
static void	 send_all(uint8_t);
static void	 tick_cb(evutil_socket_t, short, void *);
static void	 status_cb(evutil_socket_t, short, void *);
static void	 status_lines(void);
static void	 signal_cb(evutil_socket_t, short, void *);
static uint64_t	 incarnation(const char *);

static void
usage(void)
{
	fprintf(stderr, "usage: hbsend [-v] [-C cluster] [-d fd] "
	    "[-i interval] [-k keyfile] [-n node] [-S statefile] [-s status] "
	    "medium ...\n");
	exit(EXIT_USAGE);
}

static void
out_open(struct out *o)
{
	struct hb_medium	*m = &o->m;
	int			 on = 1, ttl = 1;

	if (m->kind == HB_MEDIUM_PIPE) {
		o->fd = STDOUT_FILENO;
		return;
	}
	o->fd = socket(m->ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (o->fd == -1)
		fatal("%s: socket", o->spec);
	if (m->kind == HB_MEDIUM_BCAST &&
	    setsockopt(o->fd, SOL_SOCKET, SO_BROADCAST, &on, sizeof(on)) == -1)
		fatal("%s: SO_BROADCAST", o->spec);
	if (m->kind != HB_MEDIUM_MCAST)
		return;
	if (m->ss.ss_family == AF_INET) {
		struct ip_mreqn	mr;

		memset(&mr, 0, sizeof(mr));
		mr.imr_ifindex = m->ifindex;
		if (m->ifindex != 0 && setsockopt(o->fd, IPPROTO_IP,
		    IP_MULTICAST_IF, &mr, sizeof(mr)) == -1)
			fatal("%s: IP_MULTICAST_IF", o->spec);
		if (setsockopt(o->fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl,
		    sizeof(ttl)) == -1)
			fatal("%s: IP_MULTICAST_TTL", o->spec);
	} else {
		if (m->ifindex != 0 && setsockopt(o->fd, IPPROTO_IPV6,
		    IPV6_MULTICAST_IF, &m->ifindex, sizeof(m->ifindex)) == -1)
			fatal("%s: IPV6_MULTICAST_IF", o->spec);
		if (setsockopt(o->fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &ttl,
		    sizeof(ttl)) == -1)
			fatal("%s: IPV6_MULTICAST_HOPS", o->spec);
	}
}

/*
 * One packet, the same on every medium.  A medium that fails is reported
 * at most once every ten seconds and never stops the others: the peer at
 * the other end may simply not be up yet.
 */
static void
send_all(uint8_t type)
{
	unsigned char	 buf[HB_PKT_MAX];
	struct out	*o;
	uint64_t	 now;
	size_t		 n;

	pkt.type = type;
	pkt.seq++;
	pkt.time = wall_usec();
	if ((n = hb_encode(&pkt, hkey, buf, sizeof(buf))) == 0)
		fatalx("cannot encode a heartbeat");
	now = now_usec();
	TAILQ_FOREACH(o, &outs, entry) {
		if (o->m.kind == HB_MEDIUM_PIPE) {
			/* a packet goes whole into the stream, or not at all */
			if (evbuffer_get_length(pipeout.buf) + n >
			    OUT_PIPE_MAX) {
				if (pipe_dropped++ == 0)
					log_warnx("-: reader is slow, "
					    "dropping heartbeats");
				continue;
			}
			evbuffer_add(pipeout.buf, buf, n);
			hb_out_write(&pipeout);
			continue;
		}
		if (sendto(o->fd, buf, n, 0, (struct sockaddr *)&o->m.ss,
		    o->m.sslen) == (ssize_t)n)
			continue;
		o->errors++;
		if (o->lastwarn == 0 || now - o->lastwarn >= 10000000) {
			log_warn("%s: send (%lu failed)", o->spec, o->errors);
			o->lastwarn = now;
			o->errors = 0;
		}
	}
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	send_all(HB_TYPE_HEARTBEAT);
}

/* Each line read on stdin becomes the status; a change goes out at once. */
static void
status_lines(void)
{
	char	*line;
	size_t	 n;
	int	 changed = 0;

	while ((line = evbuffer_readln(statusbuf, &n, EVBUFFER_EOL_CRLF)) !=
	    NULL) {
		hb_status_clean(line);
		if (strcmp(line, pkt.status) != 0) {
			strcpy(pkt.status, line);
			changed = 1;
		}
		free(line);
	}
	if (evbuffer_get_length(statusbuf) > STATUS_LINE_MAX) {
		log_warnx("status line longer than %d bytes, dropped",
		    STATUS_LINE_MAX);
		evbuffer_drain(statusbuf, evbuffer_get_length(statusbuf));
	}
	if (changed)
		send_all(HB_TYPE_HEARTBEAT);
}

static void
status_cb(evutil_socket_t fd, short what, void *arg)
{
	int	n;

	(void)what;
	(void)arg;
	if ((n = hb_stdin_read(statusbuf, fd)) == 0)
		return;
	if (n == -1) {
		log_debug("stdin closed, the status stays");
		event_del(status_ev);
		/* a last line without its newline still counts */
		if (evbuffer_get_length(statusbuf) > 0)
			evbuffer_add(statusbuf, "\n", 1);
	}
	status_lines();
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	log_debug("signal %d, leaving", (int)sig);
	send_all(HB_TYPE_LEAVING);
	event_base_loopexit(base, NULL);
}

/*
 * The incarnation: the wall clock in microseconds, so that a later start
 * has a larger one.  With a state file it is also more than the last one
 * used, so that a clock stepped back cannot make a restarted hbsend look
 * older than the one before it (and be dropped as a replay).  The file
 * holds one decimal number and is replaced atomically before any packet
 * is sent.
 */
static uint64_t
incarnation(const char *path)
{
	char		 buf[64], tmp[PATH_MAX], *end;
	uint64_t	 inc = wall_usec(), last;
	ssize_t		 n;
	int		 fd;

	if (path == NULL)
		return inc;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		if (errno != ENOENT)
			fatal("%s", path);
	} else {
		n = read(fd, buf, sizeof(buf) - 1);
		if (n == -1)
			fatal("%s", path);
		close(fd);
		buf[n] = '\0';
		errno = 0;
		last = strtoull(buf, &end, 10);
		if (end == buf || (*end != '\0' && *end != '\n') ||
		    errno != 0 || last == UINT64_MAX)
			fatalx("%s: not an incarnation number", path);
		if (inc <= last)
			inc = last + 1;
	}
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		fatalx("%s: name too long", path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) == -1)
		fatal("%s", tmp);
	n = snprintf(buf, sizeof(buf), "%llu\n", (unsigned long long)inc);
	if (write(fd, buf, n) != n || fsync(fd) == -1)
		fatal("%s", tmp);
	close(fd);
	if (rename(tmp, path) == -1)
		fatal("%s", path);
	return inc;
}

int
main(int argc, char *argv[])
{
	struct event	*tick, *sigterm, *sigint;
	struct timeval	 tv;
	struct out	*o;
	struct stat	 st;
	const char	*keyfile = "/etc/hatrio/cluster.key", *e;
	const char	*cluster = "hatrio", *node = NULL, *status = "";
	const char	*statefile = NULL;
	char		 host[256];
	uint64_t	 interval = 200000;
	int		 ch, readyfd = -1, verbose = 0, i, npipe = 0;

	log_init(argv[0], 0);
	while ((ch = getopt(argc, argv, "C:d:i:k:n:S:s:v")) != -1) {
		switch (ch) {
		case 'C':
			cluster = hb_opt_name(ch, optarg);
			break;
		case 'd':
			hb_opt_fd(ch, optarg, &readyfd);
			break;
		case 'i':
			hb_opt_duration(ch, optarg, &interval);
			if (interval < 1000 || interval > 3600000000ULL)
				hb_badopt(ch, optarg, "must be 1ms to 1h");
			break;
		case 'k':
			keyfile = optarg;
			break;
		case 'n':
			node = hb_opt_name(ch, optarg);
			break;
		case 'S':
			statefile = optarg;
			break;
		case 's':
			if (strcmp(optarg, "-") != 0 &&
			    !hb_valid_status(optarg))
				hb_badopt(ch, optarg, "at most 200 printable "
				    "characters");
			status = optarg;
			break;
		case 'v':
			verbose++;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	log_setverbose(verbose);

	for (i = 0; i < argc; i++) {
		if ((o = calloc(1, sizeof(*o))) == NULL)
			fatal("calloc");
		o->spec = argv[i];
		if ((e = hb_medium_arg(argv[i], 0, &o->m, &npipe)) != NULL) {
			log_warnx("medium %s: %s", argv[i], e);
			exit(EXIT_USAGE);
		}
		TAILQ_INSERT_TAIL(&outs, o, entry);
	}
	if (node == NULL)
		node = hb_node_default(host, sizeof(host));
	if ((e = hb_key_load(keyfile, hkey)) != NULL) {
		log_warnx("%s", e);
		exit(EXIT_USAGE);
	}

	/* Wall-clock microseconds: a later start has a larger incarnation. */
	pkt.incarnation = incarnation(statefile);
	pkt.seq = 0;
	strcpy(pkt.cluster, cluster);
	strcpy(pkt.node, node);
	if (strcmp(status, "-") != 0)
		strcpy(pkt.status, status);

	if ((base = hb_base_new()) == NULL)
		fatalx("event_base_new");
	if ((statusbuf = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	TAILQ_FOREACH(o, &outs, entry) {
		out_open(o);
		if (o->m.kind == HB_MEDIUM_PIPE)
			hb_out_open(&pipeout, base, "-: write");
	}
	if (strcmp(status, "-") == 0) {
		if (fstat(STDIN_FILENO, &st) == -1)
			fatal("stdin");
		if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) ||
		    S_ISCHR(st.st_mode)) {
			status_ev = event_new(base, STDIN_FILENO,
			    EV_READ | EV_PERSIST, status_cb, NULL);
			if (status_ev == NULL || event_add(status_ev, NULL) ==
			    -1) {
				/* /dev/null and the like: read it now */
				if (status_ev != NULL)
					event_free(status_ev);
				status_ev = NULL;
			}
		}
		if (status_ev == NULL) {
			while (evbuffer_read(statusbuf, STDIN_FILENO, 4096) > 0)
				;
			if (evbuffer_get_length(statusbuf) > 0)
				evbuffer_add(statusbuf, "\n", 1);
			status_lines();
		}
	}

	tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	sigterm = evsignal_new(base, SIGTERM, signal_cb, NULL);
	sigint = evsignal_new(base, SIGINT, signal_cb, NULL);
	if (tick == NULL || sigterm == NULL || sigint == NULL)
		fatalx("event_new");
	tv.tv_sec = interval / 1000000;
	tv.tv_usec = interval % 1000000;
	if (event_add(tick, &tv) == -1 || event_add(sigterm, NULL) == -1 ||
	    event_add(sigint, NULL) == -1)
		fatalx("event_add");
	send_all(HB_TYPE_HEARTBEAT);
	ready_notify(readyfd);
	log_debug("node %s cluster %s incarnation %llu, every %llums",
	    pkt.node, pkt.cluster, (unsigned long long)pkt.incarnation,
	    (unsigned long long)interval / 1000);

	event_base_dispatch(base);

	/* the leaving packet must reach a pipe reader before we go */
	if (pipeout.buf != NULL)
		hb_out_close(&pipeout);
	if (status_ev != NULL)
		event_free(status_ev);
	event_free(tick);
	event_free(sigterm);
	event_free(sigint);
	event_base_free(base);
	evbuffer_free(statusbuf);
	while ((o = TAILQ_FIRST(&outs)) != NULL) {
		TAILQ_REMOVE(&outs, o, entry);
		if (o->m.kind != HB_MEDIUM_PIPE)
			close(o->fd);
		free(o);
	}
	sodium_memzero(hkey, sizeof(hkey));
	return EXIT_OK;
}

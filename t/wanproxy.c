/* See LICENSE file for copyright and license details. */
/*
 * wanproxy: a TCP forwarder that behaves like a slow, unreliable WAN, for
 * hatrio's tests (the kernel here has no netem).  Every byte is held for
 * the added one-way delay, each direction is limited to a byte rate, and a
 * control socket can cut the link (nothing moves and new connections wait,
 * as in a partition: TCP resumes where it stopped when the link returns),
 * restore it, or reset every connection.
 *
 * usage: wanproxy [-d fd] [-c ctlsock] [-D delay] [-r rate] listen target
 * listen and target are HOST:PORT; port 0 for listen prints the port.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "hatrio.h"

#define CHUNK_MAX	(64 * 1024)
#define QUEUE_MAX	(4 * 1024 * 1024)	/* per direction, then stop reading */
#define TICK_USEC	500

struct chunk {
	TAILQ_ENTRY(chunk)	 entry;
	uint64_t		 due;
	size_t			 len, off;
	unsigned char		 data[];
};
TAILQ_HEAD(chunkq, chunk);

struct conn;

struct dir {
	struct conn		*conn;
	struct bufferevent	*from, *to;
	struct chunkq		 q;
	size_t			 queued;
	int			 eof;		/* from said EOF or failed */
	int			 shut;		/* we shut down the write side */
	double			 tokens;
	uint64_t		 last;
};

struct conn {
	TAILQ_ENTRY(conn)	 entry;
	int			 cfd;		/* accepted, before upstream */
	struct bufferevent	*down, *up;
	struct dir		 d[2];		/* 0: down->up, 1: up->down */
	struct event		*tick;
	int			 connected;
};
TAILQ_HEAD(connq, conn);

static struct event_base	*base;
static struct connq		 conns = TAILQ_HEAD_INITIALIZER(conns);
static struct sockaddr_storage	 target;
static socklen_t		 targetlen;
static uint64_t			 delay_us;
static uint64_t			 rate;		/* bytes/s per direction, 0: none */
static int			 cut;
static unsigned long		 nconns, bytes_fwd[2];

static void	 usage(void) __attribute__((noreturn));
static void	 badopt(int, const char *, const char *)
		    __attribute__((noreturn));
static int	 resolve(const char *, struct sockaddr_storage *, socklen_t *);
static void	 conn_start(struct conn *);
static void	 conn_free(struct conn *);
static void	 conn_read_cb(struct bufferevent *, void *);
static void	 conn_write_cb(struct bufferevent *, void *);
static void	 conn_event_cb(struct bufferevent *, short, void *);
static void	 conn_tick(evutil_socket_t, short, void *);
static void	 conn_pump(struct conn *);
static void	 set_reading(int);
static void	 accept_cb(struct evconnlistener *, evutil_socket_t,
		    struct sockaddr *, int, void *);
static void	 ctl_accept_cb(struct evconnlistener *, evutil_socket_t,
		    struct sockaddr *, int, void *);
static void	 ctl_read_cb(struct bufferevent *, void *);
static void	 ctl_event_cb(struct bufferevent *, short, void *);
static void	 signal_cb(evutil_socket_t, short, void *);

static void
usage(void)
{
	fprintf(stderr, "usage: wanproxy [-d fd] [-c ctlsock] [-D delay] "
	    "[-r rate] listen target\n");
	exit(EXIT_USAGE);
}

static void
badopt(int ch, const char *arg, const char *e)
{
	log_warnx("-%c %s: %s", ch, arg, e);
	exit(EXIT_USAGE);
}

static int
resolve(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo	 hints, *res;
	char		 host[256], *port;

	if (strlen(s) >= sizeof(host))
		return -1;
	strcpy(host, s);
	if ((port = strrchr(host, ':')) == NULL)
		return -1;
	*port++ = '\0';
	if (host[0] == '[' && port[-2] == ']') {
		port[-2] = '\0';
		memmove(host, host + 1, strlen(host));
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return -1;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static void
set_reading(int on)
{
	struct conn	*c;

	TAILQ_FOREACH(c, &conns, entry) {
		if (!c->connected)
			continue;
		if (on) {
			if (!c->d[0].eof && c->d[0].queued < QUEUE_MAX)
				bufferevent_enable(c->down, EV_READ);
			if (!c->d[1].eof && c->d[1].queued < QUEUE_MAX)
				bufferevent_enable(c->up, EV_READ);
		} else {
			bufferevent_disable(c->down, EV_READ);
			bufferevent_disable(c->up, EV_READ);
		}
	}
}

/* Connect upstream for an accepted connection. */
static void
conn_start(struct conn *c)
{
	int	i, one = 1;

	c->down = bufferevent_socket_new(base, c->cfd, BEV_OPT_CLOSE_ON_FREE);
	c->up = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (c->down == NULL || c->up == NULL)
		fatalx("bufferevent_socket_new");
	setsockopt(c->cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->d[0].from = c->down;
	c->d[0].to = c->up;
	c->d[1].from = c->up;
	c->d[1].to = c->down;
	for (i = 0; i < 2; i++) {
		c->d[i].conn = c;
		TAILQ_INIT(&c->d[i].q);
		c->d[i].last = now_usec();
		c->d[i].tokens = 0;
	}
	bufferevent_setcb(c->down, conn_read_cb, conn_write_cb, conn_event_cb,
	    &c->d[0]);
	bufferevent_setcb(c->up, conn_read_cb, conn_write_cb, conn_event_cb,
	    &c->d[1]);
	if (bufferevent_socket_connect(c->up, (struct sockaddr *)&target,
	    targetlen) == -1) {
		log_warn("connect upstream");
		conn_free(c);
		return;
	}
	c->connected = 1;
	setsockopt(bufferevent_getfd(c->up), IPPROTO_TCP, TCP_NODELAY, &one,
	    sizeof(one));
	bufferevent_enable(c->down, EV_READ | EV_WRITE);
	bufferevent_enable(c->up, EV_READ | EV_WRITE);
}

static void
conn_free(struct conn *c)
{
	struct chunk	*ch;
	int		 i;

	TAILQ_REMOVE(&conns, c, entry);
	for (i = 0; i < 2 && c->connected; i++)
		while ((ch = TAILQ_FIRST(&c->d[i].q)) != NULL) {
			TAILQ_REMOVE(&c->d[i].q, ch, entry);
			free(ch);
		}
	if (c->down != NULL)
		bufferevent_free(c->down);
	else if (c->cfd != -1)
		close(c->cfd);
	if (c->up != NULL)
		bufferevent_free(c->up);
	event_free(c->tick);
	free(c);
}

/* Take what arrived, stamp it with the time it may leave. */
static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct dir	*d = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	struct chunk	*ch;
	size_t		 len;

	while ((len = evbuffer_get_length(in)) > 0) {
		if (len > CHUNK_MAX)
			len = CHUNK_MAX;
		if ((ch = malloc(sizeof(*ch) + len)) == NULL)
			fatal("malloc");
		evbuffer_remove(in, ch->data, len);
		ch->len = len;
		ch->off = 0;
		ch->due = now_usec() + delay_us;
		TAILQ_INSERT_TAIL(&d->q, ch, entry);
		d->queued += len;
	}
	if (d->queued >= QUEUE_MAX)
		bufferevent_disable(bev, EV_READ);
	conn_pump(d->conn);
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct dir	*d = arg;

	(void)bev;
	conn_pump(d->conn);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct dir	*d = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		return;
	if (what & BEV_EVENT_EOF) {
		d->eof = 1;
		conn_pump(d->conn);
		return;
	}
	/* An error on either side ends the whole connection. */
	conn_free(d->conn);
}

static void
conn_tick(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	conn_pump(arg);
}

/*
 * Move every chunk whose time has come, within the byte rate, unless the
 * link is cut.  Re-arm the tick while anything waits.
 */
static void
conn_pump(struct conn *c)
{
	struct timeval	 tv = { 0, TICK_USEC };
	struct chunk	*ch;
	struct dir	*d;
	uint64_t	 now = now_usec();
	size_t		 n;
	double		 burst;
	int		 i, waiting = 0, done = 0;

	for (i = 0; i < 2; i++) {
		d = &c->d[i];
		if (rate != 0) {
			burst = rate / 100.0 > 16384 ? rate / 100.0 : 16384;
			d->tokens += (now - d->last) * (rate / 1e6);
			if (d->tokens > burst)
				d->tokens = burst;
		}
		d->last = now;
		while (!cut && (ch = TAILQ_FIRST(&d->q)) != NULL &&
		    ch->due <= now) {
			if (evbuffer_get_length(bufferevent_get_output(d->to)) >
			    QUEUE_MAX)
				break;
			n = ch->len - ch->off;
			if (rate != 0) {
				if (d->tokens < 1)
					break;
				if (n > d->tokens)
					n = d->tokens;
				d->tokens -= n;
			}
			bufferevent_write(d->to, ch->data + ch->off, n);
			bytes_fwd[i] += n;
			ch->off += n;
			d->queued -= n;
			if (ch->off == ch->len) {
				TAILQ_REMOVE(&d->q, ch, entry);
				free(ch);
			}
		}
		if (!cut && !d->eof && d->queued < QUEUE_MAX)
			bufferevent_enable(d->from, EV_READ);
		if (!TAILQ_EMPTY(&d->q))
			waiting = 1;
		else if (d->eof && !d->shut &&
		    evbuffer_get_length(bufferevent_get_output(d->to)) == 0) {
			shutdown(bufferevent_getfd(d->to), SHUT_WR);
			d->shut = 1;
		}
		if (d->shut)
			done++;
	}
	if (done == 2) {
		conn_free(c);
		return;
	}
	if (waiting && !evtimer_pending(c->tick, NULL))
		evtimer_add(c->tick, &tv);
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct conn	*c;

	(void)l;
	(void)sa;
	(void)salen;
	(void)arg;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		fatal("calloc");
	c->cfd = fd;
	if ((c->tick = evtimer_new(base, conn_tick, c)) == NULL)
		fatalx("evtimer_new");
	TAILQ_INSERT_TAIL(&conns, c, entry);
	nconns++;
	if (!cut)
		conn_start(c);
}

/*
 * The control socket takes one command per line and answers "ok" or
 * "error: ..." : cut, restore, reset, delay DURATION, rate SIZE|0, stats.
 */
static void
ctl_read_cb(struct bufferevent *bev, void *arg)
{
	struct evbuffer	*in = bufferevent_get_input(bev);
	struct conn	*c, *next;
	const char	*e;
	char		*line;
	uint64_t	 v;

	(void)arg;
	while ((line = evbuffer_readln(in, NULL, EVBUFFER_EOL_LF)) != NULL) {
		if (strcmp(line, "cut") == 0) {
			cut = 1;
			set_reading(0);
			bufferevent_write(bev, "ok\n", 3);
		} else if (strcmp(line, "restore") == 0) {
			cut = 0;
			TAILQ_FOREACH_SAFE(c, &conns, entry, next)
				if (!c->connected)
					conn_start(c);
			set_reading(1);
			TAILQ_FOREACH_SAFE(c, &conns, entry, next)
				conn_pump(c);
			bufferevent_write(bev, "ok\n", 3);
		} else if (strcmp(line, "reset") == 0) {
			while ((c = TAILQ_FIRST(&conns)) != NULL) {
				if (c->connected) {
					struct linger lg = { 1, 0 };

					setsockopt(bufferevent_getfd(c->down),
					    SOL_SOCKET, SO_LINGER, &lg,
					    sizeof(lg));
					setsockopt(bufferevent_getfd(c->up),
					    SOL_SOCKET, SO_LINGER, &lg,
					    sizeof(lg));
				}
				conn_free(c);
			}
			bufferevent_write(bev, "ok\n", 3);
		} else if (strncmp(line, "delay ", 6) == 0) {
			if ((e = parse_duration(line + 6, &v)) != NULL)
				evbuffer_add_printf(bufferevent_get_output(bev),
				    "error: delay %s: %s\n", line + 6, e);
			else {
				delay_us = v;
				bufferevent_write(bev, "ok\n", 3);
			}
		} else if (strncmp(line, "rate ", 5) == 0) {
			if ((e = parse_size(line + 5, &v)) != NULL)
				evbuffer_add_printf(bufferevent_get_output(bev),
				    "error: rate %s: %s\n", line + 5, e);
			else {
				rate = v;
				bufferevent_write(bev, "ok\n", 3);
			}
		} else if (strcmp(line, "stats") == 0) {
			evbuffer_add_printf(bufferevent_get_output(bev),
			    "conns=%lu cut=%d delay_us=%llu rate=%llu "
			    "up_bytes=%lu down_bytes=%lu\n", nconns, cut,
			    (unsigned long long)delay_us,
			    (unsigned long long)rate, bytes_fwd[0],
			    bytes_fwd[1]);
		} else
			evbuffer_add_printf(bufferevent_get_output(bev),
			    "error: unknown command: %s\n", line);
		free(line);
	}
}

static void
ctl_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	(void)arg;
	bufferevent_free(bev);
}

static void
ctl_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct bufferevent	*bev;

	(void)l;
	(void)sa;
	(void)salen;
	(void)arg;
	bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(bev, ctl_read_cb, NULL, ctl_event_cb, NULL);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void
signal_cb(evutil_socket_t sig, short ev, void *arg)
{
	(void)sig;
	(void)ev;
	(void)arg;
	event_base_loopbreak(base);
}

int
main(int argc, char *argv[])
{
	struct sockaddr_storage	 lss;
	struct sockaddr_un	 sun;
	struct evconnlistener	*l, *cl = NULL;
	struct event		*sigterm, *sigint;
	socklen_t		 llen;
	const char		*ctlpath = NULL, *e;
	uint64_t		 v;
	int			 ch, readyfd = -1;

	log_init(argv[0], 0);
	while ((ch = getopt(argc, argv, "c:d:D:r:")) != -1) {
		switch (ch) {
		case 'c':
			ctlpath = optarg;
			break;
		case 'd':
			if ((e = parse_fd(optarg, &readyfd)) != NULL)
				badopt(ch, optarg, e);
			break;
		case 'D':
			if ((e = parse_duration(optarg, &v)) != NULL)
				badopt(ch, optarg, e);
			delay_us = v;
			break;
		case 'r':
			if ((e = parse_size(optarg, &v)) != NULL)
				badopt(ch, optarg, e);
			rate = v;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 2)
		usage();
	if (resolve(argv[0], &lss, &llen) == -1) {
		log_warnx("bad listen address: %s", argv[0]);
		exit(EXIT_USAGE);
	}
	if (resolve(argv[1], &target, &targetlen) == -1) {
		log_warnx("bad target address: %s", argv[1]);
		exit(EXIT_USAGE);
	}
	signal(SIGPIPE, SIG_IGN);
	if ((base = event_base_new()) == NULL)
		fatalx("event_base_new");
	l = evconnlistener_new_bind(base, accept_cb, NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 64,
	    (struct sockaddr *)&lss, llen);
	if (l == NULL)
		fatal("listen on %s", argv[0]);
	if (ctlpath != NULL) {
		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		if (strlen(ctlpath) >= sizeof(sun.sun_path)) {
			log_warnx("control socket path too long: %s", ctlpath);
			exit(EXIT_USAGE);
		}
		strcpy(sun.sun_path, ctlpath);
		unlink(ctlpath);
		cl = evconnlistener_new_bind(base, ctl_accept_cb, NULL,
		    LEV_OPT_CLOSE_ON_FREE, 8, (struct sockaddr *)&sun,
		    sizeof(sun));
		if (cl == NULL)
			fatal("control socket %s", ctlpath);
	}
	llen = sizeof(lss);
	getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&lss, &llen);
	printf("%u\n", ntohs(lss.ss_family == AF_INET6 ?
	    ((struct sockaddr_in6 *)&lss)->sin6_port :
	    ((struct sockaddr_in *)&lss)->sin_port));
	fflush(stdout);
	sigterm = evsignal_new(base, SIGTERM, signal_cb, NULL);
	sigint = evsignal_new(base, SIGINT, signal_cb, NULL);
	evsignal_add(sigterm, NULL);
	evsignal_add(sigint, NULL);
	ready_notify(readyfd);
	event_base_dispatch(base);

	while (!TAILQ_EMPTY(&conns))
		conn_free(TAILQ_FIRST(&conns));
	evconnlistener_free(l);
	if (cl != NULL) {
		evconnlistener_free(cl);
		unlink(ctlpath);
	}
	event_free(sigterm);
	event_free(sigint);
	event_base_free(base);
	return EXIT_OK;
}

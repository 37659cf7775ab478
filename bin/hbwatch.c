/* See LICENSE file for copyright and license details. */
/*
 * hbwatch listens for the heartbeats of the named peers, decides who is
 * alive (warntime, deadtime, initdead) and whether this node has quorum,
 * and prints one line per change on stdout; a handler may run per event.
 * It notices its own stalls (SIGSTOP, a paused VM) and then listens one
 * more interval before it declares anybody dead.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <sodium.h>

#include "hatrio.h"
#include "hb.h"

#define MEDIA_PER_PEER	16
#define MEDIUM_NAME_MAX	80
#define OUT_MAX		(1024 * 1024)	/* unread event lines we keep */
#define JOBS_MAX	1024		/* queued handler runs */
#define LINE_MAX_EV	1024
#define DROP_LOG_USEC	1000000		/* one log line per reason per s */
#define FILE_READS	16		/* reads of a file per event turn */
#define HB_LISTEN_DEFAULT "udp:*:694"

enum pstate { P_UNKNOWN, P_UP, P_LATE, P_DEAD, P_LEFT };
static const char *pstate_name[] = { "unknown", "up", "late", "dead",
    "left" };

/* One peer seen over one medium: its own replay state and silence. */
struct pmedium {
	TAILQ_ENTRY(pmedium)	 entry;
	char			 name[MEDIUM_NAME_MAX];
	struct hb_replay	 rp;
	uint64_t		 last_rx;
	int			 up;		/* carries the peer */
	int			 unsaid;	/* went down while peer late */
};
TAILQ_HEAD(pmediumq, pmedium);

struct peer {
	TAILQ_ENTRY(peer)	 entry;
	char			 name[HB_NAME_MAX + 1];
	enum pstate		 state;
	struct hb_replay	 rp;
	uint64_t		 last_rx;
	char			 status[HB_STATUS_MAX + 1];
	struct pmediumq		 media;
	int			 nmedia;
	struct event		*timer;
};
TAILQ_HEAD(peerq, peer);

/* A socket or stdin we listen on. */
struct listener {
	TAILQ_ENTRY(listener)	 entry;
	const char		*spec;
	struct hb_medium	 m;
	int			 fd;
	uint16_t		 port;
	struct event		*ev;
	struct evbuffer		*in;	/* stdin only */
	int			 eof;
};
TAILQ_HEAD(listenerq, listener);

struct job {
	TAILQ_ENTRY(job)	 entry;
	char			*line;
	int			 link;		/* link event: dropped first */
};
TAILQ_HEAD(jobq, job);

enum drop {
	D_HEADER, D_AUTH, D_BODY, D_CLUSTER, D_UNKNOWN, D_REPLAY, D_STALE,
	D_MEDIA, D_NDROP
};
static const char *drop_name[D_NDROP] = {
	"badheader", "badauth", "badbody", "cluster", "unknown", "replay",
	"stale", "media"
};

static struct event_base	*base;
static struct peerq		 peers = TAILQ_HEAD_INITIALIZER(peers);
static struct listenerq		 listeners =
				    TAILQ_HEAD_INITIALIZER(listeners);
static struct jobq		 jobs = TAILQ_HEAD_INITIALIZER(jobs);
static unsigned char		 hkey[HB_TAG_LEN];
static const char		*cluster = "hatrio", *self, *handler;
static uint64_t			 interval = 200000, warntime = 600000;
static uint64_t			 deadtime = 1000000, initdead = 2000000;
static uint64_t			 htimeout = 10000000;
static uint64_t			 freshness = 5000000;
static uint64_t			 start, tick_due, hold_until;
static uint64_t			 lineseq;
static int			 npeers, quorum, onceflag, quiet;
static struct event		*tick_ev, *job_timer, *once_ev;
/*
 * The event lines.  stdout is written without blocking when it is a pipe:
 * a slow reader gets OUT_MAX bytes of slack, then loses lines (see emit);
 * a reader that went away ends hbwatch.
 */
static struct hb_out		 out;
static pid_t			 job_pid = -1;
static unsigned long		 njobs, jobs_dropped, out_dropped;
static unsigned long		 jobs_since, out_since;
static uint64_t			 jobs_last, out_last;
static unsigned long		 accepted, drops[D_NDROP], dsince[D_NDROP];
static uint64_t			 dlast[D_NDROP];

static void	 usage(void) __attribute__((noreturn));
static void	 tv_set(struct timeval *, uint64_t);
static uint64_t	 ms(uint64_t);
static void	 emit(const char *, const char *, const char *, ...)
		    __attribute__((format(printf, 3, 4)));
static void	 job_queue(const char *, int);
static void	 job_next(void);
static void	 job_timeout_cb(evutil_socket_t, short, void *);
static void	 sigchld_cb(evutil_socket_t, short, void *);
static void	 quorum_update(void);
static int	 votes(void);
static void	 drop(enum drop, const char *, const char *);
static struct peer *peer_find(const char *);
static void	 peer_arm(struct peer *);
static void	 peer_eval(struct peer *, uint64_t);
static void	 peer_timer_cb(evutil_socket_t, short, void *);
static void	 peer_down(struct peer *, enum pstate, const char *);
static int	 stall_check(uint64_t);
static void	 tick_cb(evutil_socket_t, short, void *);
static void	 once_cb(evutil_socket_t, short, void *);
static int	 packet(const unsigned char *, size_t, const char *);
static int	 ratelimit(uint64_t *);
static void	 listener_open(struct listener *);
static void	 udp_cb(evutil_socket_t, short, void *);
static void	 stdin_cb(evutil_socket_t, short, void *);
static void	 file_cb(evutil_socket_t, short, void *);
static void	 status_report(void);
static void	 signal_cb(evutil_socket_t, short, void *);
static const char *pct(const char *, char *, size_t);

static void
usage(void)
{
	fprintf(stderr, "usage: hbwatch [-1v] [-C cluster] [-D deadtime] "
	    "[-d fd] [-e handler] [-F window] [-I initdead] [-i interval] "
	    "[-k keyfile] [-l medium] [-n node] [-T timeout] "
	    "[-w warntime] node ...\n");
	exit(EXIT_USAGE);
}

/* Durations in event lines are whole milliseconds. */
static uint64_t
ms(uint64_t us)
{
	return (us + 500) / 1000 * 1000;
}

static void
tv_set(struct timeval *tv, uint64_t us)
{
	tv->tv_sec = us / 1000000;
	tv->tv_usec = us % 1000000;
}

/* The status as one field: space and '%' are written %20 and %25. */
static const char *
pct(const char *s, char *buf, size_t len)
{
	size_t	n = 0;

	for (; *s != '\0' && n + 4 < len; s++) {
		if (*s == ' ' || *s == '%') {
			snprintf(buf + n, 4, "%%%02X", (unsigned char)*s);
			n += 3;
		} else
			buf[n++] = *s;
	}
	buf[n] = '\0';
	return buf;
}

/* At most one warning a second about one thing. */
static int
ratelimit(uint64_t *last)
{
	uint64_t	now = now_usec();

	if (*last != 0 && now - *last < DROP_LOG_USEC)
		return 0;
	*last = now;
	return 1;
}

/*
 * Print one event line "TS NODE EVENT [key=value ...] seq=N" and queue
 * it for the handler.  The line reaches stdout before any handler runs,
 * and a handler never delays the next line.  A reader that does not keep
 * up loses link events first (past half of OUT_MAX unread bytes), then
 * any (past OUT_MAX); each lost line is counted, and its seq is skipped,
 * so the reader can tell.
 */
static void
emit(const char *node, const char *event, const char *fmt, ...)
{
	char		 line[2 * LINE_MAX_EV], extra[LINE_MAX_EV];
	va_list		 ap;
	uint64_t	 w;
	size_t		 unread;
	int		 link = strncmp(event, "link-", 5) == 0;

	if (quiet)
		return;
	extra[0] = '\0';
	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(extra, sizeof(extra), fmt, ap);
		va_end(ap);
	}
	w = wall_usec();
	snprintf(line, sizeof(line), "%llu.%06llu %s %s%s%s seq=%llu",
	    (unsigned long long)(w / 1000000),
	    (unsigned long long)(w % 1000000), node, event,
	    extra[0] != '\0' ? " " : "", extra,
	    (unsigned long long)++lineseq);
	unread = evbuffer_get_length(out.buf);
	if (unread > OUT_MAX || (link && unread > OUT_MAX / 2)) {
		out_dropped++;
		out_since++;
		if (ratelimit(&out_last)) {
			log_warnx("stdout: the reader is slow, %lu event "
			    "line%s not written (%lu in all)", out_since,
			    out_since == 1 ? "" : "s", out_dropped);
			out_since = 0;
		}
	} else {
		evbuffer_add_printf(out.buf, "%s\n", line);
		hb_out_write(&out);
	}
	if (handler != NULL)
		job_queue(line, link);
}

/*
 * Queue a handler run.  When JOBS_MAX wait already, a link event is not
 * queued; any other event takes the place of the oldest queued link
 * event, or else of the oldest event.  Each is counted and logged.
 */
static void
job_queue(const char *line, int link)
{
	struct job	*j;

	if (njobs >= JOBS_MAX) {
		j = NULL;
		if (!link) {
			TAILQ_FOREACH(j, &jobs, entry)
				if (j->link)
					break;
			if (j == NULL)
				j = TAILQ_FIRST(&jobs);
			TAILQ_REMOVE(&jobs, j, entry);
			njobs--;
			free(j->line);
			free(j);
		}
		jobs_dropped++;
		jobs_since++;
		if (ratelimit(&jobs_last)) {
			log_warnx("handler too slow, %lu event%s not handed "
			    "on (%lu in all)", jobs_since, jobs_since == 1 ?
			    "" : "s", jobs_dropped);
			jobs_since = 0;
		}
		if (link)
			return;
	}
	if ((j = calloc(1, sizeof(*j))) == NULL ||
	    (j->line = strdup(line)) == NULL)
		fatal("calloc");
	j->link = link;
	TAILQ_INSERT_TAIL(&jobs, j, entry);
	njobs++;
	job_next();
}

/*
 * Run the handler for the oldest queued event, unless one runs already.
 * argv is the handler and the line's fields; the environment has
 * HB_TS, HB_NODE, HB_EVENT and HB_<KEY> for each key=value field.
 */
static void
job_next(void)
{
	struct timeval	 tv;
	struct job	*j;
	char		*argv[64], *p, *eq, env[LINE_MAX_EV + 8];
	int		 argc = 0, fd, i;
	pid_t		 pid;

	if (job_pid != -1 || (j = TAILQ_FIRST(&jobs)) == NULL)
		return;
	TAILQ_REMOVE(&jobs, j, entry);
	njobs--;
	switch ((pid = fork())) {
	case -1:
		log_warn("handler: fork");
		free(j->line);
		free(j);
		return;
	case 0:
		setpgid(0, 0);
		signal(SIGPIPE, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		if ((fd = open("/dev/null", O_RDONLY)) != -1) {
			dup2(fd, STDIN_FILENO);
			if (fd != STDIN_FILENO)
				close(fd);
		}
		/* the handler's output must not mix with the events */
		dup2(STDERR_FILENO, STDOUT_FILENO);
		closefrom(3);
		argv[argc++] = (char *)handler;
		for (p = strtok(j->line, " "); p != NULL && argc < 63;
		    p = strtok(NULL, " "))
			argv[argc++] = p;
		argv[argc] = NULL;
		setenv("HB_TS", argv[1], 1);
		setenv("HB_NODE", argv[2], 1);
		setenv("HB_EVENT", argv[3], 1);
		for (i = 4; i < argc; i++) {
			if ((eq = strchr(argv[i], '=')) == NULL)
				continue;
			snprintf(env, sizeof(env), "HB_%.*s",
			    (int)(eq - argv[i]), argv[i]);
			for (p = env; *p != '\0'; p++)
				if (*p >= 'a' && *p <= 'z')
					*p -= 'a' - 'A';
			setenv(env, eq + 1, 1);
		}
		execv(handler, argv);
		fprintf(stderr, "hbwatch: handler %s: %s\n", handler,
		    strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid);
	job_pid = pid;
	free(j->line);
	free(j);
	tv_set(&tv, htimeout);
	evtimer_add(job_timer, &tv);
}

static void
job_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (job_pid == -1)
		return;
	log_warnx("handler %s: pid %d still running after %llums, killed",
	    handler, (int)job_pid, (unsigned long long)htimeout / 1000);
	kill(-job_pid, SIGKILL);
	kill(job_pid, SIGKILL);
}

static void
sigchld_cb(evutil_socket_t sig, short what, void *arg)
{
	pid_t	pid;
	int	st;

	(void)sig;
	(void)what;
	(void)arg;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if (pid != job_pid)
			continue;
		job_pid = -1;
		evtimer_del(job_timer);
		if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
			log_warnx("handler %s exited %d", handler,
			    WEXITSTATUS(st));
		else if (WIFSIGNALED(st))
			log_warnx("handler %s killed by signal %d", handler,
			    WTERMSIG(st));
	}
	job_next();
}

/* This node always votes for itself, and each peer that is up. */
static int
votes(void)
{
	struct peer	*p;
	int		 v = 1;

	TAILQ_FOREACH(p, &peers, entry)
		if (p->state == P_UP || p->state == P_LATE)
			v++;
	return v;
}

static void
quorum_update(void)
{
	int	v = votes(), q = 2 * v > npeers + 1;

	if (q == quorum)
		return;
	quorum = q;
	emit("-", "quorum", "quorum=%s votes=%d size=%d", q ? "yes" : "no",
	    v, npeers + 1);
}

/*
 * Count a dropped packet and say so, at most once a second per reason,
 * so that a flood of garbage cannot flood the log too.
 */
static void
drop(enum drop d, const char *from, const char *why)
{
	uint64_t	now = now_usec();

	drops[d]++;
	dsince[d]++;
	if (dlast[d] != 0 && now - dlast[d] < DROP_LOG_USEC)
		return;
	log_warnx("dropped %lu packet%s (%s), last from %s: %s", dsince[d],
	    dsince[d] == 1 ? "" : "s", drop_name[d], from, why);
	dlast[d] = now;
	dsince[d] = 0;
}

static struct peer *
peer_find(const char *name)
{
	struct peer	*p;

	TAILQ_FOREACH(p, &peers, entry)
		if (strcmp(p->name, name) == 0)
			return p;
	return NULL;
}

/* Arm the peer's timer for its next deadline, if it has one. */
static void
peer_arm(struct peer *p)
{
	struct pmedium	*m;
	struct timeval	 tv;
	uint64_t	 due = UINT64_MAX, now;

	if (onceflag)
		return;		/* -1 reports what it heard in one deadtime */
	switch (p->state) {
	case P_UNKNOWN:
		due = start + initdead;
		break;
	case P_UP:
		if (warntime < deadtime)
			due = p->last_rx + warntime;
		/* FALLTHROUGH */
	case P_LATE:
		if (p->last_rx + deadtime < due)
			due = p->last_rx + deadtime;
		TAILQ_FOREACH(m, &p->media, entry)
			if (m->up && m->last_rx + deadtime < due)
				due = m->last_rx + deadtime;
		break;
	default:
		evtimer_del(p->timer);
		return;
	}
	if (due < hold_until)
		due = hold_until;
	now = now_usec();
	tv_set(&tv, due > now ? due - now : 0);
	evtimer_add(p->timer, &tv);
}

static void
peer_down(struct peer *p, enum pstate st, const char *fmt)
{
	struct pmedium	*m;
	char		 d[32];

	p->state = st;
	TAILQ_FOREACH(m, &p->media, entry)
		m->up = m->unsaid = 0;
	if (st == P_DEAD && p->rp.seen)
		emit(p->name, "dead", "silent=%s quorum=%s",
		    fmt_duration(ms(now_usec() - p->last_rx), d, sizeof(d)),
		    2 * votes() > npeers + 1 ? "yes" : "no");
	else if (st == P_DEAD)
		emit(p->name, "dead", "silent=%s quorum=%s", fmt,
		    2 * votes() > npeers + 1 ? "yes" : "no");
	else
		emit(p->name, "left", "quorum=%s",
		    2 * votes() > npeers + 1 ? "yes" : "no");
	quorum_update();
}

/* A deadline of the peer passed: late, link down or dead. */
static void
peer_eval(struct peer *p, uint64_t now)
{
	struct pmedium	*m;
	char		 d[32];

	if (now < hold_until) {
		peer_arm(p);
		return;
	}
	switch (p->state) {
	case P_UNKNOWN:
		if (now >= start + initdead)
			peer_down(p, P_DEAD, fmt_duration(ms(now - start), d,
			    sizeof(d)));
		break;
	case P_UP:
	case P_LATE:
		if (now >= p->last_rx + deadtime) {
			peer_down(p, P_DEAD, NULL);
			break;
		}
		/*
		 * A link is reported down only while another one still
		 * carries the peer; while the peer is late, the next line
		 * is dead or up, and the link-down is told with up.
		 */
		TAILQ_FOREACH(m, &p->media, entry)
			if (m->up && now >= m->last_rx + deadtime) {
				m->up = 0;
				if (p->state == P_LATE) {
					m->unsaid = 1;
					continue;
				}
				emit(p->name, "link-down", "medium=%s "
				    "silent=%s", m->name, fmt_duration(ms(now -
				    m->last_rx), d, sizeof(d)));
			}
		if (p->state == P_UP && warntime < deadtime &&
		    now >= p->last_rx + warntime) {
			p->state = P_LATE;
			emit(p->name, "late", "silent=%s",
			    fmt_duration(ms(now - p->last_rx), d, sizeof(d)));
		}
		break;
	default:
		break;
	}
	peer_arm(p);
}

static void
peer_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t	now = now_usec();

	(void)fd;
	(void)what;
	if (stall_check(now))
		return;
	peer_eval(arg, now);
}

/*
 * Were we asleep?  The tick is due every interval; finding it late by
 * more than an interval means this process was not scheduled (SIGSTOP,
 * a paused VM, an overloaded host).  The heartbeats that arrived in the
 * meantime are still in the socket buffers, so listen one more interval
 * before any deadline may pass.
 */
static int
stall_check(uint64_t now)
{
	struct peer	*p;
	struct timeval	 tv;
	char		 d[32];

	if (now <= tick_due + interval)
		return 0;
	emit("-", "stall", "late=%s", fmt_duration(ms(now - tick_due), d,
	    sizeof(d)));
	hold_until = now + interval;
	tick_due = now + interval;
	tv_set(&tv, interval);
	evtimer_add(tick_ev, &tv);
	TAILQ_FOREACH(p, &peers, entry)
		peer_arm(p);
	return 1;
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct timeval	tv;
	uint64_t	now = now_usec();

	(void)fd;
	(void)what;
	(void)arg;
	if (stall_check(now))
		return;
	tick_due += interval;
	if (tick_due < now)
		tick_due = now;
	tv_set(&tv, tick_due - now);
	evtimer_add(tick_ev, &tv);
}

/* -1: one deadtime is over; print the membership and the quorum. */
static void
once_cb(evutil_socket_t fd, short what, void *arg)
{
	struct peer	*p;
	int		 v = votes();

	(void)fd;
	(void)what;
	(void)arg;
	quiet = 0;
	TAILQ_FOREACH(p, &peers, entry)
		emit(p->name, pstate_name[p->state == P_UNKNOWN ? P_DEAD :
		    p->state], NULL);
	quorum = 2 * v > npeers + 1;
	emit("-", "quorum", "quorum=%s votes=%d size=%d",
	    quorum ? "yes" : "no", v, npeers + 1);
	event_base_loopexit(base, NULL);
}

/*
 * One packet from a medium.  Nothing changes before it passed the header
 * checks, the tag, the body, the cluster, the node, the freshness rule
 * and the replay rule.  Returns -1 when it is not authentic (so that a
 * stream can look for the next packet inside it), 0 otherwise.
 */
static int
packet(const unsigned char *buf, size_t len, const char *medium)
{
	struct hb_packet	 pkt;
	struct pmedium		*m, *old;
	struct peer		*p;
	char			 st[3 * HB_STATUS_MAX + 1], why[128];
	uint64_t		 now;
	int64_t			 age;
	int			 e, restarted, newest, first;

	if ((e = hb_decode(buf, len, hkey, &pkt)) != HB_OK) {
		drop(e == HB_EAUTH ? D_AUTH : e == HB_EBODY ? D_BODY :
		    D_HEADER, medium, hb_strerror(e));
		return -1;
	}
	if (strcmp(pkt.cluster, cluster) != 0) {
		drop(D_CLUSTER, medium, pkt.cluster);
		return 0;
	}
	if (strcmp(pkt.node, self) == 0)
		return 0;	/* our own, looped back */
	if ((p = peer_find(pkt.node)) == NULL) {
		drop(D_UNKNOWN, medium, pkt.node);
		return 0;
	}
	/*
	 * The freshness rule: the replay state is only in memory, so a
	 * packet is also refused when its time is not within the window
	 * around our clock; this holds across restarts of hbwatch.
	 */
	if (!hb_fresh(wall_usec(), pkt.time, freshness, &age)) {
		snprintf(why, sizeof(why), "clock skew or replay: packet "
		    "from %s is %.1f s %s", pkt.node, (age < 0 ? -(double)age :
		    (double)age) / 1e6, age < 0 ? "ahead" : "old");
		drop(D_STALE, medium, why);
		return 0;
	}
	TAILQ_FOREACH(m, &p->media, entry)
		if (strcmp(m->name, medium) == 0)
			break;
	/*
	 * The replay rule: never an older incarnation; on each medium
	 * strictly increasing; and, since the same packet comes over every
	 * medium, not older than the newest by more than a small window.
	 */
	if (p->rp.seen && (pkt.incarnation < p->rp.incarnation ||
	    (pkt.incarnation == p->rp.incarnation &&
	    pkt.seq + HB_REORDER_WINDOW < p->rp.seq)) ) {
		drop(D_REPLAY, medium, "older than the newest");
		return 0;
	}
	if (m != NULL && !hb_newer(&m->rp, pkt.incarnation, pkt.seq)) {
		drop(D_REPLAY, medium, "seen already");
		return 0;
	}
	/*
	 * The medium is named by the sender's address, which nobody
	 * authenticates: only the newest packet of the peer, or a copy of
	 * a recent one while the newest is at most an interval old (the
	 * same heartbeat over another medium), may refresh or create a
	 * medium.  A medium a copy created is up only once it carried a
	 * second packet, so one replayed packet from many addresses shows
	 * nothing; and only a medium that is down makes room for a new one.
	 */
	now = now_usec();
	newest = hb_newer(&p->rp, pkt.incarnation, pkt.seq);
	if (!newest && (pkt.incarnation != p->rp.incarnation ||
	    now - p->last_rx > interval)) {
		drop(D_REPLAY, medium, "a copy of an old packet");
		return 0;
	}
	if (m == NULL) {
		if (p->nmedia >= MEDIA_PER_PEER) {
			/* reuse the down medium silent for the longest */
			old = NULL;
			TAILQ_FOREACH(m, &p->media, entry)
				if (!m->up && (old == NULL ||
				    m->last_rx < old->last_rx))
					old = m;
			if (old == NULL) {
				drop(D_MEDIA, medium, "too many media up");
				return 0;
			}
			TAILQ_REMOVE(&p->media, old, entry);
			m = old;
		} else {
			if ((m = calloc(1, sizeof(*m))) == NULL)
				fatal("calloc");
			p->nmedia++;
		}
		memset(m, 0, sizeof(*m));
		snprintf(m->name, sizeof(m->name), "%s", medium);
		TAILQ_INSERT_TAIL(&p->media, m, entry);
	}
	accepted++;
	first = !m->rp.seen;
	hb_accept(&m->rp, pkt.incarnation, pkt.seq);
	m->last_rx = now;
	if (!m->up && (newest || !first)) {
		m->up = 1;
		if ((p->state == P_UP || p->state == P_LATE) &&
		    pkt.incarnation == p->rp.incarnation && !m->unsaid)
			emit(p->name, "link-up", "medium=%s", m->name);
		m->unsaid = 0;
	}
	if (!hb_newer(&p->rp, pkt.incarnation, pkt.seq)) {
		peer_arm(p);
		return 0;	/* the same heartbeat over another medium */
	}
	restarted = p->rp.seen && pkt.incarnation > p->rp.incarnation;
	hb_accept(&p->rp, pkt.incarnation, pkt.seq);
	p->last_rx = now;

	if (pkt.type == HB_TYPE_LEAVING) {
		strcpy(p->status, pkt.status);
		if (p->state != P_LEFT)
			peer_down(p, P_LEFT, NULL);
		peer_arm(p);
		return 0;
	}
	switch (p->state) {
	case P_UNKNOWN:
	case P_DEAD:
	case P_LEFT:
		p->state = P_UP;
		strcpy(p->status, pkt.status);
		TAILQ_FOREACH(old, &p->media, entry)
			old->up = old == m;
		emit(p->name, "up", "incarnation=%llu medium=%s status=%s "
		    "quorum=%s", (unsigned long long)pkt.incarnation, m->name,
		    pct(pkt.status, st, sizeof(st)),
		    2 * votes() > npeers + 1 ? "yes" : "no");
		quorum_update();
		break;
	case P_UP:
	case P_LATE:
		if (restarted) {
			p->state = P_UP;
			strcpy(p->status, pkt.status);
			TAILQ_FOREACH(old, &p->media, entry)
				old->up = old == m;
			emit(p->name, "restarted", "incarnation=%llu "
			    "medium=%s status=%s",
			    (unsigned long long)pkt.incarnation, m->name,
			    pct(pkt.status, st, sizeof(st)));
			break;
		}
		if (p->state == P_LATE) {
			p->state = P_UP;
			emit(p->name, "up", "incarnation=%llu medium=%s "
			    "status=%s quorum=%s",
			    (unsigned long long)pkt.incarnation, m->name,
			    pct(pkt.status, st, sizeof(st)),
			    2 * votes() > npeers + 1 ? "yes" : "no");
			TAILQ_FOREACH(old, &p->media, entry)
				if (old->unsaid) {
					old->unsaid = 0;
					emit(p->name, "link-down", "medium=%s",
					    old->name);
				}
		}
		if (strcmp(p->status, pkt.status) != 0) {
			strcpy(p->status, pkt.status);
			emit(p->name, "status", "status=%s",
			    pct(pkt.status, st, sizeof(st)));
		}
		break;
	}
	peer_arm(p);
	return 0;
}

static void
listener_open(struct listener *l)
{
	struct hb_medium	*m = &l->m;
	int			 on = 1, off = 0, fam = m->ss.ss_family;

	l->fd = socket(fam, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (l->fd == -1)
		fatal("%s: socket", l->spec);
	/*
	 * Several watchers may share a multicast group; a unicast port
	 * shared by two would deliver to one only, so that is refused.
	 */
	if (m->kind == HB_MEDIUM_MCAST && setsockopt(l->fd, SOL_SOCKET,
	    SO_REUSEADDR, &on, sizeof(on)) == -1)
		fatal("%s: SO_REUSEADDR", l->spec);
	if (fam == AF_INET6 && m->any && setsockopt(l->fd, IPPROTO_IPV6,
	    IPV6_V6ONLY, &off, sizeof(off)) == -1)
		fatal("%s: IPV6_V6ONLY", l->spec);
	if (m->kind == HB_MEDIUM_BCAST) {
		if (setsockopt(l->fd, SOL_SOCKET, SO_BROADCAST, &on,
		    sizeof(on)) == -1)
			fatal("%s: SO_BROADCAST", l->spec);
		if (setsockopt(l->fd, SOL_SOCKET, SO_BINDTODEVICE, m->ifname,
		    strlen(m->ifname)) == -1)
			fatal("%s: SO_BINDTODEVICE", l->spec);
	}
	if (bind(l->fd, (struct sockaddr *)&m->ss, m->sslen) == -1)
		fatal("%s: bind", l->spec);
	l->port = ntohs(fam == AF_INET ?
	    ((struct sockaddr_in *)&m->ss)->sin_port :
	    ((struct sockaddr_in6 *)&m->ss)->sin6_port);
	if (m->kind != HB_MEDIUM_MCAST)
		return;
	if (fam == AF_INET) {
		struct ip_mreqn	mr;

		memset(&mr, 0, sizeof(mr));
		mr.imr_multiaddr = ((struct sockaddr_in *)&m->ss)->sin_addr;
		mr.imr_ifindex = m->ifindex;
		if (setsockopt(l->fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr,
		    sizeof(mr)) == -1)
			fatal("%s: IP_ADD_MEMBERSHIP", l->spec);
	} else {
		struct ipv6_mreq	mr;

		memset(&mr, 0, sizeof(mr));
		mr.ipv6mr_multiaddr =
		    ((struct sockaddr_in6 *)&m->ss)->sin6_addr;
		mr.ipv6mr_interface = m->ifindex;
		if (setsockopt(l->fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &mr,
		    sizeof(mr)) == -1)
			fatal("%s: IPV6_JOIN_GROUP", l->spec);
	}
}

/*
 * Datagrams: the medium is named by the kind of listener, the sender's
 * address and our port ("udp:198.18.0.2:694"), which stays the same
 * across restarts of the sender.
 */
static void
udp_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener		*l = arg;
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	unsigned char		 buf[HB_PKT_MAX + 1];
	char			 addr[64], name[MEDIUM_NAME_MAX], *c;
	ssize_t			 n;
	int			 i;

	(void)what;
	for (i = 0; i < 64; i++) {
		sslen = sizeof(ss);
		n = recvfrom(fd, buf, sizeof(buf), MSG_TRUNC,
		    (struct sockaddr *)&ss, &sslen);
		if (n == -1) {
			if (errno != EAGAIN && errno != EINTR)
				log_warn("%s: recv", l->spec);
			return;
		}
		hb_addr_str((struct sockaddr *)&ss, addr, sizeof(addr));
		if ((c = strrchr(addr, ':')) != NULL)
			*c = '\0';
		snprintf(name, sizeof(name), "%s:%s:%u",
		    l->m.kind == HB_MEDIUM_MCAST ? "mcast" :
		    l->m.kind == HB_MEDIUM_BCAST ? "bcast" : "udp", addr,
		    l->port);
		(void)packet(buf, (size_t)n > sizeof(buf) ? sizeof(buf) :
		    (size_t)n, name);
	}
}

/*
 * The pipe medium: a stream of packets, each framed by its own header.
 * Garbage is skipped a byte at a time until a header looks right again;
 * so is the first byte of a framed packet that is not authentic, since
 * its length may be garbage too and cover the next good packet.
 */
static void
stdin_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener	*l = arg;
	unsigned char	 hdr[HB_HDR_LEN], buf[HB_PKT_MAX];
	size_t		 pktlen, skipped = 0;
	int		 n, e;

	(void)what;
	if ((n = hb_stdin_read(l->in, fd)) == 0)
		return;
	if (n == -1) {
		log_warnx("stdin closed, no more heartbeats from the pipe");
		if (l->ev != NULL)
			event_del(l->ev);
		l->eof = 1;
	}
	while (evbuffer_get_length(l->in) >= HB_HDR_LEN) {
		evbuffer_copyout(l->in, hdr, HB_HDR_LEN);
		if ((e = hb_header(hdr, HB_HDR_LEN, &pktlen)) != HB_OK) {
			if (skipped++ == 0)
				drop(D_HEADER, "pipe:stdin", hb_strerror(e));
			evbuffer_drain(l->in, 1);
			continue;
		}
		if (evbuffer_get_length(l->in) < pktlen)
			break;
		evbuffer_copyout(l->in, buf, pktlen);
		if (packet(buf, pktlen, "pipe:stdin") == -1)
			evbuffer_drain(l->in, 1);
		else
			evbuffer_drain(l->in, pktlen);
	}
}

/*
 * A file, or a stdin that cannot be polled: a few reads, then back to the
 * event loop, so that the timers run even if it never ends (/dev/zero).
 */
static void
file_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener	*l = arg;
	struct timeval	 tv;
	int		 i;

	(void)fd;
	(void)what;
	for (i = 0; i < FILE_READS && !l->eof; i++)
		stdin_cb(STDIN_FILENO, EV_READ, l);
	if (l->eof)
		return;
	/* not 0: libevent would run it again before any timer */
	tv_set(&tv, 1);
	if (event_base_once(base, -1, EV_TIMEOUT, file_cb, l, &tv) == -1)
		fatalx("event_base_once");
}

/*
 * SIGUSR1: the peers, the quorum and the counters on stderr.  The peers
 * are built in a buffer of any size and logged in lines of at most
 * STATUS_CHUNK bytes, each but the last ending in ",+".
 */
#define STATUS_CHUNK	800
static void
status_report(void)
{
	struct evbuffer	*b;
	struct peer	*p;
	const char	*s, *c;
	size_t		 len, n;
	int		 i;

	if ((b = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	TAILQ_FOREACH(p, &peers, entry)
		evbuffer_add_printf(b, "%s%s:%s", p == TAILQ_FIRST(&peers) ?
		    "" : ",", p->name, pstate_name[p->state]);
	evbuffer_add(b, "", 1);
	s = (const char *)evbuffer_pullup(b, -1);
	len = strlen(s);
	while (len > STATUS_CHUNK) {
		/* cut after the last comma that fits; names have none */
		for (c = s + STATUS_CHUNK; c > s && *c != ','; c--)
			;
		n = c > s ? (size_t)(c - s) + 1 : STATUS_CHUNK;
		log_info("status peers=%.*s+", (int)n, s);
		s += n;
		len -= n;
	}
	log_info("status peers=%s quorum=%s accepted=%lu", s,
	    quorum ? "yes" : "no", accepted);
	evbuffer_drain(b, evbuffer_get_length(b));
	for (i = 0; i < D_NDROP; i++)
		evbuffer_add_printf(b, " %s=%lu", drop_name[i], drops[i]);
	evbuffer_add_printf(b, " events-unwritten=%lu events-unhandled=%lu",
	    out_dropped, jobs_dropped);
	evbuffer_add(b, "", 1);
	log_info("status dropped%s", (const char *)evbuffer_pullup(b, -1));
	evbuffer_free(b);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (sig == SIGUSR1) {
		status_report();
		return;
	}
	event_base_loopexit(base, NULL);
}

int
main(int argc, char *argv[])
{
	struct event		*sigs[4];
	struct listener		*l;
	struct peer		*p;
	struct pmedium		*m;
	struct job		*j;
	struct timeval		 tv;
	struct stat		 st;
	const char		*keyfile = "/etc/hatrio/cluster.key", *e;
	char			 host[256];
	int			 ch, readyfd = -1, verbose = 0, i;
	int			 nstdin = 0, initset = 0, warnset = 0;
	static const int	 signos[3] = { SIGTERM, SIGINT, SIGUSR1 };

	log_init(argv[0], 0);
	while ((ch = getopt(argc, argv, "1C:D:d:e:F:I:i:k:l:n:T:vw:")) != -1) {
		switch (ch) {
		case '1':
			onceflag = 1;
			break;
		case 'C':
			cluster = hb_opt_name(ch, optarg);
			break;
		case 'D':
			hb_opt_duration(ch, optarg, &deadtime);
			/* more is no use, and now + deadtime could wrap */
			if (deadtime > 3600000000ULL)
				hb_badopt(ch, optarg, "longer than 1h");
			break;
		case 'd':
			hb_opt_fd(ch, optarg, &readyfd);
			break;
		case 'e':
			handler = optarg;
			break;
		case 'F':
			hb_opt_duration(ch, optarg, &freshness);
			break;
		case 'I':
			hb_opt_duration(ch, optarg, &initdead);
			if (initdead > 3600000000ULL)
				hb_badopt(ch, optarg, "longer than 1h");
			initset = 1;
			break;
		case 'i':
			hb_opt_duration(ch, optarg, &interval);
			break;
		case 'k':
			keyfile = optarg;
			break;
		case 'l':
			if ((l = calloc(1, sizeof(*l))) == NULL)
				fatal("calloc");
			l->spec = optarg;
			if ((e = hb_medium_arg(optarg, 1, &l->m, &nstdin)) !=
			    NULL)
				hb_badopt(ch, optarg, e);
			TAILQ_INSERT_TAIL(&listeners, l, entry);
			break;
		case 'n':
			self = hb_opt_name(ch, optarg);
			break;
		case 'T':
			hb_opt_duration(ch, optarg, &htimeout);
			if (htimeout == 0)
				hb_badopt(ch, optarg, "must not be 0");
			break;
		case 'v':
			verbose++;
			break;
		case 'w':
			hb_opt_duration(ch, optarg, &warntime);
			warnset = 1;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	if (TAILQ_EMPTY(&listeners)) {
		/* Heartbeat's port, on every address */
		if ((l = calloc(1, sizeof(*l))) == NULL)
			fatal("calloc");
		l->spec = HB_LISTEN_DEFAULT;
		if ((e = hb_medium_parse(l->spec, 1, &l->m)) != NULL)
			fatalx("%s: %s", l->spec, e);
		TAILQ_INSERT_TAIL(&listeners, l, entry);
	}
	log_setverbose(verbose);
	if (interval < 1000 || interval > 3600000000ULL) {
		log_warnx("-i: the interval must be 1ms to 1h");
		exit(EXIT_USAGE);
	}
	if (deadtime <= interval) {
		log_warnx("-D: the deadtime must be longer than the interval");
		exit(EXIT_USAGE);
	}
	if (!warnset && warntime >= deadtime)
		warntime = deadtime;	/* no late events */
	if (warntime > deadtime || warntime < interval) {
		log_warnx("-w: the warntime must be between the interval and "
		    "the deadtime");
		exit(EXIT_USAGE);
	}
	if (!initset && initdead < deadtime)
		initdead = deadtime;
	if (initdead < deadtime) {
		log_warnx("-I: initdead must not be shorter than the "
		    "deadtime");
		exit(EXIT_USAGE);
	}
	if (self == NULL)
		self = hb_node_default(host, sizeof(host));
	for (i = 0; i < argc; i++) {
		if (!hb_valid_name(argv[i])) {
			log_warnx("%s: not a valid node name", argv[i]);
			exit(EXIT_USAGE);
		}
		if (strcmp(argv[i], self) == 0 || peer_find(argv[i]) != NULL) {
			log_warnx("%s: named twice (this node is %s)", argv[i],
			    self);
			exit(EXIT_USAGE);
		}
		if ((p = calloc(1, sizeof(*p))) == NULL)
			fatal("calloc");
		snprintf(p->name, sizeof(p->name), "%s", argv[i]);
		TAILQ_INIT(&p->media);
		TAILQ_INSERT_TAIL(&peers, p, entry);
		npeers++;
	}
	if (onceflag)
		quiet = 1;
	if ((e = hb_key_load(keyfile, hkey)) != NULL) {
		log_warnx("%s", e);
		exit(EXIT_USAGE);
	}

	if ((base = hb_base_new()) == NULL)
		fatalx("event_base_new");
	hb_out_open(&out, base, "stdout");
	TAILQ_FOREACH(l, &listeners, entry) {
		if (l->m.kind == HB_MEDIUM_PIPE) {
			if ((l->in = evbuffer_new()) == NULL)
				fatal("evbuffer_new");
			l->fd = STDIN_FILENO;
			if (fstat(STDIN_FILENO, &st) == -1)
				fatal("stdin");
			if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
				/* a file (a capture): read it all at start */
				tv_set(&tv, 0);
				if (event_base_once(base, -1, EV_TIMEOUT,
				    file_cb, l, &tv) == -1)
					fatalx("event_base_once");
				continue;
			}
			l->ev = event_new(base, STDIN_FILENO,
			    EV_READ | EV_PERSIST, stdin_cb, l);
			if (l->ev != NULL && event_add(l->ev, NULL) == -1) {
				/* /dev/null and the like cannot be polled */
				event_free(l->ev);
				l->ev = NULL;
				tv_set(&tv, 0);
				if (event_base_once(base, -1, EV_TIMEOUT,
				    file_cb, l, &tv) == -1)
					fatalx("event_base_once");
			}
			continue;
		} else {
			listener_open(l);
			l->ev = event_new(base, l->fd, EV_READ | EV_PERSIST,
			    udp_cb, l);
		}
		if (l->ev == NULL || event_add(l->ev, NULL) == -1)
			fatalx("%s: cannot watch it", l->spec);
	}
	for (i = 0; i < (int)nitems(signos); i++)
		if ((sigs[i] = evsignal_new(base, signos[i], signal_cb,
		    NULL)) == NULL || event_add(sigs[i], NULL) == -1)
			fatalx("evsignal_new");
	if ((sigs[3] = evsignal_new(base, SIGCHLD, sigchld_cb, NULL)) ==
	    NULL || event_add(sigs[3], NULL) == -1)
		fatalx("evsignal_new");
	if ((tick_ev = evtimer_new(base, tick_cb, NULL)) == NULL ||
	    (job_timer = evtimer_new(base, job_timeout_cb, NULL)) == NULL)
		fatalx("evtimer_new");

	start = now_usec();
	tick_due = start + interval;
	tv_set(&tv, interval);
	evtimer_add(tick_ev, &tv);
	if (onceflag) {
		initdead = deadtime;
		if ((once_ev = evtimer_new(base, once_cb, NULL)) == NULL)
			fatalx("evtimer_new");
		tv_set(&tv, deadtime);
		evtimer_add(once_ev, &tv);
	}
	quorum = 2 * 1 > npeers + 1;
	TAILQ_FOREACH(p, &peers, entry) {
		if ((p->timer = evtimer_new(base, peer_timer_cb, p)) == NULL)
			fatalx("evtimer_new");
		peer_arm(p);
	}
	ready_notify(readyfd);
	log_debug("node %s cluster %s, %d peers", self, cluster, npeers);

	event_base_dispatch(base);

	hb_out_close(&out);
	if (job_pid != -1) {
		kill(-job_pid, SIGKILL);
		waitpid(job_pid, NULL, 0);
	}
	while ((j = TAILQ_FIRST(&jobs)) != NULL) {
		TAILQ_REMOVE(&jobs, j, entry);
		free(j->line);
		free(j);
	}
	while ((p = TAILQ_FIRST(&peers)) != NULL) {
		TAILQ_REMOVE(&peers, p, entry);
		while ((m = TAILQ_FIRST(&p->media)) != NULL) {
			TAILQ_REMOVE(&p->media, m, entry);
			free(m);
		}
		event_free(p->timer);
		free(p);
	}
	while ((l = TAILQ_FIRST(&listeners)) != NULL) {
		TAILQ_REMOVE(&listeners, l, entry);
		if (l->ev != NULL)
			event_free(l->ev);
		if (l->in != NULL)
			evbuffer_free(l->in);
		if (l->m.kind != HB_MEDIUM_PIPE)
			close(l->fd);
		free(l);
	}
	for (i = 0; i < (int)nitems(sigs); i++)
		event_free(sigs[i]);
	event_free(tick_ev);
	event_free(job_timer);
	if (once_ev != NULL)
		event_free(once_ev);
	event_base_free(base);
	sodium_memzero(hkey, sizeof(hkey));
	if (onceflag)
		return quorum ? EXIT_OK : EXIT_NO;
	return EXIT_OK;
}

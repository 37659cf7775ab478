/* See LICENSE file for copyright and license details. */
/*
 * blkmirror serves a disk over NBD from a local backing store, keeping
 * crash-safe metadata (generation identifiers, per-peer dirty bitmaps, an
 * activity log of hot extents) in a file of its own, and takes commands
 * and reports state changes on a control socket.  This is the data path
 * of hatrio; replication to peers builds on it.
 */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <linux/falloc.h>
#include <linux/fs.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "ctl.h"
#include "gi.h"
#include "hatrio.h"
#include "ioq.h"
#include "link.h"
#include "meta.h"
#include "nbd.h"
#include "repl.h"

#define CHUNK_EXTENTS	16	/* AL extents one step of a request covers */
#define IO_THREADS	8
#define ASYNC_DELAY_USEC 2000	/* writes to an async peer wait so long */
#define STOP_GRACE_USEC	5000000
#define EVQ_MAX		(1 << 20)	/* output a slow "events" reader may
					   leave unread before it is dropped */

/* states of a write-type request (nbd_req.state) */
enum { W_NEW, W_OVERLAP, W_ALFULL, W_AL, W_IO };

TAILQ_HEAD(reqq, nbd_req);

/* what a peer's data is to ours (peer.NAME.state) */
enum pstate { PS_DOWN, PS_HELLO, PS_UPTODATE, PS_NEEDS_RESYNC,
	PS_SYNC_TARGET, PS_SPLIT, PS_UNRELATED, PS_BEHIND };
static const char *pstate_names[] = { "connecting", "handshake",
	"uptodate", "needs-resync", "sync-target", "split-brain",
	"unrelated", "behind" };

enum { Q_SUSPEND, Q_IOERROR, Q_OFF };

/* a message sent to a peer and not yet acknowledged */
struct pend {
	TAILQ_ENTRY(pend)	 entry;
	uint64_t		 seq, off, t;
	uint32_t		 len;
	int			 flush;
	struct nbd_req		*r;	/* sync peers: the client's request */
};

struct peer {
	TAILQ_ENTRY(peer)	 entry;
	char			 name[META_NAME_MAX + 1];
	char			*host, *port;
	int			 async, slot;
	struct link_client	*lc;		/* we connect to it */
	struct link		*link;		/* ready link or NULL */
	int			 hello;		/* its HELLO came */
	uint32_t		 flags;		/* REPL_F_* it last sent */
	uint32_t		 sent_flags;	/* ours, as we last sent them */
	enum pstate		 st;
	uint64_t		 gen;		/* bumped per link lost */
	uint64_t		 seq, epoch;
	uint64_t		 pend_bytes, acked_usec, overflows;
	TAILQ_HEAD(, pend)	 pend;
	char			 last_error[256];
};

struct ctlc {
	TAILQ_ENTRY(ctlc)	 entry;
	struct bufferevent	*bev;
	int			 events;
};

static struct event_base	*base;
static struct meta		*m;
static struct nbd_server	*srv;
static struct ioq		*ioq;
static const char		*devpath, *metapath, *nodename;
static int			 devfd = -1;
static int			 primary;
static int			 stopping;
static uint64_t			 stop_deadline;
static unsigned int		 disk_inflight;
static struct reqq		 wlist = TAILQ_HEAD_INITIALIZER(wlist);
static struct reqq		 alwait = TAILQ_HEAD_INITIALIZER(alwait);
static struct reqq		 alfull = TAILQ_HEAD_INITIALIZER(alfull);
static unsigned int		 noverlap;
static struct ioq_job		 metajob;
static unsigned char		*metabuf;
static uint64_t			 metaoff, metagen;
static int			 metabusy;
static uint64_t			 al_commits, meta_errors;
static TAILQ_HEAD(, ctlc)	 ctls = TAILQ_HEAD_INITIALIZER(ctls);
static struct evconnlistener	*ctl_lev;
static const char		*ctlpath;
static uint64_t			 evseq;
static unsigned char		 zeroes[65536];
static TAILQ_HEAD(, peer)	 peers = TAILQ_HEAD_INITIALIZER(peers);
static int			 npeers, qmode, had_quorum = 1, crashed;
static int			 forced;	/* primary --force: no quorum */
static unsigned int		 nsusp, nheld;
static uint64_t			 qmax = 64ULL << 20;
static unsigned char		 key[HATRIO_KEY_BYTES];
static struct reqq		 bmwait = TAILQ_HEAD_INITIALIZER(bmwait);
static struct reqq		 susp = TAILQ_HEAD_INITIALIZER(susp);
static struct reqq		 held = TAILQ_HEAD_INITIALIZER(held);
static uint64_t			 bm_gen, bm_gen_disk, gi_need, metabmgen;
static unsigned char		*bmsnap[META_PEERS];
static uint64_t			 bmoff[META_PEERS];
static int			 metabm;
static int			 jfd = -1, jerr;
static char			*jpath;
static uint64_t			 jend, jrecs, epochs_applied;
static uint64_t			 jstart, jbound, jbseq, jbepoch, jbgen;
static unsigned int		 jbflushes;
static struct peer		*jbpeer;
static struct event		*jtimer;
static struct evconnlistener	*peer_lev;
static void	on_ready(struct link *, const char *);
static void	on_message(struct link *, unsigned, const void *, size_t);
static void	on_close(struct link *, const char *);
static const struct link_cb	 peer_cb = { on_ready, on_message, NULL,
				    on_close };

static void	usage(void) __attribute__((noreturn));
static void	emit(const char *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static void	start_chunk(struct nbd_req *);
static void	al_commit(void);
static void	meta_commit(void);
static void	submit(struct nbd_req *, void *);
static void	finish_write(struct nbd_req *, int);
static void	io_error(struct nbd_req *, int);
static void	peer_down(struct peer *, const char *);
static uint32_t	my_flags(struct peer *);
static void	release_held(void);
static void	repl_write(struct nbd_req *);
static void	repl_flush(struct nbd_req *);
static void	req_maybe_done(struct nbd_req *);
static int	have_quorum(void);
static void	journal_cut(void);
static void	journal_commit(void);

static void
usage(void)
{
	fprintf(stderr,
	    "usage: blkmirror [-pv] [-d fd] [-J journal] [-j threads] "
	    "[-k keyfile]\n"
	    "                 [-L [host:]port] [-P name=host:port,mode] "
	    "[-Q size]\n"
	    "                 [-q policy] [-t [host:]port] -c ctlsock "
	    "-l nbdsock\n"
	    "                 -m meta -n node device\n"
	    "       blkmirror init [-f] [-a extents] [-g gi] -m meta -n node "
	    "device\n"
	    "                 [size]\n"
	    "       blkmirror dump -m meta\n"
	    "       blkmirror ctl ctlsock command\n");
	exit(EXIT_USAGE);
}

/*
 * Events: "TIMESTAMP NODE EVENT key=value... seq=N", one line each, to
 * every control client that asked for them.
 */
static void
emit(const char *event, const char *fmt, ...)
{
	struct ctlc	*c, *tmp;
	char		 kv[512];
	uint64_t	 t = wall_usec();
	va_list		 ap;

	va_start(ap, fmt);
	vsnprintf(kv, sizeof(kv), fmt, ap);
	va_end(ap);
	evseq++;
	log_debug("event %s %s", event, kv);
	TAILQ_FOREACH_SAFE(c, &ctls, entry, tmp) {
		if (!c->events)
			continue;
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) >
		    EVQ_MAX) {
			log_warnx("control client too slow for events, "
			    "dropped");
			TAILQ_REMOVE(&ctls, c, entry);
			bufferevent_free(c->bev);
			free(c);
			continue;
		}
		evbuffer_add_printf(bufferevent_get_output(c->bev),
		    "%" PRIu64 ".%06" PRIu64 " %s %s%s%s seq=%" PRIu64 "\n",
		    t / 1000000, t % 1000000, m->node, event,
		    kv[0] ? " " : "", kv, evseq);
	}
}

static void
nbd_poll(void *arg)
{
	(void)arg;
	ioq_reap(ioq);
}

/*
 * Quiet completions may wait for the loop's next wakeup, unless another
 * request is waiting for them.
 */
static void
update_eager(void)
{
	ioq_set_eager(ioq, noverlap > 0 || !TAILQ_EMPTY(&alfull) ||
	    stopping);
}

static void
nbd_note(void *arg, const char *event, const char *kv)
{
	(void)arg;
	emit(event, "%s", kv);
}

/* --- disk I/O, in the pool's workers ------------------------------- */

static struct nbd_req *
job_req(struct ioq_job *j)
{
	return (struct nbd_req *)(void *)((char *)j -
	    offsetof(struct nbd_req, job));
}

static uint64_t
chunk_end(struct nbd_req *r)
{
	uint64_t	e = ((uint64_t)r->ext_hi + 1) * META_AL_EXTENT;

	return e < r->end ? e : r->end;
}

static void
work_read(struct ioq_job *j)
{
	struct nbd_req	*r = job_req(j);
	uint32_t	 done = 0;
	ssize_t		 n;

	while (done < r->len) {
		n = pread(devfd, r->buf + done, r->len - done,
		    r->offset + done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			j->err = errno;
			return;
		}
		if (n == 0) {
			memset(r->buf + done, 0, r->len - done);
			break;
		}
		done += n;
	}
	j->quiet = nbd_req_reply_early(r);
}

static int
write_zeroes(uint64_t off, uint64_t len)
{
	size_t	n;
	ssize_t	w;

	while (len > 0) {
		n = len < sizeof(zeroes) ? len : sizeof(zeroes);
		if ((w = pwrite(devfd, zeroes, n, off)) == -1) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		off += w;
		len -= w;
	}
	return 0;
}

/* One chunk of a WRITE, TRIM or WRITE_ZEROES: [cur, chunk_end). */
static void
work_write(struct ioq_job *j)
{
	struct nbd_req	*r = job_req(j);
	uint64_t	 off = r->cur, len = chunk_end(r) - r->cur;
	unsigned char	*p = r->buf + (r->cur - r->offset);
	ssize_t		 n;

	switch (r->type) {
	case NBD_CMD_WRITE:
		while (len > 0) {
			n = pwrite(devfd, p, len, off);
			if (n == -1 && errno == EINTR)
				continue;
			if (n == -1) {
				j->err = errno;
				return;
			}
			p += n;
			off += n;
			len -= n;
		}
		break;
	case NBD_CMD_TRIM:
		/* Advisory: where holes cannot be punched, do nothing. */
		if (fallocate(devfd, FALLOC_FL_PUNCH_HOLE |
		    FALLOC_FL_KEEP_SIZE, off, len) == -1 &&
		    errno != EOPNOTSUPP && errno != ENOTTY)
			j->err = errno;
		break;
	case NBD_CMD_WRITE_ZEROES:
		if (fallocate(devfd, FALLOC_FL_ZERO_RANGE |
		    FALLOC_FL_KEEP_SIZE, off, len) == 0)
			break;
		if (!(r->flags & NBD_CMD_FLAG_NO_HOLE) &&
		    fallocate(devfd, FALLOC_FL_PUNCH_HOLE |
		    FALLOC_FL_KEEP_SIZE, off, len) == 0)
			break;
		j->err = write_zeroes(off, len);
		break;
	}
	if (j->err == 0 && (r->flags & NBD_CMD_FLAG_FUA) &&
	    chunk_end(r) == r->end && fdatasync(devfd) == -1)
		j->err = errno;
	/*
	 * Done locally, and no peer to wait for yet: the client may have
	 * its answer now; the loop does the bookkeeping after.
	 */
	if (j->err == 0 && chunk_end(r) == r->end && r->early_ok)
		j->quiet = nbd_req_reply_early(r);
}

static void
work_flush(struct ioq_job *j)
{
	if (fdatasync(devfd) == -1)
		j->err = errno;
	else if (job_req(j)->early_ok)
		j->quiet = nbd_req_reply_early(job_req(j));
}

static void
work_meta(struct ioq_job *j)
{
	int	p;

	for (p = 0; p < META_PEERS; p++)
		if ((metabm & (1 << p)) && meta_pwrite(m->fd, bmsnap[p],
		    m->bm_bytes, bmoff[p]) == -1) {
			j->err = errno;
			return;
		}
	if (metabm != 0 && fdatasync(m->fd) == -1) {
		j->err = errno;
		return;
	}
	if (meta_write(m->fd, metabuf, metaoff) == -1)
		j->err = errno;
}

/* Apply one replicated command to the store; 0 or an errno. */
static int
apply(int cmd, uint64_t off, uint64_t len, const unsigned char *p, int fua)
{
	ssize_t	n;

	switch (cmd) {
	case NBD_CMD_WRITE:
		while (len > 0) {
			n = pwrite(devfd, p, len, off);
			if (n == -1 && errno == EINTR)
				continue;
			if (n == -1)
				return errno;
			p += n;
			off += n;
			len -= n;
		}
		break;
	case NBD_CMD_TRIM:
		if (fallocate(devfd, FALLOC_FL_PUNCH_HOLE |
		    FALLOC_FL_KEEP_SIZE, off, len) == -1 &&
		    errno != EOPNOTSUPP && errno != ENOTTY)
			return errno;
		break;
	case NBD_CMD_WRITE_ZEROES:
		if (fallocate(devfd, FALLOC_FL_ZERO_RANGE |
		    FALLOC_FL_KEEP_SIZE, off, len) == 0)
			break;
		return write_zeroes(off, len);
	}
	if (fua && fdatasync(devfd) == -1)
		return errno;
	return 0;
}

/* --- the request path, in the loop --------------------------------- */

static void
io_error(struct nbd_req *r, int e)
{
	static const char *names[] = { "read", "write", "disc", "flush",
	    "trim", "cache", "write-zeroes" };

	log_warnx("%s at %" PRIu64 "+%" PRIu32 ": %s",
	    r->type < nitems(names) ? names[r->type] : "?", r->offset, r->len,
	    strerror(e));
	emit("io-error", "op=%s offset=%" PRIu64 " length=%" PRIu32
	    " error=%s", r->type < nitems(names) ? names[r->type] : "?",
	    r->offset, r->len, strerror(e));
}

static void
done_flush(struct ioq_job *j)
{
	struct nbd_req	*r = job_req(j);

	r->local_done = 1;
	r->lerr = j->err;
	req_maybe_done(r);
}

static void
done_simple(struct ioq_job *j)
{
	struct nbd_req	*r = job_req(j);

	if (j->err != 0)
		io_error(r, j->err);
	disk_inflight--;
	nbd_req_done(r, j->err);
}

static int
overlaps(struct nbd_req *a, struct nbd_req *b)
{
	return a->offset < b->offset + b->len && b->offset < a->offset + a->len;
}

/* Is an earlier write in wlist overlapping r? */
static int
blocked(struct nbd_req *r)
{
	struct nbd_req	*o;

	TAILQ_FOREACH(o, &wlist, wentry) {
		if (o == r)
			return 0;
		if (overlaps(o, r))
			return 1;
	}
	return 0;
}

static void
finish_write(struct nbd_req *r, int e)
{
	struct nbd_req	*o, *tmp;
	struct reqq	 retry;

	TAILQ_REMOVE(&wlist, r, wentry);
	disk_inflight--;
	if (e != 0)
		io_error(r, e);
	nbd_req_done(r, e);
	if (noverlap > 0) {
		TAILQ_FOREACH_SAFE(o, &wlist, wentry, tmp) {
			if (o->state != W_OVERLAP || blocked(o))
				continue;
			noverlap--;
			o->state = W_NEW;
			repl_write(o);
			start_chunk(o);
		}
	}
	if (!TAILQ_EMPTY(&alfull)) {
		TAILQ_INIT(&retry);
		TAILQ_CONCAT(&retry, &alfull, entry);
		while ((o = TAILQ_FIRST(&retry)) != NULL) {
			TAILQ_REMOVE(&retry, o, entry);
			start_chunk(o);
		}
	}
	update_eager();
}

static void
done_write(struct ioq_job *j)
{
	struct nbd_req	*r = job_req(j);
	uint32_t	 e;

	for (e = r->ext_lo; e <= r->ext_hi; e++)
		m->ext_pinned[e]--;
	r->cur = chunk_end(r);
	if (j->err == 0 && r->cur < r->end) {
		start_chunk(r);
		return;
	}
	r->local_done = 1;
	r->lerr = j->err;
	req_maybe_done(r);
}

static void
submit_chunk(struct nbd_req *r)
{
	r->state = W_IO;
	r->job.work = work_write;
	r->job.done = done_write;
	r->job.slow = (r->flags & NBD_CMD_FLAG_FUA) ||
	    r->type != NBD_CMD_WRITE ||
	    r->len > 65536;
	if (!r->job.slow && ioq_inline_ok(ioq)) {
		/*
		 * A small buffered write costs less than the hand-off to a
		 * worker and back; its reply leaves with the loop's batch.
		 */
		r->early_ok = 0;
		ioq_run_inline(ioq, &r->job);
	} else
		ioq_submit(ioq, &r->job);
}

/*
 * start_chunk: the next step of a write, at most CHUNK_EXTENTS activity
 * log extents.  Its extents are pinned (never evicted while written) and
 * made active; if that changed the log, the write waits until the log is
 * on disk, so that after a crash every extent that may differ is known.
 */
static void
start_chunk(struct nbd_req *r)
{
	uint64_t	last;
	uint32_t	e;

	r->ext_lo = r->cur / META_AL_EXTENT;
	last = r->end - 1;
	if (last / META_AL_EXTENT >= (uint64_t)r->ext_lo + CHUNK_EXTENTS)
		last = ((uint64_t)r->ext_lo + CHUNK_EXTENTS) *
		    META_AL_EXTENT - 1;
	r->ext_hi = last / META_AL_EXTENT;
	r->need_gen = 0;
	for (e = r->ext_lo; e <= r->ext_hi; e++)
		m->ext_pinned[e]++;
	for (e = r->ext_lo; e <= r->ext_hi; e++) {
		if (meta_al_add(m, e) == -1) {
			/* Every active extent is busy: wait for one. */
			for (e = r->ext_lo; e <= r->ext_hi; e++)
				m->ext_pinned[e]--;
			r->state = W_ALFULL;
			TAILQ_INSERT_TAIL(&alfull, r, entry);
			update_eager();
			return;
		}
		if (m->ext_gen[e] > r->need_gen)
			r->need_gen = m->ext_gen[e];
	}
	if (r->need_gen > m->al_gen_disk) {
		r->state = W_AL;
		TAILQ_INSERT_TAIL(&alwait, r, entry);
		al_commit();
		return;
	}
	submit_chunk(r);
}

static void
done_meta(struct ioq_job *j)
{
	struct nbd_req	*r, *tmp;

	metabusy = 0;
	if (j->err != 0) {
		/* Nothing may be written that the log does not cover. */
		log_warnx("metadata %s: %s", metapath, strerror(j->err));
		meta_errors++;
		emit("meta-error", "error=%s", strerror(j->err));
		TAILQ_FOREACH_SAFE(r, &alwait, entry, tmp) {
			TAILQ_REMOVE(&alwait, r, entry);
			for (uint32_t e = r->ext_lo; e <= r->ext_hi; e++)
				m->ext_pinned[e]--;
			r->local_done = 1;
			r->lerr = EIO;
			req_maybe_done(r);
		}
		return;
	}
	meta_written(m);
	m->al_gen_disk = metagen;
	bm_gen_disk = metabmgen;
	al_commits++;
	TAILQ_FOREACH_SAFE(r, &bmwait, entry, tmp) {
		if (r->need_bm > bm_gen_disk)
			continue;
		TAILQ_REMOVE(&bmwait, r, entry);
		req_maybe_done(r);
	}
	TAILQ_FOREACH_SAFE(r, &alwait, entry, tmp) {
		if (r->need_gen > m->al_gen_disk)
			continue;
		TAILQ_REMOVE(&alwait, r, entry);
		submit_chunk(r);
	}
	al_commit();
}

/* al_commit: write the metadata if it changed and no write is under way. */
static void
al_commit(void)
{
	meta_commit();
}

/*
 * read_cached: serve a read from the page cache in the loop when that
 * cannot block (RWF_NOWAIT); anything else goes to the I/O pool.
 */
static int
read_cached(struct nbd_req *r)
{
	static int	unsupported;
	struct iovec	iov = { r->buf, r->len };
	ssize_t		n;

	if (unsupported)
		return 0;
	n = preadv2(devfd, &iov, 1, r->offset, RWF_NOWAIT);
	if (n == -1 && errno == EOPNOTSUPP)
		unsupported = 1;
	return n == (ssize_t)r->len;
}

static void
submit(struct nbd_req *r, void *arg)
{
	(void)arg;
	r->acks = 0;
	r->local_done = r->lerr = r->repl = 0;
	r->need_bm = 0;
	r->early_ok = npeers == 0;
	if (primary && npeers > 0 && !have_quorum()) {
		if (qmode == Q_SUSPEND) {
			TAILQ_INSERT_TAIL(&held, r, entry);
			nheld++;
			return;
		}
		nbd_req_done(r, EIO);
		return;
	}
	disk_inflight++;
	switch (r->type) {
	case NBD_CMD_READ:
		if (r->len == 0 || read_cached(r))
			break;
		r->job.work = work_read;
		r->job.done = done_simple;
		r->job.slow = 1;	/* not in the page cache */
		ioq_submit(ioq, &r->job);
		return;
	case NBD_CMD_FLUSH:
		/* The peers flush while we do; dirty bitmaps go first. */
		if (primary && npeers > 0)
			repl_flush(r);
		r->job.work = work_flush;
		r->job.done = done_flush;
		r->job.slow = 1;
		ioq_submit(ioq, &r->job);
		return;
	default:
		if (r->len == 0)
			break;
		r->cur = r->offset;
		r->end = r->offset + r->len;
		r->state = W_NEW;
		TAILQ_INSERT_TAIL(&wlist, r, wentry);
		if (blocked(r)) {
			r->state = W_OVERLAP;
			noverlap++;
			update_eager();
			return;
		}
		repl_write(r);
		start_chunk(r);
		update_eager();
		return;
	}
	disk_inflight--;
	nbd_req_done(r, 0);
}

/* After each batch of completions: send the replies in one go. */
static void
batch_done(void *arg)
{
	(void)arg;
	nbd_server_flush(srv);
}

/* --- peers and replication ----------------------------------------- */

/*
 * Each node listens for its peers and connects to those whose name sorts
 * after its own, so that a pair has exactly one link.  After the link's
 * own handshake both ends send HELLO; each decides with gi_decide() what
 * the pair's data is to each other.  On the primary a write goes to every
 * live peer: the reply waits for each sync peer's ACK, never for an async
 * peer, whose stream is cut into epochs at each FLUSH.
 */
static void
peer_flags_changed(void)
{
	struct peer	*p;
	unsigned char	 b[REPL_STATE_SIZE];

	uint32_t	 f;

	/* Only changes: two secondaries must not echo each other. */
	TAILQ_FOREACH(p, &peers, entry) {
		if (p->link == NULL || !p->hello ||
		    (f = my_flags(p)) == p->sent_flags)
			continue;
		p->sent_flags = f;
		link_send(p->link, REPL_STATE, b, repl_state_enc(b, f));
	}
}

static uint32_t
my_flags(struct peer *to)
{
	struct peer	*p;
	uint32_t	 f = 0;

	if (primary)
		f |= REPL_F_PRIMARY;
	if (crashed)
		f |= REPL_F_CRASHED;
	TAILQ_FOREACH(p, &peers, entry)
		if (p != to && p->link != NULL && p->hello &&
		    (p->flags & REPL_F_PRIMARY))
			f |= REPL_F_PEER_PRIMARY;
	return f;
}

/* Peers that count: connected, past HELLO, data related. */
static int
peer_counts(struct peer *p)
{
	return p->link != NULL && p->hello && p->st != PS_SPLIT &&
	    p->st != PS_UNRELATED;
}

static int
have_quorum(void)
{
	struct peer	*p;
	int		 n = 1;

	if (qmode == Q_OFF || forced)
		return 1;
	TAILQ_FOREACH(p, &peers, entry)
		n += peer_counts(p);
	return 2 * n > npeers + 1;
}

static int
nodes_up(void)
{
	struct peer	*p;
	int		 n = 1;

	TAILQ_FOREACH(p, &peers, entry)
		n += peer_counts(p);
	return n;
}

/* Mark [off, off + len) out of sync for peer p; returns 1 if it changed. */
static int
mark_oos(struct peer *p, uint64_t off, uint64_t len)
{
	struct meta_peer *mp = &m->peer[p->slot];
	uint64_t	 b, last;
	int		 changed = 0;

	if (len == 0)
		return 0;
	last = (off + len - 1) / META_BLOCK;
	for (b = off / META_BLOCK; b <= last && b < m->nbits; b++) {
		if (mp->bm[b / 8] & (1 << (b % 8)))
			continue;
		mp->bm[b / 8] |= 1 << (b % 8);
		mp->oos_blocks++;
		changed = 1;
	}
	if (changed) {
		mp->bm_dirty = 1;
		bm_gen++;
	}
	return changed;
}

static void
send_gi(void)
{
	struct peer	*p;
	unsigned char	 b[REPL_GI_SIZE];
	uint64_t	 h[GI_HISTORY] = { m->gi_history[0], m->gi_history[1] };

	TAILQ_FOREACH(p, &peers, entry)
		if (p->link != NULL && p->hello && p->st == PS_UPTODATE)
			link_send(p->link, REPL_GI, b,
			    repl_gi_enc(b, m->gi_current, h));
}

static void
set_gi(uint64_t cur, const uint64_t *hist)
{
	m->gi_current = cur;
	m->gi_history[0] = hist[0];
	m->gi_history[1] = hist[1];
	bm_gen++;
	gi_need = bm_gen;
	meta_commit();
}

/*
 * A primary that goes on without peer p: the old current GI becomes p's
 * bitmap GI and a new one names the data from now on.  Writes are held
 * until that is on disk.
 */
static void
gi_rotate(struct peer *p)
{
	struct meta_peer *mp = &m->peer[p->slot];
	uint64_t	 h[GI_HISTORY] = { m->gi_history[0], m->gi_history[1] };

	if (mp->bitmap_gi != 0)
		return;
	mp->bitmap_gi = m->gi_current;
	gi_push_history(h, m->gi_current);
	set_gi(gi_random(), h);
	log_info("peer %s: new generation %016" PRIx64 ", bitmap from %016"
	    PRIx64, p->name, m->gi_current, mp->bitmap_gi);
	emit("generation", "peer=%s gi_current=%016" PRIx64
	    " bitmap_gi=%016" PRIx64, p->name, m->gi_current, mp->bitmap_gi);
	send_gi();
}

/*
 * meta_commit: write what changed in the metadata (activity log, header,
 * dirty bitmaps) in one job, unless one is under way.
 */
static void
meta_commit(void)
{
	int	p;

	if (metabusy || (m->al_gen == m->al_gen_disk &&
	    bm_gen == bm_gen_disk))
		return;
	metabm = 0;
	for (p = 0; p < META_PEERS; p++)
		if (m->peer[p].in_use && m->peer[p].bm_dirty) {
			bmoff[p] = meta_bm_stage(m, p, bmsnap[p]);
			metabm |= 1 << p;
		}
	meta_encode(m, metabuf, &metaoff);
	metagen = m->al_gen;
	metabmgen = bm_gen;
	metabusy = 1;
	metajob.work = work_meta;
	metajob.done = done_meta;
	metajob.slow = 1;
	ioq_submit(ioq, &metajob);
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

/* Is p to receive the primary's writes? */
static int
peer_live(struct peer *p)
{
	return p->link != NULL && p->hello && !(p->flags & REPL_F_PRIMARY) &&
	    (p->st == PS_UPTODATE || (p->st == PS_NEEDS_RESYNC && !p->async));
}

static void
pend_add(struct peer *p, uint64_t seq, struct nbd_req *r, uint64_t off,
    uint32_t len, int flush)
{
	struct pend	*pd;

	if ((pd = malloc(sizeof(*pd))) == NULL)
		fatal("malloc");
	pd->seq = seq;
	pd->r = r;
	pd->off = off;
	pd->len = len;
	pd->flush = flush;
	pd->t = now_usec();
	p->pend_bytes += len;
	TAILQ_INSERT_TAIL(&p->pend, pd, entry);
	if (r != NULL)
		r->acks++;
}

static void
pend_del(struct peer *p, struct pend *pd)
{
	TAILQ_REMOVE(&p->pend, pd, entry);
	p->pend_bytes -= pd->len;
	free(pd);
}

/*
 * The async queue is full: p falls back to bitmap tracking.  What it has
 * not acknowledged is marked out of sync, the link closed: the DR copy
 * stays at its last complete epoch.
 */
static void
peer_overflow(struct peer *p, struct nbd_req *r)
{
	log_warnx("peer %s: queue over %" PRIu64 " bytes; tracking its "
	    "blocks in the bitmap", p->name, qmax);
	emit("overflow", "peer=%s queued=%zu", p->name,
	    link_queued_bytes(p->link));
	p->overflows++;
	snprintf(p->last_error, sizeof(p->last_error), "queue overflow");
	link_close(p->link, "queue overflow: falling back to the bitmap");
	peer_down(p, "queue overflow");
	p->st = PS_BEHIND;
	if (gi_need > bm_gen_disk)
		r->need_bm = gi_need;
}

/* Send one write-type request to every live peer; mark it for others. */
static void
repl_write(struct nbd_req *r)
{
	struct peer	*p;
	struct repl_data d;
	unsigned char	*b;
	uint64_t	 off;
	uint32_t	 n;

	r->repl = 1;
	TAILQ_FOREACH(p, &peers, entry) {
		if (p->async && peer_live(p) && link_queued_bytes(p->link) +
		    r->len > qmax)
			peer_overflow(p, r);
		if (!peer_live(p)) {
			if (p->st == PS_SPLIT || p->st == PS_UNRELATED ||
			    !(m->peer[p->slot].bitmap_gi == 0))
				;
			else
				gi_rotate(p);
			mark_oos(p, r->offset, r->len);
			if (gi_need > bm_gen_disk)
				r->need_bm = gi_need;
			continue;
		}
		if (p->st != PS_UPTODATE)
			mark_oos(p, r->offset, r->len);
		for (off = r->offset; off < r->offset + r->len; off += n) {
			n = r->offset + r->len - off;
			if (n > REPL_CHUNK)
				n = REPL_CHUNK;
			d.seq = ++p->seq;
			d.epoch = p->epoch;
			d.offset = off;
			d.len = n;
			d.cmd = r->type;
			d.flags = (p->async ? REPL_D_ASYNC : 0) |
			    ((r->flags & NBD_CMD_FLAG_FUA) ? REPL_D_FUA : 0);
			b = link_msg_buf(p->link);
			repl_data_enc(b, &d);
			if (r->type == NBD_CMD_WRITE)
				memcpy(b + REPL_DATA_HDR, r->buf +
				    (off - r->offset), n);
			if (link_send_buf(p->link, REPL_DATA, REPL_DATA_HDR +
			    (r->type == NBD_CMD_WRITE ? n : 0)) == -1) {
				log_warn("peer %s: send", p->name);
				mark_oos(p, off, r->offset + r->len - off);
				break;
			}
			pend_add(p, d.seq, p->async ? NULL : r, off, n, 0);
		}
	}
}

static void
repl_flush(struct nbd_req *r)
{
	struct peer	*p;
	struct repl_flush f;
	unsigned char	 b[REPL_FLUSH_SIZE];

	r->repl = 1;
	TAILQ_FOREACH(p, &peers, entry) {
		if (!peer_live(p))
			continue;
		f.seq = ++p->seq;
		f.epoch = p->epoch++;
		f.flags = p->async ? REPL_D_ASYNC : 0;
		if (link_send(p->link, REPL_FLUSH, b, repl_flush_enc(b, &f))
		    == -1)
			continue;
		pend_add(p, f.seq, p->async ? NULL : r, 0, 0, 1);
	}
	if (bm_gen > bm_gen_disk) {
		r->need_bm = bm_gen;
		meta_commit();
	}
}

/* A request's local part, ACKs and metadata are in: maybe answer it. */
static void
req_maybe_done(struct nbd_req *r)
{
	if (!r->local_done || r->acks > 0)
		return;
	if (r->need_bm > bm_gen_disk) {
		TAILQ_INSERT_TAIL(&bmwait, r, entry);
		meta_commit();
		return;
	}
	if (r->repl && primary && r->lerr == 0 && !have_quorum()) {
		if (qmode == Q_SUSPEND) {
			TAILQ_INSERT_TAIL(&susp, r, entry);
			nsusp++;
			return;
		}
		r->lerr = EIO;
	}
	if (r->type == NBD_CMD_FLUSH) {
		disk_inflight--;
		if (r->lerr != 0)
			io_error(r, r->lerr);
		nbd_req_done(r, r->lerr);
	} else
		finish_write(r, r->lerr);
}

static void
quorum_check(void)
{
	struct nbd_req	*r;
	struct reqq	 q;
	int		 qu = have_quorum();

	if (qu != had_quorum) {
		had_quorum = qu;
		log_info("quorum %s (%d of %d nodes)", qu ? "gained" : "lost",
		    nodes_up(), npeers + 1);
		emit("quorum", "quorum=%d nodes=%d of=%d", qu, nodes_up(),
		    npeers + 1);
	}
	if (!qu)
		return;
	TAILQ_INIT(&q);
	TAILQ_CONCAT(&q, &susp, entry);
	while ((r = TAILQ_FIRST(&q)) != NULL) {
		TAILQ_REMOVE(&q, r, entry);
		nsusp--;
		req_maybe_done(r);
	}
	release_held();
}

static void
release_held(void)
{
	struct nbd_req	*r;
	struct reqq	 q;

	TAILQ_INIT(&q);
	TAILQ_CONCAT(&q, &held, entry);
	nheld = 0;
	while ((r = TAILQ_FIRST(&q)) != NULL) {
		TAILQ_REMOVE(&q, r, entry);
		submit(r, NULL);
	}
}

/* The link to p is gone (or cut by us): what was in flight is marked. */
static void
peer_down(struct peer *p, const char *reason)
{
	struct pend	*pd;
	struct nbd_req	*r;
	struct reqq	 again;
	int		 was = p->hello, insync = p->st == PS_UPTODATE;

	TAILQ_INIT(&again);
	p->link = NULL;
	p->hello = 0;
	p->flags = 0;
	p->gen++;
	if (primary && insync && was)
		gi_rotate(p);
	while ((pd = TAILQ_FIRST(&p->pend)) != NULL) {
		if (!pd->flush && primary)
			mark_oos(p, pd->off, pd->len);
		if ((r = pd->r) != NULL) {
			r->acks--;
			if (r->acks == 0 && r->local_done)
				TAILQ_INSERT_TAIL(&again, r, entry);
		}
		pend_del(p, pd);
	}
	if (p->st != PS_BEHIND || !primary)
		p->st = PS_DOWN;
	if (!primary && jfd != -1 && (jbpeer == p || jend > jbound))
		journal_cut();
	if (was) {
		log_info("peer %s: disconnected: %s", p->name, reason);
		emit("peer-disconnect", "peer=%s reason=\"%s\"", p->name,
		    reason);
	}
	while ((r = TAILQ_FIRST(&again)) != NULL) {
		TAILQ_REMOVE(&again, r, entry);
		if (bm_gen > bm_gen_disk)
			r->need_bm = bm_gen;
		req_maybe_done(r);
	}
	meta_commit();
	quorum_check();
	peer_flags_changed();
}

static void
send_hello(struct peer *p)
{
	struct repl_hello h;
	unsigned char	 b[REPL_HELLO_SIZE];

	memset(&h, 0, sizeof(h));
	h.version = REPL_VERSION;
	h.size = m->size;
	h.flags = p->sent_flags = my_flags(p);
	h.current = m->gi_current;
	h.bitmap = m->peer[p->slot].bitmap_gi;
	h.history[0] = m->gi_history[0];
	h.history[1] = m->gi_history[1];
	h.promoted_at = m->promoted_at;
	h.oos_blocks = m->peer[p->slot].oos_blocks;
	link_send(p->link, REPL_HELLO, b, repl_hello_enc(b, &h));
}

static void
on_hello(struct peer *p, const struct repl_hello *h)
{
	struct gi_view		 self, peer;
	struct gi_decision	 d;
	static const enum pstate map[] = { PS_UPTODATE, PS_NEEDS_RESYNC,
	    PS_SYNC_TARGET, PS_SPLIT, PS_UNRELATED };

	if (h->version != REPL_VERSION || h->size != m->size) {
		snprintf(p->last_error, sizeof(p->last_error), "%s",
		    h->version != REPL_VERSION ? "protocol version differs" :
		    "size differs");
		log_warnx("peer %s: %s", p->name, p->last_error);
		link_close(p->link, p->last_error);
		return;
	}
	memset(&self, 0, sizeof(self));
	memset(&peer, 0, sizeof(peer));
	snprintf(self.name, sizeof(self.name), "%s", m->node);
	self.current = m->gi_current;
	self.bitmap = m->peer[p->slot].bitmap_gi;
	self.history[0] = m->gi_history[0];
	self.history[1] = m->gi_history[1];
	self.crashed_primary = crashed;
	self.primary = primary;
	self.promoted_at = m->promoted_at;
	self.changes = m->peer[p->slot].oos_blocks;
	snprintf(peer.name, sizeof(peer.name), "%s", p->name);
	peer.current = h->current;
	peer.bitmap = h->bitmap;
	memcpy(peer.history, h->history, sizeof(peer.history));
	peer.crashed_primary = (h->flags & REPL_F_CRASHED) != 0;
	peer.primary = (h->flags & REPL_F_PRIMARY) != 0;
	peer.promoted_at = h->promoted_at;
	peer.changes = h->oos_blocks;
	gi_decide(&self, &peer, &d);
	p->flags = h->flags;
	p->hello = 1;
	p->st = map[d.verdict];
	p->last_error[0] = '\0';
	if (p->st == PS_UPTODATE) {
		m->peer[p->slot].bitmap_gi = 0;
		bm_gen++;
		meta_commit();
	}
	log_info("peer %s: connected: %s (%s)", p->name,
	    gi_verdict_name(d.verdict), d.why);
	emit("peer-connect", "peer=%s mode=%s", p->name,
	    p->async ? "async" : "sync");
	emit("verdict", "peer=%s verdict=%s state=%s why=\"%s\"", p->name,
	    gi_verdict_name(d.verdict), pstate_names[p->st], d.why);
	if (p->st == PS_SPLIT)
		emit("split-brain", "peer=%s", p->name);
	quorum_check();
	peer_flags_changed();
}

static void
on_ready(struct link *l, const char *name)
{
	struct peer	*p = link_arg(l);

	if (p == NULL) {
		/* Accepted: only a configured peer that connects to us. */
		if ((p = peer_find(name)) == NULL ||
		    strcmp(name, m->node) >= 0) {
			log_warnx("peer link from %s: unexpected node %s",
			    link_peer_addr(l), name);
			link_close(l, "unexpected node name");
			return;
		}
		if (p->link != NULL) {
			link_close(l, "already connected");
			return;
		}
		link_set_arg(l, p);
	}
	p->link = l;
	p->hello = 0;
	p->st = PS_HELLO;
	send_hello(p);
}

static void
on_close(struct link *l, const char *reason)
{
	struct peer	*p = link_arg(l);
	int		 up = p != NULL && p->link == l;

	if (up)
		peer_down(p, reason);
	if (p != NULL && reason != NULL && *reason != '\0' &&
	    strcmp(p->last_error, "queue overflow") != 0)
		snprintf(p->last_error, sizeof(p->last_error), "%s", reason);
	if (!up && reason != NULL && *reason != '\0')
		log_warnx("peer link %s%s%s: %s", p ? p->name : "",
		    p ? " " : "", link_peer_addr(l), reason);
	if (p == NULL || p->lc == NULL)
		link_free(l);
}

/* --- the secondary's side ------------------------------------------ */

struct rjob {
	struct ioq_job	 job;
	struct rjob	*next;		/* free list */
	struct peer	*p;
	uint64_t	 gen, seq, off;
	uint32_t	 len, cap;
	uint16_t	 cmd, flags;
	unsigned char	 data[];
};

/*
 * Jobs are kept for reuse in two sizes, like the NBD buffers: fresh
 * memory for each replicated megabyte costs page faults.
 */
#define RJOB_SMALL	65536
#define RJOB_KEEP	32
static struct rjob	*rjfree[2];
static unsigned int	 nrjfree[2];

static struct rjob *
rjob_get(size_t n)
{
	struct rjob	*rj;
	uint32_t	 cap = n <= RJOB_SMALL ? RJOB_SMALL : REPL_CHUNK;
	int		 k = cap != RJOB_SMALL;

	if (n > cap)
		cap = n;	/* not from a peer: REPL_CHUNK is the most */
	if (cap <= REPL_CHUNK && (rj = rjfree[k]) != NULL) {
		rjfree[k] = rj->next;
		nrjfree[k]--;
		return rj;
	}
	if ((rj = malloc(sizeof(*rj) + cap)) == NULL)
		fatal("malloc");
	rj->cap = cap;
	return rj;
}

static void
rjob_put(struct rjob *rj)
{
	int	k = rj->cap != RJOB_SMALL;

	if (rj->cap > REPL_CHUNK || nrjfree[k] >= RJOB_KEEP) {
		free(rj);
		return;
	}
	rj->next = rjfree[k];
	rjfree[k] = rj;
	nrjfree[k]++;
}

static void
work_rjob(struct ioq_job *j)
{
	struct rjob	*rj = (struct rjob *)(void *)j;

	if (rj->cmd == NBD_CMD_FLUSH)
		j->err = fdatasync(devfd) == -1 ? errno : 0;
	else
		j->err = apply(rj->cmd, rj->off, rj->len, rj->data,
		    rj->flags & REPL_D_FUA);
}

static void
done_rjob(struct ioq_job *j)
{
	struct rjob	*rj = (struct rjob *)(void *)j;
	unsigned char	 b[REPL_ACK_SIZE];

	disk_inflight--;
	if (rj->p->gen == rj->gen && rj->p->link != NULL)
		link_send(rj->p->link, REPL_ACK, b,
		    repl_ack_enc(b, rj->seq, j->err));
	rjob_put(rj);
}

static void
rjob_submit(struct peer *p, uint64_t seq, uint16_t cmd, uint64_t off,
    uint32_t len, uint16_t flags, const unsigned char *data)
{
	struct rjob	*rj;
	size_t		 n = data != NULL ? len : 0;
	unsigned char	 b[REPL_ACK_SIZE];
	struct ioq_clock c;
	int		 e;

	if (cmd == NBD_CMD_WRITE && !(flags & REPL_D_FUA) && n <= RJOB_SMALL &&
	    ioq_inline_ok(ioq)) {
		/*
		 * A small buffered write costs less than the hand-off to a
		 * worker and back: write it here and acknowledge at once.
		 */
		ioq_inline_start(&c);
		e = apply(cmd, off, len, data, 0);
		ioq_inline_took(ioq, &c);
		link_send(p->link, REPL_ACK, b, repl_ack_enc(b, seq, e));
		return;
	}
	rj = rjob_get(n);
	rj->p = p;
	rj->gen = p->gen;
	rj->seq = seq;
	rj->cmd = cmd;
	rj->off = off;
	rj->len = len;
	rj->flags = flags;
	if (n)
		memcpy(rj->data, data, n);
	rj->job.work = work_rjob;
	rj->job.done = done_rjob;
	rj->job.slow = 1;
	disk_inflight++;
	ioq_submit(ioq, &rj->job);
}

/*
 * The DR node's journal: a header block, then records (offset, length,
 * command; the data of a write), written as they come.  A FLUSH marks an
 * epoch boundary.  A commit, at most every J_DELAY_USEC or when much is
 * waiting, covers every complete epoch [jstart, jbound): it writes the
 * header (magic, epoch, start, end, a BLAKE2b hash over those records)
 * and syncs: the commit point.  Then the records are applied, the store
 * synced, and the header's magic cleared, which needs no sync: applying
 * again is harmless.  The records of an epoch not yet complete stay
 * after jbound for the next commit.  A header found at start whose hash
 * matches is applied again; anything else never completed and is
 * ignored.  The file keeps its blocks, so that a commit costs two syncs
 * and no file system metadata.
 */
#define J_HDR		4096
#define J_REC		16	/* offset 8, length 4, command 2, pad 2 */
#define J_COMMIT	(8 + 8 + 8 + 8 + 32)
#define J_DELAY_USEC	20000
#define J_EAGER		(64ULL << 20)	/* commit at once beyond this */
static const char	 j_magic[8] = "HTJCOMT2";

static void
j_add(const void *b, size_t n)
{
	if (jerr == 0 && meta_pwrite(jfd, b, n, jend) == -1)
		jerr = errno;
	jend += n;
}

static void
journal_append(const struct repl_data *d)
{
	unsigned char	 h[J_REC] = { 0 };
	int		 i;

	for (i = 0; i < 8; i++)
		h[i] = d->offset >> (8 * i);
	for (i = 0; i < 4; i++)
		h[8 + i] = d->len >> (8 * i);
	h[12] = d->cmd;
	j_add(h, sizeof(h));
	if (d->cmd == NBD_CMD_WRITE)
		j_add(d->data, d->len);
	jrecs++;
}

/* BLAKE2b over [start, end) of the journal; 0 or an errno. */
static int
journal_hash(uint64_t start, uint64_t end, unsigned char *out)
{
	crypto_generichash_state st;
	unsigned char	 buf[65536];
	uint64_t	 pos;
	ssize_t		 n;

	crypto_generichash_init(&st, NULL, 0, 32);
	for (pos = start; pos < end; pos += n) {
		n = end - pos < sizeof(buf) ? end - pos : sizeof(buf);
		if ((n = pread(jfd, buf, n, pos)) <= 0)
			return n == 0 ? EIO : errno;
		crypto_generichash_update(&st, buf, n);
	}
	crypto_generichash_final(&st, out, 32);
	return 0;
}

/* Apply the records in [start, end), sync, and mark them done. */
static int
journal_apply(uint64_t start, uint64_t end)
{
	unsigned char	 h[J_REC], *buf;
	uint64_t	 pos = start, off;
	uint32_t	 len;
	int		 i, e = 0;

	if ((buf = malloc(REPL_CHUNK)) == NULL)
		return ENOMEM;
	while (e == 0 && pos + J_REC <= end) {
		if (pread(jfd, h, J_REC, pos) != J_REC) {
			e = EIO;
			break;
		}
		for (off = 0, i = 7; i >= 0; i--)
			off = off << 8 | h[i];
		for (len = 0, i = 3; i >= 0; i--)
			len = len << 8 | h[8 + i];
		pos += J_REC;
		if (len > REPL_CHUNK || off > m->size || len > m->size - off) {
			e = EINVAL;
			break;
		}
		if (h[12] == NBD_CMD_WRITE) {
			if (pread(jfd, buf, len, pos) != (ssize_t)len) {
				e = EIO;
				break;
			}
			pos += len;
		}
		e = apply(h[12], off, len, buf, 0);
	}
	free(buf);
	if (e == 0 && fdatasync(devfd) == -1)
		e = errno;
	if (e == 0 && meta_pwrite(jfd, zeroes, 8, 0) == -1)
		e = errno;
	return e;
}

/* Commit and apply every complete epoch, then ACK the last FLUSH. */
static void
journal_commit(void)
{
	unsigned char	 c[J_COMMIT], b[REPL_ACK_SIZE];
	int		 i, e = 0;

	if (jtimer != NULL)
		evtimer_del(jtimer);
	if (jbflushes == 0)
		return;
	if (jbound > jstart) {
		memcpy(c, j_magic, 8);
		for (i = 0; i < 8; i++) {
			c[8 + i] = jbepoch >> (8 * i);
			c[16 + i] = jstart >> (8 * i);
			c[24 + i] = jbound >> (8 * i);
		}
		e = jerr;
		if (e == 0)
			e = journal_hash(jstart, jbound, c + 32);
		if (e == 0 && meta_pwrite(jfd, c, J_COMMIT, 0) == -1)
			e = errno;
		if (e == 0 && fdatasync(jfd) == -1)
			e = errno;
		if (e == 0)
			e = journal_apply(jstart, jbound);
	}
	if (e != 0) {
		log_warnx("journal %s: %s", jpath, strerror(e));
		jerr = 0;
	} else
		epochs_applied += jbflushes;
	jstart = jbound;
	if (jstart == jend)
		jstart = jbound = jend = J_HDR;
	jbflushes = 0;
	if (jbpeer != NULL && jbpeer->gen == jbgen && jbpeer->link != NULL)
		link_send(jbpeer->link, REPL_ACK, b, repl_ack_enc(b, jbseq, e));
	jbpeer = NULL;
}

static void
journal_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	journal_commit();
}

/* A FLUSH from p ends an epoch: commit soon, or now if much waits. */
static void
journal_boundary(struct peer *p, const struct repl_flush *f)
{
	struct timeval	tv = { 0, J_DELAY_USEC };

	if (jbflushes > 0 && jbpeer != p)
		journal_commit();
	jbound = jend;
	jbseq = f->seq;
	jbepoch = f->epoch;
	jbpeer = p;
	jbgen = p->gen;
	jbflushes++;
	if (jbound - jstart > J_EAGER)
		journal_commit();
	else if (!evtimer_pending(jtimer, NULL))
		evtimer_add(jtimer, &tv);
}

/* The DR stream ended: keep the complete epochs, drop the rest. */
static void
journal_cut(void)
{
	journal_commit();
	jstart = jbound = jend = J_HDR;
}

static void
journal_reset(void)
{
	jstart = jbound = jend = J_HDR;
	jerr = 0;
	jrecs = 0;
	if (jtimer == NULL && (jtimer = evtimer_new(base, journal_tick,
	    NULL)) == NULL)
		fatalx("evtimer_new");
}

/* At start: finish a commit that made it to disk. */
static void
journal_recover(void)
{
	unsigned char	 c[J_COMMIT], h[32];
	struct stat	 sb;
	uint64_t	 start = 0, end = 0;
	int		 i, e;

	if (fstat(jfd, &sb) == -1)
		fatal("%s", jpath);
	journal_reset();
	if (sb.st_size < J_HDR || pread(jfd, c, J_COMMIT, 0) != J_COMMIT ||
	    memcmp(c, j_magic, 8) != 0)
		return;
	for (i = 7; i >= 0; i--) {
		start = start << 8 | c[16 + i];
		end = end << 8 | c[24 + i];
	}
	if (start < J_HDR || end < start || end > (uint64_t)sb.st_size ||
	    journal_hash(start, end, h) != 0 ||
	    sodium_memcmp(h, c + 32, 32) != 0) {
		log_info("%s: dropping an incomplete epoch", jpath);
		return;
	}
	log_info("%s: applying a committed epoch again", jpath);
	if ((e = journal_apply(start, end)) != 0)
		fatalx("%s: %s", jpath, strerror(e));
}

static void
on_message(struct link *l, unsigned type, const void *buf, size_t len)
{
	struct peer		*p = link_arg(l);
	struct repl_hello	 h;
	struct repl_data	 d;
	struct repl_flush	 f;
	struct pend		*pd, *tmp;
	uint64_t		 seq, cur, hist[GI_HISTORY];
	uint32_t		 e, fl;

	if (p == NULL || p->link != l)
		return;
	if (type != REPL_HELLO && !p->hello)
		goto bad;
	switch (type) {
	case REPL_HELLO:
		if (p->hello || repl_hello_dec(buf, len, &h) == -1)
			goto bad;
		on_hello(p, &h);
		return;
	case REPL_STATE:
		if (repl_state_dec(buf, len, &fl) == -1)
			goto bad;
		if ((fl ^ p->flags) & REPL_F_PRIMARY)
			emit("peer-role", "peer=%s role=%s", p->name,
			    fl & REPL_F_PRIMARY ? "primary" : "secondary");
		p->flags = fl;
		if (!primary)
			peer_flags_changed();
		return;
	case REPL_GI:
		if (repl_gi_dec(buf, len, &cur, hist) == -1)
			goto bad;
		if (!primary && (p->flags & REPL_F_PRIMARY) &&
		    p->st == PS_UPTODATE)
			set_gi(cur, hist);
		return;
	case REPL_DATA:
		if (repl_data_dec(buf, len, m->size, &d) == -1)
			goto bad;
		if (primary || p->st == PS_SPLIT || p->st == PS_UNRELATED)
			goto bad;
		if (d.flags & REPL_D_ASYNC) {
			journal_append(&d);
			return;
		}
		rjob_submit(p, d.seq, d.cmd, d.offset, d.len, d.flags,
		    d.data);
		return;
	case REPL_FLUSH:
		if (repl_flush_dec(buf, len, &f) == -1 || primary)
			goto bad;
		if (f.flags & REPL_D_ASYNC) {
			journal_boundary(p, &f);
			return;
		}
		rjob_submit(p, f.seq, NBD_CMD_FLUSH, 0, 0, 0, NULL);
		return;
	case REPL_ACK:
		if (repl_ack_dec(buf, len, &seq, &e) == -1)
			goto bad;
		TAILQ_FOREACH_SAFE(pd, &p->pend, entry, tmp) {
			if (p->async ? pd->seq > seq : pd->seq != seq)
				continue;
			if (e != 0 && !pd->flush)
				mark_oos(p, pd->off, pd->len);
			if (pd->r != NULL) {
				pd->r->acks--;
				if (e != 0 && pd->flush)
					pd->r->lerr = e;
				req_maybe_done(pd->r);
			}
			pend_del(p, pd);
			if (!p->async)
				break;
		}
		if (p->async)
			p->acked_usec = now_usec();
		nbd_server_flush(srv);	/* the replies this released */
		return;
	}
 bad:
	log_warnx("peer %s: bad message type %u, %zu bytes", p->name, type,
	    len);
	link_close(l, "bad message");
}

static void
peer_accept(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct link_opts	 o;
	struct link		*l;

	(void)lev;
	(void)sa;
	(void)salen;
	(void)arg;
	link_opts_init(&o);
	o.role = LINK_SERVER;
	o.key = key;
	o.name = m->node;
	o.zlevel = 0;
	o.queue_max = qmax + 64 * (size_t)REPL_CHUNK;
	link_nodelay(fd);
	if ((l = link_new(base, fd, -1, &o, &peer_cb, NULL)) == NULL) {
		log_warn("peer link");
		close(fd);
	}
}

/* --- roles, status, control socket --------------------------------- */

static void
set_role(int p)
{
	if (p == primary)
		return;
	primary = p;
	nbd_set_readonly(srv, !p);
	if (p) {
		m->flags |= META_F_PRIMARY;
		m->promoted_at = wall_usec();
	} else
		m->flags &= ~META_F_PRIMARY;
	m->al_gen++;	/* have the flag written */
	al_commit();
	log_info("role %s", p ? "primary" : "secondary");
	emit("role", "role=%s", p ? "primary" : "secondary");
	peer_flags_changed();
	quorum_check();
}

static const char *
disk_state(void)
{
	if (m->flags & META_F_UPTODATE)
		return "uptodate";
	if (m->flags & META_F_CONSISTENT)
		return "consistent";
	return "inconsistent";
}

static void
status(struct evbuffer *o)
{
	const struct nbd_stats	*st = nbd_server_stats(srv);
	struct peer		*pr;
	struct pend		*pd;
	uint64_t		 now = now_usec();

	evbuffer_add_printf(o, "node=%s\nrole=%s\ndisk=%s\nsize=%" PRIu64
	    "\nconnections=%u\nconnections_total=%" PRIu64 "\ninflight=%u\n",
	    m->node, primary ? "primary" : "secondary", disk_state(), m->size,
	    nbd_server_conns(srv), st->conns_total, disk_inflight);
	evbuffer_add_printf(o, "reads=%" PRIu64 "\nwrites=%" PRIu64
	    "\nflushes=%" PRIu64 "\ntrims=%" PRIu64 "\nzeroes=%" PRIu64
	    "\nread_bytes=%" PRIu64 "\nwritten_bytes=%" PRIu64
	    "\nerrors=%" PRIu64 "\n", st->reads, st->writes, st->flushes,
	    st->trims, st->zeroes, st->read_bytes, st->written_bytes,
	    st->errors);
	evbuffer_add_printf(o, "al_count=%" PRIu32 "\nal_limit=%" PRIu32
	    "\nal_commits=%" PRIu64 "\nmeta_errors=%" PRIu64
	    "\nresync_extents=%" PRIu32 "\ngi_current=%016" PRIx64
	    "\n", m->al_count, m->al_limit, al_commits,
	    meta_errors, m->al_unclean, m->gi_current);
	evbuffer_add_printf(o, "promoted_at=%" PRIu64 "\nquorum=%s\n"
	    "nodes=%d\ncluster_size=%d\nsuspended=%u\nepochs_applied=%"
	    PRIu64 "\npeers=%d\n", m->promoted_at, have_quorum() ? "yes" :
	    "no", nodes_up(), npeers + 1, nsusp + nheld, epochs_applied,
	    npeers);
	TAILQ_FOREACH(pr, &peers, entry) {
		struct meta_peer *mp = &m->peer[pr->slot];
		pd = TAILQ_FIRST(&pr->pend);
		evbuffer_add_printf(o, "peer.%s.mode=%s\npeer.%s.connected=%d"
		    "\npeer.%s.state=%s\npeer.%s.role=%s\n"
		    "peer.%s.bitmap_gi=%016" PRIx64 "\npeer.%s.oos_bytes=%"
		    PRIu64 "\n", pr->name, pr->async ? "async" : "sync",
		    pr->name, pr->link != NULL && pr->hello, pr->name,
		    pstate_names[pr->st], pr->name, pr->flags & REPL_F_PRIMARY ?
		    "primary" : "secondary", pr->name, mp->bitmap_gi, pr->name,
		    mp->oos_blocks * META_BLOCK);
		if (pr->async)
			evbuffer_add_printf(o, "peer.%s.lag_bytes=%" PRIu64
			    "\npeer.%s.lag_usec=%" PRIu64 "\npeer.%s."
			    "overflows=%" PRIu64 "\n", pr->name, pr->pend_bytes,
			    pr->name, pd != NULL ? now - pd->t : 0, pr->name,
			    pr->overflows);
		evbuffer_add_printf(o, "peer.%s.last_error=%s\n", pr->name,
		    pr->last_error);
	}
}

/* Why this node may not become primary now, if it may not. */
static int
promote_refused(struct evbuffer *out)
{
	struct peer	*p;

	TAILQ_FOREACH(p, &peers, entry) {
		if (p->link == NULL || !p->hello)
			continue;
		if (p->flags & (REPL_F_PRIMARY | REPL_F_PEER_PRIMARY)) {
			evbuffer_add_printf(out, "error: vetoed by %s (%s)\n",
			    p->name, p->flags & REPL_F_PRIMARY ? "primary" :
			    "connected to a primary");
			return 1;
		}
	}
	if (!have_quorum()) {
		evbuffer_add_printf(out, "error: no quorum (%d of %d nodes)\n",
		    nodes_up(), npeers + 1);
		return 1;
	}
	return 0;
}

static void
ctl_drop(struct ctlc *c)
{
	TAILQ_REMOVE(&ctls, c, entry);
	bufferevent_free(c->bev);
	free(c);
}

static void
ctl_read(struct bufferevent *bev, void *arg)
{
	struct ctlc	*c = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	struct evbuffer	*out = bufferevent_get_output(bev);
	char		*line;

	while ((line = evbuffer_readln(in, NULL, EVBUFFER_EOL_LF)) != NULL) {
		if (c->events) {
			free(line);
			continue;
		}
		if (strcmp(line, "status") == 0) {
			ioq_reap(ioq);	/* count what is answered */
			status(out);
			evbuffer_add_printf(out, "ok\n");
		} else if (strcmp(line, "events") == 0) {
			/* First where things stand, then the changes. */
			uint64_t t = wall_usec();
			c->events = 1;
			evbuffer_add_printf(out, "%" PRIu64 ".%06" PRIu64
			    " %s state role=%s disk=%s connections=%u seq=%"
			    PRIu64 "\n", t / 1000000, t % 1000000, m->node,
			    primary ? "primary" : "secondary", disk_state(),
			    nbd_server_conns(srv), evseq);
		} else if (strcmp(line, "primary") == 0 ||
		    strcmp(line, "primary --force") == 0 ||
		    strcmp(line, "primary -f") == 0) {
			if (!primary && strchr(line, '-') == NULL &&
			    promote_refused(out)) {
				free(line);
				continue;
			}
			if (!primary && strchr(line, '-') != NULL) {
				log_warnx("forced to primary: acknowledging "
				    "writes without quorum");
				forced = 1;
			}
			set_role(1);
			evbuffer_add_printf(out, "ok\n");
		} else if (strcmp(line, "secondary") == 0) {
			forced = 0;
			set_role(0);
			evbuffer_add_printf(out, "ok\n");
		} else
			evbuffer_add_printf(out, "error: unknown command: "
			    "%.64s\n", line);
		free(line);
	}
	if (evbuffer_get_length(in) > CTL_LINE_MAX) {
		log_warnx("control client: line too long, dropped");
		ctl_drop(c);
	}
}

static void
ctl_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		ctl_drop(arg);
}

static void
ctl_accept(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct ctlc	*c;

	(void)l;
	(void)sa;
	(void)salen;
	(void)arg;
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->bev = bufferevent_socket_new(base, fd,
	    BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		log_warn("control client");
		free(c);
		close(fd);
		return;
	}
	bufferevent_setcb(c->bev, ctl_read, NULL, ctl_event, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, CTL_LINE_MAX * 4);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	TAILQ_INSERT_TAIL(&ctls, c, entry);
}

/* --- start and stop ------------------------------------------------ */

/* Hand the last events to their readers before exiting. */
static void
ctl_drain(void)
{
	struct ctlc	*c;
	struct evbuffer	*o;
	char		 buf[4096];
	ssize_t		 n;
	int		 fd;

	TAILQ_FOREACH(c, &ctls, entry) {
		o = bufferevent_get_output(c->bev);
		fd = bufferevent_getfd(c->bev);
		/* The bufferevent froze the output's front; we exit next. */
		evbuffer_unfreeze(o, 1);
		while ((n = evbuffer_copyout(o, buf, sizeof(buf))) > 0) {
			if (write(fd, buf, n) != n)
				break;
			evbuffer_drain(o, n);
		}
	}
}

static void
finish(void)
{
	int	rv = EXIT_OK;

	if (fdatasync(devfd) == -1) {
		log_warn("%s", devpath);
		rv = EXIT_SYS;
	}
	if (jfd != -1)
		journal_commit();
	for (int p = 0; p < META_PEERS; p++)
		if (m->peer[p].in_use && m->peer[p].bm_dirty &&
		    meta_bm_flush(m, p) == -1) {
			log_warn("metadata %s", metapath);
			rv = EXIT_SYS;
		}
	if (rv == EXIT_OK && meta_errors == 0) {
		m->flags |= META_F_CLEAN;
		if (meta_sync(m) == -1) {
			log_warn("metadata %s", metapath);
			rv = EXIT_SYS;
		}
	}
	emit("stop", "clean=%d", rv == EXIT_OK);
	ctl_drain();
	log_info("stopped%s", rv == EXIT_OK ? "" : " uncleanly");
	exit(rv);
}

/* While stopping: once nothing is in flight and replies are out, end. */
static void
stop_tick(evutil_socket_t fd, short what, void *arg)
{
	struct timeval	tv = { 0, 20000 };

	(void)fd;
	(void)what;
	if (disk_inflight == 0 && !metabusy) {
		nbd_server_flush(srv);
		if (nbd_server_drained(srv) || now_usec() > stop_deadline)
			finish();
	} else if (now_usec() > stop_deadline + STOP_GRACE_USEC) {
		log_warnx("I/O still in flight; exiting with metadata "
		    "marked unclean");
		exit(EXIT_SYS);
	}
	evtimer_add((struct event *)arg, &tv);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	static struct event	*tick;
	struct ctlc		*c, *tmp;

	(void)what;
	(void)arg;
	if (stopping)
		return;
	stopping = 1;
	update_eager();
	log_info("signal %d: stopping", (int)sig);
	stop_deadline = now_usec() + STOP_GRACE_USEC;
	nbd_server_stop(srv);
	if (ctl_lev != NULL) {
		evconnlistener_free(ctl_lev);
		ctl_lev = NULL;
		unlink(ctlpath);
	}
	TAILQ_FOREACH_SAFE(c, &ctls, entry, tmp)
		if (!c->events)
			ctl_drop(c);
	tick = evtimer_new(base, stop_tick, NULL);
	event_assign(tick, base, -1, 0, stop_tick, tick);
	stop_tick(-1, 0, tick);
}

/* -P name=host:port,sync|async */
static void
peer_option(char *arg)
{
	struct peer	*p;
	char		*eq, *comma, *colon;

	if ((eq = strchr(arg, '=')) == NULL || (comma = strrchr(eq,
	    ',')) == NULL || (colon = strrchr(eq, ':')) == NULL ||
	    colon > comma || eq == arg || eq - arg > META_NAME_MAX)
		errx(EXIT_USAGE, "-P %s: not name=host:port,sync|async", arg);
	if ((p = calloc(1, sizeof(*p))) == NULL)
		err(EXIT_SYS, "calloc");
	memcpy(p->name, arg, eq - arg);
	if (strcmp(comma + 1, "async") == 0)
		p->async = 1;
	else if (strcmp(comma + 1, "sync") != 0)
		errx(EXIT_USAGE, "-P %s: mode is sync or async", arg);
	*comma = *colon = '\0';
	p->host = eq + 1;
	p->port = colon + 1;
	if (p->host[0] == '[' && p->host[strlen(p->host) - 1] == ']') {
		p->host++;
		p->host[strlen(p->host) - 1] = '\0';
	}
	if (peer_find(p->name) != NULL)
		errx(EXIT_USAGE, "-P %s: named twice", p->name);
	TAILQ_INIT(&p->pend);
	TAILQ_INSERT_TAIL(&peers, p, entry);
	if (++npeers > META_PEERS)
		errx(EXIT_USAGE, "-P: at most %d peers", META_PEERS);
}

/* Listen for peers, connect to those named after us, open the journal. */
static void
peers_start(const char *listen_at)
{
	struct link_opts	 o;
	struct addrinfo		 hints, *res;
	struct peer		*p;
	char			*copy, *host, *port;
	int			 fd, one = 1, rv;

	if (jpath == NULL && asprintf(&jpath, "%s.journal", metapath) == -1)
		fatal("asprintf");
	if ((jfd = open(jpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1)
		fatal("%s", jpath);
	journal_recover();
	had_quorum = have_quorum();
	if (listen_at != NULL) {
		if ((copy = strdup(listen_at)) == NULL)
			fatal("strdup");
		host = NULL;
		port = copy;
		if ((port = strrchr(copy, ':')) != NULL) {
			*port++ = '\0';
			host = copy;
			if (host[0] == '[') {
				host++;
				host[strlen(host) - 1] = '\0';
			}
		} else
			port = copy;
		memset(&hints, 0, sizeof(hints));
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE;
		if ((rv = getaddrinfo(host, port, &hints, &res)) != 0)
			fatalx("-L %s: %s", listen_at, gai_strerror(rv));
		if ((fd = socket(res->ai_family, res->ai_socktype |
		    SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) == -1 ||
		    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
		    sizeof(one)) == -1 ||
		    bind(fd, res->ai_addr, res->ai_addrlen) == -1 ||
		    listen(fd, 16) == -1)
			fatal("-L %s", listen_at);
		freeaddrinfo(res);
		free(copy);
		if ((peer_lev = evconnlistener_new(base, peer_accept, NULL,
		    LEV_OPT_CLOSE_ON_FREE, -1, fd)) == NULL)
			fatalx("peer listener");
	}
	TAILQ_FOREACH(p, &peers, entry) {
		if (strcmp(m->node, p->name) > 0)
			continue;	/* it connects to us */
		link_opts_init(&o);
		o.role = LINK_CLIENT;
		o.key = key;
		o.name = m->node;
		o.peer = p->name;
		o.zlevel = p->async ? LINK_ZLEVEL_DEFAULT : 0;
		/* zstd only when the link falls behind (see link.h) */
		o.zmin_queued = REPL_CHUNK;
		/* Nobody waits for an async peer: let writes leave together. */
		o.delay_usec = p->async ? ASYNC_DELAY_USEC : 0;
		o.queue_max = qmax + 64 * (size_t)REPL_CHUNK;
		if ((p->lc = link_client_new(base, p->host, p->port, &o,
		    &peer_cb, p, 50000, 2000000)) == NULL)
			fatal("peer %s", p->name);
	}
}

static int
cmd_init(int argc, char *argv[])
{
	const char	*meta = NULL, *node = NULL, *e;
	char		 errbuf[512];
	uint64_t	 size = 0, al = META_AL_DEFAULT, dsize;
	int		 ch, force = 0, fd;
	uint64_t	 gi = 0;
	char		*ep;
	struct meta	*md;

	while ((ch = getopt(argc, argv, "a:fg:m:n:")) != -1) {
		switch (ch) {
		case 'g':
			gi = strtoull(optarg, &ep, 16);
			if (*optarg == '\0' || *ep != '\0' || gi == 0)
				errx(EXIT_USAGE, "-g %s: not a generation "
				    "identifier", optarg);
			break;
		case 'a':
			if ((e = parse_size(optarg, &al)) != NULL)
				errx(EXIT_USAGE, "-a %s: %s", optarg, e);
			if (al < META_AL_MIN || al > META_AL_CAP)
				errx(EXIT_USAGE, "-a %s: not in %d..%d", optarg,
				    META_AL_MIN, META_AL_CAP);
			break;
		case 'f':
			force = 1;
			break;
		case 'm':
			meta = optarg;
			break;
		case 'n':
			node = optarg;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1 || argc > 2 || meta == NULL || node == NULL)
		usage();
	/* the size of the resource, when not the whole store */
	if (argc == 2) {
		if ((e = parse_size(argv[1], &size)) != NULL)
			errx(EXIT_USAGE, "size %s: %s", argv[1], e);
		if (size == 0)
			errx(EXIT_USAGE, "size %s: size is zero", argv[1]);
	}
	if (!force && access(meta, F_OK) == 0)
		errx(EXIT_USAGE, "%s: exists; init -f replaces it", meta);
	if ((fd = open(argv[0], O_RDONLY | O_CLOEXEC)) == -1 ||
	    store_size(fd, &dsize) == -1)
		err(EXIT_SYS, "%s", argv[0]);
	close(fd);
	if (size == 0)
		size = dsize;
	if (size == 0)
		errx(EXIT_USAGE, "%s: backing store is empty", argv[0]);
	if (dsize < size)
		errx(EXIT_USAGE, "%s: backing store has %" PRIu64 " bytes, "
		    "fewer than %" PRIu64, argv[0], dsize, size);
	if (meta_create(meta, node, size, al, force, errbuf,
	    sizeof(errbuf)) == -1)
		errx(strstr(errbuf, "node name") ? EXIT_USAGE : EXIT_SYS,
		    "%s", errbuf);
	if (gi != 0) {
		/* Nodes made from the same (empty) data share one. */
		if ((md = meta_load(meta, 1, errbuf, sizeof(errbuf))) == NULL)
			errx(EXIT_SYS, "%s", errbuf);
		md->gi_current = gi;
		if (meta_sync(md) == -1)
			err(EXIT_SYS, "%s", meta);
		meta_free(md);
	}
	return EXIT_OK;
}

static void
dump_line(void *arg, const char *line)
{
	(void)arg;
	printf("%s\n", line);
}

static int
cmd_dump(int argc, char *argv[])
{
	const char	*meta = NULL;
	struct meta	*md;
	char		 errbuf[512];
	int		 ch;

	while ((ch = getopt(argc, argv, "m:")) != -1) {
		switch (ch) {
		case 'm':
			meta = optarg;
			break;
		default:
			usage();
		}
	}
	if (argc != optind || meta == NULL)
		usage();
	if ((md = meta_load(meta, 0, errbuf, sizeof(errbuf))) == NULL)
		errx(EXIT_SYS, "%s", errbuf);
	if (md->warn[0] != '\0')
		warnx("%s: %s", meta, md->warn);
	meta_dump(md, dump_line, NULL);
	meta_free(md);
	if (fflush(stdout) == EOF || ferror(stdout))
		err(EXIT_SYS, "stdout");
	return EXIT_OK;
}

int
main(int argc, char *argv[])
{
	struct nbd_hooks	 hooks = { submit, nbd_note, nbd_poll, NULL };
	struct event		*ev;
	struct sigaction	 sa;
	const char		*nbdpath = NULL, *tcp = NULL, *keyfile = NULL;
	const char		*listen_at = NULL;
	struct peer		*pr;
	const char		*e;
	char			 errbuf[512];
	uint64_t		 v, dsize;
	int			 ch, rfd = -1, verbose = 0;
	int			 nthreads = IO_THREADS;
	int			 fd;

	if (argc > 1 && strcmp(argv[1], "init") == 0)
		return cmd_init(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "dump") == 0)
		return cmd_dump(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "ctl") == 0) {
		if (argc != 4)
			usage();
		return ctl_client(argv[2], argv[3]);
	}
	while ((ch = getopt(argc, argv, "c:d:J:j:k:L:l:m:n:P:pQ:q:t:v")) !=
	    -1) {
		switch (ch) {
		case 'c':
			ctlpath = optarg;
			break;
		case 'd':
			if ((e = parse_fd(optarg, &rfd)) != NULL)
				errx(EXIT_USAGE, "-d %s: %s", optarg, e);
			break;
		case 'j':
			if ((e = parse_size(optarg, &v)) != NULL)
				errx(EXIT_USAGE, "-j %s: %s", optarg, e);
			if (v < 1 || v > 128)
				errx(EXIT_USAGE, "-j %s: not in 1..128",
				    optarg);
			nthreads = v;
			break;
		case 'J':
			jpath = optarg;
			break;
		case 'k':
			keyfile = optarg;
			break;
		case 'L':
			listen_at = optarg;
			break;
		case 'P':
			peer_option(optarg);
			break;
		case 'Q':
			if ((e = parse_size(optarg, &qmax)) != NULL)
				errx(EXIT_USAGE, "-Q %s: %s", optarg, e);
			if (qmax < REPL_CHUNK)
				errx(EXIT_USAGE, "-Q %s: less than 1M", optarg);
			break;
		case 'q':
			if (strcmp(optarg, "suspend") == 0)
				qmode = Q_SUSPEND;
			else if (strcmp(optarg, "io-error") == 0)
				qmode = Q_IOERROR;
			else if (strcmp(optarg, "off") == 0)
				qmode = Q_OFF;
			else
				errx(EXIT_USAGE, "-q %s: not suspend, io-error "
				    "or off", optarg);
			break;
		case 'l':
			nbdpath = optarg;
			break;
		case 'm':
			metapath = optarg;
			break;
		case 'n':
			nodename = optarg;
			break;
		case 'p':
			primary = 1;
			break;
		case 't':
			tcp = optarg;
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
	if (argc != 1 || ctlpath == NULL || nbdpath == NULL ||
	    metapath == NULL || nodename == NULL)
		usage();
	devpath = argv[0];
	if (npeers > 0 && keyfile == NULL)
		errx(EXIT_USAGE, "peers need a cluster key (-k)");
	log_init("blkmirror", verbose);
	if (keyfile != NULL && (e = key_load(keyfile, key)) != NULL)
		fatalx("%s: %s", keyfile, e);
	if (sodium_init() == -1)
		fatalx("sodium_init");

	if ((devfd = open(devpath, O_RDWR | O_CLOEXEC)) == -1 ||
	    store_size(devfd, &dsize) == -1)
		fatal("%s", devpath);
	if ((m = meta_load(metapath, 1, errbuf, sizeof(errbuf))) == NULL)
		fatalx("%s", errbuf);
	if (m->warn[0] != '\0')
		log_warnx("%s: %s", metapath, m->warn);
	if (meta_check(m, metapath, nodename, dsize, errbuf,
	    sizeof(errbuf)) == -1) {
		log_warnx("%s", errbuf);
		exit(EXIT_USAGE);
	}
	crashed = !(m->flags & META_F_CLEAN) && (m->flags & META_F_PRIMARY);
	TAILQ_FOREACH(pr, &peers, entry) {
		if (strcmp(pr->name, m->node) == 0) {
			log_warnx("-P %s: that is this node", pr->name);
			exit(EXIT_USAGE);
		}
		if ((pr->slot = meta_peer_slot(m, pr->name)) == -1) {
			log_warnx("-P %s: no free peer slot", pr->name);
			exit(EXIT_USAGE);
		}
	}
	for (int p = 0; p < META_PEERS; p++)
		if ((bmsnap[p] = malloc(m->bm_bytes ? m->bm_bytes : 1)) ==
		    NULL)
			fatal("malloc");
	if (!(m->flags & META_F_CLEAN))
		log_warnx("%s: not shut down cleanly; %" PRIu32 " activity "
		    "log extents may differ from the peers", metapath,
		    m->al_unclean);
	/* From now on a crash must be visible in the metadata. */
	m->flags &= ~(META_F_CLEAN | META_F_PRIMARY);
	if (primary)
		m->flags |= META_F_PRIMARY;
	if (meta_sync(m) == -1)
		fatal("metadata %s", metapath);
	if ((metabuf = malloc(META_SLOT_SIZE)) == NULL)
		fatal("malloc");

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	if ((base = event_base_new()) == NULL)
		fatalx("event_base_new");
	if ((srv = nbd_server_new(base, m->size, m->node, &hooks)) == NULL)
		fatal("nbd server");
	nbd_set_readonly(srv, !primary);
	if ((ioq = ioq_new(base, nthreads, batch_done, NULL)) == NULL)
		fatal("I/O threads");
	if (nbd_listen_unix(srv, nbdpath) == -1)
		fatal("%s", nbdpath);
	if (tcp != NULL && nbd_listen_tcp(srv, tcp) == -1)
		fatal("-t %s", tcp);
	if ((fd = ctl_listen(ctlpath)) == -1)
		fatal("%s", ctlpath);
	if (npeers > 0)
		peers_start(listen_at);
	if ((ctl_lev = evconnlistener_new(base, ctl_accept, NULL,
	    LEV_OPT_CLOSE_ON_FREE, -1, fd)) == NULL)
		fatalx("control listener");
	ev = evsignal_new(base, SIGTERM, on_signal, NULL);
	event_add(ev, NULL);
	ev = evsignal_new(base, SIGINT, on_signal, NULL);
	event_add(ev, NULL);

	log_info("%s: %" PRIu64 " bytes, node %s, %s, serving %s%s%s",
	    devpath, m->size, m->node, primary ? "primary" : "secondary",
	    nbdpath, tcp ? " and " : "", tcp ? tcp : "");
	emit("start", "role=%s size=%" PRIu64, primary ? "primary" :
	    "secondary", m->size);
	ready_notify(rfd);
	event_base_dispatch(base);
	return EXIT_OK;
}

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
#include <sys/wait.h>

#include <linux/falloc.h>
#include <linux/fs.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
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
#include "fsrange.h"
#include "gi.h"
#include "hatrio.h"
#include "ioq.h"
#include "lathist.h"
#include "link.h"
#include "meta.h"
#include "nbd.h"
#include "repl.h"
#include "savefile.h"
#include "undo.h"

#define CHUNK_EXTENTS	16	/* AL extents one step of a request covers */
#define IO_THREADS	8
#define ASYNC_DELAY_USEC 2000	/* writes to an async peer wait so long */
#define STOP_GRACE_USEC	5000000
#define EVQ_MAX		(1 << 20)	/* output a slow "events" reader may
					   leave unread before it is dropped */
#define KA_INTERVAL	1000000		/* keepalive: a PING this often */
#define KA_DEAD		6000000		/* no byte from a peer this long:
					   the link is dead (-D) */
#define RS_MAX		256		/* resync requests at once */
#define RS_FLUSH_BYTES	(4u << 20)	/* resynced between target flushes */
#define RS_FLUSH_USEC	250000		/* ... and at most 4 a second */
#define RS_UNFL_MAX	(2 * RS_FLUSH_BYTES)	/* acknowledged, not durable:
						   no more is started */
#define RS_BUFS		64		/* resync buffers kept for reuse */
#define RS_THREADS	2		/* the resync target's I/O threads */

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

/* the store (see "diskless") */
enum { DL_NORMAL, DL_DISKLESS, DL_ATTACHING };

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
	/* resync (see "resync" below) */
	int			 bm_sent, bm_got;	/* bitmap exchange */
	int			 al_done;	/* our crash's AL sent to it */
	int			 rs_full, peer_empty;
	unsigned int		 rs_inflight;
	uint64_t		 rs_sent, rs_recv, rs_start_oos;
	uint64_t		 rs_start_usec, verify_diff;
	struct rng		*unfl;		/* acknowledged, not yet durable
						   on the target */
	size_t			 nunfl, unflcap, unfl_at_flush;
	uint64_t		 unfl_bytes, rs_flush_id, rs_flush_t;
	int			 rs_flushing;
	uint64_t		 ka_t, ka_bytes;	/* keepalive */
};

struct rng {
	uint64_t	 off;
	uint32_t	 len;
};

/* a resync request from the control socket (kind RS_*) */
enum { RS_DATA, RS_CSUM, RS_VERIFY };
static const char *rs_kinds[] = { "sync", "sync", "verify" };

struct rsreq {
	struct ioq_job		 job;
	TAILQ_ENTRY(rsreq)	 entry;
	struct peer		*p;
	struct ctlc		*c;		/* who asked; NULL once gone */
	uint64_t		 pgen, id, off, sent;
	uint32_t		 len, diff;
	int			 kind, acks, err, active, reading, zero;
	unsigned char		*buf;
	unsigned char		 hash[REPL_RS_BLOCKS * REPL_RS_HASH];
};
TAILQ_HEAD(rsqh, rsreq);

struct ctlc {
	TAILQ_ENTRY(ctlc)	 entry;
	struct bufferevent	*bev;
	int			 events;
	int			 skip;		/* in a line too long */
};

static struct event_base	*base;
static struct meta		*m;
static struct nbd_server	*srv;
static struct ioq		*ioq;
static struct ioq		*rsioq;
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
/*
 * Started with -p and peers: primary only once a quorum is there and no
 * peer vetoes (one primary, or connected to one, makes us secondary).
 */
static int			 start_pending;
static void			 sb_fail_waiting(void);
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
static struct undo		*undo;		/* see "the undo journal" */
static char			*upath;
static struct peer		*repairer;	/* see repair_begin */
static uint64_t			 repair_until, jb_total, jb_done;
static unsigned int		 rs_data_inflight;
static uint64_t			 jend, jrecs, epochs_applied;
static uint64_t			 jstart, jbound, jbseq, jbepoch, jbgen;
static unsigned int		 jbflushes;
static struct peer		*jbpeer;
static struct peer		*jsrc;		/* whose records are in it */
static struct event		*jtimer;
static struct evconnlistener	*peer_lev;
static struct rsqh		 rsq = TAILQ_HEAD_INITIALIZER(rsq);
static struct rsqh		 rswait = TAILQ_HEAD_INITIALIZER(rswait);
static unsigned int		 nrs;
static uint64_t			 rsid;
static unsigned char		*rsbufs[RS_BUFS];
static int			 nrsbufs;
static uint64_t			 wlat_ewma, wlat_n;
static uint64_t			 wlat_last;	/* now_usec of the last */
static uint64_t			 wlat_p99;	/* 1/256 us */
static struct lathist		 wlat_hist;
static uint64_t			 flush_seen;	/* the last FLUSH, now_usec */
static uint64_t			 ka_dead = KA_DEAD;
static int			 incons_pending;	/* incons_check */
static int			 rs_lost;	/* our resync source left */
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
static void	meta_released(void);
static void	meta_commit(void);
static void	submit(struct nbd_req *, void *);
static void	finish_write(struct nbd_req *, int);
static void	io_error(struct nbd_req *, int);
static void	peer_down(struct peer *, const char *);
static uint32_t	my_flags(struct peer *);
static void	incons_later(void);
static void	release_held(void);
static void	repl_write(struct nbd_req *);
static void	repl_flush(struct nbd_req *);
static void	req_maybe_done(struct nbd_req *);
static int	have_quorum(void);
static void	journal_cut(void);
static void	journal_commit(void);
static int	clear_oos(struct peer *, uint64_t, uint64_t);
static int	mark_oos(struct peer *, uint64_t, uint64_t);
static int	mark_slot(int, uint64_t, uint64_t);
static int	dl_io_failed(struct nbd_req *, int);
static void	dl_mark(struct nbd_req *);
static void	dl_detach_cmd(struct evbuffer *);
static void	dl_read_peer(struct nbd_req *);
static int	dl_hold(struct nbd_req *);
static int	dl_read(struct nbd_req *);
static int	dl_write(struct nbd_req *);
static int	dl_flush(struct nbd_req *);
static int	dl_blocks(struct nbd_req *);
static void	dl_retry(void);
static void	dl_peer_down(struct peer *);
static void	dl_pull_next(void);
static int	dl_keep_gi(struct peer *);
static const char *dl_disk_state(void);
static const char *disk_state(void);
static int	dl_message(struct peer *, unsigned, const void *, size_t);
static void	dl_attach(struct evbuffer *, const char *);
static void	dl_status(struct evbuffer *);
static int	dl_state;	/* DL_*, see "diskless" */
static void	rs_release(void);
static void	rs_take_all(struct peer *);
static void	rs_share(struct peer *);
static int	undo_mark_inconsistent(struct peer *);
static int	repair_begin(struct peer *);
static void	repair_later(void);
static void	rs_peer_down(struct peer *);
static void	rs_hello(struct peer *, const struct gi_decision *);
static void	rs_check(struct peer *);
static uint64_t	rs_stage(int, unsigned char *);
static int	rs_message(struct peer *, unsigned, const void *, size_t);
static void	rs_command(struct ctlc *, char *);
static void	rs_ctl_gone(struct ctlc *);
static void	rs_status(struct evbuffer *, struct peer *);
static void	rs_oos(struct evbuffer *, const char *);
static void	sb_sent(struct peer *, const struct repl_hello *);
static void	sb_hello(struct peer *, const struct gi_view *,
		    const struct gi_decision *);
static void	sb_ready(struct peer *);
static int	sb_message(struct peer *, const void *, size_t);
static void	sb_command(struct evbuffer *, const char *);
static void	sb_status(struct evbuffer *, struct peer *);
static void	sb_option(int, char *);
static void	sb_init(void);
static void	set_role(int);

static void
usage(void)
{
	fprintf(stderr,
	    "usage: blkmirror [-pv] [-A after-sb-Npri=policy] [-B savedir] "
	    "[-D deadtime]\n"
	    "                 [-d fd] [-e handler] [-J journal] [-j threads] "
	    "[-k keyfile]\n"
	    "                 [-L [host:]port] [-P name=host:port,mode] "
	    "[-Q size]\n"
	    "                 [-q policy] [-t [host:]port] -c ctlsock "
	    "-l nbdsock\n"
	    "                 -m meta -n node device\n"
	    "       blkmirror init [-Ef] [-a extents] [-g gi] [-J journal] "
	    "-m meta\n"
	    "                 -n node device [size]\n"
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

/* Read [off, off + len) of the store; past its end reads zeroes. */
static int
read_full(unsigned char *b, uint32_t len, uint64_t off)
{
	uint32_t	done = 0;
	ssize_t		n;

	while (done < len) {
		n = pread(devfd, b + done, len - done, off + done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return errno;
		if (n == 0) {
			memset(b + done, 0, len - done);
			break;
		}
		done += n;
	}
	return 0;
}

static void
work_read(struct ioq_job *j)
{
	struct nbd_req	*r = job_req(j);

	if ((j->err = read_full(r->buf, r->len, r->offset)) != 0)
		return;
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

/*
 * Where FLUSHes come often (a database's commits, fio --fsync=1), a write
 * is sent on to the disk as soon as it is in the page cache: the FLUSH
 * that follows then waits for the device's cache flush only, not for the
 * write too (about 100 instead of 160 us here), on the primary and on its
 * sync peer alike.  Advisory: the FLUSH reports any error.
 */
#define WB_EAGER_USEC	2000	/* since the last FLUSH */

static int
wb_eager(void)
{
	return flush_seen != 0 && now_usec() - flush_seen < WB_EAGER_USEC;
}

static void
start_writeback(uint64_t off, uint64_t len)
{
	(void)sync_file_range(devfd, off, len, SYNC_FILE_RANGE_WRITE);
}

/*
 * Write-back errors of the store.  The kernel tells such an error to the
 * first sync of the descriptor after it, and several parts of us sync
 * the store: the application's FLUSH and FUA (a primary's, or a peer's
 * on a secondary), the resync target's RS_FLUSH, the repair.  None may
 * lose an error to another that synced first: an RS_FLUSH that took the
 * error of a replicated write would leave the next FLUSH saying durable.
 * So each counts the errors it was told of, and a sync that succeeded
 * still fails while any of them saw an error it has not.  A new store
 * (attach) starts with none.
 */
enum { WB_APP, WB_RS, WB_REPAIR, WB_N };
static unsigned int	wb_errs, wb_seen[WB_N];	/* atomic: I/O threads */
static int		wb_errno;

/* A sync of the store for who ended with e (0 or an errno): the result. */
static int
store_synced(int who, int e)
{
	unsigned int	n;

	if (e != 0) {
		__atomic_store_n(&wb_errno, e, __ATOMIC_RELAXED);
		n = __atomic_add_fetch(&wb_errs, 1, __ATOMIC_SEQ_CST);
		__atomic_store_n(&wb_seen[who], n, __ATOMIC_SEQ_CST);
		return e;
	}
	n = __atomic_load_n(&wb_errs, __ATOMIC_SEQ_CST);
	if (__atomic_exchange_n(&wb_seen[who], n, __ATOMIC_SEQ_CST) != n)
		return __atomic_load_n(&wb_errno, __ATOMIC_RELAXED);
	return 0;
}

/* fdatasync of the store for who: 0 or an errno (see store_synced). */
static int
store_sync(int who)
{
	return store_synced(who, fdatasync(devfd) == -1 ? errno : 0);
}

/* A new store: the errors of the old one are not its own. */
static void
store_errors_forget(void)
{
	unsigned int	n = __atomic_load_n(&wb_errs, __ATOMIC_SEQ_CST);
	int		i;

	for (i = 0; i < WB_N; i++)
		__atomic_store_n(&wb_seen[i], n, __ATOMIC_SEQ_CST);
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
	    chunk_end(r) == r->end)
		j->err = store_sync(WB_APP);
	else if (j->err == 0 && r->wb)
		start_writeback(r->cur, chunk_end(r) - r->cur);
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
	j->err = store_sync(WB_APP);
	if (j->err == 0 && job_req(j)->early_ok)
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
	return fua ? store_sync(WB_APP) : 0;
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

	if (j->err != 0 && dl_io_failed(r, j->err))
		j->err = 0;	/* the peers flushed */
	r->local_done = 1;
	if (r->lerr == 0)	/* a sync peer's error may have come first */
		r->lerr = j->err;
	req_maybe_done(r);
}

static void
done_simple(struct ioq_job *j)
{
	struct nbd_req	*r = job_req(j);

	if (j->err != 0 && dl_io_failed(r, j->err)) {
		dl_read_peer(r);
		return;
	}
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

/*
 * Is an earlier write in wlist, or a resync request under way, overlapping
 * r?  (A resync block read before a write must reach the peer before it.)
 */
static int
blocked(struct nbd_req *r)
{
	struct nbd_req	*o;
	struct rsreq	*q;

	if (dl_blocks(r))
		return 1;
	TAILQ_FOREACH(q, &rsq, entry)
		if (r->offset < q->off + q->len && q->off < r->offset + r->len)
			return 1;
	TAILQ_FOREACH(o, &wlist, wentry) {
		if (o == r)
			return 0;
		if (overlaps(o, r))
			return 1;
	}
	return 0;
}

/*
 * An application write's latency: counted in a histogram, which resyncd's
 * dynamic rate reads ("latency"); for status, a moving average and a
 * running estimate of the 99th percentile, which a write above it raises
 * by a step and one below lowers by a 99th of that, so that it settles
 * where 1 write in 100 is above (the step is a 32nd of the estimate: it
 * follows within a second or so of writes).
 */
static void
lat_note(struct nbd_req *r)
{
	uint64_t	now = now_usec(), lat = now - r->t0, step;

	lathist_add(&wlat_hist, lat);
	wlat_last = now;
	if (wlat_n++ == 0) {
		wlat_ewma = lat;
		wlat_p99 = lat << 8;
		return;
	}
	wlat_ewma = wlat_ewma - wlat_ewma / 8 + lat / 8;
	step = wlat_p99 / 32 + 256;
	if (lat << 8 > wlat_p99)
		wlat_p99 += step;
	else
		wlat_p99 -= wlat_p99 > step / 99 ? step / 99 : wlat_p99;
}

/* Writes that waited for an overlapping one may go now. */
static void
retry_writes(void)
{
	struct nbd_req	*o, *tmp;

	if (noverlap > 0) {
		TAILQ_FOREACH_SAFE(o, &wlist, wentry, tmp) {
			if (o->state != W_OVERLAP || blocked(o))
				continue;
			noverlap--;
			o->state = W_NEW;
			if (dl_write(o))
				continue;
			repl_write(o);
			start_chunk(o);
		}
	}
}

static void
finish_write(struct nbd_req *r, int e)
{
	struct nbd_req	*o;
	struct reqq	 retry;

	TAILQ_REMOVE(&wlist, r, wentry);
	disk_inflight--;
	if (e != 0)
		io_error(r, e);
	lat_note(r);
	nbd_req_done(r, e);
	retry_writes();
	if (!TAILQ_EMPTY(&rswait))
		rs_release();
	dl_retry();
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
	if (j->err != 0 && dl_io_failed(r, j->err)) {
		j->err = 0;	/* the sync peer has it */
		r->cur = r->end;
	}
	if (j->err == 0 && r->cur < r->end) {
		start_chunk(r);
		return;
	}
	r->local_done = 1;
	if (r->lerr == 0)	/* a sync peer's error may have come first */
		r->lerr = j->err;
	req_maybe_done(r);
}

static void
submit_chunk(struct nbd_req *r)
{
	r->state = W_IO;
	/* Only while a sync peer's ACK is awaited: that hides it. */
	r->wb = r->type == NBD_CMD_WRITE && r->acks > 0 && wb_eager();
	r->job.work = work_write;
	r->job.done = done_write;
	r->job.slow = (r->flags & NBD_CMD_FLAG_FUA) ||
	    r->type != NBD_CMD_WRITE ||
	    r->len > 65536;
	dl_mark(r);
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
	meta_released();
	al_commit();
}

/* The metadata on disk caught up: requests that waited for it go on. */
static void
meta_released(void)
{
	struct nbd_req	*r, *tmp;

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
	r->t0 = now_usec();
	if (!primary && (r->type == NBD_CMD_WRITE || r->type == NBD_CMD_TRIM ||
	    r->type == NBD_CMD_WRITE_ZEROES)) {
		nbd_req_done(r, EPERM);	/* held while primary, then not */
		return;
	}
	if (primary && npeers > 0 && !have_quorum()) {
		if (qmode == Q_SUSPEND) {
			TAILQ_INSERT_TAIL(&held, r, entry);
			nheld++;
			return;
		}
		nbd_req_done(r, EIO);
		return;
	}
	if (dl_hold(r))
		return;
	disk_inflight++;
	switch (r->type) {
	case NBD_CMD_READ:
		if (dl_read(r))
			return;
		if (r->len == 0 || read_cached(r))
			break;
		r->job.work = work_read;
		r->job.done = done_simple;
		r->job.slow = 1;	/* not in the page cache */
		dl_mark(r);
		ioq_submit(ioq, &r->job);
		return;
	case NBD_CMD_FLUSH:
		flush_seen = now_usec();
		/* The peers flush while we do; dirty bitmaps go first. */
		if (primary && npeers > 0)
			repl_flush(r);
		if (dl_flush(r))
			return;
		r->job.work = work_flush;
		r->job.done = done_flush;
		r->job.slow = 1;
		dl_mark(r);
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
		if (!dl_write(r)) {
			repl_write(r);
			start_chunk(r);
		}
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
	/* Ours or a peer's changed: maybe a peer's source now. */
	incons_later();
}

static uint32_t
my_flags(struct peer *to)
{
	struct peer	*p;
	uint32_t	 f = 0;

	if (primary && !start_pending)	/* not before quorum, no veto */
		f |= REPL_F_PRIMARY;
	else if (primary)
		f |= REPL_F_STARTING;
	if (crashed)
		f |= REPL_F_CRASHED;
	/*
	 * Our data inconsistent is no news to our resync source (to->st
	 * PS_SYNC_TARGET: its own resync made it so, or it became our
	 * source for it) nor to the repairer (see repair_begin), and
	 * neither may take it for a resync from elsewhere (see
	 * incons_check): a STATE that said so could cross the source's
	 * RS_DONE, and a primary would close the link and compare again.
	 * The HELLO, sent before we know what the peer is to us, says it
	 * to each (gi_decide needs it); the STATE we send once its HELLO
	 * came takes it back from a source.  A peer becomes or stops being
	 * our source only in on_hello, sb_committed, rs_done_target or
	 * peer_down, each of which ends with peer_flags_changed: from then
	 * on it learns, like any peer, when a resync from elsewhere makes
	 * us inconsistent.
	 */
	if (!(m->flags & META_F_CONSISTENT) && dl_state == DL_NORMAL &&
	    to != repairer && to->st != PS_SYNC_TARGET)
		f |= REPL_F_INCONSISTENT;
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
	return mark_slot(p->slot, off, len);
}

/* Mark [off, off + len) out of sync in the bitmap of peer slot s. */
static int
mark_slot(int s, uint64_t off, uint64_t len)
{
	struct meta_peer *mp = &m->peer[s];
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
			bmoff[p] = rs_stage(p, bmsnap[p]);
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
			if (link_send_tail(p->link, REPL_DATA, REPL_DATA_HDR,
			    r->buf + (off - r->offset),
			    r->type == NBD_CMD_WRITE ? n : 0) == -1) {
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
		lat_note(r);
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

	if (qu && primary)
		start_pending = 0;	/* no peer vetoed: confirmed */
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

	if (was && p->st == PS_SYNC_TARGET && !primary)
		rs_lost = 1;	/* see incons_check */

	TAILQ_INIT(&again);
	p->link = NULL;
	p->hello = 0;
	p->flags = 0;
	p->gen++;
	if (primary && insync && was && !dl_keep_gi(p))
		gi_rotate(p);
	while ((pd = TAILQ_FIRST(&p->pend)) != NULL) {
		if (!pd->flush && primary)
			mark_oos(p, pd->off, pd->len);
		if ((r = pd->r) != NULL) {
			if (dl_keep_gi(p))
				r->lerr = EIO;	/* it had the only copy */
			r->acks--;
			if (r->acks == 0 && r->local_done)
				TAILQ_INSERT_TAIL(&again, r, entry);
		}
		pend_del(p, pd);
	}
	rs_peer_down(p);
	dl_peer_down(p);
	if (repairer == p)
		repairer = NULL;	/* the resync when it is back ends it */
	if (p->st != PS_BEHIND || !primary)
		p->st = PS_DOWN;
	/* Only the stream from p ends: another's epoch goes on. */
	if (!primary && jfd != -1 && jsrc == p)
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
	sb_sent(p, &h);
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
	self.primary = primary && !start_pending;
	self.promoted_at = m->promoted_at;
	self.changes = m->peer[p->slot].oos_blocks;
	self.inconsistent = !(m->flags & META_F_CONSISTENT) &&
	    dl_state == DL_NORMAL;
	snprintf(peer.name, sizeof(peer.name), "%s", p->name);
	peer.current = h->current;
	peer.bitmap = h->bitmap;
	memcpy(peer.history, h->history, sizeof(peer.history));
	peer.crashed_primary = (h->flags & REPL_F_CRASHED) != 0;
	peer.primary = (h->flags & REPL_F_PRIMARY) != 0;
	peer.promoted_at = h->promoted_at;
	peer.changes = h->oos_blocks;
	peer.inconsistent = (h->flags & REPL_F_INCONSISTENT) != 0;
	gi_decide(&self, &peer, &d);
	p->flags = h->flags;
	p->hello = 1;
	p->st = map[d.verdict];
	p->peer_empty = h->current == 0;
	if (p->st == PS_UPTODATE) {
		/* Same data: what the bitmap says is stale. */
		m->peer[p->slot].bitmap_gi = 0;
		if (m->peer[p->slot].oos_blocks > 0) {
			memset(m->peer[p->slot].bm, 0, m->bm_bytes);
			m->peer[p->slot].oos_blocks = 0;
			m->peer[p->slot].bm_dirty = 1;
		}
		bm_gen++;
		meta_commit();
	}
	log_info("peer %s: connected: %s (%s)", p->name,
	    gi_verdict_name(d.verdict), d.why);
	emit("peer-connect", "peer=%s mode=%s", p->name,
	    p->async ? "async" : "sync");
	emit("verdict", "peer=%s verdict=%s state=%s why=\"%s\"", p->name,
	    gi_verdict_name(d.verdict), pstate_names[p->st], d.why);
	sb_hello(p, &peer, &d);
	rs_hello(p, &d);
	dl_pull_next();
	if (start_pending && primary && p->st != PS_SPLIT &&
	    p->st != PS_UNRELATED &&
	    (h->flags & (REPL_F_PRIMARY | REPL_F_PEER_PRIMARY |
	    REPL_F_STARTING))) {
		log_warnx("started as primary, but peer %s %s: secondary",
		    p->name, (h->flags & REPL_F_PRIMARY) ? "is primary" :
		    (h->flags & REPL_F_STARTING) ? "starts as primary too" :
		    "is connected to a primary");
		start_pending = 0;
		sb_fail_waiting();	/* before set_role releases them */
		set_role(0);
	}
	quorum_check();
	peer_flags_changed();
}

/*
 * A peer we count up to date may say in a STATE that its data is
 * inconsistent now: a resync into it from another node began after its
 * HELLO (see rs_ready).  As in DRBD, it is up to date no more for a
 * primary, which becomes its sync source: the primary's data is the one
 * it must have.  The link is closed with p out of sync first, and the
 * HELLO that follows decides as for any unfinished resync (gi_decide,
 * rs_hello): this node the source, p the target, which asks for the
 * blocks of every bitmap it keeps.  A secondary leaves p to the node
 * resyncing it, which may have data this one lacks (a primary's activity
 * log after its crash), until p loses that source: then p itself asks
 * its consistent peers again (rs_lost).  Run from the loop
 * (incons_later), never from inside a link's callback.
 */
static void
incons_check(evutil_socket_t fd, short what, void *arg)
{
	struct peer	*p;
	int		 lost = rs_lost;

	(void)fd;
	(void)what;
	(void)arg;
	incons_pending = 0;
	rs_lost = 0;
	if (dl_state != DL_NORMAL)
		return;
	if (!(m->flags & META_F_CONSISTENT)) {
		/* Our resync lost its source: on with another, if any. */
		if (!lost || primary || repairer != NULL)
			return;
		TAILQ_FOREACH(p, &peers, entry)
			if (p->link != NULL && p->hello &&
			    p->st == PS_SYNC_TARGET)
				return;
		TAILQ_FOREACH(p, &peers, entry) {
			if (p->link == NULL || !p->hello ||
			    p->st != PS_UPTODATE ||
			    (p->flags & (REPL_F_INCONSISTENT |
			    REPL_F_PRIMARY)))
				continue;
			log_info("peer %s: the resync source is gone: "
			    "comparing again to go on from this peer",
			    p->name);
			link_close(p->link, "resync source lost: comparing "
			    "again");
		}
		return;
	}
	if (!primary)
		return;
	TAILQ_FOREACH(p, &peers, entry) {
		if (p->link == NULL || !p->hello || p->st != PS_UPTODATE ||
		    !(p->flags & REPL_F_INCONSISTENT))
			continue;
		log_info("peer %s: its data is inconsistent: this node "
		    "becomes its sync source", p->name);
		emit("peer-inconsistent", "peer=%s", p->name);
		p->st = PS_NEEDS_RESYNC;
		link_close(p->link, "data inconsistent since the handshake: "
		    "comparing again");
	}
}

static void
incons_later(void)
{
	struct timeval	tv = { 0, 0 };

	if (incons_pending)
		return;
	if (event_base_once(base, -1, EV_TIMEOUT, incons_check, NULL,
	    &tv) == -1)
		log_warnx("event_base_once");
	else
		incons_pending = 1;
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
	p->ka_t = now_usec();
	p->ka_bytes = 0;
	send_hello(p);
}

static void
on_close(struct link *l, const char *reason)
{
	struct peer	*p = link_arg(l);
	int		 up = p != NULL && p->link == l;

	if (up)
		peer_down(p, reason);
	/* (the overflow's own link keeps that reason) */
	if (p != NULL && reason != NULL && *reason != '\0' &&
	    (up || strcmp(p->last_error, "queue overflow") != 0))
		snprintf(p->last_error, sizeof(p->last_error), "%s", reason);
	if (!up && reason != NULL && *reason != '\0')
		log_warnx("peer link %s%s%s: %s", p ? p->name : "",
		    p ? " " : "", link_peer_addr(l), reason);
	if (p == NULL || p->lc == NULL)
		link_free(l);
}

/* --- the secondary's side ------------------------------------------ */

enum { RJ_REPL, RJ_RS_DATA, RJ_RS_FLUSH, RJ_RS_CSUM };

struct rjob {
	struct ioq_job	 job;
	struct rjob	*next;		/* free list */
	struct peer	*p;
	uint64_t	 gen, seq, off;
	uint32_t	 len, cap;
	uint16_t	 cmd, flags;
	int		 kind, wb;
	unsigned char	 mask[REPL_RS_BLOCKS / 8];	/* RJ_RS_CSUM */
	unsigned char	 data[];
};

static void
block_hash(unsigned char *out, const unsigned char *b)
{
	crypto_generichash(out, REPL_RS_HASH, b, REPL_RS_BLOCK, NULL, 0);
}

/* RS_CSUM on the target: which of our blocks differ from the source's? */
static int
csum_compare(struct rjob *rj)
{
	unsigned char	*b, h[REPL_RS_HASH];
	uint32_t	 i, n = rj->len / REPL_RS_BLOCK;
	int		 e;

	if ((b = malloc(rj->len)) == NULL)
		return ENOMEM;
	if ((e = read_full(b, rj->len, rj->off)) == 0)
		for (i = 0; i < n; i++) {
			block_hash(h, b + (size_t)i * REPL_RS_BLOCK);
			if (sodium_memcmp(h, rj->data + (size_t)i *
			    REPL_RS_HASH, REPL_RS_HASH) != 0)
				rj->mask[i / 8] |= 1 << (i % 8);
		}
	free(b);
	return e;
}

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

/*
 * The resync target's writes go to the store like any other; the
 * write-back of each starts at once (sync_file_range, not waited for:
 * its range only; a large folio goes whole, with whatever else in it is
 * dirty).  RS_FLUSH promises that every RS_DATA acknowledged before it is
 * durable.  An fdatasync of the whole store kept that promise, but also
 * wrote back all that the application had dirtied meanwhile, four times
 * a second: the application's latency on the primary, which waits for
 * our acknowledgements, suffered (4 to 5 times its p99 in sync).
 * Instead RS_FLUSH is an fdatasync of the ranges the resync wrote since
 * the last one (fdatasync_ranges: each range's write-back waited for,
 * then one io_uring ranged fsync, the vfs_fsync_range() that O_DSYNC
 * writes use).  That is what fdatasync promises, for those ranges: their
 * data written back and waited for (mostly on its way already), the
 * file's metadata needed to read it back committed (an allocation, an
 * extent made written, zeroes through fallocate), and the device's write
 * cache flushed, so that the ranges are on stable storage, on a file
 * system as on a block device.  sync_file_range alone would not do: it
 * neither waits for the device, commits metadata nor flushes the cache.
 * (One fsync serves all the ranges only where metadata and cache are the
 * inode's and the device's: a block device, ext4, XFS, btrfs; elsewhere,
 * overlayfs or NFS, each range gets its own.)  The ranges wait in rstgt:
 * a write is added after it is done and before it is acknowledged, and
 * RS_FLUSH takes them all when it starts, so that it covers every
 * RS_DATA acknowledged before it came.  Too many ranges, a kernel
 * without io_uring or a store that refuses sync_file_range, and RS_FLUSH
 * syncs the whole store instead.  A flush that failed makes the source
 * move its ranges again: the next one could not tell.
 * The resync's jobs run in their own I/O threads (rsioq), so that the
 * application's writes, when they cannot be done in the loop, never wait
 * behind the resync's write-back.
 */
#define RS_RANGES	4096
static struct {
	pthread_mutex_t	 lock;
	struct fsrange	 r[RS_RANGES];
	size_t		 n;
	int		 all;		/* sync the whole store */
} rstgt = { PTHREAD_MUTEX_INITIALIZER, { { 0, 0 } }, 0, 0 };

/* RS_DATA on the target: 0 or an errno. */
static int
rs_target_write(const struct rjob *rj)
{
	struct fsrange	*l;
	int		 e, all = 0;

	/* A DR node keeps the old contents first (see "the undo journal"). */
	if ((e = undo_save(undo, devfd, rj->off, rj->len, 1)) != 0)
		return e;
	if ((e = apply(rj->cmd, rj->off, rj->len, rj->data, 0)) != 0)
		return e;
	if (sync_file_range(devfd, rj->off, rj->len,
	    SYNC_FILE_RANGE_WRITE) == -1) {
		if (errno != ESPIPE && errno != EINVAL && errno != ENOSYS)
			return errno;
		all = 1;
	}
	pthread_mutex_lock(&rstgt.lock);
	l = rstgt.n > 0 ? &rstgt.r[rstgt.n - 1] : NULL;
	if (all || rstgt.n == RS_RANGES)
		rstgt.all = 1;
	else if (l != NULL && l->off + l->len == rj->off &&
	    l->len <= UINT32_MAX - rj->len)
		l->len += rj->len;
	else {
		rstgt.r[rstgt.n].off = rj->off;
		rstgt.r[rstgt.n++].len = rj->len;
	}
	pthread_mutex_unlock(&rstgt.lock);
	return 0;
}

/* RS_FLUSH on the target: 0 or an errno. */
static int
rs_target_flush(void)
{
	struct fsrange	*r;
	size_t		 n;
	int		 all, e;

	pthread_mutex_lock(&rstgt.lock);
	n = rstgt.n;
	all = rstgt.all;
	rstgt.n = 0;
	rstgt.all = 0;
	if (n > 0 && (r = malloc(n * sizeof(*r))) != NULL)
		memcpy(r, rstgt.r, n * sizeof(*r));
	else
		r = NULL;
	pthread_mutex_unlock(&rstgt.lock);
	if (n > 0 && r == NULL)
		all = 1;
	if (all || (e = fdatasync_ranges(devfd, r, n)) == -1)
		e = fdatasync(devfd) == -1 ? errno : 0;
	free(r);
	return store_synced(WB_RS, e);
}

static void
work_rjob(struct ioq_job *j)
{
	struct rjob	*rj = (struct rjob *)(void *)j;

	if (rj->kind == RJ_RS_CSUM)
		j->err = csum_compare(rj);
	else if (rj->kind == RJ_RS_FLUSH)
		j->err = rs_target_flush();
	else if (rj->kind == RJ_RS_DATA)
		j->err = rs_target_write(rj);
	else if (rj->cmd == NBD_CMD_FLUSH)
		j->err = store_sync(WB_APP);
	else {
		j->err = apply(rj->cmd, rj->off, rj->len, rj->data,
		    rj->flags & REPL_D_FUA);
		if (j->err == 0 && rj->wb)
			start_writeback(rj->off, rj->len);
	}
}

static void
done_rjob(struct ioq_job *j)
{
	struct rjob	*rj = (struct rjob *)(void *)j;
	struct peer	*p = rj->p;
	unsigned char	 b[REPL_RS_DIFF_MAX];

	disk_inflight--;
	if (rj->kind == RJ_RS_DATA && --rs_data_inflight == 0)
		repair_later();
	if (p->gen != rj->gen || p->link == NULL) {
		rjob_put(rj);
		return;
	}
	switch (rj->kind) {
	case RJ_REPL:
		link_send(p->link, REPL_ACK, b, repl_ack_enc(b, rj->seq,
		    j->err));
		break;
	case RJ_RS_DATA:
		if (j->err == 0) {
			clear_oos(p, rj->off, rj->len);
			p->rs_recv += rj->len;
		}
		link_send(p->link, REPL_RS_ACK, b, repl_ack_enc(b, rj->seq,
		    j->err));
		break;
	case RJ_RS_FLUSH:
		/* What we received is durable: so is its bitmap, soon. */
		meta_commit();
		link_send(p->link, REPL_RS_ACK, b, repl_ack_enc(b, rj->seq,
		    j->err));
		break;
	case RJ_RS_CSUM:
		if (j->err != 0)
			link_send(p->link, REPL_RS_ACK, b, repl_ack_enc(b,
			    rj->seq, j->err));
		else
			link_send(p->link, REPL_RS_DIFF, b, repl_diff_enc(b,
			    rj->seq, rj->len / REPL_RS_BLOCK, rj->mask));
		break;
	}
	rjob_put(rj);
}

static void
rjob_submit(struct peer *p, int kind, uint64_t seq, uint16_t cmd,
    uint64_t off, uint32_t len, uint16_t flags, const unsigned char *data,
    size_t n)
{
	struct rjob	*rj;
	unsigned char	 b[REPL_ACK_SIZE];
	struct ioq_clock c;
	int		 e, wb = kind == RJ_REPL && cmd == NBD_CMD_WRITE &&
			    wb_eager();

	if (kind == RJ_REPL && cmd == NBD_CMD_WRITE && !(flags & REPL_D_FUA) &&
	    n <= RJOB_SMALL && ioq_inline_ok(ioq)) {
		/*
		 * A small buffered write costs less than the hand-off to a
		 * worker and back: write it here and acknowledge at once.
		 */
		ioq_inline_start(&c);
		e = apply(cmd, off, len, data, 0);
		ioq_inline_took(ioq, &c);
		link_send(p->link, REPL_ACK, b, repl_ack_enc(b, seq, e));
		if (e == 0 && wb)
			start_writeback(off, len);
		return;
	}
	rj = rjob_get(n);
	rj->p = p;
	rj->gen = p->gen;
	rj->kind = kind;
	memset(rj->mask, 0, sizeof(rj->mask));
	rj->seq = seq;
	rj->cmd = cmd;
	rj->off = off;
	rj->len = len;
	rj->flags = flags;
	rj->wb = wb;
	if (n)
		memcpy(rj->data, data, n);
	rj->job.work = work_rjob;
	rj->job.done = done_rjob;
	rj->job.slow = 1;
	disk_inflight++;
	if (kind == RJ_RS_DATA)
		rs_data_inflight++;
	ioq_submit(kind == RJ_REPL ? ioq : rsioq, &rj->job);
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

/*
 * Apply the records in [start, end), sync, and mark them done.  While an
 * undo journal is active (a repair on a DR node, see repair_begin) the
 * blocks are saved there first, all of them with one sync.
 */
static int
journal_apply(uint64_t start, uint64_t end)
{
	unsigned char	 h[J_REC], *buf;
	uint64_t	 pos, off;
	uint32_t	 len;
	int		 i, pass, e = 0;

	if ((buf = malloc(REPL_CHUNK)) == NULL)
		return ENOMEM;
	for (pass = undo_active(undo) ? 0 : 1; e == 0 && pass < 2; pass++) {
		for (pos = start; e == 0 && pos + J_REC <= end; ) {
			if (pread(jfd, h, J_REC, pos) != J_REC) {
				e = EIO;
				break;
			}
			for (off = 0, i = 7; i >= 0; i--)
				off = off << 8 | h[i];
			for (len = 0, i = 3; i >= 0; i--)
				len = len << 8 | h[8 + i];
			pos += J_REC;
			if (len > REPL_CHUNK || off > m->size ||
			    len > m->size - off) {
				e = EINVAL;
				break;
			}
			if (h[12] == NBD_CMD_WRITE) {
				if (pass == 1 && pread(jfd, buf, len, pos) !=
				    (ssize_t)len) {
					e = EIO;
					break;
				}
				pos += len;
			}
			if (pass == 0)
				e = undo_save(undo, devfd, off, len, 0);
			else
				e = apply(h[12], off, len, buf, 0);
		}
		if (e == 0 && pass == 0)
			e = undo_sync(undo);
	}
	free(buf);
	if (e == 0)
		e = store_sync(WB_APP);
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
	if (e == 0)
		jb_done += jbflushes;	/* (a failed one never ends a repair) */
	jbflushes = 0;
	repair_later();
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
	jb_total++;
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
	if (fdatasync(jfd) == -1)
		fatal("%s", jpath);
}

/*
 * --- the undo journal ----------------------------------------------
 *
 * A DR node that fell behind is resynced in bitmap order, not in epochs,
 * so until the resync ends its store is no image the primary ever had.
 * When such a resync begins on a node whose data is consistent, the node
 * starts an undo journal (lib/undo.c) naming its generation identifiers,
 * and each resync block's old contents are saved there, durably, before
 * the block is overwritten: store and journal together always hold the
 * consistent image from before.  At the resync's end the journal is
 * dropped before the node calls its data consistent.  A resync that is
 * interrupted goes on later with the same journal; "primary --force"
 * (taking over after a disaster) first puts the old image back, and so
 * does a start as primary (-p), or a start that finds the journal begun
 * but the metadata never marked inconsistent.
 */

/*
 * Begin the journal for a resync from p; -1 (p's link closed) if not.
 * Only with none active: a journal begun before keeps the image from
 * before an earlier resync, which the callers keep (undo_begin would
 * refuse with EBUSY).
 */
static int
undo_start(struct peer *p)
{
	struct undo_state st;
	int		  e;

	memset(&st, 0, sizeof(st));
	st.flags = m->flags;
	st.gi_current = m->gi_current;
	st.gi_history[0] = m->gi_history[0];
	st.gi_history[1] = m->gi_history[1];
	if ((e = undo_begin(undo, &st)) != 0) {
		log_warnx("%s: %s: no resync without it", upath, strerror(e));
		snprintf(p->last_error, sizeof(p->last_error), "undo journal "
		    "%s: %s", upath, strerror(e));
		link_close(p->link, "the target cannot keep an undo journal");
		return -1;
	}
	log_info("peer %s: keeping the image of generation %016" PRIx64
	    " in %s until the resync ends", p->name, m->gi_current, upath);
	emit("undo-begin", "peer=%s gi_current=%016" PRIx64, p->name,
	    m->gi_current);
	return 0;
}

static int
undo_mark(void *arg, uint64_t off, uint32_t len)
{
	int	s;

	(void)arg;
	for (s = 0; s < META_PEERS; s++)
		if (m->peer[s].in_use)
			mark_slot(s, off, len);
	return 0;
}

/* Let every I/O job finish, for a change made synchronously; 0 or -1. */
static int
settle(void)
{
	uint64_t	until = now_usec() + 30000000;

	/* (the I/O threads exist before anything can call it) */
	while (disk_inflight > 0 || metabusy) {
		if (now_usec() > until)
			return -1;
		usleep(1000);
		ioq_reap(ioq);
		ioq_reap(rsioq);
	}
	return 0;
}

/*
 * Write the metadata now, in the loop, once no I/O job is under way: for
 * the few changes that must be on disk before the next message is taken.
 * 0, or -1 with errno set.
 */
static int
meta_now(void)
{
	uint64_t	errs = meta_errors;
	int		i;

	/* meta_commit stages the bitmaps as always (see rs_stage) */
	for (i = 0; i < 4; i++) {
		if (settle() == -1) {
			errno = EBUSY;
			return -1;
		}
		if (meta_errors != errs) {
			errno = EIO;
			return -1;
		}
		if (bm_gen_disk == bm_gen && m->al_gen_disk == m->al_gen)
			return 0;
		meta_commit();
	}
	errno = EBUSY;
	return -1;
}

/*
 * Put the image from before the resync back, synchronously: first every
 * saved block is marked out of sync for every peer (the resync must move
 * it again), then the old data is written and synced, then the old
 * generation identifiers and the consistent flag are written, and only
 * then is the journal dropped.  Interrupted at any point, it can be done
 * again.  0, or -1 with the reason in err.
 */
static int
undo_rollback(const char *why, char *err, size_t errlen)
{
	const struct undo_state	*st = undo_state(undo);
	uint64_t		 bytes = undo_bytes(undo);
	int			 e;

	if (settle() == -1) {
		snprintf(err, errlen, "I/O still under way after 30 s");
		return -1;
	}
	if ((e = undo_each(undo, undo_mark, NULL)) != 0) {
		snprintf(err, errlen, "%s: %s", upath, strerror(e));
		return -1;
	}
	if (meta_now() == -1) {
		snprintf(err, errlen, "metadata %s: %s", metapath,
		    strerror(errno));
		return -1;
	}
	if ((e = undo_restore(undo, devfd)) != 0) {
		snprintf(err, errlen, "restoring %s from %s: %s", devpath,
		    upath, strerror(e));
		return -1;
	}
	m->gi_current = st->gi_current;
	m->gi_history[0] = st->gi_history[0];
	m->gi_history[1] = st->gi_history[1];
	/* Consistent, but older than what the peers have: not up to date. */
	m->flags |= META_F_CONSISTENT;
	m->flags &= ~META_F_UPTODATE;
	bm_gen++;
	if (meta_now() == -1) {
		snprintf(err, errlen, "metadata %s: %s", metapath,
		    strerror(errno));
		return -1;
	}
	if ((e = undo_end(undo)) != 0) {
		snprintf(err, errlen, "%s: %s", upath, strerror(e));
		return -1;
	}
	repairer = NULL;
	log_info("%s: the image of generation %016" PRIx64 " from before "
	    "the resync is back (%" PRIu64 " bytes rewritten): %s", devpath,
	    m->gi_current, bytes, why);
	emit("undo-applied", "gi_current=%016" PRIx64 " bytes=%" PRIu64,
	    m->gi_current, bytes);
	return 0;
}

/*
 * At start, before anything is served, after a committed epoch was applied
 * again: the undo journal left by a resync or a repair.
 */
static void
undo_recover(void)
{
	char	err[512];
	int	e;

	if (!undo_active(undo))
		return;
	if (m->flags & META_F_CONSISTENT) {
		/*
		 * The resync ended and only dropping its journal did not,
		 * or it never wrote a block: the data is marked inconsistent
		 * on disk before the first one.
		 */
		if ((e = undo_end(undo)) != 0)
			fatalx("%s: %s", upath, strerror(e));
		return;
	}
	if (!primary) {
		log_info("%s: an unfinished resync; the image of generation "
		    "%016" PRIx64 " is kept (%" PRIu64 " bytes)", upath,
		    undo_state(undo)->gi_current, undo_bytes(undo));
		return;
	}
	if (undo_rollback("starting as primary", err, sizeof(err)) == -1)
		fatalx("undoing the resync: %s", err);
}

/*
 * A journal was just begun for blocks from p: the data is marked
 * inconsistent, on disk before the first of them is written (a start that
 * finds a journal and consistent data takes it for finished).  If that
 * fails, nothing was written: the journal goes and p's link is closed;
 * -1 then.
 */
static int
undo_mark_inconsistent(struct peer *p)
{
	uint32_t	was = m->flags;
	int		e;

	m->flags &= ~(META_F_CONSISTENT | META_F_UPTODATE);
	bm_gen++;
	if (meta_now() == 0 && p->link != NULL)
		return 0;
	e = errno;
	log_warnx("metadata %s: %s: the resync from %s waits", metapath,
	    p->link == NULL ? "peer gone" : strerror(e), p->name);
	m->flags = was;
	bm_gen++;
	meta_commit();
	if ((e = undo_end(undo)) != 0)
		fatalx("%s: %s", upath, strerror(e));
	if (p->link != NULL)
		link_close(p->link, "the target cannot mark its data "
		    "inconsistent");
	return -1;
}

/*
 * verify --fix on an up-to-date DR node: the repaired blocks come
 * outside the epochs, so until the epoch that was open when the last of
 * them came has been applied, the store is no image the primary had.
 * They go under the undo journal too, and so do the epochs applied
 * meanwhile (journal_apply); the data is marked inconsistent until then.
 * -1 if p's link was closed (no journal).
 */
static int
repair_begin(struct peer *p)
{
	repair_until = jb_total + 1;
	if (repairer != NULL || !(m->flags & META_F_CONSISTENT))
		return 0;
	/* (consistent with a journal only if dropping it failed) */
	if (!undo_active(undo) && undo_start(p) == -1)
		return -1;
	if (undo_mark_inconsistent(p) == -1)
		return -1;
	repairer = p;
	peer_flags_changed();
	return 0;
}

/* The repair is inside an applied epoch: consistent again. */
static void
repair_check(evutil_socket_t fd, short what, void *arg)
{
	const struct undo_state	*st = undo_state(undo);
	int			 e;

	(void)fd;
	(void)what;
	(void)arg;
	if (repairer == NULL || rs_data_inflight > 0 || jb_done < repair_until)
		return;
	if ((e = store_sync(WB_REPAIR)) != 0) {
		log_warnx("%s: %s: the repair stays under the undo journal",
		    devpath, strerror(e));
		return;
	}
	m->flags |= st->flags & (META_F_CONSISTENT | META_F_UPTODATE);
	bm_gen++;
	if (meta_now() == -1)
		fatal("metadata %s", metapath);
	if ((e = undo_end(undo)) != 0)
		fatalx("%s: %s", upath, strerror(e));
	log_info("peer %s: the repaired blocks are inside an applied epoch; "
	    "the undo journal is dropped", repairer->name);
	emit("undo-end", "peer=%s", repairer->name);
	repairer = NULL;
	peer_flags_changed();
}

/* Check from the loop itself, never from inside settle(). */
static void
repair_later(void)
{
	struct timeval	tv = { 0, 0 };

	if (repairer != NULL && event_base_once(base, -1, EV_TIMEOUT,
	    repair_check, NULL, &tv) == -1)
		log_warnx("event_base_once");
}

/*
 * --- resync ----------------------------------------------------------
 *
 * When two nodes meet and their generation identifiers say that one is
 * the other's sync source, both send the dirty bitmap they keep for the
 * other (BITMAP messages; the source adds every block for a full sync,
 * a node that crashed as primary its activity log) and OR in what they
 * receive: both then hold the same set of blocks to move.  The target
 * marks its data inconsistent until the end.
 *
 * What moves, when and how fast is resyncd's business: on the source's
 * control socket it lists the blocks ("oos PEER") and asks for ranges
 * ("sync PEER OFFSET LENGTH [csum]", "verify PEER OFFSET LENGTH"), as many
 * at once as it likes.  blkmirror does each one: it waits for writes in
 * flight on the range and holds new ones back until the peer has the
 * block, so that a resync block never overwrites a newer write; reads the
 * range; sends it (RS_DATA), or first its block hashes (RS_CSUM) so that
 * only blocks that differ move; and answers "ok" when the target wrote
 * it.  The source clears the bits then, but keeps them set on disk until
 * the target has synced (RS_FLUSH, every RS_FLUSH_BYTES): a resync that
 * stops at any point resumes from the bitmaps, losing at most that much.
 * When no block is left the source sends its identifiers (RS_DONE) and
 * the target takes them: the pair is in sync.
 */
static unsigned char *
rs_buf_get(void)
{
	unsigned char	*b;

	if (nrsbufs > 0)
		return rsbufs[--nrsbufs];
	if ((b = malloc(REPL_CHUNK)) == NULL)
		fatal("malloc");
	return b;
}

static void
rs_buf_put(unsigned char *b)
{
	if (b == NULL)
		return;
	if (nrsbufs < RS_BUFS)
		rsbufs[nrsbufs++] = b;
	else
		free(b);
}

/* Clear [off, off + len) for peer p: whole blocks only. */
static int
clear_oos(struct peer *p, uint64_t off, uint64_t len)
{
	struct meta_peer *mp = &m->peer[p->slot];
	uint64_t	 b, end;
	int		 changed = 0;

	end = (off + len) / META_BLOCK;
	for (b = (off + META_BLOCK - 1) / META_BLOCK; b < end &&
	    b < m->nbits; b++) {
		if (!(mp->bm[b / 8] & (1 << (b % 8))))
			continue;
		mp->bm[b / 8] &= ~(1 << (b % 8));
		mp->oos_blocks--;
		changed = 1;
	}
	if (changed) {
		mp->bm_dirty = 1;
		bm_gen++;
	}
	return changed;
}

/*
 * rs_stage: stage peer slot's bitmap for writing, with the bits of resync
 * writes the target has not yet made durable still set.
 */
static uint64_t
rs_stage(int slot, unsigned char *snap)
{
	struct meta_peer *mp = &m->peer[slot];
	struct peer	*p;
	uint64_t	*set = NULL, nset = 0, b, oos = mp->oos_blocks, off;
	size_t		 i;

	TAILQ_FOREACH(p, &peers, entry)
		if (p->slot == slot)
			break;
	if (p == NULL || p->nunfl == 0)
		return meta_bm_stage(m, slot, snap);
	if ((set = calloc(p->unfl_bytes / META_BLOCK + 1, sizeof(*set))) ==
	    NULL)
		fatal("calloc");
	for (i = 0; i < p->nunfl; i++)
		for (b = p->unfl[i].off / META_BLOCK; b < (p->unfl[i].off +
		    p->unfl[i].len) / META_BLOCK && b < m->nbits; b++)
			if (!(mp->bm[b / 8] & (1 << (b % 8)))) {
				mp->bm[b / 8] |= 1 << (b % 8);
				set[nset++] = b;
			}
	off = meta_bm_stage(m, slot, snap);
	for (i = 0; i < nset; i++)
		mp->bm[set[i] / 8] &= ~(1 << (set[i] % 8));
	mp->oos_blocks = oos;
	free(set);
	return off;
}

static void
unfl_add(struct peer *p, uint64_t off, uint32_t len)
{
	if (p->nunfl == p->unflcap) {
		p->unflcap = p->unflcap ? 2 * p->unflcap : 64;
		if ((p->unfl = reallocarray(p->unfl, p->unflcap,
		    sizeof(*p->unfl))) == NULL)
			fatal("realloc");
	}
	p->unfl[p->nunfl].off = off;
	p->unfl[p->nunfl].len = len;
	p->nunfl++;
	p->unfl_bytes += len;
}

/* The first n entries are durable on the target now. */
static void
unfl_drop(struct peer *p, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		p->unfl_bytes -= p->unfl[i].len;
	if (n > 0 && n < p->nunfl)	/* p->unfl may be NULL */
		memmove(p->unfl, p->unfl + n, (p->nunfl - n) *
		    sizeof(*p->unfl));
	p->nunfl -= n;
}

static void
rs_send_bitmap(struct peer *p)
{
	struct meta_peer *mp = &m->peer[p->slot];
	unsigned char	*b;
	size_t		 off, n, i;
	const size_t	 piece = 65536;

	for (off = 0; off < m->bm_bytes; off += n) {
		n = m->bm_bytes - off < piece ? m->bm_bytes - off : piece;
		for (i = 0; i < n && mp->bm[off + i] == 0; i++)
			;
		if (i == n)
			continue;
		b = link_msg_buf(p->link);
		repl_bitmap_enc(b, off, 0);
		memcpy(b + REPL_BITMAP_HDR, mp->bm + off, n);
		if (link_send_buf(p->link, REPL_BITMAP, REPL_BITMAP_HDR + n) ==
		    -1)
			return;
	}
	b = link_msg_buf(p->link);
	if (link_send_buf(p->link, REPL_BITMAP, repl_bitmap_enc(b, 0,
	    REPL_BM_LAST)) == 0)
		p->bm_sent = 1;
}

/*
 * An unfinished resync with the same generation on both sides (see
 * gi_decide) left what it had still to move in the bitmap of the peer it
 * came from, and p may be another: the target asks p for the blocks of
 * every bitmap it keeps (more than needed at worst, never less).  When no
 * bitmap has a block, nothing says what is missing: every block.  (With
 * different generations the source's own bitmap for us covers what it
 * wrote since; what a resync from another node left, rs_share put there.)
 */
static void
rs_take_all(struct peer *p)
{
	struct meta_peer *to = &m->peer[p->slot];
	uint64_t	  was = to->oos_blocks;
	size_t		  i;
	int		  s;

	for (s = 0; s < META_PEERS; s++)
		if (s != p->slot && m->peer[s].in_use)
			for (i = 0; i < m->bm_bytes; i++)
				to->bm[i] |= m->peer[s].bm[i];
	meta_bm_count(m, p->slot);
	if (to->oos_blocks != was) {
		to->bm_dirty = 1;
		bm_gen++;
	}
	if (to->oos_blocks == 0) {
		log_info("peer %s: no bitmap says what the unfinished resync "
		    "has left: every block", p->name);
		mark_oos(p, 0, m->size);
	}
}

/*
 * Our data turns inconsistent for a resync from p: the peers that count
 * us up to date learn it (a STATE) and a primary among them becomes our
 * source too (incons_check), now or once promoted.  If it goes on without
 * us meanwhile, its new generation makes that a resync from its bitmap,
 * which must also hold what p's resync has still to move: p's bits are
 * added to the bitmap of each of them.
 */
static void
rs_share(struct peer *p)
{
	struct meta_peer *from = &m->peer[p->slot], *to;
	struct peer	*q;
	size_t		 i;

	TAILQ_FOREACH(q, &peers, entry) {
		if (q == p || q->link == NULL || !q->hello ||
		    q->st != PS_UPTODATE)
			continue;
		to = &m->peer[q->slot];
		for (i = 0; i < m->bm_bytes; i++)
			to->bm[i] |= from->bm[i];
		meta_bm_count(m, q->slot);
		to->bm_dirty = 1;
		bm_gen++;
	}
}

/* After HELLO: start the bitmap exchange if one of us is behind. */
static void
rs_hello(struct peer *p, const struct gi_decision *d)
{
	uint32_t	i;
	uint64_t	off;

	p->bm_sent = p->bm_got = 0;
	p->rs_full = d->full;
	if (p->st != PS_NEEDS_RESYNC && p->st != PS_SYNC_TARGET &&
	    p->st != PS_SPLIT)
		return;
	if (p->st == PS_NEEDS_RESYNC && d->full)
		mark_oos(p, 0, m->size);
	if (p->st == PS_SYNC_TARGET && d->unfinished)
		rs_take_all(p);
	/*
	 * What we wrote just before our crash may not be there, nor in the
	 * bitmap (it reaches the disk lazily): as source, target or in a
	 * split brain, a node that crashed as primary adds its activity log.
	 */
	if ((d->al_self || crashed) && !p->al_done) {
		for (i = 0; i < m->al_unclean; i++) {
			off = (uint64_t)m->al_crashed[i] * META_AL_EXTENT;
			if (off < m->size)
				mark_oos(p, off, m->size - off <
				    META_AL_EXTENT ? m->size - off :
				    META_AL_EXTENT);
		}
		p->al_done = 1;
	}
	meta_commit();
	rs_send_bitmap(p);
}

/* Both halves of the bitmap exchange are in. */
static void
rs_ready(struct peer *p)
{
	struct meta_peer *mp = &m->peer[p->slot];

	p->rs_start_oos = mp->oos_blocks;
	p->rs_start_usec = now_usec();
	/*
	 * An epoch applied before must not be applied again at a start,
	 * over the blocks the resync writes: its cleared commit becomes
	 * durable first.
	 */
	if (p->st == PS_SYNC_TARGET && jfd != -1 && fdatasync(jfd) == -1) {
		log_warnx("%s: %s: no resync from %s", jpath, strerror(errno),
		    p->name);
		link_close(p->link, "the target cannot sync its journal");
		return;
	}
	if (p->st == PS_SYNC_TARGET && (m->flags & META_F_CONSISTENT)) {
		if (p->async && !undo_active(undo)) {
			if (undo_start(p) == -1 ||
			    undo_mark_inconsistent(p) == -1)
				return;
		} else {
			/* Until the end our data is a mix of old and new. */
			m->flags &= ~(META_F_CONSISTENT | META_F_UPTODATE);
			bm_gen++;
		}
		rs_share(p);
	}
	meta_commit();
	peer_flags_changed();	/* to the others: inconsistent now */
	if (p->st == PS_SPLIT) {
		sb_ready(p);
		return;
	}
	log_info("peer %s: resync %s, %" PRIu64 " bytes out of sync%s",
	    p->name, p->st == PS_NEEDS_RESYNC ? "source" : "target",
	    mp->oos_blocks * META_BLOCK, p->rs_full ? " (full)" : "");
	emit("resync-ready", "peer=%s role=%s oos_bytes=%" PRIu64 " full=%d",
	    p->name, p->st == PS_NEEDS_RESYNC ? "source" : "target",
	    mp->oos_blocks * META_BLOCK, p->rs_full);
	rs_check(p);
}

static void
rs_flush(struct peer *p)
{
	unsigned char	b[REPL_ID_SIZE];

	p->rs_flush_id = ++rsid;
	if (link_send(p->link, REPL_RS_FLUSH, b, repl_id_enc(b,
	    p->rs_flush_id)) == -1)
		return;
	p->rs_flushing = 1;
	p->rs_flush_t = now_usec();
	p->unfl_at_flush = p->nunfl;
}

static void
rs_flush_tick(evutil_socket_t fd, short what, void *arg)
{
	struct peer	*p;

	(void)fd;
	(void)what;
	(void)arg;
	TAILQ_FOREACH(p, &peers, entry)
		rs_check(p);
}

/* Look at the flushes again in us microseconds. */
static void
rs_flush_later(uint64_t us)
{
	static struct event	*ev;
	struct timeval		 tv;

	if (ev == NULL && (ev = evtimer_new(base, rs_flush_tick, NULL)) ==
	    NULL)
		fatalx("evtimer_new");
	if (evtimer_pending(ev, NULL))
		return;
	tv.tv_sec = us / 1000000;
	tv.tv_usec = us % 1000000;
	evtimer_add(ev, &tv);
}

/*
 * rs_check: flush the target when enough waits, and end the resync when
 * no block is left, nothing is in flight and all of it is durable.
 */
static void
rs_check(struct peer *p)
{
	struct meta_peer *mp = &m->peer[p->slot];
	unsigned char	 b[REPL_GI_SIZE];
	uint64_t	 h[GI_HISTORY] = { m->gi_history[0], m->gi_history[1] };
	uint64_t	 since;
	char		 t[32];

	if (p->link == NULL || !p->hello)
		return;
	/*
	 * A flush can stall the target's writes a moment, the application's
	 * too: while the resync runs, not more often than RS_FLUSH_USEC,
	 * after RS_FLUSH_BYTES or when nothing is in flight (a paced resync
	 * empties its pipeline between requests all the time: no reason to
	 * flush more often); at once when nothing is left to move.
	 */
	if (p->nunfl > 0 && !p->rs_flushing) {
		since = now_usec() - p->rs_flush_t;
		if ((p->rs_inflight == 0 && mp->oos_blocks == 0) ||
		    p->unfl_bytes >= RS_UNFL_MAX ||
		    ((p->rs_inflight == 0 || p->unfl_bytes >= RS_FLUSH_BYTES) &&
		    since >= RS_FLUSH_USEC))
			rs_flush(p);
		else if (p->rs_inflight == 0)
			rs_flush_later(RS_FLUSH_USEC - since);
	}
	if (p->st != PS_NEEDS_RESYNC || !p->bm_sent || !p->bm_got ||
	    mp->oos_blocks > 0 || p->rs_inflight > 0 || p->nunfl > 0 ||
	    p->rs_flushing)
		return;
	if (link_send(p->link, REPL_RS_DONE, b, repl_gi_enc(b,
	    m->gi_current, h)) == -1)
		return;
	p->st = PS_UPTODATE;
	/*
	 * Its HELLO may have said inconsistent (an unfinished resync): the
	 * STATE that takes that back (see my_flags) follows its bitmap, so
	 * it can come after this.  Its STATEs since never say so to us.
	 */
	p->flags &= ~REPL_F_INCONSISTENT;
	mp->bitmap_gi = 0;
	bm_gen++;
	meta_commit();
	log_info("peer %s: resync done, %" PRIu64 " bytes sent in %s",
	    p->name, p->rs_sent, fmt_duration(now_usec() - p->rs_start_usec, t,
	    sizeof(t)));
	emit("resync-done", "peer=%s role=source sent_bytes=%" PRIu64,
	    p->name, p->rs_sent);
	quorum_check();
	peer_flags_changed();
}

/* The target took RS_DONE: we are in sync with the source. */
static void
rs_done_target(struct peer *p, uint64_t cur, const uint64_t *hist)
{
	struct meta_peer *mp = &m->peer[p->slot];
	struct peer	*q;
	int		 e;

	/*
	 * What we were to the others was judged on our old generation; and
	 * nothing of theirs may be written once the undo journal is gone.
	 */
	TAILQ_FOREACH(q, &peers, entry)
		if (q != p && q->link != NULL && q->hello &&
		    q->st != PS_UPTODATE)
			link_close(q->link, "generation changed by a resync: "
			    "comparing again");
	set_gi(cur, hist);
	memset(mp->bm, 0, m->bm_bytes);
	mp->oos_blocks = 0;
	mp->bm_dirty = 1;
	mp->bitmap_gi = 0;
	m->flags |= META_F_CONSISTENT | META_F_UPTODATE;
	crashed = 0;
	m->al_unclean = 0;
	p->st = PS_UPTODATE;
	bm_gen++;
	/*
	 * Everything received is durable.  The new generation and the
	 * consistent flag go to disk before the old image is dropped: a
	 * start that finds both takes the resync for finished.
	 */
	if (undo_active(undo)) {
		if (meta_now() == -1)
			fatal("metadata %s: the end of the resync", metapath);
		if ((e = undo_end(undo)) != 0)
			fatalx("%s: %s", upath, strerror(e));
		repairer = NULL;
	}
	meta_commit();
	log_info("peer %s: resync done, %" PRIu64 " bytes received; in sync "
	    "at generation %016" PRIx64, p->name, p->rs_recv, cur);
	emit("resync-done", "peer=%s role=target received_bytes=%" PRIu64
	    " gi_current=%016" PRIx64, p->name, p->rs_recv, cur);
	quorum_check();
	peer_flags_changed();
}

static struct rsreq *
rs_find(struct peer *p, uint64_t id)
{
	struct rsreq	*q;

	TAILQ_FOREACH(q, &rsq, entry)
		if (q->id == id && q->p == p && q->pgen == p->gen)
			return q;
	return NULL;
}

/* End a request: answer whoever asked, wake what waited for it. */
static void
rs_finish(struct rsreq *q, const char *why)
{
	struct peer	*p = q->p;
	char		 ebuf[128];

	TAILQ_REMOVE(q->active ? &rsq : &rswait, q, entry);
	if (why == NULL && q->err != 0)
		why = strerror(q->err);
	if (why == NULL && q->kind != RS_VERIFY && q->pgen == p->gen) {
		clear_oos(p, q->off, q->len);
		unfl_add(p, q->off, q->len);
	}
	if (q->c != NULL) {
		if (why != NULL) {
			snprintf(ebuf, sizeof(ebuf), "%s", why);
			evbuffer_add_printf(bufferevent_get_output(q->c->bev),
			    "error: %s %s %" PRIu64 " %" PRIu32 ": %s\n",
			    rs_kinds[q->kind], p->name, q->off, q->len, ebuf);
		} else
			evbuffer_add_printf(bufferevent_get_output(q->c->bev),
			    "ok %" PRIu64 " %" PRIu32 " bytes=%" PRIu64
			    " differ=%" PRIu32 "\n", q->off, q->len, q->sent,
			    q->diff);
	}
	if (q->active && q->pgen == p->gen)
		p->rs_inflight--;
	rs_buf_put(q->buf);
	free(q);
	nrs--;
}

/* After requests ended: writes and requests that waited may go. */
static void
rs_wake(struct peer *p)
{
	retry_writes();
	rs_release();
	rs_check(p);
	update_eager();
}

static int
is_zero(const unsigned char *b, size_t n)
{
	return n == 0 || (b[0] == 0 && memcmp(b, b + 1, n - 1) == 0);
}

/* Send [off, off + len) of q's buffer as one RS_DATA. */
static int
rs_send_data(struct rsreq *q, uint64_t off, uint32_t len)
{
	struct peer	*p = q->p;
	struct repl_data d;
	unsigned char	*b = link_msg_buf(p->link), *src;

	src = q->buf + (off - q->off);
	d.seq = q->id;
	d.epoch = 0;
	d.offset = off;
	d.len = len;
	d.cmd = is_zero(src, len) ? NBD_CMD_WRITE_ZEROES : NBD_CMD_WRITE;
	d.flags = 0;
	repl_data_enc(b, &d);
	if (d.cmd == NBD_CMD_WRITE)
		memcpy(b + REPL_DATA_HDR, src, len);
	if (link_send_buf(p->link, REPL_RS_DATA, REPL_DATA_HDR +
	    (d.cmd == NBD_CMD_WRITE ? len : 0)) == -1) {
		q->err = errno;
		return -1;
	}
	q->acks++;
	q->sent += len;
	p->rs_sent += len;
	return 0;
}

static void
work_rsread(struct ioq_job *j)
{
	struct rsreq	*q = (struct rsreq *)(void *)j;
	uint32_t	 i;

	if ((j->err = read_full(q->buf, q->len, q->off)) != 0 ||
	    q->kind == RS_DATA)
		return;
	for (i = 0; i < q->len / REPL_RS_BLOCK; i++)
		block_hash(q->hash + (size_t)i * REPL_RS_HASH, q->buf +
		    (size_t)i * REPL_RS_BLOCK);
}

static void
done_rsread(struct ioq_job *j)
{
	struct rsreq	*q = (struct rsreq *)(void *)j;
	struct peer	*p = q->p;
	struct repl_csum c;
	unsigned char	*b;

	disk_inflight--;
	q->reading = 0;
	if (q->pgen != p->gen || p->link == NULL) {
		rs_finish(q, "peer disconnected");
		rs_wake(p);
		return;
	}
	if (j->err != 0) {
		rs_finish(q, NULL);
		rs_wake(p);
		return;
	}
	if (q->kind == RS_DATA)
		rs_send_data(q, q->off, q->len);
	else {
		c.id = q->id;
		c.offset = q->off;
		c.len = q->len;
		c.flags = q->kind == RS_VERIFY ? REPL_RS_VERIFY : 0;
		c.hashes = q->hash;
		b = link_msg_buf(p->link);
		if (link_send_buf(p->link, REPL_RS_CSUM, repl_csum_enc(b,
		    &c)) == -1)
			q->err = errno;
		else
			q->acks++;
	}
	if (q->acks == 0) {
		rs_finish(q, NULL);
		rs_wake(p);
	}
}

/* Start q unless a write in flight overlaps it. */
static void
rs_start(struct rsreq *q)
{
	struct nbd_req	*o;

	TAILQ_FOREACH(o, &wlist, wentry)
		if (o->offset < q->off + q->len && q->off < o->offset + o->len) {
			TAILQ_INSERT_TAIL(&rswait, q, entry);
			return;
		}
	/*
	 * What an interrupted resync repeats is what the target had not
	 * yet made durable: however slow its flushes, no more than this.
	 */
	if (q->p->unfl_bytes >= RS_UNFL_MAX) {
		TAILQ_INSERT_TAIL(&rswait, q, entry);
		return;
	}
	q->active = 1;
	q->reading = 1;
	q->p->rs_inflight++;
	TAILQ_INSERT_TAIL(&rsq, q, entry);
	q->buf = rs_buf_get();
	q->job.work = work_rsread;
	q->job.done = done_rsread;
	q->job.slow = 1;
	disk_inflight++;
	ioq_submit(ioq, &q->job);
}

/* Requests that waited for writes: start those that may go now. */
static void
rs_release(void)
{
	struct rsreq	*q, *tmp;
	struct rsqh	 again;

	TAILQ_INIT(&again);
	TAILQ_CONCAT(&again, &rswait, entry);
	TAILQ_FOREACH_SAFE(q, &again, entry, tmp) {
		TAILQ_REMOVE(&again, q, entry);
		if (q->pgen != q->p->gen || q->p->link == NULL) {
			TAILQ_INSERT_TAIL(&rswait, q, entry);
			rs_finish(q, "peer disconnected");
			continue;
		}
		rs_start(q);
	}
}

/* The link to p went down: its requests fail, unsynced bits come back. */
static void
rs_peer_down(struct peer *p)
{
	struct rsreq	*q, *tmp;
	size_t		 i;

	/* p->gen moved on: no bits are cleared for these. */
	TAILQ_FOREACH_SAFE(q, &rswait, entry, tmp)
		if (q->p == p)
			rs_finish(q, "peer disconnected");
	TAILQ_FOREACH_SAFE(q, &rsq, entry, tmp)
		if (q->p == p && !q->reading)
			rs_finish(q, "peer disconnected");
	p->rs_inflight = 0;
	for (i = 0; i < p->nunfl; i++)
		mark_oos(p, p->unfl[i].off, p->unfl[i].len);
	unfl_drop(p, p->nunfl);
	p->rs_flushing = 0;
	p->bm_sent = p->bm_got = 0;
	retry_writes();
	rs_release();
}

/* A BITMAP piece: OR it into ours for p. */
static void
rs_bitmap(struct peer *p, uint64_t off, const unsigned char *bits, size_t n)
{
	struct meta_peer *mp = &m->peer[p->slot];
	unsigned char	 add, last = 0xff;
	size_t		 i;

	if (m->nbits % 8)
		last = (1 << (m->nbits % 8)) - 1;
	for (i = 0; i < n; i++) {
		add = bits[i] & ~mp->bm[off + i];
		if (off + i == m->bm_bytes - 1)
			add &= last;
		if (add == 0)
			continue;
		mp->bm[off + i] |= add;
		mp->oos_blocks += __builtin_popcount(add);
		mp->bm_dirty = 1;
	}
	bm_gen++;
}

/*
 * rs_message: a resync message from p; -1 if it is malformed or comes
 * when it must not (the caller drops the link).
 */
static int
rs_message(struct peer *p, unsigned type, const void *buf, size_t len)
{
	const unsigned char	*bits, *mask;
	struct repl_data	 d;
	struct repl_csum	 c;
	struct rsreq		*q;
	struct peer		*q2;
	uint64_t		 off, id, cur, hist[GI_HISTORY], o;
	uint32_t		 fl, e, blocks, i, j;
	size_t			 n;
	int			 target = !primary && (p->st == PS_SYNC_TARGET ||
				    (p->st == PS_UPTODATE &&
				    !(p->flags & REPL_F_PEER_PRIMARY)));

	switch (type) {
	case REPL_BITMAP:
		if (repl_bitmap_dec(buf, len, m->bm_bytes, &off, &fl, &bits,
		    &n) == -1 || p->bm_got || (p->st != PS_NEEDS_RESYNC &&
		    p->st != PS_SYNC_TARGET && p->st != PS_SPLIT))
			return -1;
		rs_bitmap(p, off, bits, n);
		if (fl & REPL_BM_LAST) {
			p->bm_got = 1;
			rs_ready(p);
		}
		return 0;
	case REPL_RS_DATA:
		if (repl_data_dec(buf, len, m->size, &d) == -1 || !target ||
		    d.cmd == NBD_CMD_TRIM)
			return -1;
		if (p->async && p->st == PS_UPTODATE) {
			TAILQ_FOREACH(q2, &peers, entry)
				if (q2 != p && q2->link != NULL && q2->hello &&
				    (q2->flags & REPL_F_PRIMARY))
					return -1;	/* not the epochs' source */
			if (repair_begin(p) == -1)
				return 0;
		}
		rjob_submit(p, RJ_RS_DATA, d.seq, d.cmd, d.offset, d.len, 0,
		    d.data, d.data != NULL ? d.len : 0);
		return 0;
	case REPL_RS_CSUM:
		if (repl_csum_dec(buf, len, m->size, &c) == -1 || (!target &&
		    !(c.flags & REPL_RS_VERIFY)))
			return -1;
		rjob_submit(p, RJ_RS_CSUM, c.id, 0, c.offset, c.len, c.flags,
		    c.hashes, (size_t)(c.len / REPL_RS_BLOCK) * REPL_RS_HASH);
		return 0;
	case REPL_RS_FLUSH:
		if (repl_id_dec(buf, len, &id) == -1 || !target)
			return -1;
		rjob_submit(p, RJ_RS_FLUSH, id, NBD_CMD_FLUSH, 0, 0, 0, NULL,
		    0);
		return 0;
	case REPL_RS_DONE:
		if (repl_gi_dec(buf, len, &cur, hist) == -1 ||
		    p->st != PS_SYNC_TARGET || primary || !p->bm_got)
			return -1;
		rs_done_target(p, cur, hist);
		return 0;
	case REPL_RS_ACK:
		if (repl_ack_dec(buf, len, &id, &e) == -1)
			return -1;
		if (p->rs_flushing && id == p->rs_flush_id) {
			p->rs_flushing = 0;
			/*
			 * A failed flush: what it covered may never reach the
			 * disk, and the next one cannot tell (the target took
			 * its ranges, the kernel reports a write-back error
			 * once).  Those blocks are out of sync again and move
			 * again.
			 */
			if (e != 0) {
				log_warnx("peer %s: resync flush: %s; its %zu "
				    "ranges are out of sync again", p->name,
				    strerror(e), p->unfl_at_flush);
				for (n = 0; n < p->unfl_at_flush; n++)
					mark_oos(p, p->unfl[n].off,
					    p->unfl[n].len);
			}
			unfl_drop(p, p->unfl_at_flush);
			m->peer[p->slot].bm_dirty = 1;
			bm_gen++;
			meta_commit();
			rs_check(p);
			rs_release();	/* those held by RS_UNFL_MAX */
			return 0;
		}
		if ((q = rs_find(p, id)) == NULL || q->acks == 0)
			return -1;
		if (e != 0)
			q->err = e;
		if (--q->acks == 0) {
			rs_finish(q, NULL);
			rs_wake(p);
		}
		return 0;
	case REPL_RS_DIFF:
		if (repl_diff_dec(buf, len, &id, &blocks, &mask) == -1 ||
		    (q = rs_find(p, id)) == NULL || q->kind == RS_DATA ||
		    q->acks != 1 || blocks != q->len / REPL_RS_BLOCK)
			return -1;
		q->acks = 0;
		for (i = 0; i < blocks; i++)
			if (mask[i / 8] & (1 << (i % 8)))
				q->diff++;
		if (q->kind == RS_VERIFY) {
			for (i = 0; i < blocks; i++)
				if (mask[i / 8] & (1 << (i % 8)))
					mark_oos(p, q->off + (uint64_t)i *
					    REPL_RS_BLOCK, REPL_RS_BLOCK);
			p->verify_diff += q->diff;
			if (q->diff > 0) {
				emit("verify", "peer=%s offset=%" PRIu64
				    " length=%" PRIu32 " differ_blocks=%" PRIu32,
				    p->name, q->off, q->len, q->diff);
				meta_commit();
			}
		} else {
			/* Send each run of blocks that differ. */
			for (i = 0; i < blocks; i = j) {
				if (!(mask[i / 8] & (1 << (i % 8)))) {
					j = i + 1;
					continue;
				}
				for (j = i; j < blocks &&
				    (mask[j / 8] & (1 << (j % 8))); j++)
					;
				o = q->off + (uint64_t)i * REPL_RS_BLOCK;
				if (rs_send_data(q, o, (j - i) *
				    REPL_RS_BLOCK) == -1)
					break;
			}
		}
		if (q->acks == 0) {
			rs_finish(q, NULL);
			rs_wake(p);
		}
		return 0;
	}
	return -1;
}

/* "oos PEER": the runs of out-of-sync blocks, at most 1 MiB each. */
static void
rs_oos(struct evbuffer *out, const char *name)
{
	struct peer	*p;
	struct meta_peer *mp;
	uint64_t	 b, start, max = REPL_CHUNK / META_BLOCK;

	if ((p = peer_find(name)) == NULL) {
		evbuffer_add_printf(out, "error: oos: no peer %.64s\n", name);
		return;
	}
	mp = &m->peer[p->slot];
	for (b = 0; b < m->nbits; ) {
		if (mp->bm[b / 8] == 0 && b % 8 == 0) {
			b += 8;
			continue;
		}
		if (!(mp->bm[b / 8] & (1 << (b % 8)))) {
			b++;
			continue;
		}
		for (start = b; b < m->nbits && b - start < max &&
		    (mp->bm[b / 8] & (1 << (b % 8))); b++)
			;
		evbuffer_add_printf(out, "%" PRIu64 " %" PRIu64 "\n",
		    start * META_BLOCK, (b - start) * META_BLOCK);
	}
	evbuffer_add_printf(out, "ok\n");
}

/*
 * "sync PEER OFFSET LENGTH [csum]" and "verify PEER OFFSET LENGTH": one
 * resync request; the answer comes when it is done.  We must be p's sync
 * source (or in sync with it, to verify or repair), and no other primary
 * may be writing to it.
 */
/*
 * A request for [off, off + len) of p refused: the answer names the range,
 * as every answer to a request does (resyncd counts what is in flight).
 */
static void __attribute__((format(printf, 6, 7)))
rs_refuse(struct evbuffer *out, const char *cmd, struct peer *p,
    unsigned long long off, unsigned long long len, const char *fmt, ...)
{
	va_list	ap;

	evbuffer_add_printf(out, "error: %s %s %llu %llu: ", cmd, p->name, off,
	    len);
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\n", 1);
}

static void
rs_command(struct ctlc *c, char *line)
{
	struct evbuffer	*out = bufferevent_get_output(c->bev);
	struct peer	*p, *o;
	struct rsreq	*q;
	char		*w[6], *ep, *save;
	unsigned long long off, len = 0;
	int		 n = 0, kind;

	for (w[n] = strtok_r(line, " ", &save); w[n] != NULL && n < 5;
	    w[++n] = strtok_r(NULL, " ", &save))
		;
	kind = strcmp(w[0], "verify") == 0 ? RS_VERIFY : RS_DATA;
	if (n == 5 && kind == RS_DATA && strcmp(w[4], "csum") == 0)
		kind = RS_CSUM;
	else if (n != 4) {
		evbuffer_add_printf(out, "error: usage: sync PEER OFFSET "
		    "LENGTH [csum] | verify PEER OFFSET LENGTH\n");
		return;
	}
	if ((p = peer_find(w[1])) == NULL) {
		evbuffer_add_printf(out, "error: %s: no peer %.64s\n", w[0],
		    w[1]);
		return;
	}
	errno = 0;
	off = strtoull(w[2], &ep, 10);
	if (*ep == '\0' && errno == 0)
		len = strtoull(w[3], &ep, 10);
	if (*w[2] == '\0' || *w[3] == '\0' || *ep != '\0' || errno != 0 ||
	    off % META_BLOCK || len % META_BLOCK || len == 0 ||
	    len > REPL_CHUNK || off > m->size || len > m->size - off) {
		evbuffer_add_printf(out, "error: %s %s %.32s %.32s: not a range "
		    "of 4 KiB blocks inside the disk, at most 1 MiB\n", w[0],
		    p->name, w[2], w[3]);
		return;
	}
	if (p->link == NULL || !p->hello) {
		rs_refuse(out, w[0], p, off, len, "not connected");
		return;
	}
	if (!((p->st == PS_NEEDS_RESYNC && p->bm_sent && p->bm_got) ||
	    (p->st == PS_UPTODATE && !(p->flags & REPL_F_PRIMARY)))) {
		rs_refuse(out, w[0], p, off, len, "this node is not its sync "
		    "source (peer state %s%s)", pstate_names[p->st],
		    p->st == PS_NEEDS_RESYNC ? ", bitmaps not yet exchanged" :
		    "");
		return;
	}
	TAILQ_FOREACH(o, &peers, entry)
		if (!primary && o->link != NULL && o->hello &&
		    (o->flags & REPL_F_PRIMARY)) {
			rs_refuse(out, w[0], p, off, len, "%s is primary and "
			    "resyncs it", o->name);
			return;
		}
	if (nrs >= RS_MAX) {
		rs_refuse(out, w[0], p, off, len, "%u requests under way "
		    "already", nrs);
		return;
	}
	if ((q = calloc(1, sizeof(*q))) == NULL)
		fatal("calloc");
	q->p = p;
	q->c = c;
	q->pgen = p->gen;
	q->id = ++rsid;
	q->off = off;
	q->len = len;
	q->kind = kind;
	nrs++;
	rs_start(q);
}

static void
rs_ctl_gone(struct ctlc *c)
{
	struct rsreq	*q;

	TAILQ_FOREACH(q, &rsq, entry)
		if (q->c == c)
			q->c = NULL;
	TAILQ_FOREACH(q, &rswait, entry)
		if (q->c == c)
			q->c = NULL;
}

static void
rs_status(struct evbuffer *o, struct peer *p)
{
	const char	*what = "none";

	if (p->link != NULL && p->hello) {
		if (p->st == PS_NEEDS_RESYNC)
			what = p->bm_got && p->bm_sent ? "source" : "bitmap";
		else if (p->st == PS_SYNC_TARGET)
			what = p->bm_got && p->bm_sent ? "target" : "bitmap";
	}
	evbuffer_add_printf(o, "peer.%s.resync=%s\npeer.%s.resync_full=%d\n"
	    "peer.%s.peer_empty=%d\npeer.%s.resync_start_bytes=%" PRIu64
	    "\npeer.%s.resync_sent_bytes=%" PRIu64 "\npeer.%s."
	    "resync_received_bytes=%" PRIu64 "\npeer.%s.resync_inflight=%u\n"
	    "peer.%s.verify_differ_blocks=%" PRIu64 "\n", p->name, what,
	    p->name, p->rs_full, p->name, p->peer_empty, p->name,
	    p->rs_start_oos * META_BLOCK, p->name, p->rs_sent, p->name,
	    p->rs_recv, p->name, p->rs_inflight, p->name, p->verify_diff);
}

/*
 * --- diskless ----------------------------------------------------------
 *
 * When the primary's store fails (an error from a read, a write or a
 * flush) while an up-to-date sync peer is connected, the store is
 * detached instead of failing the request: the descriptor is replaced by
 * the read end of a pipe, on which every operation fails at once, and
 * the data is marked inconsistent in the metadata.  The request that
 * failed and everything after it go through the peer: a write was sent
 * to it anyway and is answered on its ACK; a read becomes READ messages
 * (at most REPL_CHUNK each) answered by READ_DATA; a FLUSH is the peer's.
 * Without such a peer, errors reach the client as before.  If the peer
 * goes away while we are diskless, what it had not acknowledged fails
 * (EIO), reads in flight are held again, and new requests are held (-q
 * suspend) or fail (otherwise) until it is back.  Our identifiers do not
 * move for it meanwhile: it holds the only copy.
 *
 * "attach DEVICE" puts a replacement store (at least the resource's
 * size) in the same descriptor and pulls the whole resource from the
 * peer, REPL_CHUNK at a time, DL_PULLS at once, while serving.  A pull
 * waits for the writes in flight on its range and holds back new ones
 * until its data is written, so that pulled data never overwrites a
 * newer write; writes go to the new store and the peer as usual.  Reads
 * of a range not yet pulled still go to the peer.  When every range is
 * in and synced the node is up to date again.
 */
enum { DP_FREE, DP_WAIT, DP_READ, DP_WRITE };
#define DL_PULLS	4
#define DL_LOST		1	/* nbd_req.state: the read's peer left */
#define DL_GEN()	((int)(dl_gen & 0x7fffffff))	/* in nbd_req.fd */

struct dlpull {
	struct ioq_job	 job;
	int		 state;		/* DP_* */
	uint64_t	 off, gen;
	uint32_t	 len;
	int		 err;
	unsigned char	*buf;
};

/* a READ sent to the peer and not yet answered */
struct dlrd {
	TAILQ_ENTRY(dlrd)	 entry;
	struct peer		*p;
	uint64_t		 pgen, gen, id, off;
	uint32_t		 len;
	struct nbd_req		*r;	/* an application read, or */
	struct dlpull		*pull;	/* a range being pulled */
};

static int		 dl_pipe = -1, dl_syncing;
static uint64_t		 dl_gen, dl_sync_gen, dl_id, dl_detaches;
static uint64_t		 dl_reads_n;
static uint64_t		 dl_read_bytes, dl_pulled, dl_next, dl_nchunks;
static unsigned char	*dl_chunks;	/* attach: 0 todo, 1 under way,
					   2 pulled; per REPL_CHUNK */
static struct dlpull	 dl_pulls[DL_PULLS];
static TAILQ_HEAD(, dlrd) dl_rds = TAILQ_HEAD_INITIALIZER(dl_rds);
static struct reqq	 dl_later = TAILQ_HEAD_INITIALIZER(dl_later);
static struct event	*dl_ev;
static struct ioq_job	 dl_syncjob;
static char		*dl_device;

/* The peer we read through: sync, connected, up to date, secondary. */
static struct peer *
dl_peer(void)
{
	struct peer	*p;

	TAILQ_FOREACH(p, &peers, entry)
		if (!p->async && p->link != NULL && p->hello &&
		    p->st == PS_UPTODATE && !(p->flags & REPL_F_PRIMARY))
			return p;
	return NULL;
}

static void
dl_later_cb(evutil_socket_t fd, short what, void *arg)
{
	struct nbd_req	*r;
	struct reqq	 q;

	(void)fd;
	(void)what;
	(void)arg;
	TAILQ_INIT(&q);
	TAILQ_CONCAT(&q, &dl_later, entry);
	while ((r = TAILQ_FIRST(&q)) != NULL) {
		TAILQ_REMOVE(&q, r, entry);
		req_maybe_done(r);
	}
	nbd_server_flush(srv);
}

/* Finish a write-type request from the loop, not from inside a walk. */
static void
dl_defer(struct nbd_req *r)
{
	if (dl_ev == NULL && (dl_ev = event_new(base, -1, 0, dl_later_cb,
	    NULL)) == NULL)
		fatalx("event_new");
	TAILQ_INSERT_TAIL(&dl_later, r, entry);
	event_active(dl_ev, EV_TIMEOUT, 0);
}

/* The attached store holds [off, off + len): every chunk pulled. */
static int
dl_local(uint64_t off, uint32_t len)
{
	uint64_t	c;

	if (dl_state == DL_NORMAL)
		return 1;
	if (dl_state != DL_ATTACHING || dl_chunks == NULL)
		return 0;
	for (c = off / REPL_CHUNK; c <= (off + len - 1) / REPL_CHUNK; c++)
		if (dl_chunks[c] != 2)
			return 0;
	return 1;
}

/* Detach the store: from now on the peer serves. */
static void
dl_detach(const char *why, int e)
{
	struct peer	*p = dl_peer();
	int		 fds[2], i;

	if (dl_pipe == -1) {
		if (pipe2(fds, O_CLOEXEC) == -1)
			fatal("pipe");
		close(fds[1]);
		dl_pipe = fds[0];
	}
	/* Workers in flight finish on the old file; new I/O fails. */
	if (dup3(dl_pipe, devfd, O_CLOEXEC) == -1)
		fatal("dup3");
	dl_state = DL_DISKLESS;
	dl_gen++;
	dl_detaches++;
	for (i = 0; i < DL_PULLS; i++)
		if (dl_pulls[i].state != DP_WRITE)
			dl_pulls[i].state = DP_FREE;
	free(dl_chunks);
	dl_chunks = NULL;
	m->flags &= ~(META_F_CONSISTENT | META_F_UPTODATE);
	bm_gen++;
	meta_commit();
	log_warnx("%s: %s%s%s; detached, serving through peer %s", devpath,
	    why, e ? ": " : "", e ? strerror(e) : "", p != NULL ? p->name :
	    "-");
	emit("detach", "reason=\"%s%s%s\" peer=%s", why, e ? ": " : "",
	    e ? strerror(e) : "", p != NULL ? p->name : "-");
	retry_writes();		/* writes that waited for a pull */
}

/*
 * A local request failed with e: 1 if the store is (now) detached and
 * the caller goes on through the peer, 0 if the error goes to the client.
 */
static int
dl_io_failed(struct nbd_req *r, int e)
{
	static const char *what[] = { "read error", "write error", "?",
	    "flush error", "trim error", "?", "write-zeroes error" };

	if (!primary || dl_peer() == NULL)
		return 0;
	if (dl_state == DL_ATTACHING && r->fd != DL_GEN())
		return 1;	/* from the store detached before */
	if (dl_state != DL_DISKLESS)
		dl_detach(r->type < nitems(what) ? what[r->type] : "error", e);
	return 1;
}

/* Which store a local job goes to: an error of a detached one is old. */
static void
dl_mark(struct nbd_req *r)
{
	r->fd = DL_GEN();
}

/* "detach": stop using the store, as if it had failed. */
static void
dl_detach_cmd(struct evbuffer *out)
{
	if (dl_state == DL_DISKLESS) {
		evbuffer_add_printf(out, "error: detach: already detached\n");
		return;
	}
	if (!primary || dl_peer() == NULL) {
		evbuffer_add_printf(out, "error: detach: %s\n", !primary ?
		    "not primary" : "no up-to-date sync peer to serve through");
		return;
	}
	dl_detach("detach command", 0);
	evbuffer_add_printf(out, "ok\n");
}

/* submit: without the store and without a peer, hold or fail. */
static int
dl_hold(struct nbd_req *r)
{
	if (dl_state == DL_NORMAL || dl_peer() != NULL)
		return 0;
	if (qmode == Q_SUSPEND) {
		TAILQ_INSERT_TAIL(&held, r, entry);
		nheld++;
		return 1;
	}
	nbd_req_done(r, EIO);
	return 1;
}

static int
dl_send_read(struct peer *p, struct nbd_req *r, struct dlpull *pl,
    uint64_t off, uint32_t len)
{
	struct dlrd	*q;
	unsigned char	 b[REPL_READ_SIZE];

	if ((q = calloc(1, sizeof(*q))) == NULL)
		fatal("calloc");
	q->p = p;
	q->pgen = p->gen;
	q->gen = dl_gen;
	q->id = ++dl_id;
	q->off = off;
	q->len = len;
	q->r = r;
	q->pull = pl;
	if (link_send(p->link, REPL_READ, b, repl_read_enc(b, q->id, off,
	    len)) == -1) {
		log_warn("peer %s: read", p->name);
		free(q);
		return -1;
	}
	TAILQ_INSERT_TAIL(&dl_rds, q, entry);
	return 0;
}

/* Every piece of an application read is in (or lost). */
static void
dl_read_done(struct nbd_req *r)
{
	disk_inflight--;
	if (r->state == DL_LOST && qmode == Q_SUSPEND) {
		TAILQ_INSERT_TAIL(&held, r, entry);
		nheld++;
		return;
	}
	if (r->lerr != 0)
		io_error(r, r->lerr);
	nbd_req_done(r, r->lerr);
}

/* An application read through the peer (counted in disk_inflight). */
static void
dl_read_peer(struct nbd_req *r)
{
	struct peer	*p = dl_peer();
	uint64_t	 off, end = r->offset + r->len;
	uint32_t	 n;

	r->acks = 0;
	r->lerr = 0;
	r->state = 0;
	if (p == NULL) {
		r->state = DL_LOST;
		r->lerr = EIO;
	}
	for (off = r->offset; p != NULL && off < end; off += n) {
		n = end - off < REPL_CHUNK ? end - off : REPL_CHUNK;
		if (dl_send_read(p, r, NULL, off, n) == -1) {
			r->lerr = EIO;
			break;
		}
		r->acks++;
	}
	if (r->acks == 0)
		dl_read_done(r);
}

/* submit: a read the attached store cannot answer yet goes to the peer. */
static int
dl_read(struct nbd_req *r)
{
	if (r->len == 0 || dl_local(r->offset, r->len))
		return 0;
	dl_reads_n++;
	dl_read_peer(r);
	return 1;
}

/* submit, retry_writes: a write-type request while not attached. */
static int
dl_write(struct nbd_req *r)
{
	if (dl_state == DL_NORMAL)
		return 0;
	if (dl_peer() == NULL) {
		/* Its only copy would be nowhere. */
		r->local_done = 1;
		r->lerr = EIO;
		dl_defer(r);
		return 1;
	}
	repl_write(r);
	if (dl_state == DL_ATTACHING) {
		start_chunk(r);
		return 1;
	}
	r->local_done = 1;
	if (r->acks == 0) {
		r->lerr = EIO;
		dl_defer(r);
	}
	return 1;
}

/* submit: a FLUSH while diskless is the peer's (sent already). */
static int
dl_flush(struct nbd_req *r)
{
	if (dl_state != DL_DISKLESS)
		return 0;
	r->local_done = 1;
	if (r->acks == 0) {
		r->lerr = EIO;
		req_maybe_done(r);
	}
	return 1;
}

/* blocked: a write waits for a pull under way on its range. */
static int
dl_blocks(struct nbd_req *r)
{
	struct dlpull	*pl;
	int		 i;

	for (i = 0; i < DL_PULLS; i++) {
		pl = &dl_pulls[i];
		/* A write of an older attach still writes, too. */
		if (((pl->state == DP_READ && pl->gen == dl_gen) ||
		    pl->state == DP_WRITE) && r->offset < pl->off + pl->len &&
		    pl->off < r->offset + r->len)
			return 1;
	}
	return 0;
}

static void	dl_check_done(void);

static void
dl_done_sync(struct ioq_job *j)
{
	struct peer	*p = dl_peer();

	disk_inflight--;
	dl_syncing = 0;
	if (dl_state != DL_ATTACHING)
		return;
	if (dl_sync_gen != dl_gen) {
		/* Detached and attached again meanwhile. */
		dl_check_done();
		return;
	}
	if (j->err != 0) {
		dl_detach("sync error on the attached store", j->err);
		return;
	}
	dl_state = DL_NORMAL;
	free(dl_chunks);
	dl_chunks = NULL;
	m->flags |= META_F_CONSISTENT | META_F_UPTODATE;
	bm_gen++;
	meta_commit();
	log_info("%s: attached and in sync, %" PRIu64 " bytes from peer %s",
	    devpath, dl_pulled, p != NULL ? p->name : "-");
	emit("resync-done", "peer=%s role=attach received_bytes=%" PRIu64,
	    p != NULL ? p->name : "-", dl_pulled);
}

static void
dl_work_sync(struct ioq_job *j)
{
	j->err = store_sync(WB_APP);
}

/* Every range pulled and written: sync the store, then we are whole. */
static void
dl_check_done(void)
{
	uint64_t	c;
	int		i;

	if (dl_state != DL_ATTACHING || dl_syncing)
		return;
	for (i = 0; i < DL_PULLS; i++)
		if (dl_pulls[i].state != DP_FREE)
			return;
	for (c = 0; c < dl_nchunks; c++)
		if (dl_chunks[c] != 2)
			return;
	dl_syncing = 1;
	dl_sync_gen = dl_gen;
	dl_syncjob.work = dl_work_sync;
	dl_syncjob.done = dl_done_sync;
	dl_syncjob.slow = 1;
	disk_inflight++;
	ioq_submit(ioq, &dl_syncjob);
}

/* Start a pull unless a write in flight overlaps it. */
static void
dl_pull_start(struct dlpull *pl)
{
	struct nbd_req	*o;
	struct peer	*p = dl_peer();
	int		 i;

	TAILQ_FOREACH(o, &wlist, wentry)
		if (o->offset < pl->off + pl->len && pl->off < o->offset +
		    o->len)
			return;
	for (i = 0; i < DL_PULLS; i++)
		if (dl_pulls[i].state == DP_WRITE && dl_pulls[i].off ==
		    pl->off)
			return;	/* of an older attach */
	if (p == NULL || dl_send_read(p, NULL, pl, pl->off, pl->len) == -1) {
		dl_chunks[pl->off / REPL_CHUNK] = 0;
		dl_next = 0;
		pl->state = DP_FREE;
		return;
	}
	pl->state = DP_READ;
}

static void
dl_pull_next(void)
{
	struct dlpull	*pl;
	int		 i;

	if (dl_state != DL_ATTACHING || dl_peer() == NULL)
		return;
	for (i = 0; i < DL_PULLS; i++) {
		pl = &dl_pulls[i];
		if (pl->state != DP_FREE)
			continue;
		while (dl_next < dl_nchunks && dl_chunks[dl_next] != 0)
			dl_next++;
		if (dl_next >= dl_nchunks)
			break;
		if (pl->buf == NULL && (pl->buf = malloc(REPL_CHUNK)) == NULL)
			fatal("malloc");
		pl->off = dl_next * REPL_CHUNK;
		pl->len = m->size - pl->off < REPL_CHUNK ? m->size - pl->off :
		    REPL_CHUNK;
		pl->gen = dl_gen;
		dl_chunks[dl_next++] = 1;
		pl->state = DP_WAIT;
		dl_pull_start(pl);
	}
	dl_check_done();
}

/* finish_write: pulls that waited for writes may go now. */
static void
dl_retry(void)
{
	int	i;

	if (dl_state != DL_ATTACHING)
		return;
	for (i = 0; i < DL_PULLS; i++)
		if (dl_pulls[i].state == DP_WAIT)
			dl_pull_start(&dl_pulls[i]);
	dl_pull_next();
}

static void
dl_work_pull(struct ioq_job *j)
{
	struct dlpull	*pl = (struct dlpull *)(void *)j;
	uint32_t	 done = 0;
	ssize_t		 n;

	pl->err = 0;
	while (done < pl->len) {
		n = pwrite(devfd, pl->buf + done, pl->len - done,
		    pl->off + done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			j->err = errno;
			return;
		}
		done += n;
	}
}

static void
dl_done_pull(struct ioq_job *j)
{
	struct dlpull	*pl = (struct dlpull *)(void *)j;

	disk_inflight--;
	pl->state = DP_FREE;
	if (pl->gen != dl_gen || dl_state != DL_ATTACHING)
		;
	else if (j->err != 0)
		dl_detach("write error on the attached store", j->err);
	else {
		dl_chunks[pl->off / REPL_CHUNK] = 2;
		dl_pulled += pl->len;
	}
	retry_writes();
	dl_retry();
	update_eager();
}

/* A pull's data came: write it to the attached store. */
static void
dl_pull_data(struct dlpull *pl, uint32_t e, const unsigned char *data)
{
	if (e != 0) {
		dl_chunks[pl->off / REPL_CHUNK] = 0;
		pl->state = DP_FREE;
		dl_detach("the peer could not read for the resync", e);
		return;
	}
	memcpy(pl->buf, data, pl->len);
	pl->state = DP_WRITE;
	pl->job.work = dl_work_pull;
	pl->job.done = dl_done_pull;
	pl->job.err = 0;
	pl->job.slow = 1;
	disk_inflight++;
	ioq_submit(ioq, &pl->job);
}

/* peer_down: its reads are lost (held again), pulls start over later. */
static void
dl_peer_down(struct peer *p)
{
	struct dlrd	*q, *tmp;
	struct nbd_req	*r;
	int		 i;

	TAILQ_FOREACH_SAFE(q, &dl_rds, entry, tmp) {
		if (q->p != p)
			continue;
		TAILQ_REMOVE(&dl_rds, q, entry);
		if ((r = q->r) != NULL) {
			r->state = DL_LOST;
			r->lerr = EIO;
			if (--r->acks == 0)
				dl_read_done(r);
		}
		free(q);
	}
	if (dl_state != DL_ATTACHING)
		return;
	for (i = 0; i < DL_PULLS; i++)
		if (dl_pulls[i].state == DP_WAIT ||
		    dl_pulls[i].state == DP_READ) {
			dl_chunks[dl_pulls[i].off / REPL_CHUNK] = 0;
			dl_pulls[i].state = DP_FREE;
		}
	dl_next = 0;
	retry_writes();
}

/* peer_down: a sync peer's acknowledgement is our only copy. */
static int
dl_keep_gi(struct peer *p)
{
	return dl_state != DL_NORMAL && !p->async;
}

static void
dl_work_read(struct ioq_job *j)
{
	struct rjob	*rj = (struct rjob *)(void *)j;

	j->err = read_full(rj->data + REPL_READ_DATA_HDR, rj->len, rj->off);
}

static void
dl_done_read(struct ioq_job *j)
{
	struct rjob	*rj = (struct rjob *)(void *)j;
	struct peer	*p = rj->p;

	disk_inflight--;
	if (p->gen == rj->gen && p->link != NULL) {
		repl_rdata_enc(rj->data, rj->seq, j->err);
		link_send(p->link, REPL_READ_DATA, rj->data,
		    REPL_READ_DATA_HDR + (j->err == 0 ? rj->len : 0));
	}
	free(rj);
}

/* READ and READ_DATA from p; -1 drops the link. */
static int
dl_message(struct peer *p, unsigned type, const void *buf, size_t len)
{
	const unsigned char	*data;
	unsigned char		 b[REPL_READ_DATA_HDR];
	struct rjob		*rj;
	struct dlrd		*q;
	struct nbd_req		*r;
	uint64_t		 id, off;
	uint32_t		 n, e;
	size_t			 dn;

	if (type == REPL_READ) {
		if (repl_read_dec(buf, len, m->size, &id, &off, &n) == -1)
			return -1;
		if (primary || p->st != PS_UPTODATE || dl_state != DL_NORMAL ||
		    !(m->flags & META_F_UPTODATE)) {
			link_send(p->link, REPL_READ_DATA, b,
			    repl_rdata_enc(b, id, EIO));
			return 0;
		}
		if ((rj = calloc(1, sizeof(*rj) + REPL_READ_DATA_HDR + n)) ==
		    NULL)
			fatal("calloc");
		rj->p = p;
		rj->gen = p->gen;
		rj->seq = id;
		rj->off = off;
		rj->len = n;
		rj->job.work = dl_work_read;
		rj->job.done = dl_done_read;
		rj->job.slow = 1;
		disk_inflight++;
		ioq_submit(ioq, &rj->job);
		return 0;
	}
	if (repl_rdata_dec(buf, len, &id, &e, &data, &dn) == -1)
		return -1;
	TAILQ_FOREACH(q, &dl_rds, entry)
		if (q->id == id && q->p == p && q->pgen == p->gen)
			break;
	if (q == NULL || (e == 0 && dn != q->len))
		return -1;
	TAILQ_REMOVE(&dl_rds, q, entry);
	if ((r = q->r) != NULL) {
		if (e != 0)
			r->lerr = e;
		else {
			memcpy(r->buf + (q->off - r->offset), data, dn);
			dl_read_bytes += dn;
		}
		if (--r->acks == 0)
			dl_read_done(r);
		nbd_server_flush(srv);
	} else if (q->gen == dl_gen && q->pull->gen == dl_gen &&
	    q->pull->state == DP_READ)
		dl_pull_data(q->pull, e, data);
	free(q);
	return 0;
}

/* "attach DEVICE": a replacement store, pulled in the background. */
static void
dl_attach(struct evbuffer *out, const char *path)
{
	struct peer	*p;
	uint64_t	 size;
	int		 fd;

	if (dl_state != DL_DISKLESS) {
		evbuffer_add_printf(out, "error: attach: the store is not "
		    "detached (disk=%s)\n", disk_state());
		return;
	}
	if ((p = dl_peer()) == NULL) {
		evbuffer_add_printf(out, "error: attach %.200s: no up-to-date "
		    "sync peer to resync from\n", path);
		return;
	}
	if ((fd = open(path, O_RDWR | O_CLOEXEC)) == -1 ||
	    store_size(fd, &size) == -1) {
		evbuffer_add_printf(out, "error: attach %.200s: %s\n", path,
		    strerror(errno));
		if (fd != -1)
			close(fd);
		return;
	}
	if (size < m->size) {
		evbuffer_add_printf(out, "error: attach %.200s: %" PRIu64
		    " bytes, fewer than the resource's %" PRIu64 "\n", path,
		    size, m->size);
		close(fd);
		return;
	}
	if (dup3(fd, devfd, O_CLOEXEC) == -1)
		fatal("dup3");
	close(fd);
	store_errors_forget();
	free(dl_device);
	if ((dl_device = strdup(path)) == NULL)
		fatal("strdup");
	devpath = dl_device;
	dl_nchunks = (m->size + REPL_CHUNK - 1) / REPL_CHUNK;
	if ((dl_chunks = calloc(dl_nchunks, 1)) == NULL)
		fatal("calloc");
	dl_next = dl_pulled = 0;
	dl_state = DL_ATTACHING;
	dl_gen++;
	log_info("%s: attached, %" PRIu64 " bytes to pull from peer %s",
	    path, m->size, p->name);
	emit("attached", "device=%s size=%" PRIu64 " peer=%s", path,
	    m->size, p->name);
	evbuffer_add_printf(out, "ok\n");
	dl_pull_next();
}

static const char *
dl_disk_state(void)
{
	return dl_state == DL_DISKLESS ? "diskless" : NULL;
}

static void
dl_status(struct evbuffer *o)
{
	static const char *names[] = { "attached", "detached", "attaching" };

	evbuffer_add_printf(o, "store=%s\nstore_path=%s\nstore_detaches=%"
	    PRIu64 "\npeer_reads=%" PRIu64 "\npeer_read_bytes=%" PRIu64
	    "\nattach_pulled_bytes=%" PRIu64 "\nattach_total_bytes=%" PRIu64
	    "\n", names[dl_state], devpath, dl_detaches, dl_reads_n,
	    dl_read_bytes, dl_pulled, dl_state == DL_ATTACHING ? m->size : 0);
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
	case REPL_PING:
		if (len != 0)
			goto bad;
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
		else
			incons_later();
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
			if (jsrc != p && jend > jbound)
				journal_cut();	/* a new primary's stream */
			jsrc = p;
			journal_append(&d);
			return;
		}
		rjob_submit(p, RJ_REPL, d.seq, d.cmd, d.offset, d.len,
		    d.flags, d.data, d.data != NULL ? d.len : 0);
		return;
	case REPL_FLUSH:
		if (repl_flush_dec(buf, len, &f) == -1 || primary)
			goto bad;
		if (f.flags & REPL_D_ASYNC) {
			journal_boundary(p, &f);
			return;
		}
		flush_seen = now_usec();
		rjob_submit(p, RJ_REPL, f.seq, NBD_CMD_FLUSH, 0, 0, 0, NULL,
		    0);
		return;
	case REPL_SB:
		if (sb_message(p, buf, len) == -1)
			goto bad;
		return;
	default:
		if (rs_message(p, type, buf, len) == -1)
			goto bad;
		return;
	case REPL_READ:
	case REPL_READ_DATA:
		if (dl_message(p, type, buf, len) == -1)
			goto bad;
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
				if (e != 0 && (pd->flush ||
				    dl_state != DL_NORMAL))
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

/*
 * Keepalive: a link over which no byte came for -D is dead, even if TCP
 * does not know it yet (a cable pulled, a partition): a peer that looked
 * connected would veto a promotion and count for quorum.  Bytes, not
 * messages, count, so that a slow link busy with a large message lives.
 * An idle link carries a PING a second.
 */
static void
keepalive(evutil_socket_t fd, short what, void *arg)
{
	struct link_stats	 st;
	struct link		*l;
	struct peer		*p;
	uint64_t		 now = now_usec();
	char			 why[128], t[32];

	(void)fd;
	(void)what;
	(void)arg;
	TAILQ_FOREACH(p, &peers, entry) {
		if (p->link == NULL)
			continue;
		link_get_stats(p->link, &st);
		if (st.wire_in != p->ka_bytes) {
			p->ka_bytes = st.wire_in;
			p->ka_t = now;
		} else if (now - p->ka_t > ka_dead) {
			snprintf(why, sizeof(why), "nothing from the peer for "
			    "%s: link dead", fmt_duration(now - p->ka_t, t,
			    sizeof(t)));
			/* At once: a dead link would drain for seconds. */
			log_warnx("peer %s: %s", p->name, why);
			snprintf(p->last_error, sizeof(p->last_error), "%s",
			    why);
			l = p->link;
			peer_down(p, why);
			link_free(l);
			continue;
		}
		if (link_queued_bytes(p->link) == 0)
			link_send(p->link, REPL_PING, "", 0);
	}
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

/*
 * --- split brain -----------------------------------------------------
 *
 * Two nodes whose generation identifiers say that both moved on from a
 * common ancestor (quorum off, a forced promotion) meet in peer state
 * split-brain.  Their bitmap exchange (see "resync") leaves both holding
 * the union of the blocks either changed: what a resync would overwrite
 * on the victim.  Then each node applies the policy for the number of
 * primaries (-A after-sb-Npri=POLICY, gi_policy_victim()) to the two
 * views as the HELLOs carried them, in node name order, so that both
 * reach the same decision without a word; "disconnect", or a policy that
 * decides nothing, leaves the pair in split-brain for a person ("discard
 * NODE" on either node's control socket; for the peer, an SB DISCARD
 * message makes it the victim).
 *
 * The victim first stops being primary (its clients' writes fail from
 * then on) and waits for the writes in flight; then an I/O thread copies
 * every block of its bitmap for the survivor into a save file (savefile.h)
 * and syncs it.  Only then does the victim take the survivor's bitmap
 * identifier as its current one (so that the next HELLO, after any crash,
 * says "target"), marks its data inconsistent, and once that is on disk
 * becomes the survivor's sync target: it sends SB SAVED and its bitmap
 * again (blocks it wrote after the exchange), and the survivor, which
 * stays in split-brain until then, becomes the sync source that resyncd
 * drives.  If the save fails, nothing changes: the pair stays in
 * split-brain.  -e runs a program on each split-brain event.
 */
enum { SB_NONE, SB_WAIT, SB_DRAIN, SB_SAVING, SB_COMMIT, SB_SURVIVOR };
static const char *sb_states[] = { "none", "waiting", "draining",
	"saving", "committing", "survivor" };

#define SB_DISCARD	1	/* REPL_SB codes */
#define SB_SAVED	2
#define SB_PATH_MAX	1024
#define SB_RANGE_MAX	REPL_CHUNK	/* bytes per save record */

struct sbslot {
	struct ioq_job	 job;
	struct peer	*p;
	struct gi_view	 mine, theirs;	/* as the HELLOs said */
	int		 state, np;
	uint64_t	 pgen, need, gen;
	unsigned char	*bm;		/* the bitmap being saved */
	char		 victim[GI_NAME_MAX];
	char		 policy[GI_NAME_MAX + 16];
	char		 reason[128];
	char		 savefile[SB_PATH_MAX];
	char		 err[SB_PATH_MAX + 256];
};

static struct sbslot		 sbs[META_PEERS];
static struct gi_policy_spec	 sbpol[3];	/* zero: disconnect */
static const char		*sbdir, *sbhandler;
static struct event		*sbtimer;

static void	sb_tick(evutil_socket_t, short, void *);

/*
 * -A after-sb-Npri=policy, -B savedir, -e handler.  The save directory is
 * checked here: a bad one would only show when a victim's writes are to be
 * saved, and then nothing can be discarded.
 */
static void
sb_option(int ch, char *arg)
{
	struct stat	 st;
	const char	*e;
	int		 n;

	switch (ch) {
	case 'B':
		if (stat(arg, &st) == -1)
			err(EXIT_USAGE, "-B %s", arg);
		if (!S_ISDIR(st.st_mode))
			errx(EXIT_USAGE, "-B %s: not a directory", arg);
		if (faccessat(AT_FDCWD, arg, W_OK | X_OK, AT_EACCESS) == -1)
			err(EXIT_USAGE, "-B %s: not writable", arg);
		sbdir = arg;
		return;
	case 'e':
		sbhandler = arg;
		return;
	}
	if (strncmp(arg, "after-sb-", 9) != 0 || (n = arg[9]) < '0' ||
	    n > '2' || strncmp(arg + 10, "pri=", 4) != 0)
		errx(EXIT_USAGE, "-A %s: want after-sb-0pri=, after-sb-1pri= "
		    "or after-sb-2pri=", arg);
	if ((e = gi_policy_parse(arg + 14, &sbpol[n - '0'])) != NULL)
		errx(EXIT_USAGE, "-A %s: %s", arg, e);
}

static void
sb_reap(evutil_socket_t fd, short what, void *arg)
{
	pid_t	pid;
	int	st;

	(void)fd;
	(void)what;
	(void)arg;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			log_debug("handler %ld: done", (long)pid);
		else if (WIFEXITED(st))
			log_warnx("handler %s: exit status %d", sbhandler,
			    WEXITSTATUS(st));
		else if (WIFSIGNALED(st))
			log_warnx("handler %s: signal %d", sbhandler,
			    WTERMSIG(st));
	}
}

static void
sb_init(void)
{
	struct event	*ev;
	char		*d;

	if (sbdir == NULL) {
		/* next to the metadata */
		if ((d = strdup(metapath)) == NULL)
			fatal("strdup");
		if (strrchr(d, '/') != NULL)
			*strrchr(d, '/') = '\0';
		else
			strcpy(d, ".");
		sbdir = d;
	}
	if ((sbtimer = evtimer_new(base, sb_tick, NULL)) == NULL)
		fatalx("evtimer_new");
	if (sbhandler != NULL) {
		if ((ev = evsignal_new(base, SIGCHLD, sb_reap, NULL)) == NULL ||
		    event_add(ev, NULL) == -1)
			fatalx("SIGCHLD");
	}
}

/*
 * sb_run: run the handler for event, never waiting for it: "handler
 * EVENT PEER" with the details in HATRIO_* variables.  Everything the
 * child needs is made before fork (the I/O threads may hold locks).
 */
static void
sb_run(const char *event, struct peer *p)
{
	extern char	**environ;
	struct sbslot	*s = &sbs[p->slot];
	char		*env[16], **envp, *argv[4];
	size_t		 n = 0, ne, i;
	pid_t		 pid;

	if (sbhandler == NULL)
		return;
	if (asprintf(&env[n++], "HATRIO_EVENT=%s", event) == -1 ||
	    asprintf(&env[n++], "HATRIO_NODE=%s", m->node) == -1 ||
	    asprintf(&env[n++], "HATRIO_PEER=%s", p->name) == -1 ||
	    asprintf(&env[n++], "HATRIO_VICTIM=%s", s->victim) == -1 ||
	    asprintf(&env[n++], "HATRIO_POLICY=%s", s->policy) == -1 ||
	    asprintf(&env[n++], "HATRIO_PRIMARIES=%d", s->np) == -1 ||
	    asprintf(&env[n++], "HATRIO_REASON=%s", s->err[0] ? s->err :
	    s->reason) == -1 ||
	    asprintf(&env[n++], "HATRIO_SAVEFILE=%s", s->savefile) == -1)
		fatal("asprintf");
	for (ne = 0; environ[ne] != NULL; ne++)
		;
	if ((envp = calloc(ne + n + 1, sizeof(*envp))) == NULL)
		fatal("calloc");
	for (i = 0; i < ne; i++)
		envp[i] = environ[i];
	for (i = 0; i < n; i++)
		envp[ne + i] = env[i];
	argv[0] = (char *)sbhandler;
	argv[1] = (char *)event;
	argv[2] = p->name;
	argv[3] = NULL;
	if ((pid = fork()) == -1)
		log_warn("handler %s", sbhandler);
	else if (pid == 0) {
		int	fd = open("/dev/null", O_RDONLY);

		if (fd != -1)
			dup2(fd, 0);
		dup2(2, 1);
		closefrom(3);
		execve(sbhandler, argv, envp);
		_exit(127);
	} else
		log_debug("handler %s %s %s: pid %ld", sbhandler, event,
		    p->name, (long)pid);
	for (i = 0; i < n; i++)
		free(env[i]);
	free(envp);
}

/* What we told p in HELLO: one half of the policy's input. */
static void
sb_sent(struct peer *p, const struct repl_hello *h)
{
	struct gi_view	*v = &sbs[p->slot].mine;

	memset(v, 0, sizeof(*v));
	snprintf(v->name, sizeof(v->name), "%s", m->node);
	v->current = h->current;
	v->bitmap = h->bitmap;
	memcpy(v->history, h->history, sizeof(v->history));
	v->crashed_primary = (h->flags & REPL_F_CRASHED) != 0;
	v->primary = (h->flags & REPL_F_PRIMARY) != 0;
	v->promoted_at = h->promoted_at;
	v->changes = h->oos_blocks;
}

static int
sb_busy(const struct sbslot *s)
{
	return s->state == SB_DRAIN || s->state == SB_SAVING ||
	    s->state == SB_COMMIT;
}

/* After HELLO: the other half; announce a split brain. */
static void
sb_hello(struct peer *p, const struct gi_view *peer,
    const struct gi_decision *d)
{
	struct sbslot	*s = &sbs[p->slot];

	s->p = p;
	s->theirs = *peer;
	if (sb_busy(s))
		return;		/* a save under way ends first */
	s->state = SB_NONE;
	if (d->verdict != GI_SPLIT_BRAIN)
		return;
	s->state = SB_WAIT;
	s->np = 0;
	s->victim[0] = s->policy[0] = s->savefile[0] = s->err[0] = '\0';
	snprintf(s->reason, sizeof(s->reason), "%s", d->why);
	log_warnx("peer %s: split brain: %s", p->name, d->why);
	emit("split-brain", "peer=%s full=%d why=\"%s\"", p->name, d->full,
	    d->why);
}

/*
 * Writes a quorum held back (never written) or suspended (written here,
 * never acknowledged) end with an error: this node's writes are being
 * discarded (the suspended ones are in the save file).
 */
static void
sb_fail_waiting(void)
{
	struct nbd_req	*r;

	while ((r = TAILQ_FIRST(&held)) != NULL) {
		TAILQ_REMOVE(&held, r, entry);
		nheld--;
		nbd_req_done(r, EIO);
	}
	while ((r = TAILQ_FIRST(&susp)) != NULL) {
		TAILQ_REMOVE(&susp, r, entry);
		nsusp--;
		r->lerr = EIO;
		req_maybe_done(r);
	}
	nbd_server_flush(srv);
}

/* Stop being primary, wait for writes in flight, then save. */
static void
sb_discard_self(struct peer *p)
{
	struct sbslot	*s = &sbs[p->slot];
	struct timeval	 tv = { 0, 0 };

	snprintf(s->victim, sizeof(s->victim), "%s", m->node);
	s->pgen = p->gen;
	s->err[0] = '\0';
	s->state = SB_DRAIN;
	if (primary) {
		log_warnx("split brain with %s: this node is the victim; "
		    "demoted, its writes since are refused", p->name);
		forced = 0;
		set_role(0);
	}
	sb_fail_waiting();
	evtimer_add(sbtimer, &tv);
}

/* Both bitmaps are in: apply the policy. */
static void
sb_ready(struct peer *p)
{
	struct sbslot		*s = &sbs[p->slot];
	const struct gi_view	*a, *b;
	const char		*why;
	int			 v;

	if (s->state != SB_WAIT)
		return;
	if (p->rs_full) {
		/* no usable bitmap: every block may differ */
		mark_oos(p, 0, m->size);
		meta_commit();
	}
	if (strcmp(s->mine.name, s->theirs.name) < 0) {
		a = &s->mine;
		b = &s->theirs;
	} else {
		a = &s->theirs;
		b = &s->mine;
	}
	s->np = s->mine.primary + s->theirs.primary;
	gi_policy_name(&sbpol[s->np], s->policy, sizeof(s->policy));
	v = gi_policy_victim(&sbpol[s->np], a, b, &why);
	snprintf(s->reason, sizeof(s->reason), "%s", why);
	if (v >= 0)
		snprintf(s->victim, sizeof(s->victim), "%s", v == 0 ? a->name :
		    b->name);
	log_warnx("peer %s: split brain, %d primaries, policy %s: %s%s%s",
	    p->name, s->np, s->policy, v < 0 ? "no victim" : "victim ",
	    v < 0 ? "" : s->victim, v < 0 ? "; waiting for a person" : "");
	emit("split-brain-policy", "peer=%s primaries=%d policy=%s "
	    "victim=%s reason=\"%s\"", p->name, s->np, s->policy,
	    v < 0 ? "none" : s->victim, why);
	sb_run("split-brain", p);
	if (v < 0)
		return;
	if (strcmp(s->victim, m->node) == 0)
		sb_discard_self(p);
	else
		s->state = SB_SURVIVOR;
}

/* In an I/O thread: copy the bitmap's blocks into the save file. */
static void
sb_work(struct ioq_job *j)
{
	struct sbslot		*s = (struct sbslot *)(void *)j;
	struct save_header	 h;
	struct save_writer	 w;
	unsigned char		*buf;
	uint64_t		 bl, start, max = SB_RANGE_MAX / META_BLOCK;
	uint64_t		 off, len;
	ssize_t			 n;

	memset(&h, 0, sizeof(h));
	h.block_size = META_BLOCK;
	h.device_size = m->size;
	h.created = wall_usec();
	h.generation = s->gen;
	snprintf(h.node, sizeof(h.node), "%.24s", m->node);
	if ((buf = malloc(SB_RANGE_MAX)) == NULL) {
		j->err = errno;
		return;
	}
	if (save_create(&w, s->savefile, &h) == -1) {
		snprintf(s->err, sizeof(s->err), "%s: %s", s->savefile,
		    strerror(errno));
		j->err = errno;
		free(buf);
		return;
	}
	for (bl = 0; bl < m->nbits; ) {
		if (!(s->bm[bl / 8] & (1 << (bl % 8)))) {
			bl++;
			continue;
		}
		for (start = bl; bl < m->nbits && bl - start < max &&
		    (s->bm[bl / 8] & (1 << (bl % 8))); bl++)
			;
		off = start * META_BLOCK;
		len = (bl - start) * META_BLOCK;
		if (off + len > m->size)
			len = m->size - off;
		if ((n = pread(devfd, buf, len, off)) != (ssize_t)len) {
			snprintf(s->err, sizeof(s->err), "%s: reading %"
			    PRIu64 "+%" PRIu64 ": %s", devpath, off, len,
			    n == -1 ? strerror(errno) : "short read");
			j->err = n == -1 ? errno : EIO;
			save_abort(&w);
			free(buf);
			return;
		}
		if (save_add(&w, off, buf, len) == -1) {
			snprintf(s->err, sizeof(s->err), "%s: %s",
			    s->savefile, strerror(errno));
			j->err = errno;
			save_abort(&w);
			free(buf);
			return;
		}
	}
	if (save_commit(&w) == -1) {
		snprintf(s->err, sizeof(s->err), "%s: %s", s->savefile,
		    strerror(errno));
		j->err = errno;
	}
	free(buf);
}

/* The save file is complete (or not): give up the data, or stay. */
static void
sb_saved(struct ioq_job *j)
{
	struct sbslot	*s = (struct sbslot *)(void *)j;
	struct peer	*p = s->p;
	uint64_t	 h[GI_HISTORY] = { m->gi_history[0], m->gi_history[1] };
	struct timeval	 tv = { 0, 0 };

	disk_inflight--;
	free(s->bm);
	s->bm = NULL;
	if (j->err != 0) {
		if (s->err[0] == '\0')
			snprintf(s->err, sizeof(s->err), "%s",
			    strerror(j->err));
		log_warnx("split brain with %s: saving failed, nothing "
		    "overwritten: %s", p->name, s->err);
		emit("split-brain-error", "peer=%s reason=\"saving: %s\"",
		    p->name, s->err);
		sb_run("split-brain-error", p);
		s->state = SB_WAIT;
		s->victim[0] = '\0';
		return;
	}
	log_info("split brain with %s: this node's blocks saved in %s",
	    p->name, s->savefile);
	/* from now on the survivor's target, even after a crash */
	gi_push_history(h, m->gi_current);
	m->flags &= ~(META_F_CONSISTENT | META_F_UPTODATE);
	set_gi(s->theirs.bitmap, h);
	s->need = gi_need;
	s->state = SB_COMMIT;
	evtimer_add(sbtimer, &tv);
}

static void
sb_save_start(struct sbslot *s)
{
	struct meta_peer *mp = &m->peer[s->p->slot];

	if ((s->bm = malloc(m->bm_bytes ? m->bm_bytes : 1)) == NULL)
		fatal("malloc");
	memcpy(s->bm, mp->bm, m->bm_bytes);
	s->gen = m->gi_current;
	snprintf(s->savefile, sizeof(s->savefile), "%s/%s-splitbrain-%016"
	    PRIx64 "-%" PRIu64 ".save", sbdir, m->node, m->gi_current,
	    wall_usec() / 1000000);
	log_info("split brain with %s: saving %" PRIu64 " bytes in %s",
	    s->p->name, mp->oos_blocks * META_BLOCK, s->savefile);
	s->state = SB_SAVING;
	memset(&s->job, 0, sizeof(s->job));
	s->job.work = sb_work;
	s->job.done = sb_saved;
	s->job.slow = 1;
	disk_inflight++;
	ioq_submit(ioq, &s->job);
}

static void
sb_send(struct peer *p, int code, const char *path)
{
	unsigned char	*b = link_msg_buf(p->link);
	size_t		 n = strlen(path);

	put_be32(b, code);
	memcpy(b + 4, path, n);
	link_send_buf(p->link, REPL_SB, 4 + n);
}

/* The victim's new identifiers are on disk: become the target. */
static void
sb_committed(struct sbslot *s)
{
	struct peer	*p = s->p;

	s->state = SB_NONE;
	log_info("split brain with %s resolved: this node is its sync "
	    "target", p->name);
	emit("split-brain-resolved", "peer=%s victim=%s savefile=%s",
	    p->name, m->node, s->savefile);
	sb_run("split-brain-resolved", p);
	if (p->gen != s->pgen || p->link == NULL || !p->hello) {
		/* the link went down meanwhile: the next HELLO says target */
		if (p->link != NULL)
			link_close(p->link, "split brain resolved: again");
		return;
	}
	sb_send(p, SB_SAVED, s->savefile);
	p->st = PS_SYNC_TARGET;
	rs_send_bitmap(p);
	rs_ready(p);
	quorum_check();
	peer_flags_changed();
}

static void
sb_tick(evutil_socket_t fd, short what, void *arg)
{
	struct timeval	 tv = { 0, 10000 };
	struct sbslot	*s;
	int		 i, again = 0;

	(void)fd;
	(void)what;
	(void)arg;
	for (i = 0; i < META_PEERS; i++) {
		s = &sbs[i];
		if (s->state == SB_DRAIN) {
			if (TAILQ_EMPTY(&wlist) && nheld == 0 && nsusp == 0)
				sb_save_start(s);
			else
				again = 1;
		} else if (s->state == SB_COMMIT) {
			if (bm_gen_disk >= s->need)
				sb_committed(s);
			else
				again = 1;
		}
	}
	if (again)
		evtimer_add(sbtimer, &tv);
}

/* SB from p: a person's DISCARD, or the victim's SAVED. */
static int
sb_message(struct peer *p, const void *buf, size_t len)
{
	struct sbslot	*s = &sbs[p->slot];
	const unsigned char *b = buf;
	uint32_t	 code;

	if (len < 4 || len - 4 >= SB_PATH_MAX || p->st != PS_SPLIT ||
	    !p->bm_got || !p->bm_sent)
		return -1;
	code = get_be32(b);
	switch (code) {
	case SB_DISCARD:
		if (s->state == SB_SURVIVOR) {
			log_warnx("split brain with %s: it chose this node's "
			    "data to keep too; waiting for a person",
			    p->name);
			return -1;
		}
		if (s->state != SB_WAIT)
			return 0;	/* already the victim */
		snprintf(s->reason, sizeof(s->reason), "a person on %s chose "
		    "this node", p->name);
		snprintf(s->policy, sizeof(s->policy), "person");
		log_warnx("split brain with %s: %s as the victim", p->name,
		    s->reason);
		sb_discard_self(p);
		return 0;
	case SB_SAVED:
		if (s->state != SB_WAIT && s->state != SB_SURVIVOR)
			return -1;
		s->state = SB_NONE;
		snprintf(s->victim, sizeof(s->victim), "%s", p->name);
		memcpy(s->savefile, b + 4, len - 4);
		s->savefile[len - 4] = '\0';
		s->savefile[strcspn(s->savefile, " \n")] = '\0';
		log_info("split brain with %s resolved: it saved its blocks "
		    "in %s and is our sync target", p->name, s->savefile);
		emit("split-brain-resolved", "peer=%s victim=%s savefile=%s",
		    p->name, p->name, s->savefile);
		sb_run("split-brain-resolved", p);
		/* its bitmap comes again, with what it wrote since */
		p->st = PS_NEEDS_RESYNC;
		p->bm_got = 0;
		quorum_check();
		peer_flags_changed();
		return 0;
	}
	return -1;
}

/* "discard NODE": a person's decision. */
static void
sb_command(struct evbuffer *out, const char *name)
{
	struct peer	*p, *q;
	struct sbslot	*s;
	int		 n = 0;

	if (strcmp(name, m->node) == 0) {
		p = NULL;
		TAILQ_FOREACH(q, &peers, entry)
			if (q->link != NULL && q->hello && q->st == PS_SPLIT) {
				p = q;
				n++;
			}
		if (n != 1) {
			evbuffer_add_printf(out, "error: discard %s: %s\n",
			    name, n == 0 ? "not in split brain with a "
			    "connected peer" : "in split brain with several "
			    "peers: discard them instead");
			return;
		}
	} else if ((p = peer_find(name)) == NULL) {
		evbuffer_add_printf(out, "error: discard %.64s: no such node\n",
		    name);
		return;
	} else if (p->link == NULL || !p->hello || p->st != PS_SPLIT) {
		evbuffer_add_printf(out, "error: discard %s: not in split "
		    "brain with it (peer state %s)\n", name,
		    pstate_names[p->st]);
		return;
	}
	s = &sbs[p->slot];
	if (!p->bm_got || !p->bm_sent) {
		evbuffer_add_printf(out, "error: discard %s: bitmaps not yet "
		    "exchanged\n", name);
		return;
	}
	/* again, after the victim's save failed */
	if (s->state == SB_SURVIVOR && p == peer_find(name) &&
	    strcmp(s->victim, name) == 0)
		s->state = SB_WAIT;
	if (s->state != SB_WAIT) {
		evbuffer_add_printf(out, "error: discard %s: split brain with "
		    "%s already being resolved (%s%s%s)\n", name, p->name,
		    sb_states[s->state], s->victim[0] ? ", victim " : "",
		    s->victim);
		return;
	}
	snprintf(s->policy, sizeof(s->policy), "person");
	snprintf(s->reason, sizeof(s->reason), "a person on %s chose it",
	    m->node);
	snprintf(s->victim, sizeof(s->victim), "%s", name);
	log_warnx("split brain with %s: a person chose %s as the victim",
	    p->name, name);
	if (p == peer_find(name)) {
		sb_send(p, SB_DISCARD, "");
		s->state = SB_SURVIVOR;
	} else
		sb_discard_self(p);
	evbuffer_add_printf(out, "ok victim=%s survivor=%s\n", name,
	    p == peer_find(name) ? m->node : p->name);
}

static void
sb_status(struct evbuffer *o, struct peer *p)
{
	struct sbslot	*s = &sbs[p->slot];

	evbuffer_add_printf(o, "peer.%s.split_brain=%s\npeer.%s.sb_victim=%s"
	    "\npeer.%s.sb_policy=%s\npeer.%s.sb_reason=%s\npeer.%s."
	    "sb_savefile=%s\n", p->name, sb_states[s->state], p->name,
	    s->victim, p->name, s->policy, p->name, s->err[0] ? s->err :
	    s->reason, p->name, s->savefile);
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
	if (dl_disk_state() != NULL)
		return dl_disk_state();
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
	evbuffer_add_printf(o, "write_lat_usec=%" PRIu64 "\n", wlat_ewma);
	evbuffer_add_printf(o, "write_p99_usec=%" PRIu64 "\n", wlat_p99 >> 8);
	evbuffer_add_printf(o, "write_idle_usec=%" PRIu64 "\n", now - wlat_last);
	dl_status(o);
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
	if (undo_active(undo))
		evbuffer_add_printf(o, "undo=active\nundo_gi=%016" PRIx64
		    "\nundo_bytes=%" PRIu64 "\n",
		    undo_state(undo)->gi_current, undo_bytes(undo));
	else
		evbuffer_add_printf(o, "undo=none\n");
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
		rs_status(o, pr);
		sb_status(o, pr);
		evbuffer_add_printf(o, "peer.%s.last_error=%s\n", pr->name,
		    pr->last_error);
	}
}

/*
 * primary --force on a resync target that keeps an undo journal: its own
 * data is a mix, so it takes over with the image from before the resync.
 * The peers are cut off first, so that nothing more arrives.  Nonzero
 * (with the answer in out) if that failed.
 */
static int
undo_before_promotion(struct evbuffer *out)
{
	struct peer	*p;
	char		 err[512];

	TAILQ_FOREACH(p, &peers, entry)
		if (p->link != NULL)
			link_close(p->link, "promoted with the image from "
			    "before the resync");
	if (undo_rollback("promoted while a resync was unfinished", err,
	    sizeof(err)) == -1) {
		log_warnx("undoing the resync: %s", err);
		evbuffer_add_printf(out, "error: undoing the unfinished "
		    "resync: %s\n", err);
		return 1;
	}
	return 0;
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
	TAILQ_FOREACH(p, &peers, entry)
		if (p->link != NULL && p->hello && p->st == PS_SYNC_TARGET) {
			evbuffer_add_printf(out, "error: this node's data is "
			    "behind %s's (a resync target not yet in sync); "
			    "primary --force overrides\n", p->name);
			return 1;
		}
	if (!(m->flags & META_F_UPTODATE)) {
		evbuffer_add_printf(out, "error: this node's data is %s (a "
		    "resync target not yet in sync); primary --force "
		    "overrides\n", disk_state());
		return 1;
	}
	return 0;
}

/*
 * "latency": the histogram of the application's write latencies since
 * the start, a line per bucket that counted any, its largest value in
 * microseconds as the key's suffix.  resyncd reads it twice and takes the
 * difference.
 */
static void
latency(struct evbuffer *out)
{
	int	i;

	for (i = 0; i < LATHIST_N; i++)
		if (wlat_hist.n[i] > 0)
			evbuffer_add_printf(out, "write_lat.%" PRIu64 "=%"
			    PRIu64 "\n", lathist_upper(i), wlat_hist.n[i]);
	evbuffer_add_printf(out, "ok\n");
}

static void
ctl_drop(struct ctlc *c)
{
	rs_ctl_gone(c);
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
	struct evbuffer_ptr ep;
	char		*line;

again:
	if (c->skip) {
		/* The rest of a line too long goes, then the answer. */
		ep = evbuffer_search(in, "\n", 1, NULL);
		if (ep.pos == -1) {
			evbuffer_drain(in, evbuffer_get_length(in));
			return;
		}
		evbuffer_drain(in, ep.pos + 1);
		c->skip = 0;
		if (!c->events)
			evbuffer_add_printf(out, "error: line too long (at "
			    "most %d bytes)\n", CTL_LINE_MAX);
	}
	while ((line = evbuffer_readln(in, NULL, EVBUFFER_EOL_LF)) != NULL) {
		if (c->events) {
			free(line);
			continue;
		}
		if (strcmp(line, "status") == 0) {
			ioq_reap(ioq);	/* count what is answered */
			status(out);
			evbuffer_add_printf(out, "ok\n");
		} else if (strcmp(line, "latency") == 0) {
			ioq_reap(ioq);
			latency(out);
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
			/*
			 * The complete epochs received go to the store
			 * first (under the undo journal if one is active),
			 * the rest never: the new primary's writes follow.
			 */
			if (!primary)
				journal_cut();
			if (!primary && undo_active(undo) &&
			    undo_before_promotion(out)) {
				free(line);
				continue;
			}
			if ((!primary || start_pending) &&
			    strchr(line, '-') != NULL) {
				log_warnx("forced to primary: acknowledging "
				    "writes without quorum");
				forced = 1;
				start_pending = 0;	/* -p: no veto now */
				if (primary) {
					quorum_check();	/* held I/O goes */
					peer_flags_changed();
				}
			}
			set_role(1);
			evbuffer_add_printf(out, "ok\n");
		} else if (strncmp(line, "attach ", 7) == 0) {
			dl_attach(out, line + 7);
		} else if (strcmp(line, "detach") == 0) {
			dl_detach_cmd(out);
		} else if (dl_state != DL_NORMAL &&
		    (strncmp(line, "sync ", 5) == 0 ||
		    strncmp(line, "verify ", 7) == 0)) {
			evbuffer_add_printf(out, "error: %.64s: this node's "
			    "store is detached or not yet resynced\n", line);
		} else if (strncmp(line, "oos ", 4) == 0) {
			rs_oos(out, line + 4);
		} else if (strncmp(line, "sync ", 5) == 0 ||
		    strncmp(line, "verify ", 7) == 0) {
			rs_command(c, line);
		} else if (strncmp(line, "discard ", 8) == 0) {
			sb_command(out, line + 8);
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
		log_warnx("control client: line too long, refused");
		c->skip = 1;
		goto again;
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

	if (dl_disk_state() == NULL && fdatasync(devfd) == -1) {
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

static int	check_port_ok(const char *);

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
	*comma = '\0';
	if (check_port_ok(colon + 1) == 0) {
		*comma = ',';
		errx(EXIT_USAGE, "-P %s: bad port", arg);
	}
	*colon = '\0';
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

/*
 * check_port_ok: whether port is a number from 1 to 65535 (a name, or a
 * number getaddrinfo() would cut to 16 bits, is a mistake).
 */
static int
check_port_ok(const char *port)
{
	char		*end;
	unsigned long	 v;

	errno = 0;
	v = strtoul(port, &end, 10);
	return *port >= '0' && *port <= '9' && *end == '\0' && errno == 0 &&
	    v >= 1 && v <= 65535;
}

/* -L and -t: [host:]port */
static void
check_listen(int opt, const char *arg)
{
	const char	*c = strrchr(arg, ':');

	if (!check_port_ok(c != NULL ? c + 1 : arg))
		errx(EXIT_USAGE, "-%c %s: bad port", opt, arg);
}

/* Listen for peers and connect to those named after us. */
static void
peers_start(const char *listen_at)
{
	struct link_opts	 o;
	struct addrinfo		 hints, *res;
	struct peer		*p;
	char			*copy, *host, *port;
	int			 fd, one = 1, rv;

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
	const char	*meta = NULL, *node = NULL, *journal = NULL, *e;
	char		 errbuf[512];
	uint64_t	 size = 0, al = META_AL_DEFAULT, dsize;
	int		 ch, force = 0, fd, empty = 0, i;
	uint64_t	 gi = 0;
	char		*ep, *path;
	struct meta	*md;
	struct stat	 js, os;

	while ((ch = getopt(argc, argv, "a:EfJ:g:m:n:")) != -1) {
		switch (ch) {
		case 'E':
			empty = 1;
			break;
		case 'J':
			journal = optarg;
			break;
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
	if (empty && gi != 0)
		errx(EXIT_USAGE, "-E and -g: a new, empty node has no "
		    "generation identifier");
	/* the size of the resource, when not the whole store */
	if (argc == 2) {
		if ((e = parse_size(argv[1], &size)) != NULL)
			errx(EXIT_USAGE, "size %s: %s", argv[1], e);
		if (size == 0)
			errx(EXIT_USAGE, "size %s: size is zero", argv[1]);
	}
	if (!force && access(meta, F_OK) == 0)
		errx(EXIT_USAGE, "%s: exists; init -f replaces it", meta);
	/* It is removed below: never the metadata, the store or a device. */
	if (journal != NULL && lstat(journal, &js) == 0) {
		if (!S_ISREG(js.st_mode))
			errx(EXIT_USAGE, "-J %s: not a regular file", journal);
		for (i = 0; i < 2; i++)
			if (stat(i ? argv[0] : meta, &os) == 0 &&
			    os.st_dev == js.st_dev && os.st_ino == js.st_ino)
				errx(EXIT_USAGE, "-J %s: is the %s", journal,
				    i ? "backing store" : "metadata file");
	}
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
	if (gi != 0 || empty) {
		/*
		 * Nodes made from the same (empty) data share one; a node
		 * with none has no data yet: its peers give it a full sync.
		 */
		if ((md = meta_load(meta, 1, errbuf, sizeof(errbuf))) == NULL)
			errx(EXIT_SYS, "%s", errbuf);
		md->gi_current = gi;
		if (empty)
			md->flags &= ~(META_F_CONSISTENT | META_F_UPTODATE);
		if (meta_sync(md) == -1)
			err(EXIT_SYS, "%s", meta);
		meta_free(md);
	}
	/* New metadata: the journals of the old ones must not be applied. */
	for (i = 0; i < 2; i++) {
		if (asprintf(&path, "%s.%s", meta, i ? "undo" : "journal") ==
		    -1)
			err(EXIT_SYS, "asprintf");
		if (unlink(path) == -1 && errno != ENOENT)
			err(EXIT_SYS, "%s", path);
		free(path);
	}
	/*
	 * And the DR journal the daemon is given elsewhere (its -J); a name
	 * that did not exist above may be the new metadata's.
	 */
	if (journal != NULL && lstat(journal, &js) == 0 &&
	    stat(meta, &os) == 0 && os.st_dev == js.st_dev &&
	    os.st_ino == js.st_ino)
		errx(EXIT_USAGE, "-J %s: is the metadata file", journal);
	if (journal != NULL && unlink(journal) == -1 && errno != ENOENT)
		err(EXIT_SYS, "%s", journal);
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
	while ((ch = getopt(argc, argv,
	    "A:B:c:D:d:e:J:j:k:L:l:m:n:P:pQ:q:t:v")) != -1) {
		switch (ch) {
		case 'D':
			if ((e = parse_duration(optarg, &ka_dead)) != NULL)
				errx(EXIT_USAGE, "-D %s: %s", optarg, e);
			if (ka_dead < 2 * KA_INTERVAL)
				errx(EXIT_USAGE, "-D %s: less than 2s", optarg);
			break;
		case 'A':
		case 'B':
		case 'e':
			sb_option(ch, optarg);
			break;
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
			check_listen('L', optarg);
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
			check_listen('t', optarg);
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
	start_pending = primary && npeers > 0 && qmode != Q_OFF;
	if (strcmp(ctlpath, nbdpath) == 0)
		errx(EXIT_USAGE, "-c and -l name the same socket: %s",
		    ctlpath);
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
	if ((rsioq = ioq_new(base, RS_THREADS, NULL, NULL)) == NULL)
		fatal("I/O threads");
	/* First a committed epoch, then a resync's undo journal. */
	if (jpath == NULL && asprintf(&jpath, "%s.journal", metapath) == -1)
		fatal("asprintf");
	if ((jfd = open(jpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1)
		fatal("%s", jpath);
	if (asprintf(&upath, "%s.undo", metapath) == -1)
		fatal("asprintf");
	if ((undo = undo_open(upath, m->size, errbuf, sizeof(errbuf))) ==
	    NULL)
		fatalx("%s", errbuf);
	journal_recover();	/* (its blocks saved if a journal is active) */
	undo_recover();
	if (nbd_listen_unix(srv, nbdpath) == -1)
		fatal("%s", nbdpath);
	if (tcp != NULL && nbd_listen_tcp(srv, tcp) == -1)
		fatal("-t %s", tcp);
	if ((fd = ctl_listen(ctlpath)) == -1)
		fatal("%s", ctlpath);
	if (npeers > 0) {
		struct timeval tv = { KA_INTERVAL / 1000000,
		    KA_INTERVAL % 1000000 };

		peers_start(listen_at);
		if ((ev = event_new(base, -1, EV_PERSIST, keepalive, NULL)) ==
		    NULL || event_add(ev, &tv) == -1)
			fatalx("keepalive timer");
	}
	if ((ctl_lev = evconnlistener_new(base, ctl_accept, NULL,
	    LEV_OPT_CLOSE_ON_FREE, -1, fd)) == NULL)
		fatalx("control listener");
	ev = evsignal_new(base, SIGTERM, on_signal, NULL);
	event_add(ev, NULL);
	ev = evsignal_new(base, SIGINT, on_signal, NULL);
	event_add(ev, NULL);
	sb_init();

	log_info("%s: %" PRIu64 " bytes, node %s, %s, serving %s%s%s",
	    devpath, m->size, m->node, primary ? "primary" : "secondary",
	    nbdpath, tcp ? " and " : "", tcp ? tcp : "");
	emit("start", "role=%s size=%" PRIu64, primary ? "primary" :
	    "secondary", m->size);
	ready_notify(rfd);
	event_base_dispatch(base);
	return EXIT_OK;
}

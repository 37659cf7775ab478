/* See LICENSE file for copyright and license details. */
/*
 * blkmirror serves a disk over NBD from a local backing store, keeping
 * crash-safe metadata (generation identifiers, per-peer dirty bitmaps, an
 * activity log of hot extents) in a file of its own, and takes commands
 * and reports state changes on a control socket.  This is the data path
 * of hatrio; replication to peers builds on it.
 */
#include <sys/ioctl.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <linux/falloc.h>
#include <linux/fs.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "ctl.h"
#include "hatrio.h"
#include "ioq.h"
#include "meta.h"
#include "nbd.h"

#define CHUNK_EXTENTS	16	/* AL extents one step of a request covers */
#define IO_THREADS	8
#define STOP_GRACE_USEC	5000000
#define EVQ_MAX		(1 << 20)	/* output a slow "events" reader may
					   leave unread before it is dropped */

/* states of a write-type request (nbd_req.state) */
enum { W_NEW, W_OVERLAP, W_ALFULL, W_AL, W_IO };

TAILQ_HEAD(reqq, nbd_req);

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

static void	usage(void) __attribute__((noreturn));
static void	emit(const char *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static void	start_chunk(struct nbd_req *);
static void	al_commit(void);

static void
usage(void)
{
	fprintf(stderr,
	    "usage: blkmirror [-pv] [-d fd] [-j threads] [-k keyfile] "
	    "[-t [host:]port]\n"
	    "                 -c ctlsock -l nbdsock -m meta -n node device\n"
	    "       blkmirror init [-f] [-a extents] [-s size] -m meta "
	    "-n node device\n"
	    "       blkmirror dump -m meta\n"
	    "       blkmirror ctl ctlsock command\n");
	exit(EXIT_USAGE);
}

/* The size of a regular file or a block device. */
static int
store_size(int fd, uint64_t *size)
{
	struct stat	st;

	if (fstat(fd, &st) == -1)
		return -1;
	if (S_ISBLK(st.st_mode))
		return ioctl(fd, BLKGETSIZE64, size);
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		return -1;
	}
	*size = st.st_size;
	return 0;
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
	if (j->err == 0 && chunk_end(r) == r->end)
		j->quiet = nbd_req_reply_early(r);
}

static void
work_flush(struct ioq_job *j)
{
	if (fdatasync(devfd) == -1)
		j->err = errno;
	else
		j->quiet = nbd_req_reply_early(job_req(j));
}

static void
work_meta(struct ioq_job *j)
{
	if (meta_write(m->fd, metabuf, metaoff) == -1)
		j->err = errno;
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
	if (j->err != 0) {
		finish_write(r, j->err);
		return;
	}
	r->cur = chunk_end(r);
	if (r->cur < r->end)
		start_chunk(r);
	else
		finish_write(r, 0);
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
			finish_write(r, EIO);
		}
		return;
	}
	meta_written(m);
	m->al_gen_disk = metagen;
	al_commits++;
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
	if (metabusy || m->al_gen == m->al_gen_disk)
		return;
	meta_encode(m, metabuf, &metaoff);
	metagen = m->al_gen;
	metabusy = 1;
	metajob.work = work_meta;
	metajob.done = done_meta;
	metajob.slow = 1;
	ioq_submit(ioq, &metajob);
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
		/* Bitmaps are flushed with the data once peers exist. */
		r->job.work = work_flush;
		r->job.done = done_simple;
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

/* --- roles, status, control socket --------------------------------- */

static void
set_role(int p)
{
	if (p == primary)
		return;
	primary = p;
	nbd_set_readonly(srv, !p);
	if (p)
		m->flags |= META_F_PRIMARY;
	else
		m->flags &= ~META_F_PRIMARY;
	m->al_gen++;	/* have the flag written */
	al_commit();
	log_info("role %s", p ? "primary" : "secondary");
	emit("role", "role=%s", p ? "primary" : "secondary");
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
	int			 p, npeers = 0;

	for (p = 0; p < META_PEERS; p++)
		npeers += m->peer[p].in_use != 0;
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
	    "\npeers=%d\n", m->al_count, m->al_limit, al_commits,
	    meta_errors, m->al_unclean, m->gi_current, npeers);
	for (p = 0; p < META_PEERS; p++)
		if (m->peer[p].in_use)
			evbuffer_add_printf(o, "peer.%s.oos_bytes=%" PRIu64
			    "\n", m->peer[p].name,
			    m->peer[p].oos_blocks * META_BLOCK);
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
		} else if (strcmp(line, "primary") == 0) {
			set_role(1);
			evbuffer_add_printf(out, "ok\n");
		} else if (strcmp(line, "secondary") == 0) {
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

static int
cmd_init(int argc, char *argv[])
{
	const char	*meta = NULL, *node = NULL, *e;
	char		 errbuf[512];
	uint64_t	 size = 0, al = META_AL_DEFAULT, dsize;
	int		 ch, force = 0, fd;

	while ((ch = getopt(argc, argv, "a:fm:n:s:")) != -1) {
		switch (ch) {
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
		case 's':
			if ((e = parse_size(optarg, &size)) != NULL)
				errx(EXIT_USAGE, "-s %s: %s", optarg, e);
			if (size == 0)
				errx(EXIT_USAGE, "-s %s: size is zero", optarg);
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 1 || meta == NULL || node == NULL)
		usage();
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
	unsigned char		 key[HATRIO_KEY_BYTES];
	const char		*nbdpath = NULL, *tcp = NULL, *keyfile = NULL;
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
	while ((ch = getopt(argc, argv, "c:d:j:k:l:m:n:pt:v")) != -1) {
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
		case 'k':
			keyfile = optarg;
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
	log_init("blkmirror", verbose);
	if (keyfile != NULL && (e = key_load(keyfile, key)) != NULL)
		fatalx("%s: %s", keyfile, e);

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

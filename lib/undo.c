/* See LICENSE file for copyright and license details. */
/*
 * undo.c: the undo journal of a resync target (undo.h).
 * undo_save() runs in the I/O workers, several at once: one lock covers
 * reading a block's old contents and appending them, so that a block is
 * saved exactly once, before anybody overwrites it; the sync that makes
 * records durable is shared by whoever waits for it at the time (a group
 * commit) and runs outside the lock.  Everything else is called from the
 * event loop while no worker is in undo_save().
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "hatrio.h"
#include "meta.h"
#include "undo.h"

#define HASH	32
#define REC_HASHED	32	/* the record header's bytes before its hash */

struct undo {
	int			 fd, active;
	char			*path;
	struct undo_state	 st;
	uint64_t		 nonce, size, end, bytes, synced;
	unsigned char		*saved;		/* 1 bit per block */
	pthread_mutex_t		 lock;
	pthread_cond_t		 cond;
	int			 syncing;
	int			 err;	/* a failed sync: pages may be lost,
					   so every later save fails too */
};

static const char	undo_magic[8] = "HTUNDO01";

/* pread it all: a short file is EIO (meta.c's reads take it as zeroes) */
static int
full_pread(int fd, void *b, size_t n, uint64_t off)
{
	ssize_t	r;
	size_t	done = 0;

	while (done < n) {
		r = pread(fd, (char *)b + done, n - done, off + done);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			return errno;
		if (r == 0)
			return EIO;	/* shorter than it says */
		done += r;
	}
	return 0;
}

static void
rec_hash(unsigned char *out, const unsigned char *h, const void *data,
    uint32_t len)
{
	crypto_generichash_state s;

	crypto_generichash_init(&s, NULL, 0, HASH);
	crypto_generichash_update(&s, h, REC_HASHED);
	crypto_generichash_update(&s, data, len);
	crypto_generichash_final(&s, out, HASH);
}

static size_t
hdr_encode(unsigned char *b, const struct undo *u)
{
	size_t	n;
	int	i;

	memset(b, 0, UNDO_HDR);
	memcpy(b, undo_magic, 8);
	put_be64(b + 8, u->nonce);
	put_be64(b + 16, u->st.size);
	put_be32(b + 24, u->st.flags);
	put_be64(b + 32, u->st.gi_current);
	for (i = 0; i < GI_HISTORY; i++)
		put_be64(b + 40 + 8 * i, u->st.gi_history[i]);
	n = 40 + 8 * GI_HISTORY;
	crypto_generichash(b + n, HASH, b, n, NULL, 0);
	return n + HASH;
}

/*
 * A record's header at pos, checked; its length, 0 if there is none (or
 * it is not one of ours), -1 (errno set) if it cannot be read.
 */
static int64_t
rec_head(struct undo *u, uint64_t pos, uint64_t fsize, unsigned char *h,
    uint64_t *off)
{
	uint32_t	len;
	int		e;

	if (pos + UNDO_REC > fsize)
		return 0;
	if ((e = full_pread(u->fd, h, UNDO_REC, pos)) != 0) {
		errno = e;
		return -1;
	}
	if (get_be64(h) != u->nonce)
		return 0;
	*off = get_be64(h + 8);
	len = get_be32(h + 16);
	if (len == 0 || len > UNDO_REC_MAX || len % UNDO_BLOCK != 0 ||
	    *off % UNDO_BLOCK != 0 || *off >= u->size ||
	    len > (u->size - *off + UNDO_BLOCK - 1) / UNDO_BLOCK * UNDO_BLOCK ||
	    pos + UNDO_REC + len > fsize)
		return 0;
	return len;
}

/*
 * Read the journal at start: its header and every good record.  A header
 * that does not check is a torn undo_begin, after which nothing was
 * overwritten, unless records follow it: then it is damage.  The first
 * record that does not check ends the journal if at most UNDO_TAIL_MAX
 * bytes follow it (a torn append, never synced, so its blocks were not
 * overwritten); if more follow, it is damage, and the journal is refused
 * rather than cut.
 */
static int
scan(struct undo *u, char *err, size_t errlen)
{
	unsigned char	 b[UNDO_HDR], h[UNDO_REC], sum[HASH], *data = NULL;
	struct stat	 sb;
	uint64_t	 pos, off, i;
	int64_t		 len;
	size_t		 n;
	int		 e;

	if (fstat(u->fd, &sb) == -1)
		goto syserr;
	if (sb.st_size == 0)
		return 0;
	if (sb.st_size >= UNDO_HDR && (e = full_pread(u->fd, b, UNDO_HDR,
	    0)) != 0) {
		errno = e;
		goto syserr;
	}
	n = 40 + 8 * GI_HISTORY;
	if (sb.st_size >= UNDO_HDR)
		crypto_generichash(sum, HASH, b, n, NULL, 0);
	if (sb.st_size < UNDO_HDR || memcmp(b, undo_magic, 8) != 0 ||
	    sodium_memcmp(sum, b + n, HASH) != 0) {
		if (sb.st_size > UNDO_HDR) {
			snprintf(err, errlen, "%s: damaged: its header does not "
			    "check but records follow it", u->path);
			return -1;
		}
		/* undo_begin did not finish: nothing was overwritten. */
		if (ftruncate(u->fd, 0) == -1 || fsync(u->fd) == -1)
			goto syserr;
		return 0;
	}
	u->nonce = get_be64(b + 8);
	u->st.size = get_be64(b + 16);
	u->st.flags = get_be32(b + 24);
	u->st.gi_current = get_be64(b + 32);
	for (i = 0; i < GI_HISTORY; i++)
		u->st.gi_history[i] = get_be64(b + 40 + 8 * i);
	if (u->st.size != u->size) {
		snprintf(err, errlen, "%s: undo journal of a %" PRIu64 " byte "
		    "device, this one has %" PRIu64, u->path, u->st.size,
		    u->size);
		return -1;
	}
	if ((data = malloc(UNDO_REC_MAX)) == NULL)
		goto syserr;
	for (pos = UNDO_HDR; (len = rec_head(u, pos, sb.st_size, h, &off)) > 0;
	    pos += UNDO_REC + len) {
		if ((e = full_pread(u->fd, data, len, pos + UNDO_REC)) != 0) {
			errno = e;
			goto syserr;
		}
		rec_hash(sum, h, data, len);
		if (sodium_memcmp(sum, h + REC_HASHED, HASH) != 0)
			break;
		for (i = off / UNDO_BLOCK; i < (off + len) / UNDO_BLOCK; i++)
			u->saved[i / 8] |= 1 << (i % 8);
		u->bytes += len;
	}
	if (len == -1)
		goto syserr;
	free(data);
	data = NULL;
	if ((uint64_t)sb.st_size - pos > UNDO_TAIL_MAX) {
		snprintf(err, errlen, "%s: damaged: the record at %" PRIu64
		    " does not check and %" PRIu64 " bytes follow it", u->path,
		    pos, (uint64_t)sb.st_size - pos);
		return -1;
	}
	/* A torn append: cut it off, so that the next one follows the last
	   good record. */
	if ((uint64_t)sb.st_size > pos && (ftruncate(u->fd, pos) == -1 ||
	    fsync(u->fd) == -1))
		goto syserr;
	u->active = 1;
	u->end = u->synced = pos;
	return 0;
syserr:
	snprintf(err, errlen, "%s: %s", u->path, strerror(errno));
	free(data);
	return -1;
}

/*
 * Open (creating it if need be) the undo journal at path for a device of
 * size bytes; NULL and a message in err on failure.
 */
struct undo *
undo_open(const char *path, uint64_t size, char *err, size_t errlen)
{
	struct undo	*u;
	uint64_t	 blocks = (size + UNDO_BLOCK - 1) / UNDO_BLOCK;

	if ((u = calloc(1, sizeof(*u))) == NULL ||
	    (u->path = strdup(path)) == NULL ||
	    (u->saved = calloc(1, blocks / 8 + 1)) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	u->size = size;
	pthread_mutex_init(&u->lock, NULL);
	pthread_cond_init(&u->cond, NULL);
	if ((u->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		pthread_mutex_destroy(&u->lock);
		pthread_cond_destroy(&u->cond);
		goto fail;
	}
	if (scan(u, err, errlen) == -1) {
		undo_close(u);
		return NULL;
	}
	return u;
fail:
	if (u != NULL) {
		free(u->saved);
		free(u->path);
	}
	free(u);
	return NULL;
}

void
undo_close(struct undo *u)
{
	if (u == NULL)
		return;
	close(u->fd);
	pthread_mutex_destroy(&u->lock);
	pthread_cond_destroy(&u->cond);
	free(u->saved);
	free(u->path);
	free(u);
}

int
undo_active(const struct undo *u)
{
	return u != NULL && u->active;
}

const struct undo_state *
undo_state(const struct undo *u)
{
	return &u->st;
}

/* The old data saved so far. */
uint64_t
undo_bytes(struct undo *u)
{
	uint64_t	n;

	if (u == NULL)
		return 0;
	pthread_mutex_lock(&u->lock);
	n = u->bytes;
	pthread_mutex_unlock(&u->lock);
	return n;
}

static int
sync_dir(const char *path)
{
	char	*p, *d;
	int	 fd, e = 0;

	if ((p = strdup(path)) == NULL)
		return errno;
	d = dirname(p);
	if ((fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 ||
	    fsync(fd) == -1)
		e = errno;
	if (fd != -1)
		close(fd);
	free(p);
	return e;
}

/* Start a journal for the image described by st; durable on return. */
int
undo_begin(struct undo *u, const struct undo_state *st)
{
	unsigned char	b[UNDO_HDR];
	int		e;

	if (u->active)
		return EBUSY;
	u->err = 0;
	u->st = *st;
	u->st.size = u->size;
	randombytes_buf(&u->nonce, sizeof(u->nonce));
	hdr_encode(b, u);
	if (ftruncate(u->fd, 0) == -1)
		return errno;
	if (meta_pwrite(u->fd, b, UNDO_HDR, 0) == -1)
		return errno;
	if (fsync(u->fd) == -1)
		return errno;
	if ((e = sync_dir(u->path)) != 0)
		return e;
	pthread_mutex_lock(&u->lock);
	memset(u->saved, 0, (u->size + UNDO_BLOCK - 1) / UNDO_BLOCK / 8 + 1);
	u->end = u->synced = UNDO_HDR;
	u->bytes = 0;
	u->active = 1;
	pthread_mutex_unlock(&u->lock);
	return 0;
}

static int
is_saved(const struct undo *u, uint64_t blk)
{
	return u->saved[blk / 8] & (1 << (blk % 8));
}

/* Append the old contents of blocks [blk, blk + n); under the lock. */
static int
append(struct undo *u, int devfd, uint64_t blk, uint64_t n,
    unsigned char *buf)
{
	uint64_t	 off = blk * UNDO_BLOCK, i;
	uint32_t	 len = n * UNDO_BLOCK;
	int		 e;

	if (off + len > u->size)	/* a last, partial block */
		len = u->size - off;
	memset(buf, 0, UNDO_REC + n * UNDO_BLOCK);
	put_be64(buf, u->nonce);
	put_be64(buf + 8, off);
	put_be32(buf + 16, n * UNDO_BLOCK);
	if ((e = full_pread(devfd, buf + UNDO_REC, len, off)) != 0)
		return e;
	rec_hash(buf + REC_HASHED, buf, buf + UNDO_REC, n * UNDO_BLOCK);
	if (meta_pwrite(u->fd, buf, UNDO_REC + n * UNDO_BLOCK, u->end) == -1)
		return errno;
	for (i = blk; i < blk + n; i++)
		u->saved[i / 8] |= 1 << (i % 8);
	u->end += UNDO_REC + n * UNDO_BLOCK;
	u->bytes += n * UNDO_BLOCK;
	return 0;
}

/*
 * Under the lock: wait until everything appended before need is synced,
 * syncing it ourselves unless somebody already does.  A failed sync is
 * kept: the pages it lost are clean now, and a later sync would succeed
 * without writing them.
 */
static int
sync_upto(struct undo *u, uint64_t need)
{
	uint64_t	target;
	int		e = 0;

	while (u->err == 0 && u->synced < need) {
		if (u->syncing) {
			pthread_cond_wait(&u->cond, &u->lock);
			continue;
		}
		u->syncing = 1;
		target = u->end;
		pthread_mutex_unlock(&u->lock);
		if (fdatasync(u->fd) == -1)
			e = errno;
		pthread_mutex_lock(&u->lock);
		u->syncing = 0;
		if (e != 0)
			u->err = e;
		else if (target > u->synced)
			u->synced = target;
		pthread_cond_broadcast(&u->cond);
	}
	return u->err;
}

/*
 * Before [off, off + len) of the store is overwritten: save every block of
 * it not saved yet and, with sync, return once all of them are durable
 * here (without, undo_sync does that for many saves at once); 0 or an
 * errno (then nothing may be overwritten).  Does nothing while inactive.
 */
int
undo_save(struct undo *u, int devfd, uint64_t off, uint64_t len, int sync)
{
	const uint64_t	 maxb = UNDO_REC_MAX / UNDO_BLOCK;
	unsigned char	*buf = NULL;
	uint64_t	 blk, last, n;
	int		 e = 0;

	if (u == NULL || len == 0)
		return 0;
	if (off >= u->size)
		return EINVAL;
	if (len > u->size - off)
		len = u->size - off;
	blk = off / UNDO_BLOCK;
	last = (off + len - 1) / UNDO_BLOCK;
	pthread_mutex_lock(&u->lock);
	if (!u->active) {
		pthread_mutex_unlock(&u->lock);
		return 0;
	}
	while ((e = u->err) == 0 && blk <= last) {
		if (is_saved(u, blk)) {
			blk++;
			continue;
		}
		/* Never more than UNDO_TAIL_MAX unsynced (see undo.h). */
		if (u->end - u->synced > UNDO_TAIL_MAX - UNDO_REC -
		    UNDO_REC_MAX) {
			sync_upto(u, u->end);
			continue;	/* unlocked meanwhile: look again */
		}
		for (n = 1; blk + n <= last && n < maxb && !is_saved(u,
		    blk + n); n++)
			;
		if (buf == NULL && (buf = malloc(UNDO_REC +
		    UNDO_REC_MAX)) == NULL)
			e = errno;
		else
			e = append(u, devfd, blk, n, buf);
		if (e != 0)
			break;
		blk += n;
	}
	/* Whatever saved these blocks, we or another, is before u->end. */
	if (e == 0 && sync)
		e = sync_upto(u, u->end);
	pthread_mutex_unlock(&u->lock);
	free(buf);
	return e;
}

/* Make every save so far durable; 0 or an errno. */
int
undo_sync(struct undo *u)
{
	int	e;

	if (u == NULL)
		return 0;
	pthread_mutex_lock(&u->lock);
	e = u->active ? sync_upto(u, u->end) : 0;
	pthread_mutex_unlock(&u->lock);
	return e;
}

/* Call cb for every record, in order; 0 or the first errno. */
int
undo_each(struct undo *u, undo_cb cb, void *arg)
{
	unsigned char	h[UNDO_REC];
	uint64_t	pos, off;
	int64_t		len;
	int		e;

	if (!u->active)
		return 0;
	for (pos = UNDO_HDR; pos < u->end; pos += UNDO_REC + len) {
		if ((len = rec_head(u, pos, u->end, h, &off)) <= 0)
			return len == 0 ? EIO : errno;
		if ((e = cb(arg, off, len)) != 0)
			return e;
	}
	return 0;
}

/* Check one record's data against its hash; with fd, write it there. */
static int
restore_rec(struct undo *u, uint64_t pos, unsigned char *data, int fd,
    uint32_t *lenp)
{
	unsigned char	h[UNDO_REC], sum[HASH];
	uint64_t	off;
	int64_t		len;
	int		e;

	if ((len = rec_head(u, pos, u->end, h, &off)) <= 0)
		return len == 0 ? EIO : errno;
	*lenp = len;
	if ((e = full_pread(u->fd, data, len, pos + UNDO_REC)) != 0)
		return e;
	rec_hash(sum, h, data, len);
	if (sodium_memcmp(sum, h + REC_HASHED, HASH) != 0)
		return EIO;
	if (off + len > u->size)
		len = u->size - off;
	if (fd != -1 && meta_pwrite(fd, data, len, off) == -1)
		return errno;
	return 0;
}

/*
 * Write the saved image back into the store and sync it; the journal
 * stays active (undo_end drops it).  The whole journal is checked first,
 * so a damaged one writes nothing.  Writing it again is harmless.
 */
int
undo_restore(struct undo *u, int devfd)
{
	unsigned char	*data;
	uint64_t	 pos;
	uint32_t	 len = 0;
	int		 pass, e = 0;

	if (!u->active)
		return 0;
	if ((data = malloc(UNDO_REC_MAX)) == NULL)
		return errno;
	for (pass = 0; pass < 2 && e == 0; pass++)
		for (pos = UNDO_HDR; e == 0 && pos < u->end;
		    pos += UNDO_REC + len)
			e = restore_rec(u, pos, data, pass ? devfd : -1, &len);
	free(data);
	if (e == 0 && fdatasync(devfd) == -1)
		e = errno;
	return e;
}

/* The resync ended or was undone: drop the journal, durably. */
int
undo_end(struct undo *u)
{
	if (ftruncate(u->fd, 0) == -1 || fsync(u->fd) == -1)
		return errno;
	pthread_mutex_lock(&u->lock);
	u->active = 0;
	u->end = u->synced = 0;
	u->bytes = 0;
	pthread_mutex_unlock(&u->lock);
	return 0;
}

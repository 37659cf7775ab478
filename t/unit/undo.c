/* See LICENSE file for copyright and license details. */
/*
 * Unit tests for lib/undo.c: saving before overwriting, from several
 * threads at once; reopening after a crash (a torn append, a torn header);
 * restoring the old image; and damage found before anything is written.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "hatrio.h"
#include "undo.h"
#include "unit.h"

#define SIZE	((1 << 20) + 1000)	/* a partial last block */

static char	 store[64], jpath[64];
static unsigned char orig[SIZE];
static int	 devfd;

struct worker {
	struct undo	*u;
	unsigned int	 seed;
	int		 err;
};

static int
same_as_orig(void)
{
	static unsigned char	b[SIZE];

	return pread(devfd, b, SIZE, 0) == SIZE && memcmp(b, orig, SIZE) == 0;
}

/* save then overwrite [off, off + len) with fill */
static int
overwrite(struct undo *u, uint64_t off, uint64_t len, int fill)
{
	unsigned char	b[65536];
	int		e;

	if ((e = undo_save(u, devfd, off, len, 1)) != 0)
		return e;
	if (off + len > SIZE)
		len = SIZE - off;
	memset(b, fill, len);
	return pwrite(devfd, b, len, off) == (ssize_t)len ? 0 : errno;
}

static void *
work(void *arg)
{
	struct worker	*w = arg;
	uint64_t	 off;
	int		 i;

	for (i = 0; i < 200 && w->err == 0; i++) {
		off = (uint64_t)(rand_r(&w->seed) % (SIZE / 4096)) * 4096;
		w->err = overwrite(w->u, off, 4096 * (1 + rand_r(&w->seed) %
		    8), 0x40 + i % 64);
	}
	return NULL;
}

static int
count_cb(void *arg, uint64_t off, uint32_t len)
{
	uint64_t	*n = arg;

	(void)off;
	n[0]++;
	n[1] += len;
	return 0;
}

static off_t
fsize(const char *path)
{
	struct stat	sb;

	return stat(path, &sb) == 0 ? sb.st_size : -1;
}

static void
flip(const char *path, off_t at)
{
	unsigned char	c;
	int		fd = open(path, O_RDWR);

	if (pread(fd, &c, 1, at) == 1) {
		c ^= 0x5a;
		if (pwrite(fd, &c, 1, at) != 1)
			abort();
	}
	close(fd);
}

int
main(void)
{
	struct undo_state	 st = { 0 }, *got;
	struct undo		*u;
	struct worker		 w[4];
	pthread_t		 th[4];
	char			 err[256];
	uint64_t		 n[2], bytes;
	off_t			 sz;
	int			 i, e;

	if (sodium_init() == -1)
		abort();
	snprintf(store, sizeof(store), "/tmp/undo-unit.%d.store", getpid());
	snprintf(jpath, sizeof(jpath), "/tmp/undo-unit.%d.undo", getpid());
	randombytes_buf(orig, sizeof(orig));
	devfd = open(store, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ok(devfd != -1 && pwrite(devfd, orig, SIZE, 0) == SIZE, "a store");

	u = undo_open(jpath, SIZE, err, sizeof(err));
	ok(u != NULL && !undo_active(u), "a new journal is inactive");
	ok(overwrite(u, 0, 4096, 1) == 0 && undo_bytes(u) == 0,
	    "inactive: nothing is saved");
	ok(pwrite(devfd, orig, 4096, 0) == 4096, "store put back");

	st.flags = 3;
	st.gi_current = 0x1234;
	st.gi_history[0] = 0x99;
	ok(undo_begin(u, &st) == 0 && undo_active(u), "begin");
	ok(undo_begin(u, &st) == EBUSY, "begin twice: EBUSY");
	ok(overwrite(u, 0, 8192, 1) == 0 && undo_bytes(u) == 8192,
	    "two blocks saved");
	ok(overwrite(u, 4096, 12288, 2) == 0 && undo_bytes(u) == 16384,
	    "overlapping: only the two new blocks are saved");
	ok(overwrite(u, 1 << 20, 1000, 3) == 0 && undo_bytes(u) == 20480,
	    "the partial last block");
	ok(undo_save(u, devfd, SIZE, 4096, 1) == EINVAL, "beyond the end: EINVAL");

	/* several threads, overlapping ranges */
	for (i = 0; i < 4; i++) {
		w[i].u = u;
		w[i].seed = i + 1;
		w[i].err = 0;
		pthread_create(&th[i], NULL, work, &w[i]);
	}
	for (e = 0, i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		e |= w[i].err;
	}
	ok(e == 0, "four threads saved and overwrote");
	ok(!same_as_orig(), "the store changed");
	bytes = undo_bytes(u);

	/* a crash: open again */
	undo_close(u);
	u = undo_open(jpath, SIZE, err, sizeof(err));
	ok(u != NULL && undo_active(u) && undo_bytes(u) == bytes,
	    "reopened: active, %llu bytes saved", (unsigned long long)bytes);
	got = (struct undo_state *)undo_state(u);
	ok(got->flags == 3 && got->gi_current == 0x1234 &&
	    got->gi_history[0] == 0x99 && got->size == SIZE,
	    "the state from before is kept");
	n[0] = n[1] = 0;
	ok(undo_each(u, count_cb, n) == 0 && n[1] == bytes && n[0] > 3,
	    "undo_each: %llu records", (unsigned long long)n[0]);
	ok(undo_restore(u, devfd) == 0 && same_as_orig(),
	    "restore gives back the old image");
	ok(undo_active(u), "still active after restore");

	/* a torn append: the record's block was not overwritten */
	ok(undo_end(u) == 0 && undo_begin(u, &st) == 0, "a new journal");
	ok(overwrite(u, 65536, 4096, 7) == 0, "one block saved, overwritten");
	ok(undo_save(u, devfd, 131072, 8192, 1) == 0, "a record whose write "
	    "never happened");
	sz = fsize(jpath);
	undo_close(u);
	ok(truncate(jpath, sz - 100) == 0, "torn in its data");
	u = undo_open(jpath, SIZE, err, sizeof(err));
	ok(u != NULL && undo_bytes(u) == 4096 &&
	    fsize(jpath) == sz - 64 - 8192, "the torn record is cut off");
	ok(undo_restore(u, devfd) == 0 && same_as_orig(),
	    "restore after a torn append");
	ok(overwrite(u, 131072, 8192, 8) == 0 && undo_bytes(u) == 4096 +
	    8192, "appending after the cut");
	ok(undo_restore(u, devfd) == 0 && same_as_orig(),
	    "restore after appending again");

	/* damage found after opening: nothing is written */
	overwrite(u, 0, 4096, 9);
	flip(jpath, fsize(jpath) - 10);
	ok(undo_restore(u, devfd) == EIO, "a damaged record: EIO");
	{
		unsigned char	b[4096];

		memset(b, 9, sizeof(b));
		ok(pread(devfd, b, 4096, 0) == 4096 && b[0] == 9 &&
		    b[4095] == 9, "and nothing was written");
	}
	flip(jpath, fsize(jpath) - 10);
	ok(undo_restore(u, devfd) == 0 && same_as_orig(), "repaired: restored");

	/* end, then a torn header */
	ok(undo_end(u) == 0 && !undo_active(u) && fsize(jpath) == 0, "end");
	undo_close(u);
	u = undo_open(jpath, SIZE, err, sizeof(err));
	ok(u != NULL && !undo_active(u), "reopened after end: inactive");
	ok(undo_begin(u, &st) == 0, "begin again");
	undo_close(u);
	flip(jpath, 20);
	u = undo_open(jpath, SIZE, err, sizeof(err));
	ok(u != NULL && !undo_active(u) && fsize(jpath) == 0,
	    "a torn header: inactive, emptied");
	ok(undo_begin(u, &st) == 0, "begin");
	undo_close(u);
	u = undo_open(jpath, SIZE - 4096, err, sizeof(err));
	ok(u == NULL && strstr(err, "undo journal of a 1049576 byte device, "
	    "this one has 1045480") != NULL, "another size refused: %s", err);

	/* a damaged header with records after it is not a torn begin */
	u = undo_open(jpath, SIZE, err, sizeof(err));
	ok(u != NULL && overwrite(u, 0, 4096, 1) == 0, "a record");
	undo_close(u);
	flip(jpath, 20);
	u = undo_open(jpath, SIZE, err, sizeof(err));
	ok(u == NULL && strstr(err, "damaged: its header does not check but "
	    "records follow it") != NULL, "refused: %s", err);
	ok(fsize(jpath) == 4096 + 64 + 4096, "and left as it was");
	unlink(jpath);
	close(devfd);

	/*
	 * A bad record followed by more than could ever be unsynced is
	 * damage: refused, not cut.  Near the end it is a torn append.
	 */
	devfd = open(store, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ok(ftruncate(devfd, 16 << 20) == 0, "a 16 MiB store");
	u = undo_open(jpath, 16 << 20, err, sizeof(err));
	ok(u != NULL && undo_begin(u, &st) == 0, "begin");
	for (e = 0, i = 0; i < 12; i++)
		e |= undo_save(u, devfd, (uint64_t)i << 20, 1 << 20, 1);
	ok(e == 0 && undo_bytes(u) == 12 << 20, "twelve records of 1 MiB");
	undo_close(u);
	flip(jpath, 4096 + 64 + 100);
	u = undo_open(jpath, 16 << 20, err, sizeof(err));
	ok(u == NULL && strstr(err, "damaged: the record at 4096 does not "
	    "check and 12583680 bytes follow it") != NULL, "refused: %s", err);
	flip(jpath, 4096 + 64 + 100);
	flip(jpath, fsize(jpath) - 100);
	u = undo_open(jpath, 16 << 20, err, sizeof(err));
	ok(u != NULL && undo_bytes(u) == 11 << 20, "the last one: cut off");
	undo_close(u);
	close(devfd);

	unlink(jpath);
	unlink(store);
	return done_testing();
}

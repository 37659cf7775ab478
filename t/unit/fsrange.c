/* See LICENSE file for copyright and license details. */
/*
 * Unit tests for lib/fsrange.c: ranges synced, only they written back
 * (seen with cachestat(2) where the kernel has it), errors reported.
 */
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <linux/io_uring.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsrange.h"
#include "unit.h"

#define MIB	(1 << 20)
#define FILEMIB	16
#define PAGE	4096
#define FOLIO	512	/* pages in the largest folio written back whole */

/* cachestat(2), Linux 6.5: the same number on every architecture */
struct cs_range {
	uint64_t	off, len;
};
struct cs {
	uint64_t	cache, dirty, writeback, evicted, recent;
};

/* Dirty pages of fd (waiting for write-back too), or -1. */
static long
dirty(int fd)
{
	struct cs_range	r = { 0, 0 };
	struct cs	c;

	if (syscall(451, fd, &r, &c, 0) == -1)
		return -1;
	return (long)(c.dirty + c.writeback);
}

static int
fill(int fd, int c)
{
	static unsigned char b[MIB];
	int	i;

	memset(b, c, sizeof(b));
	for (i = 0; i < FILEMIB; i++)
		if (pwrite(fd, b, MIB, (off_t)i * MIB) != MIB)
			return -1;
	return 0;
}

/* Whether this process may use io_uring at all. */
static int
have_uring(void)
{
	struct io_uring_params	p;
	int			fd;

	memset(&p, 0, sizeof(p));
	if ((fd = syscall(__NR_io_uring_setup, 1, &p)) == -1)
		return 0;
	close(fd);
	return 1;
}

/*
 * Through overlayfs the data lands in the upper file's page cache, which
 * sync_file_range on the overlay's file cannot see: every range must
 * still be written back, not only the first (seen on the upper file).
 */
static void
overlay(void)
{
	char		 d[] = "/tmp/fsrange-ovl.XXXXXX", b[4][256], opt[1024];
	char		 f[300], uf[300];
	static const char *sub[] = { "lower", "upper", "work", "merged" };
	struct fsrange	 fr[64];
	long		 d0, d1;
	int		 fd, ufd, i, e;

	if (geteuid() != 0) {
		ok(1, "# skip: overlayfs needs root");
		return;
	}
	if (mkdtemp(d) == NULL)
		exit(111);
	for (i = 0; i < 4; i++) {
		snprintf(b[i], sizeof(b[i]), "%s/%s", d, sub[i]);
		if (mkdir(b[i], 0700) == -1)
			exit(111);
	}
	snprintf(opt, sizeof(opt), "lowerdir=%s,upperdir=%s,workdir=%s",
	    b[0], b[1], b[2]);
	if (unshare(CLONE_NEWNS) == -1 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == -1 ||
	    mount("overlay", b[3], "overlay", 0, opt) == -1) {
		ok(1, "# skip: no overlayfs here");
		goto out;
	}
	snprintf(f, sizeof(f), "%s/f", b[3]);
	snprintf(uf, sizeof(uf), "%s/f", b[1]);
	if ((fd = open(f, O_RDWR | O_CREAT, 0600)) == -1 || fill(fd, 'o') ||
	    fdatasync(fd) == -1 || fill(fd, 'x') ||
	    (ufd = open(uf, O_RDONLY)) == -1)
		exit(111);
	for (i = 0; i < 64; i++) {
		fr[i].off = (uint64_t)i * 256 * 1024;
		fr[i].len = 64 * 1024;
	}
	d0 = dirty(ufd);
	e = fdatasync_ranges(fd, fr, 64);
	d1 = dirty(ufd);
	if (d0 == -1)
		ok(e == 0, "overlayfs: 64 ranges synced (%d); # skip: no "
		    "cachestat(2)", e);
	else
		ok(e == 0 && d1 <= d0 - 64 * 16, "overlayfs: all 64 ranges "
		    "written back (%d): %ld, then %ld pages dirty", e, d0, d1);
	close(ufd);
	close(fd);
	umount(b[3]);
out:
	snprintf(opt, sizeof(opt), "rm -rf '%s'", d);
	if (system(opt) != 0)
		exit(111);
}

int
main(void)
{
	char		 path[] = "/tmp/fsrange.XXXXXX";
	struct fsrange	 fr[100], one[2];
	unsigned char	 c[PAGE];
	int		 fd, p[2], i, e;
	long		 d0, d1;

	if ((fd = mkstemp(path)) == -1)
		return 111;
	unlink(path);
	/* allocated and clean first, as a store is: then dirty again */
	ok(fill(fd, 'o') == 0 && fdatasync(fd) == 0, "written and synced");
	ok(fill(fd, 'x') == 0, "written again");
	ok(fdatasync_ranges(fd, NULL, 0) == 0, "no range: nothing to do");
	if (!have_uring()) {
		/* a kernel without it, or a seccomp filter that refuses it */
		one[0].off = 0;
		one[0].len = PAGE;
		ok(fdatasync_ranges(fd, one, 1) == -1, "no io_uring here: -1, "
		    "the caller syncs the whole file");
		close(fd);
		return done_testing();
	}

	/*
	 * Two pages, 8 MiB apart: written back with their folios (large
	 * folios are written back whole), not the rest of the file.
	 */
	one[0].off = PAGE;
	one[0].len = PAGE;
	one[1].off = 8 * MIB;
	one[1].len = PAGE;
	d0 = dirty(fd);
	e = fdatasync_ranges(fd, one, 2);
	d1 = dirty(fd);
	ok(e == 0, "2 ranges synced (%d)", e);
	if (d0 == -1)
		ok(1, "# skip: no cachestat(2)");
	else
		ok(d0 == FILEMIB * MIB / PAGE && d1 >= d0 - 2 * FOLIO &&
		    d1 <= d0 - 2, "only the ranges written back: %ld, then "
		    "%ld pages dirty", d0, d1);

	/* more ranges than one ring's worth */
	for (i = 0; i < 100; i++) {
		fr[i].off = (uint64_t)(i * 5) * PAGE;
		fr[i].len = i == 99 ? 3 * PAGE : PAGE;
	}
	ok((e = fdatasync_ranges(fd, fr, 100)) == 0, "100 ranges synced (%d)",
	    e);
	ok(pread(fd, c, PAGE, 7 * PAGE) == PAGE && c[0] == 'x' &&
	    c[PAGE - 1] == 'x', "the data reads back");
	ok(fdatasync(fd) == 0 && (d0 == -1 || dirty(fd) == 0),
	    "the rest with fdatasync");
	close(fd);

	e = fdatasync_ranges(1000, fr, 1);
	ok(e == EBADF, "no such file: EBADF (%d)", e);
	if (pipe(p) == -1)
		return 111;
	ok(fdatasync_ranges(p[0], fr, 1) == -1,
	    "a pipe cannot: the caller syncs the whole file");
	close(p[0]);
	close(p[1]);
	overlay();
	return done_testing();
}

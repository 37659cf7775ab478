/* See LICENSE file for copyright and license details. */
/*
 * fsrange.c: fdatasync of ranges of a file.  Linux has no system call
 * for an fdatasync limited to a range, but io_uring's IORING_OP_FSYNC
 * takes one (off, len): vfs_fsync_range(), what O_DSYNC writes use, which
 * writes back only the range's dirty pages, then commits the file's
 * metadata needed to read its data back, and flushes the device's write
 * cache.  On a block device and on ext2/3/4, XFS and btrfs the metadata
 * and the cache are the inode's and the device's, not the range's: one
 * such fsync serves every range whose write-back ended before it (ext4
 * and XFS commit the inode's journal transaction, where an extent made
 * written at write-back is, before the pages' write-back ends; btrfs
 * syncs the whole file for a range anyway).  There each range is written
 * back and waited for (sync_file_range), then one ranged fsync of the
 * first: one journal commit and one cache flush for the lot, where an
 * fsync per range paid a cache flush each (95 ms for 2000 ranges of a
 * resync).  Elsewhere that does not hold (overlayfs: sync_file_range
 * sees the overlay's empty page cache, not the real file's; NFS: a COMMIT
 * whose verifier changed rewrites only the fsync's range), and each range
 * gets its own ranged fsync, all in flight at once in one short-lived
 * ring.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>

#include <linux/io_uring.h>
#include <linux/magic.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "fsrange.h"

#define FSR_ENTRIES	64

struct ring {
	int			 fd;
	unsigned char		*sq, *cq;
	size_t			 sqsz, cqsz;
	struct io_uring_sqe	*sqes;
	size_t			 sqesz;
	struct io_uring_params	 p;
};

static void
ring_close(struct ring *r)
{
	if (r->sqes != MAP_FAILED)
		munmap(r->sqes, r->sqesz);
	if (r->cq != MAP_FAILED && r->cq != r->sq)
		munmap(r->cq, r->cqsz);
	if (r->sq != MAP_FAILED)
		munmap(r->sq, r->sqsz);
	close(r->fd);
}

static int
ring_open(struct ring *r, unsigned int entries)
{
	memset(&r->p, 0, sizeof(r->p));
	r->sq = r->cq = MAP_FAILED;
	r->sqes = MAP_FAILED;
	if ((r->fd = syscall(__NR_io_uring_setup, entries, &r->p)) == -1)
		return -1;
	r->sqsz = r->p.sq_off.array + r->p.sq_entries * sizeof(unsigned);
	r->cqsz = r->p.cq_off.cqes + r->p.cq_entries *
	    sizeof(struct io_uring_cqe);
	if (r->p.features & IORING_FEAT_SINGLE_MMAP) {
		if (r->cqsz > r->sqsz)
			r->sqsz = r->cqsz;
		r->cqsz = r->sqsz;
	}
	r->sqesz = r->p.sq_entries * sizeof(struct io_uring_sqe);
	r->sq = mmap(NULL, r->sqsz, PROT_READ | PROT_WRITE, MAP_SHARED |
	    MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
	if (r->sq != MAP_FAILED && (r->p.features & IORING_FEAT_SINGLE_MMAP))
		r->cq = r->sq;
	else if (r->sq != MAP_FAILED)
		r->cq = mmap(NULL, r->cqsz, PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
	if (r->cq != MAP_FAILED)
		r->sqes = mmap(NULL, r->sqesz, PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
	if (r->sqes == MAP_FAILED) {
		ring_close(r);
		return -1;
	}
	return 0;
}

#define RING_U(base, off) ((unsigned *)(void *)((base) + (off)))

/* Sync n <= sq_entries ranges; 0, an errno, or -1 (not supported). */
static int
ring_sync(struct ring *r, int fd, const struct fsrange *fr, unsigned int n)
{
	unsigned	*sqtail = RING_U(r->sq, r->p.sq_off.tail);
	unsigned	*sqarray = RING_U(r->sq, r->p.sq_off.array);
	unsigned	 sqmask = *RING_U(r->sq, r->p.sq_off.ring_mask);
	unsigned	*cqhead = RING_U(r->cq, r->p.cq_off.head);
	unsigned	*cqtail = RING_U(r->cq, r->p.cq_off.tail);
	unsigned	 cqmask = *RING_U(r->cq, r->p.cq_off.ring_mask);
	struct io_uring_cqe *cqes = (struct io_uring_cqe *)(void *)(r->cq +
			    r->p.cq_off.cqes);
	struct io_uring_sqe *sqe;
	unsigned	 tail, head, i, got = 0, sub = 0;
	int		 e = 0, k;

	tail = *sqtail;
	for (i = 0; i < n; i++) {
		sqe = &r->sqes[(tail + i) & sqmask];
		memset(sqe, 0, sizeof(*sqe));
		sqe->opcode = IORING_OP_FSYNC;
		sqe->fd = fd;
		sqe->off = fr[i].off;
		sqe->len = fr[i].len;
		sqe->fsync_flags = IORING_FSYNC_DATASYNC;
		sqarray[(tail + i) & sqmask] = (tail + i) & sqmask;
	}
	__atomic_store_n(sqtail, tail + n, __ATOMIC_RELEASE);
	while (got < n) {
		k = syscall(__NR_io_uring_enter, r->fd, n - sub, n - got,
		    IORING_ENTER_GETEVENTS, NULL, 0);
		if (k == -1 && errno == EINTR)
			continue;
		if (k == -1)
			return got == 0 && sub == 0 ? -1 : errno;
		sub += k;
		head = *cqhead;
		while (head != __atomic_load_n(cqtail, __ATOMIC_ACQUIRE)) {
			k = cqes[head & cqmask].res;
			if (k < 0 && e == 0)
				e = -k;
			head++;
			got++;
		}
		__atomic_store_n(cqhead, head, __ATOMIC_RELEASE);
	}
	/* An old kernel without IORING_OP_FSYNC, a file without fsync */
	if (e == EINVAL || e == EOPNOTSUPP)
		return -1;
	return e;
}

/* Whether one ranged fsync serves every range written back (see above). */
static int
one_fsync_serves(int fd)
{
	struct stat	st;
	struct statfs	sf;

	if (fstat(fd, &st) == -1 || fstatfs(fd, &sf) == -1)
		return 0;
	if (S_ISBLK(st.st_mode))
		return 1;
	switch (sf.f_type) {
	case EXT4_SUPER_MAGIC:		/* ext2 and ext3 too */
	case XFS_SUPER_MAGIC:
	case BTRFS_SUPER_MAGIC:
	case TMPFS_MAGIC:		/* nothing to make durable */
		return 1;
	default:
		return 0;
	}
}

/*
 * fdatasync_ranges: fdatasync the n ranges of fd; 0, the errno of the
 * first range that failed, or -1 when the kernel cannot (no io_uring,
 * not allowed, a file without write-back): then the caller syncs the
 * whole file.
 */
int
fdatasync_ranges(int fd, const struct fsrange *fr, size_t n)
{
	struct ring	r;
	size_t		i;
	unsigned int	k;
	int		e = 0, e1;

	if (n == 0)
		return 0;
	if (one_fsync_serves(fd)) {
		for (i = 0; i < n; i++)
			if (sync_file_range(fd, fr[i].off, fr[i].len,
			    SYNC_FILE_RANGE_WAIT_BEFORE |
			    SYNC_FILE_RANGE_WRITE |
			    SYNC_FILE_RANGE_WAIT_AFTER) == -1)
				return errno == ESPIPE || errno == EINVAL ||
				    errno == ENOSYS ? -1 : errno;
		n = 1;
	}
	if (ring_open(&r, n < FSR_ENTRIES ? n : FSR_ENTRIES) == -1)
		return -1;
	for (i = 0; i < n; i += k) {
		k = n - i < r.p.sq_entries ? n - i : r.p.sq_entries;
		if ((e1 = ring_sync(&r, fd, fr + i, k)) == -1) {
			e = i == 0 ? -1 : EINVAL;
			break;
		}
		if (e == 0)
			e = e1;
	}
	ring_close(&r);
	return e;
}

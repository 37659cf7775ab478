/* See LICENSE file for copyright and license details. */
/*
 * splitbrain: keep a split brain from losing anything.  This part of the
 * program handles save files: it copies a victim's diverging blocks into a
 * checksummed save file before anything overwrites them, lists a save
 * file, and puts the blocks back onto a copy of the device.
 */
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <linux/fs.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "hatrio.h"
#include "savefile.h"

#define RANGE_MAX	(4u << 20)	/* bytes per save record at most */

static void	 usage(void) __attribute__((noreturn));
static uint64_t	 dev_size(int, const char *);
static int	 cmd_save(int, char **);
static int	 cmd_restore(int, char **);
static int	 cmd_show(int, char **);
static int	 restore_cb(uint64_t, const void *, uint32_t, void *);
static int	 show_cb(uint64_t, const void *, uint32_t, void *);

static void
usage(void)
{
	fprintf(stderr,
	    "usage: splitbrain save [-g generation] [-n node] -o savefile "
	    "device\n"
	    "       splitbrain restore savefile device\n"
	    "       splitbrain show savefile\n");
	exit(EXIT_USAGE);
}

static uint64_t
dev_size(int fd, const char *path)
{
	struct stat	st;
	uint64_t	sz;

	if (fstat(fd, &st) == -1)
		err(EXIT_SYS, "%s", path);
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &sz) == -1)
			err(EXIT_SYS, "%s: BLKGETSIZE64", path);
		return sz;
	}
	if (!S_ISREG(st.st_mode))
		errx(EXIT_USAGE, "%s: not a regular file or block device",
		    path);
	return (uint64_t)st.st_size;
}

/*
 * save: read "OFFSET LENGTH" lines (bytes, as blkmirror prints its
 * out-of-sync ranges) on standard input and copy those ranges of the
 * device into the save file.  Input is checked completely before the
 * save file is written, and the save file appears only when complete.
 */
static int
cmd_save(int argc, char *argv[])
{
	struct save_header	 h;
	struct save_writer	 w;
	struct {
		uint64_t	 off, len;
	}			*r = NULL;
	size_t			 nr = 0, cap = 0, i, lineno = 0;
	unsigned char		*buf;
	const char		*out = NULL, *e;
	char			 line[256], *end;
	uint64_t		 size, off, len, n, done;
	ssize_t			 got;
	int			 ch, fd;

	memset(&h, 0, sizeof(h));
	while ((ch = getopt(argc, argv, "g:n:o:")) != -1) {
		switch (ch) {
		case 'g':
			errno = 0;
			h.generation = strtoull(optarg, &end, 16);
			if (*optarg == '\0' || *end != '\0' || errno != 0)
				errx(EXIT_USAGE, "-g %s: not a hexadecimal "
				    "generation identifier", optarg);
			break;
		case 'n':
			if (strlen(optarg) > SAVE_NAME_MAX)
				errx(EXIT_USAGE, "-n %s: node name longer than "
				    "%d characters", optarg, SAVE_NAME_MAX);
			strcpy(h.node, optarg);
			break;
		case 'o':
			out = optarg;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 1 || out == NULL)
		usage();
	if ((fd = open(argv[0], O_RDONLY | O_CLOEXEC)) == -1)
		err(EXIT_SYS, "%s", argv[0]);
	size = dev_size(fd, argv[0]);

	while (fgets(line, sizeof(line), stdin) != NULL) {
		lineno++;
		if (strchr(line, '\n') == NULL && !feof(stdin))
			errx(EXIT_USAGE, "stdin:%zu: line too long", lineno);
		if (sscanf(line, "%" SCNu64 " %" SCNu64, &off, &len) != 2)
			errx(EXIT_USAGE, "stdin:%zu: want OFFSET LENGTH in "
			    "bytes: %s", lineno, strtok(line, "\n"));
		if (off > size || len > size - off)
			errx(EXIT_USAGE, "stdin:%zu: range %" PRIu64 "+%" PRIu64
			    " lies past the end of %s (%" PRIu64 " bytes)",
			    lineno, off, len, argv[0], size);
		if (nr == cap) {
			cap = cap ? 2 * cap : 64;
			if ((r = reallocarray(r, cap, sizeof(*r))) == NULL)
				err(EXIT_SYS, "reallocarray");
		}
		r[nr].off = off;
		r[nr].len = len;
		nr++;
	}
	if (ferror(stdin))
		err(EXIT_SYS, "stdin");

	h.block_size = 4096;
	h.device_size = size;
	h.created = wall_usec();
	if ((buf = malloc(RANGE_MAX)) == NULL)
		err(EXIT_SYS, "malloc");
	if (save_create(&w, out, &h) == -1)
		err(EXIT_SYS, "%s", out);
	for (i = 0; i < nr; i++)
		for (done = 0; done < r[i].len; done += n) {
			n = r[i].len - done;
			if (n > RANGE_MAX)
				n = RANGE_MAX;
			got = pread(fd, buf, n, r[i].off + done);
			if (got != (ssize_t)n) {
				e = got == -1 ? strerror(errno) : "short read";
				save_abort(&w);
				errx(EXIT_SYS, "%s: reading %" PRIu64 "+%" PRIu64
				    ": %s", argv[0], r[i].off + done, n, e);
			}
			if (save_add(&w, r[i].off + done, buf, n) == -1) {
				save_abort(&w);
				err(EXIT_SYS, "%s", out);
			}
		}
	if (save_commit(&w) == -1)
		err(EXIT_SYS, "%s", out);
	printf("saved %zu ranges, %" PRIu64 " bytes of %s in %s\n", nr,
	    w.bytes, argv[0], out);
	free(buf);
	free(r);
	close(fd);
	return EXIT_OK;
}

static int
restore_cb(uint64_t off, const void *buf, uint32_t len, void *arg)
{
	int	fd = *(int *)arg;

	if (pwrite(fd, buf, len, off) != (ssize_t)len) {
		warn("writing %" PRIu64 "+%u", off, len);
		return -1;
	}
	return 0;
}

/* restore: check the whole save file, then write its blocks back. */
static int
cmd_restore(int argc, char *argv[])
{
	struct save_header	 h;
	const char		*e;
	uint64_t		 nrec, nbytes, size;
	int			 fd;

	if (argc != 3)
		usage();
	if ((e = save_read(argv[1], &h, &nrec, &nbytes, NULL, NULL)) != NULL)
		errx(EXIT_USAGE, "%s", e);
	if ((fd = open(argv[2], O_RDWR | O_CLOEXEC)) == -1)
		err(EXIT_SYS, "%s", argv[2]);
	size = dev_size(fd, argv[2]);
	if (size < h.device_size)
		errx(EXIT_USAGE, "%s: %" PRIu64 " bytes, smaller than the "
		    "saved device (%" PRIu64 " bytes)", argv[2], size,
		    h.device_size);
	if ((e = save_read(argv[1], &h, NULL, NULL, restore_cb, &fd)) != NULL)
		errx(EXIT_SYS, "%s", e);
	if (fdatasync(fd) == -1)
		err(EXIT_SYS, "%s", argv[2]);
	close(fd);
	printf("restored %" PRIu64 " records, %" PRIu64 " bytes onto %s\n",
	    nrec, nbytes, argv[2]);
	return EXIT_OK;
}

static int
show_cb(uint64_t off, const void *buf, uint32_t len, void *arg)
{
	(void)buf;
	(void)arg;
	printf("record offset=%" PRIu64 " length=%u\n", off, len);
	return 0;
}

/* show: the header as key=value lines, then one line per record. */
static int
cmd_show(int argc, char *argv[])
{
	struct save_header	 h;
	const char		*e;
	uint64_t		 nrec, nbytes;

	if (argc != 2)
		usage();
	if ((e = save_read(argv[1], &h, &nrec, &nbytes, NULL, NULL)) != NULL)
		errx(EXIT_USAGE, "%s", e);
	printf("version=%u\nnode=%s\nblock_size=%u\ndevice_size=%" PRIu64
	    "\ncreated=%" PRIu64 "\ngeneration=%016" PRIx64 "\nrecords=%"
	    PRIu64 "\nbytes=%" PRIu64 "\n", h.version, h.node, h.block_size,
	    h.device_size, h.created / 1000000, h.generation, nrec, nbytes);
	if ((e = save_read(argv[1], &h, NULL, NULL, show_cb, NULL)) != NULL)
		errx(EXIT_SYS, "%s", e);
	return EXIT_OK;
}

int
main(int argc, char *argv[])
{
	int	rc;

	if (sodium_init() == -1)
		errx(EXIT_SYS, "sodium_init failed");
	if (argc < 2)
		usage();
	if (strcmp(argv[1], "save") == 0)
		rc = cmd_save(argc - 1, argv + 1);
	else if (strcmp(argv[1], "restore") == 0)
		rc = cmd_restore(argc - 1, argv + 1);
	else if (strcmp(argv[1], "show") == 0)
		rc = cmd_show(argc - 1, argv + 1);
	else
		usage();
	if (fflush(stdout) == EOF || ferror(stdout))
		err(EXIT_SYS, "stdout");
	return rc;
}

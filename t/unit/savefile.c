/* See LICENSE file for copyright and license details. */
/* Unit tests for lib/savefile.c: round trip, and every kind of damage. */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hatrio.h"
#include "savefile.h"
#include "unit.h"

struct seen {
	uint64_t	 n, sum;
};

static int	count_cb(uint64_t, const void *, uint32_t, void *);
static int	tamper_cb(uint64_t, const void *, uint32_t, void *);

static const char	*tamper_path;
static void	make(const char *, int);
static void	patch(const char *, off_t, int);

static int
count_cb(uint64_t off, const void *buf, uint32_t len, void *arg)
{
	struct seen		*s = arg;
	const unsigned char	*p = buf;
	uint32_t		 i;

	s->n++;
	s->sum += off;
	for (i = 0; i < len; i++)
		s->sum += p[i];
	return 0;
}

/* counts like count_cb, and changes the third record's data on the way */
static int
tamper_cb(uint64_t off, const void *buf, uint32_t len, void *arg)
{
	struct seen	*s = arg;

	if (s->n == 0)
		patch(tamper_path, 64 + 2 * (16 + 4096) + 16 + 7, 0x5a);
	return count_cb(off, buf, len, arg);
}

static void
make(const char *path, int nrec)
{
	struct save_header	h = { 0 };
	struct save_writer	w;
	unsigned char		block[4096];
	int			i;

	h.block_size = 4096;
	h.device_size = 1 << 20;
	h.created = 1;
	h.generation = 0xabcdef;
	strcpy(h.node, "b");
	if (save_create(&w, path, &h) == -1)
		fatal("save_create");
	for (i = 0; i < nrec; i++) {
		memset(block, i + 1, sizeof(block));
		if (save_add(&w, (uint64_t)i * 8192, block, sizeof(block)) ==
		    -1)
			fatal("save_add");
	}
	if (save_commit(&w) == -1)
		fatal("save_commit");
}

static void
patch(const char *path, off_t at, int byte)
{
	unsigned char	c = byte;
	int		fd;

	if ((fd = open(path, O_WRONLY)) == -1 || pwrite(fd, &c, 1, at) != 1)
		fatal("patch %s", path);
	close(fd);
}

int
main(void)
{
	char			 dir[] = "/tmp/hatrio-save.XXXXXX", path[80];
	struct save_header	 h;
	struct seen		 s = { 0, 0 };
	uint64_t		 nrec, nbytes, want = 0;
	const char		*e;
	struct stat		 st;
	int			 i, serr;

	if (mkdtemp(dir) == NULL)
		fatal("mkdtemp");
	snprintf(path, sizeof(path), "%s/save", dir);

	make(path, 3);
	ok(access(path, F_OK) == 0, "save file in place");
	snprintf(path, sizeof(path), "%s/save.tmp", dir);
	ok(access(path, F_OK) == -1, "no temporary file left");
	snprintf(path, sizeof(path), "%s/save", dir);
	e = save_read(path, &h, &nrec, &nbytes, count_cb, &s);
	is_str(e, NULL, "good file reads");
	ok(nrec == 3 && nbytes == 3 * 4096, "3 records, 12288 bytes");
	for (i = 0; i < 3; i++)
		want += (uint64_t)i * 8192 + 4096ULL * (i + 1);
	ok(s.n == 3 && s.sum == want, "records handed over intact");
	ok(h.block_size == 4096 && h.device_size == 1 << 20 &&
	    h.generation == 0xabcdef && strcmp(h.node, "b") == 0,
	    "header fields read back");

	make(path, 3);
	tamper_path = path;
	s.n = 0;
	e = save_read(path, &h, NULL, NULL, tamper_cb, &s);
	ok(e != NULL && strstr(e, "changed while it was read"),
	    "a file changed between the passes is caught: %s", e);
	ok(s.n == 2, "and the changed record was not handed over (%llu)",
	    (unsigned long long)s.n);

	make(path, 0);
	is_str(save_read(path, &h, &nrec, NULL, NULL, NULL), NULL,
	    "an empty save file is valid");
	ok(nrec == 0, "and has no records");

	make(path, 3);
	patch(path, 64 + 16 + 100, 0xee);
	s.n = 0;
	e = save_read(path, &h, NULL, NULL, count_cb, &s);
	ok(e != NULL && strstr(e, "checksum mismatch"),
	    "a flipped data byte is caught: %s", e);
	ok(s.n == 0, "and no record was handed over");

	make(path, 3);
	patch(path, 0, 'X');
	e = save_read(path, &h, NULL, NULL, NULL, NULL);
	serr = errno;
	ok(e != NULL && strstr(e, "bad magic"), "bad magic: %s", e);
	ok(serr == 0, "bad content sets errno to 0");

	make(path, 3);
	patch(path, 11, 9);
	e = save_read(path, &h, NULL, NULL, NULL, NULL);
	ok(e != NULL && strstr(e, "save file version 9, this program reads 1"),
	    "unknown version: %s", e);

	make(path, 3);
	stat(path, &st);
	if (truncate(path, st.st_size - 10) == -1)
		fatal("truncate");
	e = save_read(path, &h, NULL, NULL, NULL, NULL);
	ok(e != NULL && strstr(e, "truncated"), "truncated file: %s", e);

	make(path, 3);
	if (truncate(path, 64 + 16 + 4096 + 50) == -1)
		fatal("truncate");
	e = save_read(path, &h, NULL, NULL, NULL, NULL);
	ok(e != NULL && strstr(e, "truncated"), "cut mid-record: %s", e);

	make(path, 3);
	patch(path, 64 + 8, 0xff);	/* the first record's length */
	e = save_read(path, &h, NULL, NULL, NULL, NULL);
	ok(e != NULL && strstr(e, "bad record header"),
	    "an absurd record length: %s", e);

	make(path, 3);
	patch(path, 64 + 2, 0x01);	/* offset far past the device */
	e = save_read(path, &h, NULL, NULL, NULL, NULL);
	ok(e != NULL && strstr(e, "past the end of the device"),
	    "a record past the end: %s", e);

	snprintf(path, sizeof(path), "%s/none", dir);
	e = save_read(path, &h, NULL, NULL, NULL, NULL);
	serr = errno;
	ok(e != NULL && strstr(e, "No such file"), "missing file: %s", e);
	ok(serr == ENOENT, "a missing file leaves errno ENOENT");

	snprintf(path, sizeof(path), "%s/save", dir);
	unlink(path);
	rmdir(dir);
	return done_testing();
}

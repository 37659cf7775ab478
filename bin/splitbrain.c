/* See LICENSE file for copyright and license details. */
/*
 * splitbrain: decide, from two nodes' generation identifiers, whether they
 * diverged and which way to resync; apply a recovery policy; and keep a
 * split brain from losing anything: copy a victim's diverging blocks into
 * a checksummed save file before anything overwrites them, list a save
 * file, and put the blocks back onto a copy of the device.  The decisions
 * are lib/gi.c's, the same code blkmirror runs when peers reconnect.
 */
#include <sys/stat.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "ctl.h"
#include "gi.h"
#include "hatrio.h"
#include "savefile.h"

#define RANGE_MAX	(4u << 20)	/* bytes per save record at most */

#define KV_MAX		512	/* key=value lines in one node's description */

struct kv {
	char		*key, *val;
};

struct nodeinfo {
	const char	*path;
	struct kv	 kv[KV_MAX];
	size_t		 n;
	const char	*name;
	uint32_t	 block_size;
};

static void	 usage(void) __attribute__((noreturn));
static void	 node_read(struct nodeinfo *, const char *);
static void	 node_free(struct nodeinfo *);
static const char *node_get(const struct nodeinfo *, const char *);
static uint64_t	 node_hex(const struct nodeinfo *, const char *, int);
static void	 node_view(const struct nodeinfo *, const struct nodeinfo *,
		    struct gi_view *);
static int	 cmd_verdict(int, char **);
static int	 cmd_policy(int, char **);
static uint64_t	 dev_size(int, const char *);
static int	 cmd_save(int, char **);
static int	 cmd_restore(int, char **);
static int	 cmd_show(int, char **);
static int	 cmd_resolve(int, char **);
static int	 restore_cb(uint64_t, const void *, uint32_t, void *);
static int	 show_cb(uint64_t, const void *, uint32_t, void *);

static void
usage(void)
{
	fprintf(stderr,
	    "usage: splitbrain [verdict] node-a node-b\n"
	    "       splitbrain policy [after-sb-Npri=policy ...] node-a "
	    "node-b\n"
	    "       splitbrain save [-g generation] [-n node] -o savefile "
	    "device\n"
	    "       splitbrain restore savefile device\n"
	    "       splitbrain show savefile\n"
	    "       splitbrain resolve -c ctlsock --discard node\n");
	exit(EXIT_USAGE);
}

static uint64_t
dev_size(int fd, const char *path)
{
	uint64_t	sz;

	if (store_size(fd, &sz) == -1) {
		if (errno == EINVAL)
			errx(EXIT_USAGE, "%s: not a regular file or block "
			    "device", path);
		err(EXIT_SYS, "%s", path);
	}
	return sz;
}

/*
 * node_read: one node's description, as "blkmirror dump" or "blkmirror
 * ctl SOCKET status" print it: key=value lines.  "-" is standard input.
 */
static void
node_read(struct nodeinfo *ni, const char *path)
{
	FILE	*fp;
	char	 line[1024], *eq, *nl;
	size_t	 lineno = 0;
	uint64_t v;

	memset(ni, 0, sizeof(*ni));
	ni->path = path;
	if (strcmp(path, "-") == 0) {
		fp = stdin;
		ni->path = "stdin";
	} else if ((fp = fopen(path, "r")) == NULL)
		err(EXIT_SYS, "%s", path);
	while (fgets(line, sizeof(line), fp) != NULL) {
		lineno++;
		if ((nl = strchr(line, '\n')) != NULL)
			*nl = '\0';
		else if (!feof(fp))
			errx(EXIT_USAGE, "%s:%zu: line too long", ni->path,
			    lineno);
		if (line[0] == '\0' || line[0] == '#')
			continue;
		if ((eq = strchr(line, '=')) == NULL || eq == line)
			errx(EXIT_USAGE, "%s:%zu: not a key=value line: %s",
			    ni->path, lineno, line);
		if (ni->n == KV_MAX)
			errx(EXIT_USAGE, "%s: more than %d lines", ni->path,
			    KV_MAX);
		*eq = '\0';
		if ((ni->kv[ni->n].key = strdup(line)) == NULL ||
		    (ni->kv[ni->n].val = strdup(eq + 1)) == NULL)
			err(EXIT_SYS, "strdup");
		ni->n++;
	}
	if (ferror(fp))
		err(EXIT_SYS, "%s", ni->path);
	if (fp != stdin)
		fclose(fp);
	if ((ni->name = node_get(ni, "node")) == NULL || *ni->name == '\0')
		errx(EXIT_USAGE, "%s: no node= line: not a blkmirror dump or "
		    "status", ni->path);
	if (strlen(ni->name) >= GI_NAME_MAX)
		errx(EXIT_USAGE, "%s: node name too long", ni->path);
	if (node_get(ni, "gi_current") == NULL)
		errx(EXIT_USAGE, "%s: no gi_current= line: not a blkmirror "
		    "dump or status", ni->path);
	ni->block_size = 4096;
	if (node_get(ni, "block_size") != NULL) {
		if (parse_size(node_get(ni, "block_size"), &v) != NULL ||
		    v == 0 || v > 1 << 20)
			errx(EXIT_USAGE, "%s: bad block_size=%s", ni->path,
			    node_get(ni, "block_size"));
		ni->block_size = v;
	}
}

static void
node_free(struct nodeinfo *ni)
{
	size_t	i;

	for (i = 0; i < ni->n; i++) {
		free(ni->kv[i].key);
		free(ni->kv[i].val);
	}
	ni->n = 0;
}

static const char *
node_get(const struct nodeinfo *ni, const char *key)
{
	size_t	i;

	for (i = 0; i < ni->n; i++)
		if (strcmp(ni->kv[i].key, key) == 0)
			return ni->kv[i].val;
	return NULL;
}

/* a hexadecimal identifier; with idx >= 0, that item of a comma list */
static uint64_t
node_hex(const struct nodeinfo *ni, const char *key, int idx)
{
	const char	*s = node_get(ni, key), *p;
	char		*end;
	uint64_t	 v;

	if (s == NULL)
		return 0;
	for (p = s; idx > 0; idx--)
		if ((p = strchr(p, ',')) == NULL)
			return 0;
		else
			p++;
	errno = 0;
	v = strtoull(p, &end, 16);
	if (end == p || errno != 0 || (*end != '\0' && *end != ','))
		errx(EXIT_USAGE, "%s: %s=%s: not a hexadecimal generation "
		    "identifier", ni->path, key, s);
	return v;
}

/* What self knows, as seen when it compares itself with peer. */
static void
node_view(const struct nodeinfo *self, const struct nodeinfo *peer,
    struct gi_view *v)
{
	char		 key[128];
	const char	*s;
	uint64_t	 oos = 0;
	int		 i;

	memset(v, 0, sizeof(*v));
	strcpy(v->name, self->name);
	v->current = node_hex(self, "gi_current", -1);
	for (i = 0; i < GI_HISTORY; i++)
		v->history[i] = node_hex(self, "gi_history", i);
	snprintf(key, sizeof(key), "peer.%s.bitmap_gi", peer->name);
	v->bitmap = node_hex(self, key, -1);
	v->primary = (s = node_get(self, "role")) != NULL &&
	    strcmp(s, "primary") == 0;
	v->crashed_primary = v->primary && (s = node_get(self, "clean")) !=
	    NULL && strcmp(s, "0") == 0;
	if ((s = node_get(self, "promoted_at")) != NULL)
		v->promoted_at = strtoull(s, NULL, 10);
	snprintf(key, sizeof(key), "peer.%s.oos_bytes", peer->name);
	if ((s = node_get(self, key)) != NULL)
		oos = strtoull(s, NULL, 10);
	v->changes = (oos + self->block_size - 1) / self->block_size;
}

/*
 * verdict: one stable line and an exit status per verdict:
 *	in-sync nodes=A,B				0
 *	resync source=A target=B full=0|1 al=A|B|-	2
 *	split-brain nodes=A,B full=0|1			3
 *	unrelated nodes=A,B				4
 * followed by reason="..." on the same line.
 */
static int
cmd_verdict(int argc, char *argv[])
{
	static struct nodeinfo	 na, nb;
	struct nodeinfo		*a = &na, *b = &nb;
	struct gi_view		 va, vb;
	struct gi_decision	 d;
	const char		*al = "-";
	char			 albuf[2 * GI_NAME_MAX + 2];
	int			 rc = EXIT_SYS;

	if (argc != 3)
		usage();
	if (strcmp(argv[1], "-") == 0 && strcmp(argv[2], "-") == 0)
		errx(EXIT_USAGE, "only one node can come from standard input");
	node_read(a, argv[1]);
	node_read(b, argv[2]);
	if (strcmp(a->name, b->name) == 0)
		errx(EXIT_USAGE, "both describe node %s", a->name);
	node_view(a, b, &va);
	node_view(b, a, &vb);
	gi_decide(&va, &vb, &d);
	if (d.al_self && d.al_peer) {
		snprintf(albuf, sizeof(albuf), "%s,%s", a->name, b->name);
		al = albuf;
	} else if (d.al_self)
		al = a->name;
	else if (d.al_peer)
		al = b->name;
	switch (d.verdict) {
	case GI_IN_SYNC:
		printf("in-sync nodes=%s,%s reason=\"%s\"\n", a->name,
		    b->name, d.why);
		rc = 0;
		break;
	case GI_SOURCE:
	case GI_TARGET:
		printf("resync source=%s target=%s full=%d al=%s "
		    "reason=\"%s\"\n", d.verdict == GI_SOURCE ? a->name :
		    b->name, d.verdict == GI_SOURCE ? b->name : a->name, d.full,
		    al, d.why);
		rc = 2;
		break;
	case GI_SPLIT_BRAIN:
		printf("split-brain nodes=%s,%s full=%d reason=\"%s\"\n",
		    a->name, b->name, d.full, d.why);
		rc = 3;
		break;
	case GI_UNRELATED:
		printf("unrelated nodes=%s,%s reason=\"%s\"\n", a->name,
		    b->name, d.why);
		rc = 4;
		break;
	}
	node_free(a);
	node_free(b);
	return rc;
}

/*
 * policy: after a split brain, which node is the victim?  The policy is
 * chosen by the number of primaries among the two, with arguments named as
 * DRBD's settings: after-sb-0pri=, after-sb-1pri=, after-sb-2pri=.  Prints "victim=B survivor=A policy=P reason=..." and
 * exits 0, or "undecided ..." and exits 1 when a person must decide.
 */
static int
cmd_policy(int argc, char *argv[])
{
	static struct nodeinfo	 na, nb;
	struct gi_policy_spec	 pol[3];
	struct nodeinfo		*a = &na, *b = &nb;
	struct gi_view		 va, vb;
	struct gi_decision	 d;
	const char		*e, *why;
	char			 name[GI_NAME_MAX + 16];
	int			 ch, i, np, victim;

	for (i = 0; i < 3; i++)
		gi_policy_parse("disconnect", &pol[i]);
	/* after-sb-0pri=POLICY, -1pri, -2pri, as DRBD names them */
	for (argc--, argv++; argc > 0 && strncmp(argv[0], "after-sb-", 9) == 0;
	    argc--, argv++) {
		ch = argv[0][9];
		if (ch < '0' || ch > '2' || strncmp(argv[0] + 10, "pri=", 4) != 0)
			errx(EXIT_USAGE, "%s: want after-sb-0pri=, after-sb-1pri= "
			    "or after-sb-2pri=", argv[0]);
		if ((e = gi_policy_parse(argv[0] + 14, &pol[ch - '0'])) != NULL)
			errx(EXIT_USAGE, "%s: %s", argv[0], e);
	}
	if (argc != 2)
		usage();
	if (strcmp(argv[0], "-") == 0 && strcmp(argv[1], "-") == 0)
		errx(EXIT_USAGE, "only one node can come from standard input");
	node_read(a, argv[0]);
	node_read(b, argv[1]);
	if (strcmp(a->name, b->name) == 0)
		errx(EXIT_USAGE, "both describe node %s", a->name);
	node_view(a, b, &va);
	node_view(b, a, &vb);
	gi_decide(&va, &vb, &d);
	if (d.verdict != GI_SPLIT_BRAIN)
		errx(EXIT_USAGE, "%s and %s are not in split brain (%s: %s)",
		    a->name, b->name, gi_verdict_name(d.verdict), d.why);
	np = va.primary + vb.primary;
	victim = gi_policy_victim(&pol[np], &va, &vb, &why);
	gi_policy_name(&pol[np], name, sizeof(name));
	if (victim < 0)
		printf("undecided policy=%s primaries=%d reason=\"%s\"\n",
		    name, np, why);
	else
		printf("victim=%s survivor=%s policy=%s primaries=%d "
		    "reason=\"%s\"\n", victim == 0 ? a->name : b->name,
		    victim == 0 ? b->name : a->name, name, np, why);
	node_free(a);
	node_free(b);
	return victim < 0 ? EXIT_NO : EXIT_OK;
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
		errx(errno != 0 ? EXIT_SYS : EXIT_USAGE, "%s", e);
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
		errx(errno != 0 ? EXIT_SYS : EXIT_USAGE, "%s", e);
	printf("version=%u\nnode=%s\nblock_size=%u\ndevice_size=%" PRIu64
	    "\ncreated=%" PRIu64 "\ngeneration=%016" PRIx64 "\nrecords=%"
	    PRIu64 "\nbytes=%" PRIu64 "\n", h.version, h.node, h.block_size,
	    h.device_size, h.created / 1000000, h.generation, nrec, nbytes);
	if ((e = save_read(argv[1], &h, NULL, NULL, show_cb, NULL)) != NULL)
		errx(EXIT_SYS, "%s", e);
	return EXIT_OK;
}

/*
 * resolve: a person's decision after a split brain, to the local
 * blkmirror: node's diverging writes are saved, then discarded.  The
 * answer ("victim=V survivor=S") comes when blkmirror took the decision;
 * its events say when the save file is complete.
 */
static int
cmd_resolve(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "discard", required_argument, NULL, 'D' },
		{ NULL, 0, NULL, 0 },
	};
	const char	*ctl = NULL, *victim = NULL;
	char		 cmd[CTL_LINE_MAX];
	int		 ch;

	while ((ch = getopt_long(argc, argv, "c:D:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			ctl = optarg;
			break;
		case 'D':
			victim = optarg;
			break;
		default:
			usage();
		}
	}
	if (argc != optind || ctl == NULL || victim == NULL)
		usage();
	if (*victim == '\0' || strlen(victim) >= GI_NAME_MAX ||
	    strpbrk(victim, " \t\n") != NULL)
		errx(EXIT_USAGE, "--discard %s: not a node name", victim);
	snprintf(cmd, sizeof(cmd), "discard %s", victim);
	return ctl_client(ctl, cmd);
}

int
main(int argc, char *argv[])
{
	int	rc;

	if (sodium_init() == -1)
		errx(EXIT_SYS, "sodium_init failed");
	if (argc < 2)
		usage();
	if (strcmp(argv[1], "verdict") == 0)
		rc = cmd_verdict(argc - 1, argv + 1);
	else if (strcmp(argv[1], "policy") == 0)
		rc = cmd_policy(argc - 1, argv + 1);
	else if (strcmp(argv[1], "save") == 0)
		rc = cmd_save(argc - 1, argv + 1);
	else if (strcmp(argv[1], "restore") == 0)
		rc = cmd_restore(argc - 1, argv + 1);
	else if (strcmp(argv[1], "show") == 0)
		rc = cmd_show(argc - 1, argv + 1);
	else if (strcmp(argv[1], "resolve") == 0)
		rc = cmd_resolve(argc - 1, argv + 1);
	else if (argc == 3 && argv[1][0] != '-')
		rc = cmd_verdict(argc, argv);
	else
		usage();
	if (fflush(stdout) == EOF || ferror(stdout))
		err(EXIT_SYS, "stdout");
	return rc;
}

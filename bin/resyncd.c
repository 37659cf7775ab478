/* See LICENSE file for copyright and license details. */
/*
 * resyncd: bring a node's copy of the disk back in line.  As a daemon,
 * and with "sync" and "verify", it drives the local blkmirror's resync of
 * a peer (see below).  "send" and "recv" seed a copy over any one-way
 * pipe:
 *
 *	resyncd send -k key DEV | ssh dr resyncd recv -k key DEV
 *
 * The stream is compressed (zstd, skipped where it does not pay; zero
 * chunks cost a few bytes) and encrypted and authenticated with a key
 * derived from the cluster key and a random salt (crypto_secretstream), so
 * a forged, reordered or truncated stream is refused.  The receiver makes
 * its progress durable as it goes; an interrupted seed is resumed from the
 * last durable offset with "resyncd send -O offset".
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <linux/falloc.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>
#include <zstd.h>

#include "hatrio.h"
#include "lathist.h"

#define SEED_MAGIC	"HTRSEED1"
#define SEED_VERSION	1
#define SEED_SALT	32
#define SEED_CLEAR	(8 + 4 + 4 + SEED_SALT)	/* bound as associated data */
#define SEED_CHUNK	(1024 * 1024)
#define SEED_FRAME_MAX	(SEED_CHUNK + 64 + crypto_secretstream_xchacha20poly1305_ABYTES)
#define SEED_SYNC_EVERY	(64ULL * 1024 * 1024)	/* durable progress step */

enum seed_type {
	SEED_HELLO = 1,
	SEED_DATA = 2,
	SEED_END = 3,
};

enum seed_enc {
	ENC_RAW = 0,
	ENC_ZSTD = 1,
	ENC_ZERO = 2,
};

static void	 usage(void) __attribute__((noreturn));
static uint64_t	 dev_size(int, const char *);
static void	 load_key(const char *, unsigned char *);
static void	 derive(const unsigned char *, const unsigned char *,
		    unsigned char *);
static void	 write_all(int, const void *, size_t);
static int	 read_full(int, void *, size_t);
static int	 all_zero(const unsigned char *, size_t);
static int	 cmd_send(int, char **);
static int	 cmd_recv(int, char **);
static int	 state_read(const char *, uint64_t *, uint64_t *);
static void	 state_write(const char *, uint64_t, uint64_t);
static void	 zero_range(int, uint64_t, uint64_t, const char *);

static void
usage(void)
{
	fprintf(stderr,
	    "usage: resyncd [-v] [-d fd] [-M data|csum] [-R rate] "
	    "[-W window] -c ctlsock\n"
	    "       resyncd sync [-M data|csum] [-R rate] [-W window] "
	    "-c ctlsock peer\n"
	    "       resyncd verify [-f] [-R rate] [-W window] -c ctlsock "
	    "peer\n"
	    "       resyncd send [-v] [-O offset] [-n node] [-z level] "
	    "-k keyfile device\n"
	    "       resyncd recv [-v] [-S statefile] -k keyfile device\n");
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

static void
load_key(const char *path, unsigned char *key)
{
	const char	*e;

	if (path == NULL)
		errx(EXIT_USAGE, "-k keyfile is required");
	if ((e = key_load(path, key)) != NULL)
		errx(EXIT_USAGE, "%s", e);
}

/* The stream key: the cluster key hashed with the stream's salt. */
static void
derive(const unsigned char *ckey, const unsigned char *salt,
    unsigned char *skey)
{
	crypto_generichash_state	st;
	static const char		ctx[] = "hatrio seed stream v1";

	crypto_generichash_init(&st, ckey, HATRIO_KEY_BYTES,
	    crypto_secretstream_xchacha20poly1305_KEYBYTES);
	crypto_generichash_update(&st, (const unsigned char *)ctx,
	    sizeof(ctx) - 1);
	crypto_generichash_update(&st, salt, SEED_SALT);
	crypto_generichash_final(&st, skey,
	    crypto_secretstream_xchacha20poly1305_KEYBYTES);
}

static void
write_all(int fd, const void *buf, size_t len)
{
	const unsigned char	*p = buf;
	ssize_t			 n;

	while (len > 0) {
		if ((n = write(fd, p, len)) == -1) {
			if (errno == EINTR)
				continue;
			err(EXIT_SYS, "write");
		}
		p += n;
		len -= n;
	}
}

/* 0: got it all; 1: clean end of input before the first byte; -1: short */
static int
read_full(int fd, void *buf, size_t len)
{
	unsigned char	*p = buf;
	size_t		 got = 0;
	ssize_t		 n;

	while (got < len) {
		if ((n = read(fd, p + got, len - got)) == -1) {
			if (errno == EINTR)
				continue;
			err(EXIT_SYS, "read");
		}
		if (n == 0)
			return got == 0 ? 1 : -1;
		got += n;
	}
	return 0;
}

static int
all_zero(const unsigned char *p, size_t n)
{
	static const unsigned char	z[4096];
	size_t				k;

	for (; n > 0; p += k, n -= k) {
		k = n < sizeof(z) ? n : sizeof(z);
		if (memcmp(p, z, k) != 0)
			return 0;
	}
	return 1;
}

/*
 * send: the clear header (magic, version, flags, salt, the secretstream
 * header), then frames of a 32-bit length and one encrypted message each:
 * HELLO, DATA for every chunk from the start offset on, END with the final
 * tag.  The first message carries the clear header as associated data.
 */
static int
cmd_send(int argc, char *argv[])
{
	crypto_secretstream_xchacha20poly1305_state	 ss;
	unsigned char	 ckey[HATRIO_KEY_BYTES], skey[32];
	unsigned char	 clear[SEED_CLEAR +
			    crypto_secretstream_xchacha20poly1305_HEADERBYTES];
	unsigned char	*in, *msg, *frame;
	const char	*keyfile = NULL, *node = "", *e;
	unsigned long long clen;
	ZSTD_CCtx	*cctx;
	uint64_t	 off = 0, size, v, sent = 0, wire = 0;
	size_t		 n, mlen, z;
	int		 ch, fd, level = 1, verbose = 0;

	while ((ch = getopt(argc, argv, "k:n:O:vz:")) != -1) {
		switch (ch) {
		case 'k':
			keyfile = optarg;
			break;
		case 'n':
			if (strlen(optarg) > 255)
				errx(EXIT_USAGE, "-n %s: longer than 255 "
				    "characters", optarg);
			node = optarg;
			break;
		case 'O':
			if ((e = parse_size(optarg, &off)) != NULL)
				errx(EXIT_USAGE, "-O %s: %s", optarg, e);
			if (off % 4096 != 0)
				errx(EXIT_USAGE, "-O %s: not a multiple of 4096",
				    optarg);
			break;
		case 'v':
			verbose = 1;
			break;
		case 'z':
			if ((e = parse_size(optarg, &v)) != NULL || v > 19)
				errx(EXIT_USAGE, "-z %s: not a zstd level from 0 "
				    "to 19", optarg);
			level = (int)v;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 1)
		usage();
	load_key(keyfile, ckey);
	if (isatty(STDOUT_FILENO))
		errx(EXIT_USAGE, "standard output is a terminal; pipe it to "
		    "resyncd recv");
	if ((fd = open(argv[0], O_RDONLY | O_CLOEXEC)) == -1)
		err(EXIT_SYS, "%s", argv[0]);
	size = dev_size(fd, argv[0]);
	if (off > size)
		errx(EXIT_USAGE, "-O %" PRIu64 ": past the end of %s (%" PRIu64
		    " bytes)", off, argv[0], size);
	if ((in = malloc(SEED_CHUNK)) == NULL ||
	    (msg = malloc(SEED_CHUNK + 64)) == NULL ||
	    (frame = malloc(4 + SEED_FRAME_MAX)) == NULL ||
	    (cctx = ZSTD_createCCtx()) == NULL)
		err(EXIT_SYS, "malloc");
	if (level > 0)
		ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);

	memcpy(clear, SEED_MAGIC, 8);
	put_be32(clear + 8, SEED_VERSION);
	put_be32(clear + 12, 0);
	randombytes_buf(clear + 16, SEED_SALT);
	derive(ckey, clear + 16, skey);
	sodium_memzero(ckey, sizeof(ckey));
	crypto_secretstream_xchacha20poly1305_init_push(&ss,
	    clear + SEED_CLEAR, skey);
	sodium_memzero(skey, sizeof(skey));
	write_all(STDOUT_FILENO, clear, sizeof(clear));

	/* HELLO: size, block size, start offset, chunk size, node */
	msg[0] = SEED_HELLO;
	put_be64(msg + 1, size);
	put_be32(msg + 9, 4096);
	put_be64(msg + 13, off);
	put_be32(msg + 21, SEED_CHUNK);
	msg[25] = (unsigned char)strlen(node);
	memcpy(msg + 26, node, strlen(node));
	mlen = 26 + strlen(node);
	crypto_secretstream_xchacha20poly1305_push(&ss, frame + 4, &clen, msg,
	    mlen, clear, SEED_CLEAR, 0);
	put_be32(frame, (uint32_t)clen);
	write_all(STDOUT_FILENO, frame, 4 + clen);

	while (off < size) {
		n = size - off < SEED_CHUNK ? size - off : SEED_CHUNK;
		if (pread(fd, in, n, off) != (ssize_t)n)
			err(EXIT_SYS, "%s: reading at %" PRIu64, argv[0], off);
		msg[0] = SEED_DATA;
		put_be64(msg + 1, off);
		put_be32(msg + 10, (uint32_t)n);
		if (all_zero(in, n)) {
			msg[9] = ENC_ZERO;
			mlen = 14;
		} else {
			z = level > 0 ? ZSTD_compress2(cctx, msg + 14,
			    SEED_CHUNK + 50, in, n) : 0;
			if (level > 0 && !ZSTD_isError(z) && z < n) {
				msg[9] = ENC_ZSTD;
				mlen = 14 + z;
			} else {
				msg[9] = ENC_RAW;
				memcpy(msg + 14, in, n);
				mlen = 14 + n;
			}
		}
		crypto_secretstream_xchacha20poly1305_push(&ss, frame + 4,
		    &clen, msg, mlen, NULL, 0, 0);
		put_be32(frame, (uint32_t)clen);
		write_all(STDOUT_FILENO, frame, 4 + clen);
		off += n;
		sent += n;
		wire += 4 + clen;
	}
	msg[0] = SEED_END;
	put_be64(msg + 1, size);
	crypto_secretstream_xchacha20poly1305_push(&ss, frame + 4, &clen, msg,
	    9, NULL, 0, crypto_secretstream_xchacha20poly1305_TAG_FINAL);
	put_be32(frame, (uint32_t)clen);
	write_all(STDOUT_FILENO, frame, 4 + clen);
	if (verbose)
		fprintf(stderr, "resyncd: sent %" PRIu64 " bytes of %s as %"
		    PRIu64 " bytes\n", sent, argv[0], wire);
	ZSTD_freeCCtx(cctx);
	free(in);
	free(msg);
	free(frame);
	close(fd);
	return EXIT_OK;
}

/* The state file: "size=N\noffset=N\n", written atomically. */
static int
state_read(const char *path, uint64_t *size, uint64_t *off)
{
	FILE	*fp;
	int	 n;

	if ((fp = fopen(path, "r")) == NULL) {
		if (errno == ENOENT)
			return 0;
		err(EXIT_SYS, "%s", path);
	}
	n = fscanf(fp, "size=%" SCNu64 "\noffset=%" SCNu64 "\n", size, off);
	fclose(fp);
	if (n != 2)
		errx(EXIT_USAGE, "%s: not a resyncd state file", path);
	return 1;
}

static void
state_write(const char *path, uint64_t size, uint64_t off)
{
	char	 tmp[PATH_MAX];
	FILE	*fp;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		errx(EXIT_USAGE, "%s: path too long", path);
	if ((fp = fopen(tmp, "w")) == NULL)
		err(EXIT_SYS, "%s", tmp);
	fprintf(fp, "size=%" PRIu64 "\noffset=%" PRIu64 "\n", size, off);
	if (fflush(fp) == EOF || fsync(fileno(fp)) == -1 || fclose(fp) == EOF)
		err(EXIT_SYS, "%s", tmp);
	if (rename(tmp, path) == -1)
		err(EXIT_SYS, "%s", path);
}

static void
zero_range(int fd, uint64_t off, uint64_t len, const char *path)
{
	static unsigned char	z[65536];
	uint64_t		k;

	if (fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off,
	    len) == 0)
		return;
	for (; len > 0; off += k, len -= k) {
		k = len < sizeof(z) ? len : sizeof(z);
		if (pwrite(fd, z, k, off) != (ssize_t)k)
			err(EXIT_SYS, "%s: writing at %" PRIu64, path, off);
	}
}

/*
 * recv: check everything before it is written: the header, that every
 * message decrypts in order, that each chunk starts where the last one
 * ended and fits the device, that compressed data expands to exactly its
 * stated length.  Progress is made durable every SEED_SYNC_EVERY bytes.
 */
static int
cmd_recv(int argc, char *argv[])
{
	crypto_secretstream_xchacha20poly1305_state	 ss;
	unsigned char	 ckey[HATRIO_KEY_BYTES], skey[32];
	unsigned char	 clear[SEED_CLEAR +
			    crypto_secretstream_xchacha20poly1305_HEADERBYTES];
	unsigned char	 tag, lenb[4], *frame, *msg, *out;
	unsigned long long mlen;
	const char	*keyfile = NULL, *statefile = NULL;
	char		 defstate[PATH_MAX], node[256];
	ZSTD_DCtx	*dctx;
	struct stat	 st;
	uint64_t	 size, devsize, off, expect, durable, ssize, soff;
	uint64_t	 got = 0, len, since = 0;
	uint32_t	 flen;
	size_t		 r;
	int		 ch, fd, rc, verbose = 0, have_state;

	while ((ch = getopt(argc, argv, "k:S:v")) != -1) {
		switch (ch) {
		case 'k':
			keyfile = optarg;
			break;
		case 'S':
			statefile = optarg;
			break;
		case 'v':
			verbose = 1;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 1)
		usage();
	load_key(keyfile, ckey);
	if ((fd = open(argv[0], O_RDWR | O_CLOEXEC)) == -1)
		err(EXIT_SYS, "%s", argv[0]);
	devsize = dev_size(fd, argv[0]);
	if (statefile == NULL) {
		if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode))
			errx(EXIT_USAGE, "%s: not a regular file: name a state "
			    "file with -S", argv[0]);
		if (snprintf(defstate, sizeof(defstate), "%s.seed", argv[0]) >=
		    (int)sizeof(defstate))
			errx(EXIT_USAGE, "%s: path too long", argv[0]);
		statefile = defstate;
	}
	have_state = state_read(statefile, &ssize, &soff);

	if ((frame = malloc(SEED_FRAME_MAX)) == NULL ||
	    (msg = malloc(SEED_FRAME_MAX)) == NULL ||
	    (out = malloc(SEED_CHUNK)) == NULL ||
	    (dctx = ZSTD_createDCtx()) == NULL)
		err(EXIT_SYS, "malloc");

	if ((rc = read_full(STDIN_FILENO, clear, sizeof(clear))) != 0)
		errx(EXIT_SYS, "stdin: %s", rc == 1 ? "empty stream" :
		    "stream ended inside its header");
	if (memcmp(clear, SEED_MAGIC, 8) != 0)
		errx(EXIT_USAGE, "stdin: not a resyncd send stream");
	if (get_be32(clear + 8) != SEED_VERSION)
		errx(EXIT_USAGE, "stdin: stream version %u, this resyncd "
		    "reads %d", get_be32(clear + 8), SEED_VERSION);
	derive(ckey, clear + 16, skey);
	sodium_memzero(ckey, sizeof(ckey));
	if (crypto_secretstream_xchacha20poly1305_init_pull(&ss,
	    clear + SEED_CLEAR, skey) != 0)
		errx(EXIT_USAGE, "stdin: bad stream header");
	sodium_memzero(skey, sizeof(skey));

	/* HELLO */
	if (read_full(STDIN_FILENO, lenb, 4) != 0 ||
	    (flen = get_be32(lenb)) > SEED_FRAME_MAX ||
	    read_full(STDIN_FILENO, frame, flen) != 0)
		errx(EXIT_SYS, "stdin: stream ended before its first message");
	if (crypto_secretstream_xchacha20poly1305_pull(&ss, msg, &mlen, &tag,
	    frame, flen, clear, SEED_CLEAR) != 0)
		errx(EXIT_USAGE, "stdin: cannot authenticate the stream: wrong "
		    "cluster key, or the stream was modified");
	if (mlen < 26 || msg[0] != SEED_HELLO || mlen != 26U + msg[25] ||
	    get_be32(msg + 9) != 4096 || get_be32(msg + 21) > SEED_CHUNK)
		errx(EXIT_USAGE, "stdin: malformed first message");
	size = get_be64(msg + 1);
	off = get_be64(msg + 13);
	memcpy(node, msg + 26, msg[25]);
	node[msg[25]] = '\0';
	if (devsize < size)
		errx(EXIT_USAGE, "%s: %" PRIu64 " bytes, smaller than the "
		    "sender's %" PRIu64, argv[0], devsize, size);
	if (off > size)
		errx(EXIT_USAGE, "stdin: start offset past the end");
	if (off != 0) {
		if (!have_state)
			errx(EXIT_USAGE, "stdin: the stream starts at offset %"
			    PRIu64 " but %s has no record of an earlier seed",
			    off, statefile);
		if (ssize != size)
			errx(EXIT_USAGE, "stdin: the earlier seed was of %"
			    PRIu64 " bytes, this one of %" PRIu64, ssize, size);
		if (off > soff)
			errx(EXIT_USAGE, "stdin: the stream starts at offset %"
			    PRIu64 " but only %" PRIu64 " bytes were received "
			    "durably; resume with: resyncd send -O %" PRIu64,
			    off, soff, soff);
	}
	expect = durable = off;
	state_write(statefile, size, durable);
	if (verbose)
		fprintf(stderr, "resyncd: receiving %" PRIu64 " bytes from %s "
		    "at offset %" PRIu64 "\n", size, *node ? node : "(unnamed)",
		    off);

	for (;;) {
		rc = read_full(STDIN_FILENO, lenb, 4);
		if (rc == 0 && (flen = get_be32(lenb)) <= SEED_FRAME_MAX)
			rc = read_full(STDIN_FILENO, frame, flen);
		else if (rc == 0)
			errx(EXIT_USAGE, "stdin: frame of %u bytes, over the "
			    "maximum: not a resyncd stream", flen);
		if (rc != 0) {
			if (fdatasync(fd) == 0)
				state_write(statefile, size, expect);
			errx(EXIT_SYS, "stdin: the stream ended early at offset "
			    "%" PRIu64 "; resume with: resyncd send -O %" PRIu64,
			    expect, expect);
		}
		if (crypto_secretstream_xchacha20poly1305_pull(&ss, msg, &mlen,
		    &tag, frame, flen, NULL, 0) != 0) {
			if (fdatasync(fd) == 0)
				state_write(statefile, size, expect);
			errx(EXIT_USAGE, "stdin: message after offset %" PRIu64
			    " failed authentication: forged, modified, "
			    "replayed or reordered data; resume with: resyncd "
			    "send -O %" PRIu64, expect, expect);
		}
		if (mlen == 9 && msg[0] == SEED_END &&
		    tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
			if (get_be64(msg + 1) != size || expect != size)
				errx(EXIT_USAGE, "stdin: the stream ended at %"
				    PRIu64 " of %" PRIu64 " bytes", expect,
				    size);
			break;
		}
		if (mlen < 14 || msg[0] != SEED_DATA || tag != 0)
			errx(EXIT_USAGE, "stdin: malformed message after offset "
			    "%" PRIu64, expect);
		off = get_be64(msg + 1);
		len = get_be32(msg + 10);
		if (off != expect || len == 0 || len > SEED_CHUNK ||
		    len > size - off)
			errx(EXIT_USAGE, "stdin: chunk %" PRIu64 "+%" PRIu64
			    " out of order or out of range (want %" PRIu64 ")",
			    off, len, expect);
		switch (msg[9]) {
		case ENC_ZERO:
			if (mlen != 14)
				errx(EXIT_USAGE, "stdin: malformed zero chunk");
			zero_range(fd, off, len, argv[0]);
			break;
		case ENC_ZSTD:
			r = ZSTD_decompressDCtx(dctx, out, len, msg + 14,
			    mlen - 14);
			if (ZSTD_isError(r) || r != len)
				errx(EXIT_USAGE, "stdin: chunk at %" PRIu64
				    " does not expand to its length", off);
			if (pwrite(fd, out, len, off) != (ssize_t)len)
				err(EXIT_SYS, "%s: writing at %" PRIu64,
				    argv[0], off);
			break;
		case ENC_RAW:
			if (mlen - 14 != len)
				errx(EXIT_USAGE, "stdin: malformed raw chunk");
			if (pwrite(fd, msg + 14, len, off) != (ssize_t)len)
				err(EXIT_SYS, "%s: writing at %" PRIu64,
				    argv[0], off);
			break;
		default:
			errx(EXIT_USAGE, "stdin: unknown chunk encoding %u",
			    msg[9]);
		}
		expect += len;
		got += len;
		since += len;
		if (since >= SEED_SYNC_EVERY) {
			if (fdatasync(fd) == -1)
				err(EXIT_SYS, "%s", argv[0]);
			state_write(statefile, size, expect);
			since = 0;
		}
	}
	if (fdatasync(fd) == -1)
		err(EXIT_SYS, "%s", argv[0]);
	if (unlink(statefile) == -1)
		err(EXIT_SYS, "%s", statefile);
	printf("received %" PRIu64 " bytes, %s complete (%" PRIu64 " bytes)\n",
	    got, argv[0], size);
	ZSTD_freeDCtx(dctx);
	free(frame);
	free(msg);
	free(out);
	close(fd);
	return EXIT_OK;
}

/*
 * --- resync of a peer, through the local blkmirror's control socket ---
 *
 * blkmirror owns the disk and the link: for each range asked with "sync
 * PEER OFFSET LENGTH" it serialises against application writes, moves the
 * blocks and answers when the target wrote them.  resyncd decides what to
 * ask for (the runs that "oos PEER" lists), how many at once (-w) and how
 * fast: a fixed rate (-r), or by default a rate that yields to the
 * application, measured from blkmirror's write latency.  Progress lives
 * in blkmirror's bitmaps, so a resync that was interrupted continues
 * where it stopped.
 */
#define RS_WINDOW	128		/* requests in flight */
#define RS_TICK_USEC	200000		/* rate control and progress */
#define RS_RATE_MIN	(256ULL << 10)	/* DRBD's c-min-rate, 250k */
#define RS_RATE_START	(1ULL << 20)	/* up from there: a burst at the
					   start weighs on the p99 */
#define RS_RATE_MAX	(16ULL << 30)
#define RS_WIN_WRITES	200		/* a window's p99: enough writes, */
#define RS_WIN_TICKS	5		/* or this many ticks */
#define RS_PROBE_USEC	10000000	/* a new baseline this often */
#define RS_IDLE_USEC	1000000		/* no write for this long: idle */

struct ctlconn {
	int	 fd;
	char	 buf[65536];
	size_t	 len;
};

struct rsjob {
	const char	*ctl, *peer;
	int		 kind;		/* 0 sync, 1 csum, 2 verify */
	int		 window, fix, quiet, mode_set;
	uint64_t	 fixed_rate;	/* 0: dynamic */
	/* running */
	struct ctlconn	 q, r;		/* queries; pipelined requests */
	char		 node[160];
	uint64_t	 rate, tokens, tok_t, moved, differ, errors;
	uint64_t	 base_p99, t0, last_tick, last_probe;
	uint64_t	 last_print;
	struct lathist	 hist, win0;	/* the last reading; at the window's
					   start */
	int		 win_ticks, have_hist;
	int		 idle;		/* nobody wrote last tick: full speed */
	int		 probing;	/* 1 paused, 2 paused and measuring */
	uint64_t	 remaining, outstanding_bytes;
	int		 outstanding, tty;
};

static void
cc_open(struct ctlconn *c, const char *path)
{
	struct sockaddr_un	sun;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path))
		errx(EXIT_USAGE, "%s: path too long", path);
	strcpy(sun.sun_path, path);
	if ((c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		err(EXIT_SYS, "socket");
	if (connect(c->fd, (struct sockaddr *)&sun, sizeof(sun)) == -1)
		err(EXIT_SYS, "%s", path);
	c->len = 0;
}

static void
cc_close(struct ctlconn *c)
{
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
}

static void
cc_send(struct ctlconn *c, const char *fmt, ...)
{
	char	line[256];
	va_list	ap;
	int	n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	line[n++] = '\n';
	write_all(c->fd, line, n);
}

/*
 * cc_line: the next line (without its newline) into out; waits at most
 * timeout_ms (-1: for ever).  1: a line, 0: timed out; blkmirror gone is
 * fatal (a supervisor starts us again).
 */
static int
cc_line(struct ctlconn *c, char *out, size_t outlen, int timeout_ms)
{
	struct pollfd	 pfd = { c->fd, POLLIN, 0 };
	char		*nl;
	ssize_t		 n;
	size_t		 l;

	for (;;) {
		if ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
			l = nl - c->buf;
			snprintf(out, outlen, "%.*s", (int)l, c->buf);
			memmove(c->buf, nl + 1, c->len - l - 1);
			c->len -= l + 1;
			return 1;
		}
		if (c->len == sizeof(c->buf))
			errx(EXIT_SYS, "control socket: line too long");
		if (poll(&pfd, 1, timeout_ms) == 0)
			return 0;
		if ((n = read(c->fd, c->buf + c->len, sizeof(c->buf) -
		    c->len)) == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			errx(EXIT_SYS, "control socket: blkmirror went away");
		c->len += n;
	}
}

/* One status value of blkmirror ("" if it has none). */
struct kv {
	char	key[96], val[160];
};

static int
query(struct rsjob *j, const char *cmd, struct kv *kv, int nkv)
{
	char	 line[512], *eq;
	int	 i, n = 0;

	cc_send(&j->q, "%s", cmd);
	for (i = 0; i < nkv; i++)
		kv[i].val[0] = '\0';
	for (;;) {
		cc_line(&j->q, line, sizeof(line), -1);
		if (strcmp(line, "ok") == 0)
			return n;
		if (strncmp(line, "error: ", 7) == 0)
			errx(EXIT_NO, "%s: %s", cmd, line + 7);
		if ((eq = strchr(line, '=')) == NULL)
			continue;
		*eq = '\0';
		for (i = 0; i < nkv; i++)
			if (strcmp(kv[i].key, line) == 0) {
				snprintf(kv[i].val, sizeof(kv[i].val), "%s",
				    eq + 1);
				n++;
			}
	}
}

enum { K_STATE, K_RESYNC, K_OOS, K_NODE, K_SIZE, K_CONN, K_FULL, K_EMPTY,
	K_QUIET, K_N };

static void
status(struct rsjob *j, struct kv *kv)
{
	static const char *names[] = { "state", "resync", "oos_bytes" };
	int	i;

	for (i = 0; i < 3; i++)
		snprintf(kv[i].key, sizeof(kv[i].key), "peer.%s.%s", j->peer,
		    names[i]);
	snprintf(kv[K_NODE].key, sizeof(kv[K_NODE].key), "node");
	snprintf(kv[K_QUIET].key, sizeof(kv[K_QUIET].key), "write_idle_usec");
	snprintf(kv[K_SIZE].key, sizeof(kv[K_SIZE].key), "size");
	snprintf(kv[K_CONN].key, sizeof(kv[K_CONN].key), "peer.%s.connected",
	    j->peer);
	snprintf(kv[K_FULL].key, sizeof(kv[K_FULL].key),
	    "peer.%s.resync_full", j->peer);
	snprintf(kv[K_EMPTY].key, sizeof(kv[K_EMPTY].key),
	    "peer.%s.peer_empty", j->peer);
	if (query(j, "status", kv, K_N) == 0 || kv[K_STATE].val[0] == '\0')
		errx(EXIT_USAGE, "%s: no peer %s", j->ctl, j->peer);
	snprintf(j->node, sizeof(j->node), "%s", kv[K_NODE].val);
}

static const char *
human(uint64_t v, char *b, size_t n)
{
	if (v >= 10ULL << 30)
		snprintf(b, n, "%.1f GiB", v / 1073741824.0);
	else if (v >= 10ULL << 20)
		snprintf(b, n, "%.1f MiB", v / 1048576.0);
	else
		snprintf(b, n, "%.1f KiB", v / 1024.0);
	return b;
}

/* A progress bar on a terminal, else one line a second. */
static void
progress(struct rsjob *j, int last)
{
	uint64_t	 now = now_usec(), el = now - j->t0, total, rate, eta;
	char		 bar[31], a[32], b[32], c[32];
	int		 pct, i;

	if (j->quiet)
		return;
	if (!last && now - j->last_print < (j->tty ? RS_TICK_USEC :
	    1000000))
		return;
	j->last_print = now;
	total = j->moved + j->remaining;
	pct = total ? (int)(100 * j->moved / total) : 100;
	if (last)
		pct = 100;
	rate = el > 0 ? j->moved * 1000000 / el : 0;
	eta = rate > 0 ? j->remaining / rate : 0;
	if (j->tty) {
		for (i = 0; i < 30; i++)
			bar[i] = i < pct * 30 / 100 ? '#' : '.';
		bar[30] = '\0';
		printf("\r%s %s %s [%s] %3d%% %s/s ETA %" PRIu64 ":%02" PRIu64
		    " (%s of %s)%s", j->kind == 2 ? "verify" : "resync",
		    j->node, j->peer, bar, pct, human(rate, a, sizeof(a)),
		    eta / 60, eta % 60, human(j->moved, b, sizeof(b)),
		    human(total, c, sizeof(c)), last ? "\n" : "");
	} else {
		uint64_t t = wall_usec();
		printf("%" PRIu64 ".%06" PRIu64 " %s %s peer=%s done_bytes=%"
		    PRIu64 " total_bytes=%" PRIu64 " percent=%d rate=%" PRIu64
		    " eta_sec=%" PRIu64 "\n", t / 1000000, t % 1000000,
		    j->node, last ? (j->kind == 2 ? "verify-done" :
		    "resync-done") : (j->kind == 2 ? "verify" : "resync"),
		    j->peer, j->moved, total, pct, rate, eta);
	}
	fflush(stdout);
}

/* One answer to a request: "ok OFF LEN bytes=N differ=M" or an error. */
static void
answer(struct rsjob *j, int timeout_ms)
{
	char		 line[512];
	unsigned long long off, len, bytes, diff;

	if (cc_line(&j->r, line, sizeof(line), timeout_ms) == 0)
		return;
	j->outstanding--;
	if (sscanf(line, "ok %llu %llu bytes=%llu differ=%llu", &off, &len,
	    &bytes, &diff) == 4) {
		j->outstanding_bytes -= len;
		j->moved += j->kind == 2 ? len : bytes;
		j->differ += diff;
		return;
	}
	j->errors++;
	if (sscanf(line, "error: %*s %*s %llu %llu", &off, &len) == 2)
		j->outstanding_bytes -= len;
	warnx("%s", strncmp(line, "error: ", 7) == 0 ? line + 7 : line);
}

/* blkmirror's histogram of the application's write latencies. */
static void
latency(struct rsjob *j, struct lathist *h)
{
	char			line[128];
	unsigned long long	upper, n;

	memset(h, 0, sizeof(*h));
	cc_send(&j->q, "latency");
	for (;;) {
		cc_line(&j->q, line, sizeof(line), -1);
		if (strcmp(line, "ok") == 0)
			return;
		if (strncmp(line, "error: ", 7) == 0)
			errx(EXIT_NO, "latency: %s", line + 7);
		if (sscanf(line, "write_lat.%llu=%llu", &upper, &n) == 2)
			h->n[lathist_bucket(upper)] += n;
	}
}

/*
 * The rate: fixed, or adapted to the application.  Its write latencies
 * come from blkmirror's histogram, read every tick; the difference of
 * two readings is what the writes of that stretch took.  A window is
 * enough writes for a 99th percentile (or a second of them), compared
 * with a baseline: the 99th percentile of a window in which no resync
 * block was under way (the latency the application has without us).
 * Above 1.5 times the baseline, the rate halves, down to RS_RATE_MIN;
 * else it grows by an eighth.  The baseline is measured when writes
 * start and then every RS_PROBE_USEC, for the application's load
 * changes: new requests wait, those in flight are answered, then a
 * window is measured.  While nobody writes we go at full speed.
 */
/* A new window of writes, from now. */
static void
win_reset(struct rsjob *j)
{
	j->win0 = j->hist;
	j->win_ticks = 0;
}

/* The window w of n writes is over: a baseline, or a new rate. */
static void
window_end(struct rsjob *j, const struct lathist *w, uint64_t n)
{
	uint64_t	p99 = lathist_quantile(w, 99);
	char		r[32];

	if (j->probing == 2) {
		/* the baseline (if nobody wrote meanwhile, the old stays) */
		if (n > 0) {
			j->base_p99 = p99;
			log_debug("peer %s: the application's write p99 "
			    "without resync: %" PRIu64 " us", j->peer, p99);
		}
		j->probing = 0;
		j->last_probe = now_usec();
		j->rate = j->rate == RS_RATE_MAX ? RS_RATE_START : j->rate;
	} else if (j->probing == 0 && j->base_p99 > 0 && n > 0) {
		if (p99 > j->base_p99 * 3 / 2 + 20)
			j->rate /= 2;
		else
			j->rate += j->rate / 8;
		if (j->rate < RS_RATE_MIN)
			j->rate = RS_RATE_MIN;
		log_debug("peer %s: the application's write p99 %" PRIu64
		    " us (%" PRIu64 " without): rate %s/s", j->peer, p99,
		    j->base_p99, human(j->rate, r, sizeof(r)));
	}
	win_reset(j);
}

static void
tick(struct rsjob *j)
{
	struct kv	 kv[K_N];
	struct lathist	 h, d;
	uint64_t	 now = now_usec(), n, quiet;
	int		 first;

	/* at full speed, look more often for an application that starts */
	if (now - j->last_tick < (j->idle ? RS_TICK_USEC / 4 : RS_TICK_USEC))
		return;
	j->last_tick = now;
	status(j, kv);
	j->remaining = strtoull(kv[K_OOS].val, NULL, 10);
	j->remaining = j->remaining > j->outstanding_bytes ?
	    j->remaining - j->outstanding_bytes : 0;
	progress(j, 0);
	if (j->fixed_rate)
		return;
	latency(j, &h);
	lathist_sub(&d, &h, &j->hist);
	j->hist = h;
	first = !j->have_hist;		/* the first reading: no difference */
	j->have_hist = 1;
	n = first ? 0 : lathist_count(&d);
	quiet = strtoull(kv[K_QUIET].val, NULL, 10);
	/*
	 * Nobody writes (none for RS_IDLE_USEC): full speed, at once if so
	 * at the start.  Not sooner, so that a few writes a second do not
	 * find the resync at full speed every other tick.
	 */
	if (n == 0 && quiet >= RS_IDLE_USEC) {
		if (!j->idle || j->probing)
			log_debug("peer %s: nobody writes: no limit", j->peer);
		j->rate = RS_RATE_MAX;
		j->idle = 1;
		j->probing = 0;
		win_reset(j);
	} else if (!first) {
		if (j->idle || (j->probing == 0 &&
		    now - j->last_probe >= RS_PROBE_USEC))
			j->probing = 1;		/* a new baseline first */
		j->idle = 0;
		if (j->probing == 1) {
			if (j->outstanding > 0)
				return;
			j->probing = 2;		/* from now on: measure */
			win_reset(j);
			return;
		}
		lathist_sub(&d, &j->hist, &j->win0);	/* the window */
		n = lathist_count(&d);
		if (n >= RS_WIN_WRITES || ++j->win_ticks >= RS_WIN_TICKS)
			window_end(j, &d, n);
	}
	if (j->rate < RS_RATE_MIN)
		j->rate = RS_RATE_MIN;
	if (j->rate > RS_RATE_MAX)
		j->rate = RS_RATE_MAX;
}

/* Wait until the rate allows len more bytes (a token bucket). */
static void
pace(struct rsjob *j, uint64_t len)
{
	uint64_t	now, burst = 1ULL << 20, wait;

	for (;;) {
		now = now_usec();
		if (j->probing) {		/* nothing new meanwhile */
			j->tokens = 0;
			wait = RS_TICK_USEC / 4;
		} else {
			j->tokens += (now - j->tok_t) * j->rate / 1000000;
			if (j->tokens > burst + len)
				j->tokens = burst + len;
			if (j->tokens >= len) {
				j->tokens -= len;
				j->tok_t = now;
				return;
			}
			wait = (len - j->tokens) * 1000000 / j->rate;
		}
		j->tok_t = now;
		if (j->outstanding > 0)
			answer(j, (int)(wait / 1000) + 1);
		else
			usleep(wait < 100000 ? wait : 100000);
		tick(j);
	}
}

static void
request(struct rsjob *j, uint64_t off, uint64_t len)
{
	while (j->outstanding >= j->window) {
		answer(j, RS_TICK_USEC / 1000);
		tick(j);
	}
	pace(j, len);
	cc_send(&j->r, "%s %s %" PRIu64 " %" PRIu64 "%s", j->kind == 2 ?
	    "verify" : "sync", j->peer, off, len, j->kind == 1 ? " csum" : "");
	j->outstanding++;
	j->outstanding_bytes += len;
}

static void
drain(struct rsjob *j)
{
	while (j->outstanding > 0) {
		answer(j, RS_TICK_USEC / 1000);
		tick(j);
	}
}

/* One pass over the runs that "oos PEER" lists now; bytes asked for. */
static uint64_t
pass(struct rsjob *j)
{
	struct ctlconn	*c = &j->q;
	char		 line[128];
	uint64_t	*runs = NULL, asked = 0;
	size_t		 n = 0, cap = 0, i;
	unsigned long long off, len;

	cc_send(c, "oos %s", j->peer);
	for (;;) {
		cc_line(c, line, sizeof(line), -1);
		if (strcmp(line, "ok") == 0)
			break;
		if (strncmp(line, "error: ", 7) == 0)
			errx(EXIT_NO, "%s", line + 7);
		if (sscanf(line, "%llu %llu", &off, &len) != 2)
			errx(EXIT_SYS, "oos: bad line: %s", line);
		if (n + 2 > cap) {
			cap = cap ? 2 * cap : 1024;
			if ((runs = reallocarray(runs, cap, sizeof(*runs))) ==
			    NULL)
				err(EXIT_SYS, "realloc");
		}
		runs[n++] = off;
		runs[n++] = len;
	}
	tick(j);	/* the first: is anybody writing? */
	for (i = 0; i < n; i += 2) {
		request(j, runs[i], runs[i + 1]);
		asked += runs[i + 1];
		tick(j);
	}
	drain(j);
	free(runs);
	return asked;
}

static void
job_start(struct rsjob *j)
{
	j->q.fd = j->r.fd = -1;
	cc_open(&j->q, j->ctl);
	cc_open(&j->r, j->ctl);
	j->tty = isatty(STDOUT_FILENO);
	j->rate = j->fixed_rate ? j->fixed_rate : RS_RATE_START;
	j->tok_t = j->t0 = now_usec();
	j->tokens = 0;
	j->moved = j->differ = j->errors = 0;
	j->outstanding = 0;
	j->outstanding_bytes = 0;
	j->last_tick = j->last_print = j->last_probe = 0;
	j->base_p99 = 0;
	win_reset(j);
	/* dynamic: nothing until the first ticks tell whether anyone writes */
	j->idle = j->probing = j->fixed_rate == 0;
	j->have_hist = 0;
}

static void
job_end(struct rsjob *j)
{
	cc_close(&j->q);
	cc_close(&j->r);
}

/*
 * resync_peer: move what p lacks until blkmirror says it is in sync.
 * Returns 0 in sync, 1 if the peer went away (the bitmaps keep what is
 * left for next time).
 */
static int
resync_peer(struct rsjob *j, int wait_connect)
{
	struct kv	kv[K_N];
	uint64_t	deadline = 0;
	useconds_t	nap = 1000;
	int		up;

	job_start(j);
	for (;;) {
		status(j, kv);
		j->remaining = strtoull(kv[K_OOS].val, NULL, 10);
		up = strcmp(kv[K_STATE].val, "uptodate") == 0;
		if (up && j->remaining == 0)
			break;
		/* a source, or in sync but for blocks verify found */
		if (strcmp(kv[K_RESYNC].val, "source") != 0 && !up) {
			if (!wait_connect && strcmp(kv[K_RESYNC].val,
			    "bitmap") != 0) {
				job_end(j);
				return 1;
			}
			/* connecting, or exchanging bitmaps */
			if (deadline == 0 && !j->quiet && !j->tty)
				printf("%" PRIu64 " %s resync-wait peer=%s "
				    "state=%s\n", wall_usec() / 1000000,
				    j->node, j->peer, kv[K_STATE].val);
			fflush(stdout);
			deadline = 1;
			usleep(100000);
			continue;
		}
		deadline = 0;
		if (!j->mode_set && strcmp(kv[K_FULL].val, "1") == 0 &&
		    strcmp(kv[K_EMPTY].val, "0") == 0)
			j->kind = 1;	/* it has old data: send what differs */
		/* nothing left to ask: the last flush, then in sync */
		if (pass(j) == 0) {
			usleep(nap);
			nap = nap * 2 < 20000 ? nap * 2 : 20000;
		} else
			nap = 1000;
	}
	progress(j, 1);
	job_end(j);
	return 0;
}

/* verify: compare every block; with fix, resync what differs. */
static int
verify_peer(struct rsjob *j)
{
	struct kv	kv[K_N];
	uint64_t	size, off, len, differ;
	int		rv;

	job_start(j);
	status(j, kv);
	size = strtoull(kv[K_SIZE].val, NULL, 10);
	if (strcmp(kv[K_CONN].val, "1") != 0) {
		warnx("verify %s: not connected", j->peer);
		job_end(j);
		return EXIT_NO;
	}
	j->remaining = size;
	tick(j);	/* the first: is anybody writing? */
	for (off = 0; off < size; off += len) {
		len = size - off < (1 << 20) ? size - off : (1 << 20);
		len -= len % 4096;
		if (len == 0)
			break;
		request(j, off, len);
		j->remaining = size - off - len;
		tick(j);
	}
	drain(j);
	j->remaining = 0;
	progress(j, 1);
	job_end(j);
	if (j->errors > 0) {
		warnx("verify %s: %" PRIu64 " requests failed", j->peer,
		    j->errors);
		return EXIT_SYS;
	}
	printf("verify peer=%s checked_bytes=%" PRIu64 " differ_blocks=%"
	    PRIu64 "\n", j->peer, size, j->differ);
	fflush(stdout);
	if (j->differ == 0)
		return EXIT_OK;
	if (!j->fix)
		return EXIT_NO;
	j->kind = 0;
	differ = j->differ;
	rv = resync_peer(j, 0) == 0 ? EXIT_OK : EXIT_SYS;
	j->differ = differ;
	return rv;
}

static void
rs_opts(struct rsjob *j, int ch, const char *arg)
{
	const char	*e;
	uint64_t	 v;

	switch (ch) {
	case 'c':
		j->ctl = arg;
		break;
	case 'M':
		j->mode_set = 1;
		if (strcmp(arg, "data") == 0)
			j->kind = 0;
		else if (strcmp(arg, "csum") == 0)
			j->kind = 1;
		else
			errx(EXIT_USAGE, "-M %s: data or csum", arg);
		break;
	case 'R':
		if ((e = parse_size(arg, &v)) != NULL)
			errx(EXIT_USAGE, "-R %s: %s", arg, e);
		if (v < 4096)
			errx(EXIT_USAGE, "-R %s: less than 4K a second", arg);
		j->fixed_rate = v;
		break;
	case 'W':
		if ((e = parse_size(arg, &v)) != NULL)
			errx(EXIT_USAGE, "-W %s: %s", arg, e);
		if (v < 1 || v > 128)
			errx(EXIT_USAGE, "-W %s: not in 1..128", arg);
		j->window = v;
		break;
	default:
		usage();
	}
}

static int
cmd_sync(int argc, char *argv[], int verify)
{
	struct rsjob	j;
	int		ch;

	memset(&j, 0, sizeof(j));
	j.window = RS_WINDOW;
	/* --fix, as the long form of -f */
	for (ch = 1; verify && ch < argc && strcmp(argv[ch], "--") != 0;
	    ch++)
		if (strcmp(argv[ch], "--fix") == 0)
			argv[ch] = "-f";
	while ((ch = getopt(argc, argv, verify ? "c:fR:W:" : "c:M:R:W:")) !=
	    -1) {
		if (ch == 'f')
			j.fix = 1;
		else
			rs_opts(&j, ch, optarg);
	}
	argc -= optind;
	argv += optind;
	if (argc != 1 || j.ctl == NULL)
		usage();
	j.peer = argv[0];
	if (verify) {
		j.kind = 2;
		return verify_peer(&j);
	}
	return resync_peer(&j, 1) == 0 ? EXIT_OK : EXIT_SYS;
}

static void
on_stop(int sig)
{
	(void)sig;
	_exit(EXIT_OK);
}

/*
 * The daemon: watch the local blkmirror's events; whenever it is the
 * sync source of a connected peer, resync that peer.  blkmirror going
 * away ends us (a supervisor restarts both).
 */
static int
cmd_daemon(int argc, char *argv[])
{
	struct rsjob	 j, t;
	struct ctlconn	 ev, q;
	struct sigaction sa;
	char		 line[512], *eq, peers[16][64], async[16][64];
	const char	*e;
	int		 ch, rfd = -1, verbose = 0, np, nv, i, rv;
	int		 role = 0, was_primary = -1;

	memset(&j, 0, sizeof(j));
	j.window = RS_WINDOW;
	while ((ch = getopt(argc, argv, "c:d:M:R:vW:")) != -1) {
		switch (ch) {
		case 'd':
			if ((e = parse_fd(optarg, &rfd)) != NULL)
				errx(EXIT_USAGE, "-d %s: %s", optarg, e);
			break;
		case 'v':
			verbose++;
			break;
		default:
			rs_opts(&j, ch, optarg);
		}
	}
	if (argc != optind || j.ctl == NULL)
		usage();
	log_init("resyncd", verbose);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	cc_open(&ev, j.ctl);
	cc_send(&ev, "events");
	ready_notify(rfd);
	log_info("watching %s", j.ctl);
	for (;;) {
		/*
		 * Which peers are we the sync source of?  And did we just
		 * become primary?  Then the DR peers that the old primary
		 * fed may lack its last epochs, or hold writes we never had:
		 * compare them with us and repair.
		 */
		cc_open(&q, j.ctl);
		cc_send(&q, "status");
		np = nv = 0;
		for (;;) {
			cc_line(&q, line, sizeof(line), -1);
			if (strcmp(line, "ok") == 0 ||
			    strncmp(line, "error: ", 7) == 0)
				break;
			if (strncmp(line, "role=", 5) == 0) {
				role = strcmp(line + 5, "primary") == 0;
				continue;
			}
			if (strncmp(line, "peer.", 5) == 0 && nv < 16 &&
			    (eq = strstr(line, ".mode=async")) != NULL)
				snprintf(async[nv++], sizeof(async[0]), "%.*s",
				    (int)(eq - line - 5), line + 5);
			if (strncmp(line, "peer.", 5) != 0 ||
			    (eq = strstr(line, ".resync=source")) == NULL ||
			    np == 16)
				continue;
			snprintf(peers[np++], sizeof(peers[0]), "%.*s",
			    (int)(eq - line - 5), line + 5);
		}
		cc_close(&q);
		if (role && was_primary == 0)
			for (i = 0; i < nv; i++) {
				t = j;
				t.peer = async[i];
				t.kind = 2;
				t.fix = 1;
				t.quiet = 1;
				log_info("peer %s: promoted: comparing it with "
				    "us", t.peer);
				rv = verify_peer(&t);
				log_info("peer %s: verified after promotion: %"
				    PRIu64 " blocks differed%s", t.peer,
				    t.differ, rv == EXIT_OK ? ", now in sync" :
				    "; not repaired");
			}
		was_primary = role;
		for (i = 0; i < np; i++) {
			t = j;
			t.peer = peers[i];
			log_info("peer %s: resync starts", t.peer);
			if (resync_peer(&t, 0) == 0)
				log_info("peer %s: in sync, %" PRIu64 " bytes "
				    "moved", t.peer, t.moved);
			else
				log_info("peer %s: went away; %" PRIu64
				    " bytes moved so far", t.peer, t.moved);
		}
		if (np > 0)
			continue;
		/* Until something changes, or a look every 2 seconds. */
		if (cc_line(&ev, line, sizeof(line), 2000) == 1 &&
		    strstr(line, " stop ") != NULL)
			return EXIT_OK;
		while (cc_line(&ev, line, sizeof(line), 0) == 1)
			if (strstr(line, " stop ") != NULL)
				return EXIT_OK;
	}
}

int
main(int argc, char *argv[])
{
	int	rc;

	if (sodium_init() == -1)
		errx(EXIT_SYS, "sodium_init failed");
	if (argc < 2)
		usage();
	if (strcmp(argv[1], "sync") == 0)
		rc = cmd_sync(argc - 1, argv + 1, 0);
	else if (strcmp(argv[1], "verify") == 0)
		rc = cmd_sync(argc - 1, argv + 1, 1);
	else if (argv[1][0] == '-')
		rc = cmd_daemon(argc, argv);
	else if (strcmp(argv[1], "send") == 0)
		rc = cmd_send(argc - 1, argv + 1);
	else if (strcmp(argv[1], "recv") == 0)
		rc = cmd_recv(argc - 1, argv + 1);
	else
		usage();
	if (fflush(stdout) == EOF || ferror(stdout))
		err(EXIT_SYS, "stdout");
	return rc;
}

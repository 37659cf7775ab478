/* See LICENSE file for copyright and license details. */
/*
 * resyncd: bring a node's copy of the disk back in line.  This part seeds
 * a copy over any one-way pipe:
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
#include <sys/stat.h>

#include <linux/falloc.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>
#include <zstd.h>

#include "hatrio.h"

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
	    "usage: resyncd send [-v] [-O offset] [-n node] [-z level] "
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

int
main(int argc, char *argv[])
{
	int	rc;

	if (sodium_init() == -1)
		errx(EXIT_SYS, "sodium_init failed");
	if (argc < 2)
		usage();
	if (strcmp(argv[1], "send") == 0)
		rc = cmd_send(argc - 1, argv + 1);
	else if (strcmp(argv[1], "recv") == 0)
		rc = cmd_recv(argc - 1, argv + 1);
	else
		usage();
	if (fflush(stdout) == EOF || ferror(stdout))
		err(EXIT_SYS, "stdout");
	return rc;
}

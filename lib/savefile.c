/* See LICENSE file for copyright and license details. */
/*
 * savefile.c: writing and reading split-brain save files (savefile.h).
 * A save file is written under a temporary name, synced, and renamed into
 * place, so that a save file that exists is complete.  Reading checks the
 * whole file, lengths first and the hash last, before it hands any record
 * to the caller; restore therefore writes nothing from a damaged file.
 * The first pass also keeps a short hash of every record, and the second
 * hands a record over only if it is still the one the first pass checked,
 * so a file changed between the passes cannot slip unchecked data in.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hatrio.h"
#include "savefile.h"

#define RECSUM	16	/* bytes of per-record hash kept between passes */

static const char	save_magic[8] = "HTRSAVE1";
static const char	save_tmagic[8] = "HTRSAVEZ";

static int	whash(struct save_writer *, const void *, size_t);
static int	read_full(FILE *, void *, size_t);

/* write and hash */
static int
whash(struct save_writer *w, const void *buf, size_t len)
{
	if (len != 0 && fwrite(buf, 1, len, w->fp) != len)
		return -1;
	crypto_generichash_update(&w->hash, buf, len);
	return 0;
}

int
save_create(struct save_writer *w, const char *path,
    const struct save_header *h)
{
	unsigned char	hdr[SAVE_HDR_SIZE];
	int		fd;

	memset(w, 0, sizeof(*w));
	if ((w->path = strdup(path)) == NULL ||
	    asprintf(&w->tmppath, "%s.tmp", path) == -1) {
		free(w->path);
		return -1;
	}
	fd = open(w->tmppath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1 || (w->fp = fdopen(fd, "w")) == NULL) {
		if (fd != -1)
			close(fd);
		free(w->path);
		free(w->tmppath);
		return -1;
	}
	crypto_generichash_init(&w->hash, NULL, 0, crypto_generichash_BYTES);
	memset(hdr, 0, sizeof(hdr));
	memcpy(hdr, save_magic, 8);
	put_be32(hdr + 8, SAVE_VERSION);
	put_be32(hdr + 12, h->block_size);
	put_be64(hdr + 16, h->device_size);
	put_be64(hdr + 24, h->created);
	put_be64(hdr + 32, h->generation);
	memcpy(hdr + 40, h->node, strnlen(h->node, SAVE_NAME_MAX));
	if (whash(w, hdr, sizeof(hdr)) == -1) {
		save_abort(w);
		return -1;
	}
	return 0;
}

int
save_add(struct save_writer *w, uint64_t off, const void *buf, uint32_t len)
{
	unsigned char	rec[SAVE_REC_HDR_SIZE];

	if (len > SAVE_REC_MAX) {
		errno = EFBIG;
		return -1;
	}
	put_be64(rec, off);
	put_be32(rec + 8, len);
	put_be32(rec + 12, 0);
	if (whash(w, rec, sizeof(rec)) == -1 || whash(w, buf, len) == -1)
		return -1;
	w->records++;
	w->bytes += len;
	return 0;
}

/* Write the trailer, make it durable, and put the file in place. */
int
save_commit(struct save_writer *w)
{
	unsigned char	tr[SAVE_TRAILER_SIZE];
	char		*dir, *slash;
	int		 dfd, rc = -1;

	memcpy(tr, save_tmagic, 8);
	put_be64(tr + 8, w->records);
	put_be64(tr + 16, w->bytes);
	crypto_generichash_update(&w->hash, tr, 24);
	crypto_generichash_final(&w->hash, tr + 24, 32);
	if (fwrite(tr, 1, sizeof(tr), w->fp) != sizeof(tr) ||
	    fflush(w->fp) == EOF || fsync(fileno(w->fp)) == -1) {
		save_abort(w);
		return -1;
	}
	if (fclose(w->fp) == EOF) {
		w->fp = NULL;
		save_abort(w);
		return -1;
	}
	w->fp = NULL;
	if (rename(w->tmppath, w->path) == -1) {
		save_abort(w);
		return -1;
	}
	/* the rename itself must survive a crash */
	if ((dir = strdup(w->path)) != NULL) {
		if ((slash = strrchr(dir, '/')) != NULL)
			*(slash == dir ? slash + 1 : slash) = '\0';
		else
			strcpy(dir, ".");
		if ((dfd = open(dir, O_RDONLY | O_DIRECTORY)) != -1) {
			fsync(dfd);
			close(dfd);
		}
		free(dir);
	}
	rc = 0;
	free(w->path);
	free(w->tmppath);
	w->path = w->tmppath = NULL;
	return rc;
}

void
save_abort(struct save_writer *w)
{
	int	saved = errno;

	if (w->fp != NULL)
		fclose(w->fp);
	w->fp = NULL;
	if (w->tmppath != NULL)
		unlink(w->tmppath);
	free(w->path);
	free(w->tmppath);
	w->path = w->tmppath = NULL;
	errno = saved;
}

static int
read_full(FILE *fp, void *buf, size_t len)
{
	return len == 0 || fread(buf, 1, len, fp) == len ? 0 : -1;
}

/*
 * save_read: check the whole file, then, if cb is not NULL, read it again
 * and hand each record to cb.  Returns NULL, or a message naming what is
 * wrong, with errno set to 0 if the content is wrong and left as the failed
 * system call set it otherwise (a missing or unreadable file), so that a
 * tool can tell bad input from a system error.  Records must lie within
 * the device the header names.
 */
const char *
save_read(const char *path, struct save_header *h, uint64_t *nrec,
    uint64_t *nbytes, save_record_cb cb, void *arg)
{
	static char			 msg[512];
	crypto_generichash_state	 hs;
	unsigned char			 hdr[SAVE_HDR_SIZE], rec[SAVE_REC_HDR_SIZE];
	unsigned char			 tr[SAVE_TRAILER_SIZE], sum[32];
	unsigned char			*buf = NULL, *sums = NULL, rsum[RECSUM];
	crypto_generichash_state	 rs;
	struct stat			 st;
	FILE				*fp;
	uint64_t			 pos, off, records = 0, bytes = 0;
	uint64_t			 nchecked = 0;
	uint32_t			 len;
	int				 pass, serr;

	/* BAD: the content is wrong; SYSBAD: a system call failed */
#define BAD(...) do {						\
	serr = 0;						\
	snprintf(msg, sizeof(msg), __VA_ARGS__);		\
	goto fail;						\
} while (0)
#define SYSBAD(...) do {					\
	serr = errno;						\
	snprintf(msg, sizeof(msg), __VA_ARGS__);		\
	goto fail;						\
} while (0)
	/* a short read: an I/O error, or the file shrank under us */
#define READBAD() do {						\
	if (ferror(fp))						\
		SYSBAD("%s: read error: %s", path, strerror(errno)); \
	BAD("%s: read error", path);				\
} while (0)

	if ((fp = fopen(path, "r")) == NULL) {
		serr = errno;
		snprintf(msg, sizeof(msg), "%s: %s", path, strerror(serr));
		errno = serr;
		return msg;
	}
	if (fstat(fileno(fp), &st) == -1)
		SYSBAD("%s: %s", path, strerror(errno));
	if (S_ISDIR(st.st_mode)) {	/* whatever size it says it has */
		errno = EISDIR;
		SYSBAD("%s: read error: %s", path, strerror(errno));
	}
	if ((uint64_t)st.st_size < SAVE_HDR_SIZE + SAVE_TRAILER_SIZE)
		BAD("%s: not a save file (too short: %lld bytes)", path,
		    (long long)st.st_size);
	if ((buf = malloc(SAVE_REC_MAX)) == NULL)
		SYSBAD("%s: %s", path, strerror(errno));
	/* records are at least SAVE_REC_HDR_SIZE bytes: this bounds them */
	if (cb != NULL && (sums = malloc(((uint64_t)st.st_size /
	    SAVE_REC_HDR_SIZE + 1) * RECSUM)) == NULL)
		SYSBAD("%s: %s", path, strerror(errno));
	for (pass = 0; pass < (cb != NULL ? 2 : 1); pass++) {
		rewind(fp);
		crypto_generichash_init(&hs, NULL, 0, sizeof(sum));
		if (read_full(fp, hdr, sizeof(hdr)) == -1)
			READBAD();
		if (memcmp(hdr, save_magic, 8) != 0)
			BAD("%s: not a save file (bad magic)", path);
		if (get_be32(hdr + 8) != SAVE_VERSION)
			BAD("%s: save file version %u, this program reads %d",
			    path, get_be32(hdr + 8), SAVE_VERSION);
		crypto_generichash_update(&hs, hdr, sizeof(hdr));
		h->version = get_be32(hdr + 8);
		h->block_size = get_be32(hdr + 12);
		h->device_size = get_be64(hdr + 16);
		h->created = get_be64(hdr + 24);
		h->generation = get_be64(hdr + 32);
		memcpy(h->node, hdr + 40, SAVE_NAME_MAX);
		h->node[SAVE_NAME_MAX] = '\0';
		pos = SAVE_HDR_SIZE;
		records = bytes = 0;
		while (pos + SAVE_TRAILER_SIZE < (uint64_t)st.st_size) {
			if (pos + SAVE_REC_HDR_SIZE + SAVE_TRAILER_SIZE >
			    (uint64_t)st.st_size)
				BAD("%s: truncated record at byte %llu", path,
				    (unsigned long long)pos);
			if (read_full(fp, rec, sizeof(rec)) == -1)
				READBAD();
			off = get_be64(rec);
			len = get_be32(rec + 8);
			if (len > SAVE_REC_MAX || get_be32(rec + 12) != 0)
				BAD("%s: bad record header at byte %llu", path,
				    (unsigned long long)pos);
			if (pos + SAVE_REC_HDR_SIZE + len + SAVE_TRAILER_SIZE >
			    (uint64_t)st.st_size)
				BAD("%s: truncated record at byte %llu", path,
				    (unsigned long long)pos);
			if (off > h->device_size || len > h->device_size - off)
				BAD("%s: record at byte %llu lies past the end "
				    "of the device", path,
				    (unsigned long long)pos);
			if (read_full(fp, buf, len) == -1)
				READBAD();
			crypto_generichash_update(&hs, rec, sizeof(rec));
			crypto_generichash_update(&hs, buf, len);
			if (cb != NULL) {
				crypto_generichash_init(&rs, NULL, 0, RECSUM);
				crypto_generichash_update(&rs, rec, sizeof(rec));
				crypto_generichash_update(&rs, buf, len);
				crypto_generichash_final(&rs, rsum, RECSUM);
				if (pass == 0)
					memcpy(sums + records * RECSUM, rsum,
					    RECSUM);
				else if (records >= nchecked ||
				    sodium_memcmp(sums + records * RECSUM,
				    rsum, RECSUM) != 0)
					BAD("%s: changed while it was read",
					    path);
			}
			if (pass == 1 && cb(off, buf, len, arg) == -1)
				BAD("%s: stopped at the record for offset %llu",
				    path, (unsigned long long)off);
			pos += SAVE_REC_HDR_SIZE + len;
			records++;
			bytes += len;
		}
		if (pos + SAVE_TRAILER_SIZE != (uint64_t)st.st_size)
			BAD("%s: truncated (no trailer)", path);
		if (read_full(fp, tr, sizeof(tr)) == -1)
			READBAD();
		if (memcmp(tr, save_tmagic, 8) != 0)
			BAD("%s: truncated or damaged (bad trailer)", path);
		if (get_be64(tr + 8) != records || get_be64(tr + 16) != bytes)
			BAD("%s: trailer counts do not match the records",
			    path);
		crypto_generichash_update(&hs, tr, 24);
		crypto_generichash_final(&hs, sum, sizeof(sum));
		if (sodium_memcmp(sum, tr + 24, sizeof(sum)) != 0)
			BAD("%s: checksum mismatch: the file is damaged", path);
		if (pass == 0)
			nchecked = records;
	}
	free(sums);
	free(buf);
	fclose(fp);
	if (nrec != NULL)
		*nrec = records;
	if (nbytes != NULL)
		*nbytes = bytes;
	return NULL;
fail:
	free(sums);
	free(buf);
	fclose(fp);
	errno = serr;
	return msg;
#undef READBAD
#undef SYSBAD
#undef BAD
}

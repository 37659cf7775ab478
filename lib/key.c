/* See LICENSE file for copyright and license details. */
/*
 * key.c: loading the cluster key.  The key file holds 32 random bytes,
 * either raw or as 64 hexadecimal characters (a trailing newline allowed).
 * A key that others on the machine can read is no secret, so such a file
 * is refused, as ssh refuses a private key with loose permissions.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "hatrio.h"

#define KEY_FILE_MAX	(2 * HATRIO_KEY_BYTES + 2)

static int	hexval(int);

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Returns NULL and fills key, or returns a message that names the file
 * and what is wrong with it.  The message lives in a static buffer.
 */
const char *
key_load(const char *path, unsigned char key[HATRIO_KEY_BYTES])
{
	static char	 msg[512];
	unsigned char	 buf[KEY_FILE_MAX + 1];
	struct stat	 st;
	ssize_t		 n;
	size_t		 len = 0, i;
	int		 fd, hi, lo;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(msg, sizeof(msg), "key file %s: %s", path,
		    strerror(errno));
		return msg;
	}
	if (fstat(fd, &st) == -1) {
		snprintf(msg, sizeof(msg), "key file %s: %s", path,
		    strerror(errno));
		close(fd);
		return msg;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(msg, sizeof(msg), "key file %s: not a regular file",
		    path);
		close(fd);
		return msg;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		snprintf(msg, sizeof(msg), "key file %s: readable or writable "
		    "by group or others (mode %04o); run chmod 600 %s", path,
		    (unsigned)(st.st_mode & 07777), path);
		close(fd);
		return msg;
	}
	while (len < sizeof(buf)) {
		n = read(fd, buf + len, sizeof(buf) - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			snprintf(msg, sizeof(msg), "key file %s: %s", path,
			    strerror(errno));
			close(fd);
			sodium_memzero(buf, sizeof(buf));
			return msg;
		}
		if (n == 0)
			break;
		len += n;
	}
	close(fd);

	if (len == HATRIO_KEY_BYTES) {
		memcpy(key, buf, HATRIO_KEY_BYTES);
		sodium_memzero(buf, sizeof(buf));
		return NULL;
	}
	if (len == 2 * HATRIO_KEY_BYTES + 1 && buf[len - 1] == '\n')
		len--;
	else if (len == 2 * HATRIO_KEY_BYTES + 2 && buf[len - 2] == '\r' &&
	    buf[len - 1] == '\n')
		len -= 2;
	if (len != 2 * HATRIO_KEY_BYTES) {
		sodium_memzero(buf, sizeof(buf));
		snprintf(msg, sizeof(msg), "key file %s: must hold %d raw bytes "
		    "or %d hexadecimal characters, found %s%zu bytes", path,
		    HATRIO_KEY_BYTES, 2 * HATRIO_KEY_BYTES,
		    len > KEY_FILE_MAX ? "more than " : "",
		    len > KEY_FILE_MAX ? (size_t)KEY_FILE_MAX : len);
		return msg;
	}
	for (i = 0; i < HATRIO_KEY_BYTES; i++) {
		hi = hexval(buf[2 * i]);
		lo = hexval(buf[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			sodium_memzero(buf, sizeof(buf));
			sodium_memzero(key, HATRIO_KEY_BYTES);
			snprintf(msg, sizeof(msg), "key file %s: %d bytes but "
			    "not hexadecimal (bad character at offset %zu)",
			    path, 2 * HATRIO_KEY_BYTES,
			    hi < 0 ? 2 * i : 2 * i + 1);
			return msg;
		}
		key[i] = hi << 4 | lo;
	}
	sodium_memzero(buf, sizeof(buf));
	return NULL;
}

/* See LICENSE file for copyright and license details. */
/* Unit tests for lib/util.c and lib/key.c. */
#include <sys/stat.h>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "hatrio.h"
#include "unit.h"

static void	test_duration(void);
static void	test_size(void);
static void	test_key(void);
static void	write_file(const char *, const void *, size_t, mode_t);

static void
test_duration(void)
{
	static const struct { const char *in; uint64_t us; } good[] = {
		{ "200ms", 200000 }, { "1.5s", 1500000 }, { "2m", 120000000 },
		{ "90", 90000000 }, { "0", 0 }, { "250us", 250 },
		{ "1h", 3600000000ULL }, { "0.001s", 1000 }, { "1d", 86400000000ULL },
	};
	static const struct { const char *in, *err; } bad[] = {
		{ "", "empty value" }, { "-1s", "negative value" },
		{ "abc", "not a number" }, { "1x", "unknown unit" },
		{ "1.s", "not a number" }, { "5 s", "unknown unit" },
		{ "99999999999999999999h", "too large" },
		{ "9999999999999999h", "too large" },
		{ "0.0000001s", "finer than the smallest unit" },
		{ "1.0000000001s", "too many decimals" }, { "1MS", "unknown unit" },
	};
	size_t		 i;
	uint64_t	 v;

	for (i = 0; i < nitems(good); i++) {
		v = 12345;
		is_str(parse_duration(good[i].in, &v), NULL,
		    "duration '%s' accepted", good[i].in);
		ok(v == good[i].us, "duration '%s' is %llu us", good[i].in,
		    (unsigned long long)good[i].us);
	}
	for (i = 0; i < nitems(bad); i++) {
		v = 12345;
		is_str(parse_duration(bad[i].in, &v), bad[i].err,
		    "duration '%s' refused: %s", bad[i].in, bad[i].err);
		ok(v == 12345, "duration '%s' leaves the value alone",
		    bad[i].in);
	}
	ok(parse_duration(NULL, &v) != NULL, "NULL duration refused");
}

static void
test_size(void)
{
	static const struct { const char *in; uint64_t b; } good[] = {
		{ "4096", 4096 }, { "4k", 4096 }, { "4K", 4096 },
		{ "64M", 64ULL << 20 }, { "1G", 1ULL << 30 },
		{ "1.5GiB", 3ULL << 29 }, { "2t", 2ULL << 40 }, { "0", 0 },
		{ "512b", 512 }, { "16383P", 16383ULL << 50 },
	};
	static const struct { const char *in, *err; } bad[] = {
		{ "", "empty value" }, { "-4k", "negative value" },
		{ "k", "not a number" }, { "4q", "unknown unit" },
		{ "16384P", "too large" }, { "18446744073709551616", "too large" },
		{ "0.3k", "finer than the smallest unit" }, { "1 G", "unknown unit" },
	};
	size_t		 i;
	uint64_t	 v;

	for (i = 0; i < nitems(good); i++) {
		v = 7;
		is_str(parse_size(good[i].in, &v), NULL, "size '%s' accepted",
		    good[i].in);
		ok(v == good[i].b, "size '%s' is %llu bytes", good[i].in,
		    (unsigned long long)good[i].b);
	}
	for (i = 0; i < nitems(bad); i++) {
		v = 7;
		is_str(parse_size(bad[i].in, &v), bad[i].err,
		    "size '%s' refused: %s", bad[i].in, bad[i].err);
		ok(v == 7, "size '%s' leaves the value alone", bad[i].in);
	}
}

static void
write_file(const char *path, const void *buf, size_t len, mode_t mode)
{
	int	fd;

	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd == -1 || write(fd, buf, len) != (ssize_t)len)
		fatal("%s", path);
	fchmod(fd, mode);
	close(fd);
}

static void
test_key(void)
{
	char		 dir[] = "/tmp/hatrio-unit.XXXXXX", path[64];
	unsigned char	 raw[32], key[32];
	char		 hex[66];
	const char	*e;
	size_t		 i;

	if (mkdtemp(dir) == NULL)
		fatal("mkdtemp");
	snprintf(path, sizeof(path), "%s/key", dir);
	for (i = 0; i < sizeof(raw); i++)
		raw[i] = (unsigned char)(i * 7 + 3);

	write_file(path, raw, 32, 0600);
	is_str(key_load(path, key), NULL, "raw 32-byte key accepted");
	ok(memcmp(key, raw, 32) == 0, "raw key read as written");

	for (i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", raw[i]);
	hex[64] = '\n';
	memset(key, 0, sizeof(key));
	write_file(path, hex, 65, 0400);
	is_str(key_load(path, key), NULL, "hex key with newline accepted");
	ok(memcmp(key, raw, 32) == 0, "hex key decoded");
	write_file(path, hex, 64, 0600);
	is_str(key_load(path, key), NULL, "hex key without newline accepted");

	write_file(path, raw, 32, 0640);
	e = key_load(path, key);
	ok(e != NULL && strstr(e, "readable or writable by group or others") &&
	    strstr(e, "mode 0640"), "group-readable key refused: %s", e);
	write_file(path, raw, 32, 0604);
	e = key_load(path, key);
	ok(e != NULL && strstr(e, "mode 0604"), "world-readable key refused");

	write_file(path, raw, 31, 0600);
	e = key_load(path, key);
	ok(e != NULL && strstr(e, "must hold 32 raw bytes or 64 hexadecimal "
	    "characters, found 31 bytes"), "short key refused: %s", e);
	write_file(path, raw, 0, 0600);
	e = key_load(path, key);
	ok(e != NULL && strstr(e, "found 0 bytes"), "empty key refused");
	hex[10] = 'g';
	write_file(path, hex, 64, 0600);
	e = key_load(path, key);
	ok(e != NULL && strstr(e, "not hexadecimal (bad character at offset "
	    "10)"), "non-hex key refused: %s", e);

	snprintf(path, sizeof(path), "%s/none", dir);
	e = key_load(path, key);
	ok(e != NULL && strstr(e, "No such file or directory"),
	    "missing key file refused: %s", e);
	ok(key_load(dir, key) != NULL, "a directory is refused");

	snprintf(path, sizeof(path), "%s/key", dir);
	unlink(path);
	rmdir(dir);
}

int
main(void)
{
	test_duration();
	test_size();
	test_key();
	return done_testing();
}

/* See LICENSE file for copyright and license details. */
/*
 * util.c: small helpers every hatrio program shares: parsing of durations
 * and sizes as people write them, readiness notification on a file
 * descriptor (s6 style), and clocks.
 */
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <linux/fs.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hatrio.h"

struct unit {
	const char	*name;
	uint64_t	 mult;
};

static const struct unit duration_units[] = {
	{ "us", 1 },
	{ "ms", 1000 },
	{ "s", 1000000 },
	{ "m", 60 * 1000000ULL },
	{ "h", 3600 * 1000000ULL },
	{ "d", 86400 * 1000000ULL },
	{ "", 1000000 },		/* a bare number is seconds */
};

static const struct unit size_units[] = {
	{ "", 1 }, { "b", 1 },
	{ "k", 1ULL << 10 }, { "kb", 1ULL << 10 }, { "kib", 1ULL << 10 },
	{ "m", 1ULL << 20 }, { "mb", 1ULL << 20 }, { "mib", 1ULL << 20 },
	{ "g", 1ULL << 30 }, { "gb", 1ULL << 30 }, { "gib", 1ULL << 30 },
	{ "t", 1ULL << 40 }, { "tb", 1ULL << 40 }, { "tib", 1ULL << 40 },
	{ "p", 1ULL << 50 }, { "pb", 1ULL << 50 }, { "pib", 1ULL << 50 },
};

static const char	*parse_scaled(const char *, const struct unit *, size_t,
			    int, uint64_t *);

/*
 * Parse "<digits>[.<digits>]<unit>" into an integer count of the smallest
 * unit.  The arithmetic is done in integers with explicit overflow checks,
 * so "1.5s" is exactly 1500000 us and "99999999999999999999h" is refused
 * rather than wrapped.  Returns NULL, or a short reason for the error.
 */
static const char *
parse_scaled(const char *s, const struct unit *units, size_t nunits,
    int casefold, uint64_t *out)
{
	const char	*p = s, *frac = NULL;
	uint64_t	 ival = 0, mult = 0, fnum = 0, fden = 1, v;
	size_t		 i, fdigits = 0;
	char		 u[8];

	if (s == NULL || *s == '\0')
		return "empty value";
	if (*p == '-')
		return "negative value";
	if (*p < '0' || *p > '9')
		return "not a number";
	for (; *p >= '0' && *p <= '9'; p++) {
		if (ival > (UINT64_MAX - (*p - '0')) / 10)
			return "too large";
		ival = ival * 10 + (*p - '0');
	}
	if (*p == '.') {
		frac = ++p;
		for (; *p >= '0' && *p <= '9'; p++) {
			if (++fdigits > 9)
				return "too many decimals";
			fnum = fnum * 10 + (*p - '0');
			fden *= 10;
		}
		if (p == frac)
			return "not a number";
	}
	if (strlen(p) >= sizeof(u))
		return "unknown unit";
	for (i = 0; p[i] != '\0'; i++)
		u[i] = casefold && p[i] >= 'A' && p[i] <= 'Z' ?
		    p[i] - 'A' + 'a' : p[i];
	u[i] = '\0';
	for (i = 0; i < nunits; i++)
		if (strcmp(u, units[i].name) == 0) {
			mult = units[i].mult;
			break;
		}
	if (i == nunits)
		return "unknown unit";
	if (ival > UINT64_MAX / mult)
		return "too large";
	v = ival * mult;
	if (fnum != 0) {
		/* fnum < fden <= 1e9 and mult <= 2^50 would overflow: split */
		uint64_t	 whole = mult / fden, rest = mult % fden;
		uint64_t	 add;

		if (whole != 0 && fnum > UINT64_MAX / whole)
			return "too large";
		add = fnum * whole;
		if (rest != 0) {
			if ((fnum * rest) % fden != 0)
				return "finer than the smallest unit";
			add += fnum * rest / fden;
		}
		if (v > UINT64_MAX - add)
			return "too large";
		v += add;
	}
	*out = v;
	return NULL;
}

/* parse_duration: "200ms", "1.5s", "2m", "90" (seconds); result in us. */
const char *
parse_duration(const char *s, uint64_t *usec)
{
	return parse_scaled(s, duration_units, nitems(duration_units), 0,
	    usec);
}

/* parse_size: "4096", "4k", "64M", "1G", "1.5GiB"; binary multiples. */
const char *
parse_size(const char *s, uint64_t *bytes)
{
	return parse_scaled(s, size_units, nitems(size_units), 1, bytes);
}

/* parse_fd: the argument of -d, a file descriptor that must be open. */
const char *
parse_fd(const char *s, int *fd)
{
	char	*end;
	long	 v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || errno != 0 || v < 0 || v > INT_MAX)
		return "not a file descriptor number";
	if (fcntl((int)v, F_GETFD) == -1)
		return "not an open file descriptor";
	*fd = (int)v;
	return NULL;
}

/*
 * Tell the supervisor we are ready: a newline on the descriptor given with
 * -d, which is then closed (s6's notification protocol).
 */
void
ready_notify(int fd)
{
	ssize_t	n;

	if (fd < 0)
		return;
	do
		n = write(fd, "\n", 1);
	while (n == -1 && errno == EINTR);
	close(fd);
}

uint64_t
now_usec(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

uint64_t
wall_usec(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* fmt_duration: the shortest exact form, "1.5s", "200ms", "2m". */
const char *
fmt_duration(uint64_t us, char *buf, size_t len)
{
	if (us % 60000000 == 0 && us != 0)
		snprintf(buf, len, "%llum", (unsigned long long)(us / 60000000));
	else if (us % 1000000 == 0)
		snprintf(buf, len, "%llus", (unsigned long long)(us / 1000000));
	else if (us % 1000 == 0)
		snprintf(buf, len, "%llums", (unsigned long long)(us / 1000));
	else
		snprintf(buf, len, "%lluus", (unsigned long long)us);
	return buf;
}

/*
 * Fixed-width integers in a byte buffer, one byte at a time, so that
 * neither alignment nor the host's byte order matters.  Everything that
 * travels between nodes is big-endian (network byte order).
 */
void
put_be16(unsigned char *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v;
}

void
put_be32(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

void
put_be64(unsigned char *p, uint64_t v)
{
	put_be32(p, v >> 32);
	put_be32(p + 4, (uint32_t)v);
}

uint16_t
get_be16(const unsigned char *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

uint32_t
get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

uint64_t
get_be64(const unsigned char *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

void
put_le32(unsigned char *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

void
put_le64(unsigned char *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, v >> 32);
}

uint32_t
get_le32(const unsigned char *p)
{
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[1] << 8 | p[0];
}

uint64_t
get_le64(const unsigned char *p)
{
	return (uint64_t)get_le32(p + 4) << 32 | get_le32(p);
}

/* store_size: the size of a regular file or a block device, or -1. */
int
store_size(int fd, uint64_t *size)
{
	struct stat	st;

	if (fstat(fd, &st) == -1)
		return -1;
	if (S_ISBLK(st.st_mode))
		return ioctl(fd, BLKGETSIZE64, size);
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		return -1;
	}
	*size = (uint64_t)st.st_size;
	return 0;
}

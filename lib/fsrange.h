/* See LICENSE file for copyright and license details. */
/*
 * fsrange.h: fdatasync of ranges of a file (fsrange.c).
 */
#ifndef FSRANGE_H
#define FSRANGE_H

#include <stddef.h>
#include <stdint.h>

struct fsrange {
	uint64_t	off;
	uint32_t	len;
};

int	fdatasync_ranges(int, const struct fsrange *, size_t);

#endif

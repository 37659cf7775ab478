/* See LICENSE file for copyright and license details. */
/*
 * lathist.h: a histogram of latencies in microseconds (lathist.c), with
 * buckets an eighth of an octave wide: blkmirror counts its application
 * writes in one, resyncd takes the difference of two readings to know
 * the latencies of a stretch of time.
 */
#ifndef LATHIST_H
#define LATHIST_H

#include <stdint.h>

/* below 8 us one bucket per microsecond, then 8 per octave up to 2^27 */
#define LATHIST_N	200

struct lathist {
	uint64_t	n[LATHIST_N];
};

int		lathist_bucket(uint64_t);
uint64_t	lathist_upper(int);
void		lathist_add(struct lathist *, uint64_t);
uint64_t	lathist_count(const struct lathist *);
void		lathist_sub(struct lathist *, const struct lathist *,
		    const struct lathist *);
uint64_t	lathist_quantile(const struct lathist *, unsigned int);

#endif

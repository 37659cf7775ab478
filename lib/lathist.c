/* See LICENSE file for copyright and license details. */
/*
 * lathist.c: a histogram of latencies.  A value v below 8 has bucket v;
 * above, with k the index of its highest bit, bucket 8 + 8 (k - 3) plus
 * the three bits below the highest: each bucket spans at most an eighth
 * of its values.  What is above the last bucket counts in the last.
 */
#include <stdint.h>

#include "lathist.h"

int
lathist_bucket(uint64_t v)
{
	int	k, b;

	if (v < 8)
		return (int)v;
	k = 63 - __builtin_clzll(v);
	b = 8 + 8 * (k - 3) + (int)((v >> (k - 3)) & 7);
	return b < LATHIST_N ? b : LATHIST_N - 1;
}

/* The largest value of bucket b (of the last: its lower bound's octave). */
uint64_t
lathist_upper(int b)
{
	int	k;

	if (b < 8)
		return (uint64_t)b;
	k = (b - 8) / 8 + 3;
	return ((uint64_t)(8 + (b - 8) % 8) << (k - 3)) +
	    ((uint64_t)1 << (k - 3)) - 1;
}

void
lathist_add(struct lathist *h, uint64_t v)
{
	h->n[lathist_bucket(v)]++;
}

uint64_t
lathist_count(const struct lathist *h)
{
	uint64_t	n = 0;
	int		i;

	for (i = 0; i < LATHIST_N; i++)
		n += h->n[i];
	return n;
}

/* d = a - b, bucket by bucket (a counter that went back counts 0). */
void
lathist_sub(struct lathist *d, const struct lathist *a,
    const struct lathist *b)
{
	int	i;

	for (i = 0; i < LATHIST_N; i++)
		d->n[i] = a->n[i] >= b->n[i] ? a->n[i] - b->n[i] : 0;
}

/*
 * The pct-th percentile (1..100): the largest value of the bucket where
 * the count from below reaches pct per cent of all.  0 if empty.
 */
uint64_t
lathist_quantile(const struct lathist *h, unsigned int pct)
{
	uint64_t	total = lathist_count(h), want, n = 0;
	int		i;

	if (total == 0)
		return 0;
	want = (total * pct + 99) / 100;
	if (want == 0)
		want = 1;
	for (i = 0; i < LATHIST_N; i++)
		if ((n += h->n[i]) >= want)
			return lathist_upper(i);
	return lathist_upper(LATHIST_N - 1);
}

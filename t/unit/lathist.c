/* See LICENSE file for copyright and license details. */
/*
 * Unit tests for lib/lathist.c: buckets, their bounds, percentiles of a
 * difference of two readings.
 */
#include <stdint.h>
#include <string.h>

#include "lathist.h"
#include "unit.h"

int
main(void)
{
	struct lathist	 a, b, d;
	uint64_t	 v, bad = 0;
	int		 i, prev = -1;

	/* every value lies in its bucket, buckets in order, none wider
	   than an eighth of its values */
	for (v = 0; v < 1 << 20; v++) {
		i = lathist_bucket(v);
		if (i < prev || v > lathist_upper(i) ||
		    (i > 0 && v <= lathist_upper(i - 1)))
			bad++;
		prev = i;
	}
	ok(bad == 0, "values up to 2^20 in their buckets, in order");
	ok(lathist_bucket(7) == 7 && lathist_upper(7) == 7, "7 us alone");
	ok(lathist_bucket(8) == 8 && lathist_upper(8) == 8, "8 us alone");
	ok(lathist_bucket(100) == lathist_bucket(103) &&
	    lathist_bucket(104) == lathist_bucket(103) + 1,
	    "96..103 one bucket, 104 the next");
	ok(lathist_upper(lathist_bucket(150)) == 159, "150 us: 144..159");
	for (bad = 0, i = 9; i < LATHIST_N; i++)
		if ((lathist_upper(i) - lathist_upper(i - 1)) * 8 >
		    lathist_upper(i - 1) + 1)
			bad++;
	ok(bad == 0, "each bucket spans at most an eighth");
	ok(lathist_bucket(UINT64_MAX) == LATHIST_N - 1,
	    "above the last bucket: the last");
	ok(lathist_upper(LATHIST_N - 1) == (1ULL << 27) - 1,
	    "the last bucket ends at 2^27 - 1 us");

	memset(&a, 0, sizeof(a));
	ok(lathist_quantile(&a, 99) == 0, "empty: 0");
	for (i = 0; i < 990; i++)
		lathist_add(&a, 100);
	for (i = 0; i < 10; i++)
		lathist_add(&a, 5000);
	ok(lathist_count(&a) == 1000, "1000 counted");
	ok(lathist_quantile(&a, 99) == 103, "p99 of 990 x 100 and 10 x 5000");
	lathist_add(&a, 5000);
	ok(lathist_quantile(&a, 99) == lathist_upper(lathist_bucket(5000)),
	    "one more slow write: p99 is the slow bucket");
	ok(lathist_quantile(&a, 50) == 103, "p50");
	ok(lathist_quantile(&a, 100) == lathist_upper(lathist_bucket(5000)),
	    "p100: the slowest bucket");

	/* the difference of two readings: only what came between */
	b = a;
	for (i = 0; i < 100; i++)
		lathist_add(&b, 300);
	lathist_sub(&d, &b, &a);
	ok(lathist_count(&d) == 100, "difference: 100 counted");
	ok(lathist_quantile(&d, 99) == lathist_upper(lathist_bucket(300)),
	    "difference: p99 300 us's bucket");
	lathist_sub(&d, &a, &b);
	ok(lathist_count(&d) == 0, "a counter that went back counts 0");
	return done_testing();
}

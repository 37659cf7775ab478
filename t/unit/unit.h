/* See LICENSE file for copyright and license details. */
/*
 * unit.h: a minimal TAP producer for the C unit tests of lib/.
 * Each t/unit/NAME.c is one program; t/unit/run counts the results of all
 * of them and ends with the line "N passed, N failed".
 */
#ifndef UNIT_H
#define UNIT_H

#include <stdio.h>
#include <string.h>

static int	unit_n, unit_failed;

#define ok(cond, ...) do {						\
	int ok_c_ = (cond) ? 1 : 0;					\
	unit_n++;							\
	if (!ok_c_)							\
		unit_failed++;						\
	printf("%sok %d - ", ok_c_ ? "" : "not ", unit_n);		\
	printf(__VA_ARGS__);						\
	printf("\n");							\
	if (!ok_c_)							\
		printf("#   failed at %s:%d: %s\n", __FILE__, __LINE__,	\
		    #cond);						\
	fflush(stdout);							\
} while (0)

/* is_str: compare two strings, either may be NULL. */
#define is_str(got, want, ...) do {					\
	const char *is_g_ = (got), *is_w_ = (want);			\
	int is_ok_ = (is_g_ == NULL && is_w_ == NULL) ||		\
	    (is_g_ != NULL && is_w_ != NULL && strcmp(is_g_, is_w_) == 0); \
	ok(is_ok_, __VA_ARGS__);					\
	if (!is_ok_)							\
		printf("#   got '%s', want '%s'\n",			\
		    is_g_ ? is_g_ : "(null)", is_w_ ? is_w_ : "(null)");	\
} while (0)

static inline int
done_testing(void)
{
	printf("1..%d\n", unit_n);
	return unit_failed != 0;
}

#endif /* UNIT_H */

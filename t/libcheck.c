/* See LICENSE file for copyright and license details. */
/*
 * libcheck: run lib/'s parsers on one argument, for the bats tests.
 * usage: libcheck duration|size|key ARG
 * Prints the parsed value (a key as its hash prefix) and exits 0, or
 * prints lib's message and exits 100.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "hatrio.h"

int
main(int argc, char *argv[])
{
	unsigned char	 key[HATRIO_KEY_BYTES], h[8];
	const char	*e;
	uint64_t	 v;
	size_t		 i;

	log_init("libcheck", 0);
	if (argc != 3) {
		fprintf(stderr, "usage: libcheck duration|size|key arg\n");
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "duration") == 0) {
		if ((e = parse_duration(argv[2], &v)) != NULL)
			goto bad;
		printf("%llu us\n", (unsigned long long)v);
	} else if (strcmp(argv[1], "size") == 0) {
		if ((e = parse_size(argv[2], &v)) != NULL)
			goto bad;
		printf("%llu bytes\n", (unsigned long long)v);
	} else if (strcmp(argv[1], "key") == 0) {
		if ((e = key_load(argv[2], key)) != NULL) {
			log_warnx("%s", e);
			return EXIT_USAGE;
		}
		crypto_generichash(h, sizeof(h), key, sizeof(key), NULL, 0);
		for (i = 0; i < sizeof(h); i++)
			printf("%02x", h[i]);
		printf("\n");
	} else {
		fprintf(stderr, "usage: libcheck duration|size|key arg\n");
		return EXIT_USAGE;
	}
	return EXIT_OK;
bad:
	log_warnx("bad %s '%s': %s", argv[1], argv[2], e);
	return EXIT_USAGE;
}

/* See LICENSE file for copyright and license details. */
/*
 * Fuzz target: arbitrary bytes from a peer during the handshake, into a
 * server link (the HELLO and AUTH parsers, the key exchange, the checks).
 * Built by "make fuzz" with clang -fsanitize=fuzzer,address,undefined.
 */
#include <sys/socket.h>

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <sodium.h>

#include "hatrio.h"
#include "link.h"

static int	closed;

static void
on_close(struct link *l, const char *reason)
{
	(void)l;
	(void)reason;
	closed = 1;
}

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned char	 key[HATRIO_KEY_BYTES];
	static int		 init;
	struct link_cb		 cb = { NULL, NULL, NULL, on_close };
	struct link_opts	 o;
	struct event_base	*base;
	struct link		*l;
	int			 sv[2], i;

	if (!init) {
		signal(SIGPIPE, SIG_IGN);
		if (sodium_init() == -1)
			abort();
		init = 1;
	}
	if (size > 4096 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		return 0;
	base = event_base_new();
	link_opts_init(&o);
	o.role = LINK_SERVER;
	o.key = key;
	o.name = "b";
	o.max_msg = 16384;
	o.hiwat = 65536;
	o.lowat = 16384;
	o.peer_addr = "fuzz";
	closed = 0;
	l = link_new(base, sv[1], -1, &o, &cb, NULL);
	if (size > 0 && write(sv[0], data, size) != (ssize_t)size)
		abort();
	shutdown(sv[0], SHUT_WR);
	for (i = 0; i < 8 && !closed; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	link_free(l);
	close(sv[0]);
	event_base_free(base);
	return 0;
}

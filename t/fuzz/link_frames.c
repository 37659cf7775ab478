/* See LICENSE file for copyright and license details. */
/*
 * Fuzz target: the receive path after a real handshake.  The input is a
 * list of records; each either goes straight onto the wire (the frame
 * decoder and the authentication check see arbitrary bytes) or is sent
 * through the peer's link with arbitrary flags and payload, so that the
 * inner header, the flags and the zstd decoder see arbitrary content
 * behind valid authentication.
 *	record: op (1 byte), length (2 bytes, big-endian), data
 *	op & 3: 0 raw bytes, 1 message with flags op >> 2, 2 a link_send
 *	(compressed if it pays), 3 link_close
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

static int	ready, closed;
static size_t	got;

static void
on_ready(struct link *l, const char *peer)
{
	(void)l;
	(void)peer;
	ready++;
}

static void
on_message(struct link *l, unsigned type, const void *buf, size_t len)
{
	(void)l;
	(void)type;
	/* Touch every byte, so that ASan sees a bad length. */
	if (len > 0)
		got += ((const unsigned char *)buf)[0] +
		    ((const unsigned char *)buf)[len - 1];
}

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
	struct link_cb		 cb = { on_ready, on_message, NULL, on_close };
	struct link_opts	 o;
	struct event_base	*base;
	struct link		*c, *s;
	size_t			 n, off = 0;
	unsigned		 op;
	int			 sv[2], i;

	if (!init) {
		signal(SIGPIPE, SIG_IGN);
		if (sodium_init() == -1)
			abort();
		init = 1;
	}
	if (size > 65536 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		return 0;
	base = event_base_new();
	link_opts_init(&o);
	o.key = key;
	o.max_msg = 16384;
	o.hiwat = 65536;
	o.lowat = 16384;
	o.zlevel = 1;
	o.peer_addr = "fuzz";
	o.role = LINK_CLIENT;
	o.name = "a";
	c = link_new(base, sv[0], -1, &o, &cb, NULL);
	o.role = LINK_SERVER;
	o.name = "b";
	s = link_new(base, sv[1], -1, &o, &cb, NULL);
	ready = closed = 0;
	for (i = 0; i < 20 && ready < 2; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	if (ready < 2)
		abort();	/* the handshake must work */
	while (!closed && size - off >= 3) {
		op = data[off];
		n = (size_t)data[off + 1] << 8 | data[off + 2];
		off += 3;
		if (n > size - off)
			n = size - off;
		switch (op & 3) {
		case 0:
			if (n > 0 && write(link_fd(c), data + off, n) !=
			    (ssize_t)n)
				abort();
			break;
		case 1:
			(void)link_send_raw(c, n, op >> 2, data + off, n);
			break;
		case 2:
			(void)link_send(c, op, data + off, n);
			break;
		default:
			link_close(c, NULL);
			break;
		}
		off += n;
		for (i = 0; i < 4 && !closed; i++)
			event_base_loop(base, EVLOOP_NONBLOCK);
	}
	link_free(c);
	link_free(s);
	event_base_free(base);
	return 0;
}

/* See LICENSE file for copyright and license details. */
/*
 * link.h: the secure, compressed message link between two hatrio nodes.
 *
 * A link runs over one connected socket, or over a pair of descriptors (a
 * pipe transport such as "ssh host blkmirror ..."), on a libevent
 * event_base.  Both ends prove they hold the cluster key, agree on fresh
 * session keys through an ephemeral key exchange (forward secrecy), then
 * every message is compressed (zstd, optional) and encrypted and
 * authenticated (AES-256-GCM with counter nonces when both ends have
 * AES-NI, else crypto_secretstream_xchacha20poly1305; one key per
 * direction).  Any forged, modified, replayed, reordered or truncated data
 * ends the link with a reason a person can read.  See hatrio-link(7).
 *
 * The program must ignore SIGPIPE (a closed peer is an error event, not a
 * signal) and call sodium_init() first.  Reasons are not logged here: the
 * owner logs the on_close reason once (it names the peer's address).
 */
#ifndef LINK_H
#define LINK_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct link;
struct link_client;

#define LINK_PROTO_VERSION	1
#define LINK_NAME_MAX		64		/* node name, bytes */
#define LINK_MSG_MAX_DEFAULT	(4U << 20)	/* largest message */
#define LINK_MSG_MAX_LIMIT	(64U << 20)
#define LINK_HIWAT_DEFAULT	(8U << 20)	/* queue: stop producing */
#define LINK_LOWAT_DEFAULT	(2U << 20)	/* queue: resume */
#define LINK_HANDSHAKE_USEC	(10ULL * 1000000)
#define LINK_REKEY_BYTES	(1ULL << 30)	/* rekey after 1 GiB ... */
#define LINK_REKEY_USEC		(600ULL * 1000000) /* ... or 10 minutes */
#define LINK_ZLEVEL_MAX		19
#define LINK_ZLEVEL_DEFAULT	1

/* link_opts.cipher */
#define LINK_CIPHER_AUTO	0	/* AES-256-GCM if both ends can */
#define LINK_CIPHER_XCHACHA	1	/* secretstream only */

enum link_role {
	LINK_CLIENT,
	LINK_SERVER
};

/*
 * The callbacks.  on_close is called exactly once per link that was
 * started, whether it failed, the peer closed it or link_close() finished;
 * nothing is delivered after it.  The owner may link_free() the link from
 * inside any callback (for a link of a link_client, see link_free()).
 */
struct link_cb {
	void	(*on_ready)(struct link *, const char *peer_name);
	void	(*on_message)(struct link *, unsigned type, const void *,
		    size_t);
	void	(*on_drain)(struct link *);	/* queue fell to lowat */
	void	(*on_close)(struct link *, const char *reason);
};

struct link_opts {
	enum link_role		 role;
	const unsigned char	*key;		/* HATRIO_KEY_BYTES */
	const char		*name;		/* ours */
	const char		*peer;		/* expected, NULL: any */
	int			 zlevel;	/* zstd level, 0: off */
	size_t			 max_msg;	/* 0: LINK_MSG_MAX_DEFAULT */
	size_t			 hiwat, lowat;	/* 0: defaults */
	size_t			 queue_max;	/* 0: hiwat + 2 max messages */
	uint64_t		 handshake_usec; /* 0: default */
	uint64_t		 rekey_bytes;	/* 0: default */
	uint64_t		 rekey_usec;	/* 0: default */
	const char		*peer_addr;	/* for messages, NULL: ask fd */
	int			 cipher;	/* LINK_CIPHER_*, 0: auto */
	/*
	 * Compress only while at least this many bytes wait to be sent (0:
	 * always): a link that keeps up with its sender gains nothing from
	 * zstd but its cost in the sender's loop.
	 */
	size_t			 zmin_queued;
	/*
	 * Let messages wait up to this long to leave together (0: at once,
	 * the first of each loop round without delay).  For a link whose
	 * latency nobody waits for (asynchronous replication): fewer
	 * writes, and fewer wake-ups of the peer.
	 */
	uint64_t		 delay_usec;
};

struct link_stats {
	uint64_t	msgs_out, msgs_in;
	uint64_t	bytes_out, bytes_in;		/* payload, before zstd */
	uint64_t	wire_out, wire_in;		/* on the wire */
	uint64_t	compressed_out, rekeys_out, rekeys_in;
};

/*
 * Option defaults filled in (zstd level 1: every link compresses unless
 * told not to); key, name and role remain the caller's.
 */
void		 link_opts_init(struct link_opts *);

/*
 * Start a link on rfd (read) and wfd (write; -1 or rfd for a socket).  The
 * link owns the descriptors and closes them.  Returns NULL with errno on a
 * bad option or no memory (the descriptors are then left open).
 */
struct link	*link_new(struct event_base *, int rfd, int wfd,
		    const struct link_opts *, const struct link_cb *, void *arg);
void		*link_arg(struct link *);
void		 link_set_arg(struct link *, void *);
void		 link_set_cb(struct link *, const struct link_cb *);

/*
 * Queue one message (type 0..65535).  Returns 0, or -1 with errno EMSGSIZE
 * (over the maximum), ENOBUFS (queue_max reached: the caller ignored
 * backpressure), ENOTCONN (not ready, or closing).
 */
int		 link_send(struct link *, unsigned type, const void *, size_t);
/*
 * Zero copy: fill up to link_max_msg() bytes at link_msg_buf() (valid
 * until the next send; NULL before the link is ready), then
 * link_send_buf() them.
 */
void		*link_msg_buf(struct link *);
int		 link_send_buf(struct link *, unsigned type, size_t);
/*
 * The same, with the message's first len bytes at link_msg_buf() and the
 * rest, tlen bytes, at tail, which the link reads before it returns (a
 * header and the data it carries, without copying the data there first).
 */
int		 link_send_tail(struct link *, unsigned type, size_t len,
		    const void *tail, size_t tlen);
size_t		 link_queued_bytes(struct link *);
int		 link_writable(struct link *);	/* queue below hiwat */
size_t		 link_max_msg(struct link *);
int		 link_is_ready(struct link *);
/* The peer's name once it is authenticated (on_ready), "" before. */
const char	*link_peer_name(struct link *);
const char	*link_peer_addr(struct link *);
/* "aes256gcm" or "xchacha20poly1305" once ready, "" before. */
const char	*link_cipher(struct link *);
void		 link_get_stats(struct link *, struct link_stats *);
int		 link_fd(struct link *);	/* read side, -1 when closed */

/* Send what is queued and a final message, then close; on_close follows. */
void		 link_close(struct link *, const char *reason);
/*
 * Close at once without callbacks and free.  NULL is fine.  A link of a
 * link_client belongs to the client: link_free() of it from inside its
 * on_close does nothing (the client frees it when on_close returns; after
 * that the pointer is gone); earlier, from any other callback or outside,
 * it detaches the link from the client and frees it, without on_close,
 * and the client reconnects after its delay.
 */
void		 link_free(struct link *);

/*
 * Links in the handshake (not yet authenticated), in this process.  A
 * link holds only a few KiB until its peer proved it holds the cluster
 * key, and the large buffers (about 4 times the message maximum plus the
 * queue) after; still, a server should refuse connections while this
 * count is over a limit of its own, so that unauthenticated peers cannot
 * hold many descriptors and handshake timeouts.
 */
unsigned	 link_handshakes(void);

/*
 * A reconnecting client: connects to host:port, runs a link (role client)
 * and on every failure or close reconnects after a delay that doubles from
 * min_usec up to max_usec (with jitter), starting over from min_usec once a
 * link became ready.  The callbacks are those of each link; the client owns
 * and frees its links after their on_close.  Connection failures are
 * logged (log_warnx) with the next delay.  link_client_free() may be
 * called from any callback.  A numeric host is parsed once and never
 * resolved; a name is resolved before every attempt with libevent's
 * asynchronous resolver (evdns: /etc/hosts, then DNS), never blocking the
 * event loop.
 */
struct link_client *link_client_new(struct event_base *, const char *host,
		    const char *port, const struct link_opts *,
		    const struct link_cb *, void *arg, uint64_t min_usec,
		    uint64_t max_usec);
struct link	*link_client_link(struct link_client *); /* ready link or NULL */
void		 link_client_free(struct link_client *);

/* Set TCP_NODELAY (a no-op for non-TCP descriptors). */
void		 link_nodelay(int);

/*
 * For tests and fuzzing only: send a message with the given inner flags,
 * not compressed, so that a peer's receive path sees arbitrary content
 * behind valid authentication.
 */
#define LINK_F_ZSTD	0x01
int		 link_send_raw(struct link *, unsigned type, unsigned flags,
		    const void *, size_t);

#endif /* LINK_H */

/* See LICENSE file for copyright and license details. */
/*
 * Unit tests for lib/hb.c: encoding, every refusal, the replay rule, the
 * freshness rule, and the helpers both programs share.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <sodium.h>

#include "hatrio.h"
#include "hb.h"
#include "unit.h"

static int	child(void (*)(const char *), const char *, char *, size_t);
static void	node_default(const char *);
static void	opt_name(const char *);
static void	opt_duration(const char *);
static void	opt_fd(const char *);
static void	stdin_badfd(const char *);
static void	out_gone(const char *);
static void	out_close_all(const char *);
static void	stdin_tests(void);
static void	key_tests(void);
static void	out_tests(void);
static void	nop_cb(evutil_socket_t, short, void *);

static void
nop_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* stdout as a stream: non-blocking for a pipe only, flushed, closed. */
static void
out_tests(void)
{
	static char		 data[1024 * 1024], got[65536];
	struct event_base	*base;
	struct evbuffer		*b;
	struct event		*ev;
	struct sigaction	 sa;
	char			 path[] = "/tmp/hbunitoutXXXXXX", msg[256];
	size_t			 total = 0;
	ssize_t			 n;
	int			 p[2], fd, i, r, left, e;

	if ((base = hb_base_new()) == NULL || pipe(p) == -1 ||
	    (fd = mkstemp(path)) == -1 || (b = evbuffer_new()) == NULL) {
		ok(0, "set up the stdout tests");
		return;
	}
	unlink(path);
	ok(sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN,
	    "hb_base_new ignores SIGPIPE");

	ok(hb_out_nonblock(p[1]) == 1 && (fcntl(p[1], F_GETFL) & O_NONBLOCK),
	    "a pipe is made non-blocking");
	ok(hb_out_nonblock(fd) == 0 && !(fcntl(fd, F_GETFL) & O_NONBLOCK),
	    "a file is left blocking");
	close(fd);
	errno = 0;
	ok(hb_out_nonblock(fd) == -1 && errno == EBADF,
	    "a closed descriptor is an error");

	for (i = 0; i < (int)sizeof(data); i++)
		data[i] = i % 251;
	ev = event_new(base, p[1], EV_WRITE, nop_cb, NULL);
	evbuffer_add(b, data, sizeof(data));
	r = hb_out_flush(b, p[1], ev);
	left = evbuffer_get_length(b) > 0;
	ok(r == 0 && left && event_pending(ev, EV_WRITE, NULL),
	    "a full pipe leaves the rest queued and the write event armed");
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	for (i = 0; i < 10000 && r == 0; i++) {
		while ((n = read(p[0], got, sizeof(got))) > 0) {
			if (memcmp(got, data + total, n) != 0)
				break;
			total += n;
		}
		if (evbuffer_get_length(b) == 0)
			break;
		r = hb_out_flush(b, p[1], ev);
	}
	ok(r == 0 && total == sizeof(data) && evbuffer_get_length(b) == 0,
	    "everything reaches the reader, in order");
	ok(!event_pending(ev, EV_WRITE, NULL),
	    "the write event is removed once all is written");

	hb_out_block(p[1]);
	ok(!(fcntl(p[1], F_GETFL) & O_NONBLOCK), "hb_out_block clears "
	    "O_NONBLOCK");
	close(p[0]);
	evbuffer_add(b, "x", 1);
	errno = 0;
	ok(hb_out_flush(b, p[1], NULL) == -1 && errno == EPIPE,
	    "a reader that went away is EPIPE, not SIGPIPE");
	close(p[1]);
	event_free(ev);
	evbuffer_free(b);
	event_base_free(base);

	e = child(out_gone, "-: write", msg, sizeof(msg));
	ok(e == EXIT_SYS, "hb_out_write: a reader that went away is exit 111");
	is_str(msg, "hatrio: -: write: Broken pipe\n", "named as given");
	e = child(out_close_all, NULL, msg, sizeof(msg));
	ok(e == 0, "hb_out_close in a child");
	is_str(msg, "queued\nclosed 1\nread 1048576\n",
	    "hb_out_close writes all that was queued, then frees the stream");
}

/*
 * Run fn(arg) in a child, which may exit as a bad option or host name
 * would make the program exit.  Returns the child's exit status (99: its
 * set-up failed), or -1; out gets what it wrote on stdout and stderr.
 */
static int
child(void (*fn)(const char *), const char *arg, char *out, size_t len)
{
	ssize_t	n;
	size_t	got = 0;
	pid_t	pid;
	int	fds[2], st;

	if (pipe(fds) == -1)
		return -1;
	if ((pid = fork()) == -1)
		return -1;
	if (pid == 0) {
		close(fds[0]);
		dup2(fds[1], STDOUT_FILENO);
		dup2(fds[1], STDERR_FILENO);
		fn(arg);
		fflush(stdout);
		_exit(0);
	}
	close(fds[1]);
	while (got + 1 < len && (n = read(fds[0], out + got,
	    len - 1 - got)) > 0)
		got += n;
	out[got] = '\0';
	close(fds[0]);
	if (waitpid(pid, &st, 0) == -1 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

/*
 * hb_node_default with its own host name, in a UTS namespace so that the
 * machine's stays as it is.
 */
static void
node_default(const char *hostname)
{
	char	buf[256];

	if (unshare(CLONE_NEWUTS) == -1 ||
	    sethostname(hostname, strlen(hostname)) == -1)
		_exit(99);
	printf("%s", hb_node_default(buf, sizeof(buf)));
}

/* hb_out_write on a stdout whose reader went away. */
static void
out_gone(const char *what)
{
	struct event_base	*base;
	struct hb_out		 o;
	int			 q[2];

	if (pipe(q) == -1 || (base = hb_base_new()) == NULL)
		_exit(99);
	close(q[0]);
	dup2(q[1], STDOUT_FILENO);
	close(q[1]);
	hb_out_open(&o, base, what);
	if (o.ev == NULL)
		_exit(98);
	evbuffer_add(o.buf, "x", 1);
	hb_out_write(&o);
	_exit(0);
}

/*
 * More than a pipe holds, to a reader that starts only once hb_out_write
 * has left the rest queued: hb_out_close must still write it all.  The
 * child says what it saw on stderr, the reader how much it got.
 */
static void
out_close_all(const char *arg)
{
	static char		 buf[65536];
	struct event_base	*base;
	struct hb_out		 o;
	size_t			 total = 0;
	ssize_t			 n;
	pid_t			 pid;
	int			 q[2], go[2], i;

	(void)arg;
	if (pipe(q) == -1 || pipe(go) == -1 || (base = hb_base_new()) == NULL)
		_exit(99);
	if ((pid = fork()) == -1)
		_exit(99);
	if (pid == 0) {
		close(q[1]);
		close(go[1]);
		if (read(go[0], buf, 1) != 1)
			_exit(99);
		while ((n = read(q[0], buf, sizeof(buf))) > 0)
			total += n;
		fprintf(stderr, "read %zu\n", total);
		_exit(0);
	}
	close(q[0]);
	close(go[0]);
	dup2(q[1], STDOUT_FILENO);
	close(q[1]);
	hb_out_open(&o, base, "stdout");
	memset(buf, 'x', sizeof(buf));
	for (i = 0; i < 16; i++)
		evbuffer_add(o.buf, buf, sizeof(buf));
	hb_out_write(&o);
	fprintf(stderr, "%s\n", o.ev != NULL && evbuffer_get_length(o.buf) >
	    0 && event_pending(o.ev, EV_WRITE, NULL) ? "queued" : "written");
	if (write(go[1], "g", 1) != 1)
		_exit(99);
	hb_out_close(&o);
	fprintf(stderr, "closed %d\n", o.buf == NULL && o.ev == NULL);
	close(STDOUT_FILENO);
	waitpid(pid, NULL, 0);
	event_base_free(base);
}

/* A read error on stdin: logged, and the end of the input. */
static void
stdin_badfd(const char *arg)
{
	struct evbuffer	*b;

	(void)arg;
	if ((b = evbuffer_new()) == NULL)
		_exit(99);
	close(STDIN_FILENO);
	printf("%d\n", hb_stdin_read(b, STDIN_FILENO));
}

static void
stdin_tests(void)
{
	struct evbuffer	*b;
	char		 out[256];
	int		 p[2], e;

	if (pipe(p) == -1 || (b = evbuffer_new()) == NULL) {
		ok(0, "set up the stdin tests");
		return;
	}
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	ok(hb_stdin_read(b, p[0]) == 0 && evbuffer_get_length(b) == 0,
	    "hb_stdin_read: nothing yet is 0");
	ok(write(p[1], "abc", 3) == 3 && hb_stdin_read(b, p[0]) == 1 &&
	    evbuffer_get_length(b) == 3 &&
	    memcmp(evbuffer_pullup(b, -1), "abc", 3) == 0,
	    "what was written is read, and 1");
	close(p[1]);
	ok(hb_stdin_read(b, p[0]) == -1 && evbuffer_get_length(b) == 3,
	    "the end of the input is -1, and what was read stays");
	close(p[0]);
	evbuffer_free(b);
	e = child(stdin_badfd, NULL, out, sizeof(out));
	ok(e == 0, "a read error is no exit");
	is_str(out, "hatrio: stdin: Bad file descriptor\n-1\n",
	    "it is logged, then the end of the input");
}

static void
opt_name(const char *arg)
{
	printf("%s", hb_opt_name('C', arg));
}

static void
opt_duration(const char *arg)
{
	uint64_t	us = 0;

	hb_opt_duration('i', arg, &us);
	printf("%llu", (unsigned long long)us);
}

static void
opt_fd(const char *arg)
{
	int	fd = -1;

	hb_opt_fd('d', arg, &fd);
	printf("%d", fd);
}

static void
key_tests(void)
{
	unsigned char	 ck[HATRIO_KEY_BYTES], want[HB_TAG_LEN];
	unsigned char	 hk[HB_TAG_LEN];
	char		 path[] = "/tmp/hbunitkeyXXXXXX", msg[600];
	int		 fd;

	memset(ck, 0x5a, sizeof(ck));
	hb_derive_key(ck, want);
	if ((fd = mkstemp(path)) == -1 || write(fd, ck, sizeof(ck)) !=
	    (ssize_t)sizeof(ck)) {
		ok(0, "key file written");
		return;
	}
	close(fd);
	memset(hk, 0, sizeof(hk));
	is_str(hb_key_load(path, hk), NULL, "hb_key_load reads a key file");
	ok(memcmp(hk, want, sizeof(hk)) == 0,
	    "hb_key_load gives the derived heartbeat key");
	chmod(path, 0640);
	memset(hk, 0, sizeof(hk));
	snprintf(msg, sizeof(msg), "key file %s: readable or writable by "
	    "group or others (mode 0640); run chmod 600 %s", path, path);
	is_str(hb_key_load(path, hk), msg,
	    "hb_key_load passes key_load's refusal on");
	ok(hk[0] == 0 && memcmp(hk, hk + 1, sizeof(hk) - 1) == 0,
	    "a refused key leaves the heartbeat key alone");
	unlink(path);
	snprintf(msg, sizeof(msg), "key file %s: %s", path, strerror(ENOENT));
	is_str(hb_key_load(path, hk), msg, "a missing key file is named");
}

int
main(void)
{
	struct hb_packet	 p, q;
	struct hb_replay	 r;
	struct hb_medium	 m;
	unsigned char		 ck[HATRIO_KEY_BYTES], key[HB_TAG_LEN];
	unsigned char		 key2[HB_TAG_LEN], buf[HB_PKT_MAX];
	unsigned char		 b2[HB_PKT_MAX];
	char			 out[512], want[512];
	uint64_t		 us;
	size_t			 n, i;
	int64_t			 age;
	int			 e;

	if (sodium_init() == -1)
		return 1;
	memset(ck, 7, sizeof(ck));
	hb_derive_key(ck, key);
	ck[0] = 8;
	hb_derive_key(ck, key2);
	ok(sodium_memcmp(key, key2, sizeof(key)) != 0,
	    "different cluster keys give different heartbeat keys");
	ok(memcmp(key, ck, sizeof(key)) != 0, "the key is derived, not the "
	    "cluster key itself");

	memset(&p, 0, sizeof(p));
	p.type = HB_TYPE_HEARTBEAT;
	p.incarnation = 1732473600000000ULL;
	p.seq = 42;
	p.time = 1732473600123456ULL;
	strcpy(p.cluster, "prod");
	strcpy(p.node, "node-b.1");
	strcpy(p.status, "role=primary disk=UpToDate");
	n = hb_encode(&p, key, buf, sizeof(buf));
	ok(n == HB_HDR_LEN + 24 + 3 + 4 + 8 + 26 + HB_TAG_LEN,
	    "encoded length %zu", n);
	ok(memcmp(buf, "HThb\2\1\0\0", 8) == 0, "header bytes (version 2)");
	ok(memcmp(buf + HB_HDR_LEN + 16,
	    "\x00\x06\x27\xac\xf1\x84\xa2\x40", 8) == 0,
	    "the time follows incarnation and seq, big-endian");
	memset(&q, 0, sizeof(q));
	e = hb_decode(buf, n, key, &q);
	ok(e == HB_OK, "decodes: %s", hb_strerror(e));
	ok(q.type == p.type && q.incarnation == p.incarnation &&
	    q.seq == 42 && q.time == p.time, "numbers survive");
	is_str(q.cluster, "prod", "cluster");
	is_str(q.node, "node-b.1", "node");
	is_str(q.status, "role=primary disk=UpToDate", "status");

	ok(hb_decode(buf, n, key2, &q) == HB_EAUTH, "wrong key refused");
	ok(hb_decode(buf, n - 1, key, &q) == HB_ELENGTH, "truncated refused");
	ok(hb_decode(buf, 20, key, &q) == HB_ESHORT, "short refused");
	memcpy(b2, buf, n);
	b2[HB_HDR_LEN + 16 + 2] ^= 1;
	ok(hb_decode(b2, n, key, &q) == HB_EAUTH, "altered body refused");
	memcpy(b2, buf, n);
	b2[0] = 'X';
	ok(hb_decode(b2, n, key, &q) == HB_EMAGIC, "bad magic refused");
	memcpy(b2, buf, n);
	b2[4] = 1;
	ok(hb_decode(b2, n, key, &q) == HB_EVERSION, "version 1 (no time) "
	    "refused");
	memcpy(b2, buf, n);
	b2[5] = 3;
	ok(hb_decode(b2, n, key, &q) == HB_ETYPE, "type 3 refused");
	memcpy(b2, buf, n);
	b2[7] = 1;
	ok(hb_decode(b2, n, key, &q) == HB_EFLAGS, "flags refused");
	for (i = 0; i < n; i++) {
		memcpy(b2, buf, n);
		b2[i] ^= 0x80;
		if (hb_decode(b2, n, key, &q) == HB_OK)
			break;
	}
	ok(i == n, "no single flipped bit is accepted");

	/* bodies that authenticate but do not parse */
	ok(hb_parse_body(buf + HB_HDR_LEN, n - HB_HDR_LEN - HB_TAG_LEN, &q) ==
	    HB_OK, "body alone parses");
	memcpy(b2, buf + HB_HDR_LEN, n);
	b2[24] = 200;
	ok(hb_parse_body(b2, n - HB_HDR_LEN - HB_TAG_LEN, &q) == HB_EBODY,
	    "string longer than the body refused");
	memcpy(b2, buf + HB_HDR_LEN, n);
	b2[24] = 65;
	ok(hb_parse_body(b2, n - HB_HDR_LEN - HB_TAG_LEN, &q) == HB_EBODY,
	    "name over 64 refused");
	ok(hb_parse_body(buf + HB_HDR_LEN, n - HB_HDR_LEN - HB_TAG_LEN + 1,
	    &q) == HB_EBODY, "trailing byte refused");
	memcpy(b2, buf + HB_HDR_LEN, n);
	b2[25] = ' ';
	ok(hb_parse_body(b2, n - HB_HDR_LEN - HB_TAG_LEN, &q) == HB_EBODY,
	    "space in the cluster name refused");
	memcpy(b2, buf + HB_HDR_LEN, n);
	b2[26] = '\0';
	ok(hb_parse_body(b2, n - HB_HDR_LEN - HB_TAG_LEN, &q) == HB_EBODY,
	    "NUL inside the cluster name refused (found by the fuzzer)");
	memcpy(b2, buf + HB_HDR_LEN, n);
	memset(b2, 0, 8);
	ok(hb_parse_body(b2, n - HB_HDR_LEN - HB_TAG_LEN, &q) == HB_EBODY,
	    "incarnation 0 refused");
	memcpy(b2, buf + HB_HDR_LEN, n);
	memset(b2 + 16, 0, 8);
	ok(hb_parse_body(b2, n - HB_HDR_LEN - HB_TAG_LEN, &q) == HB_EBODY,
	    "time 0 refused");

	ok(hb_fresh(100000000, 100000000, 5000000, &age) && age == 0,
	    "same time is fresh");
	ok(hb_fresh(100000000, 95000000, 5000000, &age) && age == 5000000,
	    "5 s old is fresh with a 5 s window");
	ok(!hb_fresh(100000000, 94999999, 5000000, &age) && age == 5000001,
	    "older is stale, age %lld", (long long)age);
	ok(!hb_fresh(100000000, 105000001, 5000000, &age) && age == -5000001,
	    "from the future is stale, age %lld", (long long)age);
	ok(!hb_fresh(100000000, 100600000, 500000, &age),
	    "a sub-second window works");
	ok(!hb_fresh(UINT64_MAX, 1, 5000000, &age) && age == INT64_MAX,
	    "a huge age does not overflow");
	ok(hb_fresh(100000000, 1, 0, &age), "window 0 turns the rule off");

	strcpy(p.node, "bad name");
	ok(hb_encode(&p, key, buf, sizeof(buf)) == 0, "bad node not encoded");
	strcpy(p.node, "b");
	ok(hb_encode(&p, key, buf, 40) == 0, "small buffer not encoded");

	memset(&r, 0, sizeof(r));
	ok(hb_newer(&r, 5, 1), "anything is newer than nothing");
	hb_accept(&r, 5, 10);
	ok(!hb_newer(&r, 5, 10), "the same seq is not newer");
	ok(!hb_newer(&r, 5, 9), "an older seq is not newer");
	ok(hb_newer(&r, 5, 11), "the next seq is newer");
	ok(!hb_newer(&r, 4, 1000), "an older incarnation never is");
	ok(hb_newer(&r, 6, 1), "a newer incarnation is, from seq 1");

	ok(hb_medium_parse("udp:127.0.0.1:694", 0, &m) == NULL &&
	    m.kind == HB_MEDIUM_UDP, "udp medium");
	ok(hb_medium_parse("udp:[::1]:694", 0, &m) == NULL &&
	    m.ss.ss_family == AF_INET6, "udp IPv6 medium");
	ok(hb_medium_parse("mcast:239.1.2.3:694%lo", 0, &m) == NULL &&
	    m.ifindex != 0, "mcast medium with interface");
	ok(hb_medium_parse("-", 0, &m) == NULL && m.kind == HB_MEDIUM_PIPE,
	    "pipe medium");
	is_str(hb_medium_parse("mcast:10.0.0.1:694", 0, &m),
	    "not a multicast group", "unicast group refused");
	is_str(hb_medium_parse("udp:127.0.0.1:0", 0, &m), "bad port",
	    "port 0 refused");
	is_str(hb_medium_parse("udp:*:694", 0, &m),
	    "\"*\" is only for listening on udp", "* refused for sending");
	ok(hb_medium_parse("udp:*:694", 1, &m) == NULL && m.any,
	    "* for listening");
	is_str(hb_medium_parse("tcp:1.2.3.4:5", 0, &m),
	    "unknown medium (udp:, mcast:, bcast: or -)", "tcp refused");
	e = 0;
	ok(hb_medium_arg("udp:127.0.0.1:694", 0, &m, &e) == NULL && e == 0,
	    "hb_medium_arg: a udp medium is no pipe");
	ok(hb_medium_arg("-", 0, &m, &e) == NULL && e == 1 &&
	    m.kind == HB_MEDIUM_PIPE, "the first pipe medium is counted");
	is_str(hb_medium_arg("-", 1, &m, &e), "given twice",
	    "a second pipe medium is refused");
	is_str(hb_medium_arg("udp:127.0.0.1", 1, &m, &e), "no port",
	    "hb_medium_parse's reason is passed on");

	key_tests();
	out_tests();
	stdin_tests();

	/* a host name of its own needs a UTS namespace: root only */
	if (geteuid() != 0)
		printf("# skipped: hb_node_default needs root for "
		    "unshare(CLONE_NEWUTS)\n");
	else {
		e = child(node_default, "node7.example.org", out,
		    sizeof(out));
		ok(e == 0, "hb_node_default with a valid host name succeeds");
		is_str(out, "node7", "the node name is the host name up to "
		    "its dot");
		e = child(node_default, "db-2", out, sizeof(out));
		ok(e == 0, "a host name without a dot succeeds");
		is_str(out, "db-2", "and is the node name whole");
		e = child(node_default, "bad!host.example.org", out,
		    sizeof(out));
		ok(e == EXIT_USAGE, "a host name that is no node name exits "
		    "100");
		is_str(out, "hatrio: host name bad!host is not a valid node "
		    "name; use -n\n", "and says so");
	}
	e = child(opt_name, "db_1.x", out, sizeof(out));
	ok(e == 0, "hb_opt_name takes a valid name");
	is_str(out, "db_1.x", "and gives it back");
	e = child(opt_name, "a b", out, sizeof(out));
	ok(e == EXIT_USAGE, "hb_opt_name refuses a space with exit 100");
	is_str(out, "hatrio: -C a b: not a valid name\n", "and says why");
	e = child(opt_duration, "1.5s", out, sizeof(out));
	ok(e == 0, "hb_opt_duration takes 1.5s");
	is_str(out, "1500000", "as microseconds");
	us = 0;
	snprintf(want, sizeof(want), "hatrio: -i 5 parsecs: %s\n",
	    parse_duration("5 parsecs", &us));
	e = child(opt_duration, "5 parsecs", out, sizeof(out));
	ok(e == EXIT_USAGE, "hb_opt_duration refuses 5 parsecs with exit 100");
	is_str(out, want, "with parse_duration's reason");
	e = child(opt_fd, "2", out, sizeof(out));
	ok(e == 0, "hb_opt_fd takes an open descriptor");
	is_str(out, "2", "and gives it");
	e = child(opt_fd, "987", out, sizeof(out));
	ok(e == EXIT_USAGE, "hb_opt_fd refuses a closed one with exit 100");
	is_str(out, "hatrio: -d 987: not an open file descriptor\n",
	    "and says why");
	return done_testing();
}

/* See LICENSE file for copyright and license details. */
/*
 * hbpkt: make heartbeat packets for the tests, good and bad ones, and
 * replay captured ones.
 *
 *	hbpkt [-m] [-C cluster] [-I inc] [-k keyfile] [-n node] [-o usec]
 *	    [-S seq] [-s status] [-t type] [-u host:port]
 *		one packet (-m: with a malformed but authentic body; -o:
 *		its time is the clock plus usec, which may be negative),
 *		to stdout or as a datagram to -u
 *	hbpkt -g count -u host:port
 *		count datagrams of random garbage, some with a good header
 *	hbpkt -r [-b addr] -u host:port
 *		replay: send each packet of the stream on stdin (as hbsend -
 *		writes it) as one datagram, from addr when given
 */
#include <sys/socket.h>

#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "hatrio.h"
#include "hb.h"

static void	usage(void) __attribute__((noreturn));
static void	out(int, const unsigned char *, size_t);

static struct sockaddr_storage	ss;
static socklen_t		sslen;

static void
usage(void)
{
	fprintf(stderr, "usage: hbpkt [-mr] [-b addr] [-C cluster] [-g count] "
	    "[-I inc] [-k keyfile] [-n node] [-o usec] [-S seq] [-s status] "
	    "[-t type] [-u host:port]\n");
	exit(EXIT_USAGE);
}

static void
out(int fd, const unsigned char *buf, size_t n)
{
	if (fd == -1) {
		if (fwrite(buf, 1, n, stdout) != n)
			fatal("stdout");
		return;
	}
	if (sendto(fd, buf, n, 0, (struct sockaddr *)&ss, sslen) != (ssize_t)n)
		log_warn("sendto");
}

int
main(int argc, char *argv[])
{
	struct hb_packet	 pkt;
	struct hb_medium	 m;
	unsigned char		 ck[HATRIO_KEY_BYTES], key[HB_TAG_LEN];
	unsigned char		 buf[HB_PKT_MAX + 64], bad[HB_PKT_MAX + 64];
	const char		*keyfile = NULL, *dest = NULL, *src = NULL, *e;
	char			 spec[300];
	size_t			 n, body, len;
	unsigned long		 garbage = 0, i;
	int			 ch, mflag = 0, rflag = 0, fd = -1;

	log_init(argv[0], 0);
	memset(&pkt, 0, sizeof(pkt));
	strcpy(pkt.cluster, "hatrio");
	strcpy(pkt.node, "b");
	pkt.type = HB_TYPE_HEARTBEAT;
	pkt.incarnation = wall_usec();
	pkt.seq = 1;
	pkt.time = wall_usec();
	while ((ch = getopt(argc, argv, "b:C:g:I:k:mn:o:rS:s:t:u:")) != -1) {
		switch (ch) {
		case 'b':
			src = optarg;
			break;
		case 'C':
			snprintf(pkt.cluster, sizeof(pkt.cluster), "%s",
			    optarg);
			break;
		case 'g':
			garbage = strtoul(optarg, NULL, 10);
			break;
		case 'I':
			pkt.incarnation = strtoull(optarg, NULL, 10);
			break;
		case 'k':
			keyfile = optarg;
			break;
		case 'm':
			mflag = 1;
			break;
		case 'n':
			snprintf(pkt.node, sizeof(pkt.node), "%s", optarg);
			break;
		case 'o':
			pkt.time += strtoll(optarg, NULL, 10);
			break;
		case 'r':
			rflag = 1;
			break;
		case 'S':
			pkt.seq = strtoull(optarg, NULL, 10);
			break;
		case 's':
			snprintf(pkt.status, sizeof(pkt.status), "%s", optarg);
			break;
		case 't':
			pkt.type = strcmp(optarg, "leaving") == 0 ?
			    HB_TYPE_LEAVING : HB_TYPE_HEARTBEAT;
			break;
		case 'u':
			dest = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (sodium_init() == -1)
		fatalx("sodium_init");
	if (dest != NULL) {
		snprintf(spec, sizeof(spec), "udp:%s", dest);
		if ((e = hb_medium_parse(spec, 0, &m)) != NULL)
			fatalx("%s: %s", dest, e);
		ss = m.ss;
		sslen = m.sslen;
		if ((fd = socket(ss.ss_family, SOCK_DGRAM, 0)) == -1)
			fatal("socket");
		if (src != NULL) {
			snprintf(spec, sizeof(spec), "udp:%s:9", src);
			if ((e = hb_medium_parse(spec, 0, &m)) != NULL)
				fatalx("%s: %s", src, e);
			if (m.ss.ss_family == AF_INET)
				((struct sockaddr_in *)&m.ss)->sin_port = 0;
			else
				((struct sockaddr_in6 *)&m.ss)->sin6_port = 0;
			if (bind(fd, (struct sockaddr *)&m.ss, m.sslen) == -1)
				fatal("bind %s", src);
		}
	}
	if (garbage > 0) {
		for (i = 0; i < garbage; i++) {
			len = randombytes_uniform(HB_PKT_MAX + 32);
			randombytes_buf(buf, len);
			if (i % 2 == 1 && len >= HB_PKT_MIN) {
				/* a header that passes, so the tag is hit */
				memcpy(buf, HB_MAGIC, 4);
				buf[4] = HB_VERSION;
				buf[5] = HB_TYPE_HEARTBEAT;
				buf[6] = buf[7] = 0;
				body = len - HB_HDR_LEN - HB_TAG_LEN;
				if (body > HB_BODY_MAX)
					body = HB_BODY_MAX;
				len = HB_HDR_LEN + body + HB_TAG_LEN;
				buf[8] = body >> 8;
				buf[9] = body & 0xff;
			}
			out(fd, buf, len);
			usleep(100);	/* do not overrun the socket buffer */
		}
		return 0;
	}
	if (rflag) {
		while (fread(buf, 1, HB_HDR_LEN, stdin) == HB_HDR_LEN) {
			if (hb_header(buf, HB_HDR_LEN, &len) != HB_OK)
				fatalx("stdin: not a packet stream");
			if (fread(buf + HB_HDR_LEN, 1, len - HB_HDR_LEN,
			    stdin) != len - HB_HDR_LEN)
				fatalx("stdin: truncated packet");
			out(fd, buf, len);
		}
		return 0;
	}
	if (keyfile == NULL)
		usage();
	if ((e = key_load(keyfile, ck)) != NULL)
		fatalx("%s", e);
	hb_derive_key(ck, key);
	if ((n = hb_encode(&pkt, key, buf, sizeof(buf))) == 0)
		fatalx("cannot encode");
	if (mflag) {
		/* one byte too many in the body, and a good tag over it */
		body = n - HB_HDR_LEN - HB_TAG_LEN;
		memcpy(bad, buf, HB_HDR_LEN + body);
		bad[HB_HDR_LEN + body] = 'x';
		body++;
		bad[8] = body >> 8;
		bad[9] = body & 0xff;
		crypto_auth_hmacsha512256(bad + HB_HDR_LEN + body, bad,
		    HB_HDR_LEN + body, key);
		n = HB_HDR_LEN + body + HB_TAG_LEN;
		memcpy(buf, bad, n);
	}
	out(fd, buf, n);
	return 0;
}

/* See LICENSE file for copyright and license details. */
/*
 * Unit tests for lib/hb.c: encoding, every refusal, the replay rule, the
 * freshness rule.
 */
#include <stdlib.h>

#include <sodium.h>

#include "hatrio.h"
#include "hb.h"
#include "unit.h"

int
main(void)
{
	struct hb_packet	 p, q;
	struct hb_replay	 r;
	struct hb_medium	 m;
	unsigned char		 ck[HATRIO_KEY_BYTES], key[HB_TAG_LEN];
	unsigned char		 key2[HB_TAG_LEN], buf[HB_PKT_MAX];
	unsigned char		 b2[HB_PKT_MAX];
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
	return done_testing();
}

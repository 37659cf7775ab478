/* See LICENSE file for copyright and license details. */
/*
 * libFuzzer target for the heartbeat packet parser (lib/hb.c).  The input
 * is tried as a whole datagram, as a stream header, as a bare body, and
 * as the body of a correctly authenticated packet, so that the fuzzer
 * reaches the body parser behind the tag.  A body that parses must have
 * non-zero incarnation, seq and time (packet version 2), and encode back
 * to the same bytes.  Seeds: t/fuzz/seed/hb (made with a key of 0x5a).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "hatrio.h"
#include "hb.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned char	 key[HB_TAG_LEN];
	static int		 init;
	struct hb_packet	 pkt, pkt2;
	unsigned char		 buf[HB_PKT_MAX], re[HB_PKT_MAX];
	size_t			 len, n;
	int			 e, e2;

	if (!init) {
		unsigned char ck[HATRIO_KEY_BYTES];

		if (sodium_init() == -1)
			abort();
		memset(ck, 0x5a, sizeof(ck));
		hb_derive_key(ck, key);
		init = 1;
	}
	(void)hb_decode(data, size, key, &pkt);
	(void)hb_header(data, size, &len);
	(void)hb_parse_body(data, size, &pkt);

	if (size < HB_BODY_MIN || size > HB_BODY_MAX)
		return 0;
	memcpy(buf, HB_MAGIC, 4);
	buf[4] = HB_VERSION;
	buf[5] = HB_TYPE_HEARTBEAT;
	buf[6] = buf[7] = 0;
	buf[8] = size >> 8;
	buf[9] = size & 0xff;
	memcpy(buf + HB_HDR_LEN, data, size);
	crypto_auth_hmacsha512256(buf + HB_HDR_LEN + size, buf,
	    HB_HDR_LEN + size, key);
	len = HB_HDR_LEN + size + HB_TAG_LEN;
	e = hb_decode(buf, len, key, &pkt);
	e2 = hb_parse_body(data, size, &pkt2);
	if (e != e2)
		abort();
	if (e != HB_OK)
		return 0;
	if (pkt.incarnation == 0 || pkt.seq == 0 || pkt.time == 0)
		abort();
	n = hb_encode(&pkt, key, re, sizeof(re));
	if (n != len || memcmp(re, buf, len) != 0)
		abort();
	return 0;
}

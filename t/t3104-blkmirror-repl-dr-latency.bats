#!/usr/bin/env bats
# A slow DR link (50 ms each way, a rate limit) does not slow the primary:
# a never waits for c.

load lib/common
load lib/cluster

setup() {
	cl_init 256M
}

teardown() {
	stop_all_daemons
}

wan() { echo "$*" | socat -t 2 - UNIX-CONNECT:"$C/wan.ctl"; }

# p50: median write completion latency (usec) of fio at QD1 through a
p50() {
	fio --name=lat --ioengine=nbd --uri="$(cl_uri a)" --rw=randwrite \
	    --bs=4k --iodepth=1 --size=128M --runtime=2 --time_based \
	    --output-format=json 2>/dev/null | python3 -c '
import json, sys
t = sys.stdin.read()
j = json.loads(t[t.index("{"):])["jobs"][0]["write"]["clat_ns"]["percentile"]
print(int(j["50.000000"] / 1000))'
}

median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

@test "a slow link to c leaves a's write latency within 10%" {
	wport=$(free_port)
	start_daemon wan wanproxy -c "$C/wan.ctl" 127.0.0.1:"$wport" \
	    127.0.0.1:"$PORT_c"
	CL_ADDR_c=127.0.0.1:$wport cl_up -Q 256M
	fast=() slow=()
	for i in 1 2 3; do
		wan delay 0 >/dev/null
		wan rate 0 >/dev/null
		fast+=("$(p50)")
		wan delay 50ms >/dev/null
		wan rate 4M >/dev/null
		slow+=("$(p50)")
	done
	f=$(median3 "${fast[@]}")
	s=$(median3 "${slow[@]}")
	echo "p50 write latency: fast DR link ${fast[*]} (median $f us)," \
	    "slow ${slow[*]} (median $s us)" >&3
	# c was being fed over the slow link, and never dropped
	[ "$(cl_status a peer.c.state)" = uptodate ]
	[ "$(cl_status a peer.c.overflows)" = 0 ]
	[ "$(cl_status a peer.c.lag_bytes)" -gt 0 ]
	# within 10%, or less than 50 us apart (noise on a busy machine);
	# waiting for c would add 100 ms
	[ $((s * 10)) -le $((f * 11)) ] || [ $((s - f)) -lt 50 ]
}

#!/usr/bin/env bats
# Replication on three loopback nodes: a and b synchronous, c asynchronous.
# Writes through a are on b when acknowledged and on c once an epoch ends.

load lib/common
load lib/cluster

setup() {
	cl_init 64M
}

teardown() {
	stop_all_daemons
}

@test "fio with verify through a: a and b identical, c once drained" {
	cl_up
	run -0 fio --name=w --ioengine=nbd --uri="$(cl_uri a)" --rw=randwrite \
	    --bs=4k --size=16M --iodepth=16 --verify=crc32c --do_verify=1 \
	    --randseed=7 --fsync=64 --output=/dev/null
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
	run -0 qemu-io -f raw -c flush "$(cl_uri a)"
	cl_wait a peer.c.lag_bytes 0 30
	[ "$(cl_sum a)" = "$(cl_sum c)" ]
	run -0 cl_status a peer.b.oos_bytes
	[ "$output" = 0 ]
	[ "$(cl_status c epochs_applied)" -gt 1 ]
	cl_stop a
	# a's SIGTERM is a clean close for b and c, not a truncated stream
	for n in b c; do
		wait_for 5 grep -Eqx "blkmirror: peer a: disconnected: peer closed the connection without a final message \(peer 127\.0\.0\.1:[0-9]+\)" \
		    "$BATS_TEST_TMPDIR/bm$n.err" || return 1
		! grep -q "stream truncated" "$BATS_TEST_TMPDIR/bm$n.err" || return 1
	done
	cl_stop b
	cl_stop c
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
}

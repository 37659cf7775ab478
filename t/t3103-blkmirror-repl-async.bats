#!/usr/bin/env bats
# The DR node c: it holds whole epochs only, even when killed and
# restarted; a full queue switches it to bitmap tracking, not slowing a.

load lib/common
load lib/cluster

setup() {
	cl_init 64M
}

teardown() {
	stop_all_daemons
}

@test "c killed at a random moment holds a prefix of the epochs" {
	cl_up
	start_bg ep python3 "$BATS_TEST_DIRNAME/lib/nbdseq.py" epochs \
	    "$C/a/nbd.sock" - 64
	wait_for 20 eval '[ "$(cl_status c epochs_applied)" -gt 20 ]'
	start_bg ev blkmirror ctl "$C/a/ctl.sock" events
	wait_line ev ' a state role=primary '
	sleep "0.$((RANDOM % 10))"
	cl_kill c
	kill_daemon ep TERM || true
	cl_start c
	run -0 python3 "$BATS_TEST_DIRNAME/lib/nbdseq.py" prefix \
	    "$C/c/disk" - 64
	[[ "$output" =~ ^epoch\ [0-9]+$ ]]
	echo "$output"
	cl_wait a peer.c.state needs-resync
	wait_line ev ' a peer-disconnect peer=c reason="'
	wait_line ev ' a generation peer=c gi_current=[0-9a-f]{16} bitmap_gi=1234567890abcdef '
	wait_line ev ' a verdict peer=c verdict=source state=needs-resync '
	[ "$(cl_status a peer.c.oos_bytes)" -gt 0 ]
}

@test "a full queue to c switches it to bitmap tracking" {
	wport=$(free_port)
	start_daemon wan wanproxy -D 50ms -r 100k 127.0.0.1:"$wport" \
	    127.0.0.1:"$PORT_c"
	CL_ADDR_c=127.0.0.1:$wport cl_up -Q 1M
	run -0 timeout 20 qemu-io -f raw -c 'write -P 9 0 8M' -c flush \
	    "$(cl_uri a)"
	# behind until c is back (a reconnect at once): then needs-resync
	wait_for 10 eval '[ "$(cl_status a peer.c.overflows)" -ge 1 ]'
	[[ "$(cl_status a peer.c.state)" =~ ^(behind|connecting|handshake|needs-resync)$ ]]
	grep -q "peer c: queue over 1048576 bytes; tracking its blocks in the bitmap" \
	    "$BATS_TEST_TMPDIR/bma.err"
	[ "$(cl_status a peer.c.oos_bytes)" -gt 0 ]
	[ "$(cl_status a peer.b.oos_bytes)" = 0 ]
	[ "$(cl_status a peer.c.last_error)" = "queue overflow" ]
	cl_stop a
	cl_stop b
	cmp "$C/a/disk" "$C/b/disk"
}

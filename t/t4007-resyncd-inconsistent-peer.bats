#!/usr/bin/env bats
# A node whose data becomes inconsistent after its HELLO (a resync into
# it from another node began) says so in a STATE message: a primary that
# counted it up to date becomes its sync source, as in DRBD when a peer's
# disk turns Inconsistent.  A secondary leaves it to the node resyncing
# it, until that one goes away: then the resync goes on from the
# secondary.

load lib/common
load lib/cluster
load lib/resync

setup() {
	cl_init 64M
	cl_up
	run -0 qemu-io -f raw -c "write -P 5 8M 4M" -c flush "$(cl_uri a)"
	cl_wait a peer.c.lag_bytes 0
	# a power loss of all three, a primary; c's copy of a hot extent
	# changed meanwhile (a torn write a never acknowledged)
	cl_kill a
	cl_kill b
	cl_kill c
	for o in 2300 2400 2500; do
		dd if=/dev/urandom of="$C/c/disk" bs=4k seek=$o count=1 \
		    conv=notrunc status=none
	done
	# b and c meet first (b through a proxy that can cut their link):
	# same generation, both consistent
	wport=$(free_port)
	start_daemon wan wanproxy -c "$C/wan.ctl" 127.0.0.1:"$wport" \
	    127.0.0.1:"$PORT_c"
	CL_ADDR_c=127.0.0.1:$wport cl_start b
	cl_start c
	cl_wait b peer.c.state uptodate
	cl_wait c peer.b.state uptodate
	# a crashed as primary: its activity log goes to b and c, whose
	# data is inconsistent from then on
	cl_start a
	cl_wait b peer.a.resync target
	cl_wait c peer.a.resync target
	[ "$(cl_status c disk)" = inconsistent ]
}

teardown() {
	stop_all_daemons
}

# b's own resync from a ends; c's does not
b_in_sync() {
	run -0 resyncd sync -c "$C/a/ctl.sock" b
	cl_wait b peer.a.state uptodate
	[ "$(cl_status b disk)" = uptodate ]
	[ "$(cl_status c disk)" = inconsistent ]
	[ "$(cl_status c peer.a.resync)" = target ]
}

@test "b promoted while c's resync from a is unfinished: b becomes c's source" {
	b_in_sync
	[ "$(cl_status b peer.c.state)" = uptodate ]
	run -0 cl_ctl b primary
	cl_wait b peer.c.resync source
	cl_wait c peer.b.resync target
	grep -q "peer c: its data is inconsistent: this node becomes its sync source" \
	    "$BATS_TEST_TMPDIR/bmb.err"
	# b writes, and a (c's first source) goes away
	run -0 qemu-io -f raw -c "write -P 9 20M 1M" -c flush "$(cl_uri b)"
	cl_stop a
	[ "$(cl_status c disk)" = inconsistent ]
	# what c lacks, the torn blocks included, comes from b
	run -0 resyncd sync -c "$C/b/ctl.sock" c
	cl_wait b peer.c.state uptodate
	cl_wait c undo none
	[ "$(cl_status c disk)" = uptodate ]
	cl_stop c
	cl_stop b
	[ "$(cl_sum b)" = "$(cl_sum c)" ]
}

@test "c's resync source goes away: c's resync goes on from b, a secondary" {
	b_in_sync
	cl_stop a
	cl_wait b peer.c.resync source
	cl_wait c peer.b.resync target
	grep -q "peer b: the resync source is gone: comparing again to go on from this peer" \
	    "$BATS_TEST_TMPDIR/bmc.err"
	[ "$(cl_status c disk)" = inconsistent ]
	run -0 resyncd sync -c "$C/b/ctl.sock" c
	cl_wait c peer.b.state uptodate
	cl_wait c undo none
	[ "$(cl_status c disk)" = uptodate ]
	cl_stop c
	cl_stop b
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
	[ "$(cl_sum b)" = "$(cl_sum c)" ]
}

@test "a secondary connected to the primary leaves c to the primary resyncing it" {
	run -0 cl_ctl a primary
	cl_wait b peer.a.role primary
	b_in_sync
	[ "$(cl_status a peer.c.resync)" = source ]
	run -0 resyncd sync -c "$C/a/ctl.sock" c
	cl_wait c peer.a.state uptodate
	cl_wait c undo none
	[ "$(cl_status b peer.c.state)" = uptodate ]
	[ "$(cl_status b peer.c.connected)" = 1 ]
	! grep -q "sync source" "$BATS_TEST_TMPDIR/bmb.err"
	cl_stop c
	cl_stop a
	cl_stop b
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
	[ "$(cl_sum a)" = "$(cl_sum c)" ]
}

@test "b promoted while cut off from c in its resync: c still gets what it lacked from a" {
	b_in_sync
	wan cut
	wan reset
	cl_wait b peer.c.connected 0
	cl_wait c peer.b.connected 0
	# b takes over and writes without c: a new generation, c's bitmap
	# from the old one
	run -0 cl_ctl b primary
	run -0 qemu-io -f raw -c "write -P 9 20M 1M" -c flush "$(cl_uri b)"
	[ "$(cl_status b peer.c.bitmap_gi)" = 1234567890abcdef ]
	cl_stop a
	wan restore
	cl_wait b peer.c.resync source
	grep -q "peer c: connected: source (we moved on since we lost the peer)" \
	    "$BATS_TEST_TMPDIR/bmb.err"
	# c's bitmap for b holds what a's resync had still to move: the
	# torn blocks come from b as well
	run -0 resyncd sync -c "$C/b/ctl.sock" c
	cl_wait b peer.c.state uptodate
	cl_wait c undo none
	[ "$(cl_status c disk)" = uptodate ]
	cl_stop c
	cl_stop b
	[ "$(cl_sum b)" = "$(cl_sum c)" ]
}

#!/usr/bin/env bats
# Recovery case 1, a node outage: b dies while fio writes through a, comes
# back, and resyncd on a brings it back in line in the background, moving
# only what changed, while the application keeps writing.

load lib/common
load lib/cluster
load lib/resync

setup() {
	cl_init 64M
}

teardown() {
	stop_all_daemons
}

@test "b killed and restarted: resynced while fio writes, images equal" {
	cl_up
	start_daemon rsa resyncd -c "$C/a/ctl.sock"
	fio_bg fio1 a 6
	sleep 1
	cl_kill b
	cl_wait a peer.b.connected 0
	# a keeps serving alone with c; what b misses goes to its bitmap
	wait_for 10 eval '[ "$(cl_status a peer.b.oos_bytes)" -gt 1000000 ]'
	cl_start b
	cl_wait a peer.b.state uptodate 30
	run -0 cl_status b disk
	[ "$output" = uptodate ]
	wait_bg fio1
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
	# only what changed moved, not the whole disk
	sent=$(cl_status a peer.b.resync_sent_bytes)
	[ "$sent" -gt 0 ]
	[ "$sent" -lt $((32 << 20)) ]
	run -0 qemu-io -f raw -c flush "$(cl_uri a)"
	cl_wait a peer.c.lag_bytes 0 30
	cl_ctl a status > /tmp/rt/a.st; cl_ctl c status > /tmp/rt/c.st; cl_ctl b status > /tmp/rt/b.st
	cp $C/*.err /tmp/rt/ ; cmp -l $C/a/disk $C/c/disk | head -5 > /tmp/rt/cmp || true
	[ "$(cl_sum a)" = "$(cl_sum c)" ]
}

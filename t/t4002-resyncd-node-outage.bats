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
	start_daemon rsa resyncd -v -c "$C/a/ctl.sock"
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
	# the dynamic rate measured the application's latency without the
	# resync before it sent a block, and went by it
	run -0 grep "peer b: the application's write p99 without resync: [0-9]* us$" "$BATS_TEST_TMPDIR/rsa.err"
	run -0 grep -E "peer b: the application's write p99 [0-9]+ us \([0-9]+ without\): rate [0-9.]+ [KMG]iB/s$" "$BATS_TEST_TMPDIR/rsa.err"
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
	# only what changed moved, not the whole disk
	sent=$(cl_status a peer.b.resync_sent_bytes)
	[ "$sent" -gt 0 ]
	[ "$sent" -lt $((32 << 20)) ]
	run -0 qemu-io -f raw -c flush "$(cl_uri a)"
	cl_wait a peer.c.lag_bytes 0 30
	[ "$(cl_sum a)" = "$(cl_sum c)" ]
}

@test "b down while both change roles: a (now secondary) resyncs b, then b takes over" {
	cl_up
	cl_kill b
	cl_wait a peer.b.connected 0
	fio_bg fio1 a 3
	wait_bg fio1
	# the survivor steps down; the returning node may not take over
	# before it has the data: not as soon as it knows it is behind...
	run -0 cl_ctl a secondary
	cl_start b
	cl_wait b peer.a.connected 1
	run -1 --separate-stderr cl_ctl b primary
	[ "$stderr" = "this node's data is behind a's (a resync target not yet in sync); primary --force overrides" ]
	# ...nor with its data marked inconsistent, once the bitmaps are in
	cl_wait b peer.a.resync target
	run -0 cl_status b disk
	[ "$output" = inconsistent ]
	start_daemon rsa resyncd -c "$C/a/ctl.sock"
	cl_wait a peer.b.state uptodate 30
	cl_wait b disk uptodate
	run -0 cl_ctl b primary
	cl_wait a peer.b.role primary
	fio_bg fio2 b 3
	wait_bg fio2
	cl_stop a
	cl_stop b
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
}

@test "a and b both killed, a back first, b later: a is the source" {
	cl_up
	# b goes first; a goes on and tracks what b misses
	cl_kill b
	cl_wait a peer.b.connected 0
	fio_bg fio0 a 2
	wait_bg fio0
	cl_kill a
	cl_kill c
	cl_start a
	cl_start c
	start_daemon rsa resyncd -c "$C/a/ctl.sock"
	# a crashed as primary: c gets a's hot extents again
	cl_wait a peer.c.state uptodate
	grep -q "peer c: connected: source (same generation; this node crashed as primary)" "$BATS_TEST_TMPDIR/bma.err"
	# a takes the role again, with c for quorum
	run -0 cl_ctl a primary
	fio_bg fio1 a 5
	cl_start b
	cl_wait a peer.b.state uptodate 30
	run -0 cl_status b disk
	[ "$output" = uptodate ]
	wait_bg fio1
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
	grep -q "resync source" "$BATS_TEST_TMPDIR/bma.err"
	grep -q "resync target" "$BATS_TEST_TMPDIR/bmb.err"
}

@test "a new, empty node gets a full sync; resyncd sync shows progress" {
	cl_up
	dirty a 8
	cl_kill b
	rm -f "$C/b/disk"
	truncate -s 64M "$C/b/disk"
	run -0 blkmirror init -E -f -m "$C/b/meta" -n b "$C/b/disk"
	cl_start b
	cl_wait a peer.b.resync source
	run -0 cl_status a peer.b.peer_empty
	[ "$output" = 1 ]
	run -0 resyncd sync -c "$C/a/ctl.sock" b
	[[ "${lines[-1]}" =~ \ a\ resync-done\ peer=b\ .*percent=100 ]]
	cl_wait a peer.b.state uptodate
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
}

@test "an old copy is brought back by hashes: only what differs moves" {
	cl_up
	dirty a 8
	run -0 qemu-io -f raw -c flush "$(cl_uri a)"
	cl_kill b
	cl_wait a peer.b.connected 0
	# b's metadata is lost; its data is an older copy of a's
	run -0 blkmirror init -E -f -m "$C/b/meta" -n b "$C/b/disk"
	run -0 qemu-io -f raw -c "write -P 0x5a 1M 1M" "$(cl_uri a)"
	cl_start b
	cl_wait a peer.b.resync source
	run -0 resyncd sync -M csum -c "$C/a/ctl.sock" b
	cl_wait a peer.b.state uptodate
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
	sent=$(cl_status a peer.b.resync_sent_bytes)
	echo "sent $sent bytes" >&3
	[ "$sent" -ge $((1 << 20)) ]
	[ "$sent" -lt $((4 << 20)) ]
}

@test "a light writer: the dynamic rate does not go unlimited between its writes" {
	cl_up
	b_behind 24
	# a write every 0.3 s or so, from before the resync to after
	start_bg lw sh -c 'i=0; while [ $i -lt 12 ]; do
		qemu-io -f raw -c "write -P 5 $((i * 4096)) 4k" "$1" >/dev/null
		i=$((i + 1)); sleep 0.3; done' sh "$(cl_uri a)"
	sleep 0.5
	start_daemon rsa resyncd -v -c "$C/a/ctl.sock"
	wait "$(cat "$BATS_TEST_TMPDIR/lw.pid")"
	n=$(wc -l <"$BATS_TEST_TMPDIR/rsa.err")
	cl_wait a peer.b.state uptodate 60
	head -n "$n" "$BATS_TEST_TMPDIR/rsa.err" >"$BATS_TEST_TMPDIR/during"
	cat "$BATS_TEST_TMPDIR/during"
	grep -q "peer b: resync starts" "$BATS_TEST_TMPDIR/during"
	run -1 grep "nobody writes" "$BATS_TEST_TMPDIR/during"
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
}

#!/usr/bin/env bats
# Recovery case 2, a replication-network outage, and resumed resyncs: the
# link between a and b goes down and comes back; a resync cut short by a
# kill -9 of resyncd or of the target continues where it stopped.

load lib/common
load lib/cluster
load lib/resync

setup() {
	cl_init 64M
}

teardown() {
	stop_all_daemons
}

@test "the link a-b is cut and restored: b is resynced by itself" {
	wport=$(free_port)
	start_daemon wan wanproxy -c "$C/wan.ctl" 127.0.0.1:"$wport" \
	    127.0.0.1:"$PORT_b"
	CL_ADDR_b=127.0.0.1:$wport cl_up
	start_daemon rsa resyncd -c "$C/a/ctl.sock"
	fio_bg fio1 a 8
	sleep 1
	# a partition: nothing moves, then the connections die
	wan cut
	wan reset
	cl_wait a peer.b.connected 0
	cl_wait b peer.a.connected 0
	# a keeps quorum with c and goes on writing; b's blocks are tracked
	wait_for 10 eval '[ "$(cl_status a peer.b.oos_bytes)" -gt 1000000 ]'
	run -0 cl_status a suspended
	[ "$output" = 0 ]
	wan restore
	cl_wait a peer.b.state uptodate 30
	wait_bg fio1
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
	grep -q "resync source" "$BATS_TEST_TMPDIR/bma.err"
}

# progress NODE PEER: percent of the resync done, from NODE's status
progress() {
	local start oos
	start=$(cl_status "$1" "peer.$2.resync_start_bytes")
	oos=$(cl_status "$1" "peer.$2.oos_bytes")
	[ "${start:-0}" -gt 0 ] || { echo 0; return; }
	echo $(((start - oos) * 100 / start))
}

@test "kill -9 of resyncd, then of the target, mid-resync: resumed, not restarted" {
	cl_up
	b_behind 40
	dirty=$(cl_status a peer.b.oos_bytes)
	echo "dirty: $dirty bytes" >&3
	[ "$dirty" -gt $((8 << 20)) ]
	# slow enough to be caught in the middle, while fio writes on a
	fio_bg fio1 a 6
	start_daemon rsa resyncd -R 4M -c "$C/a/ctl.sock"
	wait_for 20 eval '[ "$(progress a b)" -ge 25 ]'
	kill_daemon rsa KILL || true
	p1=$(progress a b)
	echo "resyncd killed at $p1%" >&3
	start_daemon rsa resyncd -R 4M -c "$C/a/ctl.sock"
	wait_for 20 eval '[ "$(progress a b)" -ge 60 ]'
	# the resync goes on from where it stopped, not from 0
	[ "$(progress a b)" -ge "$p1" ]
	w0=$(cl_status a written_bytes)
	cl_kill b
	cl_wait a peer.b.connected 0
	left=$(cl_status a peer.b.oos_bytes)
	echo "target killed with $left bytes left" >&3
	[ "$left" -lt $((dirty / 2)) ]
	cl_start b
	cl_wait a peer.b.resync source
	# what fio wrote while b was down is dirty too (at most)
	new=$(( $(cl_status a written_bytes) - w0 ))
	cl_wait a peer.b.state uptodate 30
	wait_bg fio1
	sent=$(cl_status a peer.b.resync_sent_bytes)
	echo "sent $sent bytes in all for $dirty dirty, and $new written" \
	    "while b was down" >&3
	# no more than the dirty data and one batch: what the target had
	# not yet made durable (at most 8 MiB acknowledged, see RS_UNFL_MAX)
	# and what was in flight; starting over would have sent more than
	# half the dirty data again
	[ "$sent" -le $((dirty + new + (9 << 20))) ]
	run -0 qemu-io -f raw -c flush "$(cl_uri a)"
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
}

@test "a fixed rate is kept; a terminal gets a progress bar" {
	cl_up
	b_behind 8
	run -0 resyncd sync -R 2M -c "$C/a/ctl.sock" b
	last=${lines[-1]}
	echo "$last" >&3
	[[ "$last" =~ resync-done\ peer=b\ done_bytes=([0-9]+)\ .*\ rate=([0-9]+) ]]
	[ "${BASH_REMATCH[1]}" -gt $((6 << 20)) ]
	# 2 MiB/s and a 1 MiB burst at most
	[ "${BASH_REMATCH[2]}" -le $((5 << 19)) ]
	# a terminal: a bar that ends at 100%
	b_behind 2
	run -0 script -qec "resyncd sync -R 1M -c '$C/a/ctl.sock' b" /dev/null
	[[ "$output" =~ resync\ a\ b\ \[#+\.*\]\ +[0-9]+%\ .*ETA ]]
	[[ "$output" =~ \[##############################\]\ 100% ]]
	cl_wait a peer.b.state uptodate
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
}

@test "a silent link (a partition, no reset) is dropped after -D" {
	wport=$(free_port)
	start_daemon wan wanproxy -c "$C/wan.ctl" 127.0.0.1:"$wport" \
	    127.0.0.1:"$PORT_b"
	CL_ADDR_b=127.0.0.1:$wport cl_up -D 2s
	# idle links stay up: pings keep them alive
	sleep 3
	[ "$(cl_status a peer.b.connected)" = 1 ]
	wan cut
	cl_wait a peer.b.connected 0 10
	cl_wait b peer.a.connected 0 10
	[[ "$(cl_status a peer.b.last_error)" =~ ^nothing\ from\ the\ peer\ for\ .*:\ link\ dead$ ]]
	# with the primary gone from b's view, c still sees a: b is vetoed
	run -1 --separate-stderr cl_ctl b primary
	[ "$stderr" = "vetoed by c (connected to a primary)" ]
	run -0 qemu-io -f raw -c "write -P 3 0 64k" "$(cl_uri a)"
	wan restore
	start_daemon rsa resyncd -c "$C/a/ctl.sock"
	cl_wait a peer.b.state uptodate 30
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
	run -100 --separate-stderr blkmirror -D 1s -c x -l y -m z -n a d
	[ "$stderr" = "blkmirror: -D 1s: less than 2s" ]
}

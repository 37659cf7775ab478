#!/usr/bin/env bats
# Probes of failover sequences: a node started with -p must not
# act as a second primary next to another one.

load lib/common
load lib/cluster

setup() {
	cl_init 64M
}

teardown() {
	stop_all_daemons
}

@test "old a restarted with -p while b is primary acknowledges no write" {
	cl_up
	run -0 qemu-io -f raw -c 'write -P 1 0 1M' "$(cl_uri a)"
	cl_kill a
	cl_wait b peer.a.connected 0
	cl_wait c peer.a.connected 0
	wait_for 5 cl_ctl b primary
	run -0 qemu-io -f raw -c 'write -P 2 0 512k' "$(cl_uri b)"
	# an rc script that starts the preferred primary as it always does
	cl_start a -p
	cl_wait a peer.b.connected 1
	cl_wait a peer.b.state sync-target
	# b is primary and has data a lacks: a must not take writes now
	run timeout 5 qemu-io -f raw -c 'write -P 3 2M 4k' "$(cl_uri a)"
	echo "$output"
	[ "$status" -ne 0 ]
	run -0 qemu-io -f raw -c 'read -P 2 0 512k' -c 'read -P 1 512k 512k' \
	    "$(cl_uri b)"
}

@test "a and b both started with -p: not both acknowledge writes, no silent divergence" {
	cl_start a -p
	cl_start b -p
	cl_start c
	cl_wait a peer.b.connected 1
	cl_wait b peer.a.connected 1
	cl_wait a peer.c.connected 1
	cl_wait b peer.c.connected 1
	run timeout 5 qemu-io -f raw -c 'write -P 1 0 64k' "$(cl_uri a)"
	sa=$status
	run timeout 5 qemu-io -f raw -c 'write -P 2 0 64k' "$(cl_uri b)"
	sb=$status
	echo "a: $sa b: $sb"
	[ "$sa" -ne 0 ] || [ "$sb" -ne 0 ]
	# nodes that call each other up to date hold the same image
	if [ "$(cl_status a peer.b.state)" = uptodate ] &&
	    [ "$(cl_status b peer.a.state)" = uptodate ]; then
		cl_stop a
		cl_stop b
		[ "$(cl_sum a)" = "$(cl_sum b)" ]
	fi
}

@test "a crashed under fio, b promoted, a back as secondary: b, the primary, is the source" {
	cl_up
	start_bg fio fio --name=w --ioengine=nbd --uri="$(cl_uri a)" \
	    --rw=randwrite --bs=64k --size=60M --iodepth=32 --time_based \
	    --runtime=30 --output=/dev/null
	wait_for 10 eval '[ "$(cl_status a written_bytes)" -gt 8000000 ]'
	cl_kill a
	kill_daemon fio
	cl_wait b peer.a.connected 0
	cl_wait c peer.a.connected 0
	wait_for 5 cl_ctl b primary
	# b's clients see this image (a file system is checked and mounted)
	before=$(cl_sum b)
	cl_start a
	cl_wait a peer.b.connected 1
	# b primary: never the target of a resync that would change the
	# image under its clients; a's writes it never acknowledged go
	cl_wait b peer.a.resync source
	cl_wait a peer.b.resync target
	run -0 timeout 60 resyncd sync -c "$C/b/ctl.sock" a
	cl_wait a peer.b.state uptodate
	[ "$(cl_status b role)" = primary ]
	[ "$(cl_sum b)" = "$before" ]
	cl_stop a
	[ "$(cl_sum a)" = "$before" ]
}

@test "a write held by a -p start fails when a peer vetoes it: never acknowledged, never on a's disk" {
	cl_up
	run -0 qemu-io -f raw -c 'write -P 1 0 1M' "$(cl_uri a)"
	cl_kill a
	cl_wait b peer.a.connected 0
	wait_for 5 cl_ctl b primary
	# b and c stopped a while: a's start finds no quorum and holds I/O
	kill -STOP "$(cat "$BATS_TEST_TMPDIR/bmb.pid")" "$(cat "$BATS_TEST_TMPDIR/bmc.pid")"
	cl_start a -p
	start_bg w qemu-io -f raw -c 'write -P 7 4M 64k' "$(cl_uri a)"
	cl_wait a suspended 1
	kill -CONT "$(cat "$BATS_TEST_TMPDIR/bmb.pid")" "$(cat "$BATS_TEST_TMPDIR/bmc.pid")"
	cl_wait a role secondary
	# qemu-io reports the failed write, then exits 0
	wait "$(cat "$BATS_TEST_TMPDIR/w.pid")" || :
	cat "$BATS_TEST_TMPDIR/w.out" "$BATS_TEST_TMPDIR/w.err"
	grep -q "write failed: Input/output error" "$BATS_TEST_TMPDIR/w.out" \
	    "$BATS_TEST_TMPDIR/w.err"
	grep -q "started as primary, but peer [bc] is" "$BATS_TEST_TMPDIR/bma.err"
	# not on a's disk, and a is no source for b, the primary
	[ "$(cl_status a writes)" = 0 ]
	cmp -n 65536 <(dd if="$C/a/disk" bs=64k skip=64 count=1 status=none) /dev/zero
	[ "$(cl_status b role)" = primary ]
	[ "$(cl_status b peer.a.resync)" != target ]
}

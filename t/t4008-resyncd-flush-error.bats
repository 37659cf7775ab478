#!/usr/bin/env bats
# A resync whose target cannot make its blocks durable: b's store is a
# loop device over a file on a tmpfs too small for what the resync
# writes, so that the write-back of the resync's blocks fails (ENOSPC in
# the loop device, EIO to b's RS_FLUSH).  The blocks that flush covered
# must move again: a later flush would succeed without them (the kernel
# reports a write-back error once) and b would be "in sync" with holes.
# And an error that b's resync flush took from the kernel must still
# fail the application's next FLUSH, replicated to b.

load lib/common
load lib/cluster
load lib/resync

setup() {
	[ "$(id -u)" = 0 ] || skip "needs root (tmpfs, loop device)"
	cl_init 64M
	mkdir "$C/b/tmpfs"
	mount -t tmpfs -o size=4m tmpfs "$C/b/tmpfs"
	rm "$C/b/disk"
	truncate -s 64M "$C/b/tmpfs/disk"
	LOOP=$(losetup -f --show "$C/b/tmpfs/disk")
	ln -s "$LOOP" "$C/b/disk"
}

teardown() {
	stop_all_daemons
	[ -z "${LOOP:-}" ] || losetup -d "$LOOP" || :
	! mountpoint -q "$C/b/tmpfs" || umount "$C/b/tmpfs"
}

@test "a resync flush that fails on the target: its blocks move again" {
	cl_up
	b_behind 8
	dirty=$(cl_status a peer.b.oos_bytes)
	[ "$dirty" -gt $((6 << 20)) ]
	start_bg rs resyncd sync -c "$C/a/ctl.sock" b
	wait_for 30 grep -q \
	    "resync flush: .*; its [0-9]* ranges are out of sync again" \
	    "$BATS_TEST_TMPDIR/bma.err"
	# room again: the next flushes succeed
	mount -o remount,size=128m "$C/b/tmpfs"
	wait_bg rs
	cl_wait a peer.b.state uptodate 30
	sent=$(cl_status a peer.b.resync_sent_bytes)
	# b's write-back errors reach the application's next FLUSH once
	# (b cannot tell whose blocks they were), then b is clean again
	run -0 python3 "$BATS_TEST_DIRNAME/lib/nbdraw.py" "$C/a/nbd.sock" flush
	[ "$output" = "flush reply 5" ]
	run -0 python3 "$BATS_TEST_DIRNAME/lib/nbdraw.py" "$C/a/nbd.sock" flush
	[ "$output" = "flush reply 0" ]
	# what reached b's storage, not its page cache, is a's data
	cl_stop b
	blockdev --flushbufs "$LOOP"
	[ "$(md5sum <"$C/b/tmpfs/disk" | cut -d' ' -f1)" = "$(cl_sum a)" ]
	# more than the dirty data moved: what the failed flush covered
	[ "$sent" -gt "$dirty" ]
}

@test "a write-back error that a resync flush took still fails the next FLUSH" {
	cl_up
	# 1 MiB on b's tmpfs, durable; then the tmpfs is full
	run -0 qemu-io -f raw -c "write -P 0x11 0 1M" -c flush "$(cl_uri a)"
	dd if=/dev/zero of="$C/b/tmpfs/filler" bs=4k 2>/dev/null || :
	# a write (no FLUSH) whose write-back on b needs room: it fails, told
	# to sync(1)'s own descriptor, not yet to b's
	run -0 python3 "$BATS_TEST_DIRNAME/lib/nbdraw.py" "$C/a/nbd.sock" \
	    write-noflush $((32 << 20))
	[ "$output" = "write reply 0" ]
	run -1 sync "$LOOP"
	# a block of a changed behind its back, where b has room: verify -f
	# moves it, and b's RS_FLUSH takes the write's error from the kernel
	printf changed | dd of="$C/a/disk" bs=1 seek=8192 conv=notrunc \
	    2>/dev/null
	run -0 resyncd verify -f -c "$C/a/ctl.sock" b
	grep -q "ranges are out of sync again" "$BATS_TEST_TMPDIR/bma.err"
	# the application's FLUSH, replicated to b, must not say durable
	run -0 python3 "$BATS_TEST_DIRNAME/lib/nbdraw.py" "$C/a/nbd.sock" flush
	[ "$output" = "flush reply 5" ]
}

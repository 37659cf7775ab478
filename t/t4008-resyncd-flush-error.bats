#!/usr/bin/env bats
# A resync whose target cannot make its blocks durable: b's store is a
# loop device over a file on a tmpfs too small for what the resync
# writes, so that the write-back of the resync's blocks fails (ENOSPC in
# the loop device, EIO to b's RS_FLUSH).  The blocks that flush covered
# must move again: a later flush would succeed without them (the kernel
# reports a write-back error once) and b would be "in sync" with holes.

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
	wait_for 30 grep -q "resync flush: .*; its [0-9]* ranges are out of sync again" \
	    "$BATS_TEST_TMPDIR/bma.err"
	# room again: the next flushes succeed
	mount -o remount,size=128m "$C/b/tmpfs"
	wait_bg rs
	cl_wait a peer.b.state uptodate 30
	sent=$(cl_status a peer.b.resync_sent_bytes)
	# what reached b's storage, not its page cache, is a's data
	run -0 qemu-io -f raw -c flush "$(cl_uri a)"
	cl_stop b
	blockdev --flushbufs "$LOOP"
	[ "$(md5sum <"$C/b/tmpfs/disk" | cut -d' ' -f1)" = "$(cl_sum a)" ]
	# more than the dirty data moved: what the failed flush covered
	[ "$sent" -gt "$dirty" ]
}

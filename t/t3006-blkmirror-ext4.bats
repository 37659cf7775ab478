#!/usr/bin/env bats
# A file system on blkmirror: nbdfuse -> losetup -> mkfs.ext4 -> mount,
# files written, everything torn down, blkmirror restarted, mounted again.

load lib/common
load lib/blk

setup() {
	[ "$(id -u)" = 0 ] || skip "needs root (loop devices, mount)"
	blk_init 128M
	mkdir "$D/fuse" "$D/mnt"
	LOOP=
}

teardown() {
	if mountpoint -q "$D/mnt" 2>/dev/null; then umount "$D/mnt"; fi
	if [ -n "$LOOP" ]; then losetup -d "$LOOP" 2>/dev/null || :; fi
	if mountpoint -q "$D/fuse" 2>/dev/null; then fusermount3 -u "$D/fuse"; fi
	stop_all_daemons
}

# attach: nbdfuse exposes the export as $D/fuse/nbd, a loop device on it.
attach() {
	rm -f "$D/fuse.pid.ready"
	start_bg fuse nbdfuse -P "$D/fuse.pid.ready" "$D/fuse" "$(blk_uri)"
	wait_file fuse "$D/fuse.pid.ready" 10
	wait_for 10 test -e "$D/fuse/nbd"
	LOOP=$(losetup -f --show "$D/fuse/nbd")
}

detach() {
	losetup -d "$LOOP"
	LOOP=
	fusermount3 -u "$D/fuse"
	wait_for 10 sh -c "! mountpoint -q '$D/fuse'"
	kill_daemon fuse || :
}

@test "ext4 through nbdfuse and a loop device survives a restart" {
	blk_start
	attach
	mkfs.ext4 -q -F "$LOOP"
	mount "$LOOP" "$D/mnt"
	head -c 5M /dev/urandom >"$D/mnt/big"
	for i in $(seq 50); do echo "file $i" >"$D/mnt/f$i"; done
	mkdir "$D/mnt/dir" && cp "$D/mnt/big" "$D/mnt/dir/copy"
	(cd "$D/mnt" && sha256sum big f* dir/copy) >"$D/sums"
	umount "$D/mnt"
	detach
	stop_daemon bm
	[ "$(blk_dump_key clean)" = 1 ]
	blk_start
	attach
	run -0 fsck.ext4 -n "$LOOP"
	mount "$LOOP" "$D/mnt"
	(cd "$D/mnt" && sha256sum -c --quiet "$D/sums")
	[ "$(cat "$D/mnt/f17")" = "file 17" ]
	umount "$D/mnt"
	detach
	stop_daemon bm
}

@test "a block device as the backing store" {
	truncate -s 64M "$D/bdev.img"
	BLOOP=$(losetup -f --show "$D/bdev.img")
	LOOP=$BLOOP	# teardown detaches it
	run -100 blkmirror init -m "$D/bmeta" -n a "$BLOOP" 65M
	[ "$output" = "blkmirror: $BLOOP: backing store has 67108864 bytes, fewer than 68157440" ]
	blkmirror init -m "$D/bmeta" -n a "$BLOOP"
	[ "$(blkmirror dump -m "$D/bmeta" | sed -n 's/^size=//p')" = 67108864 ]
	start_daemon bm blkmirror -p -m "$D/bmeta" -n a -c "$D/ctl.sock" \
	    -l "$D/nbd.sock" "$BLOOP"
	head -c 64M /dev/urandom >"$D/img"
	nbdcopy "$D/img" "$(blk_uri)"
	run -0 qemu-io -f raw -c 'write -z 1M 1M' -c 'discard 4M 1M' -c flush "$(blk_uri)"
	nbdcopy "$(blk_uri)" "$D/out"
	stop_daemon bm
	cmp "$D/out" "$BLOOP"
	cmp -n 1048576 "$D/img" "$D/out"
	cmp -n 1048576 -i 1048576:0 "$D/out" /dev/zero
}

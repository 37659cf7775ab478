#!/usr/bin/env bats
# blkmirror init and dump; metadata checks and the fallback to the older
# copy when the newer one is damaged.

load lib/common
load lib/blk

setup() {
	D=$BATS_TEST_TMPDIR
}

teardown() {
	stop_all_daemons
}

@test "init writes metadata that dump prints" {
	blk_init 64M
	run -0 --separate-stderr blkmirror dump -m "$D/meta"
	[ "$stderr" = "" ]
	[ "${lines[0]}" = "version=1" ]
	[ "${lines[1]}" = "node=a" ]
	[[ "$output" == *$'\nsize=67108864\n'* ]]
	[[ "$output" == *$'\nblock_size=4096\n'* ]]
	[[ "$output" == *$'\nblocks=16384\n'* ]]
	[[ "$output" == *$'\nclean=1\n'* ]]
	[[ "$output" == *$'\nconsistent=1\nuptodate=1\n'* ]]
	[[ "$output" == *$'\nal_extent_size=4194304\nal_limit=1237\nal_count=0\nal_extents=\n'* ]]
	[[ "$output" == *$'\ngi_history=0000000000000000,0000000000000000\n'* ]]
	[[ "$output" == *$'\npeer_slots=3'* ]]
	gi=$(blk_dump_key gi_current)
	[[ "$gi" =~ ^[0-9a-f]{16}$ ]] && [ "$gi" != 0000000000000000 ]
}

@test "init with a size and -a; a second init differs in its identifier" {
	truncate -s 64M "$D/disk"
	run -0 blkmirror init -a 64 -m "$D/meta" -n a "$D/disk" 32M
	[ "$(blk_dump_key size)" = 33554432 ]
	[ "$(blk_dump_key al_limit)" = 64 ]
	gi1=$(blk_dump_key gi_current)
	run -100 blkmirror init -m "$D/meta" -n a "$D/disk"
	[ "$output" = "blkmirror: $D/meta: exists; init -f replaces it" ]
	[ "$(blk_dump_key gi_current)" = "$gi1" ]
	run -0 blkmirror init -f -m "$D/meta" -n a "$D/disk"
	[ "$(blk_dump_key gi_current)" != "$gi1" ]
}

@test "init -f drops the journals of the metadata it replaces" {
	blk_init 64M
	echo stale >"$D/meta.journal"
	head -c 8192 /dev/urandom >"$D/meta.undo"
	run -100 blkmirror init -m "$D/meta" -n a "$D/disk"
	[ -s "$D/meta.undo" ]
	run -0 blkmirror init -f -m "$D/meta" -n a "$D/disk"
	[ ! -e "$D/meta.journal" ]
	[ ! -e "$D/meta.undo" ]
}

@test "init -f -J drops the DR journal the daemon is given with -J too" {
	blk_init 64M
	echo stale >"$D/meta.journal"
	echo stale >"$D/dr.journal"
	run -0 --separate-stderr blkmirror init -f -J "$D/dr.journal" \
	    -m "$D/meta" -n a "$D/disk"
	[ "$stderr" = "" ]
	[ ! -e "$D/dr.journal" ]
	[ ! -e "$D/meta.journal" ]
	# what it would remove is never the metadata, the store or a device
	gi=$(blk_dump_key gi_current)
	run -100 --separate-stderr blkmirror init -f -J "$D/meta" \
	    -m "$D/meta" -n a "$D/disk"
	[ "$stderr" = "blkmirror: -J $D/meta: is the metadata file" ]
	[ "$(blk_dump_key gi_current)" = "$gi" ]
	run -100 --separate-stderr blkmirror init -f -J "$D/disk" \
	    -m "$D/meta" -n a "$D/disk"
	[ "$stderr" = "blkmirror: -J $D/disk: is the backing store" ]
	[ "$(stat -c %s "$D/disk")" = 67108864 ]
	run -100 --separate-stderr blkmirror init -f -J /dev/null \
	    -m "$D/meta" -n a "$D/disk"
	[ "$stderr" = "blkmirror: -J /dev/null: not a regular file" ]
	[ -c /dev/null ]
	[ "$(blk_dump_key gi_current)" = "$gi" ]
}

@test "a damaged undo journal stops the start, named, and is kept" {
	blk_init 64M
	head -c 8192 /dev/urandom >"$D/meta.undo"
	sum=$(md5sum <"$D/meta.undo")
	run -111 --separate-stderr blkmirror -c "$D/ctl" -l "$D/sock" \
	    -m "$D/meta" -n a "$D/disk"
	[ "$stderr" = "blkmirror: $D/meta.undo: damaged: its header does not check but records follow it" ]
	[ "$(md5sum <"$D/meta.undo")" = "$sum" ]
}

@test "init refuses a size larger than the store, and bad usage" {
	truncate -s 16M "$D/disk"
	run -100 blkmirror init -m "$D/meta" -n a "$D/disk" 32M
	[ "$output" = "blkmirror: $D/disk: backing store has 16777216 bytes, fewer than 33554432" ]
	run -100 blkmirror init -m "$D/meta" "$D/disk"
	[[ "${lines[0]}" == "usage: blkmirror "* ]]
	run -100 blkmirror init -a 3 -m "$D/meta" -n a "$D/disk"
	[ "$output" = "blkmirror: -a 3: not in 16..6144" ]
	[ ! -e "$D/meta" ]
}

@test "the daemon refuses metadata of another node" {
	blk_init 64M
	run -100 --separate-stderr blkmirror -m "$D/meta" -n b -c "$D/c" \
	    -l "$D/n" "$D/disk"
	[ "$stderr" = "blkmirror: $D/meta: metadata of node a, not of node b" ]
	[ ! -e "$D/n" ]
}

@test "the daemon refuses a store smaller than the metadata says" {
	blk_init 64M
	truncate -s 32M "$D/disk"
	run -100 --separate-stderr blkmirror -m "$D/meta" -n a -c "$D/c" \
	    -l "$D/n" "$D/disk"
	[ "$stderr" = "blkmirror: backing store has 33554432 bytes, fewer than the 67108864 bytes of metadata $D/meta" ]
}

@test "an unknown metadata version is refused" {
	blk_init 64M
	# version field at offset 8 of both slots
	printf '\x07' | dd of="$D/meta" bs=1 seek=8 conv=notrunc status=none
	printf '\x07' | dd of="$D/meta" bs=1 seek=32776 conv=notrunc status=none
	run -111 --separate-stderr blkmirror dump -m "$D/meta"
	[ "$stderr" = "blkmirror: $D/meta: unsupported metadata version 7 (this blkmirror knows version 1)" ]
	run -111 --separate-stderr blkmirror -m "$D/meta" -n a -c "$D/c" \
	    -l "$D/n" "$D/disk"
	[ "$stderr" = "blkmirror: $D/meta: unsupported metadata version 7 (this blkmirror knows version 1)" ]
}

@test "not metadata at all, or both copies corrupt, is refused" {
	head -c 100000 /dev/urandom >"$D/meta"
	truncate -s 64M "$D/disk"
	run -111 --separate-stderr blkmirror dump -m "$D/meta"
	[ "$stderr" = "blkmirror: $D/meta: not blkmirror metadata, or both copies are corrupt (slot A: bad magic; slot B: bad magic)" ]
	blk_init 64M 2>/dev/null || blkmirror init -f -m "$D/meta" -n a "$D/disk"
	printf 'XX' | dd of="$D/meta" bs=1 seek=1000 conv=notrunc status=none
	printf 'XX' | dd of="$D/meta" bs=1 seek=33768 conv=notrunc status=none
	run -111 --separate-stderr blkmirror dump -m "$D/meta"
	[ "$stderr" = "blkmirror: $D/meta: not blkmirror metadata, or both copies are corrupt (slot A: checksum mismatch; slot B: checksum mismatch)" ]
}

@test "a corrupted newest copy falls back to the older one" {
	blk_init 64M
	blk_start
	stop_daemon bm
	# now: seq 4 (clean) in slot B, seq 3 in slot A
	[ "$(blk_dump_key seq)" = 4 ] && [ "$(blk_dump_key slot)" = B ]
	[ "$(blk_dump_key clean)" = 1 ]
	dd if=/dev/urandom of="$D/meta" bs=512 seek=66 count=4 conv=notrunc status=none
	run -0 --separate-stderr blkmirror dump -m "$D/meta"
	[ "$stderr" = "blkmirror: $D/meta: metadata slot B is corrupt (checksum mismatch); using slot A, sequence 3" ]
	[[ "$output" == *$'\nseq=3\nslot=A\n'* ]]
	[[ "$output" == *$'\nclean=0\n'* ]]
	# the daemon says so too, starts, and writes the good copy again
	blk_start
	grep -Fx "blkmirror: $D/meta: metadata slot B is corrupt (checksum mismatch); using slot A, sequence 3" "$D/bm.err"
	grep -Fx "blkmirror: $D/meta: not shut down cleanly; 0 activity log extents may differ from the peers" "$D/bm.err"
	stop_daemon bm
	run -0 --separate-stderr blkmirror dump -m "$D/meta"
	[ "$stderr" = "" ]
	[[ "$output" == *$'\nseq=5\nslot=A\n'* ]]
	[[ "$output" == *$'\nclean=1\n'* ]]
}

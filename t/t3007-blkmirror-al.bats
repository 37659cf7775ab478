#!/usr/bin/env bats
# The activity log: hot extents cost no metadata write, the log stays
# within its limit, long requests are split, and overlapping writes in
# flight are done in order.

load lib/common
load lib/blk

setup() {
	D=$BATS_TEST_TMPDIR
	truncate -s 256M "$D/disk"
	blkmirror init -a 16 -m "$D/meta" -n a "$D/disk"
}

teardown() {
	stop_all_daemons
}

status_key() {
	blkmirror ctl "$D/ctl.sock" status | sed -n "s/^$1=//p"
}

@test "writes to hot extents do not write metadata" {
	blk_start
	qemu-io -f raw -c 'write -P 1 0 64k' -c 'write -P 2 8M 64k' "$(blk_uri)" >/dev/null
	[ "$(status_key al_count)" = 2 ]
	c=$(status_key al_commits)
	[ "$c" -ge 1 ] && [ "$c" -le 2 ]
	run -0 fio --name=hot --ioengine=nbd --uri="$(blk_uri)" --rw=randwrite \
	    --bs=4k --iodepth=16 --size=64k --offset=8M --io_size=8M \
	    --output-format=terse
	[ "$(status_key al_commits)" = "$c" ]
	[ "$(status_key writes)" = 2050 ]
	stop_daemon bm
}

@test "the log keeps the 16 most recent extents" {
	blk_start
	for e in $(seq 0 19); do
		echo "-c"; echo "write -P $e $((e * 4))M 4k"
	done | xargs -d '\n' qemu-io -f raw "$(blk_uri)" >/dev/null
	[ "$(status_key al_count)" = 16 ]
	[ "$(status_key al_commits)" = 20 ]
	stop_daemon bm
	[ "$(blk_dump_key al_extents)" = 4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19 ]
}

@test "zeroing and trimming the whole disk are split into log-sized steps" {
	blk_start
	run -0 qemu-io -f raw -c 'write -P 0x77 0 256M' -c 'write -z 0 256M' \
	    -c 'read -P 0 0 256M' -c 'write -P 0x66 0 256M' \
	    -c 'discard 0 256M' "$(blk_uri)"
	[[ "$output" != *"failed"* ]]
	[ "$(status_key al_count)" = 16 ]
	[ "$(status_key errors)" = 0 ]
	stop_daemon bm
}

@test "overlapping writes in flight are done in order" {
	blk_start
	run -0 python3 "$BATS_TEST_DIRNAME/lib/nbdraw.py" "$D/nbd.sock" overlap
	[ "$output" = "overlap ok" ]
	stop_daemon bm
}

#!/usr/bin/env bats
# Stopping: SIGTERM finishes what is in flight and leaves clean metadata;
# kill -9 at any moment leaves metadata that the next start accepts, with
# the activity log telling which extents a resync must cover.

load lib/common
load lib/blk

setup() {
	blk_init 64M
}

teardown() {
	stop_all_daemons
}

# writes_at_least N: the daemon has answered N writes.
writes_at_least() {
	local n
	n=$(blkmirror ctl "$D/ctl.sock" status | sed -n 's/^writes=//p')
	[ "${n:-0}" -ge "$1" ]
}

@test "SIGTERM during fio: exit 0, sockets gone, metadata clean" {
	blk_start
	[ "$(blk_dump_key clean)" = 0 ]
	start_bg fio fio --name=w --ioengine=nbd --uri="$(blk_uri)" \
	    --rw=randwrite --bs=4k --iodepth=16 --size=64M --time_based \
	    --runtime=30 --output-format=terse
	wait_for 10 writes_at_least 500
	stop_daemon bm
	[ ! -e "$D/nbd.sock" ] && [ ! -e "$D/ctl.sock" ]
	grep -Fx "blkmirror: signal 15: stopping" "$D/bm.err"
	grep -Fx "blkmirror: stopped" "$D/bm.err"
	[ "$(blk_dump_key clean)" = 1 ]
	[ "$(blk_dump_key resync_extents)" = "" ]
	[ "$(blk_dump_key al_count)" = 16 ]
	kill_daemon fio || :
}

@test "kill -9 during fio: the restart accepts the metadata, data intact" {
	blk_start
	qemu-io -f raw -c 'write -P 0x6b 0 4M' -c flush "$(blk_uri)" >/dev/null
	start_bg fio fio --name=w --ioengine=nbd --uri="$(blk_uri)" \
	    --rw=randwrite --bs=4k --iodepth=16 --size=16M --offset=32M \
	    --time_based --runtime=30 --output-format=terse
	wait_for 10 writes_at_least 500
	kill_daemon bm KILL || :
	kill_daemon fio || :
	run -0 --separate-stderr blkmirror dump -m "$D/meta"
	[ "$stderr" = "" ]
	[[ "$output" == *$'\nclean=0\n'* ]]
	[[ "$output" == *$'\nal_extents=0,8,9,10,11\nresync_extents=0,8,9,10,11\n'* ]]
	blk_start
	grep -Fx "blkmirror: $D/meta: not shut down cleanly; 5 activity log extents may differ from the peers" "$D/bm.err"
	run -0 blkmirror ctl "$D/ctl.sock" status
	[[ "$output" == *$'\nresync_extents=5\n'* ]]
	run -0 qemu-io -f raw -c 'read -P 0x6b 0 4M' "$(blk_uri)"
	[[ "$output" != *"verification failed"* ]]
	run -0 fio --name=v --ioengine=nbd --uri="$(blk_uri)" --rw=randwrite \
	    --bs=4k --iodepth=16 --size=8M --offset=8M --verify=crc32c --verify_state_save=0 \
	    --do_verify=1 --verify_fatal=1 --output-format=terse
	stop_daemon bm
	[ "$(blk_dump_key clean)" = 1 ]
}

@test "kill -9 at random moments, ten times: every restart is accepted" {
	start_bg fio true
	for i in $(seq 10); do
		blk_start || return 1
		rm -f "$D/fio.pid"
		start_bg fio fio --name=w --ioengine=nbd --uri="$(blk_uri)" \
		    --rw=randwrite --bsrange=4k-1M --iodepth=16 --size=64M \
		    --time_based --runtime=30 --output-format=terse
		sleep "0.$((RANDOM % 4))$((RANDOM % 10))"
		kill_daemon bm KILL || :
		kill_daemon fio || :
		run -0 --separate-stderr blkmirror dump -m "$D/meta"
		[ "$stderr" = "" ] || return 1
		[[ "$output" == *$'\nclean=0\n'* ]] || return 1
	done
	blk_start
	stop_daemon bm
	[ "$(blk_dump_key clean)" = 1 ]
}

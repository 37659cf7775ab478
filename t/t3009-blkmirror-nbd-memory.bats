#!/usr/bin/env bats
# Probe: a client that sends many large reads and reads no reply must not
# make blkmirror hold gigabytes (the memory a request takes is bounded
# per connection, and what is freed goes back).

load lib/common
load lib/blk

setup() {
	blk_init 64M
}

teardown() {
	stop_all_daemons
}

@test "64 reads of 32 MiB in flight, no reply read: blkmirror stays under 512 MiB" {
	blk_start
	run -0 python3 "$BATS_TEST_DIRNAME/lib/nbdflood.py" "$D/nbd.sock" \
	    "$(cat "$D/bm.pid")"
	echo "largest VmRSS: $output MiB"
	[ "$output" -lt 512 ]
	# and it goes on serving
	run -0 qemu-io -f raw -c 'write -P 7 0 1M' -c 'read -P 7 0 1M' \
	    "$(blk_uri)"
	stop_daemon bm
}

@test "reads past the bound sent at once are all answered: the ones already read in wait, not stall" {
	blk_start
	run -0 timeout 60 python3 "$BATS_TEST_DIRNAME/lib/nbdflood.py" \
	    "$D/nbd.sock" "$(cat "$D/bm.pid")" burst 6
	[ "$output" = 6 ]
	stop_daemon bm
}

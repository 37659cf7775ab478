#!/usr/bin/env bats
# Clients that break the NBD protocol get the protocol's error or lose
# their connection, while a well-behaved client goes on working.

load lib/common
load lib/blk

setup() {
	blk_init 64M
	RAW="python3 $BATS_TEST_DIRNAME/lib/nbdraw.py $D/nbd.sock"
}

teardown() {
	stop_all_daemons
}

@test "options: STARTTLS and unknown ones unsupported, bad ones invalid" {
	blk_start
	run -0 $RAW options
	[ "$output" = "starttls 80000001
unknown 80000001
list-data 80000003
go-bad 80000003
go-unknown 80000006
go 3 1
read reply 0
disc closed" ]
	stop_daemon bm
}

@test "bad requests get errors or a disconnect; another client is unharmed" {
	blk_start
	# a verifying writer runs during the whole test
	start_bg fio fio --name=good --ioengine=nbd --uri="$(blk_uri)" \
	    --rw=randwrite --bs=4k --iodepth=16 --size=16M --offset=32M \
	    --loops=20 --verify=crc32c --verify_state_save=0 --do_verify=1 --verify_fatal=1 \
	    --output-format=terse
	wait_for 10 sh -c "blkmirror ctl '$D/ctl.sock' status | grep -q '^connections=[1-9]'"
	run -0 $RAW garbage
	[ "$output" = "garbage closed" ]
	run -0 $RAW badmagic
	[ "$output" = "badmagic closed" ]
	run -0 $RAW requests 67108864
	[ "$output" = "read-huge reply 22
read-past-end reply 22
read-across-end reply 22
read-wrapping reply 22
write-past-end reply 28
trim-past-end reply 28
zero-past-end reply 28
unknown-command reply 22
write reply 0
read reply 0
write-huge closed" ]
	grep -q "): bad option magic, disconnecting$" "$D/bm.err"
	grep -q "): bad request magic, disconnecting$" "$D/bm.err"
	grep -q "): write request longer than the maximum, disconnecting$" "$D/bm.err"
	# the good client finishes its verified run, and new clients work
	wait "$(cat "$D/fio.pid")"
	rm "$D/fio.pid"
	run -0 qemu-io -f raw -c 'write -P 0x5a 0 64k' -c 'read -P 0x5a 0 64k' "$(blk_uri)"
	run -0 blkmirror ctl "$D/ctl.sock" status
	[[ "$output" == *$'\nerrors=8\n'* ]]
	stop_daemon bm
}

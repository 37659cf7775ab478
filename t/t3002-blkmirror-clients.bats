#!/usr/bin/env bats
# blkmirror with real NBD clients: nbdinfo, qemu-img, nbdcopy, qemu-io,
# fio's nbd engine with verification, over the unix socket and TCP.

load lib/common
load lib/blk

setup() {
	blk_init 64M
}

teardown() {
	stop_all_daemons
}

@test "nbdinfo shows the size, the flags and both export names" {
	blk_start
	run -0 --separate-stderr nbdinfo --json "$(blk_uri)"
	python3 -c '
import json, sys
j = json.loads(sys.argv[1])
e = j["exports"][0]
assert j["protocol"] == "newstyle-fixed", j
assert e["export-size"] == 67108864, e
for k in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn"):
    assert e[k] is True, k
assert e["is_read_only"] is False
assert e["block_size_maximum"] == 33554432
' "$output"
	run -0 nbdinfo --size "nbd+unix:///a?socket=$D/nbd.sock"
	[ "$output" = 67108864 ]
	run -0 nbdinfo --list --json "$(blk_uri)"
	python3 -c '
import json, sys
names = sorted(e["export-name"] for e in json.loads(sys.argv[1])["exports"])
assert names == ["", "a"], names
' "$output"
	run -1 nbdinfo --size "nbd+unix:///nosuch?socket=$D/nbd.sock"
	[ "$output" = "nbdinfo: nbd_connect_uri: handshake: server has no export named 'nosuch': No such file or directory" ]
	stop_daemon bm
}

@test "qemu-img convert copies an image in and out byte for byte" {
	head -c 60M /dev/urandom >"$D/img"
	blk_start
	qemu-img convert -n -f raw -O raw "$D/img" "$(blk_uri)"
	qemu-img convert -f raw -O raw "$(blk_uri)" "$D/out"
	cmp -n 62914560 "$D/img" "$D/out"
	[ "$(stat -c %s "$D/out")" = 67108864 ]
	stop_daemon bm
	# and it is in the backing file itself
	cmp -n 62914560 "$D/img" "$D/disk"
}

@test "nbdcopy copies an image in and out byte for byte, over TCP too" {
	head -c 64M /dev/urandom >"$D/img"
	port=$(free_port)
	blk_start -t "127.0.0.1:$port"
	nbdcopy "$D/img" "$(blk_uri)"
	nbdcopy "nbd://127.0.0.1:$port/" "$D/out"
	cmp "$D/img" "$D/out"
	nbdcopy --connections=4 --requests=32 "nbd://127.0.0.1:$port/" - | cmp - "$D/img"
	run -0 blkmirror ctl "$D/ctl.sock" status
	[[ "$output" == *$'\nwritten_bytes=67108864\n'* ]]
	stop_daemon bm
}

@test "qemu-io writes, zeroes, discards and reads patterns" {
	blk_start
	run -0 qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 1M 64k' \
	    -c 'write -z 2M 1M' -c 'write -P 0x11 4M 8M' -c 'discard 4M 4M' \
	    -c 'flush' -c 'write -f -P 0x22 12M 4k' "$(blk_uri)"
	run -0 qemu-io -f raw -c 'read -P 0xab 0 1M' -c 'read -P 0xcd 1M 64k' \
	    -c 'read -P 0 2M 1M' -c 'read -P 0 4M 4M' -c 'read -P 0x11 8M 4M' \
	    -c 'read -P 0x22 12M 4k' "$(blk_uri)"
	[[ "$output" != *"Pattern verification failed"* ]]
	[ "$(echo "$output" | grep -c '^read ')" = 6 ]
	run -0 blkmirror ctl "$D/ctl.sock" status
	[[ "$output" == *$'\ntrims=1\nzeroes=1\n'* ]]
	[[ "$output" == *$'\nerrors=0\n'* ]]
	stop_daemon bm
}

@test "fio's nbd engine verifies random writes with 16 in flight" {
	blk_start
	run -0 fio --name=verify --ioengine=nbd --uri="$(blk_uri)" \
	    --rw=randwrite --bs=4k --iodepth=16 --size=32M --verify=crc32c --verify_state_save=0 \
	    --do_verify=1 --verify_fatal=1 --output-format=terse
	run -0 fio --name=verify2 --ioengine=nbd --uri="$(blk_uri)" \
	    --rw=randwrite --bsrange=512-256k --iodepth=16 --size=48M \
	    --offset=16M --verify=crc32c --verify_state_save=0 --do_verify=1 --verify_fatal=1 \
	    --output-format=terse
	run -0 blkmirror ctl "$D/ctl.sock" status
	[[ "$output" == *$'\nerrors=0\n'* ]]
	[[ "$output" == *$'\nal_count=16\n'* ]]
	writes=$(sed -n 's/^writes=//p' <<<"$output")
	# the latency histogram counted every write, in buckets in order
	run -0 blkmirror ctl "$D/ctl.sock" latency
	sum=0 last=-1
	while IFS== read -r k n; do
		[[ "$k" =~ ^write_lat\.([0-9]+)$ ]]
		[ "${BASH_REMATCH[1]}" -gt "$last" ]
		last=${BASH_REMATCH[1]}
		sum=$((sum + n))
	done <<<"$output"
	[ "$writes" -gt 0 ]
	[ "$sum" = "$writes" ]
	stop_daemon bm
	[ "$(blk_dump_key al_count)" = 16 ]
	[ "$(blk_dump_key al_extents)" = 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 ]
}

@test "several connections at once" {
	blk_start
	pids=
	for i in 0 1 2 3; do
		fio --name=c$i --ioengine=nbd --uri="$(blk_uri)" --rw=randwrite \
		    --bs=16k --iodepth=8 --size=16M --offset=$((i * 16))M \
		    --verify=crc32c --verify_state_save=0 --do_verify=1 --verify_fatal=1 \
		    --output-format=terse >"$D/fio$i.out" 2>&1 3>&- &
		pids="$pids $!"
	done
	fail=0
	for j in $pids; do wait "$j" || fail=1; done
	[ "$fail" = 0 ]
	run -0 blkmirror ctl "$D/ctl.sock" status
	n=$(echo "$output" | sed -n 's/^connections_total=//p')
	[ "$n" -ge 4 ]
	[[ "$output" == *$'\nerrors=0\n'* ]]
	stop_daemon bm
}

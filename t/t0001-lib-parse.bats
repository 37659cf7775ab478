#!/usr/bin/env bats
# lib/: durations, sizes and the cluster key file, through t/libcheck.

setup() {
	load lib/common
}

@test "durations people write are accepted" {
	run -0 libcheck duration 200ms
	[ "$output" = "200000 us" ]
	run -0 libcheck duration 1.5s
	[ "$output" = "1500000 us" ]
	run -0 libcheck duration 2m
	[ "$output" = "120000000 us" ]
	run -0 libcheck duration 10
	[ "$output" = "10000000 us" ]
}

@test "bad durations are refused with the reason" {
	run -100 --separate-stderr libcheck duration 2x
	[ "$stderr" = "libcheck: bad duration '2x': unknown unit" ]
	[ -z "$output" ]
	run -100 --separate-stderr libcheck duration -1s
	[ "$stderr" = "libcheck: bad duration '-1s': negative value" ]
	run -100 --separate-stderr libcheck duration 99999999999999999999
	[ "$stderr" = "libcheck: bad duration '99999999999999999999': too large" ]
	run -100 --separate-stderr libcheck duration ''
	[ "$stderr" = "libcheck: bad duration '': empty value" ]
	run -100 --separate-stderr libcheck duration fast
	[ "$stderr" = "libcheck: bad duration 'fast': not a number" ]
}

@test "sizes people write are accepted" {
	run -0 libcheck size 4k
	[ "$output" = "4096 bytes" ]
	run -0 libcheck size 64M
	[ "$output" = "67108864 bytes" ]
	run -0 libcheck size 1G
	[ "$output" = "1073741824 bytes" ]
	run -0 libcheck size 1.5GiB
	[ "$output" = "1610612736 bytes" ]
}

@test "bad sizes are refused with the reason" {
	run -100 --separate-stderr libcheck size 4X
	[ "$stderr" = "libcheck: bad size '4X': unknown unit" ]
	run -100 --separate-stderr libcheck size 17000000T
	[ "$stderr" = "libcheck: bad size '17000000T': too large" ]
	run -100 --separate-stderr libcheck size 0.1k
	[ "$stderr" = "libcheck: bad size '0.1k': finer than the smallest unit" ]
}

@test "a raw and a hex key file give the same key" {
	local k=$BATS_TEST_TMPDIR/key
	make_key "$k"
	run -0 libcheck key "$k"
	local raw=$output
	od -An -tx1 -v "$k" | tr -d ' \n' >"$k.hex"
	echo >>"$k.hex"
	chmod 600 "$k.hex"
	run -0 libcheck key "$k.hex"
	[ "$output" = "$raw" ]
}

@test "a group- or world-readable key file is refused" {
	local k=$BATS_TEST_TMPDIR/key
	make_key "$k"
	chmod 640 "$k"
	run -100 --separate-stderr libcheck key "$k"
	[ "$stderr" = "libcheck: key file $k: readable or writable by group or others (mode 0640); run chmod 600 $k" ]
	chmod 604 "$k"
	run -100 --separate-stderr libcheck key "$k"
	[ "$stderr" = "libcheck: key file $k: readable or writable by group or others (mode 0604); run chmod 600 $k" ]
}

@test "a key file of the wrong size or not hex is refused" {
	local k=$BATS_TEST_TMPDIR/key
	(umask 077 && head -c 16 /dev/urandom >"$k")
	run -100 --separate-stderr libcheck key "$k"
	[ "$stderr" = "libcheck: key file $k: must hold 32 raw bytes or 64 hexadecimal characters, found 16 bytes" ]
	(umask 077 && printf '%064d\n' 0 | tr 0 z >"$k")
	run -100 --separate-stderr libcheck key "$k"
	[ "$stderr" = "libcheck: key file $k: 64 bytes but not hexadecimal (bad character at offset 0)" ]
	run -100 --separate-stderr libcheck key "$BATS_TEST_TMPDIR/nokey"
	[ "$stderr" = "libcheck: key file $BATS_TEST_TMPDIR/nokey: No such file or directory" ]
}

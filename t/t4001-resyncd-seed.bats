#!/usr/bin/env bats
# resyncd send | resyncd recv: seeding a copy over any pipe, compressed,
# authenticated, resumable.

setup() {
	load lib/common
	d=$BATS_TEST_TMPDIR
	make_key "$d/key"
	# 24 MiB: compressible text, random bytes, and zeros
	{ for i in $(seq 1 60000); do echo "line $i of a compressible log file"; done
	  head -c 8M /dev/urandom
	  head -c 8M /dev/zero; } >"$d/src"
	truncate -s 24M "$d/src"
	truncate -s 24M "$d/dst"
}

@test "send | recv makes an identical copy" {
	run -0 --separate-stderr sh -c "resyncd send -k '$d/key' '$d/src' | resyncd recv -k '$d/key' '$d/dst'"
	[ "$output" = "received 25165824 bytes, $d/dst complete (25165824 bytes)" ]
	cmp "$d/src" "$d/dst"
	[ ! -e "$d/dst.seed" ]
}

@test "the stream is compressed and zero chunks cost nothing" {
	resyncd send -k "$d/key" "$d/src" >"$d/stream"
	local s
	s=$(stat -c %s "$d/stream")
	# the random 8 MiB cannot shrink; the rest nearly vanishes
	[ "$s" -lt $((9 * 1024 * 1024)) ]
	[ "$s" -gt $((8 * 1024 * 1024)) ]
}

@test "over a socket pair, as through ssh" {
	local port
	port=$(free_port)
	start_bg recv socat -u TCP-LISTEN:"$port",bind=127.0.0.1,reuseaddr \
	    EXEC:"resyncd recv -k $d/key $d/dst"
	wait_for 5 eval "ss -Hltn '( sport = :$port )' | grep -q ."
	resyncd send -k "$d/key" "$d/src" | socat -u - TCP:127.0.0.1:"$port"
	wait_for 10 eval "! kill -0 $(cat "$d/recv.pid") 2>/dev/null"
	cmp "$d/src" "$d/dst"
}

@test "a wrong key is refused and nothing is written" {
	make_key "$d/other"
	cp "$d/dst" "$d/before"
	run -100 --separate-stderr sh -c "resyncd send -k '$d/key' '$d/src' | resyncd recv -k '$d/other' '$d/dst'"
	[ "$stderr" = "resyncd: stdin: cannot authenticate the stream: wrong cluster key, or the stream was modified" ]
	cmp "$d/before" "$d/dst"
}

@test "a modified stream is refused at the first bad message" {
	resyncd send -z 0 -k "$d/key" "$d/src" >"$d/stream"
	# flip one byte inside the third megabyte of data
	printf '\001' | dd of="$d/stream" bs=1 seek=$((2 * 1024 * 1024 + 5000)) conv=notrunc status=none
	run -100 --separate-stderr resyncd recv -k "$d/key" "$d/dst" <"$d/stream"
	# the byte lies in the third chunk: the first two were written
	[ "$stderr" = "resyncd: stdin: message after offset 2097152 failed authentication: forged, modified, replayed or reordered data; resume with: resyncd send -O 2097152" ]
	cmp -n 2097152 "$d/src" "$d/dst"
	# and nothing of the damaged chunk or after it
	[ "$(tail -c +2097153 "$d/dst" | tr -d '\0' | wc -c)" -eq 0 ]
}

@test "an interrupted seed resumes where it stopped" {
	resyncd send -z 0 -k "$d/key" "$d/src" >"$d/stream"
	# cut the stream after about 10 MiB
	head -c $((10 * 1024 * 1024 + 123)) "$d/stream" >"$d/part"
	run -111 --separate-stderr resyncd recv -k "$d/key" "$d/dst" <"$d/part"
	[[ "$stderr" == "resyncd: stdin: the stream ended early at offset "*"; resume with: resyncd send -O "* ]]
	local off=${stderr##* }
	[ "$off" -gt 0 ] && [ "$off" -lt $((11 * 1024 * 1024)) ]
	run -0 cat "$d/dst.seed"
	[ "${lines[1]}" = "offset=$off" ]
	# resume: only the rest travels
	resyncd send -O "$off" -z 0 -k "$d/key" "$d/src" >"$d/rest"
	[ "$(stat -c %s "$d/rest")" -lt $((24 * 1024 * 1024 - off + 65536)) ]
	run -0 resyncd recv -k "$d/key" "$d/dst" <"$d/rest"
	[ "$output" = "received $((25165824 - off)) bytes, $d/dst complete (25165824 bytes)" ]
	cmp "$d/src" "$d/dst"
}

@test "a resume past what was received is refused" {
	resyncd send -O 4096 -k "$d/key" "$d/src" >"$d/rest"
	run -100 --separate-stderr resyncd recv -k "$d/key" "$d/dst" <"$d/rest"
	[ "$stderr" = "resyncd: stdin: the stream starts at offset 4096 but $d/dst.seed has no record of an earlier seed" ]
}

@test "a smaller target, garbage and bad usage are refused" {
	truncate -s 1M "$d/small"
	run -100 --separate-stderr sh -c "resyncd send -k '$d/key' '$d/src' | resyncd recv -k '$d/key' '$d/small'"
	[ "$stderr" = "resyncd: $d/small: 1048576 bytes, smaller than the sender's 25165824" ]
	run -100 --separate-stderr resyncd recv -k "$d/key" "$d/dst" < <(head -c 200 /dev/urandom)
	[ "$stderr" = "resyncd: stdin: not a resyncd send stream" ]
	run -100 --separate-stderr resyncd send "$d/src"
	[ "$stderr" = "resyncd: -k keyfile is required" ]
	run -100 --separate-stderr resyncd send -O 100 -k "$d/key" "$d/src"
	[ "$stderr" = "resyncd: -O 100: not a multiple of 4096" ]
	run -100 --separate-stderr resyncd frob
	[ "${stderr_lines[0]}" = "usage: resyncd [-v] [-d fd] [-M data|csum] [-R rate] [-W window] -c ctlsock" ]
	[ "${stderr_lines[3]}" = "       resyncd send [-v] [-O offset] [-n node] [-z level] -k keyfile device" ]
}

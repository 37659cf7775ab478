#!/usr/bin/env bats
# The link end to end: t/linkpump carries a file between two processes over
# TCP and over a pipe pair, and refuses a wrong key, a wrong node name and
# a key file others can read, each with its own message and exit status.

setup() {
	load lib/common
	d=$BATS_TEST_TMPDIR
	make_key "$d/key"
	make_key "$d/other"
	port=$(free_port)
	{ head -c 1000000 /dev/urandom; seq 200000; } >"$d/in"
}

teardown() {
	stop_all_daemons
}

# reap NAME: wait for a daemon that ends by itself (it is a child of this
# shell, so no command substitution here); its exit status goes to $reaped.
reap() {
	local pid
	pid=$(cat "$d/$1.pid")
	wait_for 20 eval "! kill -0 $pid 2>/dev/null"
	reaped=0
	wait "$pid" || reaped=$?
	rm -f "$d/$1.pid"
}

@test "a file crosses a compressed link over TCP intact" {
	start_daemon recv linkpump -k "$d/key" -n b -p a -o "$d/out" \
	    listen 127.0.0.1 "$port"
	run -0 --separate-stderr linkpump -s -k "$d/key" -n a -p b -z 3 \
	    -i "$d/in" connect 127.0.0.1 "$port"
	[ "$output" = "" ]
	size=$(wc -c <"$d/in")
	[[ "$stderr" =~ ^linkpump:\ sent\ $size\ bytes,\ [0-9]+\ on\ the\ wire\ \(ratio\ [2-9]\.[0-9]+\),\ .*MB/s,\ cpu\ [0-9.]+\ s$ ]]
	reap recv
	[ "$reaped" = 0 ]
	cmp "$d/in" "$d/out"
	grep -Eq "^linkpump: received $size bytes" "$d/recv.err"
}

@test "a file crosses a link over a pipe pair (ssh-style transport)" {
	mkfifo "$d/f1" "$d/f2"
	start_bg recv sh -c 'exec linkpump -k "$1/key" -n b -o "$1/out" \
	    stdio server <"$1/f1" >"$1/f2"' sh "$d"
	run -0 --separate-stderr sh -c 'exec linkpump -s -k "$1/key" -n a \
	    -p b -i "$1/in" stdio client >"$1/f1" <"$1/f2"' sh "$d"
	reap recv
	[ "$reaped" = 0 ]
	cmp "$d/in" "$d/out"
}

@test "a wrong cluster key fails both ends" {
	start_daemon recv linkpump -k "$d/key" -n b -o "$d/out" \
	    listen 127.0.0.1 "$port"
	run -111 --separate-stderr linkpump -s -k "$d/other" -n a \
	    -i "$d/in" connect 127.0.0.1 "$port"
	[ "$stderr" = "linkpump: wrong cluster key: peer 127.0.0.1:$port does not hold ours (or the handshake was tampered with)" ]
	reap recv
	[ "$reaped" = 111 ]
	grep -Eqx 'linkpump: wrong cluster key: peer 127\.0\.0\.1:[0-9]+ does not hold ours \(or the handshake was tampered with\)' "$d/recv.err"
	[ ! -s "$d/out" ]
}

@test "an unexpected node name is refused, and the peer learns why" {
	start_daemon recv linkpump -k "$d/key" -n x -o "$d/out" \
	    listen 127.0.0.1 "$port"
	run -111 --separate-stderr linkpump -s -k "$d/key" -n a -p b \
	    -i "$d/in" connect 127.0.0.1 "$port"
	[ "$stderr" = "linkpump: unexpected node name 'x' (want 'b')" ]
	reap recv
	[ "$reaped" = 111 ]
	[ "$(cat "$d/recv.err")" = "linkpump: peer closed the connection: unexpected node name 'x' (want 'b')" ]
}

@test "a key file others can read is refused" {
	chmod 644 "$d/key"
	run -100 --separate-stderr linkpump -k "$d/key" -n b -o "$d/out" \
	    listen 127.0.0.1 "$port"
	[ "$stderr" = "linkpump: key file $d/key: readable or writable by group or others (mode 0644); run chmod 600 $d/key" ]
}

@test "wrong usage exits 100" {
	run -100 --separate-stderr linkpump -k "$d/key" stdio
	[ "${stderr_lines[0]}" = "usage: linkpump [-MRsvX] [-b size] [-d fd] [-i file] [-k keyfile] [-m size]" ]
	run -100 --separate-stderr linkpump -z 20 -k "$d/key" stdio client
	[ "$stderr" = "linkpump: -z 20: a level 0 to 19" ]
}

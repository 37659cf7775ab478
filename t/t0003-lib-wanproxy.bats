#!/usr/bin/env bats
# t/wanproxy: the WAN emulation proxy adds delay, limits the rate, cuts
# and restores connections.

setup() {
	load lib/common
	port=$(free_port)
	# an echo server behind the proxy
	start_bg echo socat -T 30 TCP-LISTEN:"$port",bind=127.0.0.1,reuseaddr,fork EXEC:cat
	wait_for 5 eval "ss -Hltn '( sport = :$port )' | grep -q ."
	start_daemon wan wanproxy -c "$BATS_TEST_TMPDIR/wan.ctl" \
	    127.0.0.1:0 127.0.0.1:"$port"
	wanport=$(head -n 1 "$BATS_TEST_TMPDIR/wan.out")
}

teardown() {
	stop_daemon wan
	stop_all_daemons
}

wan() { echo "$*" | socat -t 2 - UNIX-CONNECT:"$BATS_TEST_TMPDIR/wan.ctl"; }

# rtt_ms: one round trip through the proxy, in milliseconds
rtt_ms() {
	python3 - "$wanport" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
best = None
for i in range(3):
    t = time.monotonic(); s.sendall(b"x"); s.recv(1)
    d = (time.monotonic() - t) * 1000
    best = d if best is None else min(best, d)
print(int(best))
PY
}

@test "without delay the proxy forwards both ways" {
	run -0 rtt_ms
	[ "$output" -lt 50 ]
	run -0 wan stats
	[[ "$output" == *"cut=0 delay_us=0"* ]]
}

@test "the proxy adds the delay it was asked for" {
	run -0 wan delay 100ms
	[ "$output" = ok ]
	run -0 rtt_ms
	# 100 ms each way: a round trip takes at least 200 ms, within a
	# generous bound above for a loaded machine
	[ "$output" -ge 195 ] && [ "$output" -lt 1000 ]
}

@test "the proxy limits the rate" {
	run -0 wan rate 1M
	local t0 t1
	t0=$(date +%s%N)
	head -c 2M /dev/zero | socat -t 30 - TCP:127.0.0.1:"$wanport",shut-down >"$BATS_TEST_TMPDIR/back"
	t1=$(date +%s%N)
	[ "$(stat -c %s "$BATS_TEST_TMPDIR/back")" -eq $((2 * 1024 * 1024)) ]
	# 2 MiB at 1 MiB/s takes about 2 s
	[ $(( (t1 - t0) / 1000000 )) -ge 1500 ]
}

@test "a cut link holds the data and a restored one delivers it" {
	coproc C { socat -t 30 - TCP:127.0.0.1:"$wanport" 3>&-; }
	echo before >&"${C[1]}"
	read -r -t 5 line <&"${C[0]}"
	[ "$line" = before ]
	run -0 wan cut
	echo during >&"${C[1]}"
	! read -r -t 1 line <&"${C[0]}"
	run -0 wan restore
	read -r -t 5 line <&"${C[0]}"
	[ "$line" = during ]
	kill "$C_PID"
}

@test "reset drops every connection; new ones work" {
	# a client that sends once and then keeps its connection open
	start_bg client sh -c "{ echo hi; sleep 30; } | socat -t 30 - TCP:127.0.0.1:$wanport"
	wait_line client '^hi$' 5
	run -0 wan stats
	[[ "$output" == *"conns=1 "* ]]
	# the proxy closed its side: no connection to it is left
	ss -Htn state established "( sport = :$wanport )" | grep -q .
	wan reset
	wait_for 5 eval "! ss -Htn state established '( sport = :$wanport )' | grep -q ."
	run -0 rtt_ms
}

@test "bad control commands are refused" {
	run -0 wan delay soon
	[ "$output" = "error: delay soon: not a number" ]
	run -0 wan jump
	[ "$output" = "error: unknown command: jump" ]
}

@test "wanproxy refuses bad arguments" {
	run -100 --separate-stderr wanproxy -D 5x 127.0.0.1:0 127.0.0.1:1
	[ "$stderr" = "wanproxy: -D 5x: unknown unit" ]
	run -100 --separate-stderr wanproxy 127.0.0.1:0
	[ "$stderr" = "usage: wanproxy [-d fd] [-c ctlsock] [-D delay] [-r rate] listen target" ]
}

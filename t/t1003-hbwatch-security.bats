#!/usr/bin/env bats
# Forged, foreign, malformed, replayed and random packets change nothing
# in hbwatch: no event line, no state; they are only counted and logged.

setup() {
	load lib/common
	load lib/hb
	hb_key
	P=$(free_port)
	hb_start w - hbwatch -k "$KEY" -n a -i 100ms -w 300ms -D 500ms \
	    -I 10s -l "udp:127.0.0.1:$P" b c
	OUT=$BATS_TEST_TMPDIR/w.out
}

teardown() {
	stop_all_daemons
}

# unchanged BEFORE: hbwatch printed nothing since BEFORE was taken
unchanged() {
	[ "$(cat "$OUT")" = "$1" ]
}

@test "a packet made with the wrong key changes nothing" {
	local other=$BATS_TEST_TMPDIR/other.key
	make_key "$other"
	hbpkt -k "$other" -n b -u "127.0.0.1:$P"
	hbpkt -k "$other" -n b -t leaving -S 2 -u "127.0.0.1:$P"
	run -0 hb_status w
	[ "${output#*dropped}" = " badheader=0 badauth=2 badbody=0 cluster=0 unknown=0 replay=0 stale=0 media=0 events-unwritten=0 events-unhandled=0" ]
	[ ! -s "$OUT" ]
	grep -q 'hbwatch: dropped 1 packet (badauth), last from udp:127.0.0.1:'"$P"': bad authentication tag (wrong key?)' "$BATS_TEST_TMPDIR/w.err"
	grep -q 'hbwatch: status peers=b:unknown,c:unknown quorum=no accepted=0' "$BATS_TEST_TMPDIR/w.err"
	# a good one is accepted: the test can fail
	hbpkt -k "$KEY" -n b -u "127.0.0.1:$P"
	wait_line w ' b up '
}

@test "a packet for another cluster, an unknown node or a bad body changes nothing" {
	hbpkt -k "$KEY" -C other -n b -u "127.0.0.1:$P"
	hbpkt -k "$KEY" -n z -u "127.0.0.1:$P"
	hbpkt -k "$KEY" -m -n b -u "127.0.0.1:$P"
	run -0 hb_status w
	[ "${output#*dropped}" = " badheader=0 badauth=0 badbody=1 cluster=1 unknown=1 replay=0 stale=0 media=0 events-unwritten=0 events-unhandled=0" ]
	[ ! -s "$OUT" ]
	grep -q 'dropped 1 packet (cluster), last from udp:127.0.0.1:[0-9]*: other$' "$BATS_TEST_TMPDIR/w.err"
	grep -q 'dropped 1 packet (unknown), last from udp:127.0.0.1:[0-9]*: z$' "$BATS_TEST_TMPDIR/w.err"
	grep -q 'dropped 1 packet (badbody), last from udp:127.0.0.1:[0-9]*: malformed body$' "$BATS_TEST_TMPDIR/w.err"
}

@test "replayed captured packets change nothing, also after the peer left" {
	local cap=$BATS_TEST_TMPDIR/cap before
	hb_start s - hbsend -k "$KEY" -n b -i 100ms -s live "udp:127.0.0.1:$P" -
	wait_line w ' b up '
	sleep 1.5	# more than HB_REORDER_WINDOW packets
	cp "$BATS_TEST_TMPDIR/s.out" "$cap"
	before=$(cat "$OUT")
	hbpkt -r -u "127.0.0.1:$P" <"$cap"
	run -0 hb_status w
	[[ "$output" =~ replay=([0-9]+) ]]
	[ "${BASH_REMATCH[1]}" -ge 15 ]
	unchanged "$before"
	# after a planned stop, the old heartbeats must not revive it
	stop_daemon s
	wait_line w ' b left '
	before=$(cat "$OUT")
	hbpkt -r -u "127.0.0.1:$P" <"$BATS_TEST_TMPDIR/s.out"
	sleep 0.3
	unchanged "$before"
	# nor a packet of an older incarnation with a higher sequence number
	hbpkt -k "$KEY" -n b -I 1000 -S 999999 -u "127.0.0.1:$P"
	run -0 hb_status w
	[[ "$output" =~ badauth=0\ badbody=0\ cluster=0\ unknown=0\ replay=([0-9]+) ]]
	sleep 0.3
	unchanged "$before"
	grep -q 'hbwatch: status peers=b:left,c:unknown quorum=no' "$BATS_TEST_TMPDIR/w.err"
}

@test "random garbage sent to the port changes nothing" {
	hb_start s - hbsend -k "$KEY" -n b -i 100ms "udp:127.0.0.1:$P"
	wait_line w ' b up '
	local before
	before=$(cat "$OUT")
	hbpkt -g 2000 -u "127.0.0.1:$P"
	run -0 hb_status w
	[[ "$output" =~ badheader=([0-9]+)\ badauth=([0-9]+)\ badbody=0\ cluster=0\ unknown=0\ replay=0 ]]
	[ $(( BASH_REMATCH[1] + BASH_REMATCH[2] )) -eq 2000 ]
	[ "${BASH_REMATCH[2]}" -gt 0 ]
	unchanged "$before"
	# rate-limited: far fewer log lines than packets
	[ "$(grep -c 'hbwatch: dropped' "$BATS_TEST_TMPDIR/w.err")" -le 6 ]
	kill -0 "$(cat "$BATS_TEST_TMPDIR/w.pid")"
}

@test "garbage in the pipe medium is skipped and the stream recovers" {
	local f=$BATS_TEST_TMPDIR/stream
	{ head -c 3000 /dev/urandom; hbpkt -k "$KEY" -n b; head -c 500 /dev/urandom; } >"$f"
	run -0 --separate-stderr hbwatch -1 -k "$KEY" -n a -i 100ms -D 500ms -l - b <"$f"
	[ "${#lines[@]}" -eq 2 ]
	[[ "${lines[0]}" =~ ^[0-9.]+\ b\ up\ seq=1$ ]]
	[[ "${lines[1]}" =~ ^[0-9.]+\ -\ quorum\ quorum=yes\ votes=2\ size=2\ seq=2$ ]]
	[[ "$stderr" =~ "hbwatch: dropped 1 packet (badheader), last from pipe:stdin: bad magic" ]]
	run -1 --separate-stderr hbwatch -1 -k "$KEY" -n a -i 100ms -D 500ms -l - b </dev/null
}

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

@test "a pipe packet that fails authentication does not swallow the next one" {
	local f=$BATS_TEST_TMPDIR/stream
	# a good header announcing a 256-byte body, which holds a good packet
	{ printf 'HThb\002\001\000\000\001\000'; hbpkt -k "$KEY" -n b; head -c 300 /dev/zero; } >"$f"
	run -0 --separate-stderr hbwatch -1 -k "$KEY" -n a -i 100ms -D 500ms -l - b <"$f"
	[ "${#lines[@]}" -eq 2 ]
	[[ "${lines[0]}" =~ ^[0-9.]+\ b\ up\ seq=1$ ]]
	[[ "$stderr" =~ "hbwatch: dropped 1 packet (badauth), last from pipe:stdin: bad authentication tag (wrong key?)" ]]
}

@test "an endless unpollable stdin does not stop the timers" {
	run -1 --separate-stderr timeout -s KILL 10 hbwatch -1 -k "$KEY" -n a -i 100ms -D 500ms -l - b </dev/zero
	[ "${#lines[@]}" -eq 2 ]
	[[ "${lines[0]}" =~ ^[0-9.]+\ b\ dead\ seq=1$ ]]
	[[ "${lines[1]}" =~ ^[0-9.]+\ -\ quorum\ quorum=no\ votes=1\ size=2\ seq=2$ ]]
}

@test "a restarted hbwatch drops old packets: no fake up, no fake left" {
	local cap=$BATS_TEST_TMPDIR/cap before
	hb_start s - hbsend -k "$KEY" -n b -i 100ms "udp:127.0.0.1:$P" -
	wait_line w ' b up '
	sleep 0.5
	hb_kill s KILL
	cp "$BATS_TEST_TMPDIR/s.out" "$cap"
	# b is gone; a's hbwatch restarts with no replay state
	hb_kill w
	hb_start w2 - hbwatch -k "$KEY" -n a -i 100ms -w 300ms -D 500ms \
	    -I 10s -F 500ms -l "udp:127.0.0.1:$P" b c
	sleep 0.6	# the capture ages past the window
	hbpkt -r -u "127.0.0.1:$P" <"$cap"
	run -0 hb_status w2
	[[ "$output" =~ replay=0\ stale=([0-9]+) ]]
	[ "${BASH_REMATCH[1]}" -ge 5 ]
	[ ! -s "$BATS_TEST_TMPDIR/w2.out" ]
	grep -Eq 'hbwatch: dropped 1 packet \(stale\), last from udp:127\.0\.0\.1:'"$P"': clock skew or replay: packet from b is [0-9]\.[0-9] s old$' "$BATS_TEST_TMPDIR/w2.err"
	grep -q 'hbwatch: status peers=b:unknown,c:unknown quorum=no accepted=0' "$BATS_TEST_TMPDIR/w2.err"
	# a packet from too far in the future is refused too
	hbpkt -k "$KEY" -n b -o 2000000 -u "127.0.0.1:$P"
	run -0 hb_status w2
	[[ "$output" =~ replay=0\ stale=([0-9]+) ]]
	[ ! -s "$BATS_TEST_TMPDIR/w2.out" ]
	# a live b, and an old leaving packet of it (default window 5 s)
	hb_kill w2
	hb_start w3 - hbwatch -k "$KEY" -n a -i 100ms -D 500ms \
	    -l "udp:127.0.0.1:$P" b
	hbpkt -k "$KEY" -n b -I 1000 -u "127.0.0.1:$P"
	wait_line w3 ' b up '
	hbpkt -k "$KEY" -n b -I 2000 -t leaving -o -6000000 -u "127.0.0.1:$P"
	run -0 hb_status w3
	[[ "$output" =~ stale=1\  ]]
	grep -Eq 'clock skew or replay: packet from b is 6\.0 s old$' "$BATS_TEST_TMPDIR/w3.err"
	[ "$(hb_count w3 ' b left ')" -eq 0 ]
	# within the window it is taken: the test can fail
	hbpkt -k "$KEY" -n b -I 3000 -t leaving -o -4000000 -u "127.0.0.1:$P"
	wait_line w3 ' b left '
}

# the last N (1 or 2) whole packets of a stream of 76-byte packets
lastpkts() {
	local sz
	sz=$(stat -c %s "$1")
	head -c $(( sz / 76 * 76 )) "$1" | tail -c $(( 76 * $2 ))
}

@test "a recent packet replayed from other addresses creates no medium and no event" {
	local k
	hb_start s - hbsend -k "$KEY" -n b -i 100ms "udp:127.0.0.1:$P" -
	wait_line w ' b up '
	for k in $(seq 2 40); do
		lastpkts "$BATS_TEST_TMPDIR/s.out" 1 |
		    hbpkt -r -b "127.0.0.$k" -u "127.0.0.1:$P"
	done
	sleep 0.8	# longer than the deadtime: a fake medium would go down
	[ "$(hb_count w ' b ')" -eq 1 ]
	[ "$(hb_count w 'link-')" -eq 0 ]
	# a path that carries two packets is a medium: the test can fail
	# (hbsend may send a newer packet between reading the last two and
	# their replay, which makes the older of them a copy of an old
	# packet: then again with the two newest, a few times)
	for k in 1 2 3 4 5; do
		lastpkts "$BATS_TEST_TMPDIR/s.out" 2 |
		    hbpkt -r -b 127.0.0.99 -u "127.0.0.1:$P"
		! wait_for 1 grep -q " b link-up medium=udp:127\.0\.0\.99:" \
		    "$BATS_TEST_TMPDIR/w.out" 2>/dev/null || break
	done
	wait_line w "^[0-9.]+ b link-up medium=udp:127\.0\.0\.99:$P seq=3$"
	wait_line w "^[0-9.]+ b link-down medium=udp:127\.0\.0\.99:$P silent=[0-9]+ms seq=4$"
	[ "$(hb_count w 'link-')" -eq 2 ]
}

@test "the status of many peers with long names is complete" {
	local names=() i n p2
	for i in $(seq 1 40); do
		names+=("$(printf 'node-%02d-%056d' "$i" 0)")
	done
	p2=$(free_port)
	hb_start w4 - hbwatch -k "$KEY" -n a -I 10s -l "udp:127.0.0.1:$p2" "${names[@]}"
	run -0 hb_status w4
	for n in "${names[@]}"; do
		grep -q "[=,]$n:unknown[,+ ]" "$BATS_TEST_TMPDIR/w4.err"
	done
	[ "$(grep -c 'hbwatch: status peers=' "$BATS_TEST_TMPDIR/w4.err")" -ge 4 ]
	grep -q "status peers=.*,${names[39]}:unknown quorum=no accepted=0$" "$BATS_TEST_TMPDIR/w4.err"
	kill -0 "$(cat "$BATS_TEST_TMPDIR/w4.pid")"
}

@test "hbsend -S: the incarnation grows even when the clock does not" {
	local f=$BATS_TEST_TMPDIR/state inc
	inc=$(( $(date +%s) * 1000000 + 10000000000000 ))	# far ahead
	echo "$inc" >"$f"
	hb_start s - hbsend -k "$KEY" -n b -i 100ms -S "$f" "udp:127.0.0.1:$P"
	wait_line w " b up incarnation=$(( inc + 1 )) "
	[ "$(cat "$f")" = "$(( inc + 1 ))" ]
	hb_kill s KILL
	hb_start s - hbsend -k "$KEY" -n b -i 100ms -S "$f" "udp:127.0.0.1:$P"
	wait_line w " b restarted incarnation=$(( inc + 2 )) "
	[ "$(cat "$f")" = "$(( inc + 2 ))" ]
	echo junk >"$f"
	run -111 --separate-stderr hbsend -k "$KEY" -n b -S "$f" "udp:127.0.0.1:$P"
	[ "$stderr" = "hbsend: $f: not an incarnation number" ]
}

@test "a flood of events for a slow handler drops the oldest, never hbwatch" {
	local h=$BATS_TEST_TMPDIR/handler log=$BATS_TEST_TMPDIR/handled p2 i
	cat >"$h" <<-'EOS'
	#!/bin/sh
	echo "$HB_SEQ $HB_NODE $HB_EVENT" >>"${0%/*}/handled"
	# the first one hangs until the test opens the gate (60 s at most)
	i=0
	while [ "$HB_SEQ" = 1 ] && [ ! -e "${0%/*}/gate" ] && [ $i -lt 600 ]; do
		sleep 0.1; i=$((i + 1))
	done
	exit 0
	EOS
	chmod +x "$h"
	p2=$(free_port)
	hb_start w5 - hbwatch -k "$KEY" -n a -i 100ms -D 500ms -I 60s -T 90s \
	    -e "$h" -l "udp:127.0.0.1:$p2" b
	# 300 times up and left: 1200 events, while the first handler hangs
	for i in $(seq 1001 1300); do
		hbpkt -k "$KEY" -n b -I "$i" -u "127.0.0.1:$p2"
		hbpkt -k "$KEY" -n b -I "$i" -S 2 -t leaving -u "127.0.0.1:$p2"
	done
	wait_line w5 '^[0-9.]+ - quorum quorum=no votes=1 size=2 seq=1200$' 10
	run -0 hb_status w5
	[[ "$output" =~ events-unwritten=0\ events-unhandled=175$ ]]
	grep -q 'hbwatch: handler too slow, 1 event not handed on (1 in all)$' "$BATS_TEST_TMPDIR/w5.err"
	# the newest events are handed on once the first handler is done
	touch "$BATS_TEST_TMPDIR/gate"
	wait_for 40 grep -q '^1200 - quorum$' "$log"
	[ "$(sed -n 1p "$log")" = "1 b up" ]
	[ "$(sed -n 2p "$log")" = "177 b up" ]
	kill -0 "$(cat "$BATS_TEST_TMPDIR/w5.pid")"
}

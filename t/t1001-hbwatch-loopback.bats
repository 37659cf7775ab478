#!/usr/bin/env bats
# hbsend and hbwatch on 127.0.0.1: membership, timing, stalls, handlers,
# the pipe medium and -1.  Interval 100ms, warntime 300ms, deadtime 500ms.

setup() {
	load lib/common
	load lib/hb
	hb_key
	P=$(free_port)
	T="-i 100ms -w 300ms -D 500ms"
}

teardown() {
	stop_all_daemons
}

watch() {	# watch [ARG...]: hbwatch as node a, peer b, on port $P
	hb_start w - hbwatch -k "$KEY" -n a $T -I 10s -l "udp:127.0.0.1:$P" \
	    "$@" b
}

send() {	# send NAME [ARG...]: hbsend as node b to port $P
	local name=$1; shift
	hb_start "$name" - hbsend -k "$KEY" -n b -i 100ms "$@" \
	    "udp:127.0.0.1:$P"
}

@test "usage errors exit 100" {
	run -100 --separate-stderr hbsend
	[ "$stderr" = "usage: hbsend [-v] [-C cluster] [-d fd] [-i interval] [-k keyfile] [-n node] [-S statefile] [-s status] medium ..." ]
	run -100 --separate-stderr hbsend -k "$KEY" tcp:1.2.3.4:5
	[ "$stderr" = "hbsend: medium tcp:1.2.3.4:5: unknown medium (udp:, mcast:, bcast: or -)" ]
	run -100 --separate-stderr hbwatch -k "$KEY" -l udp:127.0.0.1:$P
	[ "$stderr" = "usage: hbwatch [-1v] [-C cluster] [-D deadtime] [-d fd] [-e handler] [-F window] [-I initdead] [-i interval] [-k keyfile] [-l medium] [-n node] [-T timeout] [-w warntime] node ..." ]
	run -100 --separate-stderr hbwatch -k "$KEY" -l udp:127.0.0.1:0 b
	[ "$stderr" = "hbwatch: -l udp:127.0.0.1:0: bad port" ]
	run -100 --separate-stderr hbwatch -k "$KEY" -w 2s -l udp:127.0.0.1:$P b
	[ "$stderr" = "hbwatch: -w: the warntime must be between the interval and the deadtime" ]
	run -100 --separate-stderr hbwatch -k "$KEY" -D 100ms -l udp:127.0.0.1:$P b
	[ "$stderr" = "hbwatch: -D: the deadtime must be longer than the interval" ]
	# more than 1h: now + deadtime could wrap, and every peer died at once
	run -100 --separate-stderr timeout 5 hbwatch -k "$KEY" -D 5124095576h -I 5124095576h -l udp:127.0.0.1:$P b
	[ "$stderr" = "hbwatch: -D 5124095576h: longer than 1h" ]
	run -100 --separate-stderr timeout 5 hbwatch -k "$KEY" -D 2s -I 61m -l udp:127.0.0.1:$P b
	[ "$stderr" = "hbwatch: -I 61m: longer than 1h" ]
	run -100 --separate-stderr hbwatch -k "$KEY" -n a -l udp:127.0.0.1:$P a
	[ "$stderr" = "hbwatch: a: named twice (this node is a)" ]
	chmod 644 "$KEY"
	run -100 --separate-stderr hbsend -k "$KEY" -n b udp:127.0.0.1:$P
	[ "$stderr" = "hbsend: key file $KEY: readable or writable by group or others (mode 0644); run chmod 600 $KEY" ]
}

@test "a port in use is a system error" {
	watch
	run -111 --separate-stderr hbwatch -k "$KEY" -n a -l "udp:127.0.0.1:$P" b
	[ "$stderr" = "hbwatch: udp:127.0.0.1:$P: bind: Address already in use" ]
}

@test "a peer comes up; kill -9 makes it dead within deadtime plus one interval" {
	watch
	send s -s hello
	wait_line w '^[0-9.]+ b up incarnation=[0-9]+ medium=udp:127\.0\.0\.1:'"$P"' status=hello quorum=yes seq=1$'
	wait_line w '^[0-9.]+ - quorum quorum=yes votes=2 size=2 seq=2$'
	local t0 t1
	t0=$(hb_now_ms)
	hb_kill s KILL
	wait_line w ' b dead ' 5
	t1=$(hb_ts_ms w ' b dead ')
	echo "kill to dead: $((t1 - t0))ms" >&3
	[ $((t1 - t0)) -le 600 ]
	grep -Eq '^[0-9.]+ b late silent=[0-9]+ms seq=3$' "$BATS_TEST_TMPDIR/w.out"
	grep -Eq '^[0-9.]+ b dead silent=[0-9]+ms quorum=no seq=4$' "$BATS_TEST_TMPDIR/w.out"
	grep -Eq '^[0-9.]+ - quorum quorum=no votes=1 size=2 seq=5$' "$BATS_TEST_TMPDIR/w.out"
	stop_daemon w
}

@test "SIGSTOP of the sender makes it dead, SIGCONT brings it back" {
	watch
	send s
	wait_line w ' b up '
	kill -STOP "$(cat "$BATS_TEST_TMPDIR/s.pid")"
	wait_line w ' b dead ' 5
	kill -CONT "$(cat "$BATS_TEST_TMPDIR/s.pid")"
	wait_line w ' b up .* seq=6$' 5
	[ "$(hb_count w ' b up ')" -eq 2 ]
	[ "$(hb_count w ' b restarted ')" -eq 0 ]
}

@test "SIGSTOP of hbwatch longer than deadtime gives a stall and no dead peer" {
	watch
	send s
	wait_line w ' b up '
	local w
	w=$(cat "$BATS_TEST_TMPDIR/w.pid")
	kill -STOP "$w"
	sleep 1.5	# the stop itself is the test: 3 deadtimes
	kill -s CONT "$w"
	wait_line w '^[0-9.]+ - stall late=[0-9.]+m?s seq=3$' 5
	# the peer kept sending: listen two more deadtimes, nothing else
	sleep 1
	kill -0 "$(cat "$BATS_TEST_TMPDIR/s.pid")"
	[ "$(hb_count w ' b (dead|late) ')" -eq 0 ]
	[ "$(wc -l <"$BATS_TEST_TMPDIR/w.out")" -eq 3 ]
	# and a real death is still seen afterwards
	hb_kill s KILL
	wait_line w ' b dead ' 5
}

@test "SIGTERM gives left, not dead" {
	watch
	send s
	wait_line w ' b up '
	stop_daemon s
	wait_line w '^[0-9.]+ b left quorum=no seq=3$' 5
	sleep 0.7
	[ "$(hb_count w ' b (dead|late) ')" -eq 0 ]
	# it comes back up when it starts again
	send s2
	wait_line w ' b up .* seq=5$' 5
}

@test "a restart within deadtime gives restarted" {
	watch
	send s -s one
	wait_line w ' b up '
	local inc
	inc=$(grep ' b up ' "$BATS_TEST_TMPDIR/w.out" | sed 's/.*incarnation=\([0-9]*\).*/\1/')
	hb_kill s KILL
	send s2 -s two
	wait_line w ' b restarted ' 5
	grep -Eq "^[0-9.]+ b restarted incarnation=[0-9]+ medium=udp:127\.0\.0\.1:$P status=two seq=3$" "$BATS_TEST_TMPDIR/w.out"
	local inc2
	inc2=$(grep ' b restarted ' "$BATS_TEST_TMPDIR/w.out" | sed 's/.*incarnation=\([0-9]*\).*/\1/')
	[ "$inc2" -gt "$inc" ]
	sleep 0.7
	[ "$(hb_count w ' b dead ')" -eq 0 ]
}

@test "status lines from stdin become status events" {
	watch
	mkfifo "$BATS_TEST_TMPDIR/st"
	exec 4<>"$BATS_TEST_TMPDIR/st"
	HB_IN=$BATS_TEST_TMPDIR/st hb_start s - hbsend -k "$KEY" -n b \
	    -i 100ms -s - "udp:127.0.0.1:$P"
	wait_line w ' b up .* status= '
	echo "role=primary disk=UpToDate" >&4
	wait_line w '^[0-9.]+ b status status=role=primary%20disk=UpToDate seq=3$'
	echo "100% done" >&4
	wait_line w '^[0-9.]+ b status status=100%25%20done seq=4$'
	# the end of the input keeps the last status
	exec 4>&-
	sleep 0.3
	[ "$(wc -l <"$BATS_TEST_TMPDIR/w.out")" -eq 4 ]
}

@test "two media: losing one is a link event, losing both is dead" {
	local p1 p2 q1 q2
	p1=$(free_port); p2=$(free_port); q1=$(free_port); q2=$(free_port)
	hb_start w - hbwatch -k "$KEY" -n a $T -l "udp:127.0.0.1:$p1" \
	    -l "udp:127.0.0.1:$p2" b
	# two relays that can be cut: q1 -> p1 and q2 -> p2
	start_bg r1 socat -u "UDP4-RECV:$q1,bind=127.0.0.1" "UDP4-SENDTO:127.0.0.1:$p1"
	start_bg r2 socat -u "UDP4-RECV:$q2,bind=127.0.0.1" "UDP4-SENDTO:127.0.0.1:$p2"
	wait_for 5 eval "ss -Hlun | grep -q ':$q1 ' && ss -Hlun | grep -q ':$q2 '"
	hb_start s - hbsend -k "$KEY" -n b -i 100ms "udp:127.0.0.1:$q1" "udp:127.0.0.1:$q2"
	wait_line w ' b up '
	wait_line w ' b link-up medium=udp:127\.0\.0\.1:[0-9]+ seq=3$'
	hb_kill r2
	wait_line w "^[0-9.]+ b link-down medium=udp:127\.0\.0\.1:$p2 silent=[0-9]+ms seq=4$" 5
	sleep 0.6
	[ "$(hb_count w ' b (dead|late) ')" -eq 0 ]
	start_bg r2 socat -u "UDP4-RECV:$q2,bind=127.0.0.1" "UDP4-SENDTO:127.0.0.1:$p2"
	wait_line w "^[0-9.]+ b link-up medium=udp:127\.0\.0\.1:$p2 seq=5$" 5
	hb_kill r1
	hb_kill r2
	wait_line w '^[0-9.]+ b dead silent=[0-9]+ms quorum=no seq=7$' 5
	run -0 cut -d' ' -f2- "$BATS_TEST_TMPDIR/w.out"
	[ "${#lines[@]}" -eq 8 ]
	[[ "${lines[5]}" =~ ^b\ late\ silent=[0-9]+ms\ seq=6$ ]]
	[ "${lines[7]}" = "- quorum quorum=no votes=1 size=2 seq=8" ]
}

@test "the handler gets every event in order; a hanging one is killed and delays nothing" {
	cat >"$BATS_TEST_TMPDIR/h" <<-'EOS'
	#!/bin/sh
	echo "$HB_NODE $HB_EVENT $HB_SEQ $*" >>"$LOG"
	[ "$HB_EVENT" = up ] && exec sleep 30
	exit 0
	EOS
	chmod +x "$BATS_TEST_TMPDIR/h"
	export LOG=$BATS_TEST_TMPDIR/log
	watch -e "$BATS_TEST_TMPDIR/h" -T 2s
	send s
	wait_line w ' b up '
	hb_kill s KILL
	# the dead line comes within deadtime while the handler of "up" hangs
	wait_line w ' b dead ' 2
	[ "$(wc -l <"$LOG")" -eq 1 ]
	wait_for 5 grep -q '^- quorum 5 ' "$LOG"
	grep -q 'still running after 2000ms, killed' "$BATS_TEST_TMPDIR/w.err"
	run -0 cut -d' ' -f1-3 "$LOG"
	[ "${lines[0]}" = "b up 1" ]
	[ "${lines[1]}" = "- quorum 2" ]
	[ "${lines[2]}" = "b late 3" ]
	[ "${lines[3]}" = "b dead 4" ]
	[ "${lines[4]}" = "- quorum 5" ]
	# the arguments are the fields of the line
	[ "$(sed -n 4p "$LOG" | cut -d' ' -f5-)" = "$(sed -n 4p "$BATS_TEST_TMPDIR/w.out" | cut -d' ' -f2-)" ]
}

@test "-1 exits 0 with quorum and 1 without" {
	run -1 --separate-stderr hbwatch -1 -k "$KEY" -n a $T -l "udp:127.0.0.1:$P" b c
	[ "${#lines[@]}" -eq 3 ]
	[[ "${lines[0]}" =~ ^[0-9.]+\ b\ dead\ seq=1$ ]]
	[[ "${lines[1]}" =~ ^[0-9.]+\ c\ dead\ seq=2$ ]]
	[[ "${lines[2]}" =~ ^[0-9.]+\ -\ quorum\ quorum=no\ votes=1\ size=3\ seq=3$ ]]
	send s
	run -0 --separate-stderr hbwatch -1 -k "$KEY" -n a $T -l "udp:127.0.0.1:$P" b c
	[[ "${lines[0]}" =~ ^[0-9.]+\ b\ up\ seq=1$ ]]
	[[ "${lines[1]}" =~ ^[0-9.]+\ c\ dead\ seq=2$ ]]
	[[ "${lines[2]}" =~ ^[0-9.]+\ -\ quorum\ quorum=yes\ votes=2\ size=3\ seq=3$ ]]
	# four nodes, two up: no majority
	run -1 --separate-stderr hbwatch -1 -k "$KEY" -n a $T -l "udp:127.0.0.1:$P" b c d
	[[ "${lines[3]}" =~ quorum=no\ votes=2\ size=4 ]]
}

@test "hbsend - | socat | hbwatch -l - works, and the end of the pipe is dead" {
	local f=$BATS_TEST_TMPDIR/pipe
	mkfifo "$f"
	start_bg p sh -c 'socat -u - - <"$0" | exec hbwatch "$@" -l - b' "$f" \
	    -k "$KEY" -n a $T
	HB_OUT=$f hb_start s - hbsend -k "$KEY" -n b -i 100ms -
	wait_line p '^[0-9.]+ b up incarnation=[0-9]+ medium=pipe:stdin status= quorum=yes seq=1$'
	hb_kill s KILL
	wait_line p '^[0-9.]+ b late silent=[0-9]+ms seq=3$' 5
	wait_line p '^[0-9.]+ b dead silent=[0-9]+ms quorum=no seq=4$' 5
	grep -q 'stdin closed, no more heartbeats from the pipe' "$BATS_TEST_TMPDIR/p.err"
}

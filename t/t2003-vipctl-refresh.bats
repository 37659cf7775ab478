#!/usr/bin/env bats
# vipctl add -r: stays in the foreground and announces again every period
# while the address is held; SIGTERM ends it (and -x gives the address up).

setup() {
	load lib/common
	load lib/netns
	[ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces"
	net_up a cl
	MAC_A=$(net_mac a)
	BOGUS=02:00:00:00:00:99
}

teardown() {
	stop_all_daemons
	net_down
}

neigh_mac() {
	nsx cl ip neigh show "$1" dev eth0 |
	    awk '{ for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1) }'
}

# holder ARGS...: "vipctl add -d 3 ARGS" in node a, waiting until ready
holder() {
	local d=$BATS_TEST_TMPDIR
	mkfifo "$d/vip.ready"
	setsid ip netns exec "${NET_PREFIX}a" vipctl add -d 3 "$@" \
	    3>"$d/vip.ready" >"$d/vip.out" 2>"$d/vip.err" &
	echo $! >"$d/vip.pid"
	read -r -t 10 _ <"$d/vip.ready" || { cat "$d/vip.err" >&2; return 1; }
}

# refreshed ADDR/PREFIX: a wrong neighbour entry on the client is put right
# by the next refresh, again and again, and SIGTERM with -x gives it up.
refreshed() {
	local vip=$1 addr=${1%/*} six= i
	case $addr in *:*) six=-6 ;; esac

	holder -N 1 -r 300ms -x "$vip" dev eth0
	nsx cl ping $six -c 1 -W 2 "$addr" >/dev/null
	for i in 1 2 3; do
		nsx cl ip neigh replace "$addr" lladdr "$BOGUS" nud stale \
		    dev eth0 || return 1
		[ "$(neigh_mac "$addr")" = "$BOGUS" ] || return 1
		wait_for 2 eval '[ "$(neigh_mac "$addr")" = "$MAC_A" ]' ||
		    return 1
	done
	stop_daemon vip
	[ "$(cat "$BATS_TEST_TMPDIR/vip.out")" = "$vip dev eth0: added
$vip dev eth0: deleted" ]
	[ ! -s "$BATS_TEST_TMPDIR/vip.err" ]
	run -0 nsx a vipctl show dev eth0
	[[ "$output" != *"$vip"* ]]
}

@test "IPv4: -r announces again while held; SIGTERM with -x deletes the address" {
	refreshed 198.18.0.50/24
}

@test "IPv6: -r announces again while held; SIGTERM with -x deletes the address" {
	refreshed 2001:2::50/64
}

@test "without -x, SIGTERM leaves the address in place" {
	holder -N 1 -r 1s 198.18.0.50/24 dev eth0
	stop_daemon vip
	[ "$(cat "$BATS_TEST_TMPDIR/vip.out")" = "198.18.0.50/24 dev eth0: added" ]
	run -0 nsx a vipctl show dev eth0
	[[ "$output" == *"198.18.0.50/24 dev eth0"* ]]
}

@test "-r ends with status 1 when the address is taken away" {
	holder -N 0 -r 100ms 198.18.0.50/24 dev eth0
	local pid
	pid=$(cat "$BATS_TEST_TMPDIR/vip.pid")
	nsx a vipctl del 198.18.0.50/24 dev eth0 >/dev/null
	wait_for 5 eval "! kill -0 $pid 2>/dev/null"
	rm -f "$BATS_TEST_TMPDIR/vip.pid"
	run -1 wait "$pid"
	[ "$(cat "$BATS_TEST_TMPDIR/vip.err")" = "vipctl: 198.18.0.50/24 is no longer on eth0" ]
}

#!/usr/bin/env bats
# examples/rc.failover fed recorded hbwatch lines, on a real cluster: three
# blkmirror nodes in network namespaces, ext4 through nbdfuse and a loop
# device, vipctl for the VIP, a client namespace that checks who answers.
# The right actions in the right order; nothing without quorum, nothing
# on a node that is not the successor; a failed step undone, so that the
# VIP is never held without a promoted, mounted disk.

load lib/common
load lib/netns
load lib/hb
load lib/wire

setup() {
	[ "$(id -u)" = 0 ] || skip "needs root (namespaces, loop devices, mounts)"
	net_up
}

teardown() {
	exec 5>&- 2>/dev/null
	wire_cleanup
	stop_all_daemons
	net_down
}

# Recorded from b's hbwatch in the demo: a, the primary, dies.
a_dies() {
	cat <<-'EOF'
	1795571920.734620 a up incarnation=1795571920632746 medium=udp:198.18.0.1:694 status=secondary quorum=yes seq=1
	1795571920.734655 - quorum quorum=yes votes=2 size=3 seq=2
	1795571920.857802 c up incarnation=1795571920857763 medium=udp:198.18.0.3:694 status=secondary quorum=yes seq=3
	1795571921.935113 a status status=primary seq=4
	1795571925.062271 a late silent=302ms seq=5
	1795571925.262740 a dead silent=502ms quorum=yes seq=6
	EOF
}

# the loop device that node N attached
loop_of() { cat "$W/$1/loop"; }

@test "a dies: b promotes, checks and mounts, starts the service, adds the VIP; on quorum loss it releases in reverse" {
	wire_init mkfs
	wire_up
	kill_daemon bma || :
	wire_wait b peer.a.connected 0
	mkfifo "$W/b.fifo"
	wire_feed b <"$W/b.fifo" &
	local feed=$!
	exec 5>"$W/b.fifo"
	a_dies >&5
	wait_for 20 grep -q 'take over: done' "$W/b.log"
	run -0 wire_actions b
	local l=$(loop_of b)
	[ "${lines[0]}" = "b: watching  a c (preferred primary a, auto-failback no)" ]
	[ "${lines[1]}" = "b: take over: a dead, b has quorum and is the successor of a" ]
	[ "${lines[2]}" = "b: promote: primary" ]
	[ "${lines[3]}" = "b: attach: $l" ]
	[ "${lines[4]}" = "b: fsck: $l: clean (status 0)" ]
	[ "${lines[5]}" = "b: mount: $l on $W/b/mnt" ]
	[[ "${lines[6]}" =~ ^"b: service: started (pid "[0-9]+"): exec sleep 1000"$ ]]
	[ "${lines[7]}" = "b: vip: $WIRE_VIP/24 dev eth0: added" ]
	[ "${lines[8]}" = "b: take over: done, b is primary" ]
	[ "${#lines[@]}" = 9 ]
	# and it is so: primary, mounted, the service runs, b answers for the VIP
	[ "$(wire_st b role)" = primary ]
	mountpoint -q "$W/b/mnt"
	wire_alive "$(cat "$W/b/service.pid")"
	wire_vip b
	nsx cl ping -c 1 -W 2 "$WIRE_VIP" >/dev/null
	run -0 nsx cl arping -c 1 -w 2 -i eth0 "$WIRE_VIP"
	[[ "$output" == *"bytes from $(net_mac b) ($WIRE_VIP)"* ]]
	# the file system is writable, on the replicated disk
	echo hello >"$W/b/mnt/f"
	sync "$W/b/mnt/f"
	local svc=$(cat "$W/b/service.pid")
	# c dies too: b loses quorum and gives everything up, VIP first
	printf '%s\n' \
	    "1795571930.101010 c late silent=301ms seq=7" \
	    "1795571930.301010 c dead silent=501ms quorum=no seq=8" \
	    "1795571930.301040 - quorum quorum=no votes=1 size=3 seq=9" >&5
	exec 5>&-
	wait "$feed"
	run -0 wire_actions b
	[ "${lines[9]}" = "b: no action: c dead, but b has no quorum" ]
	[ "${lines[10]}" = "b: release: b lost quorum (1 of 3 votes)" ]
	[ "${lines[11]}" = "b: vip: $WIRE_VIP/24 dev eth0: deleted" ]
	[ "${lines[12]}" = "b: service: stopped (pid $svc)" ]
	[ "${lines[13]}" = "b: unmount: $W/b/mnt" ]
	[ "${lines[14]}" = "b: detach: $l" ]
	[ "${lines[15]}" = "b: demote: secondary" ]
	[ "${lines[16]}" = "b: release: done, b is secondary" ]
	[ "${lines[17]}" = "b: end of events" ]
	[ "${#lines[@]}" = 18 ]
	[ "$(wire_st b role)" = secondary ]
	not mountpoint -q "$W/b/mnt"
	not wire_alive "$svc"
	not wire_vip b
	[ -z "$(losetup -a | grep -F "$W")" ]
	run -1 nsx cl ping -c 1 -W 1 "$WIRE_VIP"
	# what b wrote reached c's copy too
	wire_wait b peer.c.lag_bytes 0
}

@test "without quorum, or on a node that is not the successor, nothing happens" {
	wire_init mkfs
	wire_up
	kill_daemon bma || :
	wire_wait b peer.a.connected 0
	# b hears neither a nor c any more: no quorum
	wire_feed b <<-'EOF'
	1795571920.734620 a up incarnation=1795571920632746 medium=udp:198.18.0.1:694 status=primary quorum=yes seq=1
	1795571920.734655 - quorum quorum=yes votes=2 size=3 seq=2
	1795571924.262740 c dead silent=502ms quorum=yes seq=3
	1795571925.262740 a dead silent=502ms quorum=no seq=4
	1795571925.262760 - quorum quorum=no votes=1 size=3 seq=5
	EOF
	run -0 wire_actions b
	[ "${lines[1]}" = "b: no action: c dead, its successor is nobody" ]
	[ "${lines[2]}" = "b: no action: a dead, but b has no quorum" ]
	[ "${lines[3]}" = "b: end of events" ]
	[ "${#lines[@]}" = 4 ]
	# c has quorum, but is not a's successor
	wire_feed c <<-'EOF'
	1795571920.857802 a up incarnation=1795571920632746 medium=udp:198.18.0.1:694 status=primary quorum=no seq=1
	1795571920.857902 b up incarnation=1795571920857763 medium=udp:198.18.0.2:694 status=secondary quorum=yes seq=2
	1795571920.857935 - quorum quorum=yes votes=3 size=3 seq=3
	1795571925.262740 a dead silent=502ms quorum=yes seq=4
	EOF
	run -0 wire_actions c
	[ "${lines[1]}" = "c: no action: a dead, its successor is b" ]
	[ "${lines[2]}" = "c: end of events" ]
	[ "${#lines[@]}" = 3 ]
	for n in b c; do
		[ "$(wire_st $n role)" = secondary ]
		not mountpoint -q "$W/$n/mnt"
		not wire_vip $n
		[ ! -e "$W/$n/loop" ]
	done
}

@test "a promotion that blkmirror vetoes goes no further: no mount, no VIP" {
	wire_init mkfs
	wire_up
	# (a is alive and primary: only its heartbeats were lost)
	a_dies | wire_feed b
	run -0 wire_actions b
	[ "${lines[1]}" = "b: take over: a dead, b has quorum and is the successor of a" ]
	[ "${lines[2]}" = "b: promote: refused: vetoed by a (primary)" ]
	[ "${lines[3]}" = "b: take over: abandoned, still secondary" ]
	[ "${lines[4]}" = "b: end of events" ]
	[ "${#lines[@]}" = 5 ]
	[ "$(wire_st b role)" = secondary ]
	[ "$(wire_st a role)" = primary ]
	not wire_vip b
	[ ! -e "$W/b/loop" ]
}

@test "no file system on the disk: b demotes again and adds no VIP" {
	wire_init
	wire_up
	kill_daemon bma || :
	wire_wait b peer.a.connected 0
	a_dies | wire_feed b
	run -0 wire_actions b
	[ "${lines[1]}" = "b: take over: a dead, b has quorum and is the successor of a" ]
	[ "${lines[2]}" = "b: promote: primary" ]
	[[ "${lines[3]}" =~ ^"b: attach: /dev/loop"[0-9]+$ ]]
	local l=${lines[3]#b: attach: }
	[[ "${lines[4]}" =~ ^"b: fsck: $l: failed with status 8: " ]]
	[ "${lines[5]}" = "b: detach: $l" ]
	[ "${lines[6]}" = "b: demote: secondary" ]
	[ "${lines[7]}" = "b: take over: abandoned: no file system" ]
	[ "${lines[8]}" = "b: end of events" ]
	[ "${#lines[@]}" = 9 ]
	[ "$(wire_st b role)" = secondary ]
	not wire_vip b
	not grep -q " $W/b/fuse " /proc/mounts
}

@test "the VIP answered by another host: b undoes the take-over" {
	wire_init mkfs
	wire_up
	kill_daemon bma || :
	wire_wait b peer.a.connected 0
	nsx cl ip addr add "$WIRE_VIP/24" dev eth0
	a_dies | wire_feed b
	run -0 wire_actions b
	local l=$(wire_actions b | sed -n 's/^b: attach: //p')
	[ "${lines[2]}" = "b: promote: primary" ]
	[ "${lines[5]}" = "b: mount: $l on $W/b/mnt" ]
	[[ "${lines[6]}" =~ ^"b: service: started (pid "([0-9]+)"): exec sleep 1000"$ ]]
	local svc=${BASH_REMATCH[1]}
	[ "${lines[7]}" = "b: vip: vipctl: $WIRE_VIP is held by $(net_mac cl) on eth0: not added" ]
	[ "${lines[8]}" = "b: service: stopped (pid $svc)" ]
	[ "${lines[9]}" = "b: unmount: $W/b/mnt" ]
	[ "${lines[10]}" = "b: detach: $l" ]
	[ "${lines[11]}" = "b: demote: secondary" ]
	[ "${lines[12]}" = "b: take over: abandoned: no virtual IP" ]
	[ "${#lines[@]}" = 14 ]
	[ "$(wire_st b role)" = secondary ]
	not wire_vip b
	not mountpoint -q "$W/b/mnt"
	not wire_alive "$svc"
}

@test "the preferred primary starts the service at cluster start, not when it returns to a running primary" {
	wire_init mkfs
	wire_start a
	wire_start b
	wire_start c
	wire_wait a peer.b.state uptodate
	wire_wait a peer.c.state uptodate
	wire_feed a <<-'EOF'
	1795571913.180750 b up incarnation=1795571913180750 medium=udp:198.18.0.2:694 status= quorum=yes seq=1
	1795571913.180780 - quorum quorum=yes votes=2 size=3 seq=2
	1795571913.181001 b status status=secondary seq=3
	1795571913.325282 c up incarnation=1795571913325282 medium=udp:198.18.0.3:694 status=secondary quorum=yes seq=4
	EOF
	run -0 wire_actions a
	[ "${lines[1]}" = "a: take over: a is the preferred primary, has quorum, and no live peer is primary" ]
	[ "${lines[2]}" = "a: promote: primary" ]
	[ "${lines[8]}" = "a: take over: done, a is primary" ]
	[ "${#lines[@]}" = 10 ]
	[ "$(wire_st a role)" = primary ]
	wire_vip a
	# the takeover's undo, as rc.hatrio stop runs it
	run -0 nsenter --net="/run/netns/${NET_PREFIX}a" \
	    "$HATRIO_ROOT/examples/rc.failover" -c "$W/hatrio.conf" -n a \
	    release "rc.hatrio stop"
	not wire_vip a
	[ "$(wire_st a role)" = secondary ]
	# b is primary now; a, back, hears it and stays secondary
	wire_wait a peer.b.state uptodate
	blkmirror ctl "$W/b/ctl.sock" primary
	: >"$W/a.log"
	wire_feed a <<-'EOF'
	1795571930.632746 b up incarnation=1795571920734620 medium=udp:198.18.0.2:694 status=primary quorum=yes seq=1
	1795571930.632790 - quorum quorum=yes votes=2 size=3 seq=2
	1795571930.857763 c up incarnation=1795571920857763 medium=udp:198.18.0.3:694 status=secondary quorum=yes seq=3
	EOF
	run -0 wire_actions a
	[ "${lines[1]}" = "a: end of events" ]
	[ "${#lines[@]}" = 2 ]
	[ "$(wire_st a role)" = secondary ]
}

@test "auto-failback on: b hands back once a is in sync, and a takes over" {
	wire_init mkfs
	echo "AUTO_FAILBACK=yes" >>"$W/hatrio.conf"
	wire_up
	# b runs the service (a took the role back by hand, say)
	blkmirror ctl "$W/a/ctl.sock" secondary
	run -0 nsenter --net="/run/netns/${NET_PREFIX}b" \
	    "$HATRIO_ROOT/examples/rc.failover" -c "$W/hatrio.conf" -n b \
	    takeover "a test"
	wire_vip b
	wire_wait b peer.a.state uptodate
	: >"$W/b.log"
	wire_feed b <<-'EOF'
	1795571930.632746 a up incarnation=1795571930632746 medium=udp:198.18.0.1:694 status=secondary quorum=yes seq=1
	1795571930.632790 - quorum quorum=yes votes=2 size=3 seq=2
	EOF
	run -0 wire_actions b
	[ "${lines[0]}" = "b: watching  a c (preferred primary a, auto-failback yes)" ]
	[ "${lines[1]}" = "b: release: auto-failback: a, the preferred primary, is back and in sync" ]
	[ "${lines[2]}" = "b: vip: $WIRE_VIP/24 dev eth0: deleted" ]
	[ "${lines[6]}" = "b: demote: secondary" ]
	[ "${lines[7]}" = "b: release: done, b is secondary" ]
	[ "${#lines[@]}" = 9 ]
	not wire_vip b
	# a hears b give up the role and takes it back
	wire_feed a <<-'EOF'
	1795571930.700001 b up incarnation=1795571920734620 medium=udp:198.18.0.2:694 status=primary quorum=yes seq=1
	1795571930.700020 - quorum quorum=yes votes=2 size=3 seq=2
	1795571930.857763 c up incarnation=1795571920857763 medium=udp:198.18.0.3:694 status=secondary quorum=yes seq=3
	1795571931.100000 b status status=secondary seq=4
	EOF
	run -0 wire_actions a
	[ "${lines[1]}" = "a: take over: a is the preferred primary, has quorum, and no live peer is primary" ]
	[ "${lines[8]}" = "a: take over: done, a is primary" ]
	[ "${#lines[@]}" = 10 ]
	wire_vip a
	[ "$(wire_st a role)" = primary ]
}

@test "auto-failback waits while a is being resynced, then hands back" {
	wire_init mkfs
	echo "AUTO_FAILBACK=yes" >>"$W/hatrio.conf"
	wire_up
	blkmirror ctl "$W/a/ctl.sock" secondary
	run -0 nsenter --net="/run/netns/${NET_PREFIX}b" \
	    "$HATRIO_ROOT/examples/rc.failover" -c "$W/hatrio.conf" -n b \
	    takeover "a test"
	# a is away while b writes: a needs a resync when it is back
	kill_daemon bma || :
	wire_wait b peer.a.connected 0
	head -c 4M /dev/urandom >"$W/b/mnt/new"
	sync "$W/b/mnt/new"
	wire_start a
	wire_wait b peer.a.state needs-resync
	: >"$W/b.log"
	mkfifo "$W/b.fifo"
	wire_feed b <"$W/b.fifo" &
	local feed=$!
	exec 5>"$W/b.fifo"
	echo "1795571950.632746 a up incarnation=1795571950632746 medium=udp:198.18.0.1:694 status=secondary quorum=yes seq=9" >&5
	wait_for 10 grep -q "b: auto-failback: waiting until a is in sync" "$W/b.log"
	wire_vip b
	[ "$(wire_st b role)" = primary ]
	# the resync: b hands back within a second of its end
	nsenter --net="/run/netns/${NET_PREFIX}b" resyncd sync -c "$W/b/ctl.sock" a >/dev/null
	wait_for 10 grep -q "b: release: done, b is secondary" "$W/b.log"
	exec 5>&-
	wait "$feed"
	run -0 wire_actions b
	[ "${lines[1]}" = "b: auto-failback: waiting until a is in sync" ]
	[ "${lines[2]}" = "b: release: auto-failback: a, the preferred primary, is back and in sync" ]
	[ "${lines[-2]}" = "b: release: done, b is secondary" ]
	not wire_vip b
}

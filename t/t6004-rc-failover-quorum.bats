#!/usr/bin/env bats
# examples/rc.failover when quorum is really lost: b, primary with ext4
# mounted, loses a and c; its blkmirror holds every I/O (suspend), so a
# plain umount would hang; the release still ends with the VIP gone, the
# file system detached, nbdfuse stopped and b secondary.

load lib/common
load lib/netns
load lib/hb
load lib/wire

setup() {
	[ "$(id -u)" = 0 ] || skip "needs root (namespaces, loop devices, mounts)"
	net_up
}

teardown() {
	wire_cleanup
	stop_all_daemons
	net_down
}

@test "quorum really lost, I/O suspended by blkmirror: the release still ends with no VIP, no mount, secondary" {
	wire_init mkfs
	echo "STEP_TIMEOUT=3" >>"$W/hatrio.conf"
	wire_up
	blkmirror ctl "$W/a/ctl.sock" secondary
	run -0 nsenter --net="/run/netns/${NET_PREFIX}b" \
	    "$HATRIO_ROOT/examples/rc.failover" -c "$W/hatrio.conf" -n b \
	    takeover "a test"
	wire_vip b
	# a and c die: b's blkmirror has no quorum and holds every write
	kill_daemon bma || :
	kill_daemon bmc || :
	wire_wait b quorum no
	: >"$W/b.log"
	timeout 60 bash -c "$(declare -f wire_feed); W=$W NET_PREFIX=$NET_PREFIX HATRIO_ROOT=$HATRIO_ROOT wire_feed b" <<-'EOF'
	1795571940.100000 a dead silent=501ms quorum=yes seq=5
	1795571940.100100 c dead silent=502ms quorum=no seq=6
	1795571940.100140 - quorum quorum=no votes=1 size=3 seq=7
	EOF
	run -0 wire_actions b
	[ "${lines[1]}" = "b: no action: a dead, b is primary already" ]
	[ "${lines[2]}" = "b: no action: c dead, but b has no quorum" ]
	[ "${lines[3]}" = "b: release: b lost quorum (1 of 3 votes)" ]
	[ "${lines[4]}" = "b: vip: $WIRE_VIP/24 dev eth0: deleted" ]
	[[ "${lines[5]}" =~ ^"b: service: stopped (pid "[0-9]+")"$ ]]
	[[ "${lines[6]}" =~ ^"b: unmount: $W/b/mnt"( busy or hung: detached lazily)?$ ]]
	[ "${lines[-1]}" = "b: end of events" ]
	[ "${lines[-2]}" = "b: release: done, b is secondary" ]
	not wire_vip b
	not grep -q " $W/b/mnt " /proc/mounts
	[ "$(wire_st b role)" = secondary ]
	run -1 nsx cl ping -c 1 -W 1 "$WIRE_VIP"
}

#!/usr/bin/env bats
# Probes of failover sequences: an old primary that comes back must not
# act as a second primary next to the one promoted meanwhile.

load lib/common
load lib/cluster

setup() {
	cl_init 64M
}

teardown() {
	stop_all_daemons
}

@test "old a restarted with -p while b is primary acknowledges no write" {
	cl_up
	run -0 qemu-io -f raw -c 'write -P 1 0 1M' "$(cl_uri a)"
	cl_kill a
	cl_wait b peer.a.connected 0
	cl_wait c peer.a.connected 0
	wait_for 5 cl_ctl b primary
	run -0 qemu-io -f raw -c 'write -P 2 0 512k' "$(cl_uri b)"
	# an rc script that starts the preferred primary as it always does
	cl_start a -p
	cl_wait a peer.b.connected 1
	cl_wait a peer.b.state sync-target
	# b is primary and has data a lacks: a must not take writes now
	run timeout 5 qemu-io -f raw -c 'write -P 3 2M 4k' "$(cl_uri a)"
	echo "$output"
	[ "$status" -ne 0 ]
	run -0 qemu-io -f raw -c 'read -P 2 0 512k' -c 'read -P 1 512k 512k' \
	    "$(cl_uri b)"
}

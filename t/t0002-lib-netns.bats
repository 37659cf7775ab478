#!/usr/bin/env bats
# t/lib/netns.bash: the namespace network every network test uses.

setup() {
	load lib/common
	load lib/netns
	[ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces"
	net_up
}

teardown() {
	net_down
}

@test "the network comes up: the client pings every node, IPv4 and IPv6" {
	local n
	for n in a b c; do
		nsx cl ping -c 1 -W 2 "$(net_ip4 "$n")" >/dev/null || return 1
		nsx cl ping -6 -c 1 -W 2 "$(net_ip6 "$n")" >/dev/null || return 1
	done
}

@test "nothing routes out of the namespaces" {
	run -0 nsx a ip route show default
	[ -z "$output" ]
	run -0 nsx a ip -6 route show default
	[ -z "$output" ]
}

@test "a cut link stops the ping and a restored one brings it back" {
	nsx cl ping -c 1 -W 2 "$(net_ip4 a)" >/dev/null
	net_cut a
	run -1 nsx cl ping -c 2 -i 0.2 -W 1 "$(net_ip4 a)"
	# the other nodes are still there
	nsx cl ping -c 1 -W 2 "$(net_ip4 b)" >/dev/null
	net_restore a
	wait_for 10 nsx cl ping -c 1 -W 1 "$(net_ip4 a)"
}

@test "net_down removes every namespace of the test, and what runs inside" {
	nsx a sleep 300 3>&- &
	local pid=$!
	run -0 net_list
	[ "${#lines[@]}" -eq 5 ]
	net_down
	run -1 net_list
	[ -z "$output" ]
	wait_for 5 eval "! kill -0 $pid 2>/dev/null"
}

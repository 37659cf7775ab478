#!/usr/bin/env bats
# vipctl: the VIP moves from node a to node b, IPv4 and IPv6, and the
# client follows at once because of the announcement, not because its
# neighbour entry timed out.

setup() {
	load lib/common
	load lib/netns
	[ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces"
	net_up a b cl
	MAC_A=$(net_mac a)
	MAC_B=$(net_mac b)
}

teardown() {
	stop_all_daemons
	net_down
}

# neigh NODE ADDR: "MAC STATE" of NODE's neighbour entry for ADDR
neigh() {
	nsx "$1" ip neigh show "$2" dev eth0 |
	    awk '{ for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1), $NF }'
}

# move ADDR/PREFIX: the whole story of a failover for one address
move() {
	local vip=$1 addr=${1%/*} six=
	case $addr in *:*) six=-6 ;; esac

	run -0 --separate-stderr nsx a vipctl add -N 1 "$vip" dev eth0
	[ "$output" = "$vip dev eth0: added" ] && [ -z "$stderr" ]
	nsx cl ping $six -c 1 -W 2 "$addr" >/dev/null
	# the client resolved the VIP to a, and that entry is fresh: nothing
	# would make it look the VIP up again for many seconds
	[ "$(neigh cl "$addr")" = "$MAC_A REACHABLE" ]

	# b asks the link: a holds it
	run -1 --separate-stderr nsx b vipctl check -T 500ms "$addr" dev eth0
	[ "$output" = "$addr: held by $MAC_A" ] && [ -z "$stderr" ]

	# a dies; b takes the address over with one announcement
	net_cut a
	run -0 --separate-stderr nsx b vipctl add -N 1 "$vip" dev eth0
	[ "$output" = "$vip dev eth0: added" ] && [ -z "$stderr" ]
	# right after it, the entry names b; STALE says that an unsolicited
	# packet changed it, not a lookup of the client's own (REACHABLE)
	[ "$(neigh cl "$addr")" = "$MAC_B STALE" ]
	run -0 nsx cl ping $six -c 1 -W 2 "$addr"
	[ "$(neigh cl "$addr" | cut -d' ' -f1)" = "$MAC_B" ]
}

# stay ADDR/PREFIX: the same without an announcement: the client keeps
# talking to the dead node, which shows that move's check can fail.
stay() {
	local vip=$1 addr=${1%/*} six=
	case $addr in *:*) six=-6 ;; esac

	nsx a vipctl add -N 1 "$vip" dev eth0 >/dev/null
	nsx cl ping $six -c 1 -W 2 "$addr" >/dev/null
	net_cut a
	run -0 nsx b vipctl add -N 0 "$vip" dev eth0
	run -1 nsx cl ping $six -c 4 -i 0.25 -W 1 "$addr"
	[ "$(neigh cl "$addr" | cut -d' ' -f1)" = "$MAC_A" ]
}

@test "IPv4: check sees a's MAC; after the cut b takes over and the client follows at once" {
	move 198.18.0.50/24
}

@test "IPv6: check sees a's MAC; after the cut b takes over and the client follows at once" {
	move 2001:2::50/64
}

@test "IPv4: without an announcement the client stays with the dead node" {
	stay 198.18.0.50/24
}

@test "IPv6: without an announcement the client stays with the dead node" {
	stay 2001:2::50/64
}

@test "add --check refuses while a holds the address, IPv4 and IPv6" {
	local vip addr
	for vip in 198.18.0.50/24 2001:2::50/64; do
		addr=${vip%/*}
		nsx a vipctl add -N 0 "$vip" dev eth0 >/dev/null || return 1
		run -1 --separate-stderr nsx b vipctl add --check -T 300ms \
		    "$vip" dev eth0
		[ "$stderr" = "vipctl: $addr is held by $MAC_A on eth0: not added" ]
		[ -z "$output" ]
		run -1 --separate-stderr nsx b vipctl add --check -N 0 -T 300ms \
		    "$vip" dev eth0
		[ "$stderr" = "vipctl: $addr is held by $MAC_A on eth0: not added" ]
		# b did not take it
		run -0 nsx b vipctl show dev eth0
		[[ "$output" != *"$vip"* ]]
		# once a gave it up, the same command adds it
		nsx a vipctl del "$vip" dev eth0 >/dev/null || return 1
		run -0 --separate-stderr nsx b vipctl add --check -T 300ms \
		    -N 1 "$vip" dev eth0
		[ "$output" = "$vip dev eth0: added" ] && [ -z "$stderr" ]
		run -1 nsx a vipctl check -T 300ms "$addr" dev eth0
		[ "$output" = "$addr: held by $MAC_B" ] || return 1
	done
}

@test "check answers free when nobody holds the address" {
	run -0 --separate-stderr nsx b vipctl check -T 300ms 198.18.0.50 dev eth0
	[ "$output" = "198.18.0.50: free" ] && [ -z "$stderr" ]
	run -0 --separate-stderr nsx b vipctl check -T 300ms 2001:2::50/64 dev eth0
	[ "$output" = "2001:2::50: free" ] && [ -z "$stderr" ]
	# an address only this node has does not count as held elsewhere
	nsx b vipctl add -N 0 198.18.0.50/24 dev eth0 >/dev/null
	run -0 nsx b vipctl check -T 300ms 198.18.0.50 dev eth0
	[ "$output" = "198.18.0.50: free" ]
}

@test "add and del are idempotent and say so" {
	local vip
	for vip in 198.18.0.50/24 2001:2::50/64; do
		run -0 --separate-stderr nsx a vipctl add -N 0 "$vip" dev eth0
		[ "$output" = "$vip dev eth0: added" ] && [ -z "$stderr" ]
		run -0 --separate-stderr nsx a vipctl add -N 0 "$vip" dev eth0
		[ "$output" = "$vip dev eth0: already held" ] && [ -z "$stderr" ]
		run -0 nsx a ip -o addr show dev eth0
		[ "$(grep -c " $vip " <<<"$output")" -eq 1 ]
		run -0 --separate-stderr nsx a vipctl del "$vip" dev eth0
		[ "$output" = "$vip dev eth0: deleted" ] && [ -z "$stderr" ]
		run -0 --separate-stderr nsx a vipctl del "$vip" dev eth0
		[ "$output" = "$vip dev eth0: not held" ] && [ -z "$stderr" ]
		run -0 nsx a ip -o addr show dev eth0
		[[ "$output" != *" $vip "* ]] || return 1
	done
}

@test "IPv6 addresses are usable at once, without duplicate address detection" {
	nsx a sysctl -qw net.ipv6.conf.eth0.accept_dad=1
	run -0 nsx a vipctl add -N 0 2001:2::50/64 dev eth0
	run -0 nsx a ip -o -6 addr show dev eth0 to 2001:2::50/64
	[[ "$output" != *tentative* ]] && [[ "$output" == *"2001:2::50/64 scope global nodad"* ]]
	nsx cl ping -6 -c 1 -W 2 2001:2::50 >/dev/null
}

@test "show lists the addresses, of one interface or all" {
	nsx a vipctl add -N 0 198.18.0.50/24 dev eth0 >/dev/null
	nsx a vipctl add -N 0 2001:2::50/64 dev eth0 >/dev/null
	run -0 --separate-stderr nsx a vipctl show dev eth0
	[ "$output" = "198.18.0.1/24 dev eth0
198.18.0.50/24 dev eth0
2001:2::50/64 dev eth0
2001:2::1/64 dev eth0" ]
	run -0 --separate-stderr nsx a vipctl show
	[ "$output" = "198.18.0.1/24 dev eth0
198.18.0.50/24 dev eth0
2001:2::50/64 dev eth0
2001:2::1/64 dev eth0" ]
	run -0 nsx a vipctl show dev lo
	[ -z "$output" ]
}

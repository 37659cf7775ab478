#!/usr/bin/env bats
# vipctl: every kind of failure has its own message and exit status:
# 100 usage, bad address or prefix; 2 no such interface; 3 not permitted.

setup() {
	load lib/common
	load lib/netns
	USAGE="usage: vipctl add [-x] [--check] [-d fd] [-i interval] [-N count] [-r period] [-T timeout] address/prefix dev interface
       vipctl del address/prefix dev interface
       vipctl check [-T timeout] address dev interface
       vipctl show [dev interface]"
}

teardown() {
	net_down
}

needs_net() {
	[ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces"
	net_up a
}

@test "wrong usage prints the usage and exits 100" {
	run -100 --separate-stderr vipctl
	[ "$stderr" = "$USAGE" ] && [ -z "$output" ]
	run -100 --separate-stderr vipctl frob
	[ "$stderr" = "$USAGE" ]
	run -100 --separate-stderr vipctl add 198.18.0.50/24 eth0
	[ "$stderr" = "$USAGE" ]
	run -100 --separate-stderr vipctl del 198.18.0.50/24 dev
	[ "$stderr" = "$USAGE" ]
	run -100 --separate-stderr vipctl check -q 198.18.0.50 dev eth0
	[ "${stderr_lines[0]}" = "vipctl: invalid option -- 'q'" ]
	[ "${stderr_lines[1]}" = "${USAGE%%$'\n'*}" ]
	run -100 --separate-stderr vipctl show eth0
	[ "$stderr" = "$USAGE" ]
	run -100 --separate-stderr vipctl add -x 198.18.0.50/24 dev eth0
	[ "$stderr" = "vipctl: -x needs -r" ]
	run -100 --separate-stderr vipctl add -N 2x 198.18.0.50/24 dev eth0
	[ "$stderr" = "vipctl: -N 2x: not a count from 0 to 1000" ]
	run -100 --separate-stderr vipctl check -T 0 198.18.0.50 dev eth0
	[ "$stderr" = "vipctl: -T 0: zero" ]
}

@test "a duration longer than 1h is named and exits 100" {
	# nosuchif0 does not exist: without the check this would exit 2
	run -100 --separate-stderr vipctl add -i 99h 198.18.0.50/24 dev nosuchif0
	[ "$stderr" = "vipctl: -i 99h: longer than 1h" ] && [ -z "$output" ]
	run -100 --separate-stderr vipctl add -r 3601s 198.18.0.50/24 dev nosuchif0
	[ "$stderr" = "vipctl: -r 3601s: longer than 1h" ]
	run -100 --separate-stderr vipctl add --check -T 2h 198.18.0.50/24 dev nosuchif0
	[ "$stderr" = "vipctl: -T 2h: longer than 1h" ]
	run -100 --separate-stderr vipctl check -T 5000000000h 198.18.0.50 dev nosuchif0
	[ "$stderr" = "vipctl: -T 5000000000h: longer than 1h" ]
	run -100 --separate-stderr vipctl add -i 99999999999999999999h 198.18.0.50/24 dev nosuchif0
	[ "$stderr" = "vipctl: -i 99999999999999999999h: too large" ]
	# 1h itself is accepted: vipctl goes on to look for the interface
	run -2 --separate-stderr vipctl add -i 1h -r 1h -T 1h 198.18.0.50/24 dev nosuchif0
	[ "$stderr" = "vipctl: no such interface: nosuchif0" ]
	run -2 --separate-stderr vipctl check -T 60m 198.18.0.50 dev nosuchif0
	[ "$stderr" = "vipctl: no such interface: nosuchif0" ]
}

@test "a bad address or prefix is named and exits 100" {
	run -100 --separate-stderr vipctl add 198.18.0.500/24 dev eth0
	[ "$stderr" = "vipctl: bad address: 198.18.0.500/24" ] && [ -z "$output" ]
	run -100 --separate-stderr vipctl add 198.18.0.50/33 dev eth0
	[ "$stderr" = "vipctl: bad prefix: 198.18.0.50/33" ]
	run -100 --separate-stderr vipctl add 198.18.0.50/ dev eth0
	[ "$stderr" = "vipctl: bad prefix: 198.18.0.50/" ]
	run -100 --separate-stderr vipctl del 2001:2::50/129 dev eth0
	[ "$stderr" = "vipctl: bad prefix: 2001:2::50/129" ]
	run -100 --separate-stderr vipctl del 2001:2::zz/64 dev eth0
	[ "$stderr" = "vipctl: bad address: 2001:2::zz/64" ]
	run -100 --separate-stderr vipctl add 198.18.0.50 dev eth0
	[ "$stderr" = "vipctl: bad address: 198.18.0.50: no prefix length" ]
	run -100 --separate-stderr vipctl check 224.0.0.1 dev eth0
	[ "$stderr" = "vipctl: bad address: 224.0.0.1" ]
	run -100 --separate-stderr vipctl check ff02::1 dev eth0
	[ "$stderr" = "vipctl: bad address: ff02::1" ]
}

@test "no such interface is named and exits 2, for every command" {
	needs_net
	run -2 --separate-stderr nsx a vipctl add 198.18.0.50/24 dev eth9
	[ "$stderr" = "vipctl: no such interface: eth9" ] && [ -z "$output" ]
	run -2 --separate-stderr nsx a vipctl del 198.18.0.50/24 dev eth9
	[ "$stderr" = "vipctl: no such interface: eth9" ]
	run -2 --separate-stderr nsx a vipctl check 2001:2::50 dev eth9
	[ "$stderr" = "vipctl: no such interface: eth9" ]
	run -2 --separate-stderr nsx a vipctl show dev eth9
	[ "$stderr" = "vipctl: no such interface: eth9" ]
	run -2 --separate-stderr nsx a vipctl show dev averyveryverylongname
	[ "$stderr" = "vipctl: no such interface: averyveryverylongname" ]
}

@test "not permitted is named and exits 3, and changes nothing" {
	needs_net
	local nobody="setpriv --reuid=65534 --regid=65534 --clear-groups"
	run -3 --separate-stderr nsx a $nobody vipctl add 198.18.0.50/24 dev eth0
	[ "$stderr" = "vipctl: adding 198.18.0.50/24 on eth0: Operation not permitted" ]
	[ -z "$output" ]
	run -3 --separate-stderr nsx a $nobody vipctl add -N 0 2001:2::50/64 dev eth0
	[ "$stderr" = "vipctl: adding 2001:2::50/64 on eth0: Operation not permitted" ]
	run -3 --separate-stderr nsx a $nobody vipctl del 198.18.0.1/24 dev eth0
	[ "$stderr" = "vipctl: deleting 198.18.0.1/24 on eth0: Operation not permitted" ]
	run -3 --separate-stderr nsx a $nobody vipctl check 198.18.0.50 dev eth0
	[ "$stderr" = "vipctl: probing 198.18.0.50 on eth0: Operation not permitted" ]
	# root without CAP_NET_ADMIN and CAP_NET_RAW is refused the same way
	run -3 --separate-stderr nsx a setpriv --bounding-set=-all \
	    --inh-caps=-all vipctl add -N 0 198.18.0.50/24 dev eth0
	[ "$stderr" = "vipctl: adding 198.18.0.50/24 on eth0: Operation not permitted" ]
	# nothing changed, and show needs no privilege
	run -0 --separate-stderr nsx a $nobody vipctl show dev eth0
	[ "$output" = "198.18.0.1/24 dev eth0
2001:2::1/64 dev eth0" ] && [ -z "$stderr" ]
}

@test "a system error exits 111 and says what failed" {
	needs_net
	nsx a ip link set eth0 down
	# the address is added, but the announcements cannot go out
	run -111 --separate-stderr nsx a vipctl add -N 2 -i 10ms \
	    198.18.0.50/24 dev eth0
	[ "$output" = "198.18.0.50/24 dev eth0: added" ]
	[ "$stderr" = "vipctl: announcing 198.18.0.50/24 on eth0: Network is down
vipctl: announcing 198.18.0.50/24 on eth0: Network is down" ]
	run -0 nsx a vipctl show dev eth0
	[[ "$output" == *"198.18.0.50/24 dev eth0"* ]]
	run -111 --separate-stderr nsx a vipctl check -T 100ms 2001:2::50 dev eth0
	[ "$stderr" = "vipctl: probing 2001:2::50 on eth0: Network is down" ]
	[ -z "$output" ]
}

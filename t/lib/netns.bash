# t/lib/netns.bash: a network of namespaces for tests that need real
# interfaces (VIP, ARP, multicast, cutting links).
#
#   net_up [NODE...]     nodes (default: a b c cl) on one bridge
#   nsx NODE CMD...      run CMD inside NODE's namespace
#   net_cut NODE         take NODE's link down (at the switch port)
#   net_restore NODE     bring it back
#   net_down             remove every namespace of this test file
#
# The bridge lives in a namespace of its own, so the host's network is
# never touched.  Each node has eth0 with 198.18.0.N/24 and 2001:2::N/64
# (the IPv4 and IPv6 benchmarking ranges, RFC 2544 and RFC 5180), and no
# default route: nothing can leave.  The namespace names start with a
# prefix unique to the test file and the process, so files may run at
# once, and net_down removes exactly what net_up made, killing whatever
# still runs inside.

NET_PREFIX=${NET_PREFIX:-hx$(basename "$BATS_TEST_FILENAME" .bats | sed 's/^t\([0-9]*\).*/\1/')-$$-}

# node numbers: the last byte of each node's addresses
net_num() {
	case $1 in
	a) echo 1 ;; b) echo 2 ;; c) echo 3 ;; cl) echo 100 ;;
	*) echo "net_num: unknown node $1" >&2; return 1 ;;
	esac
}
net_ip4() { echo "198.18.0.$(net_num "$1")"; }
net_ip6() { echo "2001:2::$(net_num "$1")"; }
net_mac() { nsx "$1" cat /sys/class/net/eth0/address; }

nsx() {
	local n=$1; shift
	ip netns exec "$NET_PREFIX$n" "$@"
}

net_up() {
	local nodes="${*:-a b c cl}" n sw=${NET_PREFIX}sw
	ip netns add "$sw" || return 1
	ip -n "$sw" link set lo up
	ip -n "$sw" link add br0 type bridge
	ip -n "$sw" link set br0 type bridge stp_state 0 forward_delay 0
	ip -n "$sw" link set br0 up
	for n in $nodes; do
		ip netns add "$NET_PREFIX$n" || return 1
		ip -n "$NET_PREFIX$n" link set lo up
		ip -n "$NET_PREFIX$n" link add eth0 type veth peer name "p$n" \
		    netns "$sw" || return 1
		ip -n "$sw" link set "p$n" master br0 up
		# IPv6 duplicate address detection would delay the address
		ip netns exec "$NET_PREFIX$n" sysctl -qw \
		    net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
		    net.ipv6.conf.eth0.accept_dad=0
		ip -n "$NET_PREFIX$n" addr add "$(net_ip4 "$n")/24" dev eth0
		ip -n "$NET_PREFIX$n" addr add "$(net_ip6 "$n")/64" dev eth0 nodad
		ip -n "$NET_PREFIX$n" link set eth0 up
	done
}

net_cut() {
	ip -n "${NET_PREFIX}sw" link set "p$1" down
}

net_restore() {
	ip -n "${NET_PREFIX}sw" link set "p$1" up
}

# net_down: never fails, so that it is safe in any teardown.
net_down() {
	local ns pid
	for ns in $(ip netns list | awk '{print $1}' | grep -F -- "$NET_PREFIX"); do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do
			kill -KILL "$pid" 2>/dev/null
		done
		ip netns del "$ns" 2>/dev/null
	done
	return 0
}

# net_list: the namespaces of this test file that exist now
net_list() {
	ip netns list | awk '{print $1}' | grep -F -- "$NET_PREFIX"
}

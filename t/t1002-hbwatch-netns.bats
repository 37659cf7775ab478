#!/usr/bin/env bats
# hbsend and hbwatch between network namespaces: unicast IPv4 and IPv6,
# multicast, broadcast, and two links of which one or both are cut.

setup() {
	load lib/common
	load lib/netns
	load lib/hb
	[ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces"
	net_up a b c
	hb_key
	P=$(free_port)
	T="-i 100ms -w 300ms -D 500ms -I 10s"
}

teardown() {
	stop_all_daemons
	net_down
}

@test "over the network: up, and dead within deadtime plus one interval after kill -9" {
	hb_start w a hbwatch -k "$KEY" -n a $T -l "udp:*:$P" b c
	hb_start sb b hbsend -k "$KEY" -n b -i 100ms "udp:198.18.0.1:$P"
	hb_start sc c hbsend -k "$KEY" -n c -i 100ms "udp:[2001:2::1]:$P"
	wait_line w "^[0-9.]+ b up incarnation=[0-9]+ medium=udp:198\.18\.0\.2:$P status= quorum=yes seq=[0-9]+$"
	wait_line w "^[0-9.]+ c up incarnation=[0-9]+ medium=udp:\[2001:2::3\]:$P status= quorum=yes seq=[0-9]+$"
	wait_line w ' - quorum quorum=yes votes=2 size=3 seq=2$'
	local t0 t1
	t0=$(hb_now_ms)
	hb_kill sb
	wait_line w ' b dead ' 5
	t1=$(hb_ts_ms w ' b dead ')
	echo "kill to dead: $((t1 - t0))ms" >&3
	[ $((t1 - t0)) -le 600 ]
	# c still up: quorum kept
	grep -Eq '^[0-9.]+ b dead silent=[0-9]+ms quorum=yes seq=[0-9]+$' "$BATS_TEST_TMPDIR/w.out"
	[ "$(hb_count w ' quorum=no ')" -eq 0 ]
}

@test "multicast and broadcast media" {
	hb_start w a hbwatch -k "$KEY" -n a $T -l "mcast:239.255.42.1:$P%eth0" \
	    -l "udp:*:$((P + 1))" b c
	hb_start sb b hbsend -k "$KEY" -n b -i 100ms "mcast:239.255.42.1:$P%eth0"
	hb_start sc c hbsend -k "$KEY" -n c -i 100ms "bcast:eth0:$((P + 1))"
	wait_line w "^[0-9.]+ b up incarnation=[0-9]+ medium=mcast:198\.18\.0\.2:$P status= quorum=yes seq=[0-9]+$"
	wait_line w "^[0-9.]+ c up incarnation=[0-9]+ medium=udp:198\.18\.0\.3:$((P + 1)) status= quorum=yes seq=[0-9]+$"
}

@test "two links: cutting one is a link event, the peer stays up; cutting both is dead" {
	hb_link2
	hb_start w a hbwatch -k "$KEY" -n a $T -l "udp:*:$P" b
	hb_start s b hbsend -k "$KEY" -n b -i 100ms "udp:198.18.0.1:$P" "udp:198.19.0.1:$P"
	wait_line w ' b up '
	wait_line w " b link-up medium=udp:198\.19\.0\.2:$P seq=3$"
	nsx b ip link set eth1 down
	wait_line w "^[0-9.]+ b link-down medium=udp:198\.19\.0\.2:$P silent=[0-9]+ms seq=4$" 5
	sleep 0.6
	[ "$(hb_count w ' b (dead|late) ')" -eq 0 ]
	nsx b ip link set eth1 up
	wait_line w "^[0-9.]+ b link-up medium=udp:198\.19\.0\.2:$P seq=5$" 5
	net_cut b
	wait_line w "^[0-9.]+ b link-down medium=udp:198\.18\.0\.2:$P silent=[0-9]+ms seq=6$" 5
	nsx b ip link set eth1 down
	wait_line w '^[0-9.]+ b dead silent=[0-9]+ms quorum=no seq=[0-9]+$' 5
	[ "$(hb_count w ' b link-down ')" -eq 2 ]
	# both back: up again
	net_restore b
	nsx b ip link set eth1 up
	wait_for 5 eval '[ "$(hb_count w " b up ")" -eq 2 ]'
	grep ' b up ' "$BATS_TEST_TMPDIR/w.out" | tail -n 1 | grep -Eq "^[0-9.]+ b up incarnation=[0-9]+ medium=udp:198\.(18|19)\.0\.2:$P status= quorum=yes seq=[0-9]+$"
}

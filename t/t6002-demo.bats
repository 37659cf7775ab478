#!/usr/bin/env bats
# make demo, end to end, and its claims checked from its output and from
# the machine afterwards: the client's files intact after the failover, the
# VIP answered by b, a resynced, and nothing left running or mounted.

load lib/common

# said REGEX: the demo printed this line (after its time stamp)
said() {
	grep -E "^ *[0-9.]+s  $1\$" "$BATS_TEST_TMPDIR/demo.out"
}

@test "make demo: failover with the files intact, the VIP on b, a resynced, nothing left" {
	[ "$(id -u)" = 0 ] || skip "needs root (namespaces, loop devices, mounts)"
	D=$BATS_TEST_TMPDIR/demo
	local t0=$(date +%s) rc=0
	HATRIO_DEMO_DIR=$D timeout 120 make -s -C "$HATRIO_ROOT" demo \
	    >"$BATS_TEST_TMPDIR/demo.out" 2>&1 || rc=$?
	cat "$BATS_TEST_TMPDIR/demo.out"
	echo "# make demo: $(( $(date +%s) - t0 ))s" >&3
	[ "$rc" = 0 ]
	[ $(( $(date +%s) - t0 )) -lt 120 ]
	said "demo: every step happened"
	[ "$(tail -n 1 "$BATS_TEST_TMPDIR/demo.out" | sed 's/^ *[0-9.]*s  //')" = "demo: every step happened" ]
	# each claim, in the order the story goes
	said "a is primary: ext4 mounted, service started, VIP 198\.18\.0\.50 added"
	said "client: stored 20 files through 198\.18\.0\.50 \([0-9]+ KiB\), each acknowledged with its checksum"
	said "vip: 198\.18\.0\.50 answered by a \([0-9a-f:]{17}\)"
	said "KILL: a loses its link and every process \(SIGKILL\)"
	said "b took over in [0-9]+ms: primary, ext4 checked and mounted, service, VIP"
	said "checksums: 20 of 20 files match after failover \(read back from b through 198\.18\.0\.50\)"
	said "vip: ping 198\.18\.0\.50 from cl: answered"
	# the MAC that answered ARP for the VIP after the failover is b's
	run -0 said "vip: 198\.18\.0\.50 answered by b: reply from [0-9a-f:]{17}, b's eth0 is [0-9a-f:]{17}"
	[[ "$output" =~ reply\ from\ ([0-9a-f:]+),\ b\'s\ eth0\ is\ ([0-9a-f:]+) ]]
	[ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ]
	said "a stays secondary \(auto-failback off\); b goes on serving; b sees a: [a-z-]+, [0-9]+ bytes out of sync"
	said "resync: done, b sees a uptodate, 0 bytes out of sync"
	said "resync: resyncd verify: verify peer=a checked_bytes=67108864 differ_blocks=0"
	said "lag: c \(async, DR\) is [0-9]+ bytes and [0-9]+ms behind b"
	said "torn down: no namespace, mount, loop device, process or file left"
	# and nothing is left: files, namespaces, mounts, loop devices, processes
	run -0 said "network: namespaces (hxdemo[0-9]+-)a, b, c and a client cl on one bridge, 198\.18\.0\.0/24"
	local ns=${output#*namespaces }
	ns=${ns%%a, b*}
	[ ! -e "$D" ]
	[ "$(ip netns list | grep -c -- "$ns" || true)" = 0 ]
	[ "$(grep -c -- "$D" /proc/mounts || true)" = 0 ]
	[ "$(losetup -a | grep -c -- "$D" || true)" = 0 ]
	[ "$(pgrep -f -- "$D" | wc -l)" = 0 ]
}

@test "without root: the loopback demo, files intact after failover, nothing left" {
	[ "$(id -u)" = 0 ] || skip "needs root to become another user"
	d=$(mktemp -u /tmp/hatrio-demo-lo.XXXXXX)
	run -0 --separate-stderr timeout 120 setpriv --reuid=65534 \
	    --regid=65534 --clear-groups env HATRIO_DEMO_DIR="$d" \
	    "$HATRIO_ROOT/examples/demo"
	printf '%s\n' "${lines[@]}" >&3
	[ "${lines[0]}" = "demo: not root: three nodes on 127.0.0.1, no VIP and no mount (sudo make demo for all of it)" ]
	printf '%s\n' "${lines[@]}" | grep -Eq '^ *[0-9.]+s  hbwatch on b: a dead '
	printf '%s\n' "${lines[@]}" | grep -Eq '^ *[0-9.]+s  checksums: all 20 files read back from b.s disk \(e2fsck clean\) match$'
	printf '%s\n' "${lines[@]}" | grep -Eq 'b resync-done peer=a .*percent=100'
	printf '%s\n' "${lines[@]}" | grep -Eq 'resyncd verify: verify peer=a checked_bytes=67108864 differ_blocks=0$'
	[[ "${lines[-1]}" =~ \ \ demo:\ every\ step\ happened$ ]]
	[ ! -e "$d" ]
	[ "$(pgrep -f -- "$d/" | wc -l)" = 0 ]
}

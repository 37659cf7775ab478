# t/lib/wire.bash: a three-node cluster in network namespaces for the tests
# of the examples (load after lib/common, lib/netns and lib/hb).
#	wire_init [mkfs]	key, disks (with an empty ext4 if "mkfs"),
#				metadata with one GI, $W/hatrio.conf
#	wire_start N		blkmirror of node N in its namespace (bmN)
#	wire_up			a, b, c started, a primary, all in sync
#	wire_st N KEY		one value of N's blkmirror status
#	wire_wait N KEY VALUE [S]	until it is VALUE
#	wire_feed N		rc.failover of node N, in N's network namespace
#				and the host's mount namespace, reading the
#				event lines on stdin; its log in $W/N.log
#	wire_actions N		the log without timestamps and event lines
#	wire_vip N		does N hold the VIP?
#	wire_cleanup		teardown: mounts, loop devices, FUSE
# Node N keeps its files in $W/N (the RUN directory of hatrio.conf).

WIRE_VIP=198.18.0.50

wire_init() {
	W=$BATS_TEST_TMPDIR
	make_key "$W/key"
	truncate -s 32M "$W/image"
	if [ "${1:-}" = mkfs ]; then
		mkfs.ext4 -q -F "$W/image" || return 1
	fi
	local n
	for n in a b c; do
		mkdir -p "$W/$n/mnt"
		cp --sparse=always "$W/image" "$W/$n/disk"
		blkmirror init -g 0123456789abcdef -m "$W/$n/meta" -n "$n" \
		    "$W/$n/disk" || return 1
	done
	cat >"$W/hatrio.conf" <<-CONF
	. $HATRIO_ROOT/examples/hatrio.conf
	KEY=$W/key
	RUN=$W/\$NODE
	DISK=$W/\$NODE/disk
	META=$W/\$NODE/meta
	MOUNT=$W/\$NODE/mnt
	VIP=$WIRE_VIP/24
	SERVICE="exec sleep 1000"
	PROMOTE_WAIT=2
	STEP_TIMEOUT=10
	CONF
}

wire_peers() {
	case $1 in
	a) echo "-P b=198.18.0.2:7789,sync -P c=198.18.0.3:7789,async" ;;
	b) echo "-P a=198.18.0.1:7789,sync -P c=198.18.0.3:7789,async" ;;
	c) echo "-P a=198.18.0.1:7789,async -P b=198.18.0.2:7789,async" ;;
	esac
}

wire_start() {
	# shellcheck disable=SC2046
	hb_start "bm$1" "$1" blkmirror -k "$W/key" -L "$(net_ip4 "$1"):7789" \
	    $(wire_peers "$1") -m "$W/$1/meta" -n "$1" -c "$W/$1/ctl.sock" \
	    -l "$W/$1/nbd.sock" "$W/$1/disk"
}

wire_st() {
	blkmirror ctl "$W/$1/ctl.sock" status | sed -n "s/^$2=//p"
}

wire_wait() {
	wait_for "${4:-10}" eval "[ \"\$(wire_st $1 $2)\" = '$3' ]"
}

wire_up() {
	wire_start a
	wire_start b
	wire_start c
	wire_wait a peer.b.state uptodate
	wire_wait a peer.c.state uptodate
	wire_wait b peer.c.state uptodate
	wait_for 10 blkmirror ctl "$W/a/ctl.sock" primary
	wire_wait b peer.a.role primary
	wire_wait c peer.a.role primary
}

wire_feed() {
	nsenter --net="/run/netns/$NET_PREFIX$1" \
	    "$HATRIO_ROOT/examples/rc.failover" -c "$W/hatrio.conf" -n "$1" \
	    2>>"$W/$1.log"
}

wire_actions() {
	sed 's/^[0-9:.]* //' "$W/$1.log" | grep -v ": event: "
}

wire_vip() {
	nsx "$1" vipctl show dev eth0 | grep -q "^$WIRE_VIP/24 "
}

wire_cleanup() {
	local n f
	for n in a b c; do
		[ -n "${W:-}" ] && [ -d "$W/$n" ] || continue
		if [ -s "$W/$n/service.pid" ]; then
			kill -KILL -- "-$(cat "$W/$n/service.pid")" 2>/dev/null
		fi
		if grep -q " $W/$n/mnt " /proc/mounts; then
			umount "$W/$n/mnt" 2>/dev/null || umount -l "$W/$n/mnt"
		fi
		[ -s "$W/$n/loop" ] && losetup -d "$(cat "$W/$n/loop")" 2>/dev/null
		if grep -q " $W/$n/fuse " /proc/mounts; then
			fusermount3 -u -z "$W/$n/fuse"
		fi
		f=$W/$n/nbdfuse.pid
		[ -s "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
	done
	return 0
}

# not CMD...: succeeds when CMD fails (a bare "!" would not fail a test)
not() {
	if "$@"; then return 1; fi
	return 0
}

# wire_alive PID: the process runs (not a zombie waiting for init)
wire_alive() {
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	st=${st##*) }
	[ "${st%% *}" != Z ]
}

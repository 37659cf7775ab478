# t/lib/hb.bash: helpers for the hbsend and hbwatch tests.
#	load lib/hb	(after lib/common, and lib/netns for hb_link2)
#
#   hb_start NAME NODE PROG [ARG...]   start PROG with "-d 3" (inside
#                      NODE's namespace unless NODE is -) and wait for it
#                      (stdin from $HB_IN, stdout to $HB_OUT when set)
#   hb_kill NAME [SIG]  signal NAME (default KILL) and reap it
#   hb_key             make $KEY, the cluster key of the test
#   hb_ts_ms NAME REGEX   the timestamp (ms) of NAME's first line matching
#   hb_now_ms          now, in ms of the wall clock
#   hb_link2           a second link between namespaces a and b, eth1:
#                      198.19.0.1/24 and 198.19.0.2/24 (no bridge)

hb_start() {
	local name=$1 node=$2 prog=$3 d=$BATS_TEST_TMPDIR
	shift 3
	rm -f "$d/$name.ready"
	mkfifo "$d/$name.ready"
	local in=${HB_IN:-/dev/null} out=${HB_OUT:-$d/$name.out}
	if [ "$node" = - ]; then
		setsid "$prog" -d 3 "$@" 3>"$d/$name.ready" \
		    >"$out" 2>"$d/$name.err" <"$in" &
	else
		setsid ip netns exec "$NET_PREFIX$node" "$prog" -d 3 "$@" \
		    3>"$d/$name.ready" >"$out" 2>"$d/$name.err" <"$in" &
	fi
	echo $! >"$d/$name.pid"
	if ! read -r -t "${READY_TIMEOUT:-10}" _ <"$d/$name.ready"; then
		echo "$name: not ready" >&2
		cat "$d/$name.err" >&2
		return 1
	fi
}

hb_kill() {
	local f=$BATS_TEST_TMPDIR/$1.pid pid
	[ -f "$f" ] || return 0
	pid=$(cat "$f"); rm -f "$f"
	kill -"${2:-KILL}" "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

hb_key() {
	KEY=$BATS_TEST_TMPDIR/cluster.key
	make_key "$KEY"
}

hb_now_ms() {
	echo $(( $(date +%s%N) / 1000000 ))
}

hb_ts_ms() {
	local ts
	ts=$(grep -E -m1 -- "$2" "$BATS_TEST_TMPDIR/$1.out" | cut -d' ' -f1)
	[ -n "$ts" ] || return 1
	echo $(( ${ts%.*} * 1000 + 10#${ts#*.} / 1000 ))
}

# hb_count NAME REGEX: how many lines of NAME's output match
hb_count() {
	grep -Ec -- "$2" "$BATS_TEST_TMPDIR/$1.out" || true
}

# hb_status NAME: ask hbwatch NAME for its status on stderr (SIGUSR1)
# and print the last "dropped" line once it is there.
hb_status() {
	local f=$BATS_TEST_TMPDIR/$1.err n
	n=$(grep -c 'status dropped' "$f" || true)
	kill -USR1 "$(cat "$BATS_TEST_TMPDIR/$1.pid")"
	wait_for 5 eval "[ \$(grep -c 'status dropped' '$f') -gt $n ]" &&
	grep 'status dropped' "$f" | tail -n 1
}

hb_link2() {
	ip link add hb2a netns "${NET_PREFIX}a" type veth peer name hb2b \
	    netns "${NET_PREFIX}b" || return 1
	nsx a ip link set hb2a name eth1
	nsx b ip link set hb2b name eth1
	nsx a ip addr add 198.19.0.1/24 dev eth1
	nsx b ip addr add 198.19.0.2/24 dev eth1
	nsx a ip link set eth1 up
	nsx b ip link set eth1 up
}

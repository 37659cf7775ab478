# t/lib/splitbrain.bash: three nodes (t/lib/cluster.bash) whose links can
# be cut, for the split-brain tests (load after lib/common, lib/cluster).
# Every link goes through a wanproxy: ab (a to b), ac (a to c), bc (b to
# c); "cut" stops it and drops its connections, as a partition would.
#	sb_init [SIZE]		cl_init and the three proxies
#	sb_start N [ARG...]	start node N, its links through the proxies
#	sb_cut LINK... / sb_heal LINK...
#	sb_events N		record N's event stream in $C/evN.out
#	sb_wait_event N RE [S]	until N's events have a line matching RE
#	sb_event N RE		the last line of N's events matching RE

sb_init() {
	cl_init "${1:-16M}"
	start_daemon wanab wanproxy -c "$C/wanab.ctl" 127.0.0.1:0 \
	    "127.0.0.1:$PORT_b"
	start_daemon wanac wanproxy -c "$C/wanac.ctl" 127.0.0.1:0 \
	    "127.0.0.1:$PORT_c"
	start_daemon wanbc wanproxy -c "$C/wanbc.ctl" 127.0.0.1:0 \
	    "127.0.0.1:$PORT_c"
	WPORT_ab=$(head -n 1 "$C/wanab.out")
	WPORT_ac=$(head -n 1 "$C/wanac.out")
	WPORT_bc=$(head -n 1 "$C/wanbc.out")
}

sb_peers() {
	case $1 in
	a) echo "-P b=127.0.0.1:$WPORT_ab,sync -P c=127.0.0.1:$WPORT_ac,async" ;;
	b) echo "-P a=127.0.0.1:$PORT_a,sync -P c=127.0.0.1:$WPORT_bc,async" ;;
	c) echo "-P a=127.0.0.1:$PORT_a,async -P b=127.0.0.1:$PORT_b,async" ;;
	esac
}

sb_start() {
	local n=$1 port; shift
	eval "port=\$PORT_$n"
	# shellcheck disable=SC2046
	start_daemon "bm$n" blkmirror -k "$C/key" -L "127.0.0.1:$port" \
	    $(sb_peers "$n") -m "$C/$n/meta" -n "$n" -c "$C/$n/ctl.sock" \
	    -l "$C/$n/nbd.sock" "$@" "$C/$n/disk"
}

sb_wan() { echo "$2" | socat -t 2 - UNIX-CONNECT:"$C/wan$1.ctl"; }

sb_cut() {
	local l
	for l in "$@"; do
		[ "$(sb_wan "$l" cut)" = ok ] || return 1
		[ "$(sb_wan "$l" reset)" = ok ] || return 1
	done
}

sb_heal() {
	local l
	for l in "$@"; do
		[ "$(sb_wan "$l" restore)" = ok ] || return 1
	done
}

sb_events() {
	start_bg "ev$1" blkmirror ctl "$C/$1/ctl.sock" events
	wait_line "ev$1" " state role="
}

sb_wait_event() {
	wait_line "ev$1" "$2" "${3:-10}"
}

sb_event() {
	grep -E -- "$2" "$C/ev$1.out" | tail -n 1
}

# t/lib/cluster.bash: three blkmirror nodes on loopback (load after
# lib/common).  a and b replicate synchronously to each other, both
# asynchronously to c.  Node N keeps its files in $C/N: disk, meta,
# nbd.sock, ctl.sock; daemons are named bmN.
#	cl_init [SIZE]		backing stores, metadata (one shared GI), key
#	cl_start N [ARG...]	start node N (secondary; ARG may add -p etc.)
#	cl_stop N / cl_kill N	SIGTERM (status returned) / SIGKILL
#	cl_ctl N CMD		blkmirror ctl on node N
#	cl_status N KEY		one value from N's status
#	cl_wait N KEY VALUE [S]	until status KEY is VALUE
#	cl_uri N		NBD URI of N
#	cl_sum N		checksum of N's backing store
# Peer ports: $PORT_a, $PORT_b, $PORT_c; CL_ADDR_c may redirect a's and
# b's connection to c, CL_ADDR_b a's connection to b (a WAN proxy).

cl_init() {
	C=$BATS_TEST_TMPDIR
	make_key "$C/key"
	PORT_a=$(free_port)
	PORT_b=$(free_port)
	while [ "$PORT_b" = "$PORT_a" ]; do PORT_b=$(free_port); done
	PORT_c=$(free_port)
	while [ "$PORT_c" = "$PORT_a" ] || [ "$PORT_c" = "$PORT_b" ]; do
		PORT_c=$(free_port)
	done
	local n
	for n in a b c; do
		mkdir -p "$C/$n"
		truncate -s "${1:-64M}" "$C/$n/disk"
		blkmirror init -g 1234567890abcdef -m "$C/$n/meta" -n "$n" \
		    "$C/$n/disk"
	done
}

cl_peers() {
	local c=${CL_ADDR_c:-127.0.0.1:$PORT_c}
	case $1 in
	a) echo "-P b=${CL_ADDR_b:-127.0.0.1:$PORT_b},sync -P c=$c,async" ;;
	b) echo "-P a=127.0.0.1:$PORT_a,sync -P c=$c,async" ;;
	c) echo "-P a=127.0.0.1:$PORT_a,async -P b=127.0.0.1:$PORT_b,async" ;;
	esac
}

cl_start() {
	local n=$1 port; shift
	eval "port=\$PORT_$n"
	# shellcheck disable=SC2046
	start_daemon "bm$n" blkmirror -k "${CL_KEY:-$C/key}" \
	    -L "127.0.0.1:$port" $(cl_peers "$n") -m "$C/$n/meta" -n "$n" \
	    -c "$C/$n/ctl.sock" -l "$C/$n/nbd.sock" "$@" "$C/$n/disk"
}

cl_stop() { stop_daemon "bm$1"; }
cl_kill() { kill_daemon "bm$1" KILL || true; }
cl_ctl() { blkmirror ctl "$C/$1/ctl.sock" "$2"; }
cl_status() { cl_ctl "$1" status | sed -n "s/^$2=//p"; }
cl_wait() {
	wait_for "${4:-10}" eval "[ \"\$(cl_status $1 $2)\" = '$3' ]"
}
cl_uri() { echo "nbd+unix:///?socket=$C/$1/nbd.sock"; }
cl_sum() { md5sum <"$C/$1/disk" | cut -d' ' -f1; }

# cl_up: all three nodes, a primary, every pair connected (each node
# started by $CL_START, cl_start unless set).
cl_up() {
	${CL_START:-cl_start} a "$@"
	${CL_START:-cl_start} b "$@"
	${CL_START:-cl_start} c "$@"
	cl_wait a peer.b.state uptodate
	cl_wait a peer.c.state uptodate
	cl_wait b peer.c.state uptodate
	run -0 cl_ctl a primary
	cl_wait b peer.a.role primary
	cl_wait c peer.a.role primary
}

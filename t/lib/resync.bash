# t/lib/resync.bash: helpers for the resync tests (load after lib/common
# and lib/cluster).
#	fio_bg NAME NODE SECONDS [ARG...]	a verifying random writer
#				through NODE's NBD, in the background
#	wait_bg NAME		its exit status (it stops by itself)
#	dirty NODE MIB		write MIB MiB of random 4 KiB blocks on NODE
#	b_behind MIB		b down while MIB MiB change on a, then back:
#				a is its sync source, bitmaps exchanged
#	wan CMD...		tell t/wanproxy (control socket $C/wan.ctl)

fio_bg() {
	local name=$1 node=$2 secs=$3; shift 3
	start_bg "$name" timeout $((secs + 60)) fio --name=w --ioengine=nbd \
	    --uri="$(cl_uri "$node")" --rw=randwrite --bs=4k --size=32M \
	    --iodepth=8 --verify=crc32c --do_verify=1 --verify_fatal=1 \
	    --randseed=$RANDOM --fsync=32 --time_based --runtime="$secs" \
	    --output="$C/$name.fio" "$@"
}

wait_bg() {
	local f=$BATS_TEST_TMPDIR/$1.pid pid rc=0
	pid=$(cat "$f")
	wait "$pid" || rc=$?
	rm -f "$f"
	if [ "$rc" != 0 ]; then
		echo "$1 failed ($rc):" >&2
		cat "$BATS_TEST_TMPDIR/$1.err" "$C/$1.fio" >&2 2>/dev/null
	fi
	return "$rc"
}

dirty() {
	fio --name=d --ioengine=nbd --uri="$(cl_uri "$1")" --rw=randwrite \
	    --bs=4k --size="$(cl_status "$1" size)" --io_size="${2}M" \
	    --iodepth=16 --randseed=$RANDOM --norandommap \
	    --output=/dev/null
}

b_behind() {
	cl_kill b
	cl_wait a peer.b.connected 0
	dirty a "$1"
	cl_start b
	cl_wait a peer.b.resync source
}

wan() { echo "$*" | socat -t 2 - UNIX-CONNECT:"$C/wan.ctl"; }

# t/lib/blk.bash: helpers for the blkmirror tests (load after lib/common).
#	blk_init [SIZE]		a backing file and metadata for node a
#	blk_start [ARG...]	start blkmirror as daemon "bm" (primary unless
#				ARG has -S, which means "no -p")
#	blk_uri			the NBD URI of the unix socket
#	blk_dump_key KEY	KEY from "blkmirror dump"
# Files: $D/disk, $D/meta, $D/nbd.sock, $D/ctl.sock with D=$BATS_TEST_TMPDIR.

blk_init() {
	D=$BATS_TEST_TMPDIR
	truncate -s "${1:-64M}" "$D/disk"
	blkmirror init -m "$D/meta" -n a "$D/disk"
}

blk_start() {
	local role=-p
	if [ "${1:-}" = -S ]; then role=; shift; fi
	start_daemon bm blkmirror $role -m "$D/meta" -n a -c "$D/ctl.sock" \
	    -l "$D/nbd.sock" "$@" "$D/disk"
}

blk_uri() {
	echo "nbd+unix:///?socket=$D/nbd.sock"
}

# blk_dump_key KEY: the value of KEY in "blkmirror dump" output.
blk_dump_key() {
	blkmirror dump -m "$D/meta" 2>/dev/null | sed -n "s/^$1=//p"
}

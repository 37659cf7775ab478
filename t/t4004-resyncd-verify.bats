#!/usr/bin/env bats
# Online verify: blocks changed behind blkmirror's back are found by
# comparing block hashes while the application writes, and --fix
# resyncs exactly those.

load lib/common
load lib/cluster
load lib/resync

setup() {
	cl_init 64M
}

teardown() {
	stop_all_daemons
}

@test "verify finds blocks changed behind blkmirror's back; -f repairs them" {
	cl_up
	dirty a 4
	run -0 resyncd verify -c "$C/a/ctl.sock" b
	[ "${lines[-1]}" = "verify peer=b checked_bytes=67108864 differ_blocks=0" ]
	# 5 blocks of b's store change under it, outside fio's 32 MiB
	for o in 12288 12290 12800 16000 16383; do
		dd if=/dev/urandom of="$C/b/disk" bs=4k seek=$o count=1 \
		    conv=notrunc status=none
	done
	fio_bg fio1 a 4
	run -1 resyncd verify -c "$C/a/ctl.sock" b
	[ "${lines[-1]}" = "verify peer=b checked_bytes=67108864 differ_blocks=5" ]
	[[ "${lines[-2]}" =~ \ a\ verify-done\ peer=b\ done_bytes=67108864\  ]]
	[ "$(cl_status a peer.b.oos_bytes)" = $((5 * 4096)) ]
	[ "$(cl_status a peer.b.verify_differ_blocks)" = 5 ]
	run -0 resyncd verify --fix -c "$C/a/ctl.sock" b
	printf '%s\n' "${lines[@]}" | grep -qx "verify peer=b checked_bytes=67108864 differ_blocks=5"
	[[ "${lines[-1]}" =~ \ a\ resync-done\ peer=b\ done_bytes=20480\  ]]
	[ "$(cl_status a peer.b.oos_bytes)" = 0 ]
	wait_bg fio1
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
	run -0 resyncd verify -c "$C/a/ctl.sock" b
	[ "${lines[-1]}" = "verify peer=b checked_bytes=67108864 differ_blocks=0" ]
}

@test "verify: bad peers and ranges are refused with the reason" {
	cl_up
	run -100 --separate-stderr resyncd verify -c "$C/a/ctl.sock" zz
	[ "$stderr" = "resyncd: $C/a/ctl.sock: no peer zz" ]
	run -1 --separate-stderr cl_ctl a "verify b 100 4096"
	[ "$stderr" = "verify b 100 4096: not a range of 4 KiB blocks inside the disk, at most 1 MiB" ]
	run -1 --separate-stderr cl_ctl a "sync b 0 2097152"
	[ "$stderr" = "sync b 0 2097152: not a range of 4 KiB blocks inside the disk, at most 1 MiB" ]
	run -1 --separate-stderr cl_ctl a "sync b 67108864 4096"
	[ "$stderr" = "sync b 67108864 4096: not a range of 4 KiB blocks inside the disk, at most 1 MiB" ]
	run -1 --separate-stderr cl_ctl a "sync zz 0 4096"
	[ "$stderr" = "sync: no peer zz" ]
	# b is not a's sync source: a is primary
	run -1 --separate-stderr cl_ctl b "sync a 0 4096"
	[ "$stderr" = "sync a 0 4096: this node is not its sync source (peer state uptodate)" ]
	# c is secondary and connected to the primary, which resyncs b
	run -1 --separate-stderr cl_ctl c "sync b 0 4096"
	[ "$stderr" = "sync b 0 4096: a is primary and resyncs it" ]
	cl_stop b
	run -1 --separate-stderr cl_ctl a "sync b 0 4096"
	[ "$stderr" = "sync b 0 4096: not connected" ]
	run -0 cl_ctl a "oos b"
	[ "$output" = "" ]
	run -1 --separate-stderr cl_ctl a "oos zz"
	[ "$stderr" = "oos: no peer zz" ]
}

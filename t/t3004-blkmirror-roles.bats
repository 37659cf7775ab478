#!/usr/bin/env bats
# Roles and the control socket: a secondary refuses writes; status,
# events, primary and secondary.

load lib/common
load lib/blk

setup() {
	blk_init 64M
}

teardown() {
	stop_all_daemons
}

@test "a secondary advertises read-only and refuses writes with EPERM" {
	blk_start -S
	run -0 nbdinfo --json "$(blk_uri)"
	[[ "$output" == *'"is_read_only": true'* ]]
	run -0 qemu-io -f raw -r -c 'read -P 0 0 64k' "$(blk_uri)"
	run -1 qemu-io -f raw -c 'write -P 0x5a 0 64k' "$(blk_uri)"
	[ "$output" = "qemu-io: can't open device $(blk_uri): Could not open image: Permission denied" ]
	run -0 python3 "$BATS_TEST_DIRNAME/lib/nbdraw.py" "$D/nbd.sock" requests 67108864
	[[ "$output" == *$'\nwrite reply 1\n'* ]]
	[[ "$output" == *$'\ntrim-past-end reply 28\n'* ]]
	run -0 blkmirror ctl "$D/ctl.sock" status
	[[ "$output" == *$'\nrole=secondary\n'* ]]
	[[ "$output" == *$'\nwritten_bytes=0\n'* ]]
	stop_daemon bm
	[ "$(blk_dump_key role)" = secondary ]
	cmp -n 65536 "$D/disk" /dev/zero
}

@test "status, events, and changing roles" {
	blk_start -S
	run -0 --separate-stderr blkmirror ctl "$D/ctl.sock" status
	[ "$stderr" = "" ]
	[ "${lines[0]}" = "node=a" ]
	[ "${lines[1]}" = "role=secondary" ]
	[ "${lines[2]}" = "disk=uptodate" ]
	[ "${lines[3]}" = "size=67108864" ]
	[ "${lines[4]}" = "connections=0" ]
	[[ "$output" == *$'\npeers=0' ]]
	start_bg ev blkmirror ctl "$D/ctl.sock" events
	wait_line ev '^[0-9]+\.[0-9]{6} a state role=secondary disk=uptodate connections=0 seq=1$'
	run -0 blkmirror ctl "$D/ctl.sock" primary
	[ "$output" = "" ]
	wait_line ev '^[0-9]+\.[0-9]{6} a role role=primary seq=[0-9]+$'
	[ "$(blk_dump_key role)" = primary ]
	run -0 qemu-io -f raw -c 'write -P 0x5a 0 64k' "$(blk_uri)"
	wait_line ev ' a client-connect conn=[0-9]+ peer=unix seq='
	wait_line ev ' a client-disconnect conn=[0-9]+ peer=unix seq='
	run -0 blkmirror ctl "$D/ctl.sock" secondary
	wait_line ev ' a role role=secondary seq='
	run -1 qemu-io -f raw -c 'write -P 0x5a 0 64k' "$(blk_uri)"
	run -1 --separate-stderr blkmirror ctl "$D/ctl.sock" promote
	[ "$stderr" = "unknown command: promote" ]
	[ "$output" = "" ]
	stop_daemon bm
	wait_line ev ' a stop clean=1 seq='
	# seq numbers go up by one
	awk '{ sub(/.*seq=/, ""); if (p && $0 != p + 1) exit 1; p = $0 }' "$D/ev.out"
}

@test "ctl usage and a missing socket" {
	run -100 blkmirror ctl "$BATS_TEST_TMPDIR/x"
	[[ "${lines[0]}" == "usage: blkmirror "* ]]
	run -111 --separate-stderr blkmirror ctl "$BATS_TEST_TMPDIR/x" status
	[ "$stderr" = "blkmirror: $BATS_TEST_TMPDIR/x: No such file or directory" ]
}

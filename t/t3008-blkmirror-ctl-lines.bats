#!/usr/bin/env bats
# Probes of blkmirror's control socket: a line too long, or a command that
# holds a newline, gets a clear error naming what was wrong.

load lib/common
load lib/blk

setup() {
	blk_init 16M
}

teardown() {
	stop_all_daemons
}

@test "ctl: a command too long is refused with the reason, not a SIGPIPE" {
	blk_start
	long=$(head -c 5000 /dev/zero | tr '\0' x)
	run -100 --separate-stderr blkmirror ctl "$D/ctl.sock" "$long"
	[ "$stderr" = "blkmirror: command too long (at most 1024 bytes)" ]
	run -100 --separate-stderr blkmirror ctl "$D/ctl.sock" $'status\nsecondary'
	[ "$stderr" = "blkmirror: a command is one line" ]
	run -0 blkmirror ctl "$D/ctl.sock" status
	[[ "$output" == *$'\nrole=primary\n'* ]]
}

@test "ctl: a raw client's line too long is answered, and the next line too" {
	blk_start
	run -0 sh -c "{ head -c 100000 /dev/zero | tr '\\0' x; echo;
	    echo status; } | timeout 5 socat -t 5 - UNIX-CONNECT:$D/ctl.sock"
	[ "${lines[0]}" = "error: line too long (at most 1024 bytes)" ]
	[ "${lines[1]}" = "node=a" ]
	[ "${lines[-1]}" = "ok" ]
	grep -q "control client: line too long, refused" "$D/bm.err"
	run -0 blkmirror ctl "$D/ctl.sock" status
}

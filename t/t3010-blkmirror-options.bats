#!/usr/bin/env bats
# Probes of blkmirror's options: ports out of range or not numbers, and a
# control socket that is also the NBD socket, are refused at start with
# the reason and exit 100 (hbwatch does the same for its media).

load lib/common
load lib/blk

setup() {
	blk_init 16M
	make_key "$D/key"
}

teardown() {
	stop_all_daemons
}

bm() {
	run -100 --separate-stderr timeout 5 blkmirror -k "$D/key" "$@" \
	    -m "$D/meta" -n a -c "$D/ctl.sock" -l "$D/nbd.sock" "$D/disk"
}

@test "a peer port out of range or not a number is refused" {
	bm -P b=127.0.0.1:99999,sync
	[ "$stderr" = "blkmirror: -P b=127.0.0.1:99999,sync: bad port" ]
	bm -P b=127.0.0.1:0,sync
	[ "$stderr" = "blkmirror: -P b=127.0.0.1:0,sync: bad port" ]
	bm -P b=127.0.0.1:ssh,sync
	[ "$stderr" = "blkmirror: -P b=127.0.0.1:ssh,sync: bad port" ]
}

@test "a listening port out of range or not a number is refused" {
	bm -L 99999
	[ "$stderr" = "blkmirror: -L 99999: bad port" ]
	bm -L 127.0.0.1:70000
	[ "$stderr" = "blkmirror: -L 127.0.0.1:70000: bad port" ]
	bm -L abc
	[ "$stderr" = "blkmirror: -L abc: bad port" ]
	bm -t 99999
	[ "$stderr" = "blkmirror: -t 99999: bad port" ]
	bm -t '[::1]:65536'
	[ "$stderr" = "blkmirror: -t [::1]:65536: bad port" ]
}

@test "the control socket and the NBD socket may not be the same" {
	run -100 --separate-stderr timeout 5 blkmirror -m "$D/meta" -n a \
	    -c "$D/s.sock" -l "$D/s.sock" "$D/disk"
	[ "$stderr" = "blkmirror: -c and -l name the same socket: $D/s.sock" ]
}

@test "a split-brain save directory that is missing, not a directory or not writable is refused" {
	bm -B "$D/none"
	[ "$stderr" = "blkmirror: -B $D/none: No such file or directory" ]
	bm -B "$D/disk"
	[ "$stderr" = "blkmirror: -B $D/disk: not a directory" ]
	mkdir "$D/ro"
	if [ "$(id -u)" = 0 ]; then
		# root writes anywhere but on a read-only mount; the mount
		# dies with its private mount namespace
		run -100 --separate-stderr unshare -m sh -c 'mount --bind -o ro "$1" "$1" &&
		    exec timeout 5 blkmirror -k "$2/key" -B "$1" -m "$2/meta" \
		    -n a -c "$2/ctl.sock" -l "$2/nbd.sock" "$2/disk"' sh \
		    "$D/ro" "$D"
		[ "$stderr" = "blkmirror: -B $D/ro: not writable: Read-only file system" ]
	else
		chmod 555 "$D/ro"
		bm -B "$D/ro"
		[ "$stderr" = "blkmirror: -B $D/ro: not writable: Permission denied" ]
		chmod 755 "$D/ro"
	fi
	[ ! -e "$D/ctl.sock" ] && [ ! -e "$D/nbd.sock" ]
	# a good one starts
	blk_start -k "$D/key" -B "$D/ro"
}

#!/usr/bin/env bats
# Recovery case 3, a storage failure on the primary: a's store is a file
# served by nbdkit's error filter and mounted with nbdfuse, so that
# blkmirror sees real EIO from a real file once the test creates the
# filter's trigger file.  a detaches the store and serves through b while
# fio writes and verifies; a replacement is attached and pulled from b in
# the background; at the end all three copies are equal.

load lib/common
load lib/cluster
load lib/resync

setup() {
	[ "$(id -u)" = 0 ] || skip "needs root (FUSE)"
	cl_init 64M
	# a's store: $C/a/real through nbdkit (error filter) and nbdfuse
	mv "$C/a/disk" "$C/a/real"
	mkdir "$C/a/fuse"
	start_bg kit nbdkit -f -U "$C/a/kit.sock" --filter=error file \
	    "$C/a/real" error-rate=100% error-file="$C/a/fail"
	wait_socket kit "$C/a/kit.sock" 10
	start_bg fuse nbdfuse -P "$C/a/fuse.ready" "$C/a/fuse" \
	    "nbd+unix:///?socket=$C/a/kit.sock"
	wait_file fuse "$C/a/fuse.ready" 10
	wait_for 10 test -e "$C/a/fuse/nbd"
	ln -s fuse/nbd "$C/a/disk"
}

teardown() {
	stop_all_daemons
	if mountpoint -q "$C/a/fuse" 2>/dev/null; then
		fusermount3 -u -z "$C/a/fuse" || :
	fi
}

# events EVENT: the lines of a's event stream with that event
events() { awk -v e="$1" '$3 == e' "$BATS_TEST_TMPDIR/ev.out"; }

@test "a's store fails: detached, served through b, replaced, resynced" {
	cl_up
	start_bg ev blkmirror ctl "$C/a/ctl.sock" events
	wait_for 10 test -s "$BATS_TEST_TMPDIR/ev.out"
	run -1 --separate-stderr cl_ctl a "attach $C/a/new"
	[ "$stderr" = "attach: the store is not detached (disk=uptodate)" ]
	fio_bg fio1 a 16 --verify_backlog=64
	sleep 1
	# the store starts failing: the next I/O from blkmirror gets EIO
	touch "$C/a/fail"
	cl_wait a disk diskless
	[ "$(cl_status a store)" = detached ]
	wait_for 10 eval '[ -n "$(events detach)" ]'
	events detach | grep -q ' peer=b '
	grep -q 'injecting EIO' "$BATS_TEST_TMPDIR/kit.err"
	# blkmirror let go of the failed store: the FUSE mount can go (once
	# the system calls in flight on it have failed)
	wait_for 10 fusermount3 -u "$C/a/fuse" 2>/dev/null
	kill_daemon kit TERM || :
	# diskless: fio's reads (verify_backlog) come from b
	wait_for 10 eval '[ "$(cl_status a peer_read_bytes)" -gt 0 ]'
	sleep 2
	truncate -s 32M "$C/a/small"
	run -1 --separate-stderr cl_ctl a "attach $C/a/small"
	[ "$stderr" = "attach $C/a/small: 33554432 bytes, fewer than the resource's 67108864" ]
	run -1 --separate-stderr cl_ctl a "attach $C/a/none"
	[ "$stderr" = "attach $C/a/none: No such file or directory" ]
	truncate -s 64M "$C/a/new"
	run -0 cl_ctl a "attach $C/a/new"
	[ "$(cl_status a store_path)" = "$C/a/new" ]
	cl_wait a disk uptodate 30
	# fio started before the failure and is still writing: the whole
	# resync ran under it
	kill -0 "$(cat "$BATS_TEST_TMPDIR/fio1.pid")"
	[ "$(cl_status a store)" = attached ]
	[ "$(cl_status a attach_pulled_bytes)" = 67108864 ]
	events attached | grep -q " device=$C/a/new size=67108864 peer=b "
	events resync-done | grep -q ' peer=b role=attach received_bytes=67108864 '
	# the application never saw an error
	wait_bg fio1
	grep -q 'err= 0' "$C/fio1.fio"
	[ "$(cl_status a errors)" = 0 ]
	run -0 cl_status a store_detaches
	[ "$output" = 1 ]
	run -0 qemu-io -f raw -c flush "$(cl_uri a)"
	[ "$(md5sum <"$C/a/new")" = "$(md5sum <"$C/b/disk")" ]
	cl_wait a peer.c.lag_bytes 0 30
	[ "$(md5sum <"$C/a/new")" = "$(md5sum <"$C/c/disk")" ]
	# whole again: new writes and reads use the new store
	run -0 qemu-io -f raw -c 'write -P 0x5a 1M 64k' -c flush "$(cl_uri a)"
	cmp -n 65536 -i 1048576:1048576 "$C/a/new" "$C/b/disk"
	run -0 qemu-io -f raw -c 'read -P 0x5a 1M 64k' "$(cl_uri a)"
	reads=$(cl_status a peer_reads)
	run -0 qemu-io -f raw -c 'read -P 0x5a 1M 64k' "$(cl_uri a)"
	[ "$(cl_status a peer_reads)" = "$reads" ]
}

@test "without an up-to-date sync peer the error reaches the client" {
	cl_up
	cl_kill b
	cl_wait a peer.b.connected 0
	touch "$C/a/fail"
	run -1 qemu-io -f raw -c 'write -P 1 0 64k' "$(cl_uri a)"
	[ "$output" = "write failed: Input/output error" ]
	[ "$(cl_status a disk)" = uptodate ]
	[ "$(cl_status a store)" = attached ]
	[ "$(cl_status a store_detaches)" = 0 ]
	rm "$C/a/fail"
	run -0 qemu-io -f raw -c 'write -P 1 0 64k' "$(cl_uri a)"
}

# detach_a: a's store fails under a write; a goes diskless.
detach_a() {
	touch "$C/a/fail"
	run -0 qemu-io -f raw -c 'write -P 7 0 64k' "$(cl_uri a)"
	cl_wait a disk diskless
}

@test "b lost while a is diskless: I/O is held until b is back" {
	cl_up
	detach_a
	gi=$(cl_status a gi_current)
	cl_stop b
	cl_wait a peer.b.connected 0
	start_bg qio qemu-io -f raw -c 'write -P 9 1M 64k' \
	    -c 'read -P 9 1M 64k' "$(cl_uri a)"
	cl_wait a suspended 1
	sleep 0.5
	kill -0 "$(cat "$BATS_TEST_TMPDIR/qio.pid")"
	# a did not go on without b: b keeps the only copy
	[ "$(cl_status a gi_current)" = "$gi" ]
	cl_start b
	cl_wait a peer.b.state uptodate
	wait_bg qio
	[ "$(cl_status a suspended)" = 0 ]
	cmp -n 65536 -i 0:1048576 /dev/stdin "$C/b/disk" < <(
	    head -c 65536 /dev/zero | tr '\0' '\011')
	cmp -n 65536 /dev/stdin "$C/b/disk" < <(
	    head -c 65536 /dev/zero | tr '\0' '\007')
	[ "$(cl_status a errors)" = 0 ]
}

@test "b lost while a is diskless, -q io-error: I/O fails" {
	cl_up -q io-error
	detach_a
	cl_stop b
	cl_wait a peer.b.connected 0
	run -1 qemu-io -f raw -c 'write -P 9 1M 64k' "$(cl_uri a)"
	[ "$output" = "write failed: Input/output error" ]
	run -1 qemu-io -f raw -c 'read 0 64k' "$(cl_uri a)"
	[ "$output" = "read failed: Input/output error" ]
	cl_start b
	cl_wait a peer.b.state uptodate
	run -0 qemu-io -f raw -c 'read -P 7 0 64k' "$(cl_uri a)"
}

# pattern OFF: the same 64 KiB of 0x3c at OFF in every node's store,
# before the nodes start (their data must stay identical)
pattern() {
	local f
	for f in "$C/a/real" "$C/b/disk" "$C/c/disk"; do
		head -c 65536 /dev/zero | tr '\0' '\074' |
		    dd of="$f" bs=64k seek="$(($1 / 65536))" conv=notrunc \
		    status=none
	done
}

@test "a read error detaches the store; the read is answered from b" {
	pattern $((8 << 20))
	cl_up
	touch "$C/a/fail"
	run -0 qemu-io -f raw -c 'read -P 0x3c 8M 64k' "$(cl_uri a)"
	[ "$(cl_status a disk)" = diskless ]
	[ "$(cl_status a peer_read_bytes)" = 65536 ]
	[ "$(cl_status a errors)" = 0 ]
	grep -q 'injecting EIO error into pread' "$BATS_TEST_TMPDIR/kit.err"
	grep -q 'read error: Input/output error; detached, serving through peer b' \
	    "$BATS_TEST_TMPDIR/bma.err"
	# reads larger than a replication message come back whole
	run -0 qemu-io -f raw -c 'read -P 0x3c 8M 64k' -c 'read -P 0 9M 3M' \
	    "$(cl_uri a)"
	[ "$(cl_status a peer_read_bytes)" = $((65536 * 2 + (3 << 20))) ]
	# trim and zeroes go to b as well
	run -0 qemu-io -f raw -c 'write -P 5 2M 1M' -c 'write -z 2M 64k' \
	    -c 'discard 3M 64k' -c 'read -P 0 2M 64k' \
	    -c 'read -P 5 2112k 960k' -c flush "$(cl_uri a)"
	cmp -n 65536 -i 0:2097152 /dev/zero "$C/b/disk"
	[ "$(cl_status a errors)" = 0 ]
}

@test "detach and attach by command, while fio writes" {
	cl_up
	run -1 --separate-stderr cl_ctl b detach
	[ "$stderr" = "detach: not primary" ]
	start_bg ev blkmirror ctl "$C/a/ctl.sock" events
	wait_for 10 test -s "$BATS_TEST_TMPDIR/ev.out"
	fio_bg fio1 a 8 --verify_backlog=64
	sleep 1
	run -0 cl_ctl a detach
	[ "$(cl_status a disk)" = diskless ]
	run -1 --separate-stderr cl_ctl a detach
	[ "$stderr" = "detach: already detached" ]
	wait_for 10 eval '[ -n "$(events detach)" ]'
	events detach | grep -q ' reason="detach command" peer=b '
	sleep 1
	truncate -s 64M "$C/a/new"
	run -0 cl_ctl a "attach $C/a/new"
	cl_wait a disk uptodate 30
	wait_bg fio1
	[ "$(cl_status a errors)" = 0 ]
	run -0 qemu-io -f raw -c flush "$(cl_uri a)"
	[ "$(md5sum <"$C/a/new")" = "$(md5sum <"$C/b/disk")" ]
	# the old store was left as it was when detached
	[ "$(md5sum <"$C/a/real")" != "$(md5sum <"$C/b/disk")" ]
}

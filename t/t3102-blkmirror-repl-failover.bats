#!/usr/bin/env bats
# Failures: a killed mid-stream loses no acknowledged write on b; a cut
# off from b and c acknowledges nothing; promotion is vetoed while a is
# primary; --force promotes c alone; a wrong key is refused on both ends.

load lib/common
load lib/cluster

setup() {
	cl_init 64M
}

teardown() {
	stop_all_daemons
}

@test "kill -9 of a during a write stream: every acknowledged write is on b" {
	cl_up
	start_bg seq python3 "$BATS_TEST_DIRNAME/lib/nbdseq.py" write \
	    "$C/a/nbd.sock" "$C/seq.log" 512
	wait_for 10 eval '[ "$(cat "$C/seq.log" 2>/dev/null | wc -l)" -gt 300 ]' || { cat "$C/seq.err"; false; }
	cl_kill a
	wait_for 10 eval '! kill -0 $(cat "$C/seq.pid") 2>/dev/null'
	cl_wait b peer.a.connected 0
	cl_wait c peer.a.connected 0
	# (until c's news that a is gone reached b, c vetoes)
	wait_for 5 cl_ctl b primary
	run -0 python3 "$BATS_TEST_DIRNAME/lib/nbdseq.py" check \
	    "$C/b/nbd.sock" "$C/seq.log" 512
	[[ "$output" =~ ^checked\ [0-9]+\ acknowledged\ writes$ ]]
	echo "$output"
}

@test "a cut off from b and c suspends I/O and acknowledges nothing" {
	cl_up
	run -0 qemu-io -f raw -c 'write -P 1 0 64k' "$(cl_uri a)"
	cl_kill b
	cl_kill c
	cl_wait a quorum no
	run -124 timeout 3 qemu-io -f raw -c 'write -P 2 0 64k' "$(cl_uri a)"
	[ "$(cl_status a suspended)" = 1 ]
	run -0 cl_status a written_bytes
	[ "$output" = 65536 ]
	# nothing of the held write reached a's store either
	head -c 65536 /dev/zero | tr '\0' '\1' | cmp -n 65536 - "$C/a/disk"
	cl_start b
	cl_wait a quorum yes
	cl_wait a suspended 0
	run -0 qemu-io -f raw -c 'write -P 3 0 64k' "$(cl_uri a)"
	cl_stop a
	cl_stop b
	cmp "$C/a/disk" "$C/b/disk"
}

@test "promotion of b while a is primary is vetoed; without quorum refused" {
	cl_up
	run -1 --separate-stderr cl_ctl b primary
	[ "$stderr" = "vetoed by a (primary)" ]
	run -1 --separate-stderr cl_ctl c primary
	[ "$stderr" = "vetoed by a (primary)" ]
	cl_kill a
	cl_kill b
	cl_wait c nodes 1
	run -1 --separate-stderr cl_ctl c primary
	[ "$stderr" = "no quorum (1 of 3 nodes)" ]
	run -0 cl_ctl c "primary --force"
	[ "$(cl_status c role)" = primary ]
	run -0 qemu-io -f raw -c 'write -P 7 0 64k' "$(cl_uri c)"
}

@test "a wrong cluster key is refused on both ends" {
	make_key "$C/other"
	cl_start a
	CL_KEY=$C/other cl_start b
	wait_for 10 grep -q "wrong cluster key" "$C/bma.err"
	wait_for 10 grep -q "wrong cluster key" "$C/bmb.err"
	cl_wait a peer.b.last_error "wrong cluster key: peer 127.0.0.1:$PORT_b does not hold ours (or the handshake was tampered with)"
	[ "$(cl_status a peer.b.connected)" = 0 ]
}

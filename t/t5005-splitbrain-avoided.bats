#!/usr/bin/env bats
# Where split brain is avoided or cannot happen: with quorum on, a
# partition never gives two primaries that acknowledge writes (the
# cut-off primary suspends); a and b cut only from each other while c
# sees both: b's promotion is vetoed; after a power loss of a and b the
# generation identifiers choose the sync source, without a split-brain
# verdict.  (t3102 covers the veto by a connected primary and a primary
# whose peers were killed; this file cuts links.)

load lib/common
load lib/cluster
load lib/splitbrain
load lib/resync

setup() {
	sb_init 16M
}

teardown() {
	stop_all_daemons
}

up() { CL_START=sb_start cl_up "$@"; }

@test "quorum on: the cut-off primary suspends, so at most one primary acknowledges writes" {
	up -A after-sb-2pri=discard-zero-changes
	run -0 qemu-io -f raw -c 'write -P 1 0 64k' "$(cl_uri a)"
	sb_cut ab ac bc
	cl_wait a quorum no
	cl_wait b quorum no
	# a acknowledges nothing; b may not become primary without quorum
	run -124 timeout 3 qemu-io -f raw -c 'write -P 2 0 64k' "$(cl_uri a)"
	[ "$(cl_status a suspended)" = 1 ]
	run -1 --separate-stderr cl_ctl b primary
	[ "$stderr" = "no quorum (1 of 3 nodes)" ]
	# forced, b acknowledges; a still does not
	run -0 cl_ctl b "primary --force"
	run -0 qemu-io -f raw -c 'write -P 3 64k 64k' "$(cl_uri b)"
	run -124 timeout 3 qemu-io -f raw -c 'write -P 4 128k 64k' "$(cl_uri a)"
	[ "$(cl_status a written_bytes)" = 65536 ]
	# healed: a never acknowledged a write since, so it changed nothing
	# and is the victim; its suspended writes fail
	sb_events a
	sb_heal ab
	sb_wait_event a "split-brain-policy peer=b primaries=2 policy=discard-zero-changes victim=a reason=\"discard-zero-changes: it changed nothing\""
	sb_wait_event a "split-brain-resolved peer=b victim=a "
	[ "$(cl_status a suspended)" = 0 ]
	[ "$(cl_status a role)" = secondary ]
	cl_wait b peer.a.resync source
	run -0 resyncd sync -c "$C/b/ctl.sock" a
	cl_wait a peer.b.state uptodate
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
}

@test "a and b cut from each other, c sees both: b's promotion is vetoed" {
	up
	sb_cut ab
	cl_wait b peer.a.connected 0
	cl_wait a peer.b.connected 0
	[ "$(cl_status b quorum)" = yes ]
	run -1 --separate-stderr cl_ctl b primary
	[ "$stderr" = "vetoed by c (connected to a primary)" ]
	run -1 --separate-stderr cl_ctl b primary
	[ "$stderr" = "vetoed by c (connected to a primary)" ]
	# a keeps its quorum through c and goes on
	run -0 timeout 10 qemu-io -f raw -c 'write -P 5 0 64k' "$(cl_uri a)"
	[ "$(cl_status b role)" = secondary ]
	sb_heal ab
	cl_wait a peer.b.state needs-resync
}

@test "power loss of a and b: the generation identifiers choose a, no split brain" {
	up
	run -0 qemu-io -f raw -c 'write -P 1 0 1M' "$(cl_uri a)"
	cl_kill b
	cl_wait a peer.b.connected 0
	# a goes on without b, then both lose power
	dirty a 2
	cl_kill a
	cl_kill c
	sb_start b
	sb_events b
	sb_start a
	sb_start c
	sb_wait_event b "verdict peer=a verdict=target state=sync-target why=\"the peer moved on since it lost us\""
	cl_wait a peer.b.state needs-resync
	[ "$(cl_status a role)" = secondary ]
	run -1 grep -c split-brain "$C/evb.out"
	run -0 cl_status b disk
	[ "$output" = inconsistent ]
	cl_wait a peer.b.resync source
	run -0 resyncd sync -c "$C/a/ctl.sock" b
	cl_wait b peer.a.state uptodate
	# every block a wrote after b died, also those its bitmap on disk
	# missed when it lost power (its activity log adds them)
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
}

#!/usr/bin/env bats
# splitbrain verdict and policy, from key=value descriptions of two nodes
# as blkmirror dump prints them.

setup() {
	load lib/common
	d=$BATS_TEST_TMPDIR
}

# node NAME ROLE CLEAN CURRENT HISTORY PEER BITMAP_GI OOS_BYTES [PROMOTED]
node() {
	cat <<EOT
version=1
node=$1
block_size=4096
role=$2
clean=$3
gi_current=$4
gi_history=$5
peer.$6.bitmap_gi=$7
peer.$6.oos_bytes=$8
${9:+promoted_at=$9}
EOT
}

@test "same generation: in sync" {
	node a primary 1 00000000000000a0 0000000000000000,0000000000000000 b 0 0 >"$d/a"
	node b secondary 1 00000000000000a0 0000000000000000,0000000000000000 a 0 0 >"$d/b"
	run -0 splitbrain "$d/a" "$d/b"
	[ "$output" = 'in-sync nodes=a,b reason="same generation"' ]
	run -0 splitbrain verdict "$d/b" "$d/a"
	[ "$output" = 'in-sync nodes=b,a reason="same generation"' ]
}

@test "a primary that lost its peer is the sync source" {
	node a primary 1 00000000000000b0 00000000000000a0,0000000000000000 b 00000000000000a0 8192 >"$d/a"
	node b secondary 1 00000000000000a0 0000000000000000,0000000000000000 a 0 0 >"$d/b"
	run -2 splitbrain "$d/a" "$d/b"
	[ "$output" = 'resync source=a target=b full=0 al=- reason="we moved on since we lost the peer"' ]
	run -2 splitbrain "$d/b" "$d/a"
	[ "$output" = 'resync source=a target=b full=0 al=- reason="the peer moved on since it lost us"' ]
}

@test "a crashed primary's activity log is part of the resync" {
	node a primary 0 00000000000000a0 0000000000000000,0000000000000000 b 0 0 >"$d/a"
	node b primary 1 00000000000000c0 00000000000000a0,0000000000000000 a 00000000000000a0 4096 >"$d/b"
	run -2 splitbrain "$d/a" "$d/b"
	[ "$output" = 'resync source=b target=a full=0 al=a reason="the peer moved on since it lost us"' ]
}

@test "both moved on from the same generation: split brain" {
	node a primary 1 00000000000000b0 00000000000000a0,0000000000000000 b 00000000000000a0 8192 >"$d/a"
	node b primary 1 00000000000000c0 00000000000000a0,0000000000000000 a 00000000000000a0 4096 >"$d/b"
	run -3 splitbrain "$d/a" "$d/b"
	[ "$output" = 'split-brain nodes=a,b full=0 reason="both moved on from the same generation"' ]
}

@test "no common generation: unrelated" {
	node a primary 1 00000000000000b0 0000000000000000,0000000000000000 b 0 0 >"$d/a"
	node b secondary 1 00000000000000c0 0000000000000000,0000000000000000 a 0 0 >"$d/b"
	run -4 splitbrain "$d/a" "$d/b"
	[ "$output" = 'unrelated nodes=a,b reason="no common generation"' ]
}

@test "one node may come from standard input" {
	node a primary 1 00000000000000a0 0000000000000000,0000000000000000 b 0 0 >"$d/a"
	run -0 splitbrain "$d/a" - < <(node b secondary 1 00000000000000a0 0,0 a 0 0)
	[ "$output" = 'in-sync nodes=a,b reason="same generation"' ]
}

# the policy table: a wrote 8 KiB and became primary at 100; b wrote 4 KiB
# and became primary at 200
policy() {
	node a "${A_ROLE:-primary}" 1 00000000000000b0 00000000000000a0,0 b 00000000000000a0 "${A_OOS:-8192}" 100 >"$d/a"
	node b "${B_ROLE:-primary}" 1 00000000000000c0 00000000000000a0,0 a 00000000000000a0 "${B_OOS:-4096}" 200 >"$d/b"
	splitbrain policy "$@" "$d/a" "$d/b"
}

@test "each policy picks the victim it should" {
	run -0 policy after-sb-2pri=discard-younger-primary
	[ "$output" = 'victim=b survivor=a policy=discard-younger-primary primaries=2 reason="discard-younger-primary: it became primary last"' ]
	run -0 policy after-sb-2pri=discard-older-primary
	[ "$output" = 'victim=a survivor=b policy=discard-older-primary primaries=2 reason="discard-older-primary: it became primary first"' ]
	run -0 policy after-sb-2pri=discard-least-changes
	[ "$output" = 'victim=b survivor=a policy=discard-least-changes primaries=2 reason="discard-least-changes: it changed fewer blocks"' ]
	run -0 policy after-sb-2pri=discard-node-a
	[ "$output" = 'victim=a survivor=b policy=discard-node-a primaries=2 reason="discard-node: named by the policy"' ]
	B_OOS=0 run -0 policy after-sb-2pri=discard-zero-changes
	[ "$output" = 'victim=b survivor=a policy=discard-zero-changes primaries=2 reason="discard-zero-changes: it changed nothing"' ]
	run -1 policy after-sb-2pri=discard-zero-changes
	[ "$output" = 'undecided policy=discard-zero-changes primaries=2 reason="discard-zero-changes: both changed blocks"' ]
	run -1 policy
	[ "$output" = 'undecided policy=disconnect primaries=2 reason="policy disconnect: waiting for a person"' ]
}

@test "the policy follows the number of primaries" {
	A_ROLE=secondary B_ROLE=secondary run -0 policy after-sb-0pri=discard-node-b after-sb-2pri=discard-node-a
	[ "$output" = 'victim=b survivor=a policy=discard-node-b primaries=0 reason="discard-node: named by the policy"' ]
	A_ROLE=secondary run -0 policy after-sb-1pri=discard-least-changes after-sb-2pri=discard-node-b
	[[ "$output" == 'victim=b survivor=a policy=discard-least-changes primaries=1 '* ]]
}

@test "policy refuses nodes that are not in split brain, and bad policies" {
	node a primary 1 00000000000000a0 0,0 b 0 0 >"$d/a"
	node b secondary 1 00000000000000a0 0,0 a 0 0 >"$d/b"
	run -100 --separate-stderr splitbrain policy after-sb-2pri=discard-node-a "$d/a" "$d/b"
	[ "$stderr" = "splitbrain: a and b are not in split brain (in-sync: same generation)" ]
	run -100 --separate-stderr splitbrain policy after-sb-2pri=discard-everything "$d/a" "$d/b"
	[[ "$stderr" == "splitbrain: after-sb-2pri=discard-everything: unknown policy"* ]]
	run -100 --separate-stderr splitbrain policy after-sb-3pri=disconnect "$d/a" "$d/b"
	[ "$stderr" = "splitbrain: after-sb-3pri=disconnect: want after-sb-0pri=, after-sb-1pri= or after-sb-2pri=" ]
}

@test "bad descriptions are refused with the reason" {
	echo "size=1" >"$d/x"
	node b secondary 1 00000000000000a0 0,0 a 0 0 >"$d/b"
	run -100 --separate-stderr splitbrain "$d/x" "$d/b"
	[ "$stderr" = "splitbrain: $d/x: no node= line: not a blkmirror dump or status" ]
	printf 'node=a\ngi_current=zz\n' >"$d/x"
	run -100 --separate-stderr splitbrain "$d/x" "$d/b"
	[ "$stderr" = "splitbrain: $d/x: gi_current=zz: not a hexadecimal generation identifier" ]
	printf 'node=a\nthis is not\n' >"$d/x"
	run -100 --separate-stderr splitbrain "$d/x" "$d/b"
	[ "$stderr" = "splitbrain: $d/x:2: not a key=value line: this is not" ]
	run -100 --separate-stderr splitbrain "$d/b" "$d/b"
	[ "$stderr" = "splitbrain: both describe node b" ]
	run -111 --separate-stderr splitbrain "$d/none" "$d/b"
	[ "$stderr" = "splitbrain: $d/none: No such file or directory" ]
}

#!/usr/bin/env bats
# Split brain on three nodes: a and b cut from each other and from c,
# quorum off, both primary, different writes on each.  When a and b meet
# again blkmirror detects it and applies the after-sb-Npri policy: each
# case picks the victim it should, the victim's blocks are in its save
# file, resyncd makes it a copy of the survivor, and "splitbrain restore"
# of the save file onto that copy gives back the victim's image.

load lib/common
load lib/cluster
load lib/splitbrain

setup() {
	sb_init 16M
}

teardown() {
	stop_all_daemons
}

# diverge [BLKMIRROR ARG...]: a and b primary on both sides of a
# partition, a writes 3 blocks' worth of ranges, b 2; checksums in
# SUM_a and SUM_b.
diverge() {
	sb_start a -q off "$@"
	sb_start b -q off "$@"
	sb_start c -q off "$@"
	cl_wait a peer.b.state uptodate
	cl_wait a peer.c.state uptodate
	cl_wait b peer.c.state uptodate
	run -0 cl_ctl a primary
	run -0 qemu-io -f raw -c 'write -P 1 0 1M' "$(cl_uri a)"
	cl_wait b peer.a.oos_bytes 0
	sb_cut ab ac bc
	cl_wait a peer.b.connected 0
	cl_wait b peer.a.connected 0
	cl_wait c nodes 1
	run -0 cl_ctl b "primary --force"
	run -0 qemu-io -f raw -c 'write -P 0xaa 0 8k' -c 'write -P 0xab 1M 4k' \
	    -c 'write -P 0xac 8M 4k' "$(cl_uri a)"
	run -0 qemu-io -f raw -c 'write -P 0xbb 4k 8k' -c 'write -P 0xbc 12M 4k' \
	    "$(cl_uri b)"
	SUM_a=$(cl_sum a)
	SUM_b=$(cl_sum b)
	[ "$SUM_a" != "$SUM_b" ]
	sb_events a
	sb_events b
}

# heal VICTIM SURVIVOR POLICY PRIMARIES: a and b meet; both decide the
# same; the victim saves, is resynced, and its image comes back from
# the save file.
heal() {
	local v=$1 s=$2 pol=$3 np=$4 f
	sb_heal ab
	sb_wait_event a "split-brain peer=b full=0 why=\"both moved on from the same generation\""
	sb_wait_event b "split-brain peer=a full=0"
	sb_wait_event a "split-brain-policy peer=b primaries=$np policy=$pol victim=$v "
	sb_wait_event b "split-brain-policy peer=a primaries=$np policy=$pol victim=$v "
	sb_wait_event "$v" "split-brain-resolved peer=$s victim=$v savefile="
	f=$(sb_event "$v" split-brain-resolved | sed 's/.* savefile=\([^ ]*\) .*/\1/')
	[ "$f" = "$(cl_status "$v" peer.$s.sb_savefile)" ]
	[[ "$f" == "$C/$v/$v-splitbrain-"*.save ]]
	sb_wait_event "$s" "split-brain-resolved peer=$v victim=$v savefile=$f "
	# the victim is no primary any more, its data not up to date
	[ "$(cl_status "$v" role)" = secondary ]
	[ "$(cl_status "$v" disk)" = inconsistent ]
	cl_wait "$s" peer.$v.resync source
	run -0 resyncd sync -c "$C/$s/ctl.sock" "$v"
	cl_wait "$s" peer.$v.state uptodate
	cl_wait "$v" peer.$s.state uptodate
	[ "$(cl_status "$v" disk)" = uptodate ]
	eval "[ \"\$(cl_sum $s)\" = \"\$SUM_$s\" ]"
	[ "$(cl_sum "$v")" = "$(cl_sum "$s")" ]
	# the save file gives back the victim's image
	cp "$C/$v/disk" "$C/restored"
	run -0 splitbrain restore "$f" "$C/restored"
	eval "[ \"\$(md5sum <\"\$C/restored\" | cut -d' ' -f1)\" = \"\$SUM_$v\" ]"
	# both sides' changes: blocks 0-2, at 1M, 8M and 12M
	run -0 splitbrain show "$f"
	[ "${lines[1]}" = "node=$v" ]
	[ "${lines[6]}" = records=4 ]
	[ "${lines[7]}" = bytes=24576 ]
	[ "${lines[8]}" = "record offset=0 length=12288" ]
	[ "${lines[11]}" = "record offset=12582912 length=4096" ]
}

@test "2 primaries, discard-younger-primary: b, promoted last, is the victim" {
	diverge -A after-sb-2pri=discard-younger-primary
	heal b a discard-younger-primary 2
	# a went on as primary throughout
	[ "$(cl_status a role)" = primary ]
}

@test "2 primaries, discard-older-primary: a, promoted first, is the victim and is demoted" {
	diverge -A after-sb-2pri=discard-older-primary
	heal a b discard-older-primary 2
	[ "$(cl_status b role)" = primary ]
	sb_wait_event a "role role=secondary"
}

@test "2 primaries, discard-least-changes: b changed fewer blocks" {
	diverge -A after-sb-2pri=discard-least-changes -A after-sb-1pri=discard-node-a
	heal b a discard-least-changes 2
}

@test "1 primary: after-sb-1pri applies, not after-sb-2pri" {
	diverge -A after-sb-1pri=discard-node-a -A after-sb-2pri=discard-node-b
	run -0 cl_ctl a secondary
	heal a b discard-node-a 1
}

@test "no primary: after-sb-0pri=discard-least-changes picks b" {
	diverge -A after-sb-0pri=discard-least-changes \
	    -A after-sb-2pri=discard-node-a
	run -0 cl_ctl a secondary
	run -0 cl_ctl b secondary
	heal b a discard-least-changes 0
}

@test "a victim demoted while fio writes on it: what it wrote is all in the save file" {
	diverge -A after-sb-2pri=discard-younger-primary
	start_bg fio timeout 60 fio --name=w --ioengine=nbd --uri="$(cl_uri b)" \
	    --rw=randwrite --bs=4k --size=16M --iodepth=8 --time_based \
	    --runtime=30 --output="$C/fio.log"
	wait_for 10 eval '[ "$(cl_status b writes)" -gt 200 ]'
	sb_heal ab
	sb_wait_event b "split-brain-resolved peer=a victim=b "
	# fio's writes fail from the demotion on
	wait_for 10 eval '! kill -0 $(cat "$C/fio.pid") 2>/dev/null'
	[ "$(cl_status b role)" = secondary ]
	# nothing changes b now but the resync: this is the victim's image
	cp "$C/b/disk" "$C/victim"
	f=$(cl_status b peer.a.sb_savefile)
	cl_wait a peer.b.resync source
	run -0 resyncd sync -c "$C/a/ctl.sock" b
	cl_wait b peer.a.state uptodate
	[ "$(cl_sum b)" = "$SUM_a" ]
	cp "$C/b/disk" "$C/restored"
	run -0 splitbrain restore "$f" "$C/restored"
	cmp "$C/restored" "$C/victim"
}

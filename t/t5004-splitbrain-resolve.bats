#!/usr/bin/env bats
# Split brain under the default policy, disconnect: both nodes keep
# running, primary, and say so in status until a person runs "splitbrain
# resolve"; the handler hears of it; a save that fails overwrites
# nothing and leaves the pair in split brain.

load lib/common
load lib/cluster
load lib/splitbrain

setup() {
	sb_init 16M
	cat >"$C/handler" <<EOT
#!/bin/sh
{ echo "\$1 \$2"; env | grep ^HATRIO_ | sort; echo; } >>"$C/handler.log"
EOT
	chmod +x "$C/handler"
}

teardown() {
	stop_all_daemons
}

# as in t5003: a and b primary on both sides of a partition
diverge() {
	sb_start a -q off -e "$C/handler" "$@"
	sb_start b -q off -e "$C/handler" "$@"
	sb_start c -q off
	cl_wait a peer.b.state uptodate
	cl_wait a peer.c.state uptodate
	cl_wait b peer.c.state uptodate
	run -0 cl_ctl a primary
	run -0 qemu-io -f raw -c 'write -P 1 0 1M' "$(cl_uri a)"
	cl_wait b peer.a.oos_bytes 0
	sb_cut ab ac bc
	cl_wait a peer.b.connected 0
	cl_wait b peer.a.connected 0
	run -0 cl_ctl b "primary --force"
	run -0 qemu-io -f raw -c 'write -P 0xaa 0 8k' -c 'write -P 0xab 1M 4k' \
	    "$(cl_uri a)"
	run -0 qemu-io -f raw -c 'write -P 0xbb 4k 8k' "$(cl_uri b)"
	SUM_a=$(cl_sum a)
	SUM_b=$(cl_sum b)
	sb_events a
	sb_events b
	sb_heal ab
	sb_wait_event a "split-brain-policy peer=b primaries=2 policy=disconnect victim=none "
	sb_wait_event b "split-brain-policy peer=a primaries=2 policy=disconnect victim=none "
}

@test "disconnect: both keep running, split brain in status, until resolve" {
	diverge
	sleep 1
	for n in a b; do
		o=$([ $n = a ] && echo b || echo a)
		[ "$(cl_status $n role)" = primary ]
		[ "$(cl_status $n peer.$o.connected)" = 1 ]
		[ "$(cl_status $n peer.$o.state)" = split-brain ]
		[ "$(cl_status $n peer.$o.split_brain)" = waiting ]
		[ "$(cl_status $n peer.$o.sb_policy)" = disconnect ]
		[ "$(cl_status $n peer.$o.sb_reason)" = "policy disconnect: waiting for a person" ]
	done
	# both still take writes, nothing crosses
	run -0 qemu-io -f raw -c 'write -P 0xa1 2M 4k' "$(cl_uri a)"
	run -0 qemu-io -f raw -c 'write -P 0xb1 3M 4k' "$(cl_uri b)"
	cp "$C/b/disk" "$C/b.before"
	[ "$(cl_sum a)" != "$SUM_b" ]
	# the handler heard of it on both nodes
	wait_for 5 eval '[ "$(grep -c "^split-brain " "$C/handler.log")" = 2 ]'
	grep -q "^HATRIO_NODE=a$" "$C/handler.log"
	grep -q "^HATRIO_PEER=a$" "$C/handler.log"
	grep -q "^HATRIO_POLICY=disconnect$" "$C/handler.log"
	grep -q "^HATRIO_PRIMARIES=2$" "$C/handler.log"
	# the person: keep a, discard b (asked on a)
	run -0 --separate-stderr splitbrain resolve -c "$C/a/ctl.sock" --discard b
	[ "$output" = "victim=b survivor=a" ]
	sb_wait_event b "split-brain-resolved peer=a victim=b savefile=$C/b/b-splitbrain-"
	sb_wait_event a "split-brain-resolved peer=b victim=b savefile=$C/b/b-splitbrain-"
	f=$(cl_status b peer.a.sb_savefile)
	[ "$(cl_status b role)" = secondary ]
	cl_wait a peer.b.resync source
	run -0 resyncd sync -c "$C/a/ctl.sock" b
	cl_wait b peer.a.state uptodate
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
	cp "$C/b/disk" "$C/restored"
	run -0 splitbrain restore "$f" "$C/restored"
	# b's image, but for the block a wrote after they met: that one
	# never was b's, and the resync gave it to b
	dd if="$C/a/disk" of="$C/b.before" bs=4k skip=512 seek=512 count=1 \
	    conv=notrunc status=none
	cmp "$C/restored" "$C/b.before"
	wait_for 5 grep -q "^split-brain-resolved b$" "$C/handler.log"
	grep -q "^HATRIO_SAVEFILE=$f$" "$C/handler.log"
	grep -q "^HATRIO_VICTIM=b$" "$C/handler.log"
}

@test "resolve on the victim itself: --discard names this node" {
	diverge
	run -0 splitbrain resolve -c "$C/a/ctl.sock" --discard a
	[ "$output" = "victim=a survivor=b" ]
	sb_wait_event b "split-brain-resolved peer=a victim=a savefile=$C/a/a-splitbrain-"
	cl_wait b peer.a.resync source
	run -0 resyncd sync -c "$C/b/ctl.sock" a
	cl_wait a peer.b.state uptodate
	[ "$(cl_sum a)" = "$SUM_b" ]
	[ "$(cl_status b role)" = primary ]
}

@test "resolve refuses what it cannot do" {
	diverge
	run -1 --separate-stderr splitbrain resolve -c "$C/c/ctl.sock" --discard c
	[ "$stderr" = "discard c: not in split brain with a connected peer" ]
	run -1 --separate-stderr splitbrain resolve -c "$C/a/ctl.sock" --discard c
	[ "$stderr" = "discard c: not in split brain with it (peer state connecting)" ]
	run -1 --separate-stderr splitbrain resolve -c "$C/a/ctl.sock" --discard x
	[ "$stderr" = "discard x: no such node" ]
	run -0 splitbrain resolve -c "$C/a/ctl.sock" --discard b
	run -1 --separate-stderr splitbrain resolve -c "$C/b/ctl.sock" --discard a
	[[ "$stderr" == "discard a: split brain with a already being resolved ("* ||
	    "$stderr" == "discard a: not in split brain with it (peer state sync-target)" ]]
	run -100 --separate-stderr splitbrain resolve --discard b
	[ "${stderr_lines[5]}" = "       splitbrain resolve -c ctlsock --discard node" ]
	run -111 --separate-stderr splitbrain resolve -c "$C/none.sock" --discard b
}

@test "a save that fails overwrites nothing: still split brain, then resolved" {
	# blkmirror refuses a missing -B directory at start: remove it after
	mkdir "$C/saves"
	diverge -B "$C/saves"
	rmdir "$C/saves"
	run -0 splitbrain resolve -c "$C/a/ctl.sock" --discard b
	sb_wait_event b "split-brain-error peer=a reason=\"saving: $C/saves/b-splitbrain-"
	[ "$(cl_status b peer.a.state)" = split-brain ]
	[ "$(cl_status b peer.a.split_brain)" = waiting ]
	[ "$(cl_status a peer.b.state)" = split-brain ]
	[ "$(cl_sum b)" = "$SUM_b" ]
	[ "$(cl_status b disk)" = uptodate ]
	wait_for 5 grep -q "^split-brain-error a$" "$C/handler.log"
	# b was demoted: the victim stops writing before it saves
	[ "$(cl_status b role)" = secondary ]
	mkdir "$C/saves"
	run -0 splitbrain resolve -c "$C/a/ctl.sock" --discard b
	sb_wait_event a "split-brain-resolved peer=b victim=b savefile=$C/saves/b-splitbrain-"
	cl_wait a peer.b.resync source
	run -0 resyncd sync -c "$C/a/ctl.sock" b
	cl_wait b peer.a.state uptodate
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
}

@test "a victim killed after its save comes back as sync target, not in split brain" {
	diverge
	run -0 splitbrain resolve -c "$C/a/ctl.sock" --discard b
	sb_wait_event a "split-brain-resolved peer=b victim=b "
	f=$(cl_status b peer.a.sb_savefile)
	cl_kill b
	cl_wait a peer.b.connected 0
	sb_start b -q off
	sb_wait_event a "verdict peer=b verdict=source state=needs-resync "
	sed -n '/peer-disconnect peer=b/,$p' "$C/eva.out" >"$C/after"
	run -1 grep -c "split-brain" "$C/after"
	cl_wait a peer.b.resync source
	run -0 resyncd sync -c "$C/a/ctl.sock" b
	cl_wait b peer.a.state uptodate
	[ "$(cl_sum a)" = "$(cl_sum b)" ]
	cp "$C/b/disk" "$C/restored"
	run -0 splitbrain restore "$f" "$C/restored"
	[ "$(md5sum <"$C/restored" | cut -d' ' -f1)" = "$SUM_b" ]
}

@test "bad policies are refused at start" {
	run -100 --separate-stderr blkmirror -A after-sb-2pri=discard-everything \
	    -c "$C/x.sock" -l "$C/y.sock" -m "$C/a/meta" -n a "$C/a/disk"
	[[ "$stderr" == "blkmirror: -A after-sb-2pri=discard-everything: unknown policy ("* ]]
	run -100 --separate-stderr blkmirror -A after-sb-3pri=disconnect \
	    -c "$C/x.sock" -l "$C/y.sock" -m "$C/a/meta" -n a "$C/a/disk"
	[ "$stderr" = "blkmirror: -A after-sb-3pri=disconnect: want after-sb-0pri=, after-sb-1pri= or after-sb-2pri=" ]
	run -100 --separate-stderr blkmirror -A after-sb-1pri=discard-node- \
	    -c "$C/x.sock" -l "$C/y.sock" -m "$C/a/meta" -n a "$C/a/disk"
	[ "$stderr" = "blkmirror: -A after-sb-1pri=discard-node-: discard-node- needs a node name" ]
}

@test "a handler that takes its time never holds blkmirror up" {
	printf '#!/bin/sh\necho "$1" >>"%s"\nexec sleep 60\n' "$C/slow.log" >"$C/handler"
	diverge
	wait_for 5 eval '[ "$(wc -l <"$C/slow.log")" = 2 ]'
	run -0 timeout 2 blkmirror ctl "$C/a/ctl.sock" status
	run -0 timeout 2 qemu-io -f raw -c 'write -P 0xa2 2M 4k' "$(cl_uri a)"
	run -0 splitbrain resolve -c "$C/b/ctl.sock" --discard b
	sb_wait_event a "split-brain-resolved peer=b victim=b "
	wait_for 5 eval '[ "$(wc -l <"$C/slow.log")" = 4 ]'
}

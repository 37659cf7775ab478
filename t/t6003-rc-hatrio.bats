#!/usr/bin/env bats
# examples/rc.hatrio on loopback: three nodes started from one hatrio.conf
# (per-node ports), status, a killed daemon restarted by its supervisor,
# stop by pid with nothing left, and the errors of a bad configuration;
# examples/cron's nightly verify on such a cluster.

load lib/common

setup() {
	T=$BATS_TEST_TMPDIR
	make_key "$T/key"
	local n p used=
	for n in a b c; do
		mkdir -p "$T/$n"
		truncate -s 16M "$T/$n/disk"
		blkmirror init -g 0123456789abcdef -m "$T/$n/meta" -n "$n" "$T/$n/disk"
	done
	{
		echo ". $HATRIO_ROOT/examples/hatrio.conf"
		echo "KEY=$T/key"
		for n in a b c; do
			echo "ADDR_$n=127.0.0.1"
			for v in HB_PORT BM_PORT; do
				p=$(free_port)
				while [[ " $used " == *" $p "* ]]; do p=$(free_port); done
				used="$used $p"
				echo "${v}_$n=$p"
			done
		done
		# no preferred primary: nobody takes the service, no VIP, no mount
		echo "PRIMARY="
		echo "VIP="
		echo "HB_INTERVAL=100ms"
		echo "HB_OPTS='-w 1s -D 2s -I 3s'"
		echo "RUN=$T/\$NODE/run"
		echo "DISK=$T/\$NODE/disk"
		echo "META=$T/\$NODE/meta"
		echo "MOUNT=$T/\$NODE/mnt"
	} >"$T/hatrio.conf"
	RC=$HATRIO_ROOT/examples/rc.hatrio
}

teardown() {
	local n f
	for n in a b c; do
		"$RC" -c "$T/hatrio.conf" -n "$n" stop 2>/dev/null
		for f in "$T/$n"/run/*.pid "$T/$n"/run/*.child; do
			[ -s "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
		done
	done
	return 0
}

# alive PID: running, not a zombie waiting for init
alive() {
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	st=${st##*) }
	[ "${st%% *}" != Z ]
}

@test "start, status, a killed daemon restarted, stop leaves nothing running" {
	for n in a b c; do
		run -0 "$RC" -c "$T/hatrio.conf" -n "$n" start
	done
	wait_for 10 "$RC" -c "$T/hatrio.conf" -n a status
	wait_for 10 eval "\"$RC\" -c \"$T/hatrio.conf\" -n a status | grep -qx 'peer c: uptodate, role secondary'"
	run -0 "$RC" -c "$T/hatrio.conf" -n a status
	[[ "${lines[0]}" =~ ^"blkmirror: running (supervisor "[0-9]+", pid "[0-9]+")"$ ]]
	[[ "${lines[1]}" =~ ^"resyncd: running (supervisor "[0-9]+", pid "[0-9]+")"$ ]]
	[[ "${lines[2]}" =~ ^"hbsend: running (supervisor "[0-9]+", pid "[0-9]+")"$ ]]
	[[ "${lines[3]}" =~ ^"failover: running (supervisor "[0-9]+", pid "[0-9]+")"$ ]]
	[ "${lines[4]}" = "disk: secondary, uptodate, quorum yes" ]
	[ "${lines[5]}" = "peer b: uptodate, role secondary" ]
	[ "${lines[6]}" = "peer c: uptodate, role secondary" ]
	[ "${#lines[@]}" = 7 ]
	# hbwatch | rc.failover: a hears b and c, with their roles
	wait_for 10 grep -Eq "^[0-9:.]+ a: event: b up incarnation=[0-9]+ medium=udp:127\.0\.0\.1:[0-9]+ status=(secondary)? quorum=(yes|no) seq=[0-9]+$" "$T/a/run/failover.log"
	wait_for 10 grep -Eq " a: event: b (up .* status=secondary quorum=yes|status status=secondary) seq=[0-9]+$" "$T/a/run/failover.log"
	wait_for 10 grep -q " a: event: - quorum quorum=yes votes=2 size=3 seq=" "$T/a/run/failover.log"
	# blkmirror killed: its supervisor starts it again
	local old=$(cat "$T/a/run/blkmirror.child")
	kill -KILL "$old"
	wait_for 10 grep -q "a rc.hatrio: blkmirror exited with status 137, restarting it in 1s" "$T/a/run/blkmirror.log"
	wait_for 10 eval "[ -s '$T/a/run/blkmirror.child' ] && [ \"\$(cat '$T/a/run/blkmirror.child')\" != $old ]"
	wait_for 10 blkmirror ctl "$T/a/run/ctl.sock" status
	not_old=$(cat "$T/a/run/blkmirror.child")
	alive "$not_old"
	# stop: every supervisor and daemon of a ends; b and c see a leave
	local pids=$(cat "$T"/a/run/*.pid "$T"/a/run/*.child)
	run -0 "$RC" -c "$T/hatrio.conf" -n a stop
	for p in $pids; do
		if alive "$p"; then ps -o pid,stat,args -p "$p"; false; fi
	done
	[ -z "$(ls "$T"/a/run/*.pid "$T"/a/run/*.child 2>/dev/null)" ]
	# (a left: its leaving packet; once in a CI run it did not arrive
	# and b declared a dead after the deadtime instead: a flake to find)
	if ! wait_for 10 grep -Eq " b: event: a (left|dead silent=[0-9]+ms) quorum=yes seq=" "$T/b/run/failover.log"; then
		cat "$T/b/run/failover.log" "$T/a/run/hbsend.log"
		false
	fi
	run -1 "$RC" -c "$T/hatrio.conf" -n a status
	[ "${lines[0]}" = "blkmirror: stopped" ]
	[ "${lines[3]}" = "failover: stopped" ]
	for n in b c; do
		run -0 "$RC" -c "$T/hatrio.conf" -n "$n" stop
	done
	# (an orphan's zombie waits for init a moment)
	if ! wait_for 5 eval '[ -z "$(pgrep -f -- "$T/")" ]'; then
		ps -o pid,stat,args -p "$(pgrep -d, -f -- "$T/")"
		false
	fi
}

@test "usage and configuration errors" {
	run -100 --separate-stderr "$RC"
	[ "$stderr" = "usage: rc.hatrio [-c conf] [-n node] start|stop|status|run unit" ]
	run -100 --separate-stderr "$RC" -c "$T/nonexistent" -n a start
	[ "$stderr" = "rc.hatrio: cannot read $T/nonexistent" ]
	rm "$T/a/meta"
	run -100 --separate-stderr "$RC" -c "$T/hatrio.conf" -n a start
	[[ "$stderr" =~ ^[0-9:.]+\ a\ rc.hatrio:\ missing:\ $T/a/meta$ ]]
	run -100 --separate-stderr "$RC" -c "$T/hatrio.conf" -n a frobnicate
	run -100 --separate-stderr "$HATRIO_ROOT/examples/rc.failover" -c "$T/hatrio.conf" -n a frobnicate
	[ "$stderr" = "usage: rc.failover [-c conf] [-n node] [takeover|release reason]" ]
}

@test "examples/cron: the nightly verify is quiet while the copies agree, and names a peer that differs" {
	for n in a b c; do
		run -0 "$RC" -c "$T/hatrio.conf" -n "$n" start
	done
	wait_for 10 eval "\"$RC\" -c \"$T/hatrio.conf\" -n a status | grep -qx 'peer c: uptodate, role secondary'"
	wait_for 10 eval "\"$RC\" -c \"$T/hatrio.conf\" -n a status | grep -qx 'peer b: uptodate, role secondary'"
	# the command of the cron line, on a's control socket
	local cmd
	cmd=$(grep -v '^#' "$HATRIO_ROOT/examples/cron" | grep -v '^PATH=' | cut -f3-)
	cmd=${cmd//\/run\/hatrio\/ctl.sock/$T/a/run/ctl.sock}
	# a secondary does nothing
	run -0 sh -c "$cmd"
	[ "$output" = "" ]
	blkmirror ctl "$T/a/run/ctl.sock" primary
	run -0 sh -c "$cmd"
	[ "$output" = "" ]
	# a block of c's copy changes behind blkmirror's back
	dd if=/dev/urandom of="$T/c/disk" bs=4k seek=1000 count=1 conv=notrunc status=none
	run -0 sh -c "$cmd"
	[ "$output" = "hatrio: verify: c differs from $(hostname -s), marked out of sync (resyncd verify -f resyncs it)" ]
}

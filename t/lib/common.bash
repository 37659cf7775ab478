# t/lib/common.bash: what every hatrio bats file loads first.
#	load lib/common
# It puts bin/ and t/ first in PATH and gives daemons, waits and keys.
# Daemons are recorded as $BATS_TEST_TMPDIR/NAME.pid; stop_all_daemons in
# teardown stops every one of them.  Each runs in a session of its own
# (setsid), so that teardown also reaches whatever it started.

bats_require_minimum_version 1.5.0

HATRIO_ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
export HATRIO_ROOT
PATH=$HATRIO_ROOT/bin:$HATRIO_ROOT/t:$PATH
export PATH

# Work in the test's own directory, so that whatever a tool leaves in its
# current directory (fio's verify state, core files) goes away with it.
cd "$BATS_TEST_TMPDIR" || return 1

# wait_for SECONDS CMD [ARG...]: poll CMD every 50 ms until it succeeds;
# fail with a message after SECONDS.
wait_for() {
	local limit=$1 end; shift
	end=$(( $(date +%s%N) + limit * 1000000000 ))
	until "$@"; do
		if [ "$(date +%s%N)" -ge "$end" ]; then
			echo "wait_for: timed out after ${limit}s: $*" >&2
			return 1
		fi
		sleep 0.05
	done
}

# start_daemon NAME PROG [ARG...]: start PROG with "-d 3" and wait for its
# readiness line on that descriptor (at most READY_TIMEOUT seconds, 10 by
# default).  stdout goes to NAME.out, stderr to NAME.err.
start_daemon() {
	local name=$1 prog=$2 d=$BATS_TEST_TMPDIR; shift 2
	rm -f "$d/$name.ready"
	mkfifo "$d/$name.ready"
	setsid "$prog" -d 3 "$@" 3>"$d/$name.ready" >"$d/$name.out" 2>"$d/$name.err" &
	echo $! >"$d/$name.pid"
	if ! read -r -t "${READY_TIMEOUT:-10}" _ <"$d/$name.ready"; then
		echo "$name: not ready" >&2
		cat "$d/$name.err" >&2
		return 1
	fi
}

# start_bg NAME CMD [ARG...]: start any command in the background, with its
# output in NAME.out and NAME.err, without waiting; follow it with one of
# wait_socket, wait_line or wait_file.  fd 3 (bats' own) is closed for it.
start_bg() {
	local name=$1 d=$BATS_TEST_TMPDIR; shift
	setsid "$@" >"$d/$name.out" 2>"$d/$name.err" 3>&- &
	echo $! >"$d/$name.pid"
}

_alive() { kill -0 "$(cat "$BATS_TEST_TMPDIR/$1.pid")" 2>/dev/null; }

# wait_socket NAME PATH [SECONDS]: until the unix socket PATH exists.
wait_socket() {
	_wait_ready "$1" "${3:-10}" test -S "$2"
}

# wait_file NAME PATH [SECONDS]: until the file PATH exists.
wait_file() {
	_wait_ready "$1" "${3:-10}" test -e "$2"
}

# wait_line NAME REGEX [SECONDS]: until NAME's stdout has a matching line.
wait_line() {
	_wait_ready "$1" "${3:-10}" grep -Eq -- "$2" "$BATS_TEST_TMPDIR/$1.out"
}

_wait_ready() {
	local name=$1 limit=$2 end; shift 2
	end=$(( $(date +%s%N) + limit * 1000000000 ))
	until "$@"; do
		if ! _alive "$name"; then
			echo "$name: exited before it was ready" >&2
			cat "$BATS_TEST_TMPDIR/$name.err" >&2
			return 1
		fi
		if [ "$(date +%s%N)" -ge "$end" ]; then
			echo "$name: not ready after ${limit}s: $*" >&2
			cat "$BATS_TEST_TMPDIR/$name.err" >&2
			return 1
		fi
		sleep 0.02
	done
}

# stop_daemon NAME: SIGTERM, wait at most 5 s, then SIGKILL and fail.
# Returns the daemon's exit status when it stopped by itself on SIGTERM.
stop_daemon() {
	local f=$BATS_TEST_TMPDIR/$1.pid pid i rc
	[ -f "$f" ] || return 0
	pid=$(cat "$f"); rm -f "$f"
	kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	# (a process already gone: its status is no longer ours to judge)
	for i in $(seq 100); do
		if ! kill -0 "$pid" 2>/dev/null; then
			rc=0
			wait "$pid" 2>/dev/null || rc=$?
			return "$rc"
		fi
		sleep 0.05
	done
	kill -KILL -- "-$pid" 2>/dev/null
	wait "$pid" 2>/dev/null || true
	echo "$1: ignored SIGTERM" >&2
	return 1
}

# kill_daemon NAME [SIGNAL]: signal it (default KILL) and reap it.
kill_daemon() {
	local f=$BATS_TEST_TMPDIR/$1.pid pid
	[ -f "$f" ] || return 0
	pid=$(cat "$f"); rm -f "$f"
	# children first: some (fio's jobs) leave the process group
	pkill -"${2:-KILL}" -P "$pid" 2>/dev/null || :
	kill -"${2:-KILL}" "$pid" 2>/dev/null || :
	wait "$pid" 2>/dev/null || :
	kill -KILL -- "-$pid" 2>/dev/null || :
	return 0
}

# stop_all_daemons: for teardown; SIGKILL whatever is left, never fails.
stop_all_daemons() {
	local f pid
	for f in "$BATS_TEST_TMPDIR"/*.pid; do
		[ -e "$f" ] || continue
		pid=$(cat "$f"); rm -f "$f"
		pkill -KILL -P "$pid" 2>/dev/null || :
		kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
	done
	for f in $(jobs -p); do
		for _ in $(seq 40); do kill -0 "$f" 2>/dev/null || break; sleep 0.05; done
		kill -KILL "$f" 2>/dev/null
	done
	wait 2>/dev/null
	return 0
}

# free_port: a TCP port on 127.0.0.1 nobody listens on now.
free_port() {
	local p
	while :; do
		p=$(( 20000 + RANDOM % 40000 ))
		ss -Htan "( sport = :$p )" 2>/dev/null | grep -q . || break
	done
	echo "$p"
}

# make_key PATH: a fresh cluster key, mode 600.
make_key() {
	(umask 077 && head -c 32 /dev/urandom >"$1")
}

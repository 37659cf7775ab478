#!/usr/bin/env bats
# After a failover the DR node must follow the new primary: it may lack
# the old primary's last epochs (still on the slow link when a died) or
# hold a few writes b never acknowledged.  resyncd on b, seeing b
# promoted, compares c with b and repairs it while b serves.

load lib/common
load lib/cluster
load lib/resync

setup() {
	cl_init 64M
}

teardown() {
	stop_all_daemons
}

@test "a dies while c lags; b promoted: c is brought in line with b" {
	wport=$(free_port)
	start_daemon wan wanproxy -c "$C/wan.ctl" 127.0.0.1:"$wport" \
	    127.0.0.1:"$PORT_c"
	# only a's link to c goes through the slow WAN
	start_daemon bma blkmirror -k "$C/key" -L 127.0.0.1:"$PORT_a" \
	    -P b=127.0.0.1:"$PORT_b",sync -P c=127.0.0.1:"$wport",async \
	    -Q 256M -m "$C/a/meta" -n a -c "$C/a/ctl.sock" \
	    -l "$C/a/nbd.sock" "$C/a/disk"
	cl_start b
	cl_start c
	cl_wait a peer.b.state uptodate
	cl_wait a peer.c.state uptodate
	cl_wait b peer.c.state uptodate
	run -0 cl_ctl a primary
	start_daemon rsb resyncd -c "$C/b/ctl.sock"
	wan delay 300ms
	wan rate 256k
	fio_bg fio1 a 3
	wait_bg fio1 || true
	[ "$(cl_status a peer.c.lag_bytes)" -gt 0 ]
	# site 1 loses a; what was still on the WAN is gone with it
	cl_kill a
	wan reset
	cl_wait b peer.a.connected 0
	cl_wait c peer.a.connected 0
	run -0 cl_ctl b primary
	wait_for 60 grep -q "peer c: verified after promotion" "$BATS_TEST_TMPDIR/rsb.err"
	grep "peer c: verified after promotion" "$BATS_TEST_TMPDIR/rsb.err" >&3
	grep -q "peer c: verified after promotion: [1-9][0-9]* blocks differed, now in sync" \
	    "$BATS_TEST_TMPDIR/rsb.err"
	# b goes on writing to c
	fio_bg fio2 b 2
	wait_bg fio2
	run -0 qemu-io -f raw -c "write -P 7 60M 4k" -c flush "$(cl_uri b)"
	cl_wait b peer.c.lag_bytes 0 30
	cl_stop b
	cl_stop c
	[ "$(cl_sum b)" = "$(cl_sum c)" ]
}

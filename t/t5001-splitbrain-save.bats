#!/usr/bin/env bats
# splitbrain save/restore/show: the victim's blocks survive a resync that
# overwrites them, and a damaged save file never writes anything.

setup() {
	load lib/common
	d=$BATS_TEST_TMPDIR
	# the common ancestor, then the victim's and the winner's writes
	head -c 4M /dev/urandom >"$d/ancestor"
	cp "$d/ancestor" "$d/victim"
	cp "$d/ancestor" "$d/winner"
	dd if=/dev/urandom of="$d/victim" bs=4096 seek=3 count=2 conv=notrunc status=none
	dd if=/dev/urandom of="$d/victim" bs=4096 seek=700 count=1 conv=notrunc status=none
	dd if=/dev/urandom of="$d/winner" bs=4096 seek=4 count=3 conv=notrunc status=none
	dd if=/dev/urandom of="$d/winner" bs=4096 seek=1000 count=1 conv=notrunc status=none
	# what a resync will overwrite on the victim: both sides' changes
	printf '%s\n' "12288 12288" "16384 12288" "2867200 4096" "4096000 4096" >"$d/ranges"
}

@test "save, resync over the victim, restore: the victim's image comes back" {
	run -0 --separate-stderr splitbrain save -n b -g 1a2b -o "$d/b.save" "$d/victim" <"$d/ranges"
	[ "$output" = "saved 4 ranges, 32768 bytes of $d/victim in $d/b.save" ]
	# the resync: the victim becomes the winner
	cp "$d/winner" "$d/victim.after"
	cp "$d/victim.after" "$d/restored"
	run -0 splitbrain restore "$d/b.save" "$d/restored"
	[ "$output" = "restored 4 records, 32768 bytes onto $d/restored" ]
	cmp "$d/victim" "$d/restored"
}

@test "show lists the header and the records" {
	splitbrain save -n b -g 1a2b -o "$d/b.save" "$d/victim" <"$d/ranges"
	run -0 splitbrain show "$d/b.save"
	[ "${lines[0]}" = "version=1" ]
	[ "${lines[1]}" = "node=b" ]
	[ "${lines[3]}" = "device_size=4194304" ]
	[ "${lines[5]}" = "generation=0000000000001a2b" ]
	[ "${lines[6]}" = "records=4" ]
	[ "${lines[7]}" = "bytes=32768" ]
	[ "${lines[8]}" = "record offset=12288 length=12288" ]
	[ "${lines[11]}" = "record offset=4096000 length=4096" ]
}

@test "a damaged save file is refused and writes nothing" {
	splitbrain save -n b -o "$d/b.save" "$d/victim" <"$d/ranges"
	# flip one byte of saved data
	printf '\377' | dd of="$d/b.save" bs=1 seek=200 conv=notrunc status=none
	cp "$d/winner" "$d/target"
	run -100 --separate-stderr splitbrain restore "$d/b.save" "$d/target"
	[ "$stderr" = "splitbrain: $d/b.save: checksum mismatch: the file is damaged" ]
	cmp "$d/winner" "$d/target"
	# cut short
	splitbrain save -n b -o "$d/b.save" "$d/victim" <"$d/ranges"
	truncate -s -100 "$d/b.save"
	run -100 --separate-stderr splitbrain restore "$d/b.save" "$d/target"
	[[ "$stderr" == *"truncated"* ]]
	cmp "$d/winner" "$d/target"
}

@test "bad ranges are refused before a save file is written" {
	run -100 --separate-stderr splitbrain save -o "$d/x.save" "$d/victim" <<<"12 junk"
	[ "$stderr" = "splitbrain: stdin:1: want OFFSET LENGTH in bytes: 12 junk" ]
	run -100 --separate-stderr splitbrain save -o "$d/x.save" "$d/victim" <<<"4194304 1"
	[ "$stderr" = "splitbrain: stdin:1: range 4194304+1 lies past the end of $d/victim (4194304 bytes)" ]
	[ ! -e "$d/x.save" ] && [ ! -e "$d/x.save.tmp" ]
}

@test "restore onto a smaller device is refused" {
	splitbrain save -n b -o "$d/b.save" "$d/victim" <"$d/ranges"
	truncate -s 1M "$d/small"
	run -100 --separate-stderr splitbrain restore "$d/b.save" "$d/small"
	[ "$stderr" = "splitbrain: $d/small: 1048576 bytes, smaller than the saved device (4194304 bytes)" ]
}

@test "a missing or unreadable save file is a system error (111), a bad one bad input (100)" {
	run -111 --separate-stderr splitbrain show "$d/none.save"
	[ "$stderr" = "splitbrain: $d/none.save: No such file or directory" ]
	[ "$output" = "" ]
	cp "$d/winner" "$d/target"
	run -111 --separate-stderr splitbrain restore "$d/none.save" "$d/target"
	[ "$stderr" = "splitbrain: $d/none.save: No such file or directory" ]
	mkdir "$d/dir.save"
	run -111 --separate-stderr splitbrain show "$d/dir.save"
	[ "$stderr" = "splitbrain: $d/dir.save: read error: Is a directory" ]
	head -c 200 /dev/zero >"$d/zero.save"
	run -100 --separate-stderr splitbrain show "$d/zero.save"
	[ "$stderr" = "splitbrain: $d/zero.save: not a save file (bad magic)" ]
	run -100 --separate-stderr splitbrain restore "$d/zero.save" "$d/target"
	[ "$stderr" = "splitbrain: $d/zero.save: not a save file (bad magic)" ]
	cmp "$d/winner" "$d/target"
}

@test "usage" {
	run -100 --separate-stderr splitbrain frobnicate
	[ "${stderr_lines[0]}" = "usage: splitbrain [verdict] node-a node-b" ]
	[ "${stderr_lines[1]}" = "       splitbrain policy [after-sb-Npri=policy ...] node-a node-b" ]
	[ "${stderr_lines[2]}" = "       splitbrain save [-g generation] [-n node] -o savefile device" ]
	run -100 --separate-stderr splitbrain show
	run -100 --separate-stderr splitbrain restore onlyone
}

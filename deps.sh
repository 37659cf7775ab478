#!/bin/sh
# deps.sh: check every build and test dependency of hatrio.  As root on
# Debian, install what is missing with apt-get; otherwise print the exact
# command to run and fail.  Run by "make deps", "make check", "make demo".

missing=

need_pkg() {	# need_pkg PKGCONFIG-NAME DEBIAN-PACKAGE
	pkg-config --exists "$1" 2>/dev/null || missing="$missing $2"
}

need_cmd() {	# need_cmd COMMAND DEBIAN-PACKAGE
	command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] ||
	    [ -x "/sbin/$1" ] || missing="$missing $2"
}

check() {
	missing=
	need_cmd cc gcc
	need_cmd make make
	need_cmd pkg-config pkg-config
	need_cmd git git
	need_pkg libevent libevent-dev
	need_pkg libevent_pthreads libevent-dev
	need_pkg libzstd libzstd-dev
	need_pkg libsodium libsodium-dev
	need_pkg libcrypto libssl-dev
	need_cmd bats bats
	need_cmd mandoc mandoc
	need_cmd clang clang
	need_cmd nbdinfo libnbd-bin
	need_cmd nbdcopy libnbd-bin
	need_cmd nbdfuse nbdfuse
	need_cmd nbdkit nbdkit
	need_cmd qemu-img qemu-utils
	need_cmd qemu-io qemu-utils
	need_cmd fio fio
	need_cmd socat socat
	need_cmd ip iproute2
	need_cmd ss iproute2
	need_cmd ping iputils-ping
	need_cmd arping arping
	need_cmd mkfs.ext4 e2fsprogs
	need_cmd losetup mount
	need_cmd fusermount3 fuse3
	need_cmd zstd zstd
	need_cmd rsync rsync
	need_cmd python3 python3
	need_cmd tar tar
	# sanitizer and fuzzer runtimes for "make asan" and "make fuzz"
	[ -n "$(ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null)" ] ||
	    missing="$missing libclang-rt-dev"
	# drop duplicates
	missing=$(printf '%s\n' $missing | sort -u | tr '\n' ' ')
}

check
if [ -z "${missing# }" ]; then
	echo "deps: everything is here"
	exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "deps: installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq || exit 111
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing || exit 111
	check
	if [ -n "${missing# }" ]; then
		echo "deps: still missing after apt-get:$missing" >&2
		exit 111
	fi
	echo "deps: everything is here"
	exit 0
fi
echo "deps: missing:$missing" >&2
echo "deps: run: sudo apt-get install$missing" >&2
exit 111

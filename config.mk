# hatrio version
VERSION = 0.1

# paths
PREFIX = /usr/local
MANPREFIX = $(PREFIX)/share/man

# the libraries come from pkg-config
PKGS = libevent libevent_pthreads libzstd libsodium libcrypto
PKG_CFLAGS = `pkg-config --cflags $(PKGS)`
PKG_LIBS = `pkg-config --libs $(PKGS)`

# toolchain (keep CC = cc: under .POSIX GNU make would default to c99)
CC = cc
AR = ar
CPPFLAGS = -D_GNU_SOURCE -DVERSION=\"$(VERSION)\" -Ilib
CFLAGS = -std=gnu11 -Wall -Wextra -Werror -O2 -g $(PKG_CFLAGS)
LDFLAGS =
LDLIBS = $(PKG_LIBS) -lpthread

# make asan: the whole suite under the address and undefined sanitizers
ASAN_CFLAGS = -std=gnu11 -Wall -Wextra -Werror -O1 -g -fno-omit-frame-pointer \
	-fsanitize=address,undefined -fno-sanitize-recover=undefined $(PKG_CFLAGS)
ASAN_LDFLAGS = -fsanitize=address,undefined

# make fuzz: libFuzzer targets, with clang
FUZZ_CC = clang
FUZZ_CFLAGS = -std=gnu11 -Wall -Wextra -Werror -g -O1 -fno-omit-frame-pointer \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	$(PKG_CFLAGS)

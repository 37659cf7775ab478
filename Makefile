# hatrio - three-node high availability and disaster recovery
# See LICENSE file for copyright and license details.
.POSIX:
.SUFFIXES:
.SUFFIXES: .c .o

include config.mk

BIN = bin/blkmirror bin/hbsend bin/hbwatch bin/resyncd bin/splitbrain \
	bin/vipctl
MAN8 = man/blkmirror.8 man/hbsend.8 man/hbwatch.8 man/resyncd.8 \
	man/splitbrain.8 man/vipctl.8
MAN7 = man/hatrio-link.7
LIBOBJ = lib/log.o lib/util.o lib/key.o lib/ctl.o lib/gi.o lib/hb.o \
	lib/ioq.o lib/link.o lib/meta.o lib/nbd.o lib/repl.o lib/savefile.o \
	lib/undo.o lib/fsrange.o lib/lathist.o
HDR = lib/hatrio.h lib/ctl.h lib/gi.h lib/hb.h lib/ioq.h lib/link.h \
	lib/meta.h lib/nbd.h lib/repl.h lib/savefile.h lib/undo.h \
	lib/fsrange.h lib/lathist.h
LIB = lib/libhatrio.a

# test tools and C unit tests, built by "make tests" and "make check"
TESTBIN = t/wanproxy t/libcheck t/hbpkt t/linkpump
UNIT = t/unit/util t/unit/gi t/unit/hb t/unit/link t/unit/meta \
	t/unit/nbd t/unit/repl t/unit/savefile t/unit/undo t/unit/fsrange \
	t/unit/lathist

# fuzz targets (libFuzzer): "make fuzz" runs each for FUZZ_TIME seconds
FUZZ = t/fuzz/hb t/fuzz/link_hello t/fuzz/link_frames
FUZZ_TIME = 30
FUZZ_SRC = $(LIBOBJ:.o=.c)

all: $(BIN)

tests: $(TESTBIN) $(UNIT)

$(LIB): $(LIBOBJ)
	rm -f $@
	$(AR) -rc $@ $(LIBOBJ)

$(LIBOBJ): $(HDR) config.mk
$(BIN) $(TESTBIN) $(UNIT): $(LIB) $(HDR) config.mk t/unit/unit.h

.c.o:
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

.c:
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

# Install what is missing (as root on Debian), or say what to install.
deps:
	./deps.sh

check: deps
	$(MAKE) all tests
	t/check $(UNIT)

# A three-node cluster on this machine with a failover, narrated (as root).
demo: deps all
	examples/demo

# The whole suite again, built with the address and undefined-behaviour
# sanitizers, in a copy of the tree so that the normal build is untouched.
asan: deps
	rm -rf .asan .fuzz
	mkdir .asan
	git ls-files -co --exclude-standard | grep -v '^\.asan/' | \
	    tar -cf - -T - | (cd .asan && tar -xf -)
	cd .asan && $(MAKE) CFLAGS="$(ASAN_CFLAGS)" \
	    LDFLAGS="$(ASAN_LDFLAGS)" all tests && \
	    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 t/check $(UNIT)

# Each fuzz target, built with clang's libFuzzer and the sanitizers, runs for
# FUZZ_TIME seconds; a crash, a leak or a sanitizer report fails.
fuzz:
	mkdir -p .fuzz
	for f in $(FUZZ); do \
		n=$${f#t/fuzz/}; \
		$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -o .fuzz/$$n $$f.c \
		    $(FUZZ_SRC) $(LDLIBS) || exit 1; \
		mkdir -p .fuzz/$$n.corpus; \
		.fuzz/$$n -max_total_time=$(FUZZ_TIME) -timeout=10 \
		    -rss_limit_mb=2048 -print_final_stats=1 \
		    -artifact_prefix=.fuzz/$$n- .fuzz/$$n.corpus \
		    $$(test -d t/fuzz/seed/$$n && echo t/fuzz/seed/$$n) || exit 1; \
	done

install: all
	mkdir -p $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(MANPREFIX)/man8 \
	    $(DESTDIR)$(MANPREFIX)/man7
	for f in $(BIN); do \
		cp -f $$f $(DESTDIR)$(PREFIX)/sbin/ && \
		chmod 755 $(DESTDIR)$(PREFIX)/sbin/$${f#bin/} || exit 1; \
	done
	for f in $(MAN8); do \
		sed "s/VERSION/$(VERSION)/g" < $$f \
		    > $(DESTDIR)$(MANPREFIX)/man8/$${f#man/} && \
		chmod 644 $(DESTDIR)$(MANPREFIX)/man8/$${f#man/} || exit 1; \
	done
	for f in $(MAN7); do \
		sed "s/VERSION/$(VERSION)/g" < $$f \
		    > $(DESTDIR)$(MANPREFIX)/man7/$${f#man/} && \
		chmod 644 $(DESTDIR)$(MANPREFIX)/man7/$${f#man/} || exit 1; \
	done

uninstall:
	for f in $(BIN); do rm -f $(DESTDIR)$(PREFIX)/sbin/$${f#bin/}; done
	for f in $(MAN8); do rm -f $(DESTDIR)$(MANPREFIX)/man8/$${f#man/}; done
	for f in $(MAN7); do rm -f $(DESTDIR)$(MANPREFIX)/man7/$${f#man/}; done

lint:
	for f in $(MAN8) $(MAN7); do mandoc -Tlint -Wwarning $$f || exit 1; done

clean:
	rm -f $(BIN) $(LIB) $(LIBOBJ) $(TESTBIN) $(UNIT)
	rm -rf .asan .fuzz

.PHONY: all tests deps check demo asan fuzz install uninstall lint clean

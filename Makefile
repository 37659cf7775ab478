# hatrio - three-node high availability and disaster recovery
# See LICENSE file for copyright and license details.
.POSIX:
.SUFFIXES:
.SUFFIXES: .c .o

include config.mk

BIN = bin/blkmirror
MAN8 = man/blkmirror.8
LIBOBJ = lib/log.o lib/util.o lib/key.o lib/meta.o lib/nbd.o lib/ioq.o \
	lib/ctl.o
HDR = lib/hatrio.h lib/meta.h lib/nbd.h lib/ioq.h lib/ctl.h
LIB = lib/libhatrio.a

# test tools and C unit tests, built by "make tests" and "make check"
TESTBIN = t/wanproxy t/libcheck
UNIT = t/unit/util t/unit/meta t/unit/nbd

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

# The whole suite again, built with the address and undefined-behaviour
# sanitizers, in a copy of the tree so that the normal build is untouched.
asan: deps
	rm -rf .asan
	mkdir .asan
	git ls-files -co --exclude-standard | grep -v '^\.asan/' | \
	    tar -cf - -T - | (cd .asan && tar -xf -)
	cd .asan && $(MAKE) CFLAGS="$(ASAN_CFLAGS)" \
	    LDFLAGS="$(ASAN_LDFLAGS)" all tests && \
	    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 t/check $(UNIT)

install: all
	mkdir -p $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(MANPREFIX)/man8
	for f in $(BIN); do \
		cp -f $$f $(DESTDIR)$(PREFIX)/sbin/ && \
		chmod 755 $(DESTDIR)$(PREFIX)/sbin/$${f#bin/} || exit 1; \
	done
	for f in $(MAN8); do \
		sed "s/VERSION/$(VERSION)/g" < $$f \
		    > $(DESTDIR)$(MANPREFIX)/man8/$${f#man/} && \
		chmod 644 $(DESTDIR)$(MANPREFIX)/man8/$${f#man/} || exit 1; \
	done

uninstall:
	for f in $(BIN); do rm -f $(DESTDIR)$(PREFIX)/sbin/$${f#bin/}; done
	for f in $(MAN8); do rm -f $(DESTDIR)$(MANPREFIX)/man8/$${f#man/}; done

lint:
	for f in $(MAN8); do mandoc -Tlint -Wwarning $$f || exit 1; done

clean:
	rm -f $(BIN) $(LIB) $(LIBOBJ) $(TESTBIN) $(UNIT)
	rm -rf .asan

.PHONY: all tests deps check asan install uninstall lint clean

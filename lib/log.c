/* See LICENSE file for copyright and license details. */
/*
 * log.c: diagnostics for hatrio's daemons and tools, in the manner of
 * ntpd's log.c.  Everything goes to stderr, one line per message, because
 * the daemons stay in the foreground and their supervisor keeps the log.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hatrio.h"

static const char	*log_procname = "hatrio";
static int		 log_verbose;

static void	 vlog(int, const char *, va_list);

void
log_init(const char *procname, int verbose)
{
	const char *p;

	if ((p = strrchr(procname, '/')) != NULL)
		procname = p + 1;
	log_procname = procname;
	log_verbose = verbose;
}

void
log_setverbose(int verbose)
{
	log_verbose = verbose;
}

int
log_getverbose(void)
{
	return log_verbose;
}

/*
 * Build the whole line first and write it with one call, so that lines of
 * several processes sharing one stderr do not interleave.
 */
static void
vlog(int with_errno, const char *fmt, va_list ap)
{
	char	 buf[1024];
	int	 saved = errno, n;

	n = snprintf(buf, sizeof(buf), "%s: ", log_procname);
	if (n < 0 || (size_t)n >= sizeof(buf))
		n = 0;
	vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
	if (with_errno) {
		n = strlen(buf);
		snprintf(buf + n, sizeof(buf) - n, ": %s", strerror(saved));
	}
	fprintf(stderr, "%s\n", buf);
	errno = saved;
}

void
log_warn(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vlog(1, fmt, ap);
	va_end(ap);
}

void
log_warnx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vlog(0, fmt, ap);
	va_end(ap);
}

void
log_info(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vlog(0, fmt, ap);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list	ap;

	if (log_verbose < 1)
		return;
	va_start(ap, fmt);
	vlog(0, fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vlog(1, fmt, ap);
	va_end(ap);
	exit(EXIT_SYS);
}

void
fatalx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vlog(0, fmt, ap);
	va_end(ap);
	exit(EXIT_SYS);
}

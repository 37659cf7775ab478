/* See LICENSE file for copyright and license details. */
/*
 * ctl.h: hatrio's control sockets.  A client sends one command line; the
 * daemon answers with lines and ends with "ok" or "error: MESSAGE".  A
 * streaming command ("events") never ends; each line is one event.
 */
#ifndef CTL_H
#define CTL_H

#define CTL_LINE_MAX	1024

int	ctl_listen(const char *);
int	ctl_client(const char *, const char *);

#endif /* CTL_H */

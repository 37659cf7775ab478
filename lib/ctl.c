/* See LICENSE file for copyright and license details. */
/*
 * ctl.c: the unix control socket, both ends.  The daemon side only opens
 * the listening socket (the daemon reads lines with bufferevents); the
 * client side sends one command and copies the answer to stdout.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <err.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "hatrio.h"

static int
ctl_addr(const char *path, struct sockaddr_un *sun)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun->sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sun->sun_path, path);
	return 0;
}

/* ctl_listen: a non-blocking listening socket, mode 600; a stale socket
 * file is replaced. */
int
ctl_listen(const char *path)
{
	struct sockaddr_un	sun;
	struct stat		st;
	mode_t			old;
	int			fd;

	if (ctl_addr(path, &sun) == -1)
		return -1;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1)
		return -1;
	old = umask(077);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		umask(old);
		close(fd);
		return -1;
	}
	umask(old);
	if (listen(fd, 16) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * ctl_client: send cmd, print the answer's lines on stdout (flushed per
 * line, for "while read"), and return the exit status: 0 after "ok" (what
 * follows "ok " is printed too), 1
 * after "error: ...", which goes to stderr, 111 if the daemon went away.
 */
int
ctl_client(const char *path, const char *cmd)
{
	struct sockaddr_un	 sun;
	char			 line[CTL_LINE_MAX + 2];
	FILE			*f;
	int			 fd;

	if (ctl_addr(path, &sun) == -1)
		err(EXIT_USAGE, "%s", path);
	if (strlen(cmd) > CTL_LINE_MAX)
		errx(EXIT_USAGE, "command too long (at most %d bytes)",
		    CTL_LINE_MAX);
	if (strchr(cmd, '\n') != NULL)
		errx(EXIT_USAGE, "a command is one line");
	/* A daemon that hangs up early is an error, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		err(EXIT_SYS, "socket");
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1)
		err(EXIT_SYS, "%s", path);
	if ((f = fdopen(fd, "r+")) == NULL)
		err(EXIT_SYS, "fdopen");
	if (fprintf(f, "%s\n", cmd) < 0 || fflush(f) == EOF)
		err(EXIT_SYS, "%s", path);
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		if (strcmp(line, "ok") == 0 || strncmp(line, "ok ", 3) == 0) {
			if (line[2] != '\0' && (printf("%s\n", line + 3) < 0 ||
			    fflush(stdout) == EOF))
				err(EXIT_SYS, "stdout");
			fclose(f);
			return EXIT_OK;
		}
		if (strncmp(line, "error: ", 7) == 0) {
			fprintf(stderr, "%s\n", line + 7);
			fclose(f);
			return EXIT_NO;
		}
		if (printf("%s\n", line) < 0 || fflush(stdout) == EOF)
			err(EXIT_SYS, "stdout");
	}
	fclose(f);
	warnx("%s: connection closed", path);
	return EXIT_SYS;
}

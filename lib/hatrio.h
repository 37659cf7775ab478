/* See LICENSE file for copyright and license details. */
/*
 * hatrio.h: what every hatrio program shares: exit statuses, logging,
 * readiness notification, parsing of durations and sizes, the cluster key.
 * Each larger module of lib/ (the link, heartbeats, metadata, NBD) has a
 * header of its own.
 */
#ifndef HATRIO_H
#define HATRIO_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Exit statuses, as skarnet's tools use them. */
#define EXIT_OK		0	/* success, or "yes" */
#define EXIT_NO		1	/* a negative answer: no quorum, address held */
#define EXIT_USAGE	100	/* wrong usage or bad input given by a person */
#define EXIT_SYS	111	/* a system call or a peer failed */

#define HATRIO_KEY_BYTES	32

/* glibc's sys/queue.h lacks the _SAFE iterators that BSD has. */
#ifndef TAILQ_FOREACH_SAFE
#define TAILQ_FOREACH_SAFE(var, head, field, tvar)			\
	for ((var) = TAILQ_FIRST(head);					\
	    (var) != NULL && ((tvar) = TAILQ_NEXT(var, field), 1);	\
	    (var) = (tvar))
#endif
#ifndef LIST_FOREACH_SAFE
#define LIST_FOREACH_SAFE(var, head, field, tvar)			\
	for ((var) = LIST_FIRST(head);					\
	    (var) != NULL && ((tvar) = LIST_NEXT(var, field), 1);	\
	    (var) = (tvar))
#endif

#ifndef nitems
#define nitems(a)	(sizeof(a) / sizeof((a)[0]))
#endif

/* log.c: diagnostics on stderr, one line each, prefixed by the program. */
void	 log_init(const char *, int);
void	 log_setverbose(int);
int	 log_getverbose(void);
void	 log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 fatal(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	 fatalx(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

/* util.c */
const char	*parse_duration(const char *, uint64_t *);
const char	*parse_size(const char *, uint64_t *);
const char	*parse_fd(const char *, int *);
void		 ready_notify(int);
uint64_t	 now_usec(void);
uint64_t	 wall_usec(void);
const char	*fmt_duration(uint64_t, char *, size_t);

/* util.c: fixed-width integers, big-endian (wire) or little-endian */
void		 put_be16(unsigned char *, uint16_t);
void		 put_be32(unsigned char *, uint32_t);
void		 put_be64(unsigned char *, uint64_t);
uint16_t	 get_be16(const unsigned char *);
uint32_t	 get_be32(const unsigned char *);
uint64_t	 get_be64(const unsigned char *);
void		 put_le32(unsigned char *, uint32_t);
void		 put_le64(unsigned char *, uint64_t);
uint32_t	 get_le32(const unsigned char *);
uint64_t	 get_le64(const unsigned char *);
int		 store_size(int, uint64_t *);

/* key.c */
const char	*key_load(const char *, unsigned char [HATRIO_KEY_BYTES]);

#endif /* HATRIO_H */

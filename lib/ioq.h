/* See LICENSE file for copyright and license details. */
/*
 * ioq.h: a small pool of threads for blocking disk I/O.  A job's work
 * function runs in a worker; its done function runs later in the event
 * loop, woken through an eventfd.  Jobs are embedded in the caller's own
 * structures, so submitting allocates nothing.
 */
#ifndef IOQ_H
#define IOQ_H

#include <sys/queue.h>

struct event_base;
struct ioq;

struct ioq_job {
	TAILQ_ENTRY(ioq_job)	 entry;
	void			(*work)(struct ioq_job *);	/* worker */
	void			(*done)(struct ioq_job *);	/* loop */
	int			 err;	/* set by work: 0 or an errno */
};

struct ioq	*ioq_new(struct event_base *, int, void (*)(void *), void *);
void		 ioq_submit(struct ioq *, struct ioq_job *);
void		 ioq_free(struct ioq *);
unsigned int	 ioq_pending(struct ioq *);

#endif /* IOQ_H */

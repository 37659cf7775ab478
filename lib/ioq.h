/* See LICENSE file for copyright and license details. */
/*
 * ioq.h: a small pool of threads for blocking disk I/O.  A job's work
 * function runs in a worker; its done function runs later in the event
 * loop, woken through an eventfd.  Jobs are embedded in the caller's own
 * structures, so submitting allocates nothing.  A job whose work marks it
 * quiet (its client already has the answer) does not wake the loop; the
 * loop collects it with ioq_reap() when it wakes anyway, or within
 * IOQ_LAZY_USEC; ioq_set_eager(q, 1) turns that off while someone waits.
 */
#ifndef IOQ_H
#define IOQ_H

#include <sys/queue.h>

#define IOQ_LAZY_USEC	1000

struct event_base;
struct ioq;

struct ioq_job {
	TAILQ_ENTRY(ioq_job)	 entry;
	void			(*work)(struct ioq_job *);	/* worker */
	void			(*done)(struct ioq_job *);	/* loop */
	int			 slow;	/* set by the submitter: may take ms */
	int			 err;	/* set by work: 0 or an errno */
	int			 quiet;	/* set by work: no hurry for done */
};

struct ioq	*ioq_new(struct event_base *, int, void (*)(void *), void *);
void		 ioq_submit(struct ioq *, struct ioq_job *);
void		 ioq_free(struct ioq *);
unsigned int	 ioq_pending(struct ioq *);
int		 ioq_reap(struct ioq *);
void		 ioq_kick(struct ioq *);
void		 ioq_set_eager(struct ioq *, int);

#endif /* IOQ_H */

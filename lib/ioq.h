/* See LICENSE file for copyright and license details. */
/*
 * ioq.h: a small pool of threads for blocking disk I/O.  A job's work
 * function runs in a worker; its done function runs later in the event
 * loop, woken through an eventfd.  Jobs are embedded in the caller's own
 * structures, so submitting allocates nothing.  A job whose work marks it
 * quiet (its client already has the answer) does not wake the loop; the
 * loop collects it with ioq_reap() when it wakes anyway, or within
 * IOQ_LAZY_USEC; ioq_set_eager(q, 1) turns that off while someone waits.
 *
 * A job known to be cheap (a small buffered write: a copy into the page
 * cache) may instead run in the loop with ioq_run_inline(), which saves
 * the two thread hand-offs that cost more than the write itself; its done
 * function still runs later, from the loop's next reap.  Such a job can
 * still block (dirty page throttling, a cold extent tree): one that slept
 * in the kernel (a voluntary context switch, not a preemption by other
 * load) and took longer than IOQ_INLINE_SLOW_USEC turns inlining off for
 * IOQ_INLINE_OFF_USEC, so a struggling disk stalls the loop at most once
 * in that time.  ioq_inline_ok() says whether inlining is on; work done
 * inline outside a job is bracketed by ioq_inline_start() and
 * ioq_inline_took().
 */
#ifndef IOQ_H
#define IOQ_H

#include <sys/queue.h>

#include <stdint.h>

#define IOQ_LAZY_USEC	1000
#define IOQ_INLINE_SLOW_USEC	2000
#define IOQ_INLINE_OFF_USEC	1000000

struct event_base;
struct ioq;

struct ioq_clock {
	uint64_t	t;
	long		nvcsw;
};

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
int		 ioq_inline_ok(struct ioq *);
void		 ioq_inline_start(struct ioq_clock *);
void		 ioq_inline_took(struct ioq *, const struct ioq_clock *);
void		 ioq_run_inline(struct ioq *, struct ioq_job *);

#endif /* IOQ_H */

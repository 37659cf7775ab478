/* See LICENSE file for copyright and license details. */
/*
 * ioq.c: the disk I/O thread pool.  Workers take jobs from one queue
 * under a mutex; finished jobs go to a completion list, and the first one
 * to arrive on an empty list writes to an eventfd, so that the loop wakes
 * once per batch rather than once per job.
 */
#include <sys/eventfd.h>
#include <sys/resource.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/event.h>

#include "hatrio.h"
#include "ioq.h"

TAILQ_HEAD(ioq_jobq, ioq_job);

struct ioq {
	pthread_mutex_t		 lock;
	pthread_cond_t		 cond;
	struct ioq_jobq		 todo;
	unsigned int		 ntodo;		/* jobs in todo */
	unsigned int		 awake;		/* workers not waiting */
	unsigned int		 slow;		/* of them on slow jobs */
	int			 kick;		/* quick jobs not announced */
	int			 stop;
	pthread_mutex_t		 dlock;
	struct ioq_jobq		 done;
	int			 signalled;	/* eventfd written, not read */
	int			 eager;		/* wake the loop for each job */
	struct event		*lazy;		/* collects quiet jobs */
	int			 lazy_on;
	int			 efd;
	struct event		*ev;
	pthread_t		*threads;
	int			 nthreads;
	unsigned int		 pending;	/* submitted, not yet done */
	uint64_t		 inline_off;	/* no inline jobs until then */
	int			 reap_due;	/* q->ev made active */
	void			(*batch)(void *);
	void			*arg;
};

static void *
ioq_worker(void *arg)
{
	struct ioq	*q = arg;
	struct ioq_job	*j;
	uint64_t	 one = 1;
	int		 wake, slow;

	pthread_mutex_lock(&q->lock);
	q->awake++;
	for (;;) {
		while ((j = TAILQ_FIRST(&q->todo)) == NULL && !q->stop) {
			q->awake--;
			pthread_cond_wait(&q->cond, &q->lock);
			q->awake++;
		}
		if (j == NULL)
			break;
		TAILQ_REMOVE(&q->todo, j, entry);
		q->ntodo--;
		slow = j->slow;
		q->slow += slow;
		/* More work than awake hands: wake a helper ourselves. */
		if (q->ntodo > 0 && q->ntodo + q->slow >= q->awake)
			pthread_cond_signal(&q->cond);
		pthread_mutex_unlock(&q->lock);
		j->err = 0;
		j->quiet = 0;
		j->work(j);
		pthread_mutex_lock(&q->dlock);
		TAILQ_INSERT_TAIL(&q->done, j, entry);
		wake = !q->signalled && (!j->quiet || q->eager);
		if (wake)
			q->signalled = 1;
		pthread_mutex_unlock(&q->dlock);
		if (wake)
			while (write(q->efd, &one, sizeof(one)) == -1 &&
			    errno == EINTR)
				;
		pthread_mutex_lock(&q->lock);
		q->slow -= slow;
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

/*
 * ioq_reap: run the done functions of every finished job, in completion
 * order; the number of jobs.
 */
int
ioq_reap(struct ioq *q)
{
	struct ioq_jobq	 list;
	struct ioq_job	*j;
	int		 n = 0;

	TAILQ_INIT(&list);
	pthread_mutex_lock(&q->dlock);
	TAILQ_CONCAT(&list, &q->done, entry);
	pthread_mutex_unlock(&q->dlock);
	while ((j = TAILQ_FIRST(&list)) != NULL) {
		TAILQ_REMOVE(&list, j, entry);
		q->pending--;
		j->done(j);
		n++;
	}
	if (n > 0 && q->batch != NULL)
		q->batch(q->arg);
	ioq_kick(q);
	return n;
}

static void
ioq_wake(evutil_socket_t fd, short what, void *arg)
{
	struct ioq	*q = arg;
	uint64_t	 v;

	q->reap_due = 0;
	pthread_mutex_lock(&q->dlock);
	q->signalled = 0;
	pthread_mutex_unlock(&q->dlock);
	/* Made active by the loop itself (inline jobs): nothing to read. */
	if ((what & EV_READ) && read(fd, &v, sizeof(v)) == -1 &&
	    errno != EAGAIN)
		log_warn("ioq: eventfd");
	ioq_reap(q);
}

static void
ioq_lazy(evutil_socket_t fd, short what, void *arg)
{
	struct ioq	*q = arg;
	struct timeval	 tv = { 0, IOQ_LAZY_USEC };

	(void)fd;
	(void)what;
	ioq_reap(q);
	ioq_kick(q);
	q->lazy_on = q->pending > 0;
	if (q->lazy_on)
		evtimer_add(q->lazy, &tv);
}

/* ioq_set_eager: while on, every finished job wakes the loop. */
void
ioq_set_eager(struct ioq *q, int on)
{
	int	kick = 0;

	if (on == q->eager)
		return;
	pthread_mutex_lock(&q->dlock);
	q->eager = on;
	/* Quiet jobs already done must not wait for the timer now. */
	if (on && !TAILQ_EMPTY(&q->done) && !q->signalled)
		kick = q->signalled = 1;
	pthread_mutex_unlock(&q->dlock);
	if (kick)
		event_active(q->ev, EV_READ, 0);
}

/*
 * ioq_new: nthreads workers; batch(arg), if given, runs after each batch
 * of done functions (blkmirror sends its replies there).
 */
struct ioq *
ioq_new(struct event_base *base, int nthreads, void (*batch)(void *),
    void *arg)
{
	struct ioq	*q;
	int		 i;

	if ((q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	pthread_mutex_init(&q->lock, NULL);
	pthread_mutex_init(&q->dlock, NULL);
	pthread_cond_init(&q->cond, NULL);
	TAILQ_INIT(&q->todo);
	TAILQ_INIT(&q->done);
	q->efd = -1;
	q->batch = batch;
	q->arg = arg;
	if ((q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1)
		goto fail;
	q->ev = event_new(base, q->efd, EV_READ | EV_PERSIST, ioq_wake, q);
	if (q->ev == NULL || event_add(q->ev, NULL) == -1)
		goto fail;
	if ((q->lazy = evtimer_new(base, ioq_lazy, q)) == NULL)
		goto fail;
	if ((q->threads = calloc(nthreads, sizeof(*q->threads))) == NULL)
		goto fail;
	for (i = 0; i < nthreads; i++) {
		if ((errno = pthread_create(&q->threads[i], NULL, ioq_worker,
		    q)) != 0)
			goto fail;
		q->nthreads++;
	}
	return q;
 fail:
	ioq_free(q);
	return NULL;
}

void
ioq_submit(struct ioq *q, struct ioq_job *j)
{
	struct timeval	tv = { 0, IOQ_LAZY_USEC };

	if (!q->lazy_on) {
		evtimer_add(q->lazy, &tv);
		q->lazy_on = 1;
	}
	q->pending++;
	pthread_mutex_lock(&q->lock);
	TAILQ_INSERT_TAIL(&q->todo, j, entry);
	/*
	 * Waking a thread costs the loop more than a small write: wake one
	 * only if no worker is awake for quick jobs (one that is takes the
	 * next job when done with its own), and let workers wake helpers.
	 */
	q->ntodo++;
	if (j->slow) {
		if (q->awake <= q->slow + 1)
			pthread_cond_signal(&q->cond);
	} else
		q->kick = 1;
	pthread_mutex_unlock(&q->lock);
}

/*
 * ioq_kick: after a batch of submissions (the loop calls it at the end of
 * each callback), wake a worker if none is awake for them.
 */
void
ioq_kick(struct ioq *q)
{
	if (!q->kick)
		return;
	pthread_mutex_lock(&q->lock);
	q->kick = 0;
	if (q->ntodo > 0 && q->awake <= q->slow)
		pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

int
ioq_inline_ok(struct ioq *q)
{
	return q->inline_off == 0 || now_usec() >= q->inline_off;
}

void
ioq_inline_start(struct ioq_clock *c)
{
	struct rusage	ru;

	c->t = now_usec();
	c->nvcsw = getrusage(RUSAGE_THREAD, &ru) == 0 ? ru.ru_nvcsw : -1;
}

/* Work done inline since c: slow and blocked turns inlining off. */
void
ioq_inline_took(struct ioq *q, const struct ioq_clock *c)
{
	struct rusage	ru;
	uint64_t	now = now_usec();

	if (now - c->t <= IOQ_INLINE_SLOW_USEC)
		return;
	/* Only preempted, not asleep: the pool would not have helped. */
	if (c->nvcsw != -1 && getrusage(RUSAGE_THREAD, &ru) == 0 &&
	    ru.ru_nvcsw == c->nvcsw)
		return;
	if (q->inline_off == 0 || now >= q->inline_off)
		log_debug("ioq: inline job blocked for %" PRIu64 " us: in "
		    "the pool for a while", now - c->t);
	q->inline_off = now + IOQ_INLINE_OFF_USEC;
}

/*
 * ioq_run_inline: run j's work now, in the loop; its done function runs
 * at the next reap, in this round of the loop at the latest.
 */
void
ioq_run_inline(struct ioq *q, struct ioq_job *j)
{
	struct ioq_clock	c;

	ioq_inline_start(&c);
	q->pending++;
	j->err = 0;
	j->quiet = 0;
	j->work(j);
	ioq_inline_took(q, &c);
	pthread_mutex_lock(&q->dlock);
	TAILQ_INSERT_TAIL(&q->done, j, entry);
	pthread_mutex_unlock(&q->dlock);
	if (!q->reap_due) {
		q->reap_due = 1;
		event_active(q->ev, EV_TIMEOUT, 0);
	}
}

unsigned int
ioq_pending(struct ioq *q)
{
	return q->pending;
}

/* ioq_free: workers finish the queued jobs and exit; done functions of
 * jobs still unreported are not called. */
void
ioq_free(struct ioq *q)
{
	int	i;

	if (q == NULL)
		return;
	pthread_mutex_lock(&q->lock);
	q->stop = 1;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	for (i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i], NULL);
	if (q->ev != NULL)
		event_free(q->ev);
	if (q->lazy != NULL)
		event_free(q->lazy);
	if (q->efd != -1)
		close(q->efd);
	free(q->threads);
	pthread_mutex_destroy(&q->lock);
	pthread_mutex_destroy(&q->dlock);
	pthread_cond_destroy(&q->cond);
	free(q);
}

/* See LICENSE file for copyright and license details. */
/*
 * gi.h: generation identifiers, in the manner of DRBD's UUIDs, and the
 * decisions taken from them when two nodes meet again: nothing to do, who
 * is the sync source, split brain, or unrelated data; and, for a split
 * brain, which node a recovery policy makes the victim.
 */
#ifndef GI_H
#define GI_H

#include <stdint.h>

#define GI_HISTORY	4
#define GI_NAME_MAX	64

/* what one node knows, as seen when it compares itself with one peer */
struct gi_view {
	char		 name[GI_NAME_MAX];
	uint64_t	 current;
	uint64_t	 bitmap;		/* for the other node; 0: none */
	uint64_t	 history[GI_HISTORY];	/* newest first; 0: empty */
	int		 crashed_primary;	/* was primary, not shut down */
	int		 primary;		/* primary now */
	uint64_t	 promoted_at;		/* wall usec of last promotion */
	uint64_t	 changes;		/* blocks out of sync for the other */
	int		 inconsistent;		/* a resync into it unfinished */
};

enum gi_verdict {
	GI_IN_SYNC,		/* same data: nothing to move */
	GI_SOURCE,		/* self has the newer data */
	GI_TARGET,		/* the peer has the newer data */
	GI_SPLIT_BRAIN,		/* both moved on from a common ancestor */
	GI_UNRELATED,		/* no common ancestor: refuse */
};

struct gi_decision {
	enum gi_verdict	 verdict;
	int		 full;		/* the bitmap cannot be trusted: every
					   block must be compared */
	int		 al_self;	/* also resync self's activity log */
	int		 al_peer;	/* also resync the peer's */
	int		 unfinished;	/* from an unfinished resync: all the
					   target's bitmaps count, and with
					   none, every block */
	const char	*why;		/* one phrase for logs and events */
};

/* split-brain recovery policies, as DRBD's after-sb-Npri */
enum gi_policy {
	GI_POL_DISCONNECT,
	GI_POL_DISCARD_YOUNGER_PRIMARY,
	GI_POL_DISCARD_OLDER_PRIMARY,
	GI_POL_DISCARD_ZERO_CHANGES,
	GI_POL_DISCARD_LEAST_CHANGES,
	GI_POL_DISCARD_NODE,
};

struct gi_policy_spec {
	enum gi_policy	 policy;
	char		 node[GI_NAME_MAX];	/* for GI_POL_DISCARD_NODE */
};

void		 gi_decide(const struct gi_view *, const struct gi_view *,
		    struct gi_decision *);
const char	*gi_verdict_name(enum gi_verdict);
uint64_t	 gi_random(void);
void		 gi_push_history(uint64_t [GI_HISTORY], uint64_t);
const char	*gi_policy_parse(const char *, struct gi_policy_spec *);
const char	*gi_policy_name(const struct gi_policy_spec *, char *, size_t);
int		 gi_policy_victim(const struct gi_policy_spec *,
		    const struct gi_view *, const struct gi_view *,
		    const char **);

#endif /* GI_H */

/* See LICENSE file for copyright and license details. */
/*
 * Unit tests for lib/gi.c: the recovery cases of DESIGN.md played through
 * generation identifiers, and the split-brain policies.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "gi.h"
#include "hatrio.h"
#include "unit.h"

/* A node as it keeps its identifiers, one bitmap identifier per peer. */
struct node {
	char		 name[8];
	uint64_t	 current, bitmap[3], history[GI_HISTORY];
	int		 crashed_primary, primary, inconsistent;
	uint64_t	 promoted_at, changes[3];
};

static void	 node_init(struct node *, const char *, int);
static void	 lose_peer(struct node *, int);
static void	 resynced(struct node *, int, struct node *);
static void	 view(const struct node *, int, struct gi_view *);
static enum gi_verdict decide(struct node *, int, struct node *, int,
		    struct gi_decision *);
static void	 test_cases(void);
static void	 test_policies(void);

static uint64_t	 genesis;

static void
node_init(struct node *n, const char *name, int id)
{
	(void)id;
	memset(n, 0, sizeof(*n));
	strcpy(n->name, name);
	n->current = genesis;
}

/* a primary loses peer p: new current, the old one kept for p */
static void
lose_peer(struct node *n, int p)
{
	if (n->bitmap[p] == 0)
		n->bitmap[p] = n->current;
	gi_push_history(n->history, n->current);
	n->current = gi_random();
}

/* resync from src (which knows tgt as peer p) to tgt is complete */
static void
resynced(struct node *src, int p, struct node *tgt)
{
	gi_push_history(tgt->history, tgt->current);
	tgt->current = src->current;
	gi_push_history(src->history, src->bitmap[p]);
	src->bitmap[p] = 0;
	src->changes[p] = 0;
	tgt->crashed_primary = 0;
}

static void
view(const struct node *n, int p, struct gi_view *v)
{
	memset(v, 0, sizeof(*v));
	strcpy(v->name, n->name);
	v->current = n->current;
	v->bitmap = n->bitmap[p];
	memcpy(v->history, n->history, sizeof(v->history));
	v->crashed_primary = n->crashed_primary;
	v->primary = n->primary;
	v->promoted_at = n->promoted_at;
	v->changes = n->changes[p];
	v->inconsistent = n->inconsistent;
}

/* self sees the peer as slot ps; the peer sees self as slot pp */
static enum gi_verdict
decide(struct node *self, int ps, struct node *peer, int pp,
    struct gi_decision *d)
{
	struct gi_view	sv, pv;

	view(self, ps, &sv);
	view(peer, pp, &pv);
	gi_decide(&sv, &pv, d);
	return d->verdict;
}

enum { A, B, C };

static void
test_cases(void)
{
	struct node		 a, b, c;
	struct gi_decision	 d;
	uint64_t		 save;

	genesis = gi_random();
	node_init(&a, "a", A);
	node_init(&b, "b", B);
	node_init(&c, "c", C);

	ok(decide(&a, B, &b, A, &d) == GI_IN_SYNC && !d.full,
	    "fresh pair is in sync (%s)", d.why);

	/* case 1: b dies, a goes on; b returns and is the target */
	lose_peer(&a, B);
	ok(decide(&b, A, &a, B, &d) == GI_TARGET && !d.full,
	    "returning b is a bitmap target (%s)", d.why);
	ok(decide(&a, B, &b, A, &d) == GI_SOURCE && !d.full,
	    "and a sees itself as source");
	/* c was connected all along: still in sync with a */
	c.current = a.current;
	ok(decide(&a, C, &c, A, &d) == GI_IN_SYNC, "c stayed in sync");
	resynced(&a, B, &b);
	ok(decide(&a, B, &b, A, &d) == GI_IN_SYNC, "in sync after resync");

	/* case 1, survivor changed roles meanwhile: b down, a demoted and
	 * promoted again: a rotates once more; b is still the target */
	lose_peer(&a, B);
	save = a.bitmap[B];
	lose_peer(&a, B);
	ok(a.bitmap[B] == save, "a second rotation keeps the bitmap id");
	ok(decide(&b, A, &a, B, &d) == GI_TARGET && !d.full,
	    "b still a bitmap target after a's role changes");
	resynced(&a, B, &b);

	/* complete power outage: both crash, a comes back first, promoted,
	 * loses b: b is the target when it returns, not a split brain */
	a.crashed_primary = 1;
	lose_peer(&a, B);
	a.crashed_primary = 0;
	ok(decide(&b, A, &a, B, &d) == GI_TARGET && !d.full,
	    "after a power outage the direction follows the identifiers");

	resynced(&a, B, &b);
	/* a crashes as primary; b is promoted and a returns: a is the
	 * target, and its activity log must be covered too */
	a.crashed_primary = 1;
	lose_peer(&b, A);
	ok(decide(&a, B, &b, A, &d) == GI_TARGET && d.al_self,
	    "a crashed primary returning is a target, AL included");
	ok(decide(&b, A, &a, B, &d) == GI_SOURCE && d.al_peer,
	    "b sees it the same way");
	resynced(&b, A, &a);

	/* same generation but a crashed as primary: AL from a */
	a.crashed_primary = 1;
	ok(decide(&a, B, &b, A, &d) == GI_SOURCE && d.al_self && !d.full,
	    "same generation, crashed primary: its AL is resynced from it");
	/* ... unless the peer was promoted since (and wrote nothing) */
	b.primary = 1;
	ok(decide(&a, B, &b, A, &d) == GI_TARGET && d.al_self && !d.full,
	    "same generation, crashed primary, peer primary now: target");
	ok(decide(&b, A, &a, B, &d) == GI_SOURCE && d.al_peer && !d.full,
	    "the promoted peer sees it the same way: source");
	b.primary = 0;
	a.crashed_primary = 0;

	/* same generation, b's resync (of a's log) cut off: it goes on */
	b.inconsistent = 1;
	ok(decide(&a, B, &b, A, &d) == GI_SOURCE && !d.full,
	    "same generation, peer inconsistent: source (%s)", d.why);
	ok(decide(&b, A, &a, B, &d) == GI_TARGET && !d.full,
	    "same generation, self inconsistent: target (%s)", d.why);
	ok(decide(&b, A, &a, B, &d) == GI_TARGET && d.unfinished,
	    "marked unfinished: the target's bitmaps all count");
	b.primary = 1;
	ok(decide(&b, A, &a, B, &d) == GI_IN_SYNC,
	    "an inconsistent primary (forced) is no target");
	ok(decide(&a, B, &b, A, &d) == GI_IN_SYNC, "seen from the peer too");
	b.primary = 0;
	a.inconsistent = 1;
	ok(decide(&a, B, &b, A, &d) == GI_IN_SYNC,
	    "both inconsistent: neither is a source");
	a.inconsistent = b.inconsistent = 0;

	/* split brain: both moved on from the same generation */
	lose_peer(&a, B);
	lose_peer(&b, A);
	ok(decide(&a, B, &b, A, &d) == GI_SPLIT_BRAIN && !d.full,
	    "split brain detected (%s)", d.why);
	ok(decide(&b, A, &a, B, &d) == GI_SPLIT_BRAIN,
	    "from both sides");

	/* the bitmap was lost (identifier only in history): full sync */
	node_init(&a, "a", A);
	node_init(&b, "b", B);
	lose_peer(&a, B);
	gi_push_history(a.history, a.bitmap[B]);
	a.bitmap[B] = 0;
	lose_peer(&a, C);
	ok(decide(&b, A, &a, B, &d) == GI_TARGET && d.full,
	    "history match means full sync");
	ok(decide(&a, B, &b, A, &d) == GI_SOURCE && d.full,
	    "and full sync seen from the source");

	/* unrelated data */
	node_init(&a, "a", A);
	genesis = gi_random();
	node_init(&b, "b", B);
	ok(decide(&a, B, &b, A, &d) == GI_UNRELATED, "unrelated refused");

	/* a new empty node */
	b.current = 0;
	ok(decide(&b, A, &a, B, &d) == GI_TARGET && d.full,
	    "an empty node is a full target");
	ok(decide(&a, B, &b, A, &d) == GI_SOURCE && d.full,
	    "and the other a full source");
	a.current = 0;
	ok(decide(&a, B, &b, A, &d) == GI_UNRELATED, "two empty nodes");

	ok(strcmp(gi_verdict_name(GI_SPLIT_BRAIN), "split-brain") == 0,
	    "verdict names");
}

static void
test_policies(void)
{
	static const struct {
		const char	*policy;
		uint64_t	 pa, pb, ca, cb;	/* promoted_at, changes */
		int		 victim;
	} cases[] = {
		{ "disconnect", 10, 20, 5, 5, -1 },
		{ "discard-younger-primary", 10, 20, 5, 5, 1 },
		{ "discard-younger-primary", 30, 20, 5, 5, 0 },
		{ "discard-younger-primary", 0, 20, 5, 5, 0 },
		{ "discard-younger-primary", 20, 20, 5, 5, -1 },
		{ "discard-older-primary", 10, 20, 5, 5, 0 },
		{ "discard-older-primary", 30, 20, 5, 5, 1 },
		{ "discard-older-primary", 0, 20, 5, 5, 0 },
		{ "discard-zero-changes", 10, 20, 0, 5, 0 },
		{ "discard-zero-changes", 10, 20, 5, 0, 1 },
		{ "discard-zero-changes", 10, 20, 5, 5, -1 },
		{ "discard-least-changes", 10, 20, 3, 5, 0 },
		{ "discard-least-changes", 10, 20, 9, 5, 1 },
		{ "discard-least-changes", 10, 20, 5, 5, -1 },
		{ "discard-node-a", 10, 20, 5, 5, 0 },
		{ "discard-node-b", 10, 20, 5, 5, 1 },
		{ "discard-node-x", 10, 20, 5, 5, -1 },
	};
	struct gi_policy_spec	 p;
	struct gi_view		 a, b;
	const char		*why;
	char			 buf[80];
	size_t			 i;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	strcpy(a.name, "a");
	strcpy(b.name, "b");
	for (i = 0; i < nitems(cases); i++) {
		ok(gi_policy_parse(cases[i].policy, &p) == NULL,
		    "policy %s parses", cases[i].policy);
		is_str(gi_policy_name(&p, buf, sizeof(buf)), cases[i].policy,
		    "policy %s prints back", cases[i].policy);
		a.promoted_at = cases[i].pa;
		b.promoted_at = cases[i].pb;
		a.changes = cases[i].ca;
		b.changes = cases[i].cb;
		ok(gi_policy_victim(&p, &a, &b, &why) == cases[i].victim,
		    "%s (promoted %llu/%llu, changes %llu/%llu): victim %d: %s",
		    cases[i].policy, (unsigned long long)cases[i].pa,
		    (unsigned long long)cases[i].pb,
		    (unsigned long long)cases[i].ca,
		    (unsigned long long)cases[i].cb, cases[i].victim, why);
	}
	ok(gi_policy_parse("discard-everything", &p) != NULL,
	    "unknown policy refused");
	ok(gi_policy_parse("discard-node-", &p) != NULL,
	    "discard-node- without a name refused");
}

int
main(void)
{
	if (sodium_init() == -1)
		return 1;
	test_cases();
	test_policies();
	return done_testing();
}

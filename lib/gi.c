/* See LICENSE file for copyright and license details. */
/*
 * gi.c: the decisions hatrio takes from generation identifiers.
 *
 * Every node has a current identifier that names its data.  A primary that
 * loses a peer starts a new current identifier and keeps the old one as
 * the bitmap identifier for that peer: "what the peer last had in common
 * with me; my dirty bitmap for it starts there".  Older identifiers move
 * into a short history.  When two nodes meet again, comparing the two sets
 * says which way data must flow, even after both went down, and whether
 * both moved on from a common ancestor (a split brain).  The rules follow
 * DRBD's drbd_uuid_compare, reduced to what hatrio keeps.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "gi.h"

static int	in_history(const uint64_t [GI_HISTORY], uint64_t);
static int	share_ancestor(const struct gi_view *, const struct gi_view *);
static void	set(struct gi_decision *, enum gi_verdict, int, const char *);

static int
in_history(const uint64_t h[GI_HISTORY], uint64_t v)
{
	int	i;

	if (v == 0)
		return 0;
	for (i = 0; i < GI_HISTORY; i++)
		if (h[i] == v)
			return 1;
	return 0;
}

/* Any identifier, other than the current ones, known to both? */
static int
share_ancestor(const struct gi_view *a, const struct gi_view *b)
{
	int	i;

	if (a->bitmap != 0 && (a->bitmap == b->bitmap ||
	    in_history(b->history, a->bitmap)))
		return 1;
	for (i = 0; i < GI_HISTORY; i++)
		if (a->history[i] != 0 && (a->history[i] == b->bitmap ||
		    in_history(b->history, a->history[i])))
			return 1;
	return 0;
}

static void
set(struct gi_decision *d, enum gi_verdict v, int full, const char *why)
{
	d->verdict = v;
	d->full = full;
	d->why = why;
}

/*
 * gi_decide: compare self with peer.  The rules are tried in order; the
 * first that matches decides.  A node with no current identifier has no
 * data (a new, empty disk) and is always a full-sync target.
 */
void
gi_decide(const struct gi_view *self, const struct gi_view *peer,
    struct gi_decision *d)
{
	memset(d, 0, sizeof(*d));

	if (self->current == 0 && peer->current == 0) {
		set(d, GI_UNRELATED, 0, "neither node has data");
		return;
	}
	if (self->current == 0) {
		set(d, GI_TARGET, 1, "this node has no data yet");
		return;
	}
	if (peer->current == 0) {
		set(d, GI_SOURCE, 1, "the peer has no data yet");
		return;
	}
	if (self->current == peer->current) {
		set(d, GI_IN_SYNC, 0, "same generation");
		/*
		 * A primary that crashed may have written locally what its
		 * peer never acknowledged: its hot extents are resynced from
		 * it.  When both claim it, the name breaks the tie.
		 */
		if (self->crashed_primary && peer->crashed_primary) {
			if (strcmp(self->name, peer->name) < 0)
				d->al_self = 1;
			else
				d->al_peer = 1;
		} else if (self->crashed_primary)
			d->al_self = 1;
		else if (peer->crashed_primary)
			d->al_peer = 1;
		if (d->al_self && peer->primary && !self->primary) {
			/*
			 * The peer was promoted since (and has not written
			 * yet): its image is what its clients see; what we
			 * wrote that it never acknowledged goes.
			 */
			d->verdict = GI_TARGET;
			d->why = "same generation; this node crashed as "
			    "primary, the peer is primary now";
		} else if (d->al_peer && self->primary && !peer->primary) {
			d->verdict = GI_SOURCE;
			d->why = "same generation; the peer crashed as "
			    "primary, this node is primary now";
		} else if (d->al_self) {
			d->verdict = GI_SOURCE;
			d->why = "same generation; this node crashed as primary";
		} else if (d->al_peer) {
			d->verdict = GI_TARGET;
			d->why = "same generation; the peer crashed as primary";
		} else if (self->inconsistent && !peer->inconsistent &&
		    !self->primary) {
			/*
			 * A resync with no new generation (an activity log
			 * after a crash) was cut off: it must go on, not be
			 * taken as done.  What is left may be in the bitmap
			 * of another peer than this one: the target uses
			 * them all (see unfinished).
			 */
			d->verdict = GI_TARGET;
			d->unfinished = 1;
			d->why = "same generation; this node's resync is "
			    "unfinished";
		} else if (peer->inconsistent && !self->inconsistent &&
		    !peer->primary) {
			d->verdict = GI_SOURCE;
			d->unfinished = 1;
			d->why = "same generation; the peer's resync is "
			    "unfinished";
		}
		return;
	}
	/*
	 * A bitmap is written lazily: a primary that crashed may have lost
	 * its newest bits, and its activity log covers them; the log of a
	 * crashed target covers what it wrote that the source never had.
	 */
	if (peer->bitmap != 0 && peer->bitmap == self->current) {
		set(d, GI_TARGET, 0, "the peer moved on since it lost us");
		d->al_self = self->crashed_primary;
		d->al_peer = peer->crashed_primary;
		return;
	}
	if (self->bitmap != 0 && self->bitmap == peer->current) {
		set(d, GI_SOURCE, 0, "we moved on since we lost the peer");
		d->al_self = self->crashed_primary;
		d->al_peer = peer->crashed_primary;
		return;
	}
	if (self->bitmap != 0 && self->bitmap == peer->bitmap) {
		set(d, GI_SPLIT_BRAIN, 0,
		    "both moved on from the same generation");
		return;
	}
	if (in_history(peer->history, self->current)) {
		set(d, GI_TARGET, 1, "the peer's history holds our data");
		return;
	}
	if (in_history(self->history, peer->current)) {
		set(d, GI_SOURCE, 1, "our history holds the peer's data");
		return;
	}
	if (share_ancestor(self, peer)) {
		set(d, GI_SPLIT_BRAIN, 1,
		    "both moved on from an older common generation");
		return;
	}
	set(d, GI_UNRELATED, 0, "no common generation");
}

const char *
gi_verdict_name(enum gi_verdict v)
{
	switch (v) {
	case GI_IN_SYNC:
		return "in-sync";
	case GI_SOURCE:
		return "source";
	case GI_TARGET:
		return "target";
	case GI_SPLIT_BRAIN:
		return "split-brain";
	case GI_UNRELATED:
		return "unrelated";
	}
	return "unknown";
}

/* A fresh identifier: random, never 0, lowest bit clear (reserved). */
uint64_t
gi_random(void)
{
	uint64_t	v;

	do {
		randombytes_buf(&v, sizeof(v));
		v &= ~(uint64_t)1;
	} while (v == 0);
	return v;
}

void
gi_push_history(uint64_t h[GI_HISTORY], uint64_t v)
{
	if (v == 0 || h[0] == v)
		return;
	memmove(h + 1, h, (GI_HISTORY - 1) * sizeof(h[0]));
	h[0] = v;
}

/*
 * gi_policy_parse: "disconnect", "discard-younger-primary",
 * "discard-older-primary", "discard-zero-changes", "discard-least-changes",
 * "discard-node-NAME".  Returns NULL or the reason it was refused.
 */
const char *
gi_policy_parse(const char *s, struct gi_policy_spec *p)
{
	static const struct {
		const char	*name;
		enum gi_policy	 pol;
	} tab[] = {
		{ "disconnect", GI_POL_DISCONNECT },
		{ "discard-younger-primary", GI_POL_DISCARD_YOUNGER_PRIMARY },
		{ "discard-older-primary", GI_POL_DISCARD_OLDER_PRIMARY },
		{ "discard-zero-changes", GI_POL_DISCARD_ZERO_CHANGES },
		{ "discard-least-changes", GI_POL_DISCARD_LEAST_CHANGES },
	};
	size_t	i;

	memset(p, 0, sizeof(*p));
	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (strcmp(s, tab[i].name) == 0) {
			p->policy = tab[i].pol;
			return NULL;
		}
	if (strncmp(s, "discard-node-", 13) == 0) {
		if (s[13] == '\0')
			return "discard-node- needs a node name";
		if (strlen(s + 13) >= sizeof(p->node))
			return "node name too long";
		p->policy = GI_POL_DISCARD_NODE;
		strcpy(p->node, s + 13);
		return NULL;
	}
	return "unknown policy (disconnect, discard-younger-primary, "
	    "discard-older-primary, discard-zero-changes, "
	    "discard-least-changes, discard-node-NAME)";
}

const char *
gi_policy_name(const struct gi_policy_spec *p, char *buf, size_t len)
{
	static const char *names[] = {
		"disconnect", "discard-younger-primary",
		"discard-older-primary", "discard-zero-changes",
		"discard-least-changes", "discard-node-",
	};

	snprintf(buf, len, "%s%s", names[p->policy],
	    p->policy == GI_POL_DISCARD_NODE ? p->node : "");
	return buf;
}

/*
 * gi_policy_victim: after a split brain between a and b, which one loses
 * its diverging writes?  Returns 0 for a, 1 for b, or -1 when the policy
 * does not decide (then nodes stay disconnected for a person); *why says
 * why in a phrase.  The victim's blocks are saved before anything
 * overwrites them, whoever decides.
 */
int
gi_policy_victim(const struct gi_policy_spec *p, const struct gi_view *a,
    const struct gi_view *b, const char **why)
{
	switch (p->policy) {
	case GI_POL_DISCONNECT:
		*why = "policy disconnect: waiting for a person";
		return -1;
	case GI_POL_DISCARD_YOUNGER_PRIMARY:
	case GI_POL_DISCARD_OLDER_PRIMARY:
		if (a->promoted_at == b->promoted_at) {
			*why = "both became primary at the same time";
			return -1;
		}
		if (a->promoted_at == 0 || b->promoted_at == 0) {
			/* a node never primary cannot hold newer writes */
			*why = "it was never primary";
			return a->promoted_at == 0 ? 0 : 1;
		}
		if (p->policy == GI_POL_DISCARD_YOUNGER_PRIMARY) {
			*why = "discard-younger-primary: it became primary "
			    "last";
			return a->promoted_at > b->promoted_at ? 0 : 1;
		}
		*why = "discard-older-primary: it became primary first";
		return a->promoted_at < b->promoted_at ? 0 : 1;
	case GI_POL_DISCARD_ZERO_CHANGES:
		if (a->changes == 0 && b->changes == 0) {
			*why = "discard-zero-changes: neither changed "
			    "anything; the first in name order syncs from "
			    "the other";
			return strcmp(a->name, b->name) < 0 ? 1 : 0;
		}
		if (a->changes == 0) {
			*why = "discard-zero-changes: it changed nothing";
			return 0;
		}
		if (b->changes == 0) {
			*why = "discard-zero-changes: it changed nothing";
			return 1;
		}
		*why = "discard-zero-changes: both changed blocks";
		return -1;
	case GI_POL_DISCARD_LEAST_CHANGES:
		if (a->changes == b->changes) {
			*why = "discard-least-changes: both changed as many "
			    "blocks";
			return -1;
		}
		*why = "discard-least-changes: it changed fewer blocks";
		return a->changes < b->changes ? 0 : 1;
	case GI_POL_DISCARD_NODE:
		if (strcmp(p->node, a->name) == 0) {
			*why = "discard-node: named by the policy";
			return 0;
		}
		if (strcmp(p->node, b->name) == 0) {
			*why = "discard-node: named by the policy";
			return 1;
		}
		*why = "discard-node: the named node is neither of these";
		return -1;
	}
	*why = "unknown policy";
	return -1;
}

/* See LICENSE file for copyright and license details. */
/*
 * meta.h: blkmirror's on-disk metadata, kept in a file of its own.
 *
 * Layout (all integers little-endian):
 *	0	slot A (META_SLOT_SIZE bytes): header, activity log
 *	32K	slot B, the same
 *	64K	bitmaps: for peer p and copy c at
 *		META_BM_OFF + (2 * p + c) * bm_stride
 * A slot carries a sequence number and a BLAKE2b hash over itself; an
 * update writes the slot not holding the newest good copy and syncs it,
 * so that a torn write leaves the previous copy intact.  A bitmap is
 * written to the copy its peer's header entry does not name, synced, and
 * then a header naming it is written: the header is the commit point.
 */
#ifndef META_H
#define META_H

#include <stddef.h>
#include <stdint.h>

#define META_MAGIC		"HTRIOMD1"
#define META_VERSION		1
#define META_SLOT_SIZE		32768
#define META_BM_OFF		65536
#define META_BLOCK		4096		/* bytes per bitmap bit */
#define META_PEERS		3		/* 4 nodes at most */
#define META_NAME_MAX		63
#define META_AL_EXTENT		(4u << 20)	/* activity log extent */
#define META_AL_CAP		6144		/* slots in the format */
#define META_AL_DEFAULT		1237		/* active extents, DRBD's */
#define META_AL_MIN		16
#define META_HASH_BYTES		32

/* flags */
#define META_F_CONSISTENT	0x01
#define META_F_UPTODATE		0x02
#define META_F_CLEAN		0x04	/* shut down cleanly */
#define META_F_PRIMARY		0x08	/* role when last written */

struct meta_peer {
	char		 name[META_NAME_MAX + 1];
	uint32_t	 node_id;
	uint32_t	 in_use;
	uint64_t	 bitmap_gi;	/* our current GI when we lost it */
	uint32_t	 bm_copy;	/* 0 or 1: the committed copy */
	uint64_t	 bm_seq;
	uint64_t	 oos_blocks;	/* bits set */
	unsigned char	 bm_hash[META_HASH_BYTES];
	unsigned char	*bm;		/* in memory: bm_bytes */
	int		 bm_dirty;
};

struct meta {
	int		 fd;
	char		*path;
	uint64_t	 seq;		/* of the newest good slot */
	int		 slot;		/* where it is: 0 A, 1 B */
	char		 node[META_NAME_MAX + 1];
	uint32_t	 node_id;
	uint64_t	 size;		/* bytes of the resource */
	uint32_t	 block_size;
	uint32_t	 al_extent_size;
	uint32_t	 al_limit;	/* active extents at most */
	uint32_t	 flags;
	uint64_t	 gi_current;
	uint64_t	 gi_history[2];
	uint64_t	 promoted_at;	/* wall usec of the last promotion */
	struct meta_peer peer[META_PEERS];
	uint32_t	 al_count;
	uint32_t	 al[META_AL_CAP];	/* extent numbers */
	/* in memory only */
	uint64_t	 nbits;
	size_t		 bm_bytes, bm_stride;
	uint32_t	 nextents;
	int32_t		*ext_slot;	/* per extent: index in al[] or -1 */
	uint64_t	*ext_used;	/* per extent: LRU clock */
	uint32_t	*ext_pinned;	/* per extent: writes in flight */
	uint64_t	*ext_gen;	/* per extent: al_gen when added */
	uint64_t	 al_clock;
	uint64_t	 al_gen;	/* bumped by each AL change */
	uint64_t	 al_gen_disk;	/* persisted */
	uint32_t	 al_unclean;	/* extents in the AL of a crash */
	uint32_t	*al_crashed;	/* their numbers, kept for resync */
	char		 warn[256];	/* a fallback that happened on load */
};

/* Create a new metadata file; fails if it exists unless force. */
int	 meta_create(const char *, const char *, uint64_t, uint32_t, int,
	    char *, size_t);
/* Load the newest good slot; NULL and a message on failure. */
struct meta	*meta_load(const char *, int, char *, size_t);
/* Refuse metadata made for another node or a smaller store. */
int	 meta_check(struct meta *, const char *, const char *, uint64_t,
	    char *, size_t);
void	 meta_free(struct meta *);
void	 meta_dump(struct meta *, void (*)(void *, const char *), void *);

/* Slot writes, split for a thread pool: encode in the loop, write in a
 * worker, then tell the loop it is on disk. */
void	 meta_encode(struct meta *, unsigned char *, uint64_t *);
int	 meta_write(int, const unsigned char *, uint64_t);
void	 meta_written(struct meta *);
int	 meta_sync(struct meta *);
int	 meta_bm_flush(struct meta *, int);
void	 meta_bm_count(struct meta *, int);
uint64_t meta_bm_stage(struct meta *, int, unsigned char *);
int	 meta_pwrite(int, const void *, size_t, uint64_t);
int	 meta_peer_slot(struct meta *, const char *);

/* Activity log. */
int	 meta_al_has(struct meta *, uint32_t);
int	 meta_al_add(struct meta *, uint32_t);
uint64_t meta_random_gi(void);

/* Slot encoding, exposed for the unit tests. */
int	 meta_decode(struct meta *, const unsigned char *, char *, size_t);

#endif /* META_H */

/* See LICENSE file for copyright and license details. */
/*
 * undo.h: the undo journal of a resync target.  While a DR node is
 * resynced its blocks come in bitmap order, not in epochs, so its store is
 * not a crash-consistent image until the resync ends.  Before a resync
 * block overwrites a block for the first time, the block's old contents
 * are appended here and made durable; the store and the journal together
 * then always hold the image from before the resync, and undo_restore()
 * writes it back.  The format (every integer big-endian):
 *
 *	header	 4096 bytes: "HTUNDO01", nonce u64, device size u64,
 *		 flags u32, 0 u32, generation u64, history GI_HISTORY u64,
 *		 BLAKE2b-256 of the bytes before it; zero-filled
 *	record	 64 bytes: nonce u64, offset u64, length u32, 0 u32,
 *		 0 u64, BLAKE2b-256 of the record's first 32 bytes and its
 *		 data; then length bytes of old data
 *
 * An empty file is an inactive journal.  A record counts only if its nonce
 * is the header's and its hash matches; the first that does not ends the
 * journal: a torn append, whose blocks were not yet overwritten, because
 * every overwrite waits until its record is synced.  At most UNDO_TAIL_MAX
 * bytes are ever appended and not yet synced, so a bad record followed by
 * more than that is damage, and the journal is refused.
 */
#ifndef UNDO_H
#define UNDO_H

#include <stdint.h>

#include "gi.h"

#define UNDO_HDR	4096
#define UNDO_REC	64
#define UNDO_BLOCK	4096
#define UNDO_REC_MAX	(1024 * 1024)
#define UNDO_TAIL_MAX	(8 * (UNDO_REC + UNDO_REC_MAX))

/* what the node was before the resync began */
struct undo_state {
	uint64_t	 size;
	uint32_t	 flags;			/* META_F_* */
	uint64_t	 gi_current;
	uint64_t	 gi_history[GI_HISTORY];
};

struct undo;

/* called for each record: offset, length; return 0 or an errno */
typedef int (*undo_cb)(void *, uint64_t, uint32_t);

struct undo	*undo_open(const char *, uint64_t, char *, size_t);
void		 undo_close(struct undo *);
int		 undo_active(const struct undo *);
const struct undo_state *undo_state(const struct undo *);
uint64_t	 undo_bytes(struct undo *);
int		 undo_begin(struct undo *, const struct undo_state *);
int		 undo_save(struct undo *, int, uint64_t, uint64_t, int);
int		 undo_sync(struct undo *);
int		 undo_each(struct undo *, undo_cb, void *);
int		 undo_restore(struct undo *, int);
int		 undo_end(struct undo *);

#endif /* UNDO_H */

/* See LICENSE file for copyright and license details. */
/*
 * savefile.h: the split-brain save file.  Before anything overwrites a
 * victim's diverging blocks, they are copied here with their offsets, so
 * that nothing the victim wrote is ever lost.  The format is documented in
 * splitbrain(8); every integer is big-endian.
 *
 *	header	 64 bytes: "HTRSAVE1", version u32, block size u32,
 *		 device size u64, created (unix us) u64, generation u64,
 *		 node name 24 bytes (NUL padded)
 *	record	 offset u64, length u32, 0 u32, then length bytes of data
 *	trailer	 56 bytes: "HTRSAVEZ", records u64, data bytes u64,
 *		 BLAKE2b-256 (crypto_generichash) of everything before it
 */
#ifndef SAVEFILE_H
#define SAVEFILE_H

#include <stdint.h>
#include <stdio.h>

#include <sodium.h>

#define SAVE_HDR_SIZE		64
#define SAVE_REC_HDR_SIZE	16
#define SAVE_TRAILER_SIZE	56
#define SAVE_VERSION		1
#define SAVE_NAME_MAX		24
#define SAVE_REC_MAX		(64 * 1024 * 1024)

struct save_header {
	uint32_t	 version;
	uint32_t	 block_size;
	uint64_t	 device_size;
	uint64_t	 created;
	uint64_t	 generation;
	char		 node[SAVE_NAME_MAX + 1];
};

struct save_writer {
	FILE				*fp;
	char				*path, *tmppath;
	crypto_generichash_state	 hash;
	uint64_t			 records, bytes;
};

/* called for each record by save_read; return -1 to stop */
typedef int (*save_record_cb)(uint64_t, const void *, uint32_t, void *);

int		 save_create(struct save_writer *, const char *,
		    const struct save_header *);
int		 save_add(struct save_writer *, uint64_t, const void *,
		    uint32_t);
int		 save_commit(struct save_writer *);
void		 save_abort(struct save_writer *);
const char	*save_read(const char *, struct save_header *, uint64_t *,
		    uint64_t *, save_record_cb, void *);

#endif /* SAVEFILE_H */

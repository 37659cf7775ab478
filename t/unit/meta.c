/* See LICENSE file for copyright and license details. */
/* Unit tests for lib/meta.c: create, load, slot fallback, AL, checks. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hatrio.h"
#include "meta.h"
#include "unit.h"

static char	path[64], err[512];

static void
corrupt(off_t off)
{
	int	fd = open(path, O_WRONLY);

	if (fd == -1 || pwrite(fd, "\xff\x00\xff", 3, off) != 3)
		abort();
	close(fd);
}

static void
test_create_load(void)
{
	struct meta	*m;
	uint64_t	 gi;

	unlink(path);
	ok(meta_create(path, "node-a", 1 << 26, 64, 0, err, sizeof(err)) == 0,
	    "create");
	ok(meta_create(path, "node-a", 1 << 26, 64, 0, err, sizeof(err)) == -1,
	    "create refuses an existing file without force");
	ok(meta_create(path, "", 1 << 26, 64, 1, err, sizeof(err)) == -1,
	    "create refuses an empty node name");
	m = meta_load(path, 1, err, sizeof(err));
	ok(m != NULL, "load");
	if (m == NULL)
		return;
	is_str(m->node, "node-a", "node name");
	ok(m->size == 1 << 26 && m->nbits == 16384 && m->bm_bytes == 2048,
	    "size and bitmap geometry");
	ok(m->seq == 2 && m->slot == 1, "newest slot is B, sequence 2");
	ok(m->flags == (META_F_CONSISTENT | META_F_UPTODATE | META_F_CLEAN),
	    "flags");
	ok(m->gi_current != 0 && m->gi_history[0] == 0, "generation ids");
	ok(m->warn[0] == '\0', "no warning");
	ok(meta_check(m, path, "node-b", 1 << 26, err, sizeof(err)) == -1,
	    "another node is refused");
	ok(strstr(err, "metadata of node node-a, not of node node-b") != NULL,
	    "with a message naming both");
	ok(meta_check(m, path, "node-a", (1 << 26) - 1, err,
	    sizeof(err)) == -1, "a smaller store is refused");
	ok(meta_check(m, path, "node-a", 1 << 27, err, sizeof(err)) == 0,
	    "a larger store is fine");
	gi = m->gi_current;
	m->gi_history[1] = 42;
	ok(meta_sync(m) == 0 && m->seq == 3 && m->slot == 0,
	    "sync writes slot A, sequence 3");
	meta_free(m);
	m = meta_load(path, 0, err, sizeof(err));
	ok(m != NULL && m->seq == 3 && m->gi_history[1] == 42 &&
	    m->gi_current == gi, "reload sees the update");
	meta_free(m);
	/* Tear the newest slot (A): fall back to B. */
	corrupt(5000);
	m = meta_load(path, 0, err, sizeof(err));
	ok(m != NULL && m->seq == 2 && m->slot == 1 &&
	    m->gi_history[1] == 0, "torn newest slot: older copy used");
	ok(m != NULL && strstr(m->warn, "slot A is corrupt") != NULL,
	    "and a warning says so");
	meta_free(m);
	corrupt(META_SLOT_SIZE + 100);
	m = meta_load(path, 0, err, sizeof(err));
	ok(m == NULL && strstr(err, "both copies are corrupt") != NULL,
	    "both torn: refused");
}

static void
test_al(void)
{
	struct meta	*m;
	uint32_t	 e;
	int		 fails = 0;

	unlink(path);
	meta_create(path, "a", 1ULL << 30, 16, 0, err, sizeof(err));
	m = meta_load(path, 1, err, sizeof(err));
	ok(m != NULL && m->nextents == 256 && m->al_limit == 16, "AL geometry");
	if (m == NULL)
		return;
	for (e = 0; e < 16; e++)
		fails += meta_al_add(m, e * 3) != 0;
	ok(fails == 0 && m->al_count == 16 && m->al_gen == 16, "16 added");
	ok(meta_al_has(m, 45) && !meta_al_has(m, 46), "lookup");
	ok(meta_al_add(m, 45) == 0 && m->al_gen == 16, "hot extent: no change");
	m->ext_pinned[3] = 1;
	/* extent 0 is least recently used and not pinned: evicted */
	ok(meta_al_add(m, 100) == 0 && !meta_al_has(m, 0) &&
	    meta_al_has(m, 100) && m->al_count == 16, "LRU eviction");
	ok(meta_al_add(m, 101) == 0 && meta_al_has(m, 3) && !meta_al_has(m, 6),
	    "a pinned extent is skipped");
	for (e = 0; e < 256; e++)
		m->ext_pinned[e] = 1;
	ok(meta_al_add(m, 200) == -1, "all pinned: full");
	for (e = 0; e < 256; e++)
		m->ext_pinned[e] = 0;
	ok(meta_sync(m) == 0, "sync");
	meta_free(m);
	m = meta_load(path, 1, err, sizeof(err));
	ok(m != NULL && m->al_count == 16 && meta_al_has(m, 100) &&
	    !meta_al_has(m, 0) && m->al_unclean == 0, "AL survives a reload");
	m->flags &= ~META_F_CLEAN;
	meta_sync(m);
	meta_free(m);
	m = meta_load(path, 1, err, sizeof(err));
	ok(m != NULL && m->al_unclean == 16, "unclean: AL kept for resync");
	ok(m != NULL && meta_bm_flush(m, 1) == 0 && m->peer[1].bm_copy == 1,
	    "bitmap flush switches copies");
	m->peer[1].bm[10] = 0x0f;
	ok(meta_bm_flush(m, 1) == 0 && m->peer[1].oos_blocks == 4 &&
	    m->peer[1].bm_copy == 0, "bitmap bits are counted");
	meta_free(m);
	m = meta_load(path, 1, err, sizeof(err));
	ok(m != NULL && m->peer[1].bm[10] == 0x0f && m->peer[1].oos_blocks == 4,
	    "bitmap reloads");
	meta_free(m);
	/* Damage the committed bitmap copy (peer 1, copy 0). */
	corrupt(META_BM_OFF + 2 * 32768 + 5);	/* stride: 1 GiB / 4 KiB / 8 */
	m = meta_load(path, 1, err, sizeof(err));
	ok(m != NULL && m->peer[1].oos_blocks == m->nbits &&
	    m->peer[0].oos_blocks == 0, "damaged bitmap: all out of sync");
	ok(m != NULL && strstr(m->warn, "bitmap of peer slot 1 is corrupt") !=
	    NULL, "and a warning says so");
	meta_free(m);
	unlink(path);
}

int
main(void)
{
	snprintf(path, sizeof(path), "/tmp/unit-meta.%d", (int)getpid());
	test_create_load();
	test_al();
	unlink(path);
	return done_testing();
}

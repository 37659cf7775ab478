/* See LICENSE file for copyright and license details. */
/*
 * meta.c: blkmirror's metadata: node, size, generation identifiers,
 * per-peer dirty bitmaps and the activity log, written crash-safely in two
 * alternating slots (see meta.h for the layout).
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "hatrio.h"
#include "meta.h"

/* header offsets inside a slot */
#define H_MAGIC		0
#define H_VERSION	8
#define H_SLOTSIZE	12
#define H_HASH		16
#define H_SEQ		48
#define H_FLAGS		56
#define H_NODEID	60
#define H_NODE		64
#define H_SIZE		128
#define H_BLOCK		136
#define H_ALEXT		140
#define H_ALLIMIT	144
#define H_ALCOUNT	148
#define H_GI		152
#define H_GIHIST	160
#define H_BMBYTES	176
#define H_PROMOTED	184
#define H_PEERS		256
#define H_PEERSIZE	256
#define P_NAME		0
#define P_NODEID	64
#define P_INUSE		68
#define P_BMGI		72
#define P_BMCOPY	80
#define P_BMSEQ		88
#define P_OOS		96
#define P_HASH		104
#define H_AL		4096

static void
slot_hash(const unsigned char *slot, unsigned char *out)
{
	crypto_generichash(out, META_HASH_BYTES, slot + H_SEQ,
	    META_SLOT_SIZE - H_SEQ, NULL, 0);
}

uint64_t
meta_random_gi(void)
{
	uint64_t	v;

	do
		randombytes_buf(&v, sizeof(v));
	while (v == 0);
	return v | 1;	/* bit 0 set: never equal to a "none" GI */
}

static int
full_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	const unsigned char	*p = buf;
	ssize_t			 n;

	while (len > 0) {
		n = pwrite(fd, p, len, off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		p += n;
		len -= n;
		off += n;
	}
	return 0;
}

static int
full_pread(int fd, void *buf, size_t len, uint64_t off)
{
	unsigned char	*p = buf;
	ssize_t		 n;

	while (len > 0) {
		n = pread(fd, p, len, off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		if (n == 0) {
			memset(p, 0, len);	/* short file: zeroes */
			return 1;
		}
		p += n;
		len -= n;
		off += n;
	}
	return 0;
}

static void
meta_geometry(struct meta *m)
{
	m->nbits = (m->size + META_BLOCK - 1) / META_BLOCK;
	m->bm_bytes = (m->nbits + 7) / 8;
	m->bm_stride = (m->bm_bytes + 4095) / 4096 * 4096;
	m->nextents = (m->size + META_AL_EXTENT - 1) / META_AL_EXTENT;
}

static uint64_t
bm_offset(struct meta *m, int peer, int copy)
{
	return META_BM_OFF + (uint64_t)(2 * peer + copy) * m->bm_stride;
}

/* Allocate the in-memory parts that follow from the size. */
static int
meta_alloc(struct meta *m)
{
	uint32_t	i;
	int		p;

	meta_geometry(m);
	for (p = 0; p < META_PEERS; p++)
		if ((m->peer[p].bm = calloc(1, m->bm_bytes + 1)) == NULL)
			return -1;
	m->ext_slot = calloc(m->nextents + 1, sizeof(*m->ext_slot));
	m->ext_used = calloc(m->nextents + 1, sizeof(*m->ext_used));
	m->ext_pinned = calloc(m->nextents + 1, sizeof(*m->ext_pinned));
	m->ext_gen = calloc(m->nextents + 1, sizeof(*m->ext_gen));
	m->al_crashed = calloc(META_AL_CAP, sizeof(*m->al_crashed));
	if (m->ext_slot == NULL || m->ext_used == NULL ||
	    m->ext_pinned == NULL || m->ext_gen == NULL ||
	    m->al_crashed == NULL)
		return -1;
	for (i = 0; i < m->nextents; i++)
		m->ext_slot[i] = -1;
	return 0;
}

void
meta_free(struct meta *m)
{
	int	p;

	if (m == NULL)
		return;
	if (m->fd != -1)
		close(m->fd);
	for (p = 0; p < META_PEERS; p++)
		free(m->peer[p].bm);
	free(m->ext_slot);
	free(m->ext_used);
	free(m->ext_pinned);
	free(m->ext_gen);
	free(m->al_crashed);
	free(m->path);
	free(m);
}

/*
 * meta_encode: the next slot image (sequence seq + 1) into buf, which holds
 * META_SLOT_SIZE bytes, and the file offset it goes to.
 */
void
meta_encode(struct meta *m, unsigned char *buf, uint64_t *off)
{
	unsigned char	*pp;
	uint32_t	 i;
	int		 p;

	memset(buf, 0, META_SLOT_SIZE);
	memcpy(buf + H_MAGIC, META_MAGIC, 8);
	put_le32(buf + H_VERSION, META_VERSION);
	put_le32(buf + H_SLOTSIZE, META_SLOT_SIZE);
	put_le64(buf + H_SEQ, m->seq + 1);
	put_le32(buf + H_FLAGS, m->flags);
	put_le32(buf + H_NODEID, m->node_id);
	memcpy(buf + H_NODE, m->node, strlen(m->node));
	put_le64(buf + H_SIZE, m->size);
	put_le32(buf + H_BLOCK, m->block_size);
	put_le32(buf + H_ALEXT, m->al_extent_size);
	put_le32(buf + H_ALLIMIT, m->al_limit);
	put_le32(buf + H_ALCOUNT, m->al_count);
	put_le64(buf + H_GI, m->gi_current);
	put_le64(buf + H_GIHIST, m->gi_history[0]);
	put_le64(buf + H_GIHIST + 8, m->gi_history[1]);
	put_le64(buf + H_BMBYTES, m->bm_bytes);
	put_le64(buf + H_PROMOTED, m->promoted_at);
	for (p = 0; p < META_PEERS; p++) {
		pp = buf + H_PEERS + p * H_PEERSIZE;
		memcpy(pp + P_NAME, m->peer[p].name, strlen(m->peer[p].name));
		put_le32(pp + P_NODEID, m->peer[p].node_id);
		put_le32(pp + P_INUSE, m->peer[p].in_use);
		put_le64(pp + P_BMGI, m->peer[p].bitmap_gi);
		put_le32(pp + P_BMCOPY, m->peer[p].bm_copy);
		put_le64(pp + P_BMSEQ, m->peer[p].bm_seq);
		put_le64(pp + P_OOS, m->peer[p].oos_blocks);
		memcpy(pp + P_HASH, m->peer[p].bm_hash, META_HASH_BYTES);
	}
	for (i = 0; i < m->al_count; i++)
		put_le32(buf + H_AL + 4 * i, m->al[i]);
	slot_hash(buf, buf + H_HASH);
	*off = (uint64_t)(m->slot ^ 1) * META_SLOT_SIZE;
}

/* meta_write: put one encoded slot on disk; safe in any thread. */
int
meta_write(int fd, const unsigned char *buf, uint64_t off)
{
	if (full_pwrite(fd, buf, META_SLOT_SIZE, off) == -1)
		return -1;
	return fdatasync(fd);
}

/* meta_written: the slot from the last meta_encode is on disk. */
void
meta_written(struct meta *m)
{
	m->seq++;
	m->slot ^= 1;
}

int
meta_sync(struct meta *m)
{
	unsigned char	*buf;
	uint64_t	 off;
	int		 rv;

	if ((buf = malloc(META_SLOT_SIZE)) == NULL)
		return -1;
	meta_encode(m, buf, &off);
	rv = meta_write(m->fd, buf, off);
	if (rv == 0)
		meta_written(m);
	free(buf);
	return rv;
}

/* meta_bm_count: count the bits set in peer p's bitmap. */
void
meta_bm_count(struct meta *m, int p)
{
	uint64_t	n = 0;
	size_t		i;

	for (i = 0; i < m->bm_bytes; i++)
		n += __builtin_popcount(m->peer[p].bm[i]);
	m->peer[p].oos_blocks = n;
}

/*
 * meta_bm_flush: write peer p's bitmap to its other copy, sync, then
 * commit a header that names it.  Synchronous: callers in the event loop
 * run it from the I/O pool.
 */
int
meta_bm_flush(struct meta *m, int p)
{
	struct meta_peer	*mp = &m->peer[p];
	uint32_t		 copy = mp->bm_copy ^ 1;

	if (full_pwrite(m->fd, mp->bm, m->bm_bytes, bm_offset(m, p, copy))
	    == -1 || fdatasync(m->fd) == -1)
		return -1;
	crypto_generichash(mp->bm_hash, META_HASH_BYTES, mp->bm, m->bm_bytes,
	    NULL, 0);
	mp->bm_copy = copy;
	mp->bm_seq++;
	meta_bm_count(m, p);
	mp->bm_dirty = 0;
	return meta_sync(m);
}

/*
 * meta_bm_stage: in the loop, copy peer p's bitmap to snap and make the
 * header name the other copy; the caller writes snap there with
 * meta_pwrite() (in a worker), syncs, and then writes the header.
 */
uint64_t
meta_bm_stage(struct meta *m, int p, unsigned char *snap)
{
	struct meta_peer	*mp = &m->peer[p];

	memcpy(snap, mp->bm, m->bm_bytes);
	crypto_generichash(mp->bm_hash, META_HASH_BYTES, snap, m->bm_bytes,
	    NULL, 0);
	mp->bm_copy ^= 1;
	mp->bm_seq++;
	meta_bm_count(m, p);
	mp->bm_dirty = 0;
	return bm_offset(m, p, mp->bm_copy);
}

int
meta_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	return full_pwrite(fd, buf, len, off);
}

/* meta_peer_slot: the slot of peer name, taking a free one if new. */
int
meta_peer_slot(struct meta *m, const char *name)
{
	int	p;

	if (strlen(name) == 0 || strlen(name) > META_NAME_MAX)
		return -1;
	for (p = 0; p < META_PEERS; p++)
		if (m->peer[p].in_use && strcmp(m->peer[p].name, name) == 0)
			return p;
	for (p = 0; p < META_PEERS; p++)
		if (!m->peer[p].in_use) {
			snprintf(m->peer[p].name, sizeof(m->peer[p].name),
			    "%s", name);
			m->peer[p].in_use = 1;
			m->peer[p].node_id = p + 1;
			return p;
		}
	return -1;
}

/*
 * meta_decode: check one slot image and fill m from it.  Returns 0, or -1
 * with the reason in err; -2 for a version we do not know.
 */
int
meta_decode(struct meta *m, const unsigned char *buf, char *err,
    size_t errlen)
{
	unsigned char	 h[META_HASH_BYTES];
	const unsigned char *pp;
	uint32_t	 v, i;
	int		 p;

	if (memcmp(buf + H_MAGIC, META_MAGIC, 8) != 0) {
		snprintf(err, errlen, "bad magic");
		return -1;
	}
	if ((v = get_le32(buf + H_VERSION)) != META_VERSION) {
		snprintf(err, errlen, "unsupported metadata version %" PRIu32
		    " (this blkmirror knows version %d)", v, META_VERSION);
		return -2;
	}
	slot_hash(buf, h);
	if (get_le32(buf + H_SLOTSIZE) != META_SLOT_SIZE ||
	    sodium_memcmp(h, buf + H_HASH, META_HASH_BYTES) != 0) {
		snprintf(err, errlen, "checksum mismatch");
		return -1;
	}
	m->seq = get_le64(buf + H_SEQ);
	m->flags = get_le32(buf + H_FLAGS);
	m->node_id = get_le32(buf + H_NODEID);
	memcpy(m->node, buf + H_NODE, META_NAME_MAX);
	m->node[META_NAME_MAX] = '\0';
	m->size = get_le64(buf + H_SIZE);
	m->block_size = get_le32(buf + H_BLOCK);
	m->al_extent_size = get_le32(buf + H_ALEXT);
	m->al_limit = get_le32(buf + H_ALLIMIT);
	m->al_count = get_le32(buf + H_ALCOUNT);
	m->gi_current = get_le64(buf + H_GI);
	m->gi_history[0] = get_le64(buf + H_GIHIST);
	m->gi_history[1] = get_le64(buf + H_GIHIST + 8);
	m->promoted_at = get_le64(buf + H_PROMOTED);
	meta_geometry(m);
	if (m->size == 0 || m->block_size != META_BLOCK ||
	    m->al_extent_size != META_AL_EXTENT ||
	    m->al_limit < META_AL_MIN || m->al_limit > META_AL_CAP ||
	    m->al_count > m->al_limit || m->node[0] == '\0' ||
	    get_le64(buf + H_BMBYTES) != m->bm_bytes) {
		snprintf(err, errlen, "inconsistent header");
		return -1;
	}
	for (p = 0; p < META_PEERS; p++) {
		pp = buf + H_PEERS + p * H_PEERSIZE;
		memcpy(m->peer[p].name, pp + P_NAME, META_NAME_MAX);
		m->peer[p].name[META_NAME_MAX] = '\0';
		m->peer[p].node_id = get_le32(pp + P_NODEID);
		m->peer[p].in_use = get_le32(pp + P_INUSE);
		m->peer[p].bitmap_gi = get_le64(pp + P_BMGI);
		m->peer[p].bm_copy = get_le32(pp + P_BMCOPY) & 1;
		m->peer[p].bm_seq = get_le64(pp + P_BMSEQ);
		m->peer[p].oos_blocks = get_le64(pp + P_OOS);
		memcpy(m->peer[p].bm_hash, pp + P_HASH, META_HASH_BYTES);
	}
	for (i = 0; i < m->al_count; i++) {
		m->al[i] = get_le32(buf + H_AL + 4 * i);
		if (m->al[i] >= m->nextents) {
			snprintf(err, errlen,
			    "activity log extent out of range");
			return -1;
		}
	}
	return 0;
}

static void
meta_empty(struct meta *m)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
}

int
meta_create(const char *path, const char *node, uint64_t size,
    uint32_t al_limit, int force, char *err, size_t errlen)
{
	struct meta	*m;
	unsigned char	*buf = NULL;
	uint64_t	 off;
	int		 fd, p, rv = -1;

	if (strlen(node) == 0 || strlen(node) > META_NAME_MAX) {
		snprintf(err, errlen, "node name must have 1 to %d characters",
		    META_NAME_MAX);
		return -1;
	}
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC |
	    (force ? O_TRUNC : O_EXCL), 0600)) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if ((m = calloc(1, sizeof(*m))) == NULL)
		goto fail;
	meta_empty(m);
	m->fd = fd;
	snprintf(m->node, sizeof(m->node), "%s", node);
	m->size = size;
	m->block_size = META_BLOCK;
	m->al_extent_size = META_AL_EXTENT;
	m->al_limit = al_limit;
	m->flags = META_F_CONSISTENT | META_F_UPTODATE | META_F_CLEAN;
	m->gi_current = meta_random_gi();
	m->slot = 1;	/* so that the first write goes to A */
	if (meta_alloc(m) == -1)
		goto fail;
	for (p = 0; p < META_PEERS; p++)
		crypto_generichash(m->peer[p].bm_hash, META_HASH_BYTES,
		    m->peer[p].bm, m->bm_bytes, NULL, 0);
	if (ftruncate(fd, bm_offset(m, META_PEERS, 0)) == -1)
		goto fail;
	if ((buf = malloc(META_SLOT_SIZE)) == NULL)
		goto fail;
	/* Both slots valid from the start: A with seq 1, B with seq 2. */
	meta_encode(m, buf, &off);
	if (meta_write(fd, buf, off) == -1)
		goto fail;
	meta_written(m);
	meta_encode(m, buf, &off);
	if (meta_write(fd, buf, off) == -1)
		goto fail;
	rv = 0;
 fail:
	if (rv == -1)
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
	free(buf);
	if (m != NULL)
		meta_free(m);	/* closes fd */
	else
		close(fd);
	return rv;
}

/* Load one peer's bitmap and check it against the committed hash. */
static void
meta_load_bitmap(struct meta *m, int p)
{
	struct meta_peer	*mp = &m->peer[p];
	unsigned char		 h[META_HASH_BYTES];

	if (full_pread(m->fd, mp->bm, m->bm_bytes,
	    bm_offset(m, p, mp->bm_copy)) == -1)
		memset(h, 0, sizeof(h));
	else
		crypto_generichash(h, META_HASH_BYTES, mp->bm, m->bm_bytes,
		    NULL, 0);
	if (sodium_memcmp(h, mp->bm_hash, META_HASH_BYTES) != 0) {
		/* Unknown differences: everything is out of sync. */
		memset(mp->bm, 0xff, m->bm_bytes);
		mp->bm_dirty = 1;
		snprintf(m->warn, sizeof(m->warn), "bitmap of peer slot %d "
		    "is corrupt: marked fully out of sync", p);
	}
	meta_bm_count(m, p);
}

struct meta *
meta_load(const char *path, int rdwr, char *err, size_t errlen)
{
	struct meta	*m, tmp[2];
	unsigned char	*buf;
	char		 why[2][160];
	int		 rv[2], s, best, fd, p;
	uint32_t	 i;

	if ((fd = open(path, (rdwr ? O_RDWR : O_RDONLY) | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if ((buf = malloc(META_SLOT_SIZE)) == NULL ||
	    (m = calloc(1, sizeof(*m))) == NULL) {
		snprintf(err, errlen, "%s", strerror(errno));
		free(buf);
		close(fd);
		return NULL;
	}
	for (s = 0; s < 2; s++) {
		meta_empty(&tmp[s]);
		if (full_pread(fd, buf, META_SLOT_SIZE,
		    (uint64_t)s * META_SLOT_SIZE) == -1) {
			snprintf(why[s], sizeof(why[s]), "%s", strerror(errno));
			rv[s] = -1;
			continue;
		}
		rv[s] = meta_decode(&tmp[s], buf, why[s], sizeof(why[s]));
	}
	free(buf);
	if (rv[0] == -2 || rv[1] == -2) {
		snprintf(err, errlen, "%s: %s", path, why[rv[0] == -2 ? 0 : 1]);
		goto fail;
	}
	if (rv[0] != 0 && rv[1] != 0) {
		snprintf(err, errlen, "%s: not blkmirror metadata, or both "
		    "copies are corrupt (slot A: %s; slot B: %s)", path,
		    why[0], why[1]);
		goto fail;
	}
	if (rv[0] == 0 && rv[1] == 0)
		best = tmp[1].seq > tmp[0].seq;
	else
		best = rv[0] == 0 ? 0 : 1;
	*m = tmp[best];
	m->slot = best;
	m->fd = fd;
	if (rv[best ^ 1] != 0)
		snprintf(m->warn, sizeof(m->warn), "metadata slot %c is "
		    "corrupt (%s); using slot %c, sequence %" PRIu64,
		    "AB"[best ^ 1], why[best ^ 1], "AB"[best], m->seq);
	if ((m->path = strdup(path)) == NULL || meta_alloc(m) == -1) {
		snprintf(err, errlen, "%s", strerror(errno));
		meta_free(m);
		return NULL;
	}
	for (p = 0; p < META_PEERS; p++)
		meta_load_bitmap(m, p);
	for (i = 0; i < m->al_count; i++) {
		m->ext_slot[m->al[i]] = i;
		m->ext_used[m->al[i]] = ++m->al_clock;
	}
	if (!(m->flags & META_F_CLEAN)) {
		m->al_unclean = m->al_count;
		memcpy(m->al_crashed, m->al, m->al_count * sizeof(m->al[0]));
	}
	return m;
 fail:
	free(m);
	close(fd);
	return NULL;
}

int
meta_check(struct meta *m, const char *metapath, const char *node,
    uint64_t devsize, char *err, size_t errlen)
{
	if (node != NULL && strcmp(node, m->node) != 0) {
		snprintf(err, errlen, "%s: metadata of node %s, not of node %s",
		    metapath, m->node, node);
		return -1;
	}
	if (devsize < m->size) {
		snprintf(err, errlen, "backing store has %" PRIu64 " bytes, "
		    "fewer than the %" PRIu64 " bytes of metadata %s", devsize,
		    m->size, metapath);
		return -1;
	}
	return 0;
}

int
meta_al_has(struct meta *m, uint32_t ext)
{
	return m->ext_slot[ext] != -1;
}

/*
 * meta_al_add: make ext active, evicting the least recently used extent
 * that has no write in flight when the log is full.  The caller persists
 * the log (meta_encode/write) before writing to ext.  Returns -1 when
 * every active extent is busy.
 */
int
meta_al_add(struct meta *m, uint32_t ext)
{
	uint32_t	i, victim = UINT32_MAX;
	uint64_t	oldest = UINT64_MAX;

	if (m->ext_slot[ext] != -1) {
		m->ext_used[ext] = ++m->al_clock;
		return 0;
	}
	if (m->al_count < m->al_limit) {
		i = m->al_count++;
	} else {
		for (i = 0; i < m->al_count; i++) {
			uint32_t e = m->al[i];
			if (m->ext_pinned[e] == 0 && m->ext_used[e] < oldest) {
				oldest = m->ext_used[e];
				victim = i;
			}
		}
		if (victim == UINT32_MAX)
			return -1;
		i = victim;
		m->ext_slot[m->al[i]] = -1;
	}
	m->al[i] = ext;
	m->ext_slot[ext] = i;
	m->ext_used[ext] = ++m->al_clock;
	m->ext_gen[ext] = ++m->al_gen;
	return 0;
}

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t	x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Append the sorted list of AL extents to line. */
static void
fmt_extents(const uint32_t *al, uint32_t n, char *line, size_t len)
{
	uint32_t	*s, i;
	size_t		 o = strlen(line);

	if ((s = malloc((n + 1) * sizeof(*s))) == NULL)
		return;
	memcpy(s, al, n * sizeof(*s));
	qsort(s, n, sizeof(*s), cmp_u32);
	for (i = 0; i < n && o + 12 < len; i++)
		o += snprintf(line + o, len - o, "%s%" PRIu32, i ? "," : "",
		    s[i]);
	free(s);
}

/* meta_dump: key=value lines, one per call of out. */
void
meta_dump(struct meta *m, void (*out)(void *, const char *), void *arg)
{
	char	*line;
	size_t	 len = 16 * META_AL_CAP;
	int	 p;

	if ((line = malloc(len)) == NULL)
		return;
#define OUT(...) do { snprintf(line, len, __VA_ARGS__); out(arg, line); } \
    while (0)
	OUT("version=%d", META_VERSION);
	OUT("node=%s", m->node);
	OUT("node_id=%" PRIu32, m->node_id);
	OUT("size=%" PRIu64, m->size);
	OUT("block_size=%" PRIu32, m->block_size);
	OUT("blocks=%" PRIu64, m->nbits);
	OUT("seq=%" PRIu64, m->seq);
	OUT("slot=%c", "AB"[m->slot]);
	OUT("consistent=%d", !!(m->flags & META_F_CONSISTENT));
	OUT("uptodate=%d", !!(m->flags & META_F_UPTODATE));
	OUT("clean=%d", !!(m->flags & META_F_CLEAN));
	OUT("role=%s", m->flags & META_F_PRIMARY ? "primary" : "secondary");
	OUT("gi_current=%016" PRIx64, m->gi_current);
	OUT("gi_history=%016" PRIx64 ",%016" PRIx64, m->gi_history[0],
	    m->gi_history[1]);
	OUT("promoted_at=%" PRIu64, m->promoted_at);
	OUT("al_extent_size=%" PRIu32, m->al_extent_size);
	OUT("al_limit=%" PRIu32, m->al_limit);
	OUT("al_count=%" PRIu32, m->al_count);
	snprintf(line, len, "al_extents=");
	fmt_extents(m->al, m->al_count, line, len);
	out(arg, line);
	snprintf(line, len, "resync_extents=");
	if (!(m->flags & META_F_CLEAN))
		fmt_extents(m->al, m->al_count, line, len);
	out(arg, line);
	OUT("peer_slots=%d", META_PEERS);
	for (p = 0; p < META_PEERS; p++) {
		struct meta_peer *mp = &m->peer[p];
		if (!mp->in_use)
			continue;
		OUT("peer.%s.node_id=%" PRIu32, mp->name, mp->node_id);
		OUT("peer.%s.bitmap_gi=%016" PRIx64, mp->name, mp->bitmap_gi);
		OUT("peer.%s.oos_bytes=%" PRIu64, mp->name,
		    mp->oos_blocks * META_BLOCK);
	}
#undef OUT
	free(line);
}

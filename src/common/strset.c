#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "strset.h"

char lahja_strmap_tomb;

/*
 * Eight bytes at a time, each word mixed in with a multiply and a
 * shift (the finalizer of MurmurHash3's 64-bit variant): type names are
 * hashed once per broadcast, so this is on the hot path.
 */
static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

uint64_t lahja_strmap_hash(const char *s, size_t len)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ len;
    uint64_t w;
    for (; len >= 8; s += 8, len -= 8) {
        memcpy(&w, s, 8);
        h = mix(h ^ w) * 0xc4ceb9fe1a85ec53ull;
    }
    w = 0;
    memcpy(&w, s, len);
    return mix(h ^ w);
}

void lahja_strmap_init(lahja_strmap_t *m)
{
    memset(m, 0, sizeof *m);
}

void lahja_strmap_free(lahja_strmap_t *m)
{
    for (size_t i = 0; i < m->nslots; i++)
        if (lahja_strmap_live(&m->slots[i]))
            free(m->slots[i].key);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* The slot holding the key, or else the first free one met (a tombstone
 * if any came first, else the empty slot that ended the probe). */
static lahja_strmap_slot_t *probe(const lahja_strmap_t *m, const char *key, size_t len,
                                  uint64_t h, int *found)
{
    size_t mask = m->nslots - 1;
    lahja_strmap_slot_t *free_slot = NULL;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        lahja_strmap_slot_t *s = &m->slots[i];
        if (s->key == NULL) {
            *found = 0;
            return free_slot != NULL ? free_slot : s;
        }
        if (s->key == LAHJA_STRMAP_TOMB) {
            if (free_slot == NULL)
                free_slot = s;
        } else if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0) {
            *found = 1;
            return s;
        }
    }
}

lahja_strmap_slot_t *lahja_strmap_find_h(const lahja_strmap_t *m, const char *key, size_t len,
                                         uint64_t hash)
{
    if (m->count == 0)
        return NULL;
    int found;
    lahja_strmap_slot_t *s = probe(m, key, len, hash, &found);
    return found ? s : NULL;
}

lahja_strmap_slot_t *lahja_strmap_find(const lahja_strmap_t *m, const char *key, size_t len)
{
    if (m->count == 0)
        return NULL;
    return lahja_strmap_find_h(m, key, len, lahja_strmap_hash(key, len));
}

static int grow(lahja_strmap_t *m)
{
    size_t n = m->nslots ? m->nslots * 2 : 16;
    if (m->count * 10 < m->nslots * 4)
        n = m->nslots; /* mostly tombstones: rehash in place size */
    lahja_strmap_slot_t *slots = calloc(n, sizeof *slots);
    if (slots == NULL)
        return -ENOMEM;
    lahja_strmap_t fresh = { slots, n, 0, 0 };
    for (size_t i = 0; i < m->nslots; i++) {
        lahja_strmap_slot_t *s = &m->slots[i];
        if (!lahja_strmap_live(s))
            continue;
        int found;
        lahja_strmap_slot_t *d = probe(&fresh, s->key, s->len, s->hash, &found);
        *d = *s;
        fresh.count++;
        fresh.used++;
    }
    free(m->slots);
    *m = fresh;
    return 0;
}

lahja_strmap_slot_t *lahja_strmap_insert(lahja_strmap_t *m, const char *key, size_t len,
                                         int *is_new)
{
    return lahja_strmap_insert_h(m, key, len, lahja_strmap_hash(key, len), is_new);
}

lahja_strmap_slot_t *lahja_strmap_insert_h(lahja_strmap_t *m, const char *key, size_t len,
                                           uint64_t h, int *is_new)
{
    if ((m->used + 1) * 10 > m->nslots * 7 && grow(m) != 0)
        return NULL;
    int found;
    lahja_strmap_slot_t *s = probe(m, key, len, h, &found);
    *is_new = !found;
    if (found)
        return s;
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, key, len);
    copy[len] = '\0';
    if (s->key == NULL)
        m->used++;
    *s = (lahja_strmap_slot_t){ copy, len, h, NULL };
    m->count++;
    return s;
}

void lahja_strmap_remove(lahja_strmap_t *m, lahja_strmap_slot_t *slot)
{
    free(slot->key);
    slot->key = LAHJA_STRMAP_TOMB;
    slot->value = NULL;
    m->count--;
}

/*
 * A map from strings to pointers: open addressing, linear probing,
 * FNV-1a, grown at 70% load.  Keys are copied; removal leaves a
 * tombstone.  Used for the types an endpoint subscribes to and the types
 * each peer subscribes to.
 */
#ifndef LAHJA_STRSET_H
#define LAHJA_STRSET_H

#include <stddef.h>
#include <stdint.h>

/* Internal: never exported from the shared library. */
#pragma GCC visibility push(hidden)

typedef struct lahja_strmap_slot {
    char *key;      /* NULL: empty; LAHJA_STRMAP_TOMB: removed */
    size_t len;
    uint64_t hash;
    void *value;
} lahja_strmap_slot_t;

typedef struct lahja_strmap {
    lahja_strmap_slot_t *slots;
    size_t nslots;  /* 0 or a power of two */
    size_t count;   /* live keys */
    size_t used;    /* live keys and tombstones */
} lahja_strmap_t;

extern char lahja_strmap_tomb;
#define LAHJA_STRMAP_TOMB (&lahja_strmap_tomb)

void lahja_strmap_init(lahja_strmap_t *m);

/* Frees the table and its key copies (not the values).  Accepts a
 * zeroed map. */
void lahja_strmap_free(lahja_strmap_t *m);

/* The hash the map uses for key[0..len): computed once, it can be given
 * to the _h variants for every map the same key is looked up in. */
uint64_t lahja_strmap_hash(const char *key, size_t len);

/* The slot of key[0..len), or NULL. */
lahja_strmap_slot_t *lahja_strmap_find(const lahja_strmap_t *m, const char *key, size_t len);
/* The same, with the key's lahja_strmap_hash. */
lahja_strmap_slot_t *lahja_strmap_find_h(const lahja_strmap_t *m, const char *key, size_t len,
                                         uint64_t hash);

/*
 * The slot of key[0..len), inserted (value NULL, key copied and
 * NUL-terminated) if absent; *is_new tells which.  NULL on -ENOMEM.
 * Slot pointers are valid until the next insertion.
 */
lahja_strmap_slot_t *lahja_strmap_insert(lahja_strmap_t *m, const char *key, size_t len,
                                         int *is_new);
/* The same, with the key's lahja_strmap_hash. */
lahja_strmap_slot_t *lahja_strmap_insert_h(lahja_strmap_t *m, const char *key, size_t len,
                                           uint64_t hash, int *is_new);

/* Removes a slot found by find/insert. */
void lahja_strmap_remove(lahja_strmap_t *m, lahja_strmap_slot_t *slot);

/* Iteration: for (i = 0; i < m->nslots; i++) if (lahja_strmap_live(&m->slots[i])) ... */
static inline int lahja_strmap_live(const lahja_strmap_slot_t *s)
{
    return s->key != NULL && s->key != LAHJA_STRMAP_TOMB;
}

#pragma GCC visibility pop

#endif /* LAHJA_STRSET_H */

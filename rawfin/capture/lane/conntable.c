/* rawfin._engine, part conntable (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ the connection table */

/* eight bytes a step (a multiply and a shift to mix each in), the tail byte by byte, then a final mix: a key is
   48 bytes, hashed once per segment. Only where a connection sits in the table depends on it (every walk over the
   table that shows in the output sorts by connection id, finish_all) */
static inline uint64_t hash_word(uint64_t h, uint64_t w) {
    h = (h ^ w) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

static inline uint32_t hash_end(uint64_t h) {
    h ^= h >> 32;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    return (uint32_t)h;
}

static inline uint32_t hash_key(const uint8_t *k, int n) {
    uint64_t h = 0x243F6A8885A308D3ull ^ (uint64_t)n;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, k + i, 8);
        h = hash_word(h, w);
    }
    for (; i < n; i++) h = (h ^ k[i]) * 0x100000001B3ull;
    return hash_end(h);
}

static inline uint64_t load64(const uint8_t *p) { uint64_t w; memcpy(&w, p, 8); return w; }
static inline uint16_t swap16(uint16_t v) { return (uint16_t)(v << 8 | v >> 8); }

/* canonical key of (fam, a:pa, b:pb, VLAN ids): the smaller (addr, port) first, into key; its hash (hash_key(key,
   KEYLEN)) into *hash; returns 1 if swapped. The key is made in six words and stored a word at a time, and hashed from
   those words: read back at once byte-stored, it cost a stalled load per word (store forwarding) on every segment */
static int make_key(uint8_t *key, int fam, const uint8_t *a, uint16_t pa, const uint8_t *b, uint16_t pb,
                    int nvlan, const uint16_t *vlan, uint32_t *hash) {
    int c;
    uint32_t wa = 0, wb = 0;
    if (fam == 4) {                 /* (an IPv4 address: its four bytes compared as one big-endian number) */
        memcpy(&wa, a, 4);
        memcpy(&wb, b, 4);
        uint32_t ha = __builtin_bswap32(wa), hb = __builtin_bswap32(wb);
        c = (ha > hb) - (ha < hb);
    } else c = memcmp(a, b, 16);
    int swap = c > 0 || (c == 0 && pa > pb);
    uint16_t px = swap ? pb : pa, py = swap ? pa : pb;
    uint64_t xa, xb, ya, yb;        /* the addresses' bytes 0-7 and 8-15, as words (an IPv4 address: 0-3) */
    if (fam == 4) { xa = swap ? wb : wa; ya = swap ? wa : wb; xb = yb = 0; }
    else {
        const uint8_t *x = swap ? b : a, *y = swap ? a : b;
        xa = load64(x); xb = load64(x + 8);
        ya = load64(y); yb = load64(y + 8);
    }
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* bytes: 0 family, 1-16 the first address, 17-32 the second, 33-36 the ports (big-endian), 37 the VLAN count,
       38.. the VLAN ids (big-endian); the rest 0 */
    uint64_t w[6];
    w[0] = (uint64_t)(uint8_t)fam | xa << 8;
    w[1] = xa >> 56 | xb << 8;
    w[2] = xb >> 56 | ya << 8;
    w[3] = ya >> 56 | yb << 8;
    w[4] = yb >> 56 | (uint64_t)swap16(px) << 8 | (uint64_t)swap16(py) << 24 | (uint64_t)(uint8_t)nvlan << 40
         | (nvlan > 0 ? (uint64_t)swap16(vlan[0]) << 48 : 0);
    w[5] = nvlan > 1 ? (uint64_t)swap16(vlan[1]) : 0;
    _Static_assert(KEYLEN == 48 && KEY4 == 37 && MAXVLAN == 2, "make_key: the key's layout in six words");
    uint64_t h = 0x243F6A8885A308D3ull ^ (uint64_t)KEYLEN;
    for (int i = 0; i < 6; i++) {
        memcpy(key + 8 * i, &w[i], 8);
        h = hash_word(h, w[i]);
    }
    *hash = hash_end(h);
#else
    uint8_t xs[16], ys[16];
    memcpy(xs, &xa, 8); memcpy(xs + 8, &xb, 8);
    memcpy(ys, &ya, 8); memcpy(ys + 8, &yb, 8);
    memset(key, 0, KEYLEN);
    key[0] = (uint8_t)fam;
    memcpy(key + 1, xs, fam == 4 ? 4 : 16);
    memcpy(key + 17, ys, fam == 4 ? 4 : 16);
    key[33] = (uint8_t)(px >> 8); key[34] = (uint8_t)px;
    key[35] = (uint8_t)(py >> 8); key[36] = (uint8_t)py;
    key[KEY4] = (uint8_t)nvlan;
    for (int i = 0; i < nvlan; i++) { key[KEY4 + 1 + 2 * i] = (uint8_t)(vlan[i] >> 8); key[KEY4 + 2 + 2 * i] = (uint8_t)vlan[i]; }
    *hash = hash_key(key, KEYLEN);
#endif
    return swap;
}

static inline int key_eq(const uint8_t *a, const uint8_t *b) {
    /* a word at a time, as make_key stores a key: the loads of a key just stored come from the stores themselves
       (a wider load across two of them would wait for both to reach the cache) */
    for (int i = 0; i < KEYLEN; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y) return 0;
    }
    return 1;
}
_Static_assert(KEYLEN % 8 == 0, "key_eq: eight bytes a step");

static conn_t *table_get(Engine *e, const uint8_t *key, uint32_t h) {
    for (conn_t *c = e->buckets[h & (e->nbuckets - 1)]; c; c = c->next)
        if (c->hash == h && key_eq(c->key, key)) return c;
    return NULL;
}

static int table_grow(Engine *e) {
    uint32_t nb = e->nbuckets * 2;
    conn_t **b = calloc(nb, sizeof(conn_t *));
    if (!b) { PyErr_NoMemory(); return -1; }
    for (uint32_t i = 0; i < e->nbuckets; i++) {
        conn_t *c = e->buckets[i];
        while (c) {
            conn_t *nx = c->next;
            c->next = b[c->hash & (nb - 1)];
            b[c->hash & (nb - 1)] = c;
            c = nx;
        }
    }
    free(e->buckets);
    e->buckets = b;
    e->nbuckets = nb;
    return 0;
}

static int table_put(Engine *e, conn_t *c) {
    if (e->nconns + 1 > e->nbuckets && table_grow(e) < 0) return -1;
    uint32_t i = c->hash & (e->nbuckets - 1);
    c->next = e->buckets[i];
    e->buckets[i] = c;
    e->table_gen++;
    e->nconns++;
    if (c->python) e->nmarkers++; else e->nlane++;
    return 0;
}

/* the list by age (age_t): with --max-connections the connections (and markers) by activity, else the
   last connections a SYN alone made */
static void age_unlink(Engine *e, conn_t *c) {
    age_t *l = &e->by_age;
    if (!c->in_age) return;
    if (c->age_prev) c->age_prev->age_next = c->age_next; else l->head = c->age_next;
    if (c->age_next) c->age_next->age_prev = c->age_prev; else l->tail = c->age_prev;
    c->age_prev = c->age_next = NULL;
    c->in_age = 0;
    l->n--;
}

static void age_append(Engine *e, conn_t *c) {
    age_t *l = &e->by_age;
    c->age_prev = l->tail;
    c->age_next = NULL;
    if (l->tail) l->tail->age_next = c; else l->head = c;
    l->tail = c;
    c->in_age = 1;
    l->n++;
}

/* --max-connections: the pair is the most recently active */
static void lru_touch(Engine *e, conn_t *c) {
    if (c->in_age && e->by_age.tail == c) return;
    age_unlink(e, c);
    age_append(e, c);
}

/* --max-connections: ``nw`` takes ``old``'s place by activity (a marker for a connection handed to Python) */
static void lru_replace(Engine *e, conn_t *old, conn_t *nw) {
    if (!old->in_age || !e->max_conns) return;
    nw->age_prev = old->age_prev;
    nw->age_next = old->age_next;
    if (nw->age_prev) nw->age_prev->age_next = nw; else e->by_age.head = nw;
    if (nw->age_next) nw->age_next->age_prev = nw; else e->by_age.tail = nw;
    nw->in_age = 1;
    old->in_age = 0;
    old->age_prev = old->age_next = NULL;
}

#define NBUCKETS4 (1u << 16)

static conn_t *index4_get(Engine *e, const uint8_t *key) {
    uint32_t h = hash_key(key, KEY4);
    for (conn_t *c = e->buckets4[h & (NBUCKETS4 - 1)]; c; c = c->next4)
        if (c->hash4 == h && memcmp(c->key, key, KEY4) == 0) return c;
    return NULL;
}

static void index4_del(Engine *e, conn_t *c) {
    if (!c->in4) return;
    conn_t **pp = &e->buckets4[c->hash4 & (NBUCKETS4 - 1)];
    while (*pp && *pp != c) pp = &(*pp)->next4;
    if (*pp) *pp = c->next4;
    c->next4 = NULL;
    c->in4 = 0;
}

/* the 4-tuple's latest VLAN-tagged connection (an earlier one leaves the index, as in by_tuple) */
static void index4_put(Engine *e, conn_t *c) {
    conn_t *old = index4_get(e, c->key);
    if (old) index4_del(e, old);
    c->hash4 = hash_key(c->key, KEY4);
    c->next4 = e->buckets4[c->hash4 & (NBUCKETS4 - 1)];
    e->buckets4[c->hash4 & (NBUCKETS4 - 1)] = c;
    c->in4 = 1;
}

static void table_del(Engine *e, conn_t *c) {
    conn_t **pp = &e->buckets[c->hash & (e->nbuckets - 1)];
    while (*pp && *pp != c) pp = &(*pp)->next;
    e->table_gen++;
    if (*pp) {
        *pp = c->next;
        e->nconns--;
        if (c->python) e->nmarkers--; else e->nlane--;
    }
    c->next = NULL;
    if (!c->compact) index4_del(e, c);
    age_unlink(e, c);
}

/* an entry's slot (CONN_HEAD.slot), where the timer heap notes the place of its entry: a conn_t keeps its slot with
   its memory (free_list); a compact entry gives it back when it is freed */
static int slot_new(Engine *e, uint32_t *slot) {
    if (e->nslot_free) *slot = e->slot_free[--e->nslot_free];
    else {
        if (e->nslots == e->capslots) {
            uint32_t cap = e->capslots ? e->capslots * 2 : 1024;
            int32_t *hp = realloc(e->hpos, cap * sizeof *hp);
            if (hp) e->hpos = hp;
            uint32_t *sf = hp ? realloc(e->slot_free, cap * sizeof *sf) : NULL;
            if (!sf) { PyErr_NoMemory(); return -1; }
            e->slot_free = sf;
            e->capslots = cap;
        }
        *slot = e->nslots++;
    }
    e->hpos[*slot] = -1;
    return 0;
}

static void slot_release(Engine *e, uint32_t slot) {
    e->slot_free[e->nslot_free++] = slot;  /* (room: there are never more free slots than slots) */
}

static void heap_remove(Engine *e, conn_t *c);

static void conn_release(Engine *e, conn_t *c) {
    heap_remove(e, c);          /* its timer goes with it: the memory is free now */
    if (c->compact) { slot_release(e, c->slot); free(c); return; }
    age_unlink(e, c);
    free(c->log);
    c->log = NULL;
    Py_CLEAR(c->pykey);
    c->next = e->free_list;
    e->free_list = c;
}

/* ``nw`` takes ``old``'s place in its hash chain (the same key) */
static void table_swap(Engine *e, conn_t *old, conn_t *nw) {
    conn_t **pp = &e->buckets[old->hash & (e->nbuckets - 1)];
    while (*pp && *pp != old) pp = &(*pp)->next;
    e->table_gen++;
    if (*pp) *pp = nw;
    nw->next = old->next;
    old->next = NULL;
}

static conn_t *conn_new(Engine *e) {
    conn_t *c = e->free_list;
    uint32_t slot;
    if (c) { e->free_list = c->next; slot = c->slot; }
    else {
        c = malloc(sizeof(conn_t));
        if (!c) { PyErr_NoMemory(); return NULL; }
        if (slot_new(e, &slot) < 0) { free(c); return NULL; }
    }
    memset(c, 0, sizeof(conn_t));
    c->slot = slot;
    c->queued = -1;
    return c;
}

static int log_add(conn_t *c, const ev_t *ev) {
    if (c->nlog == c->caplog) {
        /* most half-open connections stay at one; one that is answered goes on to a whole exchange (16 events,
           512 bytes: the bench capture's connections, about ten segments each, grow once, not three times) */
        uint32_t cap = c->caplog == 2 ? 16 : c->caplog ? c->caplog * 2 : 2;
        ev_t *p = realloc(c->log, cap * sizeof(ev_t));
        if (!p) { PyErr_NoMemory(); return -1; }
        c->log = p;
        c->caplog = cap;
    }
    c->log[c->nlog++] = *ev;
    return 0;
}

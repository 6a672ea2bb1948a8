/* rawfin._engine, part heap (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ the timer heap
 *
 * One entry a connection at most, and the connection knows where it is (hpos[slot]), so an earlier
 * deadline moves its entry up, and a connection that goes (finished, handed over, evicted) takes
 * its entry out at once: its memory is free at once, not when a stale entry would have come up.
 * The entries come out in the order Observer._expire's would: (deadline, connection id, the
 * order they were (re)scheduled in). That order is total, so the heap's shape never changes which
 * comes out next.
 *
 * Eight children an entry, the next level's eight in a row, and the deadlines apart from the rest
 * (hwhen), eight to a cache line: the earliest child is found in one line, and a heap of a hundred
 * thousand timers is six levels deep, not seventeen. Where the heap is larger than the caches each
 * level is a miss; taking the earliest timer out went down all of them.
 */

#define HD 8                            /* children an entry */
#define HW(e, i) ((e)->hwhen[(i) + HD - 1])    /* i's children HD*i+1.. lie at HD*(i+1).. in hwhen: a line */

static inline int hless(int64_t wa, const hent_t *a, int64_t wb, const hent_t *b) {
    if (wa != wb) return wa < wb;
    if (a->c->id != b->c->id) return a->c->id < b->c->id;
    return a->order < b->order;
}

static inline void hset(Engine *e, uint32_t i, int64_t w, hent_t x) {
    HW(e, i) = w;
    e->heap[i] = x;
    e->hpos[x.slot] = (int32_t)i;
}

/* the entry (w, x) into the hole at i, moved up to its place */
static void sift_up(Engine *e, uint32_t i, int64_t w, hent_t x) {
    while (i) {
        uint32_t p = (i - 1) / HD;
        if (!hless(w, &x, HW(e, p), &e->heap[p])) break;
        hset(e, i, HW(e, p), e->heap[p]);
        i = p;
    }
    hset(e, i, w, x);
}

/* the entry (w, x) into the hole at i, moved down to its place */
static void sift_down(Engine *e, uint32_t i, int64_t w, hent_t x) {
    uint32_t n = e->nheap;
    for (;;) {
        uint32_t f = HD * i + 1;
        if (f >= n) break;
        uint32_t end = f + HD < n ? f + HD : n, m = f;
        int64_t wm = HW(e, f);
        for (uint32_t j = f + 1; j < end; j++) {
            int64_t wj = HW(e, j);
            if (wj < wm || (wj == wm && hless(wj, &e->heap[j], wm, &e->heap[m]))) { m = j; wm = wj; }
        }
        if (!hless(wm, &e->heap[m], w, &x)) break;
        hset(e, i, wm, e->heap[m]);
        i = m;
    }
    hset(e, i, w, x);
}

static int heap_grow(Engine *e) {
    uint32_t cap = e->capheap ? e->capheap * 2 : 1024;
    hent_t *p = realloc(e->heap, cap * sizeof(hent_t));
    if (!p) { PyErr_NoMemory(); return -1; }
    e->heap = p;
    int64_t *mem = malloc(((size_t)cap + HD + 8) * sizeof(int64_t));
    if (!mem) { PyErr_NoMemory(); return -1; }
    int64_t *w = (int64_t *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
    if (e->nheap) memcpy(w, e->hwhen, ((size_t)e->nheap + HD - 1) * sizeof(int64_t));
    free(e->hwhen_mem);
    e->hwhen_mem = mem;
    e->hwhen = w;
    e->capheap = cap;
    return 0;
}

static int heap_push(Engine *e, int64_t when, conn_t *c) {
    int32_t pos = e->hpos[c->slot];
    if (pos >= 0) {                         /* an earlier deadline: the entry moves up */
        hent_t x = e->heap[pos];
        x.order = e->order++;
        sift_up(e, (uint32_t)pos, when, x);
        return 0;
    }
    if (e->nheap == e->capheap && heap_grow(e) < 0) return -1;
    hent_t x = {e->order++, c, c->slot};
    sift_up(e, e->nheap++, when, x);
    return 0;
}

/* the earliest entry out: its connection (its deadline was HW(e, 0)) */
static conn_t *heap_pop(Engine *e) {
    hent_t top = e->heap[0];
    e->hpos[top.slot] = -1;
    if (--e->nheap) sift_down(e, 0, HW(e, e->nheap), e->heap[e->nheap]);
    return top.c;
}

/* a connection that goes takes its entry with it */
static void heap_remove(Engine *e, conn_t *c) {
    int32_t pos = e->hpos[c->slot];
    if (pos < 0) return;
    uint32_t i = (uint32_t)pos;
    e->hpos[c->slot] = -1;
    if (i == --e->nheap) return;
    int64_t w = HW(e, e->nheap);
    hent_t x = e->heap[e->nheap];
    if (i && hless(w, &x, HW(e, (i - 1) / HD), &e->heap[(i - 1) / HD])) sift_up(e, i, w, x);
    else sift_down(e, i, w, x);
}

/* Observer._schedule: one heap entry a connection at a time */
static int schedule(Engine *e, conn_t *c, int64_t when) {
    if (c->queued >= 0 && c->queued <= when) return 0;
    c->queued = when;
    return heap_push(e, when, c);
}

/* rawfin._engine, part heap (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ the timer heap
 *
 * One entry a connection at most, and the connection knows where it is (hpos[slot]), so an earlier
 * deadline moves its entry up, and a connection that goes (finished, handed over, evicted) takes
 * its entry out at once: its memory is free at once, not when a stale entry would have come up.
 * The entries come out in the order Observer._expire's would: (deadline, connection id, the
 * order they were (re)scheduled in).
 */

static inline int hless(const hent_t *a, const hent_t *b) {
    if (a->when != b->when) return a->when < b->when;
    if (a->c->id != b->c->id) return a->c->id < b->c->id;
    return a->order < b->order;
}

static inline void hset(Engine *e, uint32_t i, hent_t x) {
    e->heap[i] = x;
    e->hpos[x.slot] = (int32_t)i;
}

static void sift_up(Engine *e, uint32_t i) {
    hent_t x = e->heap[i];
    while (i) {
        uint32_t p = (i - 1) / 2;
        if (!hless(&x, &e->heap[p])) break;
        hset(e, i, e->heap[p]);
        i = p;
    }
    hset(e, i, x);
}

/* the entry at i down to its place: the hole goes down the earlier child all the way to the bottom (one comparison a
   level, not two), then the entry up from there to where it belongs (it came from the bottom: seldom far). The entries
   are in a total order (order is unique), so the heap's shape does not change which comes out next. */
static void sift_down(Engine *e, uint32_t i) {
    hent_t x = e->heap[i];
    uint32_t n = e->nheap, top = i;
    for (;;) {
        uint32_t l = 2 * i + 1;
        if (l >= n) break;
        uint32_t m = l + 1 < n && hless(&e->heap[l + 1], &e->heap[l]) ? l + 1 : l;
        hset(e, i, e->heap[m]);
        i = m;
    }
    while (i > top) {
        uint32_t p = (i - 1) / 2;
        if (!hless(&x, &e->heap[p])) break;
        hset(e, i, e->heap[p]);
        i = p;
    }
    hset(e, i, x);
}

static int heap_push(Engine *e, int64_t when, conn_t *c) {
    int32_t pos = e->hpos[c->slot];
    if (pos >= 0) {                         /* an earlier deadline: the entry moves up */
        hent_t *h = &e->heap[pos];
        h->when = when;
        h->order = e->order++;
        sift_up(e, (uint32_t)pos);
        return 0;
    }
    if (e->nheap == e->capheap) {
        uint32_t cap = e->capheap ? e->capheap * 2 : 1024;
        hent_t *p = realloc(e->heap, cap * sizeof(hent_t));
        if (!p) { PyErr_NoMemory(); return -1; }
        e->heap = p;
        e->capheap = cap;
    }
    hent_t x = {when, e->order++, c, c->slot};
    e->heap[e->nheap] = x;
    sift_up(e, e->nheap++);
    return 0;
}

static hent_t heap_pop(Engine *e) {
    hent_t top = e->heap[0];
    e->hpos[top.slot] = -1;
    if (--e->nheap) {
        e->heap[0] = e->heap[e->nheap];
        sift_down(e, 0);
    }
    return top;
}

/* a connection that goes takes its entry with it */
static void heap_remove(Engine *e, conn_t *c) {
    int32_t pos = e->hpos[c->slot];
    if (pos < 0) return;
    uint32_t i = (uint32_t)pos;
    e->hpos[c->slot] = -1;
    if (i == --e->nheap) return;
    hent_t x = e->heap[e->nheap];
    hset(e, i, x);
    if (i && hless(&x, &e->heap[(i - 1) / 2])) sift_up(e, i); else sift_down(e, i);
}

/* Observer._schedule: one heap entry a connection at a time */
static int schedule(Engine *e, conn_t *c, int64_t when) {
    if (c->queued >= 0 && c->queued <= when) return 0;
    c->queued = when;
    return heap_push(e, when, c);
}

/* rawfin._engine, part heap (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ the timer heap */

static inline int hless(const hent_t *a, const hent_t *b) {
    if (a->when != b->when) return a->when < b->when;
    if (a->id != b->id) return a->id < b->id;
    return a->order < b->order;
}

static int heap_push(Engine *e, int64_t when, conn_t *c) {
    if (e->nheap == e->capheap) {
        uint32_t cap = e->capheap ? e->capheap * 2 : 1024;
        hent_t *p = realloc(e->heap, cap * sizeof(hent_t));
        if (!p) { PyErr_NoMemory(); return -1; }
        e->heap = p;
        e->capheap = cap;
    }
    hent_t x = {when, c->id, e->order++, c};
    uint32_t i = e->nheap++;
    while (i) {
        uint32_t p = (i - 1) / 2;
        if (!hless(&x, &e->heap[p])) break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = x;
    c->heaprefs++;
    return 0;
}

static hent_t heap_pop(Engine *e) {
    hent_t top = e->heap[0];
    hent_t x = e->heap[--e->nheap];
    uint32_t i = 0, n = e->nheap;
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        const hent_t *best = &x;
        if (l < n && hless(&e->heap[l], best)) { m = l; best = &e->heap[l]; }
        if (r < n && hless(&e->heap[r], best)) { m = r; }
        if (m == i) break;
        e->heap[i] = e->heap[m];
        i = m;
    }
    if (n) e->heap[i] = x;
    return top;
}

/* Observer._schedule: one heap entry a connection at a time */
static int schedule(Engine *e, conn_t *c, int64_t when) {
    if (c->queued >= 0 && c->queued <= when) return 0;
    c->queued = when;
    return heap_push(e, when, c);
}

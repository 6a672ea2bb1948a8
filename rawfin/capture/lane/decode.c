/* rawfin._engine, part decode (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ decoding */

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static inline int vlan_tpid(int et) {
    return et == 0x8100 || et == 0x88A8 || et == 0x9100 || et == 0x9200 || et == 0x9300;
}

/* where a frame's network layer starts (-1: a link the lane does not read), its ethertype into *et: the one reading
   of the link for on_frame and for look_ahead */
static inline int64_t link_layer(int linktype, const uint8_t *d, Py_ssize_t n, int *et) {
    if (linktype == 1 && n >= 14) { *et = be16(d + 12); return 14; }                           /* Ethernet */
    if (linktype == 113 && n >= 16 && be16(d + 2) != 824) { *et = be16(d + 14); return 16; }    /* SLL */
    if (linktype == 276 && n >= 20 && be16(d + 8) != 824) { *et = be16(d); return 20; }         /* SLL2 */
    if ((linktype == 101 || linktype == 12 || linktype == 14) && n >= 1 && (d[0] >> 4 == 4 || d[0] >> 4 == 6)) {
        *et = d[0] >> 4 == 4 ? 0x0800 : 0x86DD;                                                 /* raw IP */
        return 0;
    }
    if (linktype == 228) { *et = 0x0800; return 0; }
    if (linktype == 229) { *et = 0x86DD; return 0; }
    return -1;
}

/* Looking ahead: the frames after the one being taken, read no further than for their connection's key. Every
   segment meets its connection cold (the table is far larger than the caches), so its look-up waited on memory twice
   a segment, the table's bucket, then the connection. The file loops ask for both ahead of time: the bucket of the
   frame after next, the connection (the lines a segment reads, conn_t's first) of the next, whose bucket was asked
   for a frame before. Hints only: a frame not read here (VLAN tags, another link type, not TCP), a bucket that has
   changed since, cost a look-up as before, and what the lane does is the same either way.
   The key made ahead is the one on_frame's own reading makes of the frame (the same bytes, the same offsets, no VLAN
   tag): kept with the frame's place in the file, it is used when that frame comes (Engine.pre), not made again. */
static inline int ahead_key(int linktype, const uint8_t *d, size_t n, uint8_t *key, uint32_t *h) {
    int et = 0;
    int64_t off = link_layer(linktype, d, (Py_ssize_t)n, &et);
    if (off < 0) return 0;
    if (et == 0x0800 && (int64_t)n >= off + 24 && d[off] == 0x45 && d[off + 9] == 6) {
        const uint8_t *ip = d + off;
        make_key(key, 4, ip + 12, be16(ip + 20), ip + 16, be16(ip + 22), 0, NULL, h);
        return 1;
    }
    if (et == 0x86DD && (int64_t)n >= off + 44 && (d[off] >> 4) == 6 && d[off + 6] == 6) {
        const uint8_t *ip = d + off;
        make_key(key, 6, ip + 8, be16(ip + 40), ip + 24, be16(ip + 42), 0, NULL, h);
        return 1;
    }
    return 0;
}

#define AHEAD_LINES 7       /* conn_t's lines a segment reads (types.c: the head, then what a segment reads) */

/* three frames' keys in turn: the one being taken (k), the next, the one after; each with its place in the file */
typedef struct {
    uint8_t key[3][KEYLEN];
    uint32_t h[3];
    int64_t at[3];
    uint8_t ok[3];
    uint8_t k;
} ahead_t;

/* the frame at file offset ``at`` comes now (Engine.pre: its key, if it was made ahead); d, n: the frame after next,
   at ``at2`` (NULL: not whole in the buffer yet) */
static inline void look_ahead(Engine *e, ahead_t *a, int64_t at, int linktype, const uint8_t *d, size_t n, int64_t at2) {
    int k = a->k = (uint8_t)(a->k == 2 ? 0 : a->k + 1), k1 = k == 2 ? 0 : k + 1, k2 = k1 == 2 ? 0 : k1 + 1;
    e->pre = a->ok[k] && a->at[k] == at ? a->key[k] : NULL;
    e->pre_h = a->h[k];
    a->ok[k2] = d && ahead_key(linktype, d, n, a->key[k2], &a->h[k2]);
    a->at[k2] = at2;
    if (a->ok[k2]) __builtin_prefetch(&e->buckets[a->h[k2] & (e->nbuckets - 1)]);
    if (a->ok[k1]) {
        const char *c = (const char *)e->buckets[a->h[k1] & (e->nbuckets - 1)];
        if (c) for (int i = 0; i < AHEAD_LINES; i++) __builtin_prefetch(c + 64 * i);
    }
}

/* One captured frame. The lane decodes Ethernet (with up to two VLAN tags) + IPv4 (no options) + TCP
   and Ethernet + IPv6 + TCP (no extension headers) exactly as rawfin.decode's first branches do;
   everything else goes to rawfin.decode.decode itself. */
static int on_frame(Engine *e, int linktype, const uint8_t *d, Py_ssize_t n, int64_t orig_len, int64_t frame,
                    int64_t time_ns) {
    e->frames++;
    if (!e->have_first) { e->first_time = time_ns; e->have_first = 1; }
    if (e->filter.run) {
        int pass = filter_pass(&e->filter, linktype, d, n, orig_len);
        if (pass < 0) return -1;
        if (!pass) { e->filtered++; return 0; }
    }
    int et = 0, nv = 0;
    uint16_t vl[MAXVLAN];
    int64_t off = link_layer(linktype, d, n, &et);
    if (off >= 0) {
        while (vlan_tpid(et) && nv < MAXVLAN && n >= off + 4) {
            vl[nv++] = be16(d + off) & 0x0FFF;
            et = be16(d + off + 2);
            off += 4;
        }
        if (vlan_tpid(et)) {
            /* more tags than the lane keeps, or cut short: the reference decoder's */
        } else if (et == 0x0800 && n >= off + 40 && d[off] == 0x45) {
            const uint8_t *ip = d + off;
            int64_t tot = be16(ip + 2), frag = be16(ip + 6);
            if (ip[9] == 6 && !(frag & 0x3FFF) && tot >= 40 && (off + tot <= orig_len || off + tot <= n)) {
                const uint8_t *t = ip + 20;
                int thl = (t[12] >> 4) << 2;
                int64_t data_len = tot - 20 - thl;
                if (thl >= 20 && data_len >= 0) {
                    ev_t s = {time_ns, frame, be32(t + 4), be32(t + 8), (uint32_t)data_len, be16(t + 14), t[13],
                              be16(ip + 4) ? 0 : KIND_ID0};
                    e->tcp++;
                    e->ipid = be16(ip + 4);
                    return on_segment(e, 4, ip + 12, be16(t), ip + 16, be16(t + 2), nv, vl, &s, NULL);
                }
            }
        } else if (et == 0x86DD && n >= off + 60 && (d[off] >> 4) == 6 && d[off + 6] == 6) {
            const uint8_t *ip = d + off;
            int64_t plen = be16(ip + 4);
            int64_t wire_end = orig_len > n ? orig_len : n;
            int64_t p = off + 40, end = p + plen;
            if (plen == 0 || end > wire_end) end = wire_end;
            const uint8_t *t = d + p;
            int thl = (t[12] >> 4) << 2;
            int64_t data_len = end - (p + thl);
            if (thl >= 20 && data_len >= 0) {
                ev_t s = {time_ns, frame, be32(t + 4), be32(t + 8), (uint32_t)data_len, be16(t + 14), t[13], 0};
                e->tcp++;
                e->ipid = -1;
                return on_segment(e, 6, ip + 8, be16(t), ip + 24, be16(t + 2), nv, vl, &s, NULL);
            }
        }
    }
    e->pre = NULL;                      /* (a key made ahead is the reading above's: Python reads this one) */
    /* the reference decoder (Handback.decode): ("skip", records) or ("seg", segment, fields...) */
    PyObject *ans = PyObject_CallFunction(e->cb_decode, "iy#LLL", linktype, (const char *)d, n, (long long)orig_len,
                                          (long long)frame, (long long)time_ns);
    if (!ans) return -1;
    const char *what;
    PyObject *seg, *vlan, *recs;
    if (PyArg_ParseTuple(ans, "sO", &what, &recs) && strcmp(what, "skip") == 0) {
        Py_INCREF(recs);
        Py_DECREF(ans);
        return out_pyrecords(e, recs);          /* counted (and reported when malformed) by the Python observer */
    }
    PyErr_Clear();
    const char *ss, *ds;
    int sp, dp, win, fl, ipid;
    unsigned long sq, ak;
    long long dl;
    if (!PyArg_ParseTuple(ans, "sOssiikkiiLOi", &what, &seg, &ss, &ds, &sp, &dp, &sq, &ak, &fl, &win, &dl, &vlan,
                          &ipid)) {
        Py_DECREF(ans);
        return -1;
    }
    e->tcp++;
    Py_ssize_t nvt = PyTuple_Check(vlan) ? PyTuple_GET_SIZE(vlan) : -1;
    for (Py_ssize_t k = 0; k >= 0 && k < nvt && k < MAXVLAN; k++)
        vl[k] = (uint16_t)PyLong_AsLong(PyTuple_GET_ITEM(vlan, k));
    int rc = -1;
    if (nvt < 0 || nvt > MAXVLAN) {     /* more VLAN tags than the lane keeps: Python's */
        int64_t now = time_ns;
        if (now > e->now) e->now = now;
        rc = expire(e, now);
        if (rc == 0) rc = py_feed(e, seg);      /* (the segment carries its IPv4 ID itself) */
        Py_DECREF(ans);
        return rc;
    }
    /* a segment Python decoded: into the lane's table by its addresses */
    uint8_t sa[16] = {0}, da[16] = {0};
    int fam = strchr(ss, ':') ? 6 : 4;
    if (inet_pton(fam == 4 ? AF_INET : AF_INET6, ss, sa) == 1 && inet_pton(fam == 4 ? AF_INET : AF_INET6, ds, da) == 1) {
        ev_t s = {time_ns, frame, (uint32_t)sq, (uint32_t)ak, (uint32_t)dl, (uint16_t)win, (uint8_t)fl,
                  ipid == 0 ? KIND_ID0 : 0};
        e->ipid = ipid;
        rc = on_segment(e, fam, sa, (uint16_t)sp, da, (uint16_t)dp, (int)nvt, vl, &s, seg);
    }
    Py_DECREF(ans);
    return rc;
}

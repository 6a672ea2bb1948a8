/*
 * rawfin._engine: the compiled lane of `rawfin analyze` (and of check's and annotate's analysis).
 *
 * The Python observer (rawfin/core/observer.py with rawfin/core/endpoint.py) is the reference:
 * this file is a transliteration of its common paths -- a connection that opens with a
 * SYN or is picked up mid-stream, exchanges data (with the everyday retransmissions and
 * gaps), closes by FINs or RST, on up to two VLAN tags -- and nothing more.  The moment a
 * connection does anything else (a retransmitted FIN, a lost final ACK, a new SYN on its
 * pair, its directions on two VLANs...) the engine hands it to the Python observer: it
 * replays the connection's events so far into a fresh Python connection (whose records
 * were already written, so they are discarded) and lets Python take the event that did
 * not fit, and every later one.  The output is byte for byte the reference's
 * (tests/test_engine.py runs both on every capture it has).
 *
 * Next states come from rawfin.states.TRANSITIONS, handed over at start (set_table);
 * this file only classifies, as the Python endpoint does.
 *
 * Time is a parameter here too: capture time, integer nanoseconds; no clock is read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

/* ------------------------------------------------------------------ states, inputs, table */

enum { CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING,
       LAST_ACK, TIME_WAIT, NST };
static const char *ST_NAME[NST] = {"CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED",
                                   "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK",
                                   "TIME_WAIT"};
enum { I_LISTEN, I_CONNECT, I_CLOSE, I_ABORT, I_RCV_SYN, I_RCV_SYN_ACK, I_RCV_ACK_OF_SYN, I_RCV_ACK_OF_FIN,
       I_RCV_FIN, I_RCV_RST, I_RCV_RST_PASSIVE, I_RCV_NEW_SYN, I_TIMEOUT_2MSL, I_TIMEOUT_FIN_WAIT_2,
       I_TIMEOUT_GIVE_UP, NIN };
static const char *IN_NAME[NIN] = {"LISTEN", "CONNECT", "CLOSE", "ABORT", "RCV_SYN", "RCV_SYN_ACK",
                                   "RCV_ACK_OF_SYN", "RCV_ACK_OF_FIN", "RCV_FIN", "RCV_RST", "RCV_RST_PASSIVE",
                                   "RCV_NEW_SYN", "TIMEOUT_2MSL", "TIMEOUT_FIN_WAIT_2", "TIMEOUT_GIVE_UP"};
static signed char TABLE[NST][NIN];
static int table_set = 0;

static int name_index(const char *name, const char **names, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

/* ------------------------------------------------------------------ sequence space (rawfin/core/seq.py) */

static inline int64_t ssub(uint32_t a, uint32_t b) {
    uint32_t d = a - b;
    return d > 0x80000000u ? (int64_t)d - 0x100000000LL : (int64_t)d;
}
#define SLT(a, b) (ssub((a), (b)) < 0)
#define SLE(a, b) (ssub((a), (b)) <= 0)
#define SGT(a, b) (ssub((a), (b)) > 0)
#define SGE(a, b) (ssub((a), (b)) >= 0)
static inline int between(uint32_t lo, uint32_t x, uint32_t hi) { return (uint32_t)(x - lo) < (uint32_t)(hi - lo); }
static inline int between_incl(uint32_t lo, uint32_t x, uint32_t hi) {
    return (uint32_t)(x - lo) <= (uint32_t)(hi - lo);
}
static int acceptable(uint32_t seq, uint32_t seg_len, uint32_t rcv_nxt, uint32_t wnd) {
    if (seg_len == 0) {
        if (wnd == 0) return seq == rcv_nxt;
        return between(rcv_nxt, seq, rcv_nxt + wnd);
    }
    if (wnd == 0) return 0;
    uint32_t end = seq + seg_len - 1, hi = rcv_nxt + wnd;
    return between(rcv_nxt, seq, hi) || between(rcv_nxt, end, hi);
}
#define RCV_WND 65535u

/* ------------------------------------------------------------------ segments and events */

#define F_FIN 1
#define F_SYN 2
#define F_RST 4
#define F_ACK 16

typedef struct {
    int64_t time_ns;
    int64_t frame;          /* -1: none (a timer) */
    uint32_t seq, ack, data_len;
    uint16_t window;
    uint8_t flags;
    uint8_t kind;           /* events: 0/1 segment from side 0/1, 2 timer fire, 3 flush_all */
} ev_t;

static inline uint32_t seg_len(const ev_t *s) { return s->data_len + ((s->flags & F_SYN) ? 1 : 0) + (s->flags & F_FIN); }
static inline uint32_t seq_end(const ev_t *s) { return s->seq + seg_len(s); }
static inline uint32_t fin_seq_of(const ev_t *s) { return s->seq + s->data_len + ((s->flags & F_SYN) ? 1 : 0); }

/* ------------------------------------------------------------------ connections */

typedef struct {
    uint32_t iss, irs, snd_una, snd_nxt, rcv_nxt, fin_seq, peer_fin_seq;
    int64_t time_wait_at;   /* -1: not armed */
    uint8_t state, has_fin, has_peer_fin, passive;
} cep_t;

typedef struct {
    ev_t seg;
    uint8_t present, crossed, order;
} held_t;

#define MAXCAND 4
#define MAXVLAN 2
#define KEY4 37             /* the 4-tuple part of a key */
#define KEYLEN 48           /* ... then the VLAN count and ids */
#define MAXANOM 6

typedef struct conn {
    struct conn *next;      /* hash chain */
    uint8_t key[KEYLEN];    /* family, (addr, port) of both sides in canonical order, then the VLAN ids */
    struct conn *next4;     /* VLAN-tagged connections: the chain of the 4-tuple index */
    uint32_t hash4;
    uint8_t in4;            /* in that index (the 4-tuple's latest VLAN-tagged connection) */
    uint8_t nvlan;
    uint16_t vlan[MAXVLAN];
    uint32_t hash;
    uint8_t python;         /* 1: a marker -- the Python observer owns this pair */
    uint8_t dead;           /* finished or handed over; freed when no heap entry names it */
    uint32_t heaprefs;
    PyObject *pykey;        /* markers: the Python observer's key, to sweep finished ones */
    int64_t id;
    uint8_t fam;            /* 4 or 6 */
    uint8_t addr[2][16];    /* side 0: the first sender (the client: C connections open with a SYN) */
    uint16_t port[2];
    char name[2][56];       /* "a.b.c.d:port" / "[v6]:port" */
    cep_t ep[2];
    int64_t first_frame, last_frame, first_ns, last_ns, packets;
    uint8_t seen, tw, ka;   /* tw: settled, as the Python observer's TimeWait form; ka: side of key[1] */
    uint8_t client;         /* the client's side: 0 when a SYN opened it, else guessed by port */
    uint8_t mid, known;     /* picked up mid-stream; whose rcv_nxt is known (bit 1: side 0, bit 2: side 1) */
    uint8_t nfins, fin_side[2];
    uint32_t fin_seqv[2];
    int64_t fin_frame[2];
    uint8_t rst_seen, data_after_first_fin, closing_seen, first_fin_acked_alone, refused;
    uint8_t ncand;
    uint8_t nanom;          /* distinct anomaly kinds seen, and how many of each */
    const char *anom_kind[MAXANOM];
    uint32_t anom_n[MAXANOM];
    held_t pending[2];      /* receiver side -> the FIN (or SYN) held for it */
    held_t held_ack[2];     /* sender side -> its final ACK, held for a retransmitted FIN */
    uint8_t hold_seq;       /* insertion order of the two dicts above */
    int64_t queued;         /* the deadline of its heap entry, -1: none */
    ev_t *log;
    uint32_t nlog, caplog;
} conn_t;

typedef struct {
    int64_t when, id;
    uint64_t order;
    conn_t *c;
} hent_t;

/* ------------------------------------------------------------------ the engine object */

typedef struct {
    PyObject_HEAD
    /* configuration */
    int64_t msl_ns, hold_ns, linger_ns;
    PyObject *obs;          /* the Python Observer: fallback connections, records of theirs */
    PyObject *decode;       /* rawfin.decode.decode */
    PyObject *dumps;        /* record dict -> JSON text */
    PyObject *write;        /* bytes -> None */
    PyObject *fmt6;         /* 16 bytes -> IPv6 text as rawfin prints it */
    PyObject *make_seg;     /* rawfin.decode.make_segment */
    PyObject *pytimers;     /* the Python observer's heap (a list it never rebinds) */
    char file_suffix[1024]; /* ',"file":"..."' or empty */
    char cause_2msl[64];
    /* state */
    conn_t **buckets;
    uint32_t nbuckets, nconns;
    conn_t **buckets4;      /* VLAN-tagged connections by 4-tuple: Observer.by_tuple */
    hent_t *heap;
    uint32_t nheap, capheap;
    uint64_t order;
    int64_t next_id, now, frames, tcp, first_time, done, py_calls, handoffs;
    int have_first;
    int64_t by_close[8];
    int64_t server_active;
    /* output */
    char *out;
    size_t nout, capout;
    /* one endpoint call's anomalies: a Result lists its transitions first, then its anomalies */
    char *aout;
    size_t naout, capaout;
    /* the per-event scratch of transitions (to tell refused connections) */
    int rst_from_syn_sent;
    conn_t *free_list;
} Engine;

static const char *CLOSE_NAMES[8] = {"refused", "reset", "none", "incomplete", "simultaneous", "half_close",
                                     "three_way", "four_way"};

/* ------------------------------------------------------------------ output */

static int out_reserve(Engine *e, size_t more) {
    if (e->nout + more <= e->capout) return 0;
    size_t cap = e->capout ? e->capout : (1 << 20);
    while (cap < e->nout + more) cap *= 2;
    char *p = realloc(e->out, cap);
    if (!p) { PyErr_NoMemory(); return -1; }
    e->out = p;
    e->capout = cap;
    return 0;
}

static int out_flush(Engine *e) {
    if (!e->nout) return 0;
    PyObject *b = PyBytes_FromStringAndSize(e->out, (Py_ssize_t)e->nout);
    if (!b) return -1;
    PyObject *r = PyObject_CallOneArg(e->write, b);
    Py_DECREF(b);
    if (!r) return -1;
    Py_DECREF(r);
    e->nout = 0;
    return 0;
}

static inline void out_str(Engine *e, const char *s, size_t n) {
    memcpy(e->out + e->nout, s, n);
    e->nout += n;
}
#define OUT_LIT(e, s) out_str((e), (s), sizeof(s) - 1)

static inline void out_i64(Engine *e, int64_t v) {
    char tmp[24];
    int n = 0;
    uint64_t u;
    if (v < 0) { e->out[e->nout++] = '-'; u = (uint64_t)(-(v + 1)) + 1; } else u = (uint64_t)v;
    do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
    while (n) e->out[e->nout++] = tmp[--n];
}

/* seconds(time_ns) as json.dumps prints it: repr(round(time_ns / 1e9, 6)) */
static int out_time(Engine *e, int64_t ns) {
    double x = (double)ns / 1e9;
    if (ns >= 0 && x >= 1e-4 && x < 4e9) {
        int64_t rem = ns % 1000;
        if (rem < 200 || rem > 800) {       /* far from a half microsecond: no double-rounding doubt */
            int64_t us = ns / 1000 + (rem > 800 ? 1 : 0);
            int64_t sec = us / 1000000, frac = us % 1000000;
            out_i64(e, sec);
            e->out[e->nout++] = '.';
            if (!frac) { e->out[e->nout++] = '0'; return 0; }
            char d[6];
            int k = 6;
            for (int i = 5; i >= 0; i--) { d[i] = (char)('0' + frac % 10); frac /= 10; }
            while (k > 1 && d[k - 1] == '0') k--;
            out_str(e, d, (size_t)k);
            return 0;
        }
    }
    /* the general case, through CPython's own float round and repr */
    char *r6 = PyOS_double_to_string(x, 'f', 6, 0, NULL);
    if (!r6) return -1;
    double y = PyOS_string_to_double(r6, NULL, NULL);
    PyMem_Free(r6);
    if (y == -1.0 && PyErr_Occurred()) return -1;
    char *s = PyOS_double_to_string(y, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!s) return -1;
    size_t n = strlen(s);
    if (out_reserve(e, n + 8) < 0) { PyMem_Free(s); return -1; }
    out_str(e, s, n);
    PyMem_Free(s);
    return 0;
}

static void out_cstr(Engine *e, const char *s) { out_str(e, s, strlen(s)); }

/* what transition and anomaly records begin with: type, conn, frame, time, endpoint */
static int out_head(Engine *e, const char *type, conn_t *c, int side, int64_t frame, int64_t now, size_t more) {
    if (out_reserve(e, 512 + more + strlen(e->file_suffix)) < 0) return -1;
    OUT_LIT(e, "{\"type\":\"");
    out_cstr(e, type);
    OUT_LIT(e, "\",\"conn\":");
    out_i64(e, c->id);
    OUT_LIT(e, ",\"frame\":");
    if (frame < 0) OUT_LIT(e, "null"); else out_i64(e, frame);
    OUT_LIT(e, ",\"time\":");
    if (out_time(e, now) < 0) return -1;
    OUT_LIT(e, ",\"endpoint\":\"");
    out_cstr(e, c->name[side]);
    return 0;
}

static int out_transition(Engine *e, conn_t *c, int side, int from, int to, int64_t frame, int64_t now,
                          const char *cause) {
    if (out_head(e, "transition", c, side, frame, now, strlen(cause)) < 0) return -1;
    OUT_LIT(e, "\",\"peer\":\"");
    out_cstr(e, c->name[1 - side]);
    OUT_LIT(e, "\",\"from\":\"");
    out_cstr(e, ST_NAME[from]);
    OUT_LIT(e, "\",\"to\":\"");
    out_cstr(e, ST_NAME[to]);
    OUT_LIT(e, "\",\"cause\":\"");
    out_cstr(e, cause);
    e->out[e->nout++] = '"';
    out_cstr(e, e->file_suffix);
    OUT_LIT(e, "}\n");
    return 0;
}

/* an anomaly record (rawfin.records.anomaly_record), and the connection's count of its kind;
   BAIL when the connection has seen more kinds than the lane keeps */
static int anomaly(Engine *e, conn_t *c, int side, const char *kind, const char *detail, int64_t now,
                   int64_t frame) {
    int k;
    for (k = 0; k < c->nanom; k++)
        if (strcmp(c->anom_kind[k], kind) == 0) break;
    if (k == c->nanom) {
        if (c->nanom == MAXANOM) return 1;
        c->anom_kind[c->nanom] = kind;
        c->anom_n[c->nanom++] = 0;
    }
    c->anom_n[k]++;
    /* written in the main buffer's tail, then moved aside until the endpoint call ends */
    size_t start = e->nout;
    if (out_head(e, "anomaly", c, side, frame, now, strlen(detail)) < 0) return -1;
    OUT_LIT(e, "\",\"kind\":\"");
    out_cstr(e, kind);
    OUT_LIT(e, "\",\"detail\":\"");
    out_cstr(e, detail);        /* digits, names and punctuation: nothing JSON must escape */
    e->out[e->nout++] = '"';
    out_cstr(e, e->file_suffix);
    OUT_LIT(e, "}\n");
    size_t len = e->nout - start;
    if (e->naout + len > e->capaout) {
        size_t cap = e->capaout ? e->capaout : 4096;
        while (cap < e->naout + len) cap *= 2;
        char *q = realloc(e->aout, cap);
        if (!q) { PyErr_NoMemory(); return -1; }
        e->aout = q;
        e->capaout = cap;
    }
    memcpy(e->aout + e->naout, e->out + start, len);
    e->naout += len;
    e->nout = start;
    return 0;
}

/* the end of one endpoint call: its anomalies follow its transitions (or vanish with a BAIL) */
static int end_call(Engine *e, int r) {
    if (r == 0 && e->naout) {
        if (out_reserve(e, e->naout) < 0) return -1;
        out_str(e, e->aout, e->naout);
    }
    e->naout = 0;
    return r;
}

/* Python's records: a list of dicts, written through the reference serializer */
static int out_pyrecords(Engine *e, PyObject *recs) {
    if (!recs) return -1;
    if (!PyList_Check(recs)) { Py_DECREF(recs); PyErr_SetString(PyExc_TypeError, "records must be a list"); return -1; }
    Py_ssize_t n = PyList_GET_SIZE(recs);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyObject_CallOneArg(e->dumps, PyList_GET_ITEM(recs, i));
        if (!s) { Py_DECREF(recs); return -1; }
        Py_ssize_t len;
        const char *u = PyUnicode_AsUTF8AndSize(s, &len);
        if (!u || out_reserve(e, (size_t)len + 1) < 0) { Py_DECREF(s); Py_DECREF(recs); return -1; }
        out_str(e, u, (size_t)len);
        e->out[e->nout++] = '\n';
        Py_DECREF(s);
    }
    Py_DECREF(recs);
    if (e->nout > (1 << 20)) return out_flush(e);
    return 0;
}

/* ------------------------------------------------------------------ the connection table */

static uint32_t hash_key(const uint8_t *k, int n) {
    uint32_t h = 2166136261u;
    for (int i = 0; i < n; i++) { h ^= k[i]; h *= 16777619u; }
    return h;
}

/* canonical key of (fam, a:pa, b:pb, VLAN ids): the smaller (addr, port) first; returns 1 if swapped */
static int make_key(uint8_t *key, int fam, const uint8_t *a, uint16_t pa, const uint8_t *b, uint16_t pb,
                    int nvlan, const uint16_t *vlan) {
    int alen = fam == 4 ? 4 : 16;
    int c = memcmp(a, b, (size_t)alen);
    int swap = c > 0 || (c == 0 && pa > pb);
    const uint8_t *x = swap ? b : a, *y = swap ? a : b;
    uint16_t px = swap ? pb : pa, py = swap ? pa : pb;
    memset(key, 0, KEYLEN);
    key[0] = (uint8_t)fam;
    memcpy(key + 1, x, (size_t)alen);
    memcpy(key + 17, y, (size_t)alen);
    key[33] = (uint8_t)(px >> 8); key[34] = (uint8_t)px;
    key[35] = (uint8_t)(py >> 8); key[36] = (uint8_t)py;
    key[KEY4] = (uint8_t)nvlan;
    for (int i = 0; i < nvlan; i++) { key[KEY4 + 1 + 2 * i] = (uint8_t)(vlan[i] >> 8); key[KEY4 + 2 + 2 * i] = (uint8_t)vlan[i]; }
    return swap;
}

static conn_t *table_get(Engine *e, const uint8_t *key, uint32_t h) {
    for (conn_t *c = e->buckets[h & (e->nbuckets - 1)]; c; c = c->next)
        if (c->hash == h && memcmp(c->key, key, KEYLEN) == 0) return c;
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
    e->nconns++;
    return 0;
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
    if (*pp) { *pp = c->next; e->nconns--; }
    c->next = NULL;
    index4_del(e, c);
}

static void conn_release(Engine *e, conn_t *c) {
    /* memory goes back when no heap entry names it any more */
    if (c->heaprefs) return;
    free(c->log);
    c->log = NULL;
    Py_CLEAR(c->pykey);
    c->next = e->free_list;
    e->free_list = c;
}

static conn_t *conn_new(Engine *e) {
    conn_t *c = e->free_list;
    if (c) e->free_list = c->next; else c = malloc(sizeof(conn_t));
    if (!c) { PyErr_NoMemory(); return NULL; }
    memset(c, 0, sizeof(conn_t));
    c->queued = -1;
    return c;
}

static int log_add(conn_t *c, const ev_t *ev) {
    if (c->nlog == c->caplog) {
        uint32_t cap = c->caplog ? c->caplog * 2 : 8;
        ev_t *p = realloc(c->log, cap * sizeof(ev_t));
        if (!p) { PyErr_NoMemory(); return -1; }
        c->log = p;
        c->caplog = cap;
    }
    c->log[c->nlog++] = *ev;
    return 0;
}

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

/* ------------------------------------------------------------------ the endpoint (rawfin/core/endpoint.py) */

#define BAIL 1      /* the connection does something this lane does not model: Python takes it */
#define ERR (-1)    /* a Python exception is set */

static int move(Engine *e, conn_t *c, int side, int inp, const char *cause, int64_t now, int64_t frame) {
    cep_t *p = &c->ep[side];
    int to = TABLE[p->state][inp];
    if (to < 0) return 0;
    int from = p->state;
    p->state = (uint8_t)to;
    if (out_transition(e, c, side, from, to, frame, now, cause) < 0) return ERR;
    if (to == CLOSING) c->closing_seen = 1;
    if (inp == I_RCV_RST && from == SYN_SENT) e->rst_from_syn_sent = 1;
    /* _enter */
    if (to == TIME_WAIT) p->time_wait_at = now + 2 * e->msl_ns;
    if (to == CLOSED || to == LISTEN) p->time_wait_at = -1;
    return 0;
}

/* Segment.describe(): "FIN,ACK seq=1006 ack=2001 len=5" */
static void describe(const ev_t *s, char *out, size_t n) {
    static const struct { uint8_t bit; const char *name; } order[8] = {
        {F_SYN, "SYN"}, {F_FIN, "FIN"}, {F_RST, "RST"}, {8, "PSH"}, {F_ACK, "ACK"}, {32, "URG"}, {64, "ECE"},
        {128, "CWR"}};
    size_t k = 0;
    int any = 0;
    out[0] = 0;
    for (int i = 0; i < 8; i++)
        if (s->flags & order[i].bit) {
            k += (size_t)snprintf(out + k, n - k, "%s%s", any ? "," : "", order[i].name);
            any = 1;
        }
    if (!any) k += (size_t)snprintf(out + k, n - k, "none");
    k += (size_t)snprintf(out + k, n - k, " seq=%u", s->seq);
    if (s->flags & F_ACK) k += (size_t)snprintf(out + k, n - k, " ack=%u", s->ack);
    if (s->data_len) snprintf(out + k, n - k, " len=%u", s->data_len);
}

static int observe_send_call(Engine *e, conn_t *c, int side, const ev_t *s) {
    cep_t *p = &c->ep[side];
    char cause[96];
    int st = p->state;
    if (s->flags & F_RST) {
        if (st != CLOSED && st != LISTEN && st != SYN_SENT && TABLE[st][I_ABORT] >= 0) {
            snprintf(cause, sizeof cause, "snd RST seq=%u", s->seq);
            return move(e, c, side, I_ABORT, cause, s->time_ns, s->frame);
        }
        return 0;
    }
    if (st == SYN_SENT && (s->flags & F_ACK)) return BAIL;      /* syn_ack_not_captured */
    if (s->flags & F_SYN) {
        if (st == CLOSED && !(s->flags & F_ACK)) {
            p->iss = p->snd_una = s->seq;
            p->snd_nxt = seq_end(s);
            snprintf(cause, sizeof cause, "snd SYN seq=%u", s->seq);
            return move(e, c, side, I_CONNECT, cause, s->time_ns, s->frame);
        } else if ((st == SYN_SENT || st == SYN_RECEIVED) && s->seq == p->iss) {
            if ((s->flags & F_ACK) && st == SYN_RECEIVED) { /* the SYN,ACK the table already sent */ }
            else if (st == SYN_SENT) return BAIL;                 /* syn_retransmission */
        } else if (st == SYN_RECEIVED) {
            p->iss = p->snd_una = s->seq;
            p->snd_nxt = seq_end(s);
        }
        return 0;
    }
    uint32_t end = seq_end(s);
    if (s->data_len && p->has_fin && SGE(s->seq, p->fin_seq + 1)) return BAIL;   /* data_after_fin */
    if (s->flags & F_FIN) {
        uint32_t fseq = fin_seq_of(s);
        if (!p->has_fin && (st == ESTABLISHED || st == CLOSE_WAIT || st == SYN_RECEIVED)) {
            p->fin_seq = fseq;
            p->has_fin = 1;
            p->snd_nxt = fseq + 1;
            snprintf(cause, sizeof cause, "snd FIN seq=%u", fseq);
            return move(e, c, side, I_CLOSE, cause, s->time_ns, s->frame);
        }
        if (p->has_fin) return BAIL;        /* fin_retransmission or duplicate_fin */
    }
    if (SGT(end, p->snd_nxt)) p->snd_nxt = end;
    return 0;
}

static int process_ack(Engine *e, conn_t *c, int side, const ev_t *s, int64_t now) {
    cep_t *p = &c->ep[side];
    char cause[96];
    int st = p->state;
    uint32_t ack = s->ack;
    if (st == SYN_RECEIVED) {
        if (SLT(p->snd_una, ack) && SLE(ack, p->snd_nxt)) {
            p->snd_una = ack;
            snprintf(cause, sizeof cause, "rcv ACK ack=%u", ack);
            int r = move(e, c, side, I_RCV_ACK_OF_SYN, cause, now, s->frame);
            if (r) return r;
            st = p->state;
        } else return BAIL;                    /* unacceptable_ack */
    }
    if (SGT(ack, p->snd_nxt)) {
        char detail[160];
        int r;
        if (p->has_fin && SGT(ack, p->fin_seq + 1)) {
            snprintf(detail, sizeof detail, "ack=%u is past FIN seq=%u: nothing follows a FIN, expected at most %u",
                     ack, p->fin_seq, p->fin_seq + 1);
            r = anomaly(e, c, side, "ack_beyond_fin", detail, now, s->frame);
        } else {
            snprintf(detail, sizeof detail, "ack=%u beyond what the capture shows sent (snd_nxt=%u)", ack, p->snd_nxt);
            r = anomaly(e, c, side, "acked_unseen_segment", detail, now, s->frame);
        }
        if (r) return r;
        p->snd_nxt = ack;
    }
    if (SLT(p->snd_una, ack)) p->snd_una = ack;
    if (p->has_fin && (st == FIN_WAIT_1 || st == CLOSING || st == LAST_ACK) && SGE(p->snd_una, p->fin_seq + 1)) {
        snprintf(cause, sizeof cause, "rcv ACK ack=%u of FIN seq=%u", ack, p->fin_seq);
        return move(e, c, side, I_RCV_ACK_OF_FIN, cause, now, s->frame);
    }
    return 0;
}

static int receive_call(Engine *e, conn_t *c, int side, const ev_t *s, int64_t now) {
    cep_t *p = &c->ep[side];
    char cause[96];
    int st = p->state, r;
    uint8_t f = s->flags;
    if (st == CLOSED) {
        if (!((f & F_SYN) && !(f & F_ACK))) return BAIL;      /* segment_after_close */
        return 0;
    }
    if (st == LISTEN) {
        if ((f & F_RST) || (f & F_ACK) || !(f & F_SYN)) return 0;
        p->irs = s->seq;
        p->rcv_nxt = seq_end(s);
        p->snd_una = p->iss;
        p->snd_nxt = p->iss + 1;
        snprintf(cause, sizeof cause, "rcv SYN seq=%u", s->seq);
        return move(e, c, side, I_RCV_SYN, cause, now, s->frame);
    }
    if (st == SYN_SENT) {
        int ack_ok = 0;
        if (f & F_ACK) {
            if (SLE(s->ack, p->iss) || SGT(s->ack, p->snd_nxt)) return BAIL;   /* unacceptable_ack */
            ack_ok = 1;
        }
        if (f & F_RST) {
            if (ack_ok) {
                snprintf(cause, sizeof cause, "rcv RST,ACK ack=%u", s->ack);
                return move(e, c, side, I_RCV_RST, cause, now, s->frame);
            }
            return 0;
        }
        if (!(f & F_SYN)) return 0;
        p->irs = s->seq;
        p->rcv_nxt = s->seq + 1;
        if (ack_ok) {
            p->snd_una = s->ack;
            snprintf(cause, sizeof cause, "rcv SYN,ACK seq=%u ack=%u", s->seq, s->ack);
            return move(e, c, side, I_RCV_SYN_ACK, cause, now, s->frame);
        }
        snprintf(cause, sizeof cause, "rcv SYN seq=%u", s->seq);
        return move(e, c, side, I_RCV_SYN, cause, now, s->frame);
    }
    if (st == TIME_WAIT) {
        if ((f & F_SYN) && !(f & F_ACK) && !(f & F_RST) && SGT(s->seq, p->rcv_nxt)) {
            snprintf(cause, sizeof cause, "rcv SYN seq=%u (above rcv_nxt=%u)", s->seq, p->rcv_nxt);
            return move(e, c, side, I_RCV_NEW_SYN, cause, now, s->frame);
        }
        if (f & F_RST) {
            if (s->seq != p->rcv_nxt) return BAIL;             /* rst_out_of_window */
            snprintf(cause, sizeof cause, "rcv RST seq=%u", s->seq);
            return move(e, c, side, I_RCV_RST, cause, now, s->frame);
        }
        if ((f & F_FIN) || s->data_len) return BAIL;          /* time_wait_reack, retransmission... */
        return 0;
    }
    /* synchronized states */
    if (st == SYN_RECEIVED && (f & F_SYN) && !(f & F_ACK) && s->seq == p->irs) return 0;
    int ok = acceptable(s->seq, seg_len(s), p->rcv_nxt, RCV_WND);
    if (!ok && SGT(s->seq, p->rcv_nxt)) ok = 1;
    if (f & F_RST) {
        if (s->seq != p->rcv_nxt) return BAIL;                /* rst_not_exact, rst_out_of_window */
        int inp = (st == SYN_RECEIVED && p->passive) ? I_RCV_RST_PASSIVE : I_RCV_RST;
        snprintf(cause, sizeof cause, "rcv RST seq=%u", s->seq);
        return move(e, c, side, inp, cause, now, s->frame);
    }
    if (!ok) {
        if ((f & F_FIN) && p->has_peer_fin && fin_seq_of(s) == p->peer_fin_seq) return 0;
        if (seg_len(s)) {
            char d[96], detail[192];
            describe(s, d, sizeof d);
            if (SLE(seq_end(s), p->rcv_nxt)) {
                snprintf(detail, sizeof detail, "%s already received (rcv_nxt=%u)", d, p->rcv_nxt);
                return anomaly(e, c, side, "retransmission", detail, now, s->frame);
            }
            snprintf(detail, sizeof detail, "%s outside the receive window (rcv_nxt=%u)", d, p->rcv_nxt);
            return anomaly(e, c, side, "unacceptable_segment", detail, now, s->frame);
        }
        return 0;
    }
    if (f & F_SYN) return BAIL;                               /* syn_in_window */
    if (!(f & F_ACK)) return BAIL;                            /* no_ack_flag */
    r = process_ack(e, c, side, s, now);
    if (r) return r;
    if (p->state == CLOSED) return 0;
    if (s->data_len) {
        if (p->state != ESTABLISHED && p->state != FIN_WAIT_1 && p->state != FIN_WAIT_2) return BAIL;
        int64_t lead = ssub(p->rcv_nxt, s->seq);
        if (lead < 0) {
            char detail[128];
            snprintf(detail, sizeof detail, "seq=%u but rcv_nxt=%u: %lld bytes missing", s->seq, p->rcv_nxt,
                     (long long)-lead);
            if ((r = anomaly(e, c, side, "previous_segment_not_captured", detail, now, s->frame))) return r;
            lead = 0;
        }
        if (lead < (int64_t)s->data_len) p->rcv_nxt = s->seq + s->data_len;
    }
    if (f & F_FIN) {
        uint32_t fseq = fin_seq_of(s);
        int64_t gap = ssub(fseq, p->rcv_nxt);
        if (gap > 0) {
            char detail[128];
            snprintf(detail, sizeof detail, "FIN seq=%u but rcv_nxt=%u: %lld bytes missing", fseq, p->rcv_nxt,
                     (long long)gap);
            if ((r = anomaly(e, c, side, "previous_segment_not_captured", detail, now, s->frame))) return r;
            gap = 0;
        }
        if (gap == 0) {
            p->rcv_nxt = fseq + 1;
            p->peer_fin_seq = fseq;
            p->has_peer_fin = 1;
            snprintf(cause, sizeof cause, "rcv FIN seq=%u", fseq);
            return move(e, c, side, I_RCV_FIN, cause, now, s->frame);
        }
    }
    return 0;
}

/* Endpoint.receive and Endpoint.observe_send: one Result each */
static int receive(Engine *e, conn_t *c, int side, const ev_t *s, int64_t now) {
    return end_call(e, receive_call(e, c, side, s, now));
}

static int observe_send(Engine *e, conn_t *c, int side, const ev_t *s) {
    return end_call(e, observe_send_call(e, c, side, s));
}

static int handle_timer(Engine *e, conn_t *c, int side, int64_t now) {
    cep_t *p = &c->ep[side];
    if (p->time_wait_at >= 0 && now >= p->time_wait_at)
        return move(e, c, side, I_TIMEOUT_2MSL, e->cause_2msl, now, -1);
    return 0;
}

/* ------------------------------------------------------------------ the connection (rawfin/core/observer.py) */

static void hold(conn_t *c, held_t *h, const ev_t *s) {
    h->seg = *s;
    h->present = 1;
    h->crossed = 0;
    h->order = ++c->hold_seq;
}

static int flush(Engine *e, conn_t *c, int side, const ev_t *now_seg, int from_side) {
    held_t h = c->pending[side];
    c->pending[side].present = 0;
    cep_t *rx = &c->ep[side];
    if (rx->state == CLOSED && !(h.seg.flags & F_SYN)) return 0;
    const ev_t *when = (h.crossed && now_seg) ? now_seg : &h.seg;
    if (h.seg.flags & F_SYN) {
        rx->state = LISTEN;
        int answered = now_seg && (now_seg->flags & F_SYN) && from_side == side;
        if (h.seg.data_len) return BAIL;
        if (!answered) return BAIL;                           /* syn_ack_not_captured follows */
        return receive(e, c, side, &h.seg, h.seg.time_ns);
    }
    ev_t fin = h.seg;
    fin.seq = fin_seq_of(&h.seg);
    fin.data_len = 0;
    fin.flags = (uint8_t)(F_FIN | (h.seg.flags & F_ACK));
    fin.frame = when->frame;
    fin.time_ns = when->time_ns;
    return receive(e, c, side, &fin, when->time_ns);
}

static int deliver_final_ack(Engine *e, conn_t *c, int side) {
    ev_t s = c->held_ack[side].seg;
    c->held_ack[side].present = 0;
    return receive(e, c, side, &s, s.time_ns);
}

/* a settled connection's history will not grow much: give back the slack */
static void settle(conn_t *c) {
    c->tw = 1;
    if (c->caplog > c->nlog + 2) {
        ev_t *p = realloc(c->log, (c->nlog + 2) * sizeof(ev_t));
        if (p) { c->log = p; c->caplog = c->nlog + 2; }
    }
}

static int fins_complete(const conn_t *c) {
    if (c->nfins < 2) return 0;
    for (int i = 0; i < 2; i++) {
        const cep_t *p = &c->ep[i];
        if (!p->has_fin || SLT(p->snd_una, p->fin_seq + 1)) return 0;
    }
    return 1;
}

static int settled(const conn_t *c) {
    if (c->pending[0].present || c->pending[1].present || c->held_ack[0].present || c->held_ack[1].present)
        return 0;
    if (!fins_complete(c)) return 0;
    int s0 = c->ep[0].state, s1 = c->ep[1].state;
    if (s0 != TIME_WAIT && s1 != TIME_WAIT) return 0;
    return (s0 == TIME_WAIT || s0 == CLOSED) && (s1 == TIME_WAIT || s1 == CLOSED);
}

static int64_t next_deadline(const conn_t *c, const Engine *e) {
    int64_t d = -1;
    for (int i = 0; i < 2; i++) {
        int64_t t = c->ep[i].time_wait_at;
        if (t >= 0 && (d < 0 || t < d)) d = t;
    }
    for (int i = 0; i < 2; i++)
        if (c->held_ack[i].present) {
            int64_t t = c->held_ack[i].seg.time_ns + e->hold_ns;
            if (d < 0 || t < d) d = t;
        }
    return d;
}

static int all_closed(const conn_t *c) { return c->ep[0].state == CLOSED && c->ep[1].state == CLOSED; }

/* Connection.fast: in-order data or a plain ACK on an established connection */
static int fast(conn_t *c, const ev_t *s, int dir) {
    if ((s->flags & 0x17) != 0x10 || c->nfins || c->pending[0].present || c->pending[1].present || c->tw) return 0;
    if (!(c->seen & (dir == 0 ? 1 : 2))) return 0;
    cep_t *rx = &c->ep[1 - dir], *tx = &c->ep[dir];
    if (tx->state != ESTABLISHED || rx->state != ESTABLISHED || s->seq != rx->rcv_nxt) return 0;
    if (s->ack != rx->snd_nxt && !between_incl(rx->snd_una, s->ack, rx->snd_nxt)) return 0;
    c->packets++;
    c->last_frame = s->frame;
    c->last_ns = s->time_ns;
    uint32_t end = s->seq + s->data_len;
    rx->rcv_nxt = end;
    if (SGT(end, tx->snd_nxt)) tx->snd_nxt = end;
    rx->snd_una = s->ack;
    return 1;
}

/* Connection.process, for a connection that opened with a SYN (side 0 is the client) */
static int process(Engine *e, conn_t *c, const ev_t *s, int dir) {
    int r;
    int64_t now = s->time_ns;
    if (c->tw) return BAIL;                     /* TimeWait.process: Python's */
    e->rst_from_syn_sent = 0;
    c->packets++;
    c->last_frame = s->frame;
    c->last_ns = now;
    int src = dir, dst = 1 - dir;
    uint8_t sbit = (uint8_t)(src == 0 ? 1 : 2), dbit = (uint8_t)(3 - sbit);
    c->seen |= sbit;
    cep_t *tx = &c->ep[src], *rx = &c->ep[dst];
    uint8_t f = s->flags;
    if (!(c->known & dbit)) {                   /* picked up mid-stream: what each side expects */
        rx->rcv_nxt = rx->irs = s->seq;
        c->known |= dbit;
    }
    if ((f & F_ACK) && !(c->known & sbit)) {
        tx->rcv_nxt = tx->irs = s->ack;
        c->known |= sbit;
    }
    if ((f & F_ACK) && !rx->snd_nxt && rx->state == ESTABLISHED && c->mid) rx->snd_una = rx->snd_nxt = s->ack;
    if (c->nfins) {
        int first = c->fin_side[0];
        uint32_t first_fin = c->fin_seqv[0];
        if (src != first) {
            if (s->data_len && !tx->has_fin) c->data_after_first_fin = 1;
            if (f & F_ACK) {                    /* _check_fin_ack */
                if (s->ack == first_fin + 1) {
                    if (!(f & F_FIN) && !tx->has_fin) c->first_fin_acked_alone = 1;
                    c->ncand = 0;
                } else if (s->ack == first_fin) {
                    if (c->ncand >= MAXCAND) return BAIL;
                    c->ncand++;                 /* reported (by Python) only if it still matters at the end */
                }
            }
        }
    }
    if ((f & F_FIN) && !(c->nfins && c->fin_side[0] == src) && !(c->nfins == 2 && c->fin_side[1] == src)) {
        if (c->nfins >= 2) return BAIL;
        c->fin_side[c->nfins] = (uint8_t)src;
        c->fin_seqv[c->nfins] = fin_seq_of(s);
        c->fin_frame[c->nfins] = s->frame;
        c->nfins++;
    }
    if (f & F_RST) c->rst_seen = 1;
    held_t *hd = c->pending[dst].present ? &c->pending[dst] : NULL;
    if (hd && (f & F_FIN) && !(f & F_SYN) && !(hd->seg.flags & F_SYN) && !hd->crossed &&
        fin_seq_of(s) == fin_seq_of(&hd->seg))
        return BAIL;                            /* the FIN again: the first copy was lost */
    if (hd && !((hd->seg.flags & F_SYN) && (f & F_SYN) && s->seq == hd->seg.seq)) {
        if ((r = flush(e, c, dst, s, src))) return r;
    }
    hd = c->pending[src].present ? &c->pending[src] : NULL;
    if (hd) {
        if ((hd->seg.flags & F_SYN) && (f & F_RST) && (f & F_ACK) && s->ack == seq_end(&hd->seg)) {
            hd->present = 0;                    /* refused: nobody was listening */
        } else if ((hd->seg.flags & F_SYN) && (f & F_RST)) {
            /* an RST that does not answer the SYN */
        } else if ((f & F_ACK) && SGE(s->ack, seq_end(&hd->seg))) {
            if ((r = flush(e, c, src, s, src))) return r;
        } else {
            hd->crossed = 1;
        }
    }
    if (c->held_ack[src].present) {
        if ((f & F_FIN) && tx->has_fin && fin_seq_of(s) == tx->fin_seq) return BAIL;   /* final_ack_lost */
        if ((r = deliver_final_ack(e, c, src))) return r;
    }
    if (c->held_ack[dst].present && (r = deliver_final_ack(e, c, dst))) return r;
    if ((r = observe_send(e, c, src, s))) return r;
    if (e->hold_ns && rx->state == LAST_ACK && (f & 0x17) == 0x10 && !s->data_len && rx->has_fin &&
        SGE(s->ack, rx->fin_seq + 1)) {
        hold(c, &c->held_ack[dst], s);
    } else if ((f & F_SYN) && !(f & F_ACK) && rx->passive && rx->state == CLOSED && src == c->client) {
        if (!c->pending[dst].present) hold(c, &c->pending[dst], s);
    } else if ((f & F_FIN) && !(f & F_SYN)) {
        ev_t nf = *s;
        nf.flags &= (uint8_t)~F_FIN;
        if ((r = receive(e, c, dst, &nf, now))) return r;
        hold(c, &c->pending[dst], s);
    } else {
        if ((r = receive(e, c, dst, s, now))) return r;
    }
    if ((f & F_RST) && rx->state == CLOSED && dst == c->client && e->rst_from_syn_sent) c->refused = 1;
    return 0;
}

static int fire_timers(Engine *e, conn_t *c, int64_t until) {
    int r;
    if (!c->tw) {
        /* held final ACKs, in the order they were held */
        int order[2] = {0, 1};
        if (c->held_ack[0].present && c->held_ack[1].present && c->held_ack[1].order < c->held_ack[0].order) {
            order[0] = 1; order[1] = 0;
        }
        for (int k = 0; k < 2; k++) {
            int i = order[k];
            if (c->held_ack[i].present && c->held_ack[i].seg.time_ns + e->hold_ns <= until)
                if ((r = deliver_final_ack(e, c, i))) return r;
        }
        for (int i = 0; i < 2; i++) {
            int64_t d = c->ep[i].time_wait_at;
            if (d >= 0 && d <= until && (r = handle_timer(e, c, i, d))) return r;
        }
    } else {
        for (int k = 0; k < 2; k++) {           /* TimeWait: in the order of the key */
            int i = k == 0 ? c->ka : 1 - c->ka;
            cep_t *p = &c->ep[i];
            if (p->state == TIME_WAIT && p->time_wait_at >= 0 && p->time_wait_at <= until)
                if ((r = handle_timer(e, c, i, p->time_wait_at))) return r;
        }
    }
    return 0;
}

static int flush_all(Engine *e, conn_t *c) {
    int r;
    if (c->tw) return 0;
    int order[2] = {0, 1};
    if (c->held_ack[0].present && c->held_ack[1].present && c->held_ack[1].order < c->held_ack[0].order) {
        order[0] = 1; order[1] = 0;
    }
    for (int k = 0; k < 2; k++)
        if (c->held_ack[order[k]].present && (r = deliver_final_ack(e, c, order[k]))) return r;
    order[0] = 0; order[1] = 1;
    if (c->pending[0].present && c->pending[1].present && c->pending[1].order < c->pending[0].order) {
        order[0] = 1; order[1] = 0;
    }
    for (int k = 0; k < 2; k++) {
        int i = order[k];
        if (!c->pending[i].present) continue;
        if (c->pending[i].crossed || (c->pending[i].seg.flags & F_SYN)) { c->pending[i].present = 0; continue; }
        if ((r = flush(e, c, i, NULL, -1))) return r;
    }
    return 0;
}

static int close_kind(const conn_t *c) {
    if (c->refused) return 0;
    int fc = fins_complete(c);
    if (c->rst_seen && (c->ep[0].state == CLOSED || c->ep[1].state == CLOSED) && !fc) return 1;
    if (!c->nfins) return 2;
    if (!fc) return 3;
    if (c->closing_seen) return 4;
    if (c->data_after_first_fin) return 5;
    if (c->nfins == 2 && !c->first_fin_acked_alone) return 6;
    return 7;
}

/* can the lane write this connection's end (end_anomalies has nothing to say)? */
static int end_is_plain(const conn_t *c) {
    if (c->tw) return 1;
    /* something still held would be flushed by the end: Python's end says how */
    if (c->pending[0].present || c->pending[1].present || c->held_ack[0].present || c->held_ack[1].present)
        return 0;
    if (c->nfins) {
        int st = c->ep[c->fin_side[0]].state;
        if ((st == FIN_WAIT_1 || st == CLOSING) && c->ncand) return 0;
    }
    return c->ep[0].state != LAST_ACK && c->ep[1].state != LAST_ACK;
}

static int write_connection(Engine *e, conn_t *c) {
    int kind = close_kind(c);
    int closer = c->nfins ? c->fin_side[0] : -1;
    int cl = c->client, sv = 1 - c->client;
    int server_active = closer == sv && kind > 2;
    if (out_reserve(e, 1024 + strlen(e->file_suffix)) < 0) return -1;
    OUT_LIT(e, "{\"type\":\"connection\",\"conn\":");
    out_i64(e, c->id);
    OUT_LIT(e, ",\"client\":\"");
    out_cstr(e, c->name[cl]);
    OUT_LIT(e, "\",\"server\":\"");
    out_cstr(e, c->name[sv]);
    if (c->mid) OUT_LIT(e, "\",\"server_guessed\":true,\"active_closer\":");
    else OUT_LIT(e, "\",\"server_guessed\":false,\"active_closer\":");
    if (closer < 0) OUT_LIT(e, "null,\"passive_closer\":null");
    else {
        e->out[e->nout++] = '"';
        out_cstr(e, c->name[closer]);
        OUT_LIT(e, "\",\"passive_closer\":\"");
        out_cstr(e, c->name[1 - closer]);
        e->out[e->nout++] = '"';
    }
    OUT_LIT(e, ",\"close\":\"");
    out_cstr(e, CLOSE_NAMES[kind]);
    OUT_LIT(e, "\",\"final\":{\"");
    out_cstr(e, c->name[cl]);
    OUT_LIT(e, "\":\"");
    out_cstr(e, ST_NAME[c->ep[cl].state]);
    OUT_LIT(e, "\",\"");
    out_cstr(e, c->name[sv]);
    OUT_LIT(e, "\":\"");
    out_cstr(e, ST_NAME[c->ep[sv].state]);
    OUT_LIT(e, "\"},\"first_frame\":");
    out_i64(e, c->first_frame);
    OUT_LIT(e, ",\"last_frame\":");
    out_i64(e, c->last_frame);
    OUT_LIT(e, ",\"first_time\":");
    if (out_time(e, c->first_ns) < 0) return -1;
    OUT_LIT(e, ",\"last_time\":");
    if (out_time(e, c->last_ns) < 0) return -1;
    OUT_LIT(e, ",\"packets\":");
    out_i64(e, c->packets);
    if (c->mid) OUT_LIT(e, ",\"mid_stream\":true,\"server_active_close\":");
    else OUT_LIT(e, ",\"mid_stream\":false,\"server_active_close\":");
    if (server_active) OUT_LIT(e, "true"); else OUT_LIT(e, "false");
    OUT_LIT(e, ",\"anomalies\":{");
    {
        int idx[MAXANOM];
        for (int i = 0; i < c->nanom; i++) idx[i] = i;
        for (int i = 1; i < c->nanom; i++)          /* sorted by kind, as dict(sorted(...)) */
            for (int j = i; j > 0 && strcmp(c->anom_kind[idx[j - 1]], c->anom_kind[idx[j]]) > 0; j--) {
                int t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t;
            }
        for (int i = 0; i < c->nanom; i++) {
            if (i) e->out[e->nout++] = ',';
            e->out[e->nout++] = '"';
            out_cstr(e, c->anom_kind[idx[i]]);
            OUT_LIT(e, "\":");
            out_i64(e, c->anom_n[idx[i]]);
        }
    }
    e->out[e->nout++] = '}';
    if (c->nvlan) {
        OUT_LIT(e, ",\"vlan\":[");
        for (int i = 0; i < c->nvlan; i++) {
            if (i) e->out[e->nout++] = ',';
            out_i64(e, c->vlan[i]);
        }
        e->out[e->nout++] = ']';
    }
    out_cstr(e, e->file_suffix);
    OUT_LIT(e, "}\n");
    e->by_close[kind]++;
    if (server_active) e->server_active++;
    e->done++;
    return 0;
}

/* Observer._finish for a lane connection whose end is plain (nothing held: flush_all has nothing to do) */
static int finish_conn(Engine *e, conn_t *c) {
    if (write_connection(e, c) < 0) return -1;
    table_del(e, c);
    c->dead = 1;
    conn_release(e, c);
    return 0;
}

/* the address text of one side, as rawfin prints it (from its endpoint name) */
static void ip_text(const conn_t *c, int side, char *out, size_t n) {
    const char *name = c->name[side];
    const char *colon = strrchr(name, ':');
    size_t len = (size_t)(colon - name);
    if (c->fam == 6) { name++; len -= 2; }     /* "[v6]:port" */
    if (len >= n) len = n - 1;
    memcpy(out, name, len);
    out[len] = 0;
}

static PyObject *vlan_tuple(int nvlan, const uint16_t *vlan) {
    PyObject *t = PyTuple_New(nvlan);
    if (!t) return NULL;
    for (int i = 0; i < nvlan; i++) {
        PyObject *v = PyLong_FromLong(vlan[i]);
        if (!v) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

/* ------------------------------------------------------------------ handing a connection to Python */

static PyObject *events_list(conn_t *c) {
    PyObject *l = PyList_New(c->nlog);
    if (!l) return NULL;
    for (uint32_t i = 0; i < c->nlog; i++) {
        ev_t *v = &c->log[i];
        PyObject *t = Py_BuildValue("(iLLkkkIk)", (int)v->kind, (long long)v->frame, (long long)v->time_ns,
                                    (unsigned long)v->seq, (unsigned long)v->ack, (unsigned long)v->flags,
                                    (unsigned int)v->window, (unsigned long)v->data_len);
        if (!t) { Py_DECREF(l); return NULL; }
        PyList_SET_ITEM(l, i, t);
    }
    return l;
}

/* Replay the connection into the Python observer; returns its Python connection (new ref).
   The lane's connection stays in the table as a marker: the pair is Python's from now on. */
static PyObject *handoff(Engine *e, conn_t *c) {
    char ip0[48], ip1[48];
    e->handoffs++;
    ip_text(c, 0, ip0, sizeof ip0);
    ip_text(c, 1, ip1, sizeof ip1);
    PyObject *evs = events_list(c);
    if (!evs) return NULL;
    PyObject *vt = vlan_tuple(c->nvlan, c->vlan);
    if (!vt) { Py_DECREF(evs); return NULL; }
    PyObject *pc = PyObject_CallMethod(e->obs, "adopt", "LN(si)(si)LN", (long long)c->id, evs, ip0,
                                       (int)c->port[0], ip1, (int)c->port[1], (long long)c->queued, vt);
    if (!pc) return NULL;
    PyObject *key = PyObject_GetAttrString(pc, "key");
    if (!key) { Py_DECREF(pc); return NULL; }
    /* the lane's heap entry (if any) goes stale; the marker keeps the pair routed to Python */
    conn_t *m = conn_new(e);
    if (!m) { Py_DECREF(key); Py_DECREF(pc); return NULL; }
    memcpy(m->key, c->key, KEYLEN);
    m->hash = c->hash;
    m->python = 1;
    m->pykey = key;
    table_del(e, c);
    c->dead = 1;
    conn_release(e, c);
    if (table_put(e, m) < 0) { Py_DECREF(pc); return NULL; }
    return pc;
}

/* ------------------------------------------------------------------ the observer's loop */

static PyObject *py_segment(Engine *e, const ev_t *s, const char *src, int sport, const char *dst, int dport,
                            int nvlan, const uint16_t *vlan) {
    PyObject *vt = vlan_tuple(nvlan, vlan);
    if (!vt) return NULL;
    return PyObject_CallFunction(e->make_seg, "ssiikkiiyLLLN", src, dst, sport, dport, (unsigned long)s->seq,
                                 (unsigned long)s->ack, (int)s->flags, (int)s->window, "",
                                 (long long)s->data_len, (long long)s->frame, (long long)s->time_ns, vt);
}

static int sync_id_to_py(Engine *e) {
    PyObject *v = PyLong_FromLongLong(e->next_id);
    if (!v) return -1;
    int r = PyObject_SetAttrString(e->obs, "next_id", v);
    Py_DECREF(v);
    return r;
}

static int sync_id_from_py(Engine *e) {
    PyObject *v = PyObject_GetAttrString(e->obs, "next_id");
    if (!v) return -1;
    long long n = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (n == -1 && PyErr_Occurred()) return -1;
    e->next_id = n;
    return 0;
}

/* pyobs.feed(seg), with the shared connection numbering */
static int py_feed(Engine *e, PyObject *seg) {
    if (sync_id_to_py(e) < 0) return -1;
    PyObject *recs = PyObject_CallMethod(e->obs, "feed", "O", seg);
    if (!recs) return -1;
    if (out_pyrecords(e, recs) < 0) return -1;
    e->py_calls++;
    return sync_id_from_py(e);
}

/* Observer._expire, the lane's heap and Python's merged in (deadline, connection id) order */
static int expire(Engine *e, int64_t now) {
    for (;;) {
        int64_t pw = -1, pid = 0;
        PyObject *timers = e->pytimers;
        if (PyList_GET_SIZE(timers)) {
            PyObject *t = PyList_GET_ITEM(timers, 0);
            pw = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 0));
            pid = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 1));
        }
        int c_due = e->nheap && e->heap[0].when <= now;
        int p_due = pw >= 0 && pw <= now;
        if (!c_due && !p_due) return 0;
        if (p_due && (!c_due || pw < e->heap[0].when || (pw == e->heap[0].when && pid < e->heap[0].id))) {
            PyObject *recs = PyObject_CallMethod(e->obs, "expire_one", "L", (long long)now);
            if (out_pyrecords(e, recs) < 0) return -1;
            continue;
        }
        if (e->nout > (1 << 20) && out_flush(e) < 0) return -1;
        hent_t h = heap_pop(e);
        conn_t *c = h.c;
        c->heaprefs--;
        if (c->dead || c->id != h.id || c->queued != h.when) {
            if (c->dead) conn_release(e, c);
            continue;
        }
        c->queued = -1;
        ev_t fire = {h.when, -1, 0, 0, 0, 0, 0, 2};
        size_t mark = e->nout;
        int r = fire_timers(e, c, h.when);
        if (r == ERR) return -1;
        if (r == 0) {
            if (log_add(c, &fire) < 0) return -1;
            if (!c->tw && settled(c)) settle(c);
            int64_t nd = next_deadline(c, e);
            if (nd >= 0) {
                if (schedule(e, c, nd > h.when + 1 ? nd : h.when + 1) < 0) return -1;
                continue;
            }
            if (all_closed(c)) {
                int64_t quiet = c->last_ns + e->linger_ns;
                if (quiet <= now) {
                    if (!end_is_plain(c)) r = BAIL;
                    else if (finish_conn(e, c) < 0) return -1;
                    else continue;
                } else {
                    if (schedule(e, c, quiet) < 0) return -1;
                    continue;
                }
            } else continue;
        }
        /* BAIL: Python takes the connection, then this timer */
        e->nout = mark;
        int64_t q = h.when;
        PyObject *pc = handoff(e, c);
        if (!pc) return -1;
        PyObject *recs = PyObject_CallMethod(e->obs, "fire_entry", "OLL", pc, (long long)q, (long long)now);
        Py_DECREF(pc);
        if (out_pyrecords(e, recs) < 0) return -1;
    }
}

static int fmt_names(Engine *e, conn_t *c) {
    char ip[2][48];
    for (int i = 0; i < 2; i++) {
        if (c->fam == 4) {
            const uint8_t *a = c->addr[i];
            snprintf(ip[i], sizeof ip[i], "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
            snprintf(c->name[i], sizeof c->name[i], "%.15s:%u", ip[i], c->port[i]);
        } else {
            PyObject *s = PyObject_CallFunction(e->fmt6, "y#", (const char *)c->addr[i], (Py_ssize_t)16);
            if (!s) return -1;
            const char *u = PyUnicode_AsUTF8(s);
            if (!u) { Py_DECREF(s); return -1; }
            snprintf(ip[i], sizeof ip[i], "%s", u);
            snprintf(c->name[i], sizeof c->name[i], "[%.45s]:%u", u, c->port[i]);
            Py_DECREF(s);
        }
    }
    /* the Python key's order: (ip text, port) tuples compared */
    int cmp = strcmp(ip[0], ip[1]);
    c->ka = (cmp < 0 || (cmp == 0 && c->port[0] <= c->port[1])) ? 0 : 1;
    return 0;
}

/* the address text of a raw address, as rawfin prints it */
static int addr_text(Engine *e, int fam, const uint8_t *a, char *out, size_t n) {
    if (fam == 4) {
        snprintf(out, n, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
        return 0;
    }
    PyObject *t = PyObject_CallFunction(e->fmt6, "y#", (const char *)a, (Py_ssize_t)16);
    if (!t) return -1;
    const char *u = PyUnicode_AsUTF8(t);
    if (!u) { Py_DECREF(t); return -1; }
    snprintf(out, n, "%s", u);
    Py_DECREF(t);
    return 0;
}

/* does the Python observer hold a VLAN-tagged connection of this 4-tuple (Observer.by_tuple)? */
static int py_has_tuple(Engine *e, int fam, const uint8_t *src, uint16_t sport, const uint8_t *dst, uint16_t dport) {
    char a[48], b[48];
    if (addr_text(e, fam, src, a, sizeof a) < 0 || addr_text(e, fam, dst, b, sizeof b) < 0) return -1;
    PyObject *x = Py_BuildValue("(si)", a, (int)sport), *y = Py_BuildValue("(si)", b, (int)dport);
    if (!x || !y) { Py_XDECREF(x); Py_XDECREF(y); return -1; }
    int le = PyObject_RichCompareBool(x, y, Py_LE);
    PyObject *k = le < 0 ? NULL : (le ? PyTuple_Pack(2, x, y) : PyTuple_Pack(2, y, x));
    Py_DECREF(x);
    Py_DECREF(y);
    if (!k) return -1;
    PyObject *bt = PyObject_GetAttrString(e->obs, "by_tuple");
    int has = bt ? PySequence_Contains(bt, k) : -1;
    Py_XDECREF(bt);
    Py_DECREF(k);
    return has;
}

/* One TCP segment of the capture, decoded by the lane or by Python.
   ``pyseg``: the Python Segment when Python decoded it, else NULL (made only if needed). */
static int on_segment(Engine *e, int fam, const uint8_t *src, uint16_t sport, const uint8_t *dst, uint16_t dport,
                      int nvlan, const uint16_t *vlan, ev_t *s, PyObject *pyseg) {
    int64_t now = s->time_ns;
    if (now > e->now) e->now = now;
    if (expire(e, now) < 0) return -1;     /* both heaps: the lane's and the Python observer's */
    uint8_t key[KEYLEN];
    make_key(key, fam, src, sport, dst, dport, nvlan, vlan);
    uint32_t h = hash_key(key, KEYLEN);
    conn_t *c = table_get(e, key, h);
    if (c && c->python) goto to_python;
    if (c == NULL) {
        if (nvlan) {
            /* the same 4-tuple on another VLAN (a router on a stick): Observer._adopt decides, in Python */
            conn_t *o = index4_get(e, key);
            if (o) {
                PyObject *p = handoff(e, o);
                if (!p) return -1;
                Py_DECREF(p);
                goto new_python;
            }
            int has = py_has_tuple(e, fam, src, sport, dst, dport);
            if (has < 0) return -1;
            if (has) goto new_python;
        }
        /* a new pair: the lane takes it when it opens with a plain SYN, or in mid-stream (no SYN) */
        if ((s->flags & F_SYN) && ((s->flags & (F_SYN | F_ACK | F_RST | F_FIN)) != F_SYN || s->data_len))
            goto new_python;
        c = conn_new(e);
        if (!c) return -1;
        memcpy(c->key, key, KEYLEN);
        c->hash = h;
        c->fam = (uint8_t)fam;
        int alen = fam == 4 ? 4 : 16;
        memcpy(c->addr[0], src, (size_t)alen);
        memcpy(c->addr[1], dst, (size_t)alen);
        c->port[0] = sport;
        c->port[1] = dport;
        c->nvlan = (uint8_t)nvlan;
        for (int i = 0; i < nvlan; i++) c->vlan[i] = vlan[i];
        if (fmt_names(e, c) < 0) { free(c); return -1; }
        c->id = e->next_id++;
        c->first_frame = c->last_frame = s->frame;
        c->first_ns = c->last_ns = now;
        for (int i = 0; i < 2; i++) { c->ep[i].time_wait_at = -1; c->ep[i].state = CLOSED; }
        if (s->flags & F_SYN) {
            c->ep[1].passive = 1;   /* CLOSED until its answer shows it was listening */
            c->known = 3;
        } else {
            /* Connection.__init__'s mid-stream pickup: both ESTABLISHED, the server guessed by port */
            int well0 = sport < 1024, well1 = dport < 1024;
            int server = well0 != well1 ? (well0 ? 0 : 1) : (sport <= dport ? 0 : 1);
            int ack = (s->flags & F_ACK) != 0;
            c->mid = 1;
            c->client = (uint8_t)(1 - server);
            cep_t *a = &c->ep[0], *b = &c->ep[1];
            a->state = b->state = ESTABLISHED;
            a->iss = a->snd_una = a->snd_nxt = s->seq;
            if (ack) a->irs = a->rcv_nxt = s->ack;
            b->iss = b->snd_una = b->snd_nxt = ack ? s->ack : 0;
            b->irs = b->rcv_nxt = s->seq;
            c->known = (uint8_t)((ack ? 1 : 0) | 2);
        }
        if (table_put(e, c) < 0) return -1;
        if (nvlan) index4_put(e, c);
    }
    int dir;
    {
        int alen = fam == 4 ? 4 : 16;
        dir = (memcmp(c->addr[0], src, (size_t)alen) == 0 && c->port[0] == sport) ? 0 : 1;
    }
    s->kind = (uint8_t)dir;
    if ((s->flags & F_SYN) && !(s->flags & F_ACK) && c->nlog) goto bail;   /* a new connection? Python decides */
    if (fast(c, s, dir)) return log_add(c, s);
    {
        size_t mark = e->nout;
        int r = process(e, c, s, dir);
        if (r == ERR) return -1;
        if (r == BAIL) { e->nout = mark; goto bail; }
        if (log_add(c, s) < 0) return -1;
        if (!c->tw && settled(c)) settle(c);
        int64_t d = next_deadline(c, e);
        if (d >= 0) { if (schedule(e, c, d) < 0) return -1; }
        else if (all_closed(c)) { if (schedule(e, c, now + e->linger_ns) < 0) return -1; }
        if (e->nout > (1 << 20)) return out_flush(e);
        return 0;
    }
bail:
    if (!c->nlog) {
        /* its very first segment: nothing to replay; Python makes the connection, with this id */
        e->next_id = c->id;
        table_del(e, c);
        c->dead = 1;
        conn_release(e, c);
        goto new_python;
    }
    {
        /* restore what process() changed: the log is the truth; Python replays it */
        PyObject *owned = handoff(e, c);
        if (!owned) return -1;
        Py_DECREF(owned);
        goto to_python;
    }
new_python:
    {
        conn_t *m = conn_new(e);
        if (!m) return -1;
        memcpy(m->key, key, KEYLEN);
        m->hash = h;
        m->python = 1;
        if (table_put(e, m) < 0) return -1;
        c = m;
    }
to_python:
    {
        PyObject *seg = pyseg;
        if (!seg) {
            char sip[48], dip[48];
            if (addr_text(e, fam, src, sip, sizeof sip) < 0 || addr_text(e, fam, dst, dip, sizeof dip) < 0) return -1;
            seg = py_segment(e, s, sip, sport, dip, dport, nvlan, vlan);
            if (!seg) return -1;
        } else Py_INCREF(seg);
        int r = py_feed(e, seg);
        if (r == 0 && c->python && !c->pykey) {
            c->pykey = PyObject_CallMethod(e->obs, "key_of", "O", seg);
            if (!c->pykey) r = -1;
        }
        Py_DECREF(seg);
        return r;
    }
}

/* markers of pairs whose Python connection has finished: let them go */
static int sweep_markers(Engine *e) {
    PyObject *active = PyObject_GetAttrString(e->obs, "active");
    if (!active) return -1;
    for (uint32_t i = 0; i < e->nbuckets; i++) {
        conn_t **pp = &e->buckets[i];
        while (*pp) {
            conn_t *c = *pp;
            if (c->python && c->pykey) {
                int has = PyDict_Contains(active, c->pykey);
                if (has < 0) { Py_DECREF(active); return -1; }
                if (!has) {
                    *pp = c->next;
                    e->nconns--;
                    c->dead = 1;
                    conn_release(e, c);
                    continue;
                }
            }
            pp = &c->next;
        }
    }
    Py_DECREF(active);
    return 0;
}

/* ------------------------------------------------------------------ decoding */

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static inline int vlan_tpid(int et) {
    return et == 0x8100 || et == 0x88A8 || et == 0x9100 || et == 0x9200 || et == 0x9300;
}

/* One captured frame. The lane decodes Ethernet (with up to two VLAN tags) + IPv4 (no options) + TCP
   and Ethernet + IPv6 + TCP (no extension headers) exactly as rawfin.decode's first branches do;
   everything else goes to rawfin.decode.decode itself. */
static int on_frame(Engine *e, int linktype, const uint8_t *d, Py_ssize_t n, int64_t orig_len, int64_t frame,
                    int64_t time_ns) {
    e->frames++;
    if (!e->have_first) { e->first_time = time_ns; e->have_first = 1; }
    int64_t off = -1;
    int et = 0, nv = 0;
    uint16_t vl[MAXVLAN];
    if (linktype == 1 && n >= 14) { et = be16(d + 12); off = 14; }                         /* Ethernet */
    else if (linktype == 113 && n >= 16 && be16(d + 2) != 824) { et = be16(d + 14); off = 16; }  /* SLL */
    else if (linktype == 276 && n >= 20 && be16(d + 8) != 824) { et = be16(d); off = 20; }       /* SLL2 */
    else if ((linktype == 101 || linktype == 12 || linktype == 14) && n >= 1 && (d[0] >> 4 == 4 || d[0] >> 4 == 6)) {
        et = d[0] >> 4 == 4 ? 0x0800 : 0x86DD;                                               /* raw IP */
        off = 0;
    } else if (linktype == 228) { et = 0x0800; off = 0; }
    else if (linktype == 229) { et = 0x86DD; off = 0; }
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
                    ev_t s = {time_ns, frame, be32(t + 4), be32(t + 8), (uint32_t)data_len, be16(t + 14), t[13], 0};
                    e->tcp++;
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
                return on_segment(e, 6, ip + 8, be16(t), ip + 24, be16(t + 2), nv, vl, &s, NULL);
            }
        }
    }
    /* the reference decoder */
    PyObject *r = PyObject_CallFunction(e->decode, "iy#LLL", linktype, (const char *)d, n, (long long)orig_len,
                                        (long long)frame, (long long)time_ns);
    if (!r) return -1;
    PyObject *vlan = PyObject_GetAttrString(r, "vlan");
    if (!vlan) {
        /* a Skip: counted (and reported when malformed) by the Python observer */
        PyErr_Clear();
        PyObject *kind = PyObject_GetAttrString(r, "kind");
        PyObject *reason = kind ? PyObject_GetAttrString(r, "reason") : NULL;
        if (!reason) { Py_XDECREF(kind); Py_DECREF(r); return -1; }
        PyObject *recs = PyObject_CallMethod(e->obs, "note_skip", "OLLO", kind, (long long)frame, (long long)time_ns,
                                             reason);
        Py_DECREF(kind);
        Py_DECREF(reason);
        Py_DECREF(r);
        return out_pyrecords(e, recs);
    }
    e->tcp++;
    Py_ssize_t nvt = PyTuple_Check(vlan) ? PyTuple_GET_SIZE(vlan) : -1;
    for (Py_ssize_t k = 0; k >= 0 && k < nvt && k < MAXVLAN; k++)
        vl[k] = (uint16_t)PyLong_AsLong(PyTuple_GET_ITEM(vlan, k));
    Py_DECREF(vlan);
    if (nvt < 0 || nvt > MAXVLAN) {     /* more VLAN tags than the lane keeps: Python's */
        int64_t now = time_ns;
        if (now > e->now) e->now = now;
        int rr = expire(e, now);
        if (rr == 0) rr = py_feed(e, r);
        Py_DECREF(r);
        return rr;
    }
    /* a segment Python decoded: into the lane's table by its addresses */
    PyObject *a_src = PyObject_GetAttrString(r, "src"), *a_dst = PyObject_GetAttrString(r, "dst");
    PyObject *o_sp = PyObject_GetAttrString(r, "sport"), *o_dp = PyObject_GetAttrString(r, "dport");
    PyObject *o_seq = PyObject_GetAttrString(r, "seq"), *o_ack = PyObject_GetAttrString(r, "ack");
    PyObject *o_fl = PyObject_GetAttrString(r, "flags"), *o_win = PyObject_GetAttrString(r, "window");
    PyObject *o_dl = PyObject_GetAttrString(r, "data_len");
    int rc = -1;
    if (a_src && a_dst && o_sp && o_dp && o_seq && o_ack && o_fl && o_win && o_dl) {
        const char *ss = PyUnicode_AsUTF8(a_src), *ds = PyUnicode_AsUTF8(a_dst);
        uint8_t sa[16] = {0}, da[16] = {0};
        int fam = (ss && strchr(ss, ':')) ? 6 : 4;
        PyObject *packed = NULL;
        if (ss && ds && inet_pton(fam == 4 ? AF_INET : AF_INET6, ss, sa) == 1 &&
            inet_pton(fam == 4 ? AF_INET : AF_INET6, ds, da) == 1)
            packed = Py_None;
        if (packed) {
            ev_t s = {time_ns, frame, (uint32_t)PyLong_AsUnsignedLong(o_seq), (uint32_t)PyLong_AsUnsignedLong(o_ack),
                      (uint32_t)PyLong_AsLongLong(o_dl), (uint16_t)PyLong_AsLong(o_win),
                      (uint8_t)PyLong_AsLong(o_fl), 0};
            if (!PyErr_Occurred())
                rc = on_segment(e, fam, sa, (uint16_t)PyLong_AsLong(o_sp), da, (uint16_t)PyLong_AsLong(o_dp),
                                (int)nvt, vl, &s, r);
        }
    }
    Py_XDECREF(a_src); Py_XDECREF(a_dst); Py_XDECREF(o_sp); Py_XDECREF(o_dp); Py_XDECREF(o_seq);
    Py_XDECREF(o_ack); Py_XDECREF(o_fl); Py_XDECREF(o_win); Py_XDECREF(o_dl);
    Py_DECREF(r);
    return rc;
}

/* ------------------------------------------------------------------ the end of the capture */


/* Observer.finish over both kinds of connection, in connection-id order */
typedef struct { int64_t id; conn_t *c; PyObject *p; } item_t;

static int cmp_item(const void *a, const void *b) {
    int64_t x = ((const item_t *)a)->id, y = ((const item_t *)b)->id;
    return x < y ? -1 : x > y;
}

static int finish_all(Engine *e) {
    PyObject *pyconns = PyObject_CallMethod(e->obs, "end_conns", NULL);
    if (!pyconns) return -1;
    Py_ssize_t np = PyList_GET_SIZE(pyconns);
    size_t n = 0, cap = (size_t)e->nconns + (size_t)np + 1;
    item_t *it = calloc(cap, sizeof(item_t));
    if (!it) { Py_DECREF(pyconns); PyErr_NoMemory(); return -1; }
    for (uint32_t i = 0; i < e->nbuckets; i++)
        for (conn_t *c = e->buckets[i]; c; c = c->next)
            if (!c->python) { it[n].id = c->id; it[n].c = c; n++; }
    for (Py_ssize_t j = 0; j < np; j++) {
        PyObject *pc = PyList_GET_ITEM(pyconns, j);
        PyObject *idv = PyObject_GetAttrString(pc, "id");
        if (!idv) goto fail;
        it[n].id = PyLong_AsLongLong(idv);
        Py_DECREF(idv);
        Py_INCREF(pc);
        it[n].p = pc;
        n++;
    }
    qsort(it, n, sizeof(item_t), cmp_item);
    for (size_t k = 0; k < n; k++) {            /* pass 1: flush what is held, fire what is due */
        if (e->nout > (1 << 20) && out_flush(e) < 0) goto fail;
        if (it[k].c) {
            conn_t *c = it[k].c;
            size_t mark = e->nout;
            ev_t fa = {e->now, -1, 0, 0, 0, 0, 0, 3};
            ev_t fire = {e->now, -1, 0, 0, 0, 0, 0, 2};
            int r = flush_all(e, c);
            if (r == 0) r = fire_timers(e, c, e->now);
            if (r == ERR) goto fail;
            if (r == 0) {
                /* a settled connection's end is always the lane's: no history needed for it */
                if (!c->tw && (log_add(c, &fa) < 0 || log_add(c, &fire) < 0)) goto fail;
                continue;
            }
            e->nout = mark;
            PyObject *p = handoff(e, c);
            if (!p) goto fail;
            it[k].c = NULL;
            it[k].p = p;
        }
        PyObject *recs = PyObject_CallMethod(e->obs, "end_prepare", "OL", it[k].p, (long long)e->now);
        if (out_pyrecords(e, recs) < 0) goto fail;
    }
    for (size_t k = 0; k < n; k++) {            /* pass 2: the end of each connection */
        if (e->nout > (1 << 20) && out_flush(e) < 0) goto fail;
        if (it[k].c) {
            conn_t *c = it[k].c;
            if (end_is_plain(c)) {
                if (finish_conn(e, c) < 0) goto fail;
                continue;
            }
            /* its last words need Python (anomalies only the end can tell): replay, then Python's end.
               The log holds pass 1's flush and fire, so the replayed connection is where this one is. */
            PyObject *p = handoff(e, c);
            if (!p) goto fail;
            it[k].c = NULL;
            it[k].p = p;
        }
        PyObject *recs = PyObject_CallMethod(e->obs, "end_finish", "O", it[k].p);
        if (out_pyrecords(e, recs) < 0) goto fail;
    }
    for (size_t k = 0; k < n; k++) Py_XDECREF(it[k].p);
    free(it);
    Py_DECREF(pyconns);
    PyObject *r = PyObject_CallMethod(e->obs, "end_clear", NULL);
    if (!r) return -1;
    Py_DECREF(r);
    return out_flush(e);
fail:
    for (size_t k = 0; k < n; k++) Py_XDECREF(it[k].p);
    free(it);
    Py_DECREF(pyconns);
    return -1;
}

/* ------------------------------------------------------------------ the Python type */

static PyObject *SegmentType = NULL;

static int Engine_init(Engine *e, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"observer", "decode", "dumps", "write", "fmt6", "make_segment", "segment_type",
                             "msl_ns", "hold_ns", "file_suffix", "cause_2msl", NULL};
    PyObject *obs, *dec, *dumps, *wr, *f6, *mk, *st;
    long long msl, hold;
    const char *suffix, *c2;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOOLLss", kwlist, &obs, &dec, &dumps, &wr, &f6, &mk, &st,
                                     &msl, &hold, &suffix, &c2))
        return -1;
    if (!table_set) { PyErr_SetString(PyExc_RuntimeError, "set_table() first"); return -1; }
    if (strlen(suffix) >= sizeof e->file_suffix || strlen(c2) >= sizeof e->cause_2msl) {
        PyErr_SetString(PyExc_ValueError, "file label too long for the compiled engine");
        return -1;
    }
    Py_INCREF(obs); Py_XSETREF(e->obs, obs);
    Py_INCREF(dec); Py_XSETREF(e->decode, dec);
    Py_INCREF(dumps); Py_XSETREF(e->dumps, dumps);
    Py_INCREF(wr); Py_XSETREF(e->write, wr);
    Py_INCREF(f6); Py_XSETREF(e->fmt6, f6);
    Py_INCREF(mk); Py_XSETREF(e->make_seg, mk);
    Py_INCREF(st); Py_XSETREF(SegmentType, st);
    PyObject *timers = PyObject_GetAttrString(obs, "_timers");
    if (!timers) return -1;
    if (!PyList_Check(timers)) { Py_DECREF(timers); PyErr_SetString(PyExc_TypeError, "observer._timers"); return -1; }
    Py_XSETREF(e->pytimers, timers);
    e->msl_ns = msl;
    e->hold_ns = hold;
    e->linger_ns = 2 * msl;
    strcpy(e->file_suffix, suffix);
    strcpy(e->cause_2msl, c2);
    e->nbuckets = 1 << 16;
    free(e->buckets);
    e->buckets = calloc(e->nbuckets, sizeof(conn_t *));
    free(e->buckets4);
    e->buckets4 = calloc(NBUCKETS4, sizeof(conn_t *));
    if (!e->buckets || !e->buckets4) { PyErr_NoMemory(); return -1; }
    return 0;
}

static void Engine_dealloc(Engine *e) {
    /* first the finished connections only heap entries still name (the table holds live ones) */
    for (uint32_t i = 0; i < e->nheap; i++) {
        conn_t *c = e->heap[i].c;
        if (c && c->dead && --c->heaprefs == 0) { free(c->log); Py_XDECREF(c->pykey); free(c); }
    }
    free(e->heap);
    if (e->buckets) {
        for (uint32_t i = 0; i < e->nbuckets; i++) {
            conn_t *c = e->buckets[i];
            while (c) { conn_t *nx = c->next; free(c->log); Py_XDECREF(c->pykey); free(c); c = nx; }
        }
        free(e->buckets);
    }
    while (e->free_list) { conn_t *nx = e->free_list->next; free(e->free_list); e->free_list = nx; }
    free(e->buckets4);
    free(e->out);
    free(e->aout);
    Py_XDECREF(e->obs); Py_XDECREF(e->decode); Py_XDECREF(e->dumps); Py_XDECREF(e->write);
    Py_XDECREF(e->fmt6); Py_XDECREF(e->make_seg); Py_XDECREF(e->pytimers);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

/* feed_frame(linktype, data, orig_len, frame, time_ns): one frame from any reader */
static PyObject *Engine_feed_frame(Engine *e, PyObject *args) {
    int lt;
    Py_buffer b;
    long long orig, frame, t;
    if (!PyArg_ParseTuple(args, "iy*LLL", &lt, &b, &orig, &frame, &t)) return NULL;
    int r = on_frame(e, lt, b.buf, b.len, orig, frame, t);
    PyBuffer_Release(&b);
    if (r < 0) return NULL;
    if (e->frames % 262144 == 0 && sweep_markers(e) < 0) return NULL;
    if (e->nout > (1 << 20) && out_flush(e) < 0) return NULL;
    Py_RETURN_NONE;
}

static inline uint32_t rd32(const uint8_t *p, int big) {
    return big ? be32(p) : ((uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0]);
}

/* A capture reader's buffer: keep the unread tail, make room for ``need`` bytes, read more.
   Returns the bytes read (0 at the end of the file), -1 with an exception set. */
static Py_ssize_t refill(FILE *f, uint8_t **buf, size_t *cap, size_t *have, size_t *pos, int64_t *consumed,
                         size_t need) {
    memmove(*buf, *buf + *pos, *have - *pos);
    *consumed += (int64_t)*pos;
    *have -= *pos;
    *pos = 0;
    if (need > *cap) {
        uint8_t *nb = realloc(*buf, need);
        if (!nb) { PyErr_NoMemory(); return -1; }
        *buf = nb;
        *cap = need;
    }
    size_t got = fread(*buf + *have, 1, *cap - *have, f);
    if (got == 0 && ferror(f)) { PyErr_SetFromErrno(PyExc_OSError); return -1; }
    *have += got;
    return (Py_ssize_t)got;
}

/* Every 16,384 frames: Ctrl-C, the progress bar, and (less often) the markers' sweep */
static int now_and_then(Engine *e, PyObject *progress, int64_t pos, int64_t frame) {
    if (PyErr_CheckSignals() < 0) return -1;
    if (progress != Py_None) {
        PyObject *r = PyObject_CallFunction(progress, "LL", (long long)pos, (long long)frame);
        if (!r) return -1;
        Py_DECREF(r);
    }
    if (!(frame & 0x3FFFF) && sweep_markers(e) < 0) return -1;
    return 0;
}

/* (message, frame) of a record whose length cannot be, in rawfin.pcapio's words */
static PyObject *corrupt_record(uint32_t caplen, int64_t frame) {
    return Py_BuildValue("(NL)", PyUnicode_FromFormat("packet record claims %u captured bytes (corrupt record)",
                                                      caplen), (long long)frame);
}

/* run_pcap(path, offset, big, nano, linktype, limit, progress) -> None or (message, frame)
   A classic pcap read here, with the checks and messages of rawfin.pcapio's reader. */
static PyObject *Engine_run_pcap(Engine *e, PyObject *args) {
    int big, nano, lt;
    long long offset, limit;
    PyObject *progress, *path;
    if (!PyArg_ParseTuple(args, "O&LpiiLO", PyUnicode_FSConverter, &path, &offset, &big, &nano, &lt, &limit,
                          &progress))
        return NULL;
    FILE *f = fopen(PyBytes_AS_STRING(path), "rb");
    if (!f) { PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path); Py_DECREF(path); return NULL; }
    Py_DECREF(path);
    if (fseeko(f, (off_t)offset, SEEK_SET) != 0) { fclose(f); return PyErr_SetFromErrno(PyExc_OSError); }
    size_t cap = 1 << 22, have = 0, pos = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) { fclose(f); return PyErr_NoMemory(); }
    int64_t frame = 0, consumed = offset;
    int64_t frac_mul = nano ? 1 : 1000;
    PyObject *result = NULL;
    for (;;) {
        while (pos + 16 <= have) {
            const uint8_t *h = buf + pos;
            uint32_t sec = rd32(h, big), frac = rd32(h + 4, big), caplen = rd32(h + 8, big), orig = rd32(h + 12, big);
            if (pos + 16 + caplen > have) break;
            if (caplen > limit) {
                result = corrupt_record(caplen, frame + 1);
                goto done;
            }
            frame++;
            int64_t t = (int64_t)sec * 1000000000LL + (int64_t)frac * frac_mul;
            if (on_frame(e, lt, h + 16, caplen, orig, frame, t) < 0) goto fail;
            pos += 16 + caplen;
            if (!(frame & 0x3FFF) && now_and_then(e, progress, consumed + (int64_t)pos, frame) < 0) goto fail;
            if (e->nout > (1 << 20) && out_flush(e) < 0) goto fail;
        }
        size_t need = 16;
        if (pos + 16 <= have) {
            uint32_t caplen = rd32(buf + pos + 8, big);
            if (caplen > limit) {
                result = corrupt_record(caplen, frame + 1);
                goto done;
            }
            need = 16 + (size_t)caplen;
        }
        Py_ssize_t got = refill(f, &buf, &cap, &have, &pos, &consumed, need);
        if (got < 0) goto fail;
        if (got == 0) {
            if (!have) { result = Py_None; Py_INCREF(result); goto done; }
            PyObject *msg;
            if (have < 16)
                msg = PyUnicode_FromFormat("record header cut short (file truncated?): %zu of 16 bytes", have);
            else
                msg = PyUnicode_FromFormat("packet data cut short (file truncated?): record claims %zu bytes, "
                                           "%zu present", need - 16, have - 16);
            if (!msg) goto fail;
            result = Py_BuildValue("(NL)", msg, (long long)(frame + 1));
            goto done;
        }
    }
done:
    free(buf);
    fclose(f);
    if (result && out_flush(e) < 0) { Py_DECREF(result); return NULL; }
    return result;
fail:
    free(buf);
    fclose(f);
    return NULL;
}

/* run_pcapng(path, dry, idb, max_block, progress) -> (status, frame)
   The common pcapng: section headers, interface descriptions (their options read by
   rawfin.pcapio.parse_idb through ``idb(body, big)`` -> (linktype, mul, div, offset, limit)),
   enhanced packet blocks, and the blocks rawfin.pcapio skips or counts as frames.
   status 0: done; 1 (dry run): a time outside 0..2**62 ns, the reference must take the file;
   2: something only rawfin.pcapio handles (a damaged block, a simple or obsolete packet block,
   a clock that does not fit 64 bits...): ``frame`` frames were fed, rawfin.pcapio takes the rest.
   ``dry``: walk and check only, feed nothing. */
typedef struct { int linktype; uint64_t mul, div; int64_t off; int64_t limit; } ifc_t;

static PyObject *Engine_run_pcapng(Engine *e, PyObject *args) {
    int dry;
    PyObject *idb, *progress, *path;
    long long max_block;
    if (!PyArg_ParseTuple(args, "O&pOLO", PyUnicode_FSConverter, &path, &dry, &idb, &max_block, &progress))
        return NULL;
    FILE *f = fopen(PyBytes_AS_STRING(path), "rb");
    if (!f) { PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path); Py_DECREF(path); return NULL; }
    Py_DECREF(path);
    size_t cap = 1 << 22, have = 0, pos = 0;
    uint8_t *buf = malloc(cap);
    ifc_t *ifs = NULL;
    size_t nifs = 0, capifs = 0;
    if (!buf) { fclose(f); return PyErr_NoMemory(); }
    int64_t frame = 0, consumed = 0;
    int big = 0, in_section = 0, status = 0;
    for (;;) {
        size_t need = 12;
        if (pos + 12 <= have) {
            const uint8_t *h = buf + pos;
            if (rd32(h, big) == 0x0A0D0D0A || rd32(h, !big) == 0x0A0D0D0A) {
                /* a section header: its byte-order magic says how to read it (and what follows) */
                const uint8_t *bom = h + 8;
                if (bom[0] == 0x4d && bom[1] == 0x3c && bom[2] == 0x2b && bom[3] == 0x1a) big = 0;
                else if (bom[0] == 0x1a && bom[1] == 0x2b && bom[2] == 0x3c && bom[3] == 0x4d) big = 1;
                else { status = 2; break; }
            }
            need = rd32(h + 4, big);
            if (need < 12 || need % 4 || (long long)need > max_block) { status = 2; break; }
        }
        if (pos + need > have) {                /* more bytes: the whole block in the buffer */
            Py_ssize_t got = refill(f, &buf, &cap, &have, &pos, &consumed, need);
            if (got < 0) goto fail;
            if (got == 0) {
                if (have) status = 2;          /* cut short: rawfin.pcapio says how */
                break;
            }
            continue;
        }
        const uint8_t *b = buf + pos;
        uint32_t bt = rd32(b, big);
        uint32_t blen = (uint32_t)need;
        if (rd32(b + blen - 4, big) != blen) {
            status = 2;
            break;
        }
        if (bt == 0x0A0D0D0A) {
            if (blen < 28) { status = 2; break; }
            uint16_t major = big ? be16(b + 12) : (uint16_t)(b[12] | b[13] << 8);
            if (major != 1) { status = 2; break; }
            in_section = 1;
            nifs = 0;
        } else if (!in_section) { status = 2; break; }
        else if (bt == 6) {                    /* Enhanced Packet Block */
            if (blen < 32) { status = 2; break; }
            uint32_t lid = rd32(b + 8, big), caplen = rd32(b + 20, big), orig = rd32(b + 24, big);
            if (lid >= nifs) { status = 2; break; }
            ifc_t *ic = &ifs[lid];
            if ((int64_t)caplen > ic->limit || 28 + (uint64_t)caplen + 4 > blen) { status = 2; break; }
            uint64_t ts = (uint64_t)rd32(b + 12, big) << 32 | rd32(b + 16, big);
            __int128 t = (__int128)ts * ic->mul / ic->div + ic->off;
            if (t < 0 || t >= ((__int128)1 << 62)) {
                if (dry) { status = 1; break; }
                status = 2;
                break;
            }
            frame++;
            if (!dry && on_frame(e, ic->linktype, b + 28, caplen, orig, frame, (int64_t)t) < 0) goto fail;
        } else if (bt == 1) {                  /* Interface Description Block */
            if (blen < 20) { status = 2; break; }
            PyObject *r = PyObject_CallFunction(idb, "y#O", (const char *)(b + 8), (Py_ssize_t)(blen - 12),
                                                big ? Py_True : Py_False);
            if (!r) goto fail;
            if (r == Py_None) { Py_DECREF(r); status = 2; break; }    /* a clock the lane cannot keep */
            int lt;
            PyObject *mul, *div;
            long long off, lim;
            if (!PyArg_ParseTuple(r, "iOOLL", &lt, &mul, &div, &off, &lim)) { Py_DECREF(r); goto fail; }
            unsigned long long m = PyLong_AsUnsignedLongLong(mul), d = PyLong_AsUnsignedLongLong(div);
            Py_DECREF(r);
            if (PyErr_Occurred()) {            /* a clock beyond 64 bits */
                if (!PyErr_ExceptionMatches(PyExc_OverflowError)) goto fail;
                PyErr_Clear();
                status = 2;
                break;
            }
            if (nifs == capifs) {
                size_t nc = capifs ? capifs * 2 : 8;
                ifc_t *ni = realloc(ifs, nc * sizeof(ifc_t));
                if (!ni) { PyErr_NoMemory(); goto fail; }
                ifs = ni;
                capifs = nc;
            }
            ifs[nifs].linktype = lt;
            ifs[nifs].mul = m;
            ifs[nifs].div = d ? d : 1;
            ifs[nifs].off = off;
            ifs[nifs].limit = lim;
            nifs++;
        } else if (bt == 3 || bt == 2) {       /* simple and obsolete packet blocks: rawfin.pcapio's */
            status = 2;
            break;
        } else if (bt == 9 || bt == 0x00000BAD || bt == 0x40000BAD) {
            frame++;                           /* shown as frames by Wireshark; not packets */
        }
        pos += blen;
        if (!dry && bt == 6 && !(frame & 0x3FFF) && now_and_then(e, progress, consumed + (int64_t)pos, frame) < 0)
            goto fail;
        if (!dry && e->nout > (1 << 20) && out_flush(e) < 0) goto fail;
    }
    free(buf);
    free(ifs);
    fclose(f);
    if (!dry && out_flush(e) < 0) return NULL;
    return Py_BuildValue("(iL)", status, (long long)frame);
fail:
    free(buf);
    free(ifs);
    fclose(f);
    return NULL;
}

static PyObject *Engine_finish(Engine *e, PyObject *unused) {
    if (finish_all(e) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Engine_stats(Engine *e, PyObject *unused) {
    PyObject *bc = PyDict_New();
    if (!bc) return NULL;
    for (int i = 0; i < 8; i++) {
        if (!e->by_close[i]) continue;
        PyObject *v = PyLong_FromLongLong(e->by_close[i]);
        if (!v || PyDict_SetItemString(bc, CLOSE_NAMES[i], v) < 0) { Py_XDECREF(v); Py_DECREF(bc); return NULL; }
        Py_DECREF(v);
    }
    PyObject *first = e->have_first ? PyLong_FromLongLong(e->first_time) : Py_NewRef(Py_None);
    if (!first) { Py_DECREF(bc); return NULL; }
    return Py_BuildValue("{s:L,s:L,s:N,s:L,s:L,s:N,s:L,s:L,s:L}", "frames", (long long)e->frames, "tcp",
                         (long long)e->tcp, "first_time_ns", first, "connections", (long long)e->done,
                         "server_active_closes", (long long)e->server_active, "by_close", bc, "python_calls",
                         (long long)e->py_calls, "handoffs", (long long)e->handoffs, "now", (long long)e->now);
}

static PyMethodDef Engine_methods[] = {
    {"feed_frame", (PyCFunction)Engine_feed_frame, METH_VARARGS, "One captured frame."},
    {"run_pcap", (PyCFunction)Engine_run_pcap, METH_VARARGS, "Every frame of a classic pcap file."},
    {"run_pcapng", (PyCFunction)Engine_run_pcapng, METH_VARARGS, "The frames of a common pcapng file."},
    {"finish", (PyCFunction)Engine_finish, METH_NOARGS, "The end of the capture."},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS, "Counts, for the summary line."},
    {NULL}};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rawfin._engine.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_doc = "The compiled lane of rawfin analyze --format jsonl.",
};

/* set_table(rows): rows of (state name, input name, next state name) from rawfin.states */
static PyObject *set_table(PyObject *self, PyObject *rows) {
    signed char t[NST][NIN];
    memset(t, -1, sizeof t);
    PyObject *it = PyObject_GetIter(rows);
    if (!it) return NULL;
    PyObject *row;
    while ((row = PyIter_Next(it))) {
        const char *a, *b, *c;
        if (!PyArg_ParseTuple(row, "sss", &a, &b, &c)) { Py_DECREF(row); Py_DECREF(it); return NULL; }
        int x = name_index(a, ST_NAME, NST), y = name_index(b, IN_NAME, NIN), z = name_index(c, ST_NAME, NST);
        if (x < 0 || y < 0 || z < 0) {
            PyErr_Format(PyExc_ValueError, "the compiled engine does not know %s/%s/%s", a, b, c);
            Py_DECREF(row); Py_DECREF(it);
            return NULL;
        }
        t[x][y] = (signed char)z;
        Py_DECREF(row);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) return NULL;
    memcpy(TABLE, t, sizeof t);
    table_set = 1;
    Py_RETURN_NONE;
}

static PyObject *names(PyObject *self, PyObject *unused) {
    PyObject *s = PyTuple_New(NST), *i = PyTuple_New(NIN);
    if (!s || !i) { Py_XDECREF(s); Py_XDECREF(i); return NULL; }
    for (int k = 0; k < NST; k++) PyTuple_SET_ITEM(s, k, PyUnicode_FromString(ST_NAME[k]));
    for (int k = 0; k < NIN; k++) PyTuple_SET_ITEM(i, k, PyUnicode_FromString(IN_NAME[k]));
    return Py_BuildValue("(NN)", s, i);
}

static PyMethodDef module_methods[] = {
    {"set_table", set_table, METH_O, "The transition table, as (state, input, next state) names."},
    {"names", names, METH_NOARGS, "The state and input names the engine knows."},
    {NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "rawfin._engine",
                                       "The compiled lane of rawfin analyze (see rawfin/capture/engine.py).", -1,
                                       module_methods};

PyMODINIT_FUNC PyInit__engine(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) { Py_DECREF(m); return NULL; }
    return m;
}

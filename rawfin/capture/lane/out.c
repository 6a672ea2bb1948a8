/* rawfin._engine, part out (included by rawfin/capture/_engine.c; one translation unit) */
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
   BAIL when the connection has seen more kinds than the lane keeps. ``direct``: the observer's own
   (written now); else an endpoint call's (written after its transitions, by end_call) */
static int anomaly(Engine *e, conn_t *c, int side, const char *kind, const char *detail, int64_t now,
                   int64_t frame, int direct) {
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
    if (direct) return 0;
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

/* Python's records: a list (or tuple) of dicts, written through the reference serializer */
static int out_pyrecords(Engine *e, PyObject *recs) {
    if (!recs) return -1;
    PyObject *seq = PySequence_Fast(recs, "records must be a list");
    Py_DECREF(recs);
    if (!seq) return -1;
    recs = seq;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(recs);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyObject_CallOneArg(e->dumps, PySequence_Fast_GET_ITEM(recs, i));
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

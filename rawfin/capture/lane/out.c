/* rawfin._engine, part out (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ output */

/* text is written out in pieces of about OUT_PIECE bytes, each made in place in a bytes object of its own: small
   enough that malloc reuses the memory of the one before (a larger one is mapped afresh each time, and its pages
   cost more than the copy they save); events, in lists of about a million bytes of pointers */
#define OUT_PIECE (1 << 16)
static int out_grow(Engine *e, size_t more);
/* room for ``more`` bytes at the end of the output */
static inline int out_reserve(Engine *e, size_t more) { return e->nout + more <= e->capout ? 0 : out_grow(e, more); }
static inline int out_full(const Engine *e) { return e->nout > (e->emit ? (size_t)1 << 20 : (size_t)OUT_PIECE); }

static __attribute__((noinline)) int out_grow(Engine *e, size_t more) {
    size_t cap = e->capout ? e->capout : e->emit ? (1 << 20) : OUT_PIECE + OUT_PIECE / 2;
    while (cap < e->nout + more) cap *= 2;
    if (!e->emit) {         /* text: into the bytes object itself, which out_flush hands over as it is */
        if (!e->outb) e->outb = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
        else if (_PyBytes_Resize(&e->outb, (Py_ssize_t)cap) < 0) e->outb = NULL;
        if (!e->outb) { e->out = NULL; e->nout = e->capout = 0; return -1; }
        e->out = PyBytes_AS_STRING(e->outb);
        e->capout = cap;
        return 0;
    }
    char *p = realloc(e->out, cap);
    if (!p) { PyErr_NoMemory(); return -1; }
    e->out = p;
    e->capout = cap;
    return 0;
}

/* events mode: the buffer holds object pointers (each one reference), not text */
#define PTR sizeof(PyObject *)

static int out_object(Engine *e, PyObject *o) {
    if (!o) return -1;
    if (out_reserve(e, PTR) < 0) { Py_DECREF(o); return -1; }
    memcpy(e->out + e->nout, &o, PTR);
    e->nout += PTR;
    return 0;
}

static void release_objects(const char *buf, size_t from, size_t to) {
    for (size_t k = from; k + PTR <= to; k += PTR) {
        PyObject *o;
        memcpy(&o, buf + k, PTR);
        Py_DECREF(o);
    }
}

/* back to an earlier point of the output (what a connection handed over had written is Python's to say) */
static void out_rollback(Engine *e, size_t mark) {
    if (e->emit && mark < e->nout) release_objects(e->out, mark, e->nout);
    e->nout = mark;
}

static int out_flush(Engine *e) {
    if (!e->nout) return 0;
    if (e->emit) {
        Py_ssize_t n = (Py_ssize_t)(e->nout / PTR);
        PyObject *l = PyList_New(n);
        if (!l) return -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *o;
            memcpy(&o, e->out + (size_t)i * PTR, PTR);
            PyList_SET_ITEM(l, i, o);          /* the list takes the buffer's reference */
        }
        e->nout = 0;
        PyObject *r = PyObject_CallOneArg(e->emit, l);
        Py_DECREF(l);
        if (!r) return -1;
        Py_DECREF(r);
        return 0;
    }
    PyObject *b = e->outb;         /* (the next record starts a new one) */
    e->outb = NULL;
    e->out = NULL;
    e->capout = 0;
    size_t n = e->nout;
    e->nout = 0;
    if (_PyBytes_Resize(&b, (Py_ssize_t)n) < 0) return -1;
    PyObject *r = PyObject_CallOneArg(e->write, b);
    Py_DECREF(b);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

static inline void out_str(Engine *e, const char *s, size_t n) {
    memcpy(e->out + e->nout, s, n);
    e->nout += n;
}
#define OUT_LIT(e, s) out_str((e), (s), sizeof(s) - 1)
/* n bytes of s, where s can be read for PAD bytes (a constant): where the output has the room, PAD bytes are copied
   (a fixed-size copy, inline; what is past n is written over next), else n */
#define OUT_PADDED(e, s, n, PAD)                                                                  \
    do {                                                                                          \
        size_t n_ = (n);                                                                          \
        if (n_ <= (PAD) && (e)->capout - (e)->nout >= (PAD)) memcpy((e)->out + (e)->nout, (s), (PAD)); \
        else memcpy((e)->out + (e)->nout, (s), n_);                                               \
        (e)->nout += n_;                                                                          \
    } while (0)

static inline void out_i64(Engine *e, int64_t v) {      /* (the caller reserved the room) */
    if ((uint64_t)v <= UINT32_MAX) e->nout = (size_t)(put_u32(e->out + e->nout, (uint32_t)v) - e->out);
    else e->nout = put_int(e->out, e->nout, e->nout + 24, v);
}

/* a record's time, as rawfin.core.units.seconds_of gives it and json.dumps prints it: the time rounded
   to whole microseconds (half up), written as repr(us / 10**6) is: "12.03", "1.0", "0.0001", "5e-05" */
static int out_time_text(Engine *e, int64_t us);

static int out_time(Engine *e, int64_t ns) {
    int64_t us = ns >= 0 ? (ns + 500) / 1000 : -((-ns + 499) / 1000);   /* floor((ns + 500) / 1000) */
    if (out_reserve(e, 32) < 0) return -1;
    if (us != e->tc_us) {           /* a new time: written, and kept for the records after it */
        size_t start = e->nout;
        out_time_text(e, us);
        e->tc_us = us;
        e->tc_len = e->nout - start;
        memcpy(e->tc_text, e->out + start, sizeof e->tc_text);     /* (the 32 bytes reserved above) */
        return 0;
    }
    OUT_PADDED(e, e->tc_text, e->tc_len, sizeof e->tc_text);
    return 0;
}

static int out_time_text(Engine *e, int64_t us) {
    if (us < 0) { e->out[e->nout++] = '-'; us = -us; }
    if (us == 0) { OUT_LIT(e, "0.0"); return 0; }
    if (us < 100) {                      /* below 1e-4: Python's repr has an exponent */
        char d[2] = {(char)('0' + (us >= 10 ? us / 10 : us)), (char)('0' + us % 10)};
        e->out[e->nout++] = d[0];
        if (us >= 10 && d[1] != '0') { e->out[e->nout++] = '.'; e->out[e->nout++] = d[1]; }
        OUT_LIT(e, "e-0");
        e->out[e->nout++] = us >= 10 ? '5' : '6';
        return 0;
    }
    int64_t sec = us / 1000000;     /* the whole seconds: as the last time's, mostly */
    if (sec != e->ts_sec) {
        e->ts_len = put_int(e->ts_text, 0, sizeof e->ts_text, sec);
        e->ts_sec = sec;
    }
    OUT_PADDED(e, e->ts_text, e->ts_len, sizeof e->ts_text);
    e->out[e->nout++] = '.';
    uint32_t frac = (uint32_t)(us % 1000000);
    char d[6];
    int k = 6;
    memcpy(d, D2 + 2 * (frac / 10000), 2);
    memcpy(d + 2, D2 + 2 * (frac / 100 % 100), 2);
    memcpy(d + 4, D2 + 2 * (frac % 100), 2);
    while (k > 1 && d[k - 1] == '0') k--;
    out_str(e, d, (size_t)k);
    return 0;
}

static void out_cstr(Engine *e, const char *s) { out_str(e, s, strlen(s)); }
static inline void out_state(Engine *e, int st) { OUT_PADDED(e, ST_PAD[st], ST_LEN[st], sizeof ST_PAD[st]); }
static inline void out_name(Engine *e, const conn_t *c, int side) {
    OUT_PADDED(e, c->name[side], c->name_len[side], sizeof c->name[side] - 8);
}
/* the connection's id, its text made once */
static inline void out_conn_id(Engine *e, conn_t *c) {
    if (!c->id_len) c->id_len = (uint8_t)put_int(c->id_text, 0, sizeof c->id_text, c->id);
    OUT_PADDED(e, c->id_text, c->id_len, sizeof c->id_text);
}

/* what transition and anomaly records begin with: type, conn, frame, time, endpoint */
static int out_head(Engine *e, const char *type, size_t type_len, conn_t *c, int side, int64_t frame, int64_t now,
                    size_t more) {
    if (out_reserve(e, 512 + more + e->file_suffix_len) < 0) return -1;
    OUT_LIT(e, "{\"type\":\"");
    out_str(e, type, type_len);
    OUT_LIT(e, "\",\"conn\":");
    out_conn_id(e, c);
    OUT_LIT(e, ",\"frame\":");
    if (frame < 0) OUT_LIT(e, "null"); else out_i64(e, frame);
    OUT_LIT(e, ",\"time\":");
    if (out_time(e, now) < 0) return -1;
    OUT_LIT(e, ",\"endpoint\":\"");
    out_name(e, c, side);
    return 0;
}

static PyObject *frame_obj(int64_t frame) {
    return frame < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(frame);
}

/* moves mode: (conn, time_ns, side, from, to, names): names, (side 0's, side 1's), with the connection's
   first move, else None; the states as codes (names()) */
static int out_move(Engine *e, conn_t *c, int side, int from, int to, int64_t now) {
    e->inf_on = 0;
    PyObject *names;
    if (c->named) names = Py_NewRef(Py_None);
    else {
        names = Py_BuildValue("(ss)", c->name[0], c->name[1]);
        if (!names) return -1;
        c->named = 1;
    }
    PyObject *t = PyTuple_New(6);
    if (!t) { Py_DECREF(names); return -1; }
    PyObject *id = PyLong_FromLongLong(c->id), *ns = PyLong_FromLongLong(now);
    PyTuple_SET_ITEM(t, 5, names);
    if (!id || !ns) { Py_XDECREF(id); Py_XDECREF(ns); Py_DECREF(t); return -1; }
    PyTuple_SET_ITEM(t, 0, id);
    PyTuple_SET_ITEM(t, 1, ns);
    PyTuple_SET_ITEM(t, 2, PyLong_FromLong(side));        /* (small integers: never fail) */
    PyTuple_SET_ITEM(t, 3, PyLong_FromLong(from));
    PyTuple_SET_ITEM(t, 4, PyLong_FromLong(to));
    return out_object(e, t);
}

static int out_transition(Engine *e, conn_t *c, int side, int from, int to, int64_t frame, int64_t now,
                          const char *cause, size_t cause_len, int inp, PyObject *values) {
    if (e->moves) return out_move(e, c, side, from, to, now);
    if (e->emit) {                  /* (..., values, the other reading's states or None, when it holds) */
        PyObject *alt = Py_None, *t;
        if (e->inf_on) {
            e->inf_on = 0;
            alt = e->inf_alt[1] >= 0 ? Py_BuildValue("(ss)", ST_NAME[e->inf_alt[0]], ST_NAME[e->inf_alt[1]])
                                     : Py_BuildValue("(s)", ST_NAME[e->inf_alt[0]]);
            if (!alt) return -1;
            t = Py_BuildValue("(sLNLssssisONs)", "t", (long long)c->id, frame_obj(frame), (long long)now,
                              c->name[side], c->name[1 - side], ST_NAME[from], ST_NAME[to], inp, cause,
                              values ? values : Py_None, alt, e->inf_text);
        } else
            t = Py_BuildValue("(sLNLssssisOOs)", "t", (long long)c->id, frame_obj(frame), (long long)now,
                              c->name[side], c->name[1 - side], ST_NAME[from], ST_NAME[to], inp, cause,
                              values ? values : Py_None, Py_None, "");
        return out_object(e, t);
    }
    if (out_head(e, "transition", sizeof "transition" - 1, c, side, frame, now,
                 cause_len + (e->inf_on ? strlen(e->inf_text) + 128 : 0)) < 0)
        return -1;
    OUT_LIT(e, "\",\"peer\":\"");
    out_name(e, c, 1 - side);
    OUT_LIT(e, "\",\"from\":\"");
    out_state(e, from);
    OUT_LIT(e, "\",\"to\":\"");
    out_state(e, to);
    OUT_LIT(e, "\",\"cause\":\"");
    out_str(e, cause, cause_len);
    e->out[e->nout++] = '"';
    if (e->inf_on) {                /* rawfin.render.records: "inferred" and "alternative" after the cause */
        e->inf_on = 0;
        OUT_LIT(e, ",\"inferred\":\"or ");
        out_cstr(e, ST_NAME[e->inf_alt[0]]);
        if (e->inf_alt[1] >= 0) { OUT_LIT(e, " \u2192 "); out_cstr(e, ST_NAME[e->inf_alt[1]]); }
        OUT_LIT(e, " if ");
        out_cstr(e, e->inf_text);
        OUT_LIT(e, "\",\"alternative\":[\"");
        out_cstr(e, ST_NAME[e->inf_alt[0]]);
        if (e->inf_alt[1] >= 0) { OUT_LIT(e, "\",\""); out_cstr(e, ST_NAME[e->inf_alt[1]]); }
        OUT_LIT(e, "\"]");
    }
    out_str(e, e->file_suffix, e->file_suffix_len);
    OUT_LIT(e, "}\n");
    return 0;
}

/* an anomaly record (rawfin.records.anomaly_record), and the connection's count of its kind;
   BAIL when the connection has seen more kinds than the lane keeps. ``direct``: the observer's own
   (written now); else an endpoint call's (written after its transitions, by end_call) */
/* a host's evidence of where its segments get lost, noted for the end of the call (evid_commit); BAIL
   when one call notes more than the lane keeps */
static int evid_note(Engine *e, const conn_t *c, int side, int down) {
    if (e->nevid == MAXEVID) return 1;
    const char *name = c->name[side], *colon = strrchr(name, ':');
    size_t n = colon ? (size_t)(colon - name) : strlen(name);
    if (n >= sizeof e->evid[0].host) return 1;
    memcpy(e->evid[e->nevid].host, name, n);
    e->evid[e->nevid].host[n] = 0;
    e->evid[e->nevid++].down = (uint8_t)down;
    return 0;
}

/* the call stands: its evidence to the Python side's count (Handback.evidence: [(host, down)]) */
static int evid_commit(Engine *e) {
    for (int i = 0; i < e->ntrip; i++) e->trips[e->trip_note[i].side][e->trip_note[i].b]++;
    e->ntrip = 0;
    e->reordered += e->nreo;
    if (e->nreo) e->reorder_seen = 1;
    e->nreo = 0;
    if (!e->nevid) return 0;
    PyObject *notes = PyList_New(e->nevid);
    if (!notes) return -1;
    for (int i = 0; i < e->nevid; i++) {
        PyObject *t = Py_BuildValue("(sO)", e->evid[i].host, e->evid[i].down ? Py_True : Py_False);
        if (!t) { Py_DECREF(notes); return -1; }
        PyList_SET_ITEM(notes, i, t);
    }
    e->nevid = 0;
    PyObject *r = PyObject_CallOneArg(e->cb_evidence, notes);
    Py_DECREF(notes);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

static int anomaly(Engine *e, conn_t *c, int side, const char *kind, const char *detail, int64_t now,
                   int64_t frame, int direct, PyObject *values) {
    int k;
    for (k = 0; k < e->nlk; k++)
        if (kind[0] == e->lk_kind[k][0] && strcmp(kind, e->lk_kind[k]) == 0) {
            if (evid_note(e, c, e->lk_local[k] ? side : 1 - side, e->lk_down[k])) return 1;
            break;
        }
    for (k = 0; k < c->nanom; k++)
        if (strcmp(c->anom_kind[k], kind) == 0) break;
    if (k == c->nanom) {
        if (c->nanom == MAXANOM) return 1;
        c->anom_kind[c->nanom] = kind;
        c->anom_n[c->nanom++] = 0;
    }
    c->anom_n[k]++;
    if (e->moves) return 0;     /* (moves mode hands over no anomaly) */
    /* written in the main buffer's tail, then moved aside until the endpoint call ends */
    size_t start = e->nout;
    if (e->emit) {
        if (out_object(e, Py_BuildValue("(sLNLsssO)", "a", (long long)c->id, frame_obj(frame), (long long)now,
                                        c->name[side], kind, detail, values ? values : Py_None)) < 0) return -1;
        if (direct) return 0;
        goto aside;
    }
    size_t detail_len = strlen(detail);
    if (out_head(e, "anomaly", sizeof "anomaly" - 1, c, side, frame, now, detail_len) < 0) return -1;
    OUT_LIT(e, "\",\"kind\":\"");
    out_cstr(e, kind);
    OUT_LIT(e, "\",\"detail\":\"");
    out_str(e, detail, detail_len);     /* digits, names and punctuation: nothing JSON must escape */
    e->out[e->nout++] = '"';
    out_str(e, e->file_suffix, e->file_suffix_len);
    OUT_LIT(e, "}\n");
    if (direct) return 0;
aside:;
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
    } else if (e->emit && e->naout) release_objects(e->aout, 0, e->naout);
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
    if (e->emit) {                              /* events mode: the Python observer's own events, as they are */
        for (Py_ssize_t i = 0; i < n; i++)
            if (out_object(e, Py_NewRef(PySequence_Fast_GET_ITEM(recs, i))) < 0) { Py_DECREF(recs); return -1; }
        Py_DECREF(recs);
        if (out_full(e)) return out_flush(e);
        return 0;
    }
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
    if (out_full(e)) return out_flush(e);
    return 0;
}

/* the Python observer's first timer, from an answer of the hand-off: None or (deadline, connection id) */
static int take_timer(Engine *e, PyObject *t) {
    if (t == Py_None) { e->py_timer_when = e->py_timer_id = -1; return 0; }
    long long when, id;
    if (!PyArg_ParseTuple(t, "LL", &when, &id)) return -1;
    e->py_timer_when = when;
    e->py_timer_id = id;
    return 0;
}

/* an answer (records, timer) of the hand-off: the records written, the timer kept */
static int out_answer(Engine *e, PyObject *ans) {
    if (!ans) return -1;
    PyObject *recs, *timer;
    if (!PyArg_ParseTuple(ans, "OO", &recs, &timer)) { Py_DECREF(ans); return -1; }
    Py_INCREF(recs);
    int r = take_timer(e, timer);
    Py_DECREF(ans);
    if (r < 0) { Py_DECREF(recs); return -1; }
    return out_pyrecords(e, recs);
}

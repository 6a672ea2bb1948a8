/* rawfin._engine, part observer (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ the connection (rawfin/core/observer.py) */

/* Connection._flush: deliver what was held for ``side`` (rules.FLUSH) */
static int flush(Engine *e, conn_t *c, int side, const ev_t *now_seg, int filled) {
    held_t h = c->pending[side];
    c->pending[side].present = 0;
    ctx_t x;
    ctx_init(&x, e, c, now_seg, now_seg ? now_seg->time_ns : h.seg.time_ns);
    x.x = side;
    x.h = &h;
    x.nowseg = now_seg;
    x.filled = (uint8_t)filled;
    x.nwq = c->nwq[side];           /* what waited behind it goes with it */
    memcpy(x.wq, c->wq[side], sizeof x.wq);
    c->nwq[side] = 0;
    int r = run(&x, PG_FLUSH);
    e->inf_on = 0;                  /* a reading named for this delivery goes no further (the reference's is local) */
    return r;
}

/* Connection._deliver_rst: the RSTs held for ``side``, in order */
static int deliver_rsts(Engine *e, conn_t *c, int side) {
    uint32_t rq[MAXWAIT];
    int n = c->nrq[side];
    memcpy(rq, c->rq[side], sizeof rq);
    c->nrq[side] = 0;
    for (int i = 0; i < n; i++) {
        ev_t s = c->log[rq[i]];
        ctx_t x;                    /* rules.RST_HELD: the reading not taken, if the rules name one */
        ctx_init(&x, e, c, NULL, s.time_ns);
        x.x = side;
        int r = run(&x, PG_RST_HELD);
        if (!r) r = receive(e, c, side, &s, s.time_ns);
        e->inf_on = 0;
        if (r) return r;
    }
    return 0;
}

/* RSTs whose hold is over (rules.OBSERVER_TIMERS' final_ack: the same hold) */
static int fire_rsts(Engine *e, conn_t *c, int64_t until) {
    for (int i = 0; i < 2; i++)
        if (c->nrq[i] && c->log[c->rq[i][c->nrq[i] - 1]].time_ns + e->hold_ns <= until) {
            int r = deliver_rsts(e, c, i);
            if (r) return r;
        }
    return 0;
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

/* rules.SETTLED */
static int settled(Engine *e, conn_t *c) { return cond_holds(e, c, &RULES.settled, NULL, -1) > 0; }

static int cond_holds(Engine *e, conn_t *c, const cond_t *cd, const ev_t *s, int tx);

/* the connection of the segment whose expiry is running (Observer.reprieve) */
static int reprieved(const conn_t *c, const Engine *e) {
    return e->reprieve_on && c->hash == e->reprieve_hash && key_eq(c->key, e->reprieve_key);
}

/* rules.HALF_OPEN: when the connection is given up on, if it is half-open (-1: it is not) */
static int64_t half_open_deadline(const conn_t *c, const Engine *e) {
    if (c->timed_out || c->tw) return -1;
    if (reprieved(c, e)) return -1;     /* a segment of its own is arriving (Connection.half_open_deadline) */
    for (uint32_t i = 0; i < RULES.nhalf_open; i++) {
        if (cond_holds((Engine *)e, (conn_t *)c, &RULES.half_open[i], NULL, -1) <= 0) continue;
        int64_t start = RULES.half_open_clock[i] == HC_SYN_AT ? c->syn_at : c->synack_at;
        int64_t limit = e->timeout_ns[RULES.half_open_timeout[i]];
        return (start < 0 || limit <= 0) ? -1 : start + limit;
    }
    return -1;
}

static int64_t next_deadline(const conn_t *c, const Engine *e) {
    int64_t d = half_open_deadline(c, e);
    for (int i = 0; i < 2; i++) {
        int64_t t = c->ep[i].time_wait_at;
        if (t >= 0 && (d < 0 || t < d)) d = t;
    }
    for (int i = 0; i < 2; i++)
        if (c->held_ack[i].present) {
            int64_t t = c->held_ack[i].seg.time_ns + e->hold_ns;
            if (d < 0 || t < d) d = t;
        }
    for (int i = 0; i < 2; i++)
        if (c->nrq[i]) {
            int64_t t = c->log[c->rq[i][c->nrq[i] - 1]].time_ns + e->hold_ns;
            if (d < 0 || t < d) d = t;
        }
    return d;
}

static int all_closed(const conn_t *c) { return c->ep[0].state == CLOSED && c->ep[1].state == CLOSED; }

/* Connection._answered: data makes its receiver owe an answer; the application answers with data, a FIN
   or a SYN (not with the stack's bare ACK) */
static inline void answered(conn_t *c, const ev_t *s, int dir) {
    uint8_t u = c->unanswered;
    if (s->data_len || (s->flags & (F_FIN | F_SYN))) u &= (uint8_t)~side_bit(dir);
    if (s->data_len) u |= (uint8_t)side_bit(1 - dir);
    c->unanswered = u;
}

/* rawfin.core.seq.note_bases (--seq relative): a side's base is its SYN's seq, else one before the first seq it
   sends, else one before the first ack the other side sends it; once known it stays */
static inline void note_bases(conn_t *c, const ev_t *s, int dir) {
    if (!(c->based & side_bit(dir))) {
        c->base[dir] = (s->flags & F_SYN) ? s->seq : s->seq - 1;
        c->based |= (uint8_t)side_bit(dir);
    }
    if ((s->flags & F_ACK) && !(c->based & side_bit(1 - dir))) {
        c->base[1 - dir] = s->ack - 1;
        c->based |= (uint8_t)side_bit(1 - dir);
    }
}

/* Connection.fast: when rules.FAST_PATH holds, in-order data or a plain ACK decides nothing */
static int fast(Engine *e, conn_t *c, const ev_t *s, int dir) {
    if (c->tw || cond_holds(e, c, &RULES.fast_path, s, dir) <= 0) return 0;
    if (e->relative && c->based != 3) note_bases(c, s, dir);
    cep_t *rx = &c->ep[1 - dir], *tx = &c->ep[dir];
    c->packets++;
    c->last_frame = s->frame;
    c->last_ns = s->time_ns;
    uint32_t end = s->seq + s->data_len;
    rx->rcv_nxt = end;
    if (SGT(end, tx->snd_nxt)) tx->snd_nxt = end;
    rx->snd_una = s->ack;
    answered(c, s, dir);
    return 1;
}

/* Connection.process: rules.SEGMENT */
static int process(Engine *e, conn_t *c, const ev_t *s, int dir) {
    if (c->tw) return BAIL;                     /* TimeWait.process: Python's */
    memset(e->took, 0, sizeof e->took);
    c->packets++;
    c->last_frame = s->frame;
    c->last_ns = s->time_ns;
    c->seen |= (uint8_t)side_bit(dir);
    if (e->relative && c->based != 3) note_bases(c, s, dir);
    if (s->flags & F_SYN) {                     /* the clocks of rules.HALF_OPEN */
        if (!(s->flags & F_ACK)) {
            if (c->syn_at < 0 && dir == c->client) c->syn_at = s->time_ns;
        } else if (c->synack_at < 0 && dir != c->client) {
            c->synack_at = s->time_ns;
        }
    }
    ctx_t x;
    ctx_init(&x, e, c, s, s->time_ns);
    x.tx = dir;
    x.rx = 1 - dir;
    int r = run(&x, PG_SEGMENT);
    answered(c, s, dir);
    return r;
}

/* Connection.__init__: rules.BIRTH, on the connection's first segment (side 0 sent it) */
static int birth(Engine *e, conn_t *c, const ev_t *s) {
    ctx_t x;
    if (e->relative) note_bases(c, s, 0);
    ctx_init(&x, e, c, s, s->time_ns);
    x.tx = 0;
    x.rx = 1;
    return run(&x, PG_BIRTH);
}

/* Connection.accepts_new_syn: rules.NEW_SYN (1 yes, 0 no, -BAIL) */
static int new_syn(Engine *e, conn_t *c, const ev_t *s, int dir) {
    for (uint32_t i = 0; i < RULES.nnew_syn; i++) {
        int h = cond_holds(e, c, &RULES.new_syn[i], s, dir);
        if (h < 0) return h;
        if (h) return RULES.new_syn_yes[i];
    }
    return 0;
}

/* the held final ACKs whose hold is over, in the order they were held */
static int fire_final_acks(Engine *e, conn_t *c, int64_t until) {
    int order[2] = {0, 1}, r;
    if (c->held_ack[0].present && c->held_ack[1].present && c->held_ack[1].order < c->held_ack[0].order) {
        order[0] = 1; order[1] = 0;
    }
    for (int k = 0; k < 2; k++) {
        int i = order[k];
        if (c->held_ack[i].present && c->held_ack[i].seg.time_ns + e->hold_ns <= until)
            if ((r = deliver_final_ack(e, c, i))) return r;
    }
    return 0;
}

static int endpoint_timers(Engine *e, conn_t *c, int side, int64_t until) {
    int64_t d = c->ep[side].time_wait_at;
    while (d >= 0 && d <= until) {
        int r = endpoint_call(e, c, side, PG_TIMERS, NULL, d);
        if (r) return r;
        int64_t nd = c->ep[side].time_wait_at;
        if (nd == d) break;
        d = nd;
    }
    return 0;
}

/* Connection.fire_timers: in rules.OBSERVER_TIMERS' order */
static int fire_timers(Engine *e, conn_t *c, int64_t until) {
    int r;
    if (c->tw) {
        for (int k = 0; k < 2; k++) {           /* TimeWait: its endpoints in the order of the key */
            int i = k == 0 ? c->ka : 1 - c->ka;
            cep_t *p = &c->ep[i];
            if (p->state == TIME_WAIT && p->time_wait_at >= 0 && p->time_wait_at <= until)
                if ((r = endpoint_timers(e, c, i, until))) return r;
        }
        return 0;
    }
    for (uint32_t k = 0; k < RULES.ntimer_order; k++) {
        if (RULES.timer_order[k] == TO_FINAL_ACK) {
            if ((r = fire_final_acks(e, c, until))) return r;
            if ((r = fire_rsts(e, c, until))) return r;
        } else if (RULES.timer_order[k] == TO_ENDPOINTS) {
            for (int i = 0; i < 2; i++)
                if ((r = endpoint_timers(e, c, i, until))) return r;
        } else return BAIL;
    }
    int64_t h = half_open_deadline(c, e);      /* rules.HALF_OPEN: still half-open when its time is up */
    if (h >= 0 && h <= until) c->timed_out = 1;
    return 0;
}

/* Connection.flush_all: the held final ACKs, then rules.FLUSH_AT_END for what is held for each side */
static int flush_all(Engine *e, conn_t *c) {
    int r;
    if (c->tw) return 0;
    if ((r = fire_final_acks(e, c, INT64_MAX))) return r;
    if ((r = fire_rsts(e, c, INT64_MAX))) return r;
    int order[2] = {0, 1};
    if (c->pending[0].present && c->pending[1].present && c->pending[1].order < c->pending[0].order) {
        order[0] = 1; order[1] = 0;
    }
    for (int k = 0; k < 2; k++) {
        int i = order[k];
        if (!c->pending[i].present) continue;
        ctx_t x;
        ctx_init(&x, e, c, NULL, e->now);
        x.x = i;
        x.h = &c->pending[i];
        x.nwq = c->nwq[i];              /* what waits behind it (queue:x) */
        memcpy(x.wq, c->wq[i], sizeof x.wq);
        if ((r = run(&x, PG_FLUSH_AT_END))) return r;
    }
    return 0;
}

/* Connection.end_anomalies: flush_all, then rules.END */
static int end_anomalies(Engine *e, conn_t *c) {
    if (c->tw) return 0;
    int r = flush_all(e, c);
    if (r) return r;
    ctx_t x;
    ctx_init(&x, e, c, NULL, c->last_ns);
    x.end = 1;
    return run(&x, PG_END);
}

/* rules.CLOSE_KINDS: the index of the first that holds */
static int close_kind(Engine *e, conn_t *c) {
    for (uint32_t i = 0; i < RULES.nclose; i++)
        if (cond_holds(e, c, &RULES.close_cond[i], NULL, -1) > 0) return (int)i;
    return (int)RULES.nclose - 1;
}

static PyObject *vlan_tuple(int nvlan, const uint16_t *vlan);

/* events mode: the connection's end as a tuple (rawfin.capture.engine turns it into a ConnectionEnd) */
static int emit_connection(Engine *e, conn_t *c, int kind, int closer, int rst, int cl, int sv, int server_active) {
    int idx[MAXANOM];
    for (int i = 0; i < c->nanom; i++) idx[i] = i;
    for (int i = 1; i < c->nanom; i++)
        for (int j = i; j > 0 && strcmp(c->anom_kind[idx[j - 1]], c->anom_kind[idx[j]]) > 0; j--) {
            int t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t;
        }
    PyObject *an = PyTuple_New(c->nanom);
    if (!an) return -1;
    for (int i = 0; i < c->nanom; i++) {
        PyObject *pair = Py_BuildValue("(sI)", c->anom_kind[idx[i]], (unsigned int)c->anom_n[idx[i]]);
        if (!pair) { Py_DECREF(an); return -1; }
        PyTuple_SET_ITEM(an, i, pair);
    }
    PyObject *vt = vlan_tuple(c->nvlan, c->vlan);
    if (!vt) { Py_DECREF(an); return -1; }
    PyObject *t = Py_BuildValue("(sLssNzzzsssLLLLLNNNN)", "c", (long long)c->id, c->name[cl], c->name[sv],
                                PyBool_FromLong(c->mid), closer >= 0 ? c->name[closer] : NULL,
                                closer >= 0 ? c->name[1 - closer] : NULL, rst >= 0 ? c->name[rst] : NULL,
                                RULES.close_names[kind],
                                ST_NAME[c->ep[cl].state], ST_NAME[c->ep[sv].state], (long long)c->first_frame,
                                (long long)c->last_frame, (long long)c->first_ns, (long long)c->last_ns,
                                (long long)c->packets, PyBool_FromLong(c->mid), PyBool_FromLong(server_active), an, vt);
    return out_object(e, t);
}

static int write_connection(Engine *e, conn_t *c) {
    int kind = close_kind(e, c);
    int closer = c->nfins ? c->fin_side[0] : -1;
    int cl = c->client, sv = 1 - c->client;
    int server_active = closer == sv && (RULES.time_wait_closes & (1u << kind))
                        && cond_holds(e, c, &RULES.time_wait_held, NULL, -1) > 0;
    /* a reset close: who sent the first RST (rules' note_rst) */
    int rst = (RULES.reset_closes & (1u << kind)) && (c->rst_seen == 1 || c->rst_seen == 2) ? c->rst_seen - 1 : -1;
    if (e->emit) {
        if (emit_connection(e, c, kind, closer, rst, cl, sv, server_active) < 0) return -1;
        e->by_close[kind]++;
        if (server_active) e->server_active++;
        e->done++;
        return 0;
    }
    if (out_reserve(e, 1024 + e->file_suffix_len) < 0) return -1;
    OUT_LIT(e, "{\"type\":\"connection\",\"conn\":");
    out_conn_id(e, c);
    OUT_LIT(e, ",\"client\":\"");
    out_name(e, c, cl);
    OUT_LIT(e, "\",\"server\":\"");
    out_name(e, c, sv);
    if (c->mid) OUT_LIT(e, "\",\"server_guessed\":true,\"active_closer\":");
    else OUT_LIT(e, "\",\"server_guessed\":false,\"active_closer\":");
    if (closer < 0) OUT_LIT(e, "null,\"passive_closer\":null");
    else {
        e->out[e->nout++] = '"';
        out_name(e, c, closer);
        OUT_LIT(e, "\",\"passive_closer\":\"");
        out_name(e, c, 1 - closer);
        e->out[e->nout++] = '"';
    }
    if (rst < 0) OUT_LIT(e, ",\"reset_by\":null");
    else {
        OUT_LIT(e, ",\"reset_by\":\"");
        out_cstr(e, c->name[rst]);
        e->out[e->nout++] = '"';
    }
    OUT_LIT(e, ",\"close\":\"");
    out_cstr(e, RULES.close_names[kind]);
    OUT_LIT(e, "\",\"final\":{\"");
    out_name(e, c, cl);
    OUT_LIT(e, "\":\"");
    out_state(e, c->ep[cl].state);
    OUT_LIT(e, "\",\"");
    out_name(e, c, sv);
    OUT_LIT(e, "\":\"");
    out_state(e, c->ep[sv].state);
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
    out_str(e, e->file_suffix, e->file_suffix_len);
    OUT_LIT(e, "}\n");
    e->by_close[kind]++;
    if (server_active) e->server_active++;
    e->done++;
    return 0;
}

/* Observer._finish: the connection's last anomalies, then its record (BAIL: the end needs Python) */
static int finish_conn(Engine *e, conn_t *c) {
    int r = end_anomalies(e, c);
    if (r) return r;
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

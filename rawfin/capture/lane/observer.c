/* rawfin._engine, part observer (included by rawfin/capture/_engine.c; one translation unit) */
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

/* rawfin._engine, part loop (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ the observer's loop */

static struct conn *expand(Engine *e, struct conn *kc);

static PyObject *py_segment(Engine *e, const ev_t *s, const char *src, int sport, const char *dst, int dport,
                            int nvlan, const uint16_t *vlan) {
    PyObject *vt = vlan_tuple(nvlan, vlan);
    if (!vt) return NULL;
    PyObject *ip;                           /* Segment.ip_id: the segment being taken's (e->ipid) */
    if (e->ipid >= 0) ip = PyLong_FromLong(e->ipid);
    else { ip = Py_None; Py_INCREF(ip); }
    if (!ip) { Py_DECREF(vt); return NULL; }
    return PyObject_CallFunction(e->make_seg, "ssiikkiiyLLLNN", src, dst, sport, dport, (unsigned long)s->seq,
                                 (unsigned long)s->ack, (int)s->flags, (int)s->window, "",
                                 (long long)s->data_len, (long long)s->frame, (long long)s->time_ns, vt, ip);
}

/* a segment of a pair the Python observer owns, with the shared connection numbering (Handback.feed) */
static int py_feed(Engine *e, PyObject *seg) {
    PyObject *ans = PyObject_CallFunction(e->cb_feed, "OL", seg, (long long)e->next_id);
    if (!ans) return -1;
    PyObject *recs, *timer;
    long long next;
    if (!PyArg_ParseTuple(ans, "OLO", &recs, &next, &timer)) { Py_DECREF(ans); return -1; }
    Py_INCREF(recs);
    e->next_id = next;
    int r = take_timer(e, timer);
    Py_DECREF(ans);
    if (r < 0) { Py_DECREF(recs); return -1; }
    e->py_calls++;
    return out_pyrecords(e, recs);
}

/* Observer._finish, now, for a connection given up on (rules.HALF_OPEN) or evicted: as the end of the
   capture finishes one (what is held delivered, then the end's anomalies and the record) */
static int give_up(Engine *e, conn_t *c) {
    size_t mark = e->nout;
    ev_t fa = {e->now, -1, 0, 0, 0, 0, 0, 3};
    int evicting = c->evicted;
    /* segments held by the loss and reordering rows (waiting behind a FIN, RSTs held): Python's end */
    int r = (c->nwq[0] || c->nwq[1] || c->nrq[0] || c->nrq[1]) ? BAIL : flush_all(e, c);
    if (r == 0 && !c->tw && log_add(c, &fa) < 0) return -1;
    if (r == 0) r = finish_conn(e, c);
    if (r == ERR) return -1;
    if (r == 0) return 0;
    out_rollback(e, mark);      /* Python's end says how: it replays the log, then finishes */
    uint8_t key[KEYLEN];
    uint32_t h = c->hash;
    memcpy(key, c->key, KEYLEN);
    PyObject *p = handoff(e, c);
    if (!p) return -1;
    int rr = evicting ? out_answer(e, PyObject_CallOneArg(e->cb_evict_taken, p))
                      : out_pyrecords(e, PyObject_CallOneArg(e->cb_end_finish, p));
    Py_DECREF(p);
    if (rr < 0) return -1;
    conn_t *m = table_get(e, key, h);       /* nobody follows the pair now: its marker goes */
    if (m && m->python) {
        table_del(e, m);
        m->dead = 1;
        conn_release(e, m);
    }
    return 0;
}

/* --max-connections: while more are tracked (the lane's and Python's), the least recently active
   connection is written out as it stands (Observer._evict) */
static int make_room(Engine *e) {
    for (;;) {
        int64_t n = e->nlane;
        if (e->nmarkers) {
            PyObject *v = PyObject_CallNoArgs(e->cb_tracked);
            if (!v) return -1;
            n += PyLong_AsLongLong(v);
            Py_DECREF(v);
            if (PyErr_Occurred()) return -1;
        }
        conn_t *c = e->by_age.head;
        if (n <= e->max_conns || !c) return 0;
        if (out_full(e) && out_flush(e) < 0) return -1;
        if (c->compact && !(c = expand(e, c))) return -1;
        if (!c->python) {
            c->evicted = 1;
            if (give_up(e, c) < 0) return -1;
            continue;
        }
        /* a pair Python follows: Python evicts its connection (None: it has finished it already) */
        PyObject *ans = c->pykey ? PyObject_CallOneArg(e->cb_evict, c->pykey) : Py_NewRef(Py_None);
        if (!ans) return -1;
        table_del(e, c);
        c->dead = 1;
        conn_release(e, c);
        if (ans == Py_None) { Py_DECREF(ans); continue; }
        if (out_answer(e, ans) < 0) return -1;
    }
}

/* Observer._expire, the lane's heap and Python's merged in (deadline, connection id) order */
static int expire(Engine *e, int64_t now) {
    for (;;) {
        int64_t pw = e->py_timer_when, pid = e->py_timer_id;
        int64_t hw = e->nheap ? HW(e, 0) : 0;
        int c_due = e->nheap && hw <= now;
        int p_due = pw >= 0 && pw <= now;
        if (!c_due && !p_due) return 0;
        if (p_due && (!c_due || pw < hw || (pw == hw && pid < e->heap[0].c->id))) {
            if (out_answer(e, PyObject_CallFunction(e->cb_expire_one, "L", (long long)now)) < 0) return -1;
            continue;
        }
        if (out_full(e) && out_flush(e) < 0) return -1;
        conn_t *c = heap_pop(e);            /* (its deadline: hw) */
        if (c->compact && !(c = expand(e, c))) return -1;
        c->queued = -1;
        ev_t fire = {hw, -1, 0, 0, 0, 0, 0, reprieved(c, e) ? 4 : 2};    /* 4: replayed reprieved */
        size_t mark = e->nout;
        int r = fire_timers(e, c, hw);
        if (r == ERR) return -1;
        if (r == 0) {
            if (evid_commit(e) < 0) return -1;
            if (log_add(c, &fire) < 0) return -1;
            if (c->timed_out) {                 /* rules.HALF_OPEN: given up on */
                if (give_up(e, c) < 0) return -1;
                continue;
            }
            if (!c->tw && settled(e, c)) settle(c);
            int64_t nd = next_deadline(c, e);
            if (nd >= 0) {
                if (schedule(e, c, nd > hw + 1 ? nd : hw + 1) < 0) return -1;
                continue;
            }
            if (all_closed(c)) {
                int64_t quiet = c->last_ns + e->linger_ns;
                if (quiet <= now) {
                    r = finish_conn(e, c);
                    if (r == ERR) return -1;
                    if (r == 0) continue;
                } else {
                    if (schedule(e, c, quiet) < 0) return -1;
                    continue;
                }
            } else continue;
        }
        /* BAIL: Python takes the connection, then this timer */
        out_rollback(e, mark);
        e->nevid = 0; e->ntrip = 0; e->nreo = 0;
        int64_t q = hw;
        PyObject *pc = handoff(e, c);
        if (!pc) return -1;
        PyObject *ans = PyObject_CallFunction(e->cb_fire, "OLL", pc, (long long)q, (long long)now);
        Py_DECREF(pc);
        if (out_answer(e, ans) < 0) return -1;
    }
}

/* the address text of a raw address, as rawfin prints it (IPv6: rawfin's own text, from Python); its length */
static int addr_text(Engine *e, int fam, const uint8_t *a, char *out, size_t n) {
    size_t k = 0;
    if (fam == 4 && n >= 16) {     /* (at most 15 characters) */
        for (int i = 0; i < 4; i++) {
            if (i) out[k++] = '.';
            k = (size_t)(put_u32(out + k, a[i]) - out);
        }
        out[k] = 0;
        return (int)k;
    }
    if (fam == 4) {
        for (int i = 0; i < 4; i++) {
            if (i && k < n - 1) out[k++] = '.';
            k = put_int(out, k, n, a[i]);
        }
        out[k] = 0;
        return (int)k;
    }
    PyObject *t = PyObject_CallFunction(e->fmt6, "y#", (const char *)a, (Py_ssize_t)16);
    if (!t) return -1;
    const char *u = PyUnicode_AsUTF8(t);
    if (!u) { Py_DECREF(t); return -1; }
    k = put_text(out, 0, n, u);
    out[k] = 0;
    Py_DECREF(t);
    return (int)k;
}

/* the endpoints' names, "a.b.c.d:port" / "[v6]:port", and which sorts first as Python's key does */
static int fmt_names(Engine *e, conn_t *c) {
    char ip[2][48];
    for (int i = 0; i < 2; i++) {
        int len = addr_text(e, c->fam, c->addr[i], ip[i], sizeof ip[i]);
        if (len < 0) return -1;
        size_t n = sizeof c->name[i], k = 0;
        char *out = c->name[i];
        if (c->fam != 4 && k < n - 1) out[k++] = '[';
        k = put_text(out, k, n, ip[i]);
        if (c->fam != 4 && k < n - 1) out[k++] = ']';
        if (k < n - 1) out[k++] = ':';
        k = put_int(out, k, n, c->port[i]);
        out[k] = 0;
        c->name_len[i] = (uint8_t)k;
    }
    /* the Python key's order: (ip text, port) tuples compared */
    int cmp = strcmp(ip[0], ip[1]);
    c->ka = (cmp < 0 || (cmp == 0 && c->port[0] <= c->port[1])) ? 0 : 1;
    return 0;
}

/* ------------------------------------------------------------------ compact connections
 * A connection whose whole history is one SYN keeps only its table entry, its timer, its place by
 * activity and the SYN (compact_t): a flood of a million SYNs costs about 200 bytes a connection
 * instead of 1 KB. Anything that looks further first makes it a conn_t again (expand) by doing
 * what on_segment did with that SYN: the same rules on the same segment, the same connection.
 *
 * Only under pressure: a connection a SYN alone made joins the list of the last ones (by_age);
 * when more than compact_after are in it, the oldest leaves it, and is made compact if it is still
 * a SYN alone (nothing has answered it while compact_after newer connections were born). A SYN that
 * is answered as usual (within a round trip) never is: making it compact and then expanding and
 * replaying it on its SYN,ACK cost about 5% of all the work on an ordinary capture. A flood holds at
 * most compact_after full entries beside its compact ones (rawfin.capture.engine.COMPACT_AFTER;
 * 0: every one at once, the test trigger of this path).
 */

/* is this connection, just born of one segment, one a SYN alone made (and so one expand can remake)? */
static int can_compact(const Engine *e, const conn_t *c, const ev_t *s) {
    return !e->max_conns && c->nlog == 1 && !c->nvlan && !c->python && !c->tw && (s->flags & (F_SYN | F_ACK | F_RST | F_FIN)) == F_SYN
           && !s->data_len && !c->nanom;
}

/* the entry ``nw`` takes the place of ``old``: the table, the timer heap, the activity list */
static void conn_replace(Engine *e, conn_t *old, conn_t *nw) {
    table_swap(e, old, nw);
    int32_t pos = e->hpos[old->slot];
    e->hpos[nw->slot] = pos;
    if (pos >= 0) { e->heap[pos].c = nw; e->heap[pos].slot = nw->slot; }
    e->hpos[old->slot] = -1;       /* (compact entries are never in the activity list) */
}

static int compact(Engine *e, conn_t *c) {
    compact_t *k = calloc(1, sizeof *k);
    if (!k) { PyErr_NoMemory(); return -1; }
    if (slot_new(e, &k->slot) < 0) { free(k); return -1; }
    conn_t *kc = (conn_t *)k;
    memcpy(k->key, c->key, KEYLEN);
    k->hash = c->hash;
    k->id = c->id;
    k->queued = c->queued;
    k->compact = 1;
    k->syn = c->log[0];
    e->compacted++;
    int alen = c->fam == 4 ? 4 : 16;
    k->swap = !(memcmp(c->addr[0], c->key + 1, (size_t)alen) == 0 &&
                c->port[0] == (uint16_t)(c->key[33] << 8 | c->key[34]));
    conn_replace(e, c, kc);
    c->dead = 1;
    conn_release(e, c);
    return 0;
}

/* a connection a SYN alone made: compact now, or when compact_after newer ones show it is not
   answered -- the oldest of the list leaves it, made compact if it is still a SYN alone */
static int syn_alone(Engine *e, conn_t *c) {
    if (!e->compact_after) return compact(e, c);
    age_append(e, c);
    while (e->by_age.n > e->compact_after) {
        conn_t *o = e->by_age.head;
        age_unlink(e, o);
        if (o->nlog == 1 && can_compact(e, o, &o->log[0]) && compact(e, o) < 0) return -1;
    }
    return 0;
}

static int birth(Engine *e, conn_t *c, const ev_t *s);

/* the segment taken counts in its sender's highest IPv4 ID (Connection.note_id: not an ID 0, not a SYN; one behind
   the highest, reordered, leaves it) */
static inline void id_note(const Engine *e, conn_t *c, const ev_t *s, int dir) {
    if (e->ipid <= 0 || (s->flags & F_SYN)) return;
    uint16_t id = (uint16_t)e->ipid;
    if ((c->has_id >> dir & 1) && !((uint16_t)(id - c->id_top[dir]) - 1u < 0x7FFFu)) return;
    c->id_top[dir] = id;
    c->has_id |= (uint8_t)(1 << dir);
}
static int process(Engine *e, conn_t *c, const ev_t *s, int dir);

/* a compact connection made a conn_t again: its SYN through birth and the segment rules, as
   on_segment first took it (what that wrote is written already: it is dropped) */
static conn_t *expand(Engine *e, conn_t *kc) {
    compact_t *k = (compact_t *)kc;
    conn_t *c = conn_new(e);
    if (!c) return NULL;
    memcpy(c->key, k->key, KEYLEN);
    c->hash = k->hash;
    c->id = k->id;
    c->queued = k->queued;
    int fam = k->key[0], alen = fam == 4 ? 4 : 16;
    int first = k->swap ? 1 : 0;            /* the first sender: the key's first address, or its second */
    memcpy(c->addr[0], k->key + 1 + 16 * first, (size_t)alen);
    memcpy(c->addr[1], k->key + 17 - 16 * first, (size_t)alen);
    c->port[0] = (uint16_t)(k->key[33 + 2 * first] << 8 | k->key[34 + 2 * first]);
    c->port[1] = (uint16_t)(k->key[35 - 2 * first] << 8 | k->key[36 - 2 * first]);
    c->fam = (uint8_t)fam;
    if (fmt_names(e, c) < 0) { conn_release(e, c); return NULL; }
    ev_t s = k->syn;
    c->first_frame = c->last_frame = s.frame;
    c->first_ns = c->last_ns = c->syn_ns = s.time_ns;
    for (int i = 0; i < 2; i++) { c->ep[i].time_wait_at = -1; c->ep[i].state = CLOSED; }
    c->syn_at = c->synack_at = -1;
    size_t mark = e->nout;
    s.kind &= KIND_ID0;
    int r = birth(e, c, &s);
    if (r == 0) r = process(e, c, &s, 0);
    out_rollback(e, mark);
    if (r == 0) r = log_add(c, &s) < 0 ? ERR : 0;
    if (r) {
        if (r != ERR) PyErr_SetString(PyExc_RuntimeError, "rawfin lane: a compact connection did not replay");
        c->dead = 1;
        conn_release(e, c);
        return NULL;
    }
    conn_replace(e, kc, c);
    kc->dead = 1;
    conn_release(e, kc);
    return c;
}

/* does the Python observer hold a connection of this 4-tuple, tagged or not (Handback.has_pair)? */
static int py_has_tuple(Engine *e, int fam, const uint8_t *src, uint16_t sport, const uint8_t *dst, uint16_t dport) {
    char a[48], b[48];
    if (addr_text(e, fam, src, a, sizeof a) < 0 || addr_text(e, fam, dst, b, sizeof b) < 0) return -1;
    PyObject *r = PyObject_CallFunction(e->cb_has_pair, "sisi", a, (int)sport, b, (int)dport);
    if (!r) return -1;
    int has = PyObject_IsTrue(r);
    Py_DECREF(r);
    return has;
}

/* One TCP segment of the capture, decoded by the lane or by Python.
   ``pyseg``: the Python Segment when Python decoded it, else NULL (made only if needed). */
static int on_segment_in(Engine *e, int fam, const uint8_t *src, uint16_t sport, const uint8_t *dst, uint16_t dport,
                      int nvlan, const uint16_t *vlan, ev_t *s, PyObject *pyseg) {
    int64_t now = s->time_ns;
    if (now > e->now) e->now = now;
    uint8_t key[KEYLEN];
    uint32_t h;
    const uint8_t *pre = e->pre;
    e->pre = NULL;                          /* (once: the frame's own segment) */
    if (pre && !nvlan) {
        memcpy(key, pre, KEYLEN);
        h = e->pre_h;
#ifdef LANE_CHECK_AHEAD
        uint8_t k2[KEYLEN];
        uint32_t h2;
        make_key(k2, fam, src, sport, dst, dport, nvlan, vlan, &h2);
        if (h2 != h || memcmp(k2, key, KEYLEN)) { fprintf(stderr, "rawfin lane: key made ahead differs\n"); abort(); }
#endif
    } else make_key(key, fam, src, sport, dst, dport, nvlan, vlan, &h);
    conn_t *own;
    uint64_t own_gen;
    {
        /* the expiry this segment brings does not give up on the segment's own connection
           (Observer.reprieve): in the lane by its key, in Python by the pair's key */
        own = table_get(e, key, h);
        own_gen = e->table_gen;
        PyObject *pyk = own && own->python && own->pykey && e->py_timer_when >= 0 && e->py_timer_when <= now
                        ? own->pykey : NULL;
        if (pyk) {
            PyObject *r = PyObject_CallOneArg(e->cb_reprieve, pyk);
            if (!r) return -1;
            Py_DECREF(r);
        }
        memcpy(e->reprieve_key, key, KEYLEN);
        e->reprieve_hash = h;
        e->reprieve_on = 1;
        int rx = expire(e, now);            /* both heaps: the lane's and the Python observer's */
        e->reprieve_on = 0;
        if (pyk) {
            PyObject *r = PyObject_CallOneArg(e->cb_reprieve, Py_None);
            if (!r) return -1;
            Py_DECREF(r);
        }
        if (rx < 0) return -1;
    }
    conn_t *c = e->table_gen == own_gen ? own : table_get(e, key, h);    /* (the expiry may have changed the table) */
    if (c && c->compact && !(c = expand(e, c))) return -1;
    size_t born_mark = e->nout;
    if (c && c->python) goto to_python;
    if (nvlan) e->vlan_seen = 1;
    if (c == NULL) {
        if (nvlan || e->vlan_seen) {
            /* the same 4-tuple on another VLAN view -- another tag, or none (a router on a stick; a
               capture that sees each packet twice, tagged and untagged): Observer._adopt decides, in
               Python. A capture without tags pays nothing here. */
            conn_t *o = index4_get(e, key);
            if (!o && nvlan) {
                uint8_t k0[KEYLEN];
                uint32_t h0;
                make_key(k0, fam, src, sport, dst, dport, 0, NULL, &h0);
                o = table_get(e, k0, h0);
                if (o && o->python) goto new_python;
                if (o && o->compact && !(o = expand(e, o))) return -1;
            }
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
        /* a new pair: rules.BIRTH says who is who (the lane declines what it cannot follow) */
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
        c->first_ns = c->last_ns = c->syn_ns = now;
        c->syn_at = c->synack_at = -1;
        for (int i = 0; i < 2; i++) { c->ep[i].time_wait_at = -1; c->ep[i].state = CLOSED; }
        s->kind &= KIND_ID0;
        born_mark = e->nout;
        int rb = birth(e, c, s);
        if (rb == ERR) return -1;
        if (rb == BAIL) {
            out_rollback(e, born_mark);
            e->nevid = 0; e->ntrip = 0; e->nreo = 0;
            e->next_id = c->id;
            c->next = e->free_list;
            e->free_list = c;
            goto new_python;
        }
        if (table_put(e, c) < 0) return -1;
        if (nvlan) index4_put(e, c);
    }
    int dir;
    {
        int alen = fam == 4 ? 4 : 16;
        dir = (memcmp(c->addr[0], src, (size_t)alen) == 0 && c->port[0] == sport) ? 0 : 1;
    }
    s->kind = (uint8_t)(dir | (s->kind & KIND_ID0));
    if (e->ipid > 0 && !(s->flags & F_SYN) && (c->has_id >> dir & 1)) {
        uint16_t step = (uint16_t)(e->ipid - c->id_top[dir]);
        if (step == 2) s->kind |= KIND_IDSKIP;
        else if (step > 2 && step <= RULES.id_skips_max) s->kind |= KIND_IDSKIPS;
    }
    if ((s->flags & F_SYN) && !(s->flags & F_ACK) && c->nlog && new_syn(e, c, s, dir))
        goto bail;                              /* a new connection on the pair (rules.NEW_SYN): Python's */
    if (fast(e, c, s, dir)) { id_note(e, c, s, dir); return log_add(c, s); }
    {
        size_t mark = c->nlog ? e->nout : born_mark;
        int r = process(e, c, s, dir);
        if (r == ERR) return -1;
        if (r == BAIL) { out_rollback(e, mark); e->nevid = 0; e->ntrip = 0; e->nreo = 0; goto bail; }
        if (evid_commit(e) < 0) return -1;
        id_note(e, c, s, dir);
        if (log_add(c, s) < 0) return -1;
        if (!c->tw && settled(e, c)) settle(c);
        int64_t d = next_deadline(c, e);
        if (d >= 0) { if (schedule(e, c, d) < 0) return -1; }
        else if (all_closed(c)) { if (schedule(e, c, now + e->linger_ns) < 0) return -1; }
        if (can_compact(e, c, s) && syn_alone(e, c) < 0) return -1;   /* a SYN alone so far: keep little */
        if (out_full(e)) return out_flush(e);
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
    e->ever_python = 1;
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
            c->pykey = PyObject_CallOneArg(e->cb_key_of, seg);
            if (!c->pykey) r = -1;
        }
        Py_DECREF(seg);
        return r;
    }
}

/* One TCP segment (on_segment_in); then, with --max-connections, the pair is the most recently
   active and the least recently active make room (Observer.feed's end) */
static int on_segment(Engine *e, int fam, const uint8_t *src, uint16_t sport, const uint8_t *dst, uint16_t dport,
                      int nvlan, const uint16_t *vlan, ev_t *s, PyObject *pyseg) {
    int r = on_segment_in(e, fam, src, sport, dst, dport, nvlan, vlan, s, pyseg);
    if (r < 0 || !e->max_conns) return r;
    uint8_t key[KEYLEN];
    uint32_t h;
    make_key(key, fam, src, sport, dst, dport, nvlan, vlan, &h);
    conn_t *c = table_get(e, key, h);
    if (c) lru_touch(e, c);
    return make_room(e);
}

/* markers of pairs whose Python connection has finished: let them go (Handback.active) */
static int sweep_markers(Engine *e) {
    PyObject *keys = PyList_New(0);
    if (!keys) return -1;
    for (uint32_t i = 0; i < e->nbuckets; i++)
        for (conn_t *c = e->buckets[i]; c; c = c->next)
            if (c->python && c->pykey && PyList_Append(keys, c->pykey) < 0) { Py_DECREF(keys); return -1; }
    if (!PyList_GET_SIZE(keys)) { Py_DECREF(keys); return 0; }
    PyObject *ans = PyObject_CallOneArg(e->cb_active, keys);
    Py_DECREF(keys);
    if (!ans) return -1;
    PyObject *still = PySequence_Fast(ans, "active() must give a list");
    Py_DECREF(ans);
    if (!still) return -1;
    Py_ssize_t k = 0, n = PySequence_Fast_GET_SIZE(still);
    for (uint32_t i = 0; i < e->nbuckets; i++) {
        conn_t **pp = &e->buckets[i];
        while (*pp) {
            conn_t *c = *pp;
            if (c->python && c->pykey) {
                int has = k < n ? PyObject_IsTrue(PySequence_Fast_GET_ITEM(still, k)) : 1;
                k++;
                if (has < 0) { Py_DECREF(still); return -1; }
                if (!has) {
                    *pp = c->next;
                    e->table_gen++;
                    e->nconns--;
                    e->nmarkers--;
                    age_unlink(e, c);
                    c->dead = 1;
                    conn_release(e, c);
                    continue;
                }
            }
            pp = &c->next;
        }
    }
    Py_DECREF(still);
    return 0;
}

/* rawfin._engine, part loop (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ the observer's loop */

static PyObject *py_segment(Engine *e, const ev_t *s, const char *src, int sport, const char *dst, int dport,
                            int nvlan, const uint16_t *vlan) {
    PyObject *vt = vlan_tuple(nvlan, vlan);
    if (!vt) return NULL;
    return PyObject_CallFunction(e->make_seg, "ssiikkiiyLLLN", src, dst, sport, dport, (unsigned long)s->seq,
                                 (unsigned long)s->ack, (int)s->flags, (int)s->window, "",
                                 (long long)s->data_len, (long long)s->frame, (long long)s->time_ns, vt);
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

/* Observer._expire, the lane's heap and Python's merged in (deadline, connection id) order */
static int expire(Engine *e, int64_t now) {
    for (;;) {
        int64_t pw = e->py_timer_when, pid = e->py_timer_id;
        int c_due = e->nheap && e->heap[0].when <= now;
        int p_due = pw >= 0 && pw <= now;
        if (!c_due && !p_due) return 0;
        if (p_due && (!c_due || pw < e->heap[0].when || (pw == e->heap[0].when && pid < e->heap[0].id))) {
            if (out_answer(e, PyObject_CallFunction(e->cb_expire_one, "L", (long long)now)) < 0) return -1;
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
            if (evid_commit(e) < 0) return -1;
            if (log_add(c, &fire) < 0) return -1;
            if (!c->tw && settled(e, c)) settle(c);
            int64_t nd = next_deadline(c, e);
            if (nd >= 0) {
                if (schedule(e, c, nd > h.when + 1 ? nd : h.when + 1) < 0) return -1;
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
        e->nevid = 0;
        int64_t q = h.when;
        PyObject *pc = handoff(e, c);
        if (!pc) return -1;
        PyObject *ans = PyObject_CallFunction(e->cb_fire, "OLL", pc, (long long)q, (long long)now);
        Py_DECREF(pc);
        if (out_answer(e, ans) < 0) return -1;
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

/* does the Python observer hold a VLAN-tagged connection of this 4-tuple (Handback.has_pair)? */
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
static int on_segment(Engine *e, int fam, const uint8_t *src, uint16_t sport, const uint8_t *dst, uint16_t dport,
                      int nvlan, const uint16_t *vlan, ev_t *s, PyObject *pyseg) {
    int64_t now = s->time_ns;
    if (now > e->now) e->now = now;
    if (expire(e, now) < 0) return -1;     /* both heaps: the lane's and the Python observer's */
    uint8_t key[KEYLEN];
    make_key(key, fam, src, sport, dst, dport, nvlan, vlan);
    uint32_t h = hash_key(key, KEYLEN);
    conn_t *c = table_get(e, key, h);
    size_t born_mark = e->nout;
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
        c->first_ns = c->last_ns = now;
        for (int i = 0; i < 2; i++) { c->ep[i].time_wait_at = -1; c->ep[i].state = CLOSED; }
        s->kind = 0;
        born_mark = e->nout;
        int rb = birth(e, c, s);
        if (rb == ERR) return -1;
        if (rb == BAIL) {
            out_rollback(e, born_mark);
            e->nevid = 0;
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
    s->kind = (uint8_t)dir;
    if ((s->flags & F_SYN) && !(s->flags & F_ACK) && c->nlog && new_syn(e, c, s, dir))
        goto bail;                              /* a new connection on the pair (rules.NEW_SYN): Python's */
    if (fast(e, c, s, dir)) return log_add(c, s);
    {
        size_t mark = c->nlog ? e->nout : born_mark;
        int r = process(e, c, s, dir);
        if (r == ERR) return -1;
        if (r == BAIL) { out_rollback(e, mark); e->nevid = 0; goto bail; }
        if (evid_commit(e) < 0) return -1;
        if (log_add(c, s) < 0) return -1;
        if (!c->tw && settled(e, c)) settle(c);
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
            c->pykey = PyObject_CallOneArg(e->cb_key_of, seg);
            if (!c->pykey) r = -1;
        }
        Py_DECREF(seg);
        return r;
    }
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
                    e->nconns--;
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

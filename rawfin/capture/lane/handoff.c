/* rawfin._engine, part handoff (included by rawfin/capture/_engine.c; one translation unit) */
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

/* Replay the connection into the Python observer (Handback.take); returns its handle (new ref).
   The lane's connection stays in the table as a marker: the pair is Python's from now on. */
static PyObject *handoff(Engine *e, conn_t *c) {
    char ip0[48], ip1[48];
    e->handoffs++;
    e->ever_python = 1;
    ip_text(c, 0, ip0, sizeof ip0);
    ip_text(c, 1, ip1, sizeof ip1);
    PyObject *evs = events_list(c);
    if (!evs) return NULL;
    PyObject *vt = vlan_tuple(c->nvlan, c->vlan);
    if (!vt) { Py_DECREF(evs); return NULL; }
    PyObject *ans = PyObject_CallFunction(e->cb_take, "LN(si)(si)LN(ii)", (long long)c->id, evs, ip0, (int)c->port[0],
                                          ip1, (int)c->port[1], (long long)c->queued, vt,
                                          c->has_id & 1 ? (int)c->id_top[0] : -1, c->has_id & 2 ? (int)c->id_top[1] : -1);
    if (!ans) return NULL;
    PyObject *pc, *key, *timer;
    if (!PyArg_ParseTuple(ans, "OOO", &pc, &key, &timer) || take_timer(e, timer) < 0) { Py_DECREF(ans); return NULL; }
    Py_INCREF(pc);
    Py_INCREF(key);
    Py_DECREF(ans);
    /* the lane's heap entry (if any) goes stale; the marker keeps the pair routed to Python */
    conn_t *m = conn_new(e);
    if (!m) { Py_DECREF(key); Py_DECREF(pc); return NULL; }
    memcpy(m->key, c->key, KEYLEN);
    m->hash = c->hash;
    m->python = 1;
    m->pykey = key;
    lru_replace(e, c, m);       /* the pair keeps its place by activity */
    table_del(e, c);
    c->dead = 1;
    conn_release(e, c);
    if (table_put(e, m) < 0) { Py_DECREF(pc); return NULL; }
    return pc;
}

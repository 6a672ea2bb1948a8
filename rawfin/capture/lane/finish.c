/* rawfin._engine, part finish (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ the end of the capture */


/* Observer.finish over both kinds of connection, in connection-id order */
typedef struct { int64_t id; conn_t *c; PyObject *p; } item_t;

static int cmp_item(const void *a, const void *b) {
    int64_t x = ((const item_t *)a)->id, y = ((const item_t *)b)->id;
    return x < y ? -1 : x > y;
}

static int finish_all(Engine *e) {
    PyObject *pyconns = PyObject_CallNoArgs(e->cb_end_conns);
    if (!pyconns) return -1;
    Py_ssize_t np = PyList_GET_SIZE(pyconns);
    size_t n = 0, cap = (size_t)e->nconns + (size_t)np + 1;
    item_t *it = calloc(cap, sizeof(item_t));
    if (!it) { Py_DECREF(pyconns); PyErr_NoMemory(); return -1; }
    for (uint32_t i = 0; i < e->nbuckets; i++)
        for (conn_t *c = e->buckets[i]; c; c = c->next)
            if (!c->python) { it[n].id = c->id; it[n].c = c; n++; }
    for (Py_ssize_t j = 0; j < np; j++) {
        PyObject *pc;
        long long id;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(pyconns, j), "LO", &id, &pc)) goto fail;
        it[n].id = id;
        Py_INCREF(pc);
        it[n].p = pc;
        n++;
    }
    qsort(it, n, sizeof(item_t), cmp_item);
    for (size_t k = 0; k < n; k++) {            /* pass 1: flush what is held, fire what is due */
        e->nevid = 0; e->ntrip = 0; e->nreo = 0;    /* (where segments get lost matters no more: no segment follows) */
        if (out_full(e) && out_flush(e) < 0) goto fail;
        if (it[k].c) {
            conn_t *c = it[k].c;
            if (c->compact) continue;           /* a SYN alone: nothing to say here (pass 2 expands it) */
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
            out_rollback(e, mark);
            PyObject *p = handoff(e, c);
            if (!p) goto fail;
            it[k].c = NULL;
            it[k].p = p;
        }
        PyObject *recs = PyObject_CallFunction(e->cb_end_prepare, "OL", it[k].p, (long long)e->now);
        if (out_pyrecords(e, recs) < 0) goto fail;
    }
    for (size_t k = 0; k < n; k++) {            /* pass 2: the end of each connection */
        e->nevid = 0; e->ntrip = 0; e->nreo = 0;
        if (out_full(e) && out_flush(e) < 0) goto fail;
        if (it[k].c) {
            conn_t *c = it[k].c;
            if (c->compact) {                   /* pass 1 said nothing for it: do it now, then its end */
                if (!(c = it[k].c = expand(e, c))) goto fail;
                ev_t fa = {e->now, -1, 0, 0, 0, 0, 0, 3}, fire = {e->now, -1, 0, 0, 0, 0, 0, 2};
                size_t quiet = e->nout;
                int r1 = flush_all(e, c);
                if (r1 == 0) r1 = fire_timers(e, c, e->now);
                if (r1 == ERR) goto fail;
                if (r1 || e->nout != quiet) {
                    PyErr_SetString(PyExc_RuntimeError, "rawfin lane: a compact connection's end said more");
                    goto fail;
                }
                if (log_add(c, &fa) < 0 || log_add(c, &fire) < 0) goto fail;
            }
            size_t mark = e->nout;
            int r = finish_conn(e, c);
            if (r == ERR) goto fail;
            if (r == 0) continue;
            out_rollback(e, mark);
            /* its last words need Python (anomalies only the end can tell): replay, then Python's end.
               The log holds pass 1's flush and fire, so the replayed connection is where this one is. */
            PyObject *p = handoff(e, c);
            if (!p) goto fail;
            it[k].c = NULL;
            it[k].p = p;
        }
        PyObject *recs = PyObject_CallOneArg(e->cb_end_finish, it[k].p);
        if (out_pyrecords(e, recs) < 0) goto fail;
    }
    for (size_t k = 0; k < n; k++) Py_XDECREF(it[k].p);
    free(it);
    Py_DECREF(pyconns);
    PyObject *r = PyObject_CallNoArgs(e->cb_end_clear);
    if (!r) return -1;
    Py_DECREF(r);
    return out_flush(e);
fail:
    for (size_t k = 0; k < n; k++) Py_XDECREF(it[k].p);
    free(it);
    Py_DECREF(pyconns);
    return -1;
}

/* rawfin._engine, part module (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ the Python type */

#define NCB 16          /* the Handback's callables */

static int Engine_init(Engine *e, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"feed", "expire_one", "take", "fire", "decode", "has_pair", "key_of", "active",
                             "end_conns", "end_prepare", "end_finish", "end_clear", "tracked", "evict", "evict_taken", "reprieve",
                             "dumps", "write", "fmt6", "make_segment", "msl_ns", "hold_ns", "file_suffix", "msl_text",
                             "evidence", "loss_evidence", "emit", "syn_timeout_ns", "syn_ack_timeout_ns",
                             "max_connections", "relative_seq", "compact_after", "moves", NULL};
    PyObject *cb[NCB], *dumps, *wr, *f6, *mk, *ev, *lk, *emit = Py_None;
    long long msl, hold, syn_to = -1, synack_to = -1, maxc = 0, compact_after = 256;
    int relative = 0, moves = 0;
    const char *suffix, *c2;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOOOOOOOOOOOOOOOLLssOO|OLLLpLp", kwlist, &cb[0], &cb[1], &cb[2], &cb[3],
                                     &cb[4], &cb[5], &cb[6], &cb[7], &cb[8], &cb[9], &cb[10], &cb[11], &cb[12],
                                     &cb[13], &cb[14], &cb[15], &dumps, &wr, &f6, &mk, &msl, &hold, &suffix, &c2, &ev,
                                     &lk, &emit, &syn_to, &synack_to, &maxc, &relative, &compact_after, &moves))
        return -1;
    if (!table_set || !rules_set) { PyErr_SetString(PyExc_RuntimeError, "set_table() and set_rules() first"); return -1; }
    if (strlen(suffix) >= sizeof e->file_suffix || strlen(c2) >= sizeof e->msl_text) {
        PyErr_SetString(PyExc_ValueError, "file label too long for the compiled engine");
        return -1;
    }
    PyObject **slots[NCB] = {&e->cb_feed, &e->cb_expire_one, &e->cb_take, &e->cb_fire, &e->cb_decode, &e->cb_has_pair,
                             &e->cb_key_of, &e->cb_active, &e->cb_end_conns, &e->cb_end_prepare, &e->cb_end_finish,
                             &e->cb_end_clear, &e->cb_tracked, &e->cb_evict, &e->cb_evict_taken, &e->cb_reprieve};
    for (int i = 0; i < NCB; i++) {
        if (!PyCallable_Check(cb[i])) { PyErr_Format(PyExc_TypeError, "%s must be callable", kwlist[i]); return -1; }
        Py_INCREF(cb[i]);
        Py_XSETREF(*slots[i], cb[i]);
    }
    Py_INCREF(dumps); Py_XSETREF(e->dumps, dumps);
    Py_INCREF(wr); Py_XSETREF(e->write, wr);
    Py_INCREF(f6); Py_XSETREF(e->fmt6, f6);
    Py_INCREF(mk); Py_XSETREF(e->make_seg, mk);
    if (e->nout) { PyErr_SetString(PyExc_RuntimeError, "the engine was started already"); return -1; }
    Py_XSETREF(e->emit, emit == Py_None ? NULL : Py_NewRef(emit));
    if (moves && !e->emit) { PyErr_SetString(PyExc_ValueError, "moves: with emit only"); return -1; }
    e->moves = moves;
    e->py_timer_when = e->py_timer_id = -1;
    /* where segments get lost: which anomaly kinds are evidence of it (rules.LOSS_EVIDENCE, as plain
       (kind, down, local) tuples); what a call notes goes to the ``evidence`` callable when the call stands */
    if (!PyCallable_Check(ev)) { PyErr_SetString(PyExc_TypeError, "evidence must be callable"); return -1; }
    Py_INCREF(ev); Py_XSETREF(e->cb_evidence, ev);
    e->nevid = 0; e->ntrip = 0; e->nreo = 0;
    if (!PyList_Check(lk) || PyList_GET_SIZE(lk) > MAXLK) {
        PyErr_SetString(PyExc_TypeError, "loss_evidence: a list of at most 8 (kind, down, local)");
        return -1;
    }
    e->nlk = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lk); i++) {
        const char *kind;
        int down, local;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(lk, i), "spp", &kind, &down, &local)) return -1;
        if (strlen(kind) >= sizeof e->lk_kind[0]) {
            PyErr_SetString(PyExc_ValueError, "loss_evidence: a kind too long");
            return -1;
        }
        strcpy(e->lk_kind[e->nlk], kind);
        e->lk_down[e->nlk] = (uint8_t)down;
        e->lk_local[e->nlk] = (uint8_t)local;
        e->nlk++;
    }
    e->msl_ns = msl;
    e->hold_ns = hold;
    /* rules.HALF_OPEN's timeouts: the rules' defaults unless given (-1) */
    e->max_conns = maxc > 0 ? maxc : 0;
    e->relative = relative;
    if (compact_after < 0 || compact_after > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "compact_after: 0 (every SYN alone at once) or a count");
        return -1;
    }
    e->compact_after = compact_after;
    e->timeout_ns[HT_SYN] = syn_to >= 0 ? syn_to : RULES.timeout_ns[HT_SYN];
    e->timeout_ns[HT_SYN_ACK] = synack_to >= 0 ? synack_to : RULES.timeout_ns[HT_SYN_ACK];
    e->linger_ns = 2 * msl;
    strcpy(e->file_suffix, suffix);
    e->file_suffix_len = strlen(suffix);
    e->tc_us = INT64_MIN;
    e->ts_sec = -1;
    e->tc_len = 0;
    strcpy(e->msl_text, c2);
    e->nbuckets = 1 << 16;
    free(e->buckets);
    e->buckets = calloc(e->nbuckets, sizeof(conn_t *));
    free(e->buckets4);
    e->buckets4 = calloc(NBUCKETS4, sizeof(conn_t *));
    if (!e->buckets || !e->buckets4) { PyErr_NoMemory(); return -1; }
    return 0;
}

static void Engine_dealloc(Engine *e) {
    free(e->heap);              /* (its entries name live connections only: the table frees them) */
    free(e->hwhen_mem);
    free(e->hpos);
    free(e->slot_free);
    if (e->buckets) {
        for (uint32_t i = 0; i < e->nbuckets; i++) {
            conn_t *c = e->buckets[i];
            while (c) {
                conn_t *nx = c->next;
                if (!c->compact) { free(c->log); Py_XDECREF(c->pykey); }
                free(c);
                c = nx;
            }
        }
        free(e->buckets);
    }
    while (e->free_list) { conn_t *nx = e->free_list->next; free(e->free_list); e->free_list = nx; }
    free(e->buckets4);
    if (e->emit) { release_objects(e->out, 0, e->nout); release_objects(e->aout, 0, e->naout); }
    if (e->emit) free(e->out);
    Py_XDECREF(e->outb);
    free(e->aout);
    Py_XDECREF(e->emit);
    Py_XDECREF(e->cb_feed); Py_XDECREF(e->cb_expire_one); Py_XDECREF(e->cb_take); Py_XDECREF(e->cb_fire);
    Py_XDECREF(e->cb_decode); Py_XDECREF(e->cb_has_pair); Py_XDECREF(e->cb_key_of); Py_XDECREF(e->cb_active);
    Py_XDECREF(e->cb_end_conns); Py_XDECREF(e->cb_end_prepare); Py_XDECREF(e->cb_end_finish);
    Py_XDECREF(e->cb_end_clear); Py_XDECREF(e->cb_tracked); Py_XDECREF(e->cb_evict); Py_XDECREF(e->cb_evict_taken); Py_XDECREF(e->cb_reprieve);
    Py_XDECREF(e->dumps); Py_XDECREF(e->write); Py_XDECREF(e->fmt6);
    Py_XDECREF(e->make_seg); Py_XDECREF(e->cb_evidence);
    filter_clear(&e->filter);
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
    if (out_full(e) && out_flush(e) < 0) return NULL;
    Py_RETURN_NONE;
}

static inline uint32_t rd32(const uint8_t *p, int big) {
    return big ? be32(p) : ((uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0]);
}

/* A capture reader's buffer: keep the unread tail, make room for ``need`` bytes, read more.
   Returns the bytes read (0 at the end of the file), -1 with an exception set. */
static Py_ssize_t refill(FILE *f, PyObject *reader, uint8_t **buf, size_t *cap, size_t *have, size_t *pos,
                         int64_t *consumed, size_t need) {
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
    size_t got;
    if (reader) {               /* a stream: reader(n) -> at most n bytes, b"" at its end */
        PyObject *b = PyObject_CallFunction(reader, "n", (Py_ssize_t)(*cap - *have));
        if (!b) return -1;
        char *raw;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(b, &raw, &len) < 0) { Py_DECREF(b); return -1; }
        if ((size_t)len > *cap - *have) len = (Py_ssize_t)(*cap - *have);
        memcpy(*buf + *have, raw, (size_t)len);
        Py_DECREF(b);
        got = (size_t)len;
    } else {
        got = fread(*buf + *have, 1, *cap - *have, f);
        if (got == 0 && ferror(f)) { PyErr_SetFromErrno(PyExc_OSError); return -1; }
    }
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

static void close_src(FILE *f) { if (f) fclose(f); }

/* run_pcap(path, offset, big, nano, linktype, limit, progress[, reader, head]) -> None or (message, frame)
   A classic pcap read here, with the checks and messages of rawfin.pcapio's reader.
   With ``reader`` (a callable n -> bytes) the records come from a stream instead of ``path``:
   ``head`` is what was already read of it after the file header. */
static PyObject *Engine_run_pcap(Engine *e, PyObject *args) {
    int big, nano, lt;
    long long offset, limit;
    PyObject *progress, *path, *reader = Py_None;
    Py_buffer head = {0};
    if (!PyArg_ParseTuple(args, "O&LpiiLO|Oy*", PyUnicode_FSConverter, &path, &offset, &big, &nano, &lt, &limit,
                          &progress, &reader, &head))
        return NULL;
    FILE *f = NULL;
    if (reader == Py_None) {
        reader = NULL;
        f = fopen(PyBytes_AS_STRING(path), "rb");
        if (!f) {
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
            Py_DECREF(path);
            PyBuffer_Release(&head);
            return NULL;
        }
        if (fseeko(f, (off_t)offset, SEEK_SET) != 0) {
            fclose(f);
            Py_DECREF(path);
            PyBuffer_Release(&head);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    Py_DECREF(path);
    size_t cap = 1 << 22, have = 0, pos = 0;
    if ((size_t)head.len > cap) cap = (size_t)head.len;
    uint8_t *buf = malloc(cap);
    if (!buf) { close_src(f); PyBuffer_Release(&head); return PyErr_NoMemory(); }
    if (head.len) { memcpy(buf, head.buf, (size_t)head.len); have = (size_t)head.len; }
    PyBuffer_Release(&head);
    int64_t frame = 0, consumed = offset;
    int64_t frac_mul = nano ? 1 : 1000;
    PyObject *result = NULL;
    ahead_t ahead;
    memset(&ahead, 0, sizeof ahead);
    for (;;) {
        while (pos + 16 <= have) {
            const uint8_t *h = buf + pos;
            uint32_t sec = rd32(h, big), frac = rd32(h + 4, big), caplen = rd32(h + 8, big), orig = rd32(h + 12, big);
            if (pos + 16 + caplen > have) break;
            if (caplen > limit) {
                result = corrupt_record(caplen, frame + 1);
                goto done;
            }
            {                               /* (decode.c look_ahead: the frame after next, if it is here whole) */
                size_t p1 = pos + 16 + caplen, p2 = 0;
                uint32_t c1 = 0, c2 = 0;
                if (p1 + 16 <= have && (c1 = rd32(buf + p1 + 8, big)) <= limit && p1 + 16 + c1 + 16 <= have) {
                    p2 = p1 + 16 + c1;
                    c2 = rd32(buf + p2 + 8, big);
                    if (c2 > limit || p2 + 16 + c2 > have) p2 = 0;
                }
                look_ahead(e, &ahead, consumed + (int64_t)pos, lt, p2 ? buf + p2 + 16 : NULL, c2,
                           consumed + (int64_t)p2);
            }
            frame++;
            int64_t t = (int64_t)sec * 1000000000LL + (int64_t)frac * frac_mul;
            int r = on_frame(e, lt, h + 16, caplen, orig, frame, t);
            e->pre = NULL;
            if (r < 0) goto fail;
            pos += 16 + caplen;
            if (!(frame & 0x3FFF) && now_and_then(e, progress, consumed + (int64_t)pos, frame) < 0) goto fail;
            if (out_full(e) && out_flush(e) < 0) goto fail;
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
        Py_ssize_t got = refill(f, reader, &buf, &cap, &have, &pos, &consumed, need);
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
    close_src(f);
    if (result && out_flush(e) < 0) { Py_DECREF(result); return NULL; }
    return result;
fail:
    free(buf);
    close_src(f);
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

/* the frame of the block at p, if it is an enhanced packet block whole in the buffer (decode.c look_ahead) */
static const uint8_t *epb_frame(const uint8_t *buf, size_t have, size_t p, int big, const ifc_t *ifs, size_t nifs,
                                int *lt, size_t *n) {
    if (p + 32 > have || rd32(buf + p, big) != 6) return NULL;
    uint32_t blen = rd32(buf + p + 4, big), lid = rd32(buf + p + 8, big), caplen = rd32(buf + p + 20, big);
    if (blen < 32 || p + blen > have || lid >= nifs || 32 + (uint64_t)caplen > blen) return NULL;
    *lt = ifs[lid].linktype;
    *n = caplen;
    return buf + p + 28;
}

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
    ahead_t ahead;
    memset(&ahead, 0, sizeof ahead);
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
            Py_ssize_t got = refill(f, NULL, &buf, &cap, &have, &pos, &consumed, need);
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
            if (!dry) {                             /* (decode.c look_ahead: the block after next) */
                size_t p1 = pos + blen, n2 = 0;
                uint32_t l1;
                int lt2 = 0;
                const uint8_t *d2 = NULL;
                if (p1 + 12 <= have && (l1 = rd32(buf + p1 + 4, big)) >= 12 && p1 + l1 <= have)
                    d2 = epb_frame(buf, have, p1 + l1, big, ifs, nifs, &lt2, &n2);
                look_ahead(e, &ahead, consumed + (int64_t)pos + 28, lt2, d2, n2,
                           d2 ? consumed + (int64_t)(d2 - buf) : -1);
                int r = on_frame(e, ic->linktype, b + 28, caplen, orig, frame, (int64_t)t);
                e->pre = NULL;
                if (r < 0) goto fail;
            }
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
        if (!dry && out_full(e) && out_flush(e) < 0) goto fail;
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

/* set_filter(address of libpcap's bpf_filter, compile(linktype) -> program bytes): --filter */
static PyObject *Engine_set_filter(Engine *e, PyObject *args) {
    unsigned long long addr;
    PyObject *compile;
    if (!PyArg_ParseTuple(args, "KO", &addr, &compile)) return NULL;
    if (!addr || !PyCallable_Check(compile)) { PyErr_SetString(PyExc_ValueError, "set_filter(address, compile)"); return NULL; }
    filter_clear(&e->filter);
    Py_INCREF(compile);
    e->filter.compile = compile;
    e->filter.run = (bpf_fn)(uintptr_t)addr;
    Py_RETURN_NONE;
}

/* tick(now): capture time has reached ``now`` with no frame (a live capture): fire what is due
   (TIME_WAIT's 2MSL, a held final ACK), as Observer.tick does, and write everything out */
static PyObject *Engine_tick(Engine *e, PyObject *arg) {
    long long now = PyLong_AsLongLong(arg);
    if (now == -1 && PyErr_Occurred()) return NULL;
    if (now > e->now) e->now = now;
    if (expire(e, now) < 0 || out_flush(e) < 0) return NULL;
    Py_RETURN_NONE;
}

/* flush(): write out what the lane holds (a live capture prints as it goes) */
static PyObject *Engine_flush(Engine *e, PyObject *unused) {
    if (out_flush(e) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Engine_finish(Engine *e, PyObject *unused) {
    if (finish_all(e) < 0) return NULL;
    Py_RETURN_NONE;
}

/* rawfin.core.delays.RoundTrips.pull: the round trips of the lane's connections since the last call */
static PyObject *Engine_take_trips(Engine *e, PyObject *unused) {
    PyObject *l = PyList_New(0);
    if (!l) return NULL;
    for (int side = 0; side < 2; side++)
        for (int b = 0; b < TRIP_BUCKETS; b++) {
            if (!e->trips[side][b]) continue;
            PyObject *t = Py_BuildValue("(iik)", side, b, (unsigned long)e->trips[side][b]);
            if (!t || PyList_Append(l, t) < 0) { Py_XDECREF(t); Py_DECREF(l); return NULL; }
            Py_DECREF(t);
            e->trips[side][b] = 0;
        }
    PyObject *ans = Py_BuildValue("(NL)", l, (long long)e->reordered);
    e->reordered = 0;
    return ans;
}

static PyObject *Engine_stats(Engine *e, PyObject *unused) {
    PyObject *bc = PyDict_New();
    if (!bc) return NULL;
    for (uint32_t i = 0; i < RULES.nclose; i++) {
        if (!e->by_close[i]) continue;
        PyObject *v = PyLong_FromLongLong(e->by_close[i]);
        if (!v || PyDict_SetItemString(bc, RULES.close_names[i], v) < 0) { Py_XDECREF(v); Py_DECREF(bc); return NULL; }
        Py_DECREF(v);
    }
    PyObject *first = e->have_first ? PyLong_FromLongLong(e->first_time) : Py_NewRef(Py_None);
    if (!first) { Py_DECREF(bc); return NULL; }
    return Py_BuildValue("{s:L,s:L,s:L,s:N,s:L,s:L,s:N,s:L,s:L,s:L,s:L}", "frames", (long long)e->frames,
                         "filtered", (long long)e->filtered, "tcp",
                         (long long)e->tcp, "first_time_ns", first, "connections", (long long)e->done,
                         "server_active_closes", (long long)e->server_active, "by_close", bc, "python_calls",
                         (long long)e->py_calls, "handoffs", (long long)e->handoffs, "now", (long long)e->now,
                         "compacted", (long long)e->compacted);
}

static PyMethodDef Engine_methods[] = {
    {"feed_frame", (PyCFunction)Engine_feed_frame, METH_VARARGS, "One captured frame."},
    {"run_pcap", (PyCFunction)Engine_run_pcap, METH_VARARGS, "Every frame of a classic pcap file."},
    {"run_pcapng", (PyCFunction)Engine_run_pcapng, METH_VARARGS, "The frames of a common pcapng file."},
    {"set_filter", (PyCFunction)Engine_set_filter, METH_VARARGS, "--filter: libpcap's bpf_filter and the programs."},
    {"tick", (PyCFunction)Engine_tick, METH_O, "Capture time has reached now (ns) with no frame."},
    {"flush", (PyCFunction)Engine_flush, METH_NOARGS, "Write out the records held."},
    {"finish", (PyCFunction)Engine_finish, METH_NOARGS, "The end of the capture."},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS, "Counts, for the summary line."},
    {"take_trips", (PyCFunction)Engine_take_trips, METH_NOARGS,
     "The round trips counted since the last call, as (side, bucket, count), and the holes filled with nothing "
     "sent again; the counts start again."},
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
    {"set_rules", set_rules, METH_O, "The rules of rawfin.core.rules, as rawfin.capture.engine encodes them."},
    {"vocabulary", vocabulary, METH_NOARGS, "The names of the predicates, actions and values the lane implements."},
    {NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "rawfin._engine",
                                       "The compiled lane of rawfin analyze (see rawfin/capture/engine.py).", -1,
                                       module_methods};

PyMODINIT_FUNC PyInit__engine(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
    for (int i = 0; i < NST; i++) {
        ST_LEN[i] = strlen(ST_NAME[i]);
        if (ST_LEN[i] > sizeof ST_PAD[i]) { PyErr_SetString(PyExc_SystemError, "rawfin._engine: ST_PAD"); return NULL; }
        memcpy(ST_PAD[i], ST_NAME[i], ST_LEN[i]);
    }
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) { Py_DECREF(m); return NULL; }
#ifdef RAWFIN_SOURCES      /* setup.py: the sha256 of the C sources this was built from (rawfin/wire/native.py) */
    if (PyModule_AddStringConstant(m, "SOURCES", RAWFIN_SOURCES) < 0) { Py_DECREF(m); return NULL; }
#endif
    return m;
}

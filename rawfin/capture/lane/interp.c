/* rawfin._engine, part interp (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ the rules' interpreter
 *
 * The same reading of the rows as rawfin/core/machine.py's: in each step the first row whose
 * predicates all hold runs its actions; ``stop`` ends the program. Each predicate and action here
 * is one primitive the rows name; which of them applies in which state is only in the rows.
 */

#define BAIL 1      /* the connection needs what only the Python observer does: Python takes it */
#define ERR (-1)    /* a Python exception is set */
#define STOPPED 2

typedef struct {
    Engine *e;
    conn_t *c;
    const ev_t *s;          /* the segment (NULL: a timer, the end) */
    int64_t now;
    int self, tx, rx, x;    /* sides (0: the first sender); -1 where the program has none */
    const held_t *h;        /* FLUSH: the held segment */
    const ev_t *nowseg;     /* FLUSH: the segment that shows it arrived (NULL at the end) */
    uint32_t marks;
    uint32_t wq[MAXWAIT];   /* FLUSH: what waited behind the held FIN (log indices) */
    uint8_t nwq;
    uint8_t filled;         /* FLUSH: nowseg filled the gap in front of the held FIN */
    uint8_t endpoint;       /* an endpoint program: its anomalies follow its transitions (end_call) */
    uint8_t end;            /* END: anomalies dated at the last segment, on that side's FIN frame */
} ctx_t;

static int run(ctx_t *x, int prog);
static int receive(Engine *e, conn_t *c, int side, const ev_t *s, int64_t now);
static int flush(Engine *e, conn_t *c, int side, const ev_t *now_seg, int filled);
static int deliver_final_ack(Engine *e, conn_t *c, int side);
static int deliver_rsts(Engine *e, conn_t *c, int side);
static int fins_complete(const conn_t *c);

static inline void ctx_init(ctx_t *x, Engine *e, conn_t *c, const ev_t *s, int64_t now) {
    x->e = e; x->c = c; x->s = s; x->now = now;
    x->self = x->tx = x->rx = x->x = -1;
    x->h = NULL;
    x->nowseg = NULL;
    x->marks = 0;
    x->nwq = x->filled = 0;
    x->endpoint = x->end = 0;
}

_Static_assert(W_TX == W_SELF + 1 && W_RX == W_SELF + 2 && W_X == W_SELF + 3 && W_A == W_X + 1 && W_B == W_A + 1,
               "side_of: self, tx, rx, x (ctx_t's order), then a, b");
static inline int side_of(const ctx_t *x, int who) {
    if ((unsigned)(who - W_SELF) <= (unsigned)(W_X - W_SELF)) return (&x->self)[who - W_SELF];    /* self tx rx x */
    switch (who) {
    case W_SELF: return x->self;
    case W_TX: return x->tx;
    case W_RX: return x->rx;
    case W_X: return x->x;
    case W_A: return 0;
    case W_B: return 1;
    case W_CLIENT: return x->c->client;
    case W_SERVER: return 1 - x->c->client;
    case W_FIRST_CLOSER: return x->c->nfins ? x->c->fin_side[0] : -1;
    case W_PEER: return x->self >= 0 ? 1 - x->self : -1;     /* the arriving segment's sender */
    default: return -1;
    }
}

static const ev_t *seg_of(const ctx_t *x, int who) {
    const conn_t *c = x->c;
    switch (who) {
    case W_SEG: return x->s;
    case W_H: return x->h ? &x->h->seg : NULL;
    case W_NOW: return x->nowseg;
    case W_HELD_TX: return x->tx >= 0 && c->pending[x->tx].present ? &c->pending[x->tx].seg : NULL;
    case W_HELD_RX: return x->rx >= 0 && c->pending[x->rx].present ? &c->pending[x->rx].seg : NULL;
    case W_FINAL_TX: return x->tx >= 0 && c->held_ack[x->tx].present ? &c->held_ack[x->tx].seg : NULL;
    case W_FINAL_RX: return x->rx >= 0 && c->held_ack[x->rx].present ? &c->held_ack[x->rx].seg : NULL;
    default: return NULL;
    }
}

/* a value: VK_NONE (an empty one: no FIN yet), a number, or text */
enum { VK_NONE, VK_NUM, VK_STR, VK_BAIL };
typedef struct { int kind; int64_t n; const char *s; } vres_t;
static char DESCRIBED[96];      /* describe()'s text, for the template being formatted */

static int value_slow(const ctx_t *x, const val_t *d, vres_t *v);

static inline __attribute__((always_inline)) int value(const ctx_t *x, int vi, vres_t *v) {
    const val_t *d = &RULES.vals[vi];
    const ev_t *s = x->s;
    switch (d->quick) {             /* (rules.c prepare_rules: Q_*) */
    case Q_SEQ: if (!s) return value_slow(x, d, v); v->n = s->seq; break;
    case Q_ACK: if (!s) return value_slow(x, d, v); v->n = s->ack; break;
    case Q_END: if (!s) return value_slow(x, d, v); v->n = seq_end(s); break;
    case Q_LEN: if (!s) return value_slow(x, d, v); v->n = s->data_len; break;
    case Q_FIN: if (!s) return value_slow(x, d, v); v->n = fin_seq_of(s); break;
    case Q_TCB: case Q_FIN_SEQ: case Q_PEER_FIN_SEQ: {
        int side = d->who <= W_X ? (&x->self)[d->who - W_SELF] : d->who - W_A;     /* self tx rx x, then a b */
        if (side < 0) return v->kind = VK_BAIL;
        const cep_t *p = &x->c->ep[side];
        if (d->quick == Q_TCB) v->n = (&p->iss)[d->name - V_ISS];       /* iss, irs, snd_una, snd_nxt, rcv_nxt in a row */
        else if (d->quick == Q_FIN_SEQ) { if (!p->has_fin) return v->kind = VK_NONE; v->n = p->fin_seq; }
        else { if (!p->has_peer_fin) return v->kind = VK_NONE; v->n = p->peer_fin_seq; }
        break;
    }
    default: return value_slow(x, d, v);
    }
    v->kind = VK_NUM;
    v->n = (uint32_t)(v->n + d->off);       /* (each of these is below 2**32: with no offset, the same number) */
    return VK_NUM;
}

static int value_slow(const ctx_t *x, const val_t *d, vres_t *v) {
    const conn_t *c = x->c;
    v->kind = VK_NUM;
    v->s = NULL;
    if (d->who == W_LIT) { v->n = d->off; return VK_NUM; }
    if (d->who == W_CONN) {
        if (d->name != V_FIRST_FIN) return v->kind = VK_BAIL;
        if (!c->nfins) return v->kind = VK_NONE;
        v->n = c->fin_seqv[0];
    } else if (d->who == W_SEG || d->who == W_H || d->who == W_NOW || (d->who >= W_HELD_TX && d->who <= W_FINAL_RX)) {
        const ev_t *s = seg_of(x, d->who);
        if (!s) return v->kind = VK_BAIL;
        if (!seg_number(s, d->name, &v->n))
        switch (d->name) {
        case V_SPORT: v->n = c->port[s->kind & 1]; break;
        case V_DPORT: v->n = c->port[1 - (s->kind & 1)]; break;
        case V_FRAME:
            if (s->frame < 0) { v->s = "None"; return v->kind = VK_STR; }
            v->n = s->frame;
            break;
        case V_DESCRIBE: describe(s, DESCRIBED, sizeof DESCRIBED); v->s = DESCRIBED; return v->kind = VK_STR;
        default: return v->kind = VK_BAIL;
        }
    } else {
        int side = side_of(x, d->who);
        if (side < 0) return v->kind = VK_BAIL;
        const cep_t *p = &c->ep[side];
        switch (d->name) {
        case V_ISS: v->n = p->iss; break;
        case V_IRS: v->n = p->irs; break;
        case V_SND_UNA: v->n = p->snd_una; break;
        case V_SND_NXT: v->n = p->snd_nxt; break;
        case V_RCV_NXT: v->n = p->rcv_nxt; break;
        case V_FIN_SEQ: if (!p->has_fin) return v->kind = VK_NONE; v->n = p->fin_seq; break;
        case V_PEER_FIN_SEQ: if (!p->has_peer_fin) return v->kind = VK_NONE; v->n = p->peer_fin_seq; break;
        case V_NAME: v->s = c->name[side]; return v->kind = VK_STR;
        case V_STATE: v->s = ST_NAME[p->state]; return v->kind = VK_STR;
        case V_MISSING: if (!x->s) return v->kind = VK_BAIL; v->n = -ssub(p->rcv_nxt, x->s->seq); break;
        case V_FIN_GAP: if (!x->s) return v->kind = VK_BAIL; v->n = ssub(fin_seq_of(x->s), p->rcv_nxt); break;
        case V_2MSL_S: v->s = x->e->msl_text; return v->kind = VK_STR;
        default: return v->kind = VK_BAIL;
        }
    }
    if (d->off) v->n = (uint32_t)(v->n + d->off);
    return VK_NUM;
}

/* the values a template names, (name, value) pairs: what a typed event carries (events mode only) */
static PyObject *template_values(const ctx_t *x, int ti) {
    const tpl_t *t = &RULES.tpls[ti];
    uint32_t nv = 0;
    for (uint32_t i = 0; i < t->np; i++) nv += RULES.pieces[t->p0 + i].val >= 0;
    PyObject *out = PyTuple_New(nv);
    if (!out) return NULL;
    for (uint32_t i = 0, k = 0; i < t->np; i++) {
        const piece_t *p = &RULES.pieces[t->p0 + i];
        if (p->val < 0) continue;
        vres_t v;
        int kind = value(x, p->val, &v);
        PyObject *val = kind == VK_NUM ? PyLong_FromLongLong(v.n) : kind == VK_STR ? PyUnicode_FromString(v.s)
                                                                                   : Py_NewRef(Py_None);
        PyObject *pair = val ? Py_BuildValue("(s#N)", RULES.text + p->lit0, (Py_ssize_t)p->nlit, val) : NULL;
        if (!pair) { Py_DECREF(out); return NULL; }
        PyTuple_SET_ITEM(out, k++, pair);
    }
    return out;
}

/* --seq relative (rawfin.core.machine.space_getter): the side whose sequence space a value is in, whose base
   its text is counted from; -1: not a sequence number */
static int space_of(const ctx_t *x, const val_t *d) {
    if (d->who == W_LIT) return -1;
    if (d->who == W_CONN) return d->name == V_FIRST_FIN && x->c->nfins ? x->c->fin_side[0] : -1;
    if (d->who == W_SEG || d->who == W_H || d->who == W_NOW || (d->who >= W_HELD_TX && d->who <= W_FINAL_RX)) {
        const ev_t *s = seg_of(x, d->who);
        if (!s) return -1;
        switch (d->name) {
        case V_SEQ: case V_END: case V_FIN: return s->kind & 1;
        case V_ACK: return 1 - (s->kind & 1);
        default: return -1;
        }
    }
    int side = side_of(x, d->who);
    if (side < 0) return -1;
    switch (d->name) {
    case V_ISS: case V_SND_UNA: case V_SND_NXT: case V_FIN_SEQ: return side;
    case V_IRS: case V_RCV_NXT: case V_PEER_FIN_SEQ: return 1 - side;
    default: return -1;
    }
}

static inline int based(const conn_t *c, int side) { return side >= 0 && (c->based & (side == 0 ? 1 : 2)); }

/* a template into buf, its length into *len (if len); BAIL when it names a value the lane cannot give */
static int format(const ctx_t *x, int ti, char *buf, size_t n, size_t *len_out) {
    const tpl_t *t = &RULES.tpls[ti];
    size_t k = 0;
    for (uint32_t i = 0; i < t->np; i++) {
        const piece_t *p = &RULES.pieces[t->p0 + i];
        if (p->val < 0) {
            size_t len = p->nlit < n - 1 - k ? p->nlit : n - 1 - k;
            if (len <= TEXT_PAD && k + TEXT_PAD <= n)    /* (a fixed-size copy: RULES.text ends in TEXT_PAD spare bytes) */
                memcpy(buf + k, RULES.text + p->lit0, TEXT_PAD);
            else memcpy(buf + k, RULES.text + p->lit0, len);
            k += len;
            continue;
        }
        vres_t v;
        int kind = value(x, p->val, &v);
        if (kind == VK_BAIL) return BAIL;
        if (x->e->relative) {
            const val_t *d = &RULES.vals[p->val];
            if (kind == VK_NUM) {
                int sp = space_of(x, d);
                if (based(x->c, sp)) v.n = (uint32_t)((uint32_t)v.n - x->c->base[sp]);
            } else if (kind == VK_STR && d->name == V_DESCRIBE) {
                ev_t t = *seg_of(x, d->who);       /* Segment.describe(bases): seq by the sender's, ack the receiver's */
                int tx = t.kind & 1;
                if (based(x->c, tx)) t.seq -= x->c->base[tx];
                if (based(x->c, 1 - tx)) t.ack -= x->c->base[1 - tx];
                describe(&t, DESCRIBED, sizeof DESCRIBED);
            }
        }
        if (kind == VK_NUM) { k = put_int(buf, k, n, v.n); continue; }
        k = put_text(buf, k, n, kind == VK_NONE ? "None" : v.s);
    }
    buf[k] = 0;
    if (len_out) *len_out = k;
    return 0;
}

static inline int cflag(const conn_t *c, int which) {
    switch (which) {
    case K_FINS: return c->nfins > 0;
    case K_MID_STREAM: return c->mid;
    case K_REFUSED: return c->refused;
    case K_RST_SEEN: return c->rst_seen != 0;
    case K_DATA_AFTER_FIRST_FIN: return c->data_after_first_fin;
    case K_FIRST_FIN_ACKED_ALONE: return c->first_fin_acked_alone;
    case K_FINS_COMPLETE: return fins_complete(c);
    case K_CANDIDATES: return c->ncand > 0;
    case K_HELD: return c->pending[0].present || c->pending[1].present;
    case K_FINAL: return c->held_ack[0].present || c->held_ack[1].present;
    case K_SYNACK_UNSEEN: return 0;       /* the lane hands such a connection to Python (synack_unseen) */
    /* the handshake's round trip (rules' rtt action); rst_late still hands the connection to Python, which
       measures it again as it replays the connection */
    case K_RTT: return c->has_rtt;
    case K_RSTS: return c->nrq[0] || c->nrq[1];
    case K_EVICTED: return c->evicted;
    case K_TIMED_OUT: return c->timed_out;
    default: return -1;
    }
}

static inline int side_bit(int side) { return side == 0 ? 1 : 2; }

/* 1, 0, or -BAIL */
static inline __attribute__((always_inline)) int pred(const ctx_t *x, const pred_t *p) {
    const conn_t *c = x->c;
    const ev_t *s = x->s;
    int r;
    switch (p->code) {
    case P_FLAG: r = (s->flags & p->a[0]) != 0; break;
    case P_PURE_ACK: r = (s->flags & 0x17) == 0x10; break;
    case P_DUP_ACK: {               /* a bare ACK of nothing new while the peer's data is outstanding */
        if (x->rx < 0) return -BAIL;
        const cep_t *rx = &c->ep[x->rx];
        r = (s->flags & 0x17) == 0x10 && !s->data_len && s->ack == rx->snd_una && rx->snd_una != rx->snd_nxt;
        break;
    }
    case P_DATA: r = s->data_len > 0; break;
    case P_OCCUPIES: r = seg_len(s) > 0; break;
    case P_CMP: {
        vres_t a, b;
        int ka = value(x, p->a[1], &a), kb = value(x, p->a[2], &b);
        if (ka == VK_NUM && kb == VK_NUM && !(p->cmp & (CMP_EXACT | CMP_SLOW))) {     /* (rules.c: pred_t.cmp) */
            int64_t d = p->a[3] ? ssub((uint32_t)a.n, (uint32_t)b.n) : (a.n > b.n) - (a.n < b.n);
            return (p->cmp >> ((d > 0) - (d < 0) + 1)) & 1;
        }
        if (ka == VK_BAIL || kb == VK_BAIL || ka == VK_STR || kb == VK_STR) return -BAIL;
        if (ka == VK_NONE || kb == VK_NONE) { r = 0; break; }
        int64_t d = p->a[3] ? ssub((uint32_t)a.n, (uint32_t)b.n) : (a.n > b.n) - (a.n < b.n);
        switch (p->a[0]) {
        case OP_EQ: r = a.n == b.n; break;
        case OP_LT: r = d < 0; break;
        case OP_GT: r = d > 0; break;
        case OP_LE: r = d <= 0; break;
        case OP_GE: r = d >= 0; break;
        default: return -BAIL;
        }
        break;
    }
    case P_ISSET: {
        vres_t a;
        int k = value(x, p->a[0], &a);
        if (k == VK_BAIL) return -BAIL;
        r = k != VK_NONE;
        break;
    }
    case P_STATE: {
        int side = side_of(x, p->a[0]);
        r = side >= 0 && ((1 << c->ep[side].state) & p->a[1]) != 0;
        break;
    }
    case P_IN_WINDOW: r = acceptable(s->seq, seg_len(s), c->ep[x->self].rcv_nxt, RCV_WND); break;
    case P_ACK_KNOWN: {
        const cep_t *rx = &c->ep[x->rx];
        r = s->ack == rx->snd_nxt || between_incl(rx->snd_una, s->ack, rx->snd_nxt);
        break;
    }
    case P_CONFIG:
        if (p->a[0] == CF_OBSERVER) r = 1;             /* the lane only observes */
        else if (p->a[0] == CF_CLOSE_ON_FIN) r = 0;
        else if (p->a[0] == CF_HOLD_FINAL_ACK) r = x->e->hold_ns != 0;
        else return -BAIL;
        break;
    case P_PASSIVE: { int side = side_of(x, p->a[0]); if (side < 0) return -BAIL; r = c->ep[side].passive; break; }
    case P_MARK: r = (x->marks & (uint32_t)p->a[0]) != 0; break;
    case P_CONN: r = cflag(c, p->a[0]); if (r < 0) return -BAIL; break;
    case P_ROLE: {
        int side = side_of(x, p->a[0]);
        if (side < 0) return -BAIL;
        switch (p->a[1]) {
        case R_CLIENT: r = side == c->client; break;
        case R_FIRST_CLOSER: r = c->nfins && c->fin_side[0] == side; break;
        case R_FIN_NOTED: r = (c->nfins > 0 && c->fin_side[0] == side) || (c->nfins > 1 && c->fin_side[1] == side); break;
        case R_KNOWN: r = (c->known & side_bit(side)) != 0; break;
        case R_SEEN: r = (c->seen & side_bit(side)) != 0; break;
        case R_SYNACK_UNSEEN: r = 0; break;
        case R_DATA_UNANSWERED: r = (c->unanswered & side_bit(side)) != 0; break;
        case R_RESENT: r = (c->resent & side_bit(side)) != 0; break;
        case R_HOLE: r = (c->hole & side_bit(side)) != 0; break;
        default: return -BAIL;
        }
        break;
    }
    case P_SOME: r = (((1 << c->ep[0].state) | (1 << c->ep[1].state)) & p->a[0]) != 0; break;
    case P_ALL: r = ((1 << c->ep[0].state) & p->a[0]) && ((1 << c->ep[1].state) & p->a[0]); break;
    case P_TOOK: {
        r = 0;
        for (int st = 0; st < NST; st++)
            if ((p->a[0] & (1 << st)) && (x->e->took[st] & (1u << p->a[1]))) r = 1;
        break;
    }
    case P_TIMER: {
        const cep_t *q = &c->ep[x->self];
        if (p->a[0] == T_2MSL_DUE) r = q->time_wait_at >= 0 && x->now >= q->time_wait_at;
        else if (p->a[0] >= 0 && p->a[0] < NTIMER) r = 0;   /* an observer's endpoint arms no other timer */
        else return -BAIL;
        break;
    }
    case P_HELD: {
        int side = side_of(x, p->a[1]);
        if (side < 0) return -BAIL;
        r = p->a[0] ? c->held_ack[side].present : c->pending[side].present;
        break;
    }
    case P_HELD_FLAG: {
        const ev_t *h = seg_of(x, p->a[0]);
        if (!h) return -BAIL;
        r = (h->flags & p->a[1]) != 0;
        break;
    }
    case P_CROSSED:
        if (p->a[0] == W_H) r = x->h->crossed;
        else {
            int side = p->a[0] == W_HELD_TX ? x->tx : x->rx;
            if (side < 0 || !c->pending[side].present) return -BAIL;
            r = c->pending[side].crossed;
        }
        break;
    case P_ANSWERED: r = x->nowseg && (x->nowseg->flags & F_SYN) && (x->nowseg->kind & 1) == x->x; break;
    case P_NOW: r = x->nowseg != NULL; break;
    case P_TIMEWAIT_REPLY:      /* ... and the loss evidence says where the capture point sits: Python's */
        if (x->nowseg && (x->nowseg->kind & 1) == x->x && (x->nowseg->kind & KIND_ID0)) return -BAIL;
        r = 0;
        break;
    case P_ID_SKIP: r = x->s && (x->s->kind & KIND_IDSKIP); break;     /* (on_segment_in set them) */
    case P_ID_SKIPS: r = x->s && (x->s->kind & KIND_IDSKIPS); break;
    case P_REACHED: r = (c->reached & p->a[0]) != 0; break;
    case P_RD_SHUT: r = 0; break;                      /* the lane only observes: no application */
    /* RSTs held, segments waiting behind a FIN (log indices), a FIN ahead of a gap (held_t.ahead) */
    case P_WAITING: {
        int side = side_of(x, p->a[1]);
        if (side < 0) return -BAIL;
        switch (p->a[0]) {
        case WT_RST: r = c->nrq[side] > 0; break;
        case WT_QUEUE: r = (side == x->x && x->h ? x->nwq : c->nwq[side]) > 0; break;   /* x: FLUSH's copy */
        case WT_AHEAD: case WT_FILLED: {
            const held_t *h = side == x->x && x->h ? x->h : c->pending[side].present ? &c->pending[side] : NULL;
            r = h && h->ahead && (p->a[0] == WT_AHEAD || SGE(c->ep[side].rcv_nxt, h->seg.seq));
            break;
        }
        case WT_ACKS: {             /* a segment waiting behind the FIN acknowledges its receiver's FIN */
            int flush = side == x->x && x->h, n = flush ? x->nwq : c->nwq[side];
            r = 0;
            for (int i = 0; i < n && !r && c->ep[side].has_fin; i++) {
                const ev_t *q = &c->log[flush ? x->wq[i] : c->wq[side][i]];
                r = (q->flags & F_ACK) && SGE(q->ack, c->ep[side].fin_seq + 1);
            }
            break;
        }
        case WT_LATE: {             /* the FIN held for it was captured a round trip and a[2] ns before now, or more */
            const held_t *h = side == x->x && x->h ? x->h : c->pending[side].present ? &c->pending[side] : NULL;
            r = h && c->has_rtt && x->now - h->seg.time_ns >= p->a[2] + c->trip_ns[side];
            break;
        }
        case WT_LATE_FIRST: {       /* within a round trip of the held copy of a FIN sent again, late after its first */
            const held_t *h = side == x->x && x->h ? x->h : c->pending[side].present ? &c->pending[side] : NULL;
            r = h && c->has_rtt && x->now - h->seg.time_ns < c->rtt_ns && (c->has_copy >> side) & 1
                && c->copy_fin[side] == fin_seq_of(&h->seg) && x->now - c->copy_ns[side] >= p->a[2] + c->rtt_ns;
            break;
        }
        case WT_COPY_SOON: case WT_PROBE_SOON: {
            /* this FIN, the one held for it (else its last FIN's first capture), captured less than a round trip and
               a[2] ns before (copy_soon), or less than a[2] ns before (probe_soon) */
            const held_t *h = side == x->x && x->h ? x->h : c->pending[side].present ? &c->pending[side] : NULL;
            const ev_t *s = x->s;
            int copy = p->a[0] == WT_COPY_SOON;
            int64_t at;
            if (!s || !(s->flags & F_FIN) || (copy && !c->has_rtt)) { r = 0; break; }
            if (h) at = h->seg.time_ns;
            else if ((c->has_copy >> side) & 1 && c->copy_fin[side] == fin_seq_of(s)) at = c->copy_ns[side];
            else { r = 0; break; }
            r = x->now - at < (copy && c->rtt_ns < p->a[2] ? c->rtt_ns : p->a[2]);
            break;
        }
        case WT_QUICK: {            /* the FIN held for it was captured no more than a round trip and a[2] ns ago */
            const held_t *h = side == x->x && x->h ? x->h : c->pending[side].present ? &c->pending[side] : NULL;
            r = h && c->has_rtt && x->now - h->seg.time_ns <= p->a[2] + c->rtt_ns;
            break;
        }
        case WT_ANSWER_SOON:        /* its pure ACK that delivered its peer's FIN came at once (note_answer), a[2] ns ago */
            r = (c->has_answer >> side & 1) && x->now - c->answer_ns[side] <= p->a[2];
            break;
        case WT_PROMPT: case WT_SOON:   /* its pure ACK of the FIN held for it came at once (note_prompt); a[2] ns ago */
            r = c->pending[side].present && c->prompt_ns[side] >= 0
                && (p->a[0] == WT_PROMPT || x->now - c->prompt_ns[side] <= p->a[2]);
            break;
        case WT_FREED: {
            const held_t *h = side == x->x && x->h ? x->h : c->pending[side].present ? &c->pending[side] : NULL;
            r = h && h->freed;
            break;
        }
        case WT_ACK_FIRST:
            /* the round trips and the loss evidence are the Python observer's (rawfin.core.delays): but where
               no segment has been seen reordered and every connection so far was the lane's, the answer is no */
            if (x->e->reorder_seen || x->e->nreo || x->e->ever_python) return -BAIL;
            r = 0;
            break;
        default: return -BAIL;                        /* rst_late: whether RSTs were lost: Python's */
        }
        break;
    }
    default: return -BAIL;
    }
    return p->neg ? !r : r;
}

/* a side's facts the rows' masks test (rules.c's sit_bit: role resent and hole, waiting rst, queue and ahead,
   isset fin_seq and peer_fin_seq, as pred() reads them), for side A (k 0) or B (k 1) */
static inline __attribute__((always_inline)) sit_t side_facts(const ctx_t *x, int side, int k, int obs) {
    const conn_t *c = x->c;
    sit_t t = 0;
    if (obs) {                      /* (where the program's rows test none of these, they are not looked at) */
        uint8_t sb = (uint8_t)side_bit(side);
        if ((c->resent | c->hole) & sb) t |= ((c->resent & sb) ? SIT_RESENT_A : 0u) | ((c->hole & sb) ? SIT_HOLE_A : 0u);
        if (c->nrq[side]) t |= SIT_RST_A;
        const held_t *h;
        int nq;
        if (side == x->x && x->h) { h = x->h; nq = x->nwq; }
        else { h = c->pending[side].present ? &c->pending[side] : NULL; nq = c->nwq[side]; }
        if (nq > 0) t |= SIT_QUEUE_A;
        if (h && h->ahead) t |= SIT_AHEAD_A;
    }
    if (c->ep[side].has_fin) t |= SIT_FIN_A;
    if (c->ep[side].has_peer_fin) t |= SIT_PFIN_A;
    return k ? t << 1 : t;          /* each B bit is its A bit's neighbour */
}

/* the situation (the segment's flags and the connection's facts the rows' masks test: rules.c, SIT_*) in parts, as
   rules.c's act_changes names what an action may change: what stays through a call (the segment, the held segment),
   the marks, the connection's facts, side A's, side B's */
static inline __attribute__((always_inline)) sit_t sit_fixed(const ctx_t *x) {
    sit_t t = 0;
    if (x->h) t |= ((x->h->seg.flags & F_SYN) ? SIT_H_SYN : 0u) | (x->h->crossed ? SIT_H_CROSSED : 0u);
    if (x->s) t |= (x->s->flags & 0x3Fu) | (x->s->data_len ? SIT_DATA : 0u);
    return t;
}

static inline __attribute__((always_inline)) sit_t sit_marks(const ctx_t *x) {
    return (sit_t)(x->marks & SIT_MARKS_MASK) << SIT_MARKS;
}

static inline __attribute__((always_inline)) sit_t sit_conn(const ctx_t *x) {
    const conn_t *c = x->c;
    sit_t t = (c->nfins ? SIT_FINS : 0u) | (c->mid ? SIT_MID : 0u) | (c->known != 3 ? SIT_UNKNOWN : 0u);
    if (c->pending[0].present | c->pending[1].present) {
        t |= SIT_HELD;
        if (x->tx >= 0) t |= (c->pending[x->tx].present ? SIT_HELD_TX : 0u) | (c->pending[x->rx].present ? SIT_HELD_RX : 0u);
    }
    if (c->held_ack[0].present | c->held_ack[1].present) {
        t |= SIT_FINAL;
        if (x->tx >= 0) t |= (c->held_ack[x->tx].present ? SIT_FINAL_TX : 0u) | (c->held_ack[x->rx].present ? SIT_FINAL_RX : 0u);
    }
    return t;
}

static inline __attribute__((always_inline)) sit_t sit_a(const ctx_t *x, int obs) {
    int a = x->self >= 0 ? x->self : x->tx >= 0 ? x->tx : x->x;
    return a >= 0 ? ((sit_t)1 << (SIT_STATE_A + x->c->ep[a].state)) | side_facts(x, a, 0, obs) : 0;
}

static inline __attribute__((always_inline)) sit_t sit_b(const ctx_t *x, int obs) {
    if (x->rx < 0) return 0;
    const cep_t *rx = &x->c->ep[x->rx];
    sit_t t = ((sit_t)1 << (SIT_STATE_B + rx->state)) | side_facts(x, x->rx, 1, obs);
    const ev_t *s = x->s;           /* pred's dup_ack */
    if (s && (s->flags & 0x17) == 0x10 && !s->data_len && s->ack == rx->snd_una && rx->snd_una != rx->snd_nxt)
        t |= SIT_DUP_ACK;
    return t;
}

static inline __attribute__((always_inline)) sit_t situation(const ctx_t *x) {
    return sit_fixed(x) | sit_marks(x) | sit_conn(x) | sit_a(x, 1) | sit_b(x, 1);
}

static inline int fits(sit_t t, sit_t need, sit_t forbid) {
    return (t & need) == need && !(t & forbid);
}

static inline __attribute__((always_inline)) int holds(const ctx_t *x, uint32_t p0, uint32_t np) {
    for (uint32_t i = 0; i < np; i++) {
        int r = pred(x, &RULES.preds[p0 + i]);
        if (r <= 0) return r;
    }
    return 1;
}

static int move(Engine *e, conn_t *c, int side, int inp, const char *cause, size_t cause_len, int64_t now,
                int64_t frame, PyObject *values) {
    cep_t *p = &c->ep[side];
    int to = TABLE[p->state][inp];
    if (to < 0) return 0;
    int from = p->state;
    p->state = (uint8_t)to;
    if (out_transition(e, c, side, from, to, frame, now, cause, cause_len, inp, values) < 0) return ERR;
    c->reached |= (uint16_t)(1 << to);
    e->took[from] |= 1u << inp;
    /* Endpoint._enter: the timers that belong to the state just entered */
    if (to == TIME_WAIT) p->time_wait_at = now + 2 * e->msl_ns;
    if (to == CLOSED || to == LISTEN) p->time_wait_at = -1;
    return 0;
}

static void set_field(cep_t *p, int name, uint32_t v) {
    if (name >= V_ISS && name <= V_RCV_NXT) { (&p->iss)[name - V_ISS] = v; return; }   /* (in a row, as value() reads them) */
    switch (name) {
    case V_ISS: p->iss = v; break;
    case V_IRS: p->irs = v; break;
    case V_SND_UNA: p->snd_una = v; break;
    case V_SND_NXT: p->snd_nxt = v; break;
    case V_RCV_NXT: p->rcv_nxt = v; break;
    case V_FIN_SEQ: p->fin_seq = v; p->has_fin = 1; break;
    case V_PEER_FIN_SEQ: p->peer_fin_seq = v; p->has_peer_fin = 1; break;
    default: break;                        /* snd_wnd: the lane does not keep it */
    }
}

static int hold(conn_t *c, held_t *h, const ev_t *s) {
    h->seg = *s;
    h->present = 1;
    h->crossed = 0;
    h->ahead = 0;
    h->freed = 0;
    h->order = ++c->hold_seq;
    return 0;
}

/* the FIN (or SYN) held for a receiver, made whole here and only here (rules' hold; Python's observer.Held): the
   segment, nothing crossed, ahead or freed, no prompt ACK, nothing waiting behind it; a FIN's first capture kept
   across its copies (rules' late:) */
static int hold_pending(conn_t *c, int side, const ev_t *s) {
    hold(c, &c->pending[side], s);
    c->prompt_ns[side] = -1;
    c->nwq[side] = 0;
    if ((s->flags & F_FIN) && !((c->has_copy >> side) & 1 && c->copy_fin[side] == fin_seq_of(s))) {
        c->copy_ns[side] = s->time_ns;
        c->copy_fin[side] = fin_seq_of(s);
        c->has_copy |= (uint8_t)(1 << side);
    }
    return 0;
}

/* the endpoint programs: one call (its anomalies after its transitions, as a Result lists them) */
static int endpoint_call(Engine *e, conn_t *c, int side, int prog, const ev_t *s, int64_t now) {
    ctx_t x;
    ctx_init(&x, e, c, s, now);
    x.self = side;
    x.endpoint = 1;
    return end_call(e, run(&x, prog));
}

static int receive(Engine *e, conn_t *c, int side, const ev_t *s, int64_t now) {
    return endpoint_call(e, c, side, PG_RECEIVE + c->ep[side].state, s, now);
}

/* rawfin.core.delays.bucket: eight buckets per octave of nanoseconds (below eight, one per nanosecond) */
static inline uint16_t trip_bucket(int64_t ns) {
    if (ns < TRIP_SUB) return (uint16_t)ns;
    int o = 63 - __builtin_clzll((unsigned long long)ns);
    return (uint16_t)((o - 2) * TRIP_SUB + ((ns >> (o - 3)) & (TRIP_SUB - 1)));
}

/* the actions that write text (a template formatted): apart, so that act() itself keeps a small frame */
static __attribute__((noinline)) int act_move(ctx_t *x, const act_t *a) {
    Engine *e = x->e;
    conn_t *c = x->c;
    const ev_t *s = x->s;
    char buf[512];
    int r;
    size_t len;
    if ((r = format(x, a->a[1], buf, sizeof buf, &len))) return r;
    if (!e->emit) return move(e, c, x->self, a->a[0], buf, len, x->now, s ? s->frame : -1, NULL);
    PyObject *values = template_values(x, a->a[1]);
    if (!values) return ERR;
    r = move(e, c, x->self, a->a[0], buf, len, x->now, s ? s->frame : -1, values);
    Py_DECREF(values);
    return r;
}

static __attribute__((noinline)) int act_anomaly(ctx_t *x, const act_t *a) {
    Engine *e = x->e;
    conn_t *c = x->c;
    const ev_t *s = x->s;
    char buf[512];
    int side, r;
    side = side_of(x, a->a[0]);
    if (side < 0 || a->a[1] < 0 || (uint32_t)a->a[1] >= RULES.nkinds) return BAIL;
    if ((r = format(x, a->a[2], buf, sizeof buf, NULL))) return r;
    int64_t when = x->now, frame = s ? s->frame : -1;
    if (x->end) {
        when = c->last_ns;
        frame = -1;
        for (int i = 0; i < c->nfins; i++) if (c->fin_side[i] == side) { frame = c->fin_frame[i]; break; }
    }
    if (!e->emit) return anomaly(e, c, side, RULES.kinds[a->a[1]], buf, when, frame, !x->endpoint, NULL);
    PyObject *values = template_values(x, a->a[2]);
    if (!values) return ERR;
    r = anomaly(e, c, side, RULES.kinds[a->a[1]], buf, when, frame, !x->endpoint, values);
    Py_DECREF(values);
    return r;
}

static __attribute__((noinline)) int act_infer(ctx_t *x, const act_t *a) {
    Engine *e = x->e;
    int r;
    if ((r = format(x, a->a[2], e->inf_text, sizeof e->inf_text, NULL))) return r;
    e->inf_alt[0] = a->a[0];
    e->inf_alt[1] = a->a[1];
    e->inf_on = 1;
    return 0;
}

static inline __attribute__((always_inline)) int act(ctx_t *x, const act_t *a) {   /* (its one caller is run) */
    Engine *e = x->e;
    conn_t *c = x->c;
    const ev_t *s = x->s;
    int side, r;
    switch (a->code) {
    case A_STOP: return STOPPED;
    case A_MOVE: return act_move(x, a);
    case A_ANOMALY: return act_anomaly(x, a);
    case A_SET: {
        const val_t *t = &RULES.vals[a->a[0]];
        side = side_of(x, t->who);
        if (side < 0) return BAIL;
        vres_t v;
        int k = value(x, a->a[1], &v);
        if (k != VK_NUM) return BAIL;
        set_field(&c->ep[side], t->name, (uint32_t)v.n);
        return 0;
    }
    case A_SEND: case A_REMOTE: case A_SYNCHRONIZED:
        return 0;                           /* an observer sends nothing, and knows both addresses */
    case A_MARK: x->marks |= (uint32_t)a->a[0]; return 0;
    case A_ACKED: c->ep[x->self].snd_una = s->ack; return 0;
    case A_TAKE_DATA: {
        cep_t *p = &c->ep[x->self];
        int64_t lead = ssub(p->rcv_nxt, s->seq);
        if (lead < 0) lead = 0;
        if (lead < (int64_t)s->data_len) p->rcv_nxt = s->seq + s->data_len;
        return 0;
    }
    case A_OPEN:
        c->client = (uint8_t)x->tx;
        c->ep[x->rx].passive = 1;
        c->known = 3;
        return 0;
    case A_OPEN_AT_SYN_ACK: {
        cep_t *srv = &c->ep[x->tx], *cli = &c->ep[x->rx];
        c->client = (uint8_t)x->rx;
        cli->state = SYN_SENT;
        cli->iss = cli->snd_una = s->ack - 1;
        cli->snd_nxt = s->ack;
        srv->state = SYN_RECEIVED;
        srv->passive = 1;
        srv->irs = s->ack - 1;
        srv->rcv_nxt = s->ack;
        srv->iss = srv->snd_una = s->seq;
        srv->snd_nxt = seq_end(s);
        c->known = 3;
        return 0;
    }
    case A_PICK_UP: {
        cep_t *tx = &c->ep[x->tx], *rx = &c->ep[x->rx];
        int ack = (s->flags & F_ACK) != 0;
        c->mid = 1;
        tx->state = rx->state = ESTABLISHED;
        tx->iss = tx->snd_una = tx->snd_nxt = s->seq;
        if (ack) tx->irs = tx->rcv_nxt = s->ack;
        rx->iss = rx->snd_una = rx->snd_nxt = ack ? s->ack : 0;
        rx->irs = rx->rcv_nxt = s->seq;
        c->known = (uint8_t)((ack ? side_bit(x->tx) : 0) | side_bit(x->rx));
        return 0;
    }
    case A_SERVER: side = side_of(x, a->a[0]); if (side < 0) return BAIL; c->client = (uint8_t)(1 - side); return 0;
    case A_KNOW: side = side_of(x, a->a[0]); if (side < 0) return BAIL; c->known |= (uint8_t)side_bit(side); return 0;
    case A_FLAG:
        switch (a->a[0]) {
        case K_REFUSED: c->refused = 1; return 0;
        case K_RST_SEEN: if (!c->rst_seen) c->rst_seen = 3; return 0;    /* seen, sender not noted */
        case K_DATA_AFTER_FIRST_FIN: c->data_after_first_fin = 1; return 0;
        case K_FIRST_FIN_ACKED_ALONE: c->first_fin_acked_alone = 1; return 0;
        default: return BAIL;
        }
    case A_DROP_CANDIDATES: c->ncand = 0; return 0;
    case A_CANDIDATE:                       /* counted; reported (by Python) only if it still matters at the end */
        if (c->ncand >= MAXCAND) return BAIL;
        c->ncand++;
        return 0;
    case A_NOTE_RST:                        /* rst_seen: the first RST's sender, as side + 1 */
        if (!c->rst_seen) c->rst_seen = (uint8_t)(x->tx + 1);
        return 0;
    case A_NOTE_FIN:
        if (c->nfins >= 2) return BAIL;
        c->fin_side[c->nfins] = (uint8_t)x->tx;
        c->fin_seqv[c->nfins] = fin_seq_of(s);
        c->fin_frame[c->nfins] = s->frame;
        c->nfins++;
        return 0;
    case A_UNHOLD: case A_FLUSH: case A_CROSS: case A_UNHOLD_FINAL: case A_DELIVER_FINAL: case A_HOLD_FINAL:
    case A_HOLD:
        side = side_of(x, a->a[0]);
        if (side < 0) return BAIL;
        switch (a->code) {
        case A_UNHOLD: c->pending[side].present = 0; c->nwq[side] = 0; return 0;
        case A_FLUSH: return flush(e, c, side, s, 0);
        case A_CROSS: c->pending[side].crossed = 1; return 0;
        case A_UNHOLD_FINAL: c->held_ack[side].present = 0; return 0;
        case A_DELIVER_FINAL: return deliver_final_ack(e, c, side);
        case A_HOLD_FINAL: return hold(c, &c->held_ack[side], s);
        default: return hold_pending(c, side, s);
        }
    case A_OBSERVE_SEND: return endpoint_call(e, c, x->tx, PG_SEND + c->ep[x->tx].state, s, x->now);
    case A_DELIVER_WITHOUT_FIN: {
        ev_t nf = *s;
        nf.flags &= (uint8_t)~F_FIN;
        return receive(e, c, x->rx, &nf, x->now);
    }
    case A_DELIVER_ACK_ONLY: {      /* a FIN rx already has, sent again: its ACK field still counts */
        ev_t nf = *s;
        nf.flags &= (uint8_t)~F_FIN;
        nf.seq = c->ep[x->rx].rcv_nxt;
        nf.data_len = 0;
        return receive(e, c, x->rx, &nf, x->now);
    }
    case A_DELIVER_QUEUE:           /* FLUSH: then what its sender sent after it, in order */
        for (int i = 0; i < x->nwq; i++) {
            ev_t q = c->log[x->wq[i]];
            if ((r = receive(e, c, x->x, &q, q.time_ns))) return r;
        }
        return 0;
    case A_WAIT_BEHIND: case A_HOLD_RST: {
        side = side_of(x, a->a[0]);
        if (side < 0 || !s) return BAIL;
        uint8_t *n = a->code == A_WAIT_BEHIND ? &c->nwq[side] : &c->nrq[side];
        if (*n == MAXWAIT) return BAIL;
        if (a->code == A_HOLD_RST && c->nrq[1 - side]) return BAIL;   /* both sides: Python's dict order */
        (a->code == A_WAIT_BEHIND ? c->wq[side] : c->rq[side])[(*n)++] = c->nlog;   /* this segment, once logged */
        return 0;
    }
    case A_DELIVER_RST:
        side = side_of(x, a->a[0]);
        if (side < 0) return BAIL;
        return deliver_rsts(e, c, side);
    case A_NOTE_PROMPT:
        side = side_of(x, a->a[0]);
        if (side < 0 || !c->pending[side].present) return BAIL;
        c->prompt_ns[side] = x->now;
        return 0;
    case A_NOTE_ANSWER:
        side = side_of(x, a->a[0]);
        if (side < 0) return BAIL;
        c->answer_ns[side] = x->now;
        c->has_answer |= (uint8_t)(1 << side);
        return 0;
    case A_NOTE_FREED:
        side = side_of(x, a->a[0]);
        if (side < 0 || !c->pending[side].present) return BAIL;
        c->pending[side].freed = 1;
        return 0;
    case A_HOLD_AHEAD: {            /* the FIN just held waits ahead of a gap; the ACK in it counts now */
        side = side_of(x, a->a[0]);
        if (side < 0 || !s || !c->pending[side].present) return BAIL;
        c->pending[side].ahead = 1;
        ev_t nf = *s;
        nf.flags &= (uint8_t)~F_FIN;
        nf.seq = c->ep[side].rcv_nxt;
        nf.data_len = 0;
        return receive(e, c, side, &nf, x->now);
    }
    case A_FLUSH_FILLED:
        side = side_of(x, a->a[0]);
        if (side < 0) return BAIL;
        return flush(e, c, side, s, 1);
    case A_INFER: return act_infer(x, a);   /* the next delivery's first transition names the other reading */
    case A_EVIDENCE:                /* where segments get lost (a[0]: 1 after the capture point) */
        side = side_of(x, a->a[1]);
        if (side < 0) return BAIL;
        return evid_note(e, c, side, a->a[0]);
    case A_RTT:             /* the round trip, and the two halves as round trips to each side (rawfin.core.delays) */
        c->rtt_ns = x->now - c->syn_ns;
        c->has_rtt = 1;
        c->trip_ns[0] = c->trip_ns[1] = c->rtt_ns;
        if (c->syn_at >= 0 && c->synack_at >= c->syn_at && x->now >= c->synack_at) {
            int64_t cl = x->now - c->synack_at, sv = c->synack_at - c->syn_at;
            if (cl < c->rtt_ns) c->trip_ns[c->client] = cl;
            if (sv < c->rtt_ns) c->trip_ns[1 - c->client] = sv;
            e->trip_note[0].side = 1; e->trip_note[0].b = trip_bucket(c->synack_at - c->syn_at);     /* the server's */
            e->trip_note[1].side = 0; e->trip_note[1].b = trip_bucket(x->now - c->synack_at);        /* the client's */
            e->ntrip = 2;
        }
        return 0;
    case A_SYN_TIME: c->syn_ns = x->now; return 0;
    case A_NOTE_RESENT: case A_DROP_RESENT:     /* rules' resent: that side has sent data again */
        side = side_of(x, a->a[0]);
        if (side < 0) return BAIL;
        if (a->code == A_NOTE_RESENT) c->resent |= (uint8_t)side_bit(side);
        else c->resent &= (uint8_t)~side_bit(side);
        return 0;
    case A_NOTE_HOLE: case A_DROP_HOLE:         /* rules' hole: that side's duplicate ACK showed a hole */
        side = side_of(x, a->a[0]);
        if (side < 0) return BAIL;
        if (a->code == A_NOTE_HOLE) c->hole |= (uint8_t)side_bit(side);
        else c->hole &= (uint8_t)~side_bit(side);
        return 0;
    case A_REORDERED: e->nreo++; return 0;      /* a hole filled with nothing sent again: counted when the call stands */
    case A_DELIVER: return receive(e, c, x->rx, s, x->now);
    case A_LISTENING: c->ep[x->x].state = LISTEN; return 0;
    case A_DELIVER_HELD: {
        ev_t h = x->h->seg;
        switch (a->a[0]) {
        case DH_SYN: return receive(e, c, x->x, &h, h.time_ns);
        case DH_SYN_WITHOUT_DATA: h.data_len = 0; return receive(e, c, x->x, &h, h.time_ns);
        case DH_AHEAD: {        /* data and FIN, where the gap was filled or the receiver showed it had it */
            const ev_t *when = (x->filled || x->h->crossed) && x->nowseg ? x->nowseg : &x->h->seg;
            h.frame = when->frame;
            h.time_ns = when->time_ns;
            return receive(e, c, x->x, &h, when->time_ns);
        }
        case DH_FIN: case DH_FIN_AT_NOW: case DH_FIN_AT_QUEUE: {
            if (a->a[0] == DH_FIN_AT_QUEUE && !x->nwq) { e->inf_on = 0; return BAIL; }
            const ev_t *when = a->a[0] == DH_FIN_AT_NOW ? x->nowseg
                             : a->a[0] == DH_FIN_AT_QUEUE ? &c->log[x->wq[0]] : &x->h->seg;
            h.seq = fin_seq_of(&x->h->seg);
            h.data_len = 0;
            h.flags = (uint8_t)(F_FIN | (x->h->seg.flags & F_ACK));
            h.frame = when->frame;
            h.time_ns = when->time_ns;
            r = receive(e, c, x->x, &h, when->time_ns);
            e->inf_on = 0;              /* (as the reference: only this delivery's first transition) */
            return r;
        }
        default: return BAIL;
        }
    }
    case A_UNHOLD_X: c->pending[x->x].present = 0; c->nwq[x->x] = 0; return 0;
    case A_FLUSH_X: return flush(e, c, x->x, NULL, 0);
    default: return BAIL;                   /* a primitive only the Python observer has */
    }
}

static int run(ctx_t *x, int prog) {
    /* the situation changes only when a row's actions run, and then only in the parts they may change (chg) */
    int obs = RULES.obs[prog];
    sit_t fixed = sit_fixed(x), marks = sit_marks(x), conn = sit_conn(x), sa = sit_a(x, obs), sb = sit_b(x, obs);
    sit_t t = fixed | marks | conn | sa | sb;
    uint32_t n, np;
    const int32_t *d = dispatch(prog, t, &n, &np);
    uint32_t gen = DC_GEN;
    for (uint32_t i = 0; i < n;) {
        int32_t place = d[3 * i];
        const row_t *rw = &RULES.rows[d[3 * i + 1]];
        if (rw->np) {
            int h = holds(x, rw->p0, rw->np);
            if (h < 0) return BAIL;
            if (!h) { i++; continue; }
        }
        for (uint32_t ai = 0; ai < rw->na; ai++) {
            int r = act(x, &RULES.acts[rw->a0 + ai]);
            if (r == STOPPED) return 0;
            if (r) return r;
        }
        int chg = rw->chg;
#ifdef LANE_CHECK_SIT
        {
            sit_t m = chg & CH_MARKS ? sit_marks(x) : marks, k = chg & CH_CONN ? sit_conn(x) : conn;
            sit_t a = chg & CH_A ? sit_a(x, obs) : sa, b = chg & CH_B ? sit_b(x, obs) : sb;
            if ((fixed | m | k | a | b) != (situation(x) & (obs ? ~(sit_t)0 : ~(sit_t)SIT_OBS))) {
                fprintf(stderr, "rawfin lane: after row %d (chg %d) the situation is %llx, not %llx\n", d[3 * i + 1], chg,
                        (unsigned long long)situation(x), (unsigned long long)(fixed | m | k | a | b));
                abort();
            }
        }
#endif
        if (!chg && gen == DC_GEN) { i = (uint32_t)d[3 * i + 2]; continue; }   /* the same situation: the same list */
        if (chg & CH_MARKS) marks = sit_marks(x);
        if (chg & CH_CONN) conn = sit_conn(x);
        if (chg & CH_A) sa = sit_a(x, obs);
        if (chg & CH_B) sb = sit_b(x, obs);
        sit_t now = fixed | marks | conn | sa | sb;
        if (now == t && gen == DC_GEN) { i = (uint32_t)d[3 * i + 2]; continue; }
        t = now;
        d = dispatch(prog, t, &n, &np);     /* (the actions may have run other programs: look it up again) */
        gen = DC_GEN;
        i = (uint32_t)place < np ? (uint32_t)d[3 * n + place] : n;     /* the first row of a later step */
    }
    return 0;
}

/* a condition (a list of predicates) over a connection, past cond_holds' quick tests: 1, 0, or -BAIL */
static __attribute__((noinline)) int cond_rest(Engine *e, conn_t *c, const cond_t *cd, const ev_t *s, int tx) {
    ctx_t x;
    if (!s && tx < 0) ctx_init(&x, e, c, s, 0);
    else {
        ctx_init(&x, e, c, s, s ? s->time_ns : 0);
        if (tx >= 0) { x.tx = tx; x.rx = 1 - tx; }
        sit_t t = sit_fixed(&x) | sit_conn(&x);
        if (t & cd->forbid) return 0;
        if (!fits(t | sit_marks(&x) | sit_a(&x, cd->obs & 1) | sit_b(&x, cd->obs & 2), cd->need, cd->forbid)) return 0;
    }
    return holds(&x, cd->p0, cd->np);
}

/* a condition (a list of predicates) over a connection: 1, 0, or -BAIL. First what needs no context: the state
   pair, the connection's facts alone (no segment, no side), the segment's flags */
static inline int cond_holds(Engine *e, conn_t *c, const cond_t *cd, const ev_t *s, int tx) {
    if (cd->np == UINT32_MAX) return 0;
    uint32_t k = c->ep[0].state * NST + c->ep[1].state;
    if (!((cd->pairs[k >> 6] >> (k & 63)) & 1)) return 0;
    if (!s && tx < 0) {     /* the connection's facts alone: situation() of such a context, without making it */
        sit_t t = (c->nfins ? SIT_FINS : 0u) | (c->mid ? SIT_MID : 0u) | (c->known != 3 ? SIT_UNKNOWN : 0u)
            | ((c->pending[0].present | c->pending[1].present) ? SIT_HELD : 0u)
            | ((c->held_ack[0].present | c->held_ack[1].present) ? SIT_FINAL : 0u);
        if (!fits(t, cd->need, cd->forbid)) return 0;
        for (uint32_t m = cd->kneed | cd->kforbid; m; m &= m - 1) {     /* (rules.c prepare_cond) */
            int k = __builtin_ctz(m);
            if ((cflag(c, k) > 0) != ((cd->kneed >> k) & 1)) return 0;
        }
        if (!cd->np) return 1;
    } else if (s) {         /* the segment's flags and data (bits 0-5, 7; bit 6 is the connection's) */
        sit_t f = (s->flags & 0x3Fu) | (s->data_len ? SIT_DATA : 0u), m = ~(sit_t)SIT_UNKNOWN & 0xFF;
        if ((f & cd->forbid & m) || (cd->need & m & ~f)) return 0;
    }
    return cond_rest(e, c, cd, s, tx);
}

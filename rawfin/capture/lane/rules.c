/* rawfin._engine, part rules (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ the rules, loaded at start
 *
 * rawfin/core/rules.py is the one place a teardown rule is written. rawfin/core/machine.py reads
 * it into a small intermediate form; rawfin/capture/engine.py hands that form here as integers
 * (set_rules), using the names this part exports (vocabulary()): a name the lane does not know
 * becomes UNSUPPORTED, and a row that needs it hands its connection to the Python observer when
 * it is reached. The interpreter (interp.c) runs the rows; nothing in the lane decides by itself
 * which input a segment is, what is held, what a close is called.
 */

#define UNSUPPORTED (-1)

/* the vocabulary: the names of the primitives this lane implements (rawfin/core/machine.py's) */
enum { P_FLAG, P_PURE_ACK, P_DATA, P_OCCUPIES, P_CMP, P_ISSET, P_STATE, P_IN_WINDOW, P_ACK_KNOWN, P_CONFIG,
       P_PASSIVE, P_MARK, P_CONN, P_ROLE, P_SOME, P_ALL, P_TOOK, P_TIMER, P_HELD, P_HELD_FLAG, P_CROSSED,
       P_ANSWERED, P_NOW, P_REACHED, P_RD_SHUT, P_WAITING, P_DUP_ACK, P_TIMEWAIT_REPLY,
       P_ID_SKIP, P_ID_SKIPS, NPRED };
static const char *PRED_NAMES[NPRED] = {"flag", "pure_ack", "data", "occupies", "cmp", "isset", "state",
                                        "in_window", "ack_known", "config", "passive", "mark", "conn", "role",
                                        "some", "all", "took", "timer", "held", "held_flag", "crossed",
                                        "answered", "now", "reached", "rd_shut", "waiting", "dup_ack",
                                        "timewait_reply", "id_skip", "id_skips"};
enum { A_STOP, A_MOVE, A_ANOMALY, A_SET, A_SEND, A_MARK, A_REMOTE, A_SYNCHRONIZED, A_ACKED, A_TAKE_DATA,
       A_OPEN, A_OPEN_AT_SYN_ACK, A_PICK_UP, A_SERVER, A_KNOW, A_FLAG, A_DROP_CANDIDATES, A_CANDIDATE,
       A_NOTE_FIN, A_UNHOLD, A_FLUSH, A_CROSS, A_UNHOLD_FINAL, A_DELIVER_FINAL, A_OBSERVE_SEND, A_HOLD_FINAL,
       A_HOLD, A_DELIVER_WITHOUT_FIN, A_DELIVER, A_LISTENING, A_DELIVER_HELD, A_UNHOLD_X, A_FLUSH_X, A_EVIDENCE,
       A_DELIVER_ACK_ONLY, A_DELIVER_QUEUE, A_WAIT_BEHIND, A_HOLD_RST, A_DELIVER_RST, A_HOLD_AHEAD, A_FLUSH_FILLED,
       A_INFER, A_NOTE_RST, A_NOTE_RESENT, A_DROP_RESENT, A_RTT, A_SYN_TIME, A_NOTE_HOLE, A_DROP_HOLE, A_REORDERED,
       A_NOTE_FREED, A_NOTE_PROMPT, A_NOTE_ANSWER, NACT };
static const char *ACT_NAMES[NACT] = {"stop", "move", "anomaly", "set", "send", "mark", "remote", "synchronized",
                                      "acked", "take_data", "open", "open_at_syn_ack", "pick_up", "server", "know",
                                      "flag", "drop_candidates", "candidate", "note_fin", "unhold", "flush", "cross",
                                      "unhold_final", "deliver_final", "observe_send", "hold_final", "hold",
                                      "deliver_without_fin", "deliver", "listening", "deliver_held", "unhold_x",
                                      "flush_x", "evidence", "deliver_ack_only", "deliver_queue", "wait_behind",
                                      "hold_rst", "deliver_rst", "hold_ahead", "flush_filled", "infer",
                                      "note_rst", "note_resent", "drop_resent", "rtt", "syn_time", "note_hole",
                                      "drop_hole", "reordered", "note_freed", "note_prompt", "note_answer"};
enum { W_SEG, W_SELF, W_TX, W_RX, W_X, W_A, W_B, W_CLIENT, W_FIRST_CLOSER, W_H, W_NOW, W_HELD_TX, W_HELD_RX,
       W_FINAL_TX, W_FINAL_RX, W_CONN, W_LIT, W_PEER, W_SERVER, NWHO };
static const char *WHO_NAMES[NWHO] = {"seg", "self", "tx", "rx", "x", "a", "b", "client", "first_closer", "h",
                                      "now", "held:tx", "held:rx", "final:tx", "final:rx", "conn", "lit", "peer",
                                      "server"};
enum { V_SEQ, V_ACK, V_END, V_LEN, V_FIN, V_WIN, V_SPORT, V_DPORT, V_FRAME, V_DESCRIBE,
       V_ISS, V_IRS, V_SND_UNA, V_SND_NXT, V_RCV_NXT, V_FIN_SEQ, V_PEER_FIN_SEQ, V_SND_WND, V_NAME, V_STATE,
       V_MISSING, V_FIN_GAP, V_2MSL_S, V_FIRST_FIN, V_LITERAL, NVAL };
static const char *VAL_NAMES[NVAL] = {"seq", "ack", "end", "len", "fin", "win", "sport", "dport", "frame",
                                      "describe", "iss", "irs", "snd_una", "snd_nxt", "rcv_nxt", "fin_seq",
                                      "peer_fin_seq", "snd_wnd", "name", "state", "missing", "fin_gap", "2msl_s",
                                      "first_fin", ""};
enum { CF_OBSERVER, CF_CLOSE_ON_FIN, CF_HOLD_FINAL_ACK, NCONFIG };
static const char *CONFIG_NAMES[NCONFIG] = {"observer", "close_on_fin", "hold_final_ack"};
enum { K_FINS, K_MID_STREAM, K_REFUSED, K_RST_SEEN, K_DATA_AFTER_FIRST_FIN, K_FIRST_FIN_ACKED_ALONE,
       K_FINS_COMPLETE, K_CANDIDATES, K_HELD, K_FINAL, K_SYNACK_UNSEEN, K_RTT, K_RSTS, K_EVICTED, K_TIMED_OUT,
       NCFLAG };
static const char *CFLAG_NAMES[NCFLAG] = {"fins", "mid_stream", "refused", "rst_seen", "data_after_first_fin",
                                          "first_fin_acked_alone", "fins_complete", "candidates", "held", "final",
                                          "synack_unseen", "rtt", "rsts", "evicted", "timed_out"};
/* rules.HALF_OPEN's clocks and timeouts (rawfin/core/machine.py HALF_OPEN_CLOCKS, HALF_OPEN_TIMEOUTS) */
enum { HC_SYNACK_AT, HC_SYN_AT, NHCLOCK };
static const char *HCLOCK_NAMES[NHCLOCK] = {"synack_at", "syn_at"};
enum { HT_SYN_ACK, HT_SYN, NHTIMEOUT };
static const char *HTIMEOUT_NAMES[NHTIMEOUT] = {"syn_ack", "syn"};
enum { R_CLIENT, R_FIRST_CLOSER, R_FIN_NOTED, R_KNOWN, R_SEEN, R_SYNACK_UNSEEN, R_DATA_UNANSWERED, R_RESENT, R_HOLE,
       NROLE };
static const char *ROLE_NAMES[NROLE] = {"client", "first_closer", "fin_noted", "known", "seen", "synack_unseen",
                                        "data_unanswered", "resent", "hole"};
enum { T_2MSL_DUE, T_FIN_WAIT_2_DUE, T_RTO_DUE, T_RTO_ARMED, T_UNACKED, T_RETRIES_EXHAUSTED, T_USER_TIMEOUT_EXPIRED,
       T_LOSS_PROBE, NTIMER };
static const char *TIMER_NAMES[NTIMER] = {"2msl_due", "fin_wait_2_due", "rto_due", "rto_armed", "unacked",
                                          "retries_exhausted", "user_timeout_expired", "loss_probe"};
enum { DH_SYN, DH_SYN_WITHOUT_DATA, DH_FIN, DH_FIN_AT_NOW, DH_FIN_AT_QUEUE, DH_AHEAD, NDH };
static const char *DH_NAMES[NDH] = {"syn", "syn_without_data", "fin", "fin_at_now", "fin_at_queue", "ahead"};
/* rules.WAITING: what the observer keeps for a side (rules' rst:rx, queue:x...) */
enum { WT_RST, WT_QUEUE, WT_AHEAD, WT_FILLED, WT_RST_LATE, WT_ACKS, WT_LATE, WT_LATE_FIRST, WT_ACK_FIRST, WT_QUICK, WT_PROMPT,
       WT_SOON, WT_FREED, WT_COPY_SOON, WT_ANSWER_SOON, WT_PROBE_SOON, NWT };
enum { OP_EQ, OP_LT, OP_GT, OP_LE, OP_GE, NOP };
static const char *OP_NAMES[NOP] = {"=", "<", ">", "<=", ">="};
enum { TO_FINAL_ACK, TO_ENDPOINTS, NTO };
static const char *TO_NAMES[NTO] = {"final_ack", "endpoints"};

/* the loaded rules */
typedef struct { int16_t code; uint8_t neg, cmp; int32_t a[4]; } pred_t;   /* cmp: P_CMP's outcomes (prepare_rules) */
/* P_CMP read ahead (pred_t.cmp): where both values are numbers, the outcomes of their comparison for which the
   predicate (its negation applied) holds -- less, equal, greater: bits 0, 1, 2 -- so that no jump on the operator is
   taken; CMP_EXACT: = of values whose sequence comparison may differ from equality (one not below 2**32), tested as
   they are; CMP_SLOW: an operator the lane does not know */
enum { CMP_EXACT = 8, CMP_SLOW = 16 };
typedef struct { int16_t code; int32_t a[3]; } act_t;
/* the situation a row needs: the segment's flags (bits 0-7), a few facts of the connection and the
   segment (bits 8-15), the call's marks (bits 16-31) */
#define SIT_HELD (1u << 8)      /* a FIN or SYN is held for a side */
#define SIT_FINAL (1u << 9)     /* a final ACK is held */
#define SIT_FINS (1u << 10)     /* a FIN was seen */
#define SIT_MID (1u << 11)      /* picked up mid-stream */
#define SIT_HELD_TX (1u << 12)  /* ... held for the sender (tx), for the receiver (rx) */
#define SIT_HELD_RX (1u << 13)
#define SIT_FINAL_TX (1u << 14)
#define SIT_FINAL_RX (1u << 15)
#define SIT_DATA (1u << 7)      /* the segment carries data (CWR, bit 7, is never tested: its place) */
#define SIT_UNKNOWN (1u << 6)   /* a side's rcv_nxt is not known yet (ECE's place) */
#define SIT_MARKS 16            /* bits 16-23: the call's first eight marks (a later one stays a predicate) */
#define SIT_MARKS_MASK 0xFFu
/* bits 24-31, 43-47, 59-62: facts of the program's own sides (A: self, tx or x; B: rx), folded only in the
   programs where that side always exists (prep_cls), so a predicate that would hand the connection over for
   want of its side is never folded */
#define SIT_RESENT_A (1ull << 24)   /* role resent, hole */
#define SIT_RESENT_B (1ull << 25)
#define SIT_HOLE_A (1ull << 26)
#define SIT_HOLE_B (1ull << 27)
#define SIT_RST_A (1ull << 28)      /* waiting rst: RSTs held for it */
#define SIT_RST_B (1ull << 29)
#define SIT_DUP_ACK (1ull << 30)    /* dup_ack (of the segment and rx) */
#define SIT_H_SYN (1ull << 31)      /* h.SYN: the held segment being delivered (FLUSH) */
#define SIT_H_CROSSED (1ull << 43)  /* h.crossed */
#define SIT_QUEUE_A (1ull << 44)    /* waiting queue, ahead */
#define SIT_QUEUE_B (1ull << 45)
#define SIT_AHEAD_A (1ull << 46)
#define SIT_AHEAD_B (1ull << 47)
#define SIT_FIN_A (1ull << 59)      /* isset fin_seq, peer_fin_seq */
#define SIT_FIN_B (1ull << 60)
#define SIT_PFIN_A (1ull << 61)
#define SIT_PFIN_B (1ull << 62)
#define SIT_OBS (SIT_RESENT_A | SIT_RESENT_B | SIT_HOLE_A | SIT_HOLE_B | SIT_RST_A | SIT_RST_B | SIT_QUEUE_A \
                 | SIT_QUEUE_B | SIT_AHEAD_A | SIT_AHEAD_B)
#define SIT_STATE_A 32          /* bits 32-42: the state of the endpoint the program runs for (self, tx, or x) */
#define SIT_STATE_B 48          /* bits 48-58: the state of rx */
typedef uint64_t sit_t;
typedef struct { uint32_t p0, np, a0, na; sit_t need, forbid; uint8_t chg; } row_t;   /* need, forbid: what the
    situation must have, not have; chg: what of it its actions may change (act_changes: CH_*, 0 none) */
typedef struct { uint32_t r0, nr; sit_t any; } step_t;     /* any: one of these bits, or no row holds */
typedef struct { uint32_t s0, ns; } prog_t;
typedef struct { uint32_t p0, np; sit_t need, forbid; uint64_t pairs[2]; uint32_t kneed, kforbid; uint8_t obs; } cond_t;
/* pairs: cond_pairs; kneed, kforbid: the connection's flags (a bit per K_*) a condition over the connection alone
   needs, forbids; obs: bit 0, 1: its masks test side A's, B's observer facts (SIT_OBS) (prepare_cond) */
typedef struct { int8_t who, name, quick; int64_t off; } val_t;   /* quick: how interp.c's value() reads it (Q_*) */
/* a value read directly: one of the segment's numbers, a TCB field of a side the context names (self, tx, rx, x, a,
   b), that side's FIN or its peer's; else (Q_SLOW) through value_slow */
enum { Q_SLOW, Q_SEQ, Q_ACK, Q_END, Q_LEN, Q_FIN, Q_TCB, Q_FIN_SEQ, Q_PEER_FIN_SEQ };
_Static_assert(V_ACK == V_SEQ + 1 && V_END == V_SEQ + 2 && V_LEN == V_SEQ + 3 && V_FIN == V_SEQ + 4, "Q_SEQ + name");
typedef struct { int32_t val; uint32_t lit0, nlit; } piece_t;    /* val >= 0: a value (lit0/nlit: its name);
                                                                     else literal text */
typedef struct { uint32_t p0, np; } tpl_t;
#define TEXT_PAD 32             /* rules_t.text ends in this many spare bytes */

enum { PG_RECEIVE = 0, PG_SEND = NST, PG_TIMERS = 2 * NST, PG_BIRTH, PG_SEGMENT, PG_FLUSH, PG_FLUSH_AT_END, PG_END,
       PG_RST_HELD, NPROG };
#define MAXKIND 64
#define MAXCLOSE 16

typedef struct {
    pred_t *preds; uint32_t npreds;
    act_t *acts; uint32_t nacts;
    row_t *rows; uint32_t nrows;
    step_t *steps; uint32_t nsteps;
    prog_t progs[NPROG];
    val_t *vals; uint32_t nvals;
    piece_t *pieces; uint32_t npieces;
    char *text; uint32_t ntext;
    tpl_t *tpls; uint32_t ntpls;
    char *kinds[MAXKIND]; uint32_t nkinds;          /* anomaly kinds */
    char *close_names[MAXCLOSE]; cond_t close_cond[MAXCLOSE]; uint32_t nclose;
    uint32_t time_wait_closes;                      /* bit per close kind: leaves TIME_WAIT with the closer */
    uint32_t reset_closes;                          /* bit per close kind: the record names the RST's sender */
    cond_t settled, fast_path;
    cond_t time_wait_held;                          /* ... and only where the closer's TIME_WAIT was reached */
    int8_t new_syn_yes[8]; cond_t new_syn[8]; uint32_t nnew_syn;
    cond_t half_open[4]; int8_t half_open_clock[4], half_open_timeout[4]; uint32_t nhalf_open;
    int64_t timeout_ns[NHTIMEOUT];                  /* the rules' defaults (an Engine may have its own) */
    int8_t timer_order[4]; uint32_t ntimer_order;
    int64_t final_ack_hold_ns;
    int64_t id_skips_max;       /* rules.ID_SKIPS_MAX (rules' id_skips; on_segment_in) */
    /* plans: per program and per combination of FIN, SYN, RST, PSH, ACK, the steps and rows that can hold
       (a step: -n, then its n rows' indices), so a segment is not held against rows its flags rule out */
    int32_t *plan; uint32_t nplan;
    uint32_t plan_off[NPROG][32], plan_len[NPROG][32];
    uint8_t obs[NPROG];     /* the program's rows test a side's observer facts (SIT_OBS: resent, hole, waiting) */
    /* Segment.describe() as rawfin/core/segment.py's DESCRIBE_* say: the flag names in order, the text
       for no flag, the numbers after them (a value name, the flags it needs, shown only when not zero) */
    char *flag_name[8]; uint8_t flag_bit[8]; uint32_t nflags;
    char *no_flags;
    struct { int8_t name; uint8_t need, nonzero; char *label; } dnum[4]; uint32_t ndnum;
} rules_t;
/* a plan's step: -n (its rows that the flags allow), the step's index (for its ``any``), the n rows */

static rules_t RULES;
static int rules_set = 0;
static rules_t *RULES_PREP;     /* the rules being prepared */

static void rules_free(rules_t *r) {
    free(r->preds); free(r->acts); free(r->rows); free(r->steps); free(r->vals); free(r->pieces); free(r->text);
    free(r->tpls);
    free(r->plan);
    for (uint32_t i = 0; i < r->nkinds; i++) free(r->kinds[i]);
    for (uint32_t i = 0; i < r->nclose; i++) free(r->close_names[i]);
    for (uint32_t i = 0; i < r->nflags; i++) free(r->flag_name[i]);
    free(r->no_flags);
    for (uint32_t i = 0; i < r->ndnum; i++) free(r->dnum[i].label);
    memset(r, 0, sizeof *r);
}

/* small growable arrays, for the loader only */
#define GROW(arr, n, extra)                                                            \
    do {                                                                               \
        void *np_ = realloc((arr), ((n) + (extra)) * sizeof *(arr));                   \
        if (!np_) { PyErr_NoMemory(); return -1; }                                     \
        (arr) = np_;                                                                   \
    } while (0)

static int ld_int(PyObject *seq, Py_ssize_t i, int64_t *out) {
    PyObject *o = PySequence_GetItem(seq, i);
    if (!o) return -1;
    long long v = PyLong_AsLongLong(o);
    Py_DECREF(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

/* (code, negated, a0, a1, a2, a3) tuples */
static int ld_preds(rules_t *r, PyObject *list, uint32_t *p0, uint32_t *np) {
    Py_ssize_t n = PySequence_Size(list);
    if (n < 0) return -1;
    GROW(r->preds, r->npreds, (size_t)n + 1);
    *p0 = r->npreds;
    *np = (uint32_t)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_GetItem(list, i);
        if (!t) return -1;
        int64_t v[6];
        for (int k = 0; k < 6; k++)
            if (ld_int(t, k, &v[k]) < 0) { Py_DECREF(t); return -1; }
        Py_DECREF(t);
        pred_t *p = &r->preds[r->npreds++];
        p->code = (int16_t)v[0];
        p->neg = (uint8_t)v[1];
        p->cmp = 0;
        for (int k = 0; k < 4; k++) p->a[k] = (int32_t)v[2 + k];
    }
    return 0;
}

static int ld_program(rules_t *r, PyObject *steps, prog_t *pg) {
    Py_ssize_t ns = PySequence_Size(steps);
    if (ns < 0) return -1;
    GROW(r->steps, r->nsteps, (size_t)ns + 1);
    pg->s0 = r->nsteps;
    pg->ns = (uint32_t)ns;
    r->nsteps += (uint32_t)ns;
    for (Py_ssize_t i = 0; i < ns; i++) {
        PyObject *rows = PySequence_GetItem(steps, i);
        if (!rows) return -1;
        Py_ssize_t nr = PySequence_Size(rows);
        if (nr < 0) { Py_DECREF(rows); return -1; }
        r->steps[pg->s0 + i].r0 = r->nrows;
        r->steps[pg->s0 + i].nr = (uint32_t)nr;
        GROW(r->rows, r->nrows, (size_t)nr + 1);
        uint32_t base = r->nrows;
        r->nrows += (uint32_t)nr;
        for (Py_ssize_t j = 0; j < nr; j++) {
            PyObject *rw = PySequence_GetItem(rows, j);
            if (!rw) { Py_DECREF(rows); return -1; }
            PyObject *preds = PySequence_GetItem(rw, 0), *acts = PySequence_GetItem(rw, 1);
            Py_DECREF(rw);
            if (!preds || !acts) { Py_XDECREF(preds); Py_XDECREF(acts); Py_DECREF(rows); return -1; }
            row_t *row = &r->rows[base + j];
            int bad = ld_preds(r, preds, &row->p0, &row->np) < 0;
            Py_ssize_t na = bad ? -1 : PySequence_Size(acts);
            if (na < 0) bad = 1;
            if (!bad) {
                act_t *grown = realloc(r->acts, (r->nacts + (size_t)na + 1) * sizeof *r->acts);
                if (!grown) { PyErr_NoMemory(); bad = 1; }
                else r->acts = grown;
            }
            if (!bad) {
                row->a0 = r->nacts;
                row->na = (uint32_t)na;
                for (Py_ssize_t k = 0; k < na && !bad; k++) {
                    PyObject *t = PySequence_GetItem(acts, k);
                    int64_t v[4];
                    if (!t) { bad = 1; break; }
                    for (int q = 0; q < 4 && !bad; q++) bad = ld_int(t, q, &v[q]) < 0;
                    Py_DECREF(t);
                    if (bad) break;
                    act_t *a = &r->acts[r->nacts++];
                    a->code = (int16_t)v[0];
                    for (int q = 0; q < 3; q++) a->a[q] = (int32_t)v[1 + q];
                }
            }
            Py_DECREF(preds);
            Py_DECREF(acts);
            if (bad) { Py_DECREF(rows); return -1; }
        }
        Py_DECREF(rows);
    }
    return 0;
}

static char *ld_strdup(PyObject *o) {
    const char *u = PyUnicode_AsUTF8(o);
    if (!u) return NULL;
    char *s = strdup(u);
    if (!s) PyErr_NoMemory();
    return s;
}

static int ld_cond(rules_t *r, PyObject *spec, const char *key, cond_t *c) {
    PyObject *l = PyDict_GetItemString(spec, key);
    if (!l) { PyErr_Format(PyExc_KeyError, "rules: %s", key); return -1; }
    return ld_preds(r, l, &c->p0, &c->np);
}

static int ld_describe(rules_t *r, PyObject *spec);

/* set_rules(spec): the rules in force, as rawfin/capture/engine.py encodes them (lane_rules) */
static int load_rules(rules_t *r, PyObject *spec) {
    if (!PyDict_Check(spec)) { PyErr_SetString(PyExc_TypeError, "set_rules() takes a dict"); return -1; }
    PyObject *o;
    /* values */
    if (!(o = PyDict_GetItemString(spec, "values"))) goto missing;
    Py_ssize_t n = PySequence_Size(o);
    if (n < 0) return -1;
    GROW(r->vals, 0, (size_t)n + 1);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_GetItem(o, i);
        int64_t v[3];
        if (!t) return -1;
        for (int k = 0; k < 3; k++)
            if (ld_int(t, k, &v[k]) < 0) { Py_DECREF(t); return -1; }
        Py_DECREF(t);
        r->vals[i].who = (int8_t)v[0];
        r->vals[i].name = (int8_t)v[1];
        r->vals[i].off = v[2];
    }
    r->nvals = (uint32_t)n;
    /* templates: lists of str (literal) or int (a value) */
    if (!(o = PyDict_GetItemString(spec, "templates"))) goto missing;
    n = PySequence_Size(o);
    if (n < 0) return -1;
    GROW(r->tpls, 0, (size_t)n + 1);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_GetItem(o, i);
        if (!t) return -1;
        Py_ssize_t np = PySequence_Size(t);
        r->tpls[i].p0 = r->npieces;
        r->tpls[i].np = (uint32_t)(np < 0 ? 0 : np);
        if (np < 0) { Py_DECREF(t); return -1; }
        piece_t *grown = realloc(r->pieces, (r->npieces + (size_t)np + 1) * sizeof *r->pieces);
        if (!grown) { Py_DECREF(t); PyErr_NoMemory(); return -1; }
        r->pieces = grown;
        for (Py_ssize_t k = 0; k < np; k++) {
            PyObject *pc = PySequence_GetItem(t, k);
            if (!pc) { Py_DECREF(t); return -1; }
            piece_t *p = &r->pieces[r->npieces++];
            if (PyUnicode_Check(pc)) {
                Py_ssize_t len;
                const char *u = PyUnicode_AsUTF8AndSize(pc, &len);
                char *grown_t = u ? realloc(r->text, r->ntext + (size_t)len + 1) : NULL;
                if (!grown_t) { Py_DECREF(pc); Py_DECREF(t); if (u) PyErr_NoMemory(); return -1; }
                r->text = grown_t;
                memcpy(r->text + r->ntext, u, (size_t)len);
                p->val = -1;
                p->lit0 = r->ntext;
                p->nlit = (uint32_t)len;
                r->ntext += (uint32_t)len;
            } else {                            /* (value index, its name) */
                long v;
                const char *label;
                Py_ssize_t len;
                if (!PyArg_ParseTuple(pc, "ls#", &v, &label, &len)) { Py_DECREF(pc); Py_DECREF(t); return -1; }
                char *grown_t = realloc(r->text, r->ntext + (size_t)len + 1);
                if (!grown_t) { Py_DECREF(pc); Py_DECREF(t); PyErr_NoMemory(); return -1; }
                r->text = grown_t;
                memcpy(r->text + r->ntext, label, (size_t)len);
                p->val = (int32_t)v;
                p->lit0 = r->ntext;
                p->nlit = (uint32_t)len;
                r->ntext += (uint32_t)len;
            }
            Py_DECREF(pc);
        }
        Py_DECREF(t);
    }
    r->ntpls = (uint32_t)n;
    char *padded = realloc(r->text, r->ntext + TEXT_PAD);     /* spare bytes, for interp.c format's fixed-size copies */
    if (!padded) { PyErr_NoMemory(); return -1; }
    memset(padded + r->ntext, 0, TEXT_PAD);
    r->text = padded;
    /* anomaly kinds, close kinds */
    if (!(o = PyDict_GetItemString(spec, "kinds"))) goto missing;
    n = PySequence_Size(o);
    if (n < 0) return -1;
    if (n > MAXKIND) { PyErr_SetString(PyExc_ValueError, "too many anomaly kinds for the lane"); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PySequence_GetItem(o, i);
        if (!s) return -1;
        r->kinds[i] = ld_strdup(s);
        Py_DECREF(s);
        if (!r->kinds[i]) return -1;
        r->nkinds++;
    }
    if (!(o = PyDict_GetItemString(spec, "close_kinds"))) goto missing;
    n = PySequence_Size(o);
    if (n < 0) return -1;
    if (n > MAXCLOSE) { PyErr_SetString(PyExc_ValueError, "too many close kinds for the lane"); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_GetItem(o, i);
        if (!t) return -1;
        PyObject *name = PySequence_GetItem(t, 0), *cond = PySequence_GetItem(t, 1), *tw = PySequence_GetItem(t, 2);
        PyObject *rs = PySequence_GetItem(t, 3);
        Py_DECREF(t);
        int bad = !name || !cond || !tw || !rs;
        if (!bad) {
            r->close_names[i] = ld_strdup(name);
            bad = !r->close_names[i];
        }
        if (!bad) {
            r->nclose++;
            bad = ld_preds(r, cond, &r->close_cond[i].p0, &r->close_cond[i].np) < 0;
        }
        if (!bad && PyObject_IsTrue(tw)) r->time_wait_closes |= 1u << i;
        if (!bad && PyObject_IsTrue(rs)) r->reset_closes |= 1u << i;
        Py_XDECREF(name); Py_XDECREF(cond); Py_XDECREF(tw); Py_XDECREF(rs);
        if (bad) return -1;
    }
    if (!(o = PyDict_GetItemString(spec, "new_syn"))) goto missing;
    n = PySequence_Size(o);
    if (n < 0) return -1;
    if (n > 8) { PyErr_SetString(PyExc_ValueError, "too many new-SYN rows for the lane"); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_GetItem(o, i);
        if (!t) return -1;
        PyObject *yes = PySequence_GetItem(t, 0), *cond = PySequence_GetItem(t, 1);
        Py_DECREF(t);
        int bad = !yes || !cond;
        if (!bad) {
            r->new_syn_yes[i] = (int8_t)PyObject_IsTrue(yes);
            bad = ld_preds(r, cond, &r->new_syn[i].p0, &r->new_syn[i].np) < 0;
        }
        Py_XDECREF(yes); Py_XDECREF(cond);
        if (bad) return -1;
        r->nnew_syn++;
    }
    if (ld_cond(r, spec, "settled", &r->settled) < 0 || ld_cond(r, spec, "fast_path", &r->fast_path) < 0
        || ld_cond(r, spec, "time_wait_held", &r->time_wait_held) < 0) return -1;
    /* rules.HALF_OPEN: (condition, clock, timeout) rows, and the timeouts' defaults */
    if (!(o = PyDict_GetItemString(spec, "half_open"))) goto missing;
    n = PySequence_Size(o);
    if (n < 0) return -1;
    if (n > 4) { PyErr_SetString(PyExc_ValueError, "too many half-open rows for the lane"); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_GetItem(o, i);
        if (!t) return -1;
        PyObject *cond = PySequence_GetItem(t, 0);
        int64_t clock, which;
        int bad = !cond || ld_int(t, 1, &clock) < 0 || ld_int(t, 2, &which) < 0;
        Py_DECREF(t);
        if (!bad && (clock < 0 || clock >= NHCLOCK || which < 0 || which >= NHTIMEOUT)) {
            PyErr_SetString(PyExc_ValueError, "rules: a half-open row the lane cannot read");
            bad = 1;
        }
        if (!bad) bad = ld_preds(r, cond, &r->half_open[i].p0, &r->half_open[i].np) < 0;
        Py_XDECREF(cond);
        if (bad) return -1;
        for (uint32_t k = 0; k < r->half_open[i].np; k++)
            if (r->preds[r->half_open[i].p0 + k].code == UNSUPPORTED) {
                PyErr_SetString(PyExc_ValueError, "rules: a half-open row names what the lane does not know");
                return -1;
            }
        r->half_open_clock[i] = (int8_t)clock;
        r->half_open_timeout[i] = (int8_t)which;
        r->nhalf_open++;
    }
    if (!(o = PyDict_GetItemString(spec, "timeouts"))) goto missing;
    for (Py_ssize_t i = 0; i < NHTIMEOUT; i++)
        if (ld_int(o, i, &r->timeout_ns[i]) < 0) return -1;
    /* programs, in the order of PG_* */
    if (!(o = PyDict_GetItemString(spec, "programs"))) goto missing;
    n = PySequence_Size(o);
    if (n != NPROG) { if (n >= 0) PyErr_SetString(PyExc_ValueError, "rules: wrong number of programs"); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pg = PySequence_GetItem(o, i);
        if (!pg) return -1;
        int bad = ld_program(r, pg, &r->progs[i]) < 0;
        Py_DECREF(pg);
        if (bad) return -1;
    }
    if (!(o = PyDict_GetItemString(spec, "timer_order"))) goto missing;
    n = PySequence_Size(o);
    if (n < 0 || n > 4) { if (n >= 0) PyErr_SetString(PyExc_ValueError, "rules: timer order"); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t v;
        if (ld_int(o, i, &v) < 0) return -1;
        r->timer_order[i] = (int8_t)v;
    }
    r->ntimer_order = (uint32_t)n;
    if (!(o = PyDict_GetItemString(spec, "final_ack_hold_ns"))) goto missing;
    r->final_ack_hold_ns = PyLong_AsLongLong(o);
    if (r->final_ack_hold_ns == -1 && PyErr_Occurred()) return -1;
    if (!(o = PyDict_GetItemString(spec, "id_skips_max"))) goto missing;
    r->id_skips_max = PyLong_AsLongLong(o);
    if (r->id_skips_max == -1 && PyErr_Occurred()) return -1;
    return ld_describe(r, spec);
missing:
    PyErr_SetString(PyExc_KeyError, "rules: a part is missing");
    return -1;
}

/* Segment.describe(): {"flags": [(name, bit), ...], "none": text, "numbers": [(value, need, nonzero, label), ...]} */
static int ld_describe(rules_t *r, PyObject *spec) {
    PyObject *d = PyDict_GetItemString(spec, "describe"), *o;
    if (!d || !PyDict_Check(d)) goto missing;
    if (!(o = PyDict_GetItemString(d, "flags"))) goto missing;
    Py_ssize_t n = PySequence_Size(o);
    if (n < 0) return -1;
    if (n > 8) { PyErr_SetString(PyExc_ValueError, "rules: describe names more than 8 flags"); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_GetItem(o, i), *name = t ? PySequence_GetItem(t, 0) : NULL;
        int64_t bit = 0;
        int bad = !name || ld_int(t, 1, &bit) < 0 || !(r->flag_name[i] = ld_strdup(name));
        Py_XDECREF(name); Py_XDECREF(t);
        if (bad) return -1;
        r->flag_bit[i] = (uint8_t)bit;
        r->nflags = (uint32_t)i + 1;
    }
    if (!(o = PyDict_GetItemString(d, "none"))) goto missing;
    if (!(r->no_flags = ld_strdup(o))) return -1;
    if (!(o = PyDict_GetItemString(d, "numbers"))) goto missing;
    n = PySequence_Size(o);
    if (n < 0) return -1;
    if (n > 4) { PyErr_SetString(PyExc_ValueError, "rules: describe names more than 4 numbers"); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_GetItem(o, i), *label = t ? PySequence_GetItem(t, 3) : NULL;
        int64_t v[3] = {0, 0, 0};
        int bad = !label;
        for (int k = 0; k < 3 && !bad; k++) bad = ld_int(t, k, &v[k]) < 0;
        if (!bad && !(v[0] == V_SEQ || v[0] == V_ACK || v[0] == V_LEN || v[0] == V_END || v[0] == V_FIN
                      || v[0] == V_WIN)) {
            PyErr_SetString(PyExc_ValueError, "rules: describe names a number that is not the segment's own");
            bad = 1;
        }
        if (!bad) bad = !(r->dnum[i].label = ld_strdup(label));
        Py_XDECREF(label); Py_XDECREF(t);
        if (bad) return -1;
        r->dnum[i].name = (int8_t)v[0];
        r->dnum[i].need = (uint8_t)v[1];
        r->dnum[i].nonzero = (uint8_t)(v[2] != 0);
        r->ndnum = (uint32_t)i + 1;
    }
    return 0;
missing:
    PyErr_SetString(PyExc_KeyError, "rules: a part is missing");
    return -1;
}

/* ------------------------------------------------------------------ preparing the rows for speed
 * Only what holds for every row whatever its state or program: a test of the segment's flags becomes
 * a mask checked before the predicates; a predicate that is constant in an observer (the lane sends
 * nothing, arms no retransmission timer) is decided once; a row that can never hold is dropped, and
 * so is a step whose every row does nothing the lane can see (sends, snd_wnd). The rows' order, and
 * so which row is first to hold, is kept. */

enum { K_UNKNOWN = -1, K_FALSE = 0, K_TRUE = 1 };

static int pred_constant(const rules_t *r, const pred_t *p) {
    int v = K_UNKNOWN;
    if (p->code == P_CONFIG && p->a[0] == CF_OBSERVER) v = K_TRUE;
    else if (p->code == P_CONFIG && p->a[0] == CF_CLOSE_ON_FIN) v = K_FALSE;
    /* an observer never knows that an application closed or shut reading */
    else if (p->code == P_RD_SHUT) v = K_FALSE;
    else if (p->code == P_TIMER && p->a[0] >= 0 && p->a[0] < NTIMER && p->a[0] != T_2MSL_DUE) v = K_FALSE;
    /* a SYN,ACK the capture lacks: the lane hands such a connection over before it could be one */
    else if (p->code == P_CONN && p->a[0] == K_SYNACK_UNSEEN) v = K_FALSE;
    else if (p->code == P_ROLE && p->a[1] == R_SYNACK_UNSEEN) v = K_FALSE;
    if (v == K_UNKNOWN) return v;
    return p->neg ? !v : v;
}

/* which sides a program always has (the A and B of the situation): CLS_NONE none for sure (the conditions over a
   connection, END), CLS_SELF an endpoint's programs (A: self), CLS_TXRX a segment's (A: tx, B: rx), CLS_X and CLS_XH
   what is held for x (A: x; XH: the held segment h too) */
enum { CLS_NONE, CLS_SELF, CLS_TXRX, CLS_X, CLS_XH };
static int prep_cls = CLS_NONE;     /* the class of the program being prepared */

static int prog_cls(int prog) {
    if (prog < PG_BIRTH) return CLS_SELF;           /* receive, send, timers */
    if (prog == PG_BIRTH || prog == PG_SEGMENT) return CLS_TXRX;
    if (prog == PG_FLUSH || prog == PG_FLUSH_AT_END) return CLS_XH;
    if (prog == PG_RST_HELD) return CLS_X;
    return CLS_NONE;
}

/* 0: the side A of the situation, 1: B, -1: neither (or not sure to exist in this class) */
static int sit_side(int who) {
    switch (prep_cls) {
    case CLS_SELF: return who == W_SELF ? 0 : -1;
    case CLS_TXRX: return who == W_TX ? 0 : who == W_RX ? 1 : -1;
    case CLS_X: case CLS_XH: return who == W_X ? 0 : -1;
    default: return -1;
    }
}

/* the bit of the situation that is this predicate, if one is */
static sit_t sit_bit(const pred_t *p) {
    if (p->code == P_CONN) {
        switch (p->a[0]) {
        case K_HELD: return SIT_HELD;
        case K_FINAL: return SIT_FINAL;
        case K_FINS: return SIT_FINS;
        case K_MID_STREAM: return SIT_MID;
        default: return 0;
        }
    }
    if (p->code == P_HELD && (p->a[1] == W_TX || p->a[1] == W_RX))
        return p->a[0] ? (p->a[1] == W_TX ? SIT_FINAL_TX : SIT_FINAL_RX) : (p->a[1] == W_TX ? SIT_HELD_TX : SIT_HELD_RX);
    if (p->code == P_DATA) return SIT_DATA;
    if (p->code == P_MARK && p->a[0] > 0 && (uint32_t)p->a[0] <= SIT_MARKS_MASK)
        return (sit_t)(uint32_t)p->a[0] << SIT_MARKS;
    if (p->code == P_DUP_ACK && prep_cls == CLS_TXRX) return SIT_DUP_ACK;
    if (prep_cls == CLS_XH && p->code == P_HELD_FLAG && p->a[0] == W_H && p->a[1] == F_SYN) return SIT_H_SYN;
    if (prep_cls == CLS_XH && p->code == P_CROSSED && p->a[0] == W_H) return SIT_H_CROSSED;
    if (p->code == P_ROLE && (p->a[1] == R_RESENT || p->a[1] == R_HOLE)) {
        int k = sit_side(p->a[0]);
        if (k < 0) return 0;
        return p->a[1] == R_RESENT ? (k ? SIT_RESENT_B : SIT_RESENT_A) : (k ? SIT_HOLE_B : SIT_HOLE_A);
    }
    if (p->code == P_WAITING && (p->a[0] == WT_RST || p->a[0] == WT_QUEUE || p->a[0] == WT_AHEAD)) {
        int k = sit_side(p->a[1]);
        if (k < 0) return 0;
        return p->a[0] == WT_RST ? (k ? SIT_RST_B : SIT_RST_A) : p->a[0] == WT_QUEUE ? (k ? SIT_QUEUE_B : SIT_QUEUE_A)
                                                                                    : (k ? SIT_AHEAD_B : SIT_AHEAD_A);
    }
    if (p->code == P_ISSET && p->a[0] >= 0 && (uint32_t)p->a[0] < RULES_PREP->nvals) {
        const val_t *v = &RULES_PREP->vals[p->a[0]];
        if (v->name != V_FIN_SEQ && v->name != V_PEER_FIN_SEQ) return 0;
        int k = sit_side(v->who);
        if (k < 0) return 0;
        return v->name == V_FIN_SEQ ? (k ? SIT_FIN_B : SIT_FIN_A) : (k ? SIT_PFIN_B : SIT_PFIN_A);
    }
    return 0;
}

/* a state test of the endpoint the program runs for (self or tx), or of rx: the state bits of the
   situation (a test of one state is one bit; a negated test forbids them all) */
static int state_bits(const pred_t *p, sit_t *bits) {
    if (p->code != P_STATE) return 0;
    int shift;
    if (prep_cls == CLS_X || prep_cls == CLS_XH) shift = p->a[0] == W_X ? SIT_STATE_A : -1;    /* A is x there */
    else shift = p->a[0] == W_SELF || p->a[0] == W_TX ? SIT_STATE_A : p->a[0] == W_RX ? SIT_STATE_B : -1;
    if (shift < 0) return 0;
    uint32_t mask = (uint32_t)p->a[1] & ((1u << NST) - 1);
    if (!p->neg && (mask & (mask - 1))) return 0;        /* one of several states: a predicate still */
    *bits = (sit_t)mask << shift;
    return 1;
}

/* fold flags, connection facts and constants into a row's masks; 0 when the row can never hold */
static int prepare_preds(rules_t *r, uint32_t p0, uint32_t *np, sit_t *need, sit_t *forbid) {
    uint32_t k = 0;
    *need = *forbid = 0;
    for (uint32_t i = 0; i < *np; i++) {
        pred_t p = r->preds[p0 + i];
        int c = pred_constant(r, &p);
        if (c == K_FALSE) return 0;
        if (c == K_TRUE) continue;
        if (p.code == P_FLAG && !(p.a[0] & (SIT_DATA | SIT_UNKNOWN))) {
            if (p.neg) *forbid |= (sit_t)(uint32_t)p.a[0]; else *need |= (sit_t)(uint32_t)p.a[0];
            continue;
        }
        if (p.code == P_PURE_ACK && !p.neg) { *need |= F_ACK; *forbid |= F_FIN | F_SYN | F_RST; continue; }
        sit_t b = sit_bit(&p);
        if (b || state_bits(&p, &b)) { if (p.neg) *forbid |= b; else *need |= b; continue; }
        /* a side's rcv_nxt unknown: only while the connection has one unknown */
        if (p.code == P_ROLE && p.a[1] == R_KNOWN && p.neg) *need |= SIT_UNKNOWN;
        r->preds[p0 + k++] = p;
    }
    *np = k;
    return !(*need & *forbid);
}

static int act_visible(const act_t *a) {
    if (a->code == A_SEND || a->code == A_REMOTE || a->code == A_SYNCHRONIZED) return 0;
    if (a->code == A_SET && RULES_PREP->vals[a->a[0]].name == V_SND_WND) return 0;
    return 1;
}

/* what an action can change of the situation (interp.c's parts of it): CH_MARKS the call's marks, CH_CONN the
   connection's facts (FIN noted, mid-stream, known, what is held), CH_A / CH_B side A's / B's state and facts (B's
   with dup_ack, which reads rx's snd_una and snd_nxt). After a row the parts its actions may have changed are
   looked at again; none (still): the rows left to try are the same. */
enum { CH_MARKS = 1, CH_CONN = 2, CH_A = 4, CH_B = 8, CH_ALL = 15 };
static int ep_local;        /* every action of the endpoint programs changes only its own endpoint (prepare_rules) */

/* the sides of the situation a side named ``who`` may be, in the program class being prepared */
static int ch_side(int who) {
    int k = sit_side(who);
    if (k == 0) return CH_A;
    if (k == 1) return CH_B;
    if (prep_cls == CLS_SELF && (who == W_TX || who == W_RX || who == W_X)) return 0;   /* no such side there */
    return CH_A | CH_B;
}

/* a TCB field set on side ``who``: fin_seq and peer_fin_seq are side facts, snd_una and snd_nxt rx's dup_ack's */
static int ch_field(int who, int name) {
    if (name == V_FIN_SEQ || name == V_PEER_FIN_SEQ) return ch_side(who);
    if (name == V_SND_UNA || name == V_SND_NXT) return ch_side(who) & CH_B;
    return 0;
}

static int act_changes(const act_t *a) {
    switch (a->code) {
    case A_TAKE_DATA: case A_SERVER: case A_FLAG: case A_DROP_CANDIDATES:
    case A_CANDIDATE: case A_NOTE_RST: case A_EVIDENCE: case A_RTT:
    case A_INFER: case A_ANOMALY: case A_SYN_TIME: case A_REORDERED:
    case A_NOTE_PROMPT: case A_NOTE_FREED: case A_NOTE_ANSWER:
    case A_SEND: case A_REMOTE: case A_SYNCHRONIZED:
        return 0;
    case A_MARK: return CH_MARKS;
    case A_SET: return ch_field(RULES_PREP->vals[a->a[0]].who, RULES_PREP->vals[a->a[0]].name);
    case A_ACKED: return ch_field(W_SELF, V_SND_UNA);
    case A_MOVE: return prep_cls == CLS_SELF ? CH_A : CH_ALL;              /* self's state */
    case A_LISTENING: return ch_side(W_X);
    case A_OPEN: case A_KNOW: case A_NOTE_FIN: return CH_CONN;
    case A_NOTE_RESENT: case A_DROP_RESENT: case A_NOTE_HOLE: case A_DROP_HOLE: return ch_side(a->a[0]);
    case A_UNHOLD: case A_UNHOLD_FINAL: case A_HOLD_FINAL: case A_HOLD: case A_WAIT_BEHIND: case A_HOLD_RST:
        return CH_CONN | ch_side(a->a[0]);
    case A_UNHOLD_X: return CH_CONN | ch_side(W_X);
    /* an endpoint program run for one side: that side's state and fields, if that is all those programs change */
    case A_OBSERVE_SEND: return ep_local ? ch_side(W_TX) : CH_ALL;
    case A_DELIVER: case A_DELIVER_WITHOUT_FIN: case A_DELIVER_ACK_ONLY: return ep_local ? ch_side(W_RX) : CH_ALL;
    case A_DELIVER_QUEUE: case A_DELIVER_HELD: return ep_local ? ch_side(W_X) : CH_ALL;
    case A_DELIVER_FINAL: return ep_local ? CH_CONN | ch_side(a->a[0]) : CH_ALL;
    default: return CH_ALL;     /* flushes, pick-up, crossing...: anything */
    }
}

/* is every action of the endpoint programs (receive, send, timers) one that changes only that endpoint? */
static int endpoint_local(const rules_t *r) {
    for (int pi = 0; pi < PG_BIRTH; pi++)
        for (uint32_t si = 0; si < r->progs[pi].ns; si++) {
            const step_t *st = &r->steps[r->progs[pi].s0 + si];
            for (uint32_t ri = 0; ri < st->nr; ri++) {
                const row_t *rw = &r->rows[st->r0 + ri];
                for (uint32_t ai = 0; ai < rw->na; ai++) {
                    const act_t *a = &r->acts[rw->a0 + ai];
                    switch (a->code) {
                    case A_STOP: case A_MOVE: case A_ANOMALY: case A_MARK: case A_ACKED: case A_TAKE_DATA:
                    case A_SEND: case A_REMOTE: case A_SYNCHRONIZED:
                        break;
                    case A_SET:
                        if (r->vals[a->a[0]].who != W_SELF) return 0;
                        break;
                    default:
                        if (a->code >= 0 && a->code < NACT) return 0;   /* (one the lane lacks hands the connection over) */
                    }
                }
            }
        }
    return 1;
}

/* the pairs (state of side 0, state of side 1; bit s0 * NST + s1) in which a condition can hold: its tests of
   the states alone (some, all, a side's state) decide that, anything else may hold; a side named by its role
   (client, tx...) may be either. A connection in any other pair is not tested further (cond_holds). */
_Static_assert(NST * NST <= 128, "cond_t.pairs: a bit per pair of states");
static void cond_pairs(const rules_t *r, cond_t *cd) {
    cd->pairs[0] = cd->pairs[1] = 0;
    for (int s0 = 0; s0 < NST; s0++)
        for (int s1 = 0; s1 < NST; s1++) {
            uint32_t b0 = 1u << s0, b1 = 1u << s1;
            int may = 1;
            for (uint32_t i = 0; i < cd->np && may; i++) {
                const pred_t *p = &r->preds[cd->p0 + i];
                int v = -1;                     /* 1 holds, 0 does not, -1 cannot tell */
                if (p->code == P_SOME) v = ((b0 | b1) & (uint32_t)p->a[0]) != 0;
                else if (p->code == P_ALL) v = (b0 & (uint32_t)p->a[0]) && (b1 & (uint32_t)p->a[0]);
                else if (p->code == P_STATE && p->a[0] == W_A) v = (b0 & (uint32_t)p->a[1]) != 0;
                else if (p->code == P_STATE && p->a[0] == W_B) v = (b1 & (uint32_t)p->a[1]) != 0;
                else if (p->code == P_STATE && !p->neg && !((b0 | b1) & (uint32_t)p->a[1])) v = 0;  /* neither side */
                if (v >= 0 && p->neg && !(p->code == P_STATE && p->a[0] != W_A && p->a[0] != W_B)) v = !v;
                if (v == 0) may = 0;
            }
            if (may) cd->pairs[(s0 * NST + s1) >> 6] |= 1ull << ((s0 * NST + s1) & 63);
        }
}

/* a condition's predicates, after prepare_preds: those the pair of states decides (cond_pairs: some, all, a's or b's
   state) are dropped, as cond_holds tests the pair first; in a condition over the connection alone (CLS_NONE), a test
   of one of its flags becomes a bit of kneed or kforbid, tested before the predicates left. The callers of such a
   condition take a predicate the lane lacks (BAIL) as "no", so which is tested first does not matter there. */
static void prepare_cond(rules_t *r, cond_t *cd) {
    cond_pairs(r, cd);
    cd->kneed = cd->kforbid = 0;
    cd->obs = 3;
    if (!prepare_preds(r, cd->p0, &cd->np, &cd->need, &cd->forbid)) { cd->np = UINT32_MAX; return; }
    uint32_t k = 0;
    for (uint32_t i = 0; i < cd->np; i++) {
        pred_t p = r->preds[cd->p0 + i];
        if (p.code == P_SOME || p.code == P_ALL || (p.code == P_STATE && (p.a[0] == W_A || p.a[0] == W_B))) continue;
        if (prep_cls == CLS_NONE && p.code == P_CONN && p.a[0] >= 0 && p.a[0] < NCFLAG) {
            if (p.neg) cd->kforbid |= 1u << p.a[0]; else cd->kneed |= 1u << p.a[0];
            continue;
        }
        r->preds[cd->p0 + k++] = p;
    }
    cd->np = k;
    if (cd->kneed & cd->kforbid) cd->np = UINT32_MAX;
    sit_t m = (cd->need | cd->forbid) & SIT_OBS;
    cd->obs = (uint8_t)((m & (SIT_RESENT_A | SIT_HOLE_A | SIT_RST_A | SIT_QUEUE_A | SIT_AHEAD_A) ? 1 : 0)
                        | (m & (SIT_RESENT_B | SIT_HOLE_B | SIT_RST_B | SIT_QUEUE_B | SIT_AHEAD_B) ? 2 : 0));
}

static void prepare_rules(rules_t *r) {
    RULES_PREP = r;
    ep_local = endpoint_local(r);
    for (uint32_t i = 0; i < r->nvals; i++) {
        val_t *v = &r->vals[i];
        v->quick = Q_SLOW;
        if (v->who == W_SEG && v->name >= V_SEQ && v->name <= V_FIN) v->quick = (int8_t)(Q_SEQ + v->name - V_SEQ);
        if (v->who >= W_SELF && v->who <= W_B && v->name >= V_ISS && v->name <= V_RCV_NXT) v->quick = Q_TCB;
        if (v->who >= W_SELF && v->who <= W_B && v->name == V_FIN_SEQ) v->quick = Q_FIN_SEQ;
        if (v->who >= W_SELF && v->who <= W_B && v->name == V_PEER_FIN_SEQ) v->quick = Q_PEER_FIN_SEQ;
    }
    for (uint32_t i = 0; i < r->npreds; i++) {
        pred_t *p = &r->preds[i];
        if (p->code != P_CMP) continue;
        static const uint8_t OUTCOMES[NOP] = {2, 1, 4, 3, 6};      /* =, <, >, <=, >= */
        int quick = p->a[1] >= 0 && (uint32_t)p->a[1] < r->nvals && r->vals[p->a[1]].quick != Q_SLOW
                    && p->a[2] >= 0 && (uint32_t)p->a[2] < r->nvals && r->vals[p->a[2]].quick != Q_SLOW;
        if (p->a[0] < 0 || p->a[0] >= NOP) p->cmp = CMP_SLOW;
        else if (p->a[0] == OP_EQ && p->a[3] && !quick) p->cmp = CMP_EXACT;
        else p->cmp = (uint8_t)((p->neg ? ~OUTCOMES[p->a[0]] : OUTCOMES[p->a[0]]) & 7);
    }
    for (int pi = 0; pi < NPROG; pi++) {
        prog_t *pg = &r->progs[pi];
        uint32_t ks = 0;
        prep_cls = prog_cls(pi);
        for (uint32_t si = 0; si < pg->ns; si++) {
            step_t st = r->steps[pg->s0 + si];
            uint32_t kr = 0;
            int visible = 0;
            for (uint32_t ri = 0; ri < st.nr; ri++) {
                row_t rw = r->rows[st.r0 + ri];
                if (!prepare_preds(r, rw.p0, &rw.np, &rw.need, &rw.forbid)) continue;
                uint32_t ka = 0;                /* what the lane cannot see is not done at all */
                for (uint32_t ai = 0; ai < rw.na; ai++)
                    if (act_visible(&r->acts[rw.a0 + ai])) r->acts[rw.a0 + ka++] = r->acts[rw.a0 + ai];
                rw.na = ka;
                rw.chg = 0;
                for (uint32_t ai = 0; ai < ka; ai++) rw.chg |= (uint8_t)act_changes(&r->acts[rw.a0 + ai]);
                visible |= ka > 0;
                r->rows[st.r0 + kr++] = rw;
            }
            st.nr = kr;
            st.any = 0;                         /* every row needs one of these facts: without any, skip */
            for (uint32_t ri = 0; ri < kr; ri++) {
                sit_t need = r->rows[st.r0 + ri].need & ~(sit_t)0xFF;
                if (!need) { st.any = 0; break; }
                st.any |= need;
            }
            if (kr && visible) r->steps[pg->s0 + ks++] = st;
        }
        pg->ns = ks;
        r->obs[pi] = 0;
        for (uint32_t si = 0; si < ks; si++)
            for (uint32_t ri = 0; ri < r->steps[pg->s0 + si].nr; ri++) {
                const row_t *rw = &r->rows[r->steps[pg->s0 + si].r0 + ri];
                if ((rw->need | rw->forbid) & SIT_OBS) r->obs[pi] = 1;
            }
    }
    /* the plans */
    size_t cap = 0;
    for (int pi = 0; pi < NPROG; pi++)
        for (uint32_t si = 0; si < r->progs[pi].ns; si++) cap += 1 + r->steps[r->progs[pi].s0 + si].nr;
    r->plan = malloc((cap * 2 * 32 + 1) * sizeof(int32_t));
    if (r->plan) {
        for (int pi = 0; pi < NPROG; pi++)
            for (uint32_t k = 0; k < 32; k++) {
                r->plan_off[pi][k] = r->nplan;
                for (uint32_t si = 0; si < r->progs[pi].ns; si++) {
                    const step_t *st = &r->steps[r->progs[pi].s0 + si];
                    uint32_t head = r->nplan;
                    r->nplan += 2;
                    r->plan[head + 1] = (int32_t)(r->progs[pi].s0 + si);
                    int32_t n = 0;
                    for (uint32_t ri = 0; ri < st->nr; ri++) {
                        const row_t *rw = &r->rows[st->r0 + ri];
                        uint32_t need = (uint32_t)(rw->need & 0x1F), forbid = (uint32_t)(rw->forbid & 0x1F);
                        uint32_t f = (k & 0xF) | ((k & 0x10) ? F_ACK : 0);
                        if ((f & need) != need || (f & forbid)) continue;
                        r->plan[r->nplan++] = (int32_t)(st->r0 + ri);
                        n++;
                    }
                    if (n) r->plan[head] = -n; else r->nplan -= 2;
                }
                r->plan_len[pi][k] = r->nplan - r->plan_off[pi][k];
            }
    }
    prep_cls = CLS_TXRX;                /* fast_path and new_syn: a segment and its sides (cond_holds' tx) */
    prepare_cond(r, &r->fast_path);
    for (uint32_t i = 0; i < r->nnew_syn; i++) prepare_cond(r, &r->new_syn[i]);
    prep_cls = CLS_NONE;
    prepare_cond(r, &r->settled);
    prepare_cond(r, &r->time_wait_held);
    for (uint32_t i = 0; i < r->nclose; i++) prepare_cond(r, &r->close_cond[i]);
    for (uint32_t i = 0; i < r->nhalf_open; i++) prepare_cond(r, &r->half_open[i]);
    RULES_PREP = NULL;
}

/* ------------------------------------------------------------------ dispatch by situation
 * In one situation (the segment's flags and the connection's facts the rows' masks test: sit_t) a
 * program can reach the same rows every time: the plan's rows whose masks that situation fits, each
 * with its step's place in the plan. They are listed on first use and kept, keyed by (program,
 * situation), in a direct-mapped cache; a full pool starts the cache afresh. Which row holds, and what
 * it does, is still only in the rows: this spares testing masks the situation rules out. */
#define DC_SIZE 4096                /* entries (a power of 2) */
#define DC_POOL (1u << 19)          /* int32 triples (step place, row, next) for all the lists together */
typedef struct { sit_t t; int32_t prog; uint32_t off, n, nplace; } dc_ent_t;
static dc_ent_t DC[DC_SIZE];
static int32_t *DC_LIST;
static uint32_t DC_USED;
static uint32_t DC_GEN;             /* counts the resets: a list looked up before one is gone */

static void dispatch_reset(void) {
    for (uint32_t i = 0; i < DC_SIZE; i++) DC[i].prog = -1;
    DC_USED = 0;
    DC_GEN++;
}

static const int32_t *dispatch_make(dc_ent_t *d, int prog, sit_t t) {
    uint32_t k = (uint32_t)(t & 0x1F);      /* the plan's key: FIN, SYN, RST, PSH, ACK (sit_t's bits 0-4) */
    const int32_t *pl = RULES.plan + RULES.plan_off[prog][k], *end = pl + RULES.plan_len[prog][k];
    if (DC_USED + 4 * RULES.plan_len[prog][k] + 1 > 3 * DC_POOL) dispatch_reset();
    int32_t *out = DC_LIST + DC_USED;
    uint32_t m = 0;
    int32_t place = 0;
    for (; pl < end; place++) {
        int32_t n = -pl[0];
        const step_t *st = &RULES.steps[pl[1]];
        const int32_t *rows = pl + 2;
        pl += 2 + n;
        if (st->any && !(t & st->any)) continue;
        for (int32_t i = 0; i < n; i++) {
            const row_t *rw = &RULES.rows[rows[i]];
            if ((t & rw->need) != rw->need || (t & rw->forbid)) continue;
            out[3 * m] = place;
            out[3 * m + 1] = rows[i];
            m++;
        }
    }
    for (uint32_t i = m; i-- > 0;)         /* next: the first entry of a later step */
        out[3 * i + 2] = i + 1 < m && out[3 * i + 3] == out[3 * i] ? out[3 * i + 5] : (int32_t)(i + 1);
    int32_t *after = out + 3 * m;          /* after[p]: the first entry of a step later than place p */
    for (int32_t p = 0, i = 0; p < place; p++) {
        while ((uint32_t)i < m && out[3 * i] <= p) i++;
        after[p] = i;
    }
    d->t = t;
    d->prog = prog;
    d->off = DC_USED;
    d->n = m;
    d->nplace = (uint32_t)place;
    DC_USED += 3 * m + (uint32_t)place;
    return out;
}

/* the rows program prog can reach in situation t: n (place, row, next) triples, in the plan's order (next: the
   index of the first entry of a later step), then after[place] (the first entry of a step later than place) */
static inline const int32_t *dispatch(int prog, sit_t t, uint32_t *n, uint32_t *nplace) {
    uint64_t h = (t ^ ((uint64_t)prog << 58)) * 0x9E3779B97F4A7C15ull;
    dc_ent_t *d = &DC[h >> (64 - 12)];
    if (d->prog != prog || d->t != t) dispatch_make(d, prog, t);
    *n = d->n;
    *nplace = d->nplace;
    return DC_LIST + d->off;
}

static PyObject *set_rules(PyObject *self, PyObject *spec) {
    rules_t r;
    memset(&r, 0, sizeof r);
    if (load_rules(&r, spec) < 0) { rules_free(&r); return NULL; }
    prepare_rules(&r);
    if (!r.plan) { rules_free(&r); return PyErr_NoMemory(); }
    if (!DC_LIST && !(DC_LIST = malloc(3 * (size_t)DC_POOL * sizeof *DC_LIST))) { rules_free(&r); return PyErr_NoMemory(); }
    if (rules_set) rules_free(&RULES);
    RULES = r;
    rules_set = 1;
    dispatch_reset();
    Py_RETURN_NONE;
}

static PyObject *names_tuple(const char **names, int n) {
    PyObject *t = PyTuple_New(n);
    if (!t) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *s = PyUnicode_FromString(names[i]);
        if (!s) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, i, s);
    }
    return t;
}

/* vocabulary(): what the lane implements, by name (the encoder maps rawfin.core.machine's IR onto it) */
static PyObject *vocabulary(PyObject *self, PyObject *unused) {
    return Py_BuildValue("{s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N}",
                         "preds", names_tuple(PRED_NAMES, NPRED), "acts", names_tuple(ACT_NAMES, NACT),
                         "who", names_tuple(WHO_NAMES, NWHO), "values", names_tuple(VAL_NAMES, NVAL - 1),
                         "config", names_tuple(CONFIG_NAMES, NCONFIG), "conn", names_tuple(CFLAG_NAMES, NCFLAG),
                         "roles", names_tuple(ROLE_NAMES, NROLE), "timers", names_tuple(TIMER_NAMES, NTIMER),
                         "held_kinds", names_tuple(DH_NAMES, NDH), "ops", names_tuple(OP_NAMES, NOP),
                         "timer_order", names_tuple(TO_NAMES, NTO), "states", names_tuple(ST_NAME, NST),
                         "inputs", names_tuple(IN_NAME, NIN), "half_open_clocks", names_tuple(HCLOCK_NAMES, NHCLOCK),
                         "half_open_timeouts", names_tuple(HTIMEOUT_NAMES, NHTIMEOUT));
}

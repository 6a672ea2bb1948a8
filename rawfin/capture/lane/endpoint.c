/* rawfin._engine, part endpoint (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ what the endpoint rows need */

/* a segment's own numbers (seq, ack, end, len, fin, win: the values "quick" 1 names); 0 for any other name */
static inline int seg_number(const ev_t *s, int name, int64_t *n) {
    switch (name) {
    case V_SEQ: *n = s->seq; return 1;
    case V_ACK: *n = s->ack; return 1;
    case V_END: *n = seq_end(s); return 1;
    case V_LEN: *n = s->data_len; return 1;
    case V_FIN: *n = fin_seq_of(s); return 1;
    case V_WIN: *n = s->window; return 1;
    default: return 0;
    }
}

/* Segment.describe(): "FIN,ACK seq=1006 ack=2001 len=5", as rawfin/core/segment.py's DESCRIBE_FLAGS,
   DESCRIBE_NO_FLAGS and DESCRIBE_NUMBERS say (loaded with the rules: rules_t's flag_name, no_flags, dnum) */
static void describe(const ev_t *s, char *out, size_t n) {
    size_t k = 0;
    int any = 0;
    for (uint32_t i = 0; i < RULES.nflags; i++)
        if (s->flags & RULES.flag_bit[i]) {
            if (any && k < n - 1) out[k++] = ',';
            k = put_text(out, k, n, RULES.flag_name[i]);
            any = 1;
        }
    if (!any && RULES.no_flags) k = put_text(out, k, n, RULES.no_flags);
    for (uint32_t i = 0; i < RULES.ndnum; i++) {
        int64_t v = 0;
        if ((s->flags & RULES.dnum[i].need) != RULES.dnum[i].need) continue;
        seg_number(s, RULES.dnum[i].name, &v);
        if (!v && RULES.dnum[i].nonzero) continue;
        if (k < n - 1) out[k++] = ' ';
        k = put_text(out, k, n, RULES.dnum[i].label);
        if (k < n - 1) out[k++] = '=';
        k = put_int(out, k, n, v);
    }
    out[k] = 0;
}

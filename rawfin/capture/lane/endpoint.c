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

/* str(n) into buf at k (at most n_buf - 1 bytes in all); the new k. Two digits a step. */
static inline size_t put_int(char *buf, size_t k, size_t n_buf, int64_t v) {
    static const char D2[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                "8081828384858687888990919293949596979899";
    char tmp[24];
    int m = sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    while (u >= 100) {
        unsigned d = (unsigned)(u % 100);
        u /= 100;
        tmp[--m] = D2[2 * d + 1];
        tmp[--m] = D2[2 * d];
    }
    if (u >= 10) { tmp[--m] = D2[2 * u + 1]; tmp[--m] = D2[2 * u]; }
    else tmp[--m] = (char)('0' + u);
    if (v < 0) tmp[--m] = '-';
    size_t len = sizeof tmp - (size_t)m;
    if (len > n_buf - 1 - k) len = n_buf - 1 - k;
    memcpy(buf + k, tmp + m, len);
    return k + len;
}

static inline size_t put_text(char *buf, size_t k, size_t n_buf, const char *t) {
    while (*t && k < n_buf - 1) buf[k++] = *t++;
    return k;
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

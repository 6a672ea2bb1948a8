/* rawfin._engine, part seq (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ sequence space (rawfin/core/seq.py) */

static inline int64_t ssub(uint32_t a, uint32_t b) {
    uint32_t d = a - b;
    return d > 0x80000000u ? (int64_t)d - 0x100000000LL : (int64_t)d;
}
#define SLT(a, b) (ssub((a), (b)) < 0)
#define SLE(a, b) (ssub((a), (b)) <= 0)
#define SGT(a, b) (ssub((a), (b)) > 0)
#define SGE(a, b) (ssub((a), (b)) >= 0)
static inline int between(uint32_t lo, uint32_t x, uint32_t hi) { return (uint32_t)(x - lo) < (uint32_t)(hi - lo); }
static inline int between_incl(uint32_t lo, uint32_t x, uint32_t hi) {
    return (uint32_t)(x - lo) <= (uint32_t)(hi - lo);
}
static int acceptable(uint32_t seq, uint32_t seg_len, uint32_t rcv_nxt, uint32_t wnd) {
    if (seg_len == 0) {
        if (wnd == 0) return seq == rcv_nxt;
        return between(rcv_nxt, seq, rcv_nxt + wnd);
    }
    if (wnd == 0) return 0;
    uint32_t end = seq + seg_len - 1, hi = rcv_nxt + wnd;
    return between(rcv_nxt, seq, hi) || between(rcv_nxt, end, hi);
}
#define RCV_WND 65535u

/* rawfin._engine, part types (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ segments and events */

#define F_FIN 1
#define F_SYN 2
#define F_RST 4
#define F_ACK 16

typedef struct {
    int64_t time_ns;
    int64_t frame;          /* -1: none (a timer) */
    uint32_t seq, ack, data_len;
    uint16_t window;
    uint8_t flags;
    uint8_t kind;           /* events: 0/1 segment from side 0/1, 2 timer fire, 3 flush_all; | KIND_ID0 */
} ev_t;

/* ev_t.kind's high bit: an IPv4 segment whose IP ID is 0 (Linux's replies from a timewait or control socket, where
   its connected sockets count; Segment.ip_id == 0, rules' timewait_reply) */
#define KIND_ID0 0x80
/* ... and the next bit: rules' id_skip held for the segment (its IPv4 ID two past the highest its sender's earlier
   segments carried, conn_t.id_top; Connection.note_id), kept with it for the replay (Observer.adopt) */
#define KIND_IDSKIP 0x40
/* ... and: three to rules.ID_SKIPS_MAX past (rules' id_skips: two or more missing) */
#define KIND_IDSKIPS 0x20
#define KIND_OF(k) ((k) & 0x1F)

static inline uint32_t seg_len(const ev_t *s) { return s->data_len + ((s->flags & F_SYN) ? 1 : 0) + (s->flags & F_FIN); }
static inline uint32_t seq_end(const ev_t *s) { return s->seq + seg_len(s); }
static inline uint32_t fin_seq_of(const ev_t *s) { return s->seq + s->data_len + ((s->flags & F_SYN) ? 1 : 0); }

/* ------------------------------------------------------------------ connections */

typedef struct {
    uint32_t iss, irs, snd_una, snd_nxt, rcv_nxt, fin_seq, peer_fin_seq;
    int64_t time_wait_at;   /* -1: not armed */
    uint8_t state, has_fin, has_peer_fin, passive;
} cep_t;

typedef struct {
    uint8_t present, crossed, order;    /* (first: the two held for a pair of sides share a line) */
    uint8_t ahead;          /* a FIN ahead of a gap: data and FIN wait in the receiver's queue (hold_ahead) */
    uint8_t freed;          /* the FIN acknowledged data of its receiver's not acknowledged before (note_freed) */
    ev_t seg;
} held_t;

#define MAXCAND 4
#define MAXWAIT 3           /* segments waiting behind a held FIN, RSTs held, per side (more: Python's) */
#define MAXVLAN 2
#define KEY4 37             /* the 4-tuple part of a key */
#define KEYLEN 48           /* ... then the VLAN count and ids */
#define MAXANOM 6
#define MAXCLOSE 16         /* close kinds */

/* What every entry of the connection table starts with: the table, the timer heap and the
   activity list see no more of an entry than this, so a compact one (below) can stand in. */
#define CONN_HEAD \
    struct conn *next;      /* hash chain */ \
    uint8_t key[KEYLEN];    /* family, (addr, port) of both sides in canonical order, then the VLAN ids */ \
    uint32_t hash; \
    uint32_t slot;          /* where the timer heap notes its entry's place (Engine.hpos; -1 there: none) */ \
    int64_t id; \
    int64_t queued;         /* the deadline of its heap entry, -1: none */ \
    uint8_t python;         /* 1: a marker -- the Python observer owns this pair */ \
    uint8_t dead;           /* finished or handed over */ \
    uint8_t in_age;         /* in the engine's list by age (by_age) */ \
    uint8_t compact;        /* 1: a compact_t (a connection that has sent one SYN, nothing else) */ \
    uint8_t swap;           /* compact: its first sender is the key's second address */

typedef struct conn {
    CONN_HEAD
    /* What a segment reads and writes, in the lines after the head (every segment meets its connection cold: each line
       it touches is a miss). The rest below is for the teardown's rules, the output and the table's upkeep. */
    uint8_t fam;            /* 4 or 6 */
    uint8_t tw, seen;       /* tw: settled, as the Python observer's TimeWait form */
    uint8_t client;         /* the client's side: 0 when a SYN opened it, else guessed by port */
    uint8_t mid, known;     /* picked up mid-stream; whose rcv_nxt is known (bit 1: side 0, bit 2: side 1) */
    uint8_t nfins;
    uint8_t has_id;         /* side bits: id_top[side] is known */
    cep_t ep[2];
    uint16_t port[2];
    uint16_t id_top[2];     /* side -> the highest IPv4 ID its segments carried so far (rules' id_skip) */
    uint16_t reached;       /* the states either endpoint has entered (a bit per state) */
    uint8_t fin_side[2];
    uint8_t rst_seen;       /* 0, or the side that sent the first RST + 1 */
    uint8_t data_after_first_fin, first_fin_acked_alone, refused;
    uint8_t ncand;
    uint8_t unanswered;     /* side bits: that side's last news is data from the peer, it has sent nothing since */
    uint8_t resent;         /* side bits: that side has sent data again that its peer already had (rules' resent) */
    uint8_t hole;           /* side bits: that side's duplicate ACK showed a hole in what it got (rules' hole) */
    uint8_t nwq[2], nrq[2]; /* (wq, rq below) */
    uint8_t has_rtt;        /* (rtt_ns below) */
    uint8_t has_copy;       /* (copy_fin below) */
    uint8_t has_answer;     /* (answer_ns below) */
    uint8_t hold_seq;       /* insertion order of pending and held_ack (below) */
    uint8_t timed_out, evicted;
    uint8_t nanom;          /* distinct anomaly kinds seen, and how many of each (anom_kind, anom_n below) */
    uint8_t based;          /* --seq relative: whose base is known (side bits); base: each side's (note_bases) */
    uint8_t ka;             /* side of key[1] */
    uint8_t named;          /* moves mode: its endpoints' names have been handed over (with its first move) */
    uint32_t fin_seqv[2];
    ev_t *log;
    uint32_t nlog, caplog;
    int64_t last_frame, last_ns, packets;
    uint8_t addr[2][16];    /* side 0: the first sender (the client: C connections open with a SYN) */
    held_t pending[2];      /* receiver side -> the FIN (or SYN) held for it */
    held_t held_ack[2];     /* sender side -> its final ACK, held for a retransmitted FIN */
    /* the teardown rules' clocks and queues */
    int64_t rtt_ns;         /* the handshake's round trip as the capture point saw it (rules' rtt), if has_rtt */
    int64_t trip_ns[2];     /* side -> the handshake's half that is a round trip to it, at most rtt_ns (rules' late:) */
    int64_t syn_ns;         /* the client's latest SYN: the round trip counts from it (rules' syn_time, Karn) */
    int64_t syn_at, synack_at;  /* rules.HALF_OPEN's clocks: the client's first SYN, the server's first SYN,ACK */
    int64_t copy_ns[2];     /* receiver side -> the first capture of the FIN held for it (rules' late:) ... */
    uint32_t copy_fin[2];   /* ... that FIN's sequence number, if has_copy has the side's bit */
    int64_t prompt_ns[2];   /* receiver side -> its pure ACK of that FIN, sent at once (note_prompt); -1: none */
    int64_t answer_ns[2];   /* side -> its pure ACK, sent at once, that delivered its peer's FIN (note_answer) ... */
    /* receiver side -> what its FIN's sender sent after the FIN held for it, waiting until the order in
       which the two reached it shows (rules.SEGMENT wait_behind); and the RSTs held for it until nothing
       shows them lost (hold_rst). Both as indices into the log, where those segments are. */
    uint32_t wq[2][MAXWAIT], rq[2][MAXWAIT];
    uint32_t base[2];
    /* the output's and the table's */
    int64_t first_frame, first_ns;
    int64_t fin_frame[2];
    const char *anom_kind[MAXANOM];
    uint32_t anom_n[MAXANOM];
    struct conn *age_prev, *age_next;   /* the engine's list by age (age_t), oldest first */
    struct conn *next4;     /* VLAN-tagged connections: the chain of the 4-tuple index */
    uint32_t hash4;
    uint8_t in4;            /* in that index (the 4-tuple's latest VLAN-tagged connection) */
    uint8_t nvlan;
    uint16_t vlan[MAXVLAN];
    PyObject *pykey;        /* markers: the Python observer's key, to sweep finished ones */
    uint8_t name_len[2];    /* strlen(name[side]) */
    uint8_t id_len;
    char id_text[24];       /* the text of id, once written (id_len 0: not yet) */
    char name[2][56];       /* "a.b.c.d:port" / "[v6]:port" */
} conn_t;

/* A connection whose whole history is one SYN (a SYN flood is a million of these): its table
   entry, its timer and the SYN (without --max-connections only: it has no place by activity). Whatever looks further (a segment
   of it, its timer firing, its eviction, the end of the capture) first makes it a conn_t again
   by replaying the SYN, as the lane first followed it (expand(), loop.c); it is the same
   connection, to the byte. */
typedef struct {
    CONN_HEAD
    ev_t syn;
} compact_t;

/* Connections by age, oldest first (conntable.c): with --max-connections, the lane's connections and the
   markers of Python's by activity (the least recently active is evicted first); without it, the last
   connections a SYN alone made, not compact yet (loop.c: compaction under pressure). */
typedef struct {
    conn_t *head, *tail;
    uint32_t n;
} age_t;

typedef struct {             /* (its deadline, the first key, is apart: Engine.hwhen, heap.c) */
    uint64_t order;         /* (the connection's id, the second key, is c->id: it never changes) */
    conn_t *c;
    uint32_t slot;          /* c->slot: the entry moves without a look at the connection's memory */
} hent_t;

/* two decimal digits at a time, for the writers below */
static const char D2[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                            "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                            "8081828384858687888990919293949596979899";

/* str(n) into buf at k (at most n_buf - 1 bytes in all); the new k. A number below 2**32 (all but a few) is counted
   first (its bit length * log10(2), then one test) and written in place, front to back: below 10**9 as a fixed-point
   fraction n / 10**(len - 1 or 2) * 2**57 whose top bits are its first digit or two, and times 100 the next two
   (exact: the rounding error, below 10**len / 2**57, stays under the 10**-(len - 2) the digits need, len <= 9);
   10 digits as two, then eight. Any other, two digits a step from the back. */
static const uint32_t P10_32[10] = {1u, 10u, 100u, 1000u, 10000u, 100000u, 1000000u, 10000000u, 100000000u, 1000000000u};
#define DIG_SHIFT 57
#define DIG_M(p) (((1ull << DIG_SHIFT) + (p) - 1) / (p))
static const uint64_t DIG_MUL[10] = {0, DIG_M(1ull), DIG_M(1ull), DIG_M(100ull), DIG_M(100ull), DIG_M(10000ull),
                                     DIG_M(10000ull), DIG_M(1000000ull), DIG_M(1000000ull), DIG_M(100000000ull)};
/* the len digits of n (below 10**len, len <= 9, leading zeros kept) at p; the end */
static inline __attribute__((always_inline)) char *put_digits(char *p, uint32_t n, int len) {
    uint64_t y = (uint64_t)n * DIG_MUL[len];
    if (len & 1) *p++ = (char)('0' + (y >> DIG_SHIFT));
    else { memcpy(p, D2 + 2 * (y >> DIG_SHIFT), 2); p += 2; }
#define DIG_PAIR do { y = (y & ((1ull << DIG_SHIFT) - 1)) * 100; memcpy(p, D2 + 2 * (y >> DIG_SHIFT), 2); p += 2; } while (0)
    switch ((len - 1) >> 1) {       /* the pairs after the first digit or two, unrolled */
    case 4: DIG_PAIR; /* fall through */
    case 3: DIG_PAIR; /* fall through */
    case 2: DIG_PAIR; /* fall through */
    case 1: DIG_PAIR; /* fall through */
    default: break;
    }
#undef DIG_PAIR
    return p;
}
/* the number of digits of w */
static inline __attribute__((always_inline)) int u32_digits(uint32_t w) {
    int t = ((32 - __builtin_clz(w | 1)) * 1233) >> 12;
    return t + ((w | 1) >= P10_32[t]);
}
/* w's digits at p (room for 10 there); the end */
static inline __attribute__((always_inline)) char *put_u32(char *p, uint32_t w) {
    int nd = u32_digits(w);
    if (nd < 10) return put_digits(p, w, nd);
    uint32_t hi = w / 100000000u;
    memcpy(p, D2 + 2 * hi, 2);
    return put_digits(p + 2, w - hi * 100000000u, 8);
}
static inline size_t put_int(char *buf, size_t k, size_t n_buf, int64_t v) {
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    if (u <= UINT32_MAX) {
        uint32_t w = (uint32_t)u;
        size_t len = (size_t)u32_digits(w) + (v < 0);
        if (len <= n_buf - 1 - k) {
            char *p = buf + k;
            if (v < 0) *p++ = '-';
            put_u32(p, w);
            return k + len;
        }
    }
    char tmp[24];
    int m = sizeof tmp;
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

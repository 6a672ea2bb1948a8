/* rawfin._engine, part engine (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ the engine object */

#define MAXLK 8          /* anomaly kinds that are evidence */
#define MAXEVID 16       /* evidence one call may note */
#define TRIP_SUB 8       /* round-trip buckets per octave (rawfin.core.delays.SUB) */
#define TRIP_BUCKETS (61 * TRIP_SUB)   /* rawfin.core.delays.NBUCKETS */

typedef struct {
    PyObject_HEAD
    /* configuration */
    int64_t msl_ns, hold_ns, linger_ns;
    int64_t timeout_ns[2];  /* rules.HALF_OPEN's timeouts, by HT_* (rules.c; 0: never) */
    int64_t max_conns;      /* --max-connections (0: no limit) */
    int relative;           /* --seq relative: texts show sequence numbers relative to each side's base */
    /* the hand-off: the Python side's callables (rawfin/capture/engine.py Handback), all the lane calls */
    PyObject *cb_feed, *cb_expire_one, *cb_take, *cb_fire, *cb_decode, *cb_has_pair, *cb_key_of, *cb_active,
             *cb_end_conns, *cb_end_prepare, *cb_end_finish, *cb_end_clear, *cb_tracked, *cb_evict, *cb_evict_taken,
             *cb_reprieve;
    /* the pair of the segment being taken: its own expiry does not give it up (rules.HALF_OPEN) */
    int reprieve_on;
    uint32_t reprieve_hash;
    uint8_t reprieve_key[KEYLEN];
    PyObject *dumps;        /* a Python-side event -> its JSON line (the output layer's) */
    PyObject *emit;         /* events mode: a list of records -> None (else NULL: JSON lines through write) */
    int moves;              /* events mode, moves only: a transition as (conn, time_ns, side, from, to, names or
                               None), state codes as names() gives them; no anomaly (rawfin.capture.engine.run) */
    PyObject *write;        /* bytes -> None */
    PyObject *fmt6;         /* 16 bytes -> IPv6 text as rawfin prints it */
    PyObject *make_seg;     /* rawfin.wire.decode.make_segment */
    int64_t py_timer_when, py_timer_id;   /* the Python observer's first timer, as its last answer said (-1: none) */
    char file_suffix[1024]; /* ',"file":"..."' or empty */
    size_t file_suffix_len;
    int64_t tc_us;          /* out_time's last time (whole microseconds) and its text: a segment's records share it */
    char tc_text[32];
    size_t tc_len;
    int64_t ts_sec;         /* ... and the whole seconds of the last new one, and their text */
    char ts_text[24];
    size_t ts_len;
    char msl_text[32];      /* 2 MSL in seconds, as the templates print it */
    /* state */
    conn_t **buckets;
    uint32_t nbuckets, nconns;
    uint64_t table_gen;     /* counts the changes of the table (put, del, swap): a look-up before the same count holds */
    conn_t **buckets4;      /* VLAN-tagged connections by 4-tuple: Observer.by_tuple */
    int vlan_seen;          /* a VLAN-tagged segment has come: a new pair may be another view's copy */
    hent_t *heap;
    int64_t *hwhen, *hwhen_mem; /* the entries' deadlines (heap.c HW: aligned to a cache line), the block they are in */
    uint32_t nheap, capheap;
    /* each entry's place in the heap, by the entry's slot (kept with its memory): apart from the entries, so that
       moving heap entries writes this array, not a line of each connection's, far apart, a level */
    int32_t *hpos;
    uint32_t nslots, capslots;
    uint32_t *slot_free;    /* the slots of entries whose memory is freed (compact ones) */
    uint32_t nslot_free;
    uint64_t order;
    int64_t next_id, now, frames, tcp, first_time, done, py_calls, handoffs;
    int have_first;
    int64_t by_close[MAXCLOSE];
    int64_t server_active;
    /* output */
    char *out;              /* text: the inside of outb; events mode: a malloc'd array of object pointers */
    size_t nout, capout;
    PyObject *outb;         /* text: the bytes object out_flush hands to write(), written in place (no copy) */
    /* one endpoint call's anomalies: a Result lists its transitions first, then its anomalies */
    char *aout;
    size_t naout, capaout;
    /* the transitions one segment made: a bit per input, per state it left (the rules' took:) */
    uint32_t took[NST];
    conn_t *free_list;
    /* the key of the frame being taken, made ahead (decode.c look_ahead), and its hash; NULL: none, make it */
    const uint8_t *pre;
    uint32_t pre_h;
    /* --max-connections: the lane's connections and the markers of Python's, by activity */
    uint32_t nlane, nmarkers;
    age_t by_age;           /* by activity with --max-connections, else the last SYN-alone connections */
    int64_t compact_after, compacted;   /* compaction under pressure (loop.c) */
    /* --filter */
    filter_t filter;
    int64_t filtered;
    /* where segments get lost (rules.LOSS_EVIDENCE, the rules' "evidence" action): noted during a call, handed
       to the Python side (Handback.evidence) when the call stands, dropped when it hands over */
    PyObject *cb_evidence;
    int nlk;
    char lk_kind[MAXLK][48];
    uint8_t lk_down[MAXLK], lk_local[MAXLK];
    int nevid;
    /* the capture cannot decide the next transition written (the rules' "infer"): the states the other
       reading enters (-1: none) and when it holds; used by the first transition of the delivery it precedes */
    int inf_alt[2];
    uint8_t inf_on;
    char inf_text[512];
    struct { char host[64]; uint8_t down; } evid[MAXEVID];
    /* round trips from the capture point (rules' rtt action; rawfin.core.delays): noted during a call, counted
       when it stands (dropped when it hands over), taken by the Python side before it reads them (take_trips) */
    int ntrip;
    struct { uint8_t side; uint16_t b; } trip_note[2];
    uint32_t trips[2][TRIP_BUCKETS];
    int nreo;                   /* holes filled with nothing sent again (rules' reordered): this call's, and counted */
    int64_t reordered;
    uint8_t reorder_seen;       /* ... any, since the start (reordered starts again when Python takes it) */
    uint8_t ever_python;        /* a connection of this capture has been the Python observer's */
    int32_t ipid;               /* the segment being taken: its IPv4 ID, -1 for none (IPv6) */
} Engine;


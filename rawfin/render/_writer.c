/*
 * rawfin.render._writer: the table, --summary and csv sinks of rawfin/render/sinks.py, in C.
 *
 * It reads records as JSON lines (the record contract, README "JSON lines": what the
 * compiled lane writes, and what rawfin.render.records.to_json makes of the reference's
 * records) and writes the same characters as the Python sinks, so the formats other than
 * JSON lines run at the lane's speed.  Everything it says comes from Python at start
 * (rawfin.render.sinks.layout(): the columns, headers and words); the layout rules are
 * rawfin/render/tables.py's, written again here.  tests/test_writers.py compares the two.
 *
 * Memory: csv and JSON lines keep nothing; the table keeps each connection's transitions
 * (packed) and the first few anomalies of each kind until the connection's record comes;
 * --summary keeps its first batch of rows, to align the columns on them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

/* ------------------------------------------------------------------ errors, without the GIL */

/* The writer formats without holding the GIL (feed lets other threads run, the lane among
   them): what goes wrong is noted here, per thread, and raised once the GIL is back.
   NULL with a failure means memory ran out. */
static __thread const char *werr_msg;
static __thread char werr_line[240];

static void werr_set(const char *msg) { werr_msg = msg; }

static void werr_raise(void) {
    if (werr_msg) PyErr_SetString(PyExc_ValueError, werr_msg);
    else PyErr_NoMemory();
    werr_msg = NULL;
}

/* ------------------------------------------------------------------ growable buffers */

typedef struct { char *p; size_t n, cap; } buf_t;

static int bgrow(buf_t *b, size_t more) {
    if (b->n + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) { werr_set(NULL); return -1; }
    b->p = q;
    b->cap = cap;
    return 0;
}
static int bput(buf_t *b, const char *s, size_t n) {
    if (bgrow(b, n) < 0) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}
static int bputs(buf_t *b, const char *s) { return bput(b, s, strlen(s)); }
static int bputc(buf_t *b, char c) {
    if (bgrow(b, 1) < 0) return -1;
    b->p[b->n++] = c;
    return 0;
}
static int bspaces(buf_t *b, size_t k) {
    if (bgrow(b, k) < 0) return -1;
    memset(b->p + b->n, ' ', k);
    b->n += k;
    return 0;
}
static int bint(buf_t *b, long long v) {
    char tmp[24];
    int n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
    if (bgrow(b, (size_t)n + 1) < 0) return -1;
    if (v < 0) b->p[b->n++] = '-';
    while (n) b->p[b->n++] = tmp[--n];
    return 0;
}
static void bfree(buf_t *b) { free(b->p); b->p = NULL; b->n = b->cap = 0; }

/* f"{x:.6f}": the exact binary value of x, rounded half to even at the sixth decimal, as both
   Python's float formatting and glibc's printf do (without printf's multi-precision path) */
static int fmt6(char *buf, double x) {
    if (!isfinite(x) || fabs(x) >= 1e12) return snprintf(buf, 400, "%.6f", x);   /* buf: 400 bytes */
    int neg = signbit(x) != 0, e;
    double fr = frexp(fabs(x), &e);
    uint64_t m = (uint64_t)ldexp(fr, 53), q;
    e -= 53;                                /* |x| = m * 2**e exactly */
    unsigned __int128 v = (unsigned __int128)m * 1000000u;
    if (e >= 0) {
        q = (uint64_t)(v << e);
    } else if (e <= -120) {
        q = 0;                              /* far below half a millionth */
    } else {
        int sh = -e;
        q = (uint64_t)(v >> sh);
        unsigned __int128 rem = v & ((((unsigned __int128)1) << sh) - 1), half = ((unsigned __int128)1) << (sh - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
    }
    char tmp[32];
    int n = 0;
    uint64_t ip = q / 1000000u, fp = q % 1000000u;
    for (int i = 0; i < 6; i++) { tmp[n++] = (char)('0' + fp % 10); fp /= 10; }
    tmp[n++] = '.';
    do { tmp[n++] = (char)('0' + ip % 10); ip /= 10; } while (ip);
    int k = 0;
    if (neg) buf[k++] = '-';
    while (n) buf[k++] = tmp[--n];
    buf[k] = 0;
    return k;
}

/* ------------------------------------------------------------------ UTF-8: widths are code points */

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static size_t cps(const char *s, size_t n) {
    size_t cont = 0, i = 0;                 /* the continuation bytes (10xxxxxx), eight at a time */
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, s + i, 8);
        cont += (size_t)((((v & ~(v << 1) & HIGHS) >> 7) * ONES) >> 56);
    }
    for (; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) == 0x80) cont++;
    return n - cont;
}

/* the bytes of the first k code points of s */
static size_t cp_bytes(const char *s, size_t n, size_t k) {
    size_t i = 0;
    while (i < n && k) {
        i++;
        while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
        k--;
    }
    return i;
}

/* ------------------------------------------------------------------ JSON: one record at a time */

enum { J_NONE, J_STR, J_NUM, J_TRUE, J_FALSE, J_NULL, J_OBJ, J_ARR };
typedef struct { const char *k; size_t kl; int t; const char *v; size_t vl; } jf_t;
#define MAXF 48

/* the record fields the writer reads, found once per record (the last of a repeated key, as a dict) */
enum { K_TYPE, K_FILE, K_CONN, K_FRAME, K_TIME, K_ENDPOINT, K_FROM, K_TO, K_CAUSE, K_KIND, K_DETAIL, K_CLIENT,
       K_SERVER, K_SERVER_GUESSED, K_ACTIVE_CLOSER, K_CLOSE, K_FINAL, K_MID_STREAM, K_SERVER_ACTIVE_CLOSE,
       K_ANOMALIES, K_VLAN, K_INFERRED, K_RESET_BY, K_PEER, K_PASSIVE_CLOSER, K_FIRST_FRAME, K_LAST_FRAME,
       K_FIRST_TIME, K_LAST_TIME, K_PACKETS, NK };
static const char *KEY_NAMES[NK] = {"type", "file", "conn", "frame", "time", "endpoint", "from", "to", "cause",
                                     "kind", "detail", "client", "server", "server_guessed", "active_closer",
                                     "close", "final", "mid_stream", "server_active_close", "anomalies", "vlan",
                                     "inferred", "reset_by", "peer", "passive_closer", "first_frame", "last_frame",
                                     "first_time", "last_time", "packets"};
static size_t KEY_LEN[NK];
static int8_t KEY_AT[32][128];      /* (length, first character) -> the first candidate, -1: none */
static int8_t KEY_NEXT[NK];         /* -> the next candidate with the same length and first character */

/* the quoted keys ("type", ...) eight bytes at a time, zero-padded: for key_is */
static uint64_t KEY_Q[NK][4];

static void keys_init(void) {
    memset(KEY_AT, -1, sizeof KEY_AT);
    memset(KEY_Q, 0, sizeof KEY_Q);
    for (int i = NK - 1; i >= 0; i--) {
        KEY_LEN[i] = strlen(KEY_NAMES[i]);
        char q[32] = {0};
        q[0] = '"';
        memcpy(q + 1, KEY_NAMES[i], KEY_LEN[i]);
        q[KEY_LEN[i] + 1] = '"';
        memcpy(KEY_Q[i], q, sizeof KEY_Q[i]);
        int8_t *head = &KEY_AT[KEY_LEN[i]][(unsigned char)KEY_NAMES[i][0]];
        KEY_NEXT[i] = *head;
        *head = (int8_t)i;
    }
}

/* is the quoted key at p (its opening quote) KEY_NAMES[id]? */
static inline int key_is(const char *p, const char *e, int id) {
    size_t n = KEY_LEN[id] + 2, i = 0;
    if ((size_t)(e - p) < n + 8) {          /* near the end of the line: byte by byte */
        if ((size_t)(e - p) < n || p[n - 1] != '"') return 0;
        return !memcmp(p + 1, KEY_NAMES[id], n - 2);
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        if (v != KEY_Q[id][i >> 3]) return 0;
    }
    if (i < n) {
        uint64_t v;
        memcpy(&v, p + i, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        v &= ~0ULL >> (64 - 8 * (n - i));
#else
        v &= ~0ULL << (64 - 8 * (n - i));
#endif
        if (v != KEY_Q[id][i >> 3]) return 0;
    }
    return 1;
}

static inline int key_id(const char *k, size_t n) {
    if (n >= 32 || (unsigned char)k[0] >= 128) return -1;
    for (int i = KEY_AT[n][(unsigned char)k[0]]; i >= 0; i = KEY_NEXT[i]) {
        const char *name = KEY_NAMES[i];
        size_t j = 1;
        while (j < n && k[j] == name[j]) j++;
        if (j == n) return i;
    }
    return -1;
}

typedef struct { jf_t f[MAXF]; int n; const jf_t *by[NK]; } jobj_t;

static inline const char *jws(const char *p, const char *e) {
    while (p < e && (unsigned char)*p <= ' ' && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static int hex4(const char *p, const char *e, unsigned *v) {
    if (e - p < 4) return -1;
    unsigned x = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        x <<= 4;
        if (c >= '0' && c <= '9') x |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') x |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') x |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *v = x;
    return 0;
}

static size_t utf8_put(char *d, unsigned cp) {
    if (cp < 0x80) { d[0] = (char)cp; return 1; }
    if (cp < 0x800) { d[0] = (char)(0xC0 | (cp >> 6)); d[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        d[0] = (char)(0xE0 | (cp >> 12)); d[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); d[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    d[0] = (char)(0xF0 | (cp >> 18)); d[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); d[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* a string's body at p (after its quote): *out is the text itself when it has no escape, else
   its decoding into d (never longer than the text); returns what follows the closing quote,
   NULL when it is not a JSON string */
static const char *jstr_escaped(const char *p, const char *e, char *d, const char **out, size_t *dn) {
    const char *q;
    size_t n = 0;
    *out = d;
    while (p < e) {
        q = p;                              /* the run with nothing to decode */
        while (q < e && *q != '"' && *q != '\\') q++;
        memcpy(d + n, p, (size_t)(q - p));
        n += (size_t)(q - p);
        p = q;
        if (p >= e) break;
        char c = *p++;
        if (c == '"') { *dn = n; return p; }
        if (p >= e) return NULL;
        c = *p++;
        switch (c) {
        case '"': d[n++] = '"'; break;
        case '\\': d[n++] = '\\'; break;
        case '/': d[n++] = '/'; break;
        case 'b': d[n++] = '\b'; break;
        case 'f': d[n++] = '\f'; break;
        case 'n': d[n++] = '\n'; break;
        case 'r': d[n++] = '\r'; break;
        case 't': d[n++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (hex4(p, e, &cp) < 0) return NULL;
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && e - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
                hex4(p + 2, e, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            n += utf8_put(d + n, cp);
            break;
        }
        default: return NULL;
        }
    }
    return NULL;
}

/* the first '"' or '\\' from q on (or e), eight bytes at a time */
static inline const char *scan_quote(const char *q, const char *e) {
    const uint64_t bq = ONES * '"', bb = ONES * '\\';
    while (e - q >= 8) {
        uint64_t v, x, y, t;
        memcpy(&v, q, 8);
        x = v ^ bq;
        y = v ^ bb;
        t = (((x - ONES) & ~x) | ((y - ONES) & ~y)) & HIGHS;
        if (t) {                            /* the lowest flag is exact (little-endian: the first byte) */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            return q + (__builtin_ctzll(t) >> 3);
#else
            break;
#endif
        }
        q += 8;
    }
    while (q < e && *q != '"' && *q != '\\') q++;
    return q;
}

static inline const char *jstr(const char *p, const char *e, char *d, const char **out, size_t *dn) {
    const char *q = scan_quote(p, e);
    if (q < e && *q == '"') {               /* nothing to decode: the text itself */
        *out = p;
        *dn = (size_t)(q - p);
        return q + 1;
    }
    return jstr_escaped(p, e, d, out, dn);
}

/* past a nested object or array at p */
static const char *jskip(const char *p, const char *e) {
    int depth = 0;
    while (p < e) {
        char c = *p++;
        if (c == '"') {
            for (;;) {
                p = scan_quote(p, e);
                if (p >= e) return NULL;
                if (*p == '"') break;
                p += 2;                     /* an escape: the character after the backslash */
            }
            p++;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth == 0) return p <= e ? p : NULL;
        }
    }
    return NULL;
}

/* Which key comes where: records of one type have their keys in one order, so the key at a
   position is most likely the key the last record of the type had there. A key that matches
   the guess costs one comparison; any other is read and the guess learnt. */
#define NSHAPE 4                            /* transition, anomaly, connection, anything else */
typedef struct { int8_t id[NSHAPE][MAXF]; } shapes_t;

static int shape_of(const jf_t *type) {
    if (!type || type->t != J_STR) return 3;
    if (type->vl == 10 && !memcmp(type->v, "transition", 10)) return 0;
    if (type->vl == 7 && !memcmp(type->v, "anomaly", 7)) return 1;
    if (type->vl == 10 && !memcmp(type->v, "connection", 10)) return 2;
    return 3;
}

/* one object's members (nested values as their text); strings with escapes are decoded into
   *scratch, which must have room for the whole text; sh: the shapes to guess keys from (or NULL) */
static int jparse(const char *p, const char *e, jobj_t *o, char *scratch, shapes_t *sh) {
    size_t sn = 0;
    int shape = -1;
    o->n = 0;
    memset(o->by, 0, sizeof o->by);
    p = jws(p, e);
    if (p >= e || *p != '{') return -1;
    p = jws(p + 1, e);
    if (p < e && *p == '}') return 0;
    for (;;) {
        p = jws(p, e);
        if (p >= e || *p != '"' || o->n == MAXF) return -1;
        int pos = o->n;
        jf_t *f = &o->f[o->n++];
        size_t kl;
        int id = -2, guess = (sh && shape >= 0) ? sh->id[shape][pos] : -1;
        if (guess >= 0) {
            size_t gl = KEY_LEN[guess];
            if (key_is(p, e, guess)) {
                f->k = p + 1;
                kl = gl;
                id = guess;
                p += gl + 2;
            }
        }
        if (id == -2) {
            if (!(p = jstr(p + 1, e, scratch + sn, &f->k, &kl))) return -1;
            if (f->k == scratch + sn) sn += kl;
            id = kl ? key_id(f->k, kl) : -1;
            if (sh && shape >= 0) sh->id[shape][pos] = (int8_t)id;
        }
        f->kl = kl;
        if (p < e && *p != ':') p = jws(p, e);
        if (p >= e || *p != ':') return -1;
        p++;
        if (p < e && (unsigned char)*p <= ' ') p = jws(p, e);
        if (p >= e) return -1;
        char c = *p;
        if (c == '"') {
            size_t vl;
            f->t = J_STR;
            if (!(p = jstr(p + 1, e, scratch + sn, &f->v, &vl))) return -1;
            f->vl = vl;
            if (f->v == scratch + sn) sn += vl;
        } else if (c == '{' || c == '[') {
            const char *q = jskip(p, e);
            if (!q) return -1;
            f->t = c == '{' ? J_OBJ : J_ARR;
            f->v = p;
            f->vl = (size_t)(q - p);
            p = q;
        } else if (c == 't' && e - p >= 4 && !memcmp(p, "true", 4)) {
            f->t = J_TRUE; f->v = p; f->vl = 4; p += 4;
        } else if (c == 'f' && e - p >= 5 && !memcmp(p, "false", 5)) {
            f->t = J_FALSE; f->v = p; f->vl = 5; p += 5;
        } else if (c == 'n' && e - p >= 4 && !memcmp(p, "null", 4)) {
            f->t = J_NULL; f->v = p; f->vl = 4; p += 4;
        } else {                            /* a number: -?digits[.digits][(e|E)[+-]digits] */
            const char *q = p;
            if (q < e && *q == '-') q++;
            for (;;) {                      /* digits eight at a time, then one by one */
                while (e - q >= 8) {
                    uint64_t v;
                    memcpy(&v, q, 8);
                    if ((v & 0xF0F0F0F0F0F0F0F0ULL) != 0x3030303030303030ULL ||
                        ((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) != 0x3030303030303030ULL)
                        break;
                    q += 8;
                }
                while (q < e && (unsigned)(*q - '0') < 10) q++;
                if (q < e && *q == '.') { q++; continue; }
                break;
            }
            if (q < e && (*q == 'e' || *q == 'E')) {
                q++;
                if (q < e && (*q == '+' || *q == '-')) q++;
                while (q < e && (unsigned)(*q - '0') < 10) q++;
            }
            if (q == p) return -1;
            f->t = J_NUM;
            f->v = p;
            f->vl = (size_t)(q - p);
            p = q;
        }
        if (id >= 0) o->by[id] = f;
        if (pos == 0 && sh) shape = shape_of(o->by[K_TYPE]);
        if (p < e && *p == ',') { p++; continue; }
        p = jws(p, e);
        if (p < e && *p == ',') { p++; continue; }
        if (p < e && *p == '}') return 0;
        return -1;
    }
}

#define JGET(o, K) ((o)->by[K])

/* Python's truth of a value, as rec.get(key) is tested */
static int jtruthy(const jf_t *f) {
    if (!f) return 0;
    switch (f->t) {
    case J_STR: return f->vl > 0;
    case J_TRUE: return 1;
    case J_NUM: return strtod(f->v, NULL) != 0.0;
    case J_OBJ: case J_ARR: {
        const char *p = jws(f->v + 1, f->v + f->vl);
        return p < f->v + f->vl && *p != '}' && *p != ']';
    }
    default: return 0;
    }
}

static int jeq(const jf_t *f, const jf_t *g) {
    return f && g && f->t == J_STR && g->t == J_STR && f->vl == g->vl && !memcmp(f->v, g->v, f->vl);
}

/* str() of a value as Python prints it in an f-string (strings as they are) */
static int bvalue(buf_t *b, const jf_t *f) {
    switch (f->t) {
    case J_TRUE: return bputs(b, "True");
    case J_FALSE: return bputs(b, "False");
    case J_NULL: return bputs(b, "None");
    default: return bput(b, f->v, f->vl);
    }
}

/* the members of a flat array of numbers or strings, in turn */
static const char *jnext_item(const char *p, const char *e, const char **s, size_t *n) {
    p = jws(p, e);
    if (p < e && (*p == ',' || *p == '[')) p = jws(p + 1, e);
    if (p >= e || *p == ']') return NULL;
    const char *q = p;
    if (*q == '"') {
        q++;
        while (q < e && *q != '"') { if (*q == '\\') q++; q++; }
        *s = p + 1;
        *n = (size_t)(q - p - 1);
        return q + 1;
    }
    while (q < e && *q != ',' && *q != ']' && *q != ' ') q++;
    *s = p;
    *n = (size_t)(q - p);
    return q;
}

/* ------------------------------------------------------------------ the words and columns from Python */

enum { P_ARROW, P_CLIENT, P_SERVER, P_BY_CLIENT, P_BY_SERVER, P_MID, P_GUESSED, P_CLOSE, P_SERVER_TW,
       P_NO_CHANGES, P_ANOMALIES, P_END, P_MORE, P_NO_CONN, P_GUESS_MARK, P_INF_MARK, P_INF_OPEN, P_INF_CLOSE,
       P_AFTER_FIN, P_AFTER_OWN_FIN, NPHR };
static const char *PHR_KEYS[NPHR] = {"arrow", "client", "server", "by_client", "by_server", "mid_stream",
                                      "guessed", "close", "server_tw", "no_changes", "anomalies", "end", "more",
                                      "no_conn", "guess_mark", "inferred_mark", "inferred_open", "inferred_close",
                                      "after_fin", "after_own_fin"};

typedef struct { char *s; size_t n, w; } str_t;

static int str_from(PyObject *o, str_t *s) {
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(o, &n);
    if (!u) return -1;
    s->s = malloc((size_t)n + 1);
    if (!s->s) { PyErr_NoMemory(); return -1; }
    memcpy(s->s, u, (size_t)n + 1);
    s->n = (size_t)n;
    s->w = cps(u, (size_t)n);
    return 0;
}

/* ------------------------------------------------------------------ laying out a table (rawfin/render/tables.py) */

typedef struct { const char *s; size_t n, w; } cell_t;

/* lines of wrapped text: offsets into one text buffer */
typedef struct { buf_t text; size_t *off, *len, *w; size_t n, cap; } lines_t;

static void lines_clear(lines_t *L) { L->text.n = 0; L->n = 0; }
static void lines_free(lines_t *L) { bfree(&L->text); free(L->off); free(L->len); free(L->w); memset(L, 0, sizeof *L); }

static int lines_add(lines_t *L, const char *pre, size_t pn, const char *s, size_t n) {
    if (L->n == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 8;
        size_t *a = realloc(L->off, cap * sizeof(size_t));
        if (!a) { werr_set(NULL); return -1; }
        L->off = a;
        a = realloc(L->len, cap * sizeof(size_t));
        if (!a) { werr_set(NULL); return -1; }
        L->len = a;
        a = realloc(L->w, cap * sizeof(size_t));
        if (!a) { werr_set(NULL); return -1; }
        L->w = a;
        L->cap = cap;
    }
    L->off[L->n] = L->text.n;
    if (bput(&L->text, pre, pn) < 0 || bput(&L->text, s, n) < 0) return -1;
    L->len[L->n] = pn + n;
    L->w[L->n] = cps(L->text.p + L->off[L->n], pn + n);
    L->n++;
    return 0;
}

static const char *CUT_AFTER = ":/.,;=_-";

/* tables.wrap(text, width, first, rest) */
static int wrap(lines_t *L, const char *s, size_t n, long width, const char *first, size_t fn,
                const char *rest, size_t rn) {
    size_t fw = cps(first, fn), rw = cps(rest, rn);
    lines_clear(L);
    if ((long)(fw + cps(s, n)) <= width) return lines_add(L, first, fn, s, n);
    buf_t line = {0};
    size_t lw = 0;                          /* the line's width */
    const char *pre = first;
    size_t pn = fn, pw = fw;
    const char *e = s + n, *p = s;
    int rc = -1;
    while (p < e) {
        while (p < e && *p == ' ') p++;
        if (p >= e) break;
        const char *q = p;
        while (q < e && *q != ' ') q++;
        const char *word = p;
        size_t wn = (size_t)(q - p), ww = cps(p, wn);
        p = q;
        long room = width - (long)pw;
        if (room < 1) room = 1;
        if (line.n && (long)(lw + 1 + ww) <= room) {
            if (bputc(&line, ' ') < 0 || bput(&line, word, wn) < 0) goto out;
            lw += 1 + ww;
            continue;
        }
        if (line.n) {
            if (lines_add(L, pre, pn, line.p, line.n) < 0) goto out;
            pre = rest; pn = rn; pw = rw;
            room = width - (long)pw;
            if (room < 1) room = 1;
        }
        while ((long)ww > room) {
            size_t cut = cp_bytes(word, wn, (size_t)room), cw = (size_t)room;
            /* after the last of CUT_AFTER that fits (they are ASCII: one byte, one code point) */
            for (size_t i = cut - 1, k = cw - 1; i > 0; i--) {
                unsigned char ch = (unsigned char)word[i];
                if ((ch & 0xC0) == 0x80) continue;
                if (ch && ch < 0x80 && strchr(CUT_AFTER, ch)) { cut = i + 1; cw = k + 1; break; }
                k--;
            }
            if (lines_add(L, pre, pn, word, cut) < 0) goto out;
            word += cut; wn -= cut; ww -= cw;
            pre = rest; pn = rn; pw = rw;
            room = width - (long)pw;
            if (room < 1) room = 1;
        }
        line.n = 0;
        if (bput(&line, word, wn) < 0) goto out;
        lw = ww;
    }
    if (lines_add(L, pre, pn, line.p ? line.p : "", line.n) < 0) goto out;
    rc = 0;
out:
    bfree(&line);
    return rc;
}

/* tables.fit; first: a bit per column that wraps first */
static void fit(int nc, size_t *w, const size_t *soft, const size_t *mins, long total, unsigned first,
                size_t floor) {
    long sum = 0;
    for (int i = 0; i < nc; i++) sum += (long)w[i];
    long excess = sum + 2L * (nc - 1) - total;
    for (int i = 0; i < nc && excess > 0; i++) {      /* the headers' padding first */
        long take = (long)(w[i] - soft[i]);
        if (take > excess) take = excess;
        if (take > 0) { w[i] -= (size_t)take; excess -= take; }
    }
    for (int pass = 0; pass < 2; pass++) {            /* the columns that wrap first, then all */
        unsigned cols = pass ? ~0u : first;
        size_t fl = pass ? 0 : floor;
        while (excess > 0) {
            int best = -1;
            for (int i = 0; i < nc; i++) {
                size_t lo = mins[i] > fl ? mins[i] : fl;
                if ((cols >> i & 1) && w[i] > lo && (best < 0 || w[i] >= w[best])) best = i;
            }
            if (best < 0) break;
            w[best]--;
            excess--;
        }
    }
}

#define MAXCOL 8

/* tables.Layout: the widths of a table from its headers and rows, fitted to a width */
static int layout(int nc, const str_t *hdr, const cell_t *cells, size_t nrows, long width, unsigned first,
                  size_t floor, size_t *widths, lines_t *L) {
    size_t mins[MAXCOL], soft[MAXCOL], nat[MAXCOL], fitted[MAXCOL];
    for (int i = 0; i < nc; i++) soft[i] = mins[i] = hdr[i].w;
    for (size_t r = 0; r < nrows; r++)
        for (int i = 0; i < nc; i++)
            if (cells[r * nc + i].w > soft[i]) soft[i] = cells[r * nc + i].w;
    for (int i = 0; i < nc; i++) nat[i] = soft[i] > hdr[i].w + 2 ? soft[i] : hdr[i].w + 2;
    memcpy(fitted, nat, sizeof nat);
    fit(nc, fitted, soft, mins, width, first, floor);
    for (int i = 0; i < nc; i++) widths[i] = hdr[i].w + 2 < fitted[i] ? hdr[i].w + 2 : fitted[i];
    for (size_t r = 0; r < nrows; r++)
        for (int i = 0; i < nc; i++) {
            const cell_t *c = &cells[r * nc + i];
            size_t need = c->w;
            if (need > fitted[i]) {
                if (wrap(L, c->s, c->n, (long)fitted[i], "", 0, "", 0) < 0) return -1;
                need = 0;
                for (size_t k = 0; k < L->n; k++)
                    if (L->w[k] > need) need = L->w[k];
            }
            if (need > widths[i]) widths[i] = need;
        }
    return 0;
}

static void rstrip_spaces(buf_t *b, size_t start) {
    while (b->n > start && b->p[b->n - 1] == ' ') b->n--;
}

static int emit_head(buf_t *o, int nc, const str_t *hdr, const size_t *widths) {
    size_t start = o->n;
    for (int i = 0; i < nc; i++) {
        if (i && bspaces(o, 2) < 0) return -1;
        if (bput(o, hdr[i].s, hdr[i].n) < 0 || bspaces(o, widths[i] > hdr[i].w ? widths[i] - hdr[i].w : 0) < 0)
            return -1;
    }
    rstrip_spaces(o, start);
    if (bputc(o, '\n') < 0) return -1;
    for (int i = 0; i < nc; i++) {
        if (i && bspaces(o, 2) < 0) return -1;
        if (bgrow(o, widths[i]) < 0) return -1;
        memset(o->p + o->n, '-', widths[i]);
        o->n += widths[i];
    }
    return bputc(o, '\n');
}

static int emit_row(buf_t *o, int nc, const cell_t *row, const size_t *widths, lines_t *wl) {
    int fits = 1;
    for (int i = 0; i < nc; i++)
        if (row[i].w > widths[i]) fits = 0;
    if (fits) {                             /* one line: room once, then the cells and their padding */
        size_t need = 1;
        for (int i = 0; i < nc; i++) need += row[i].n + widths[i] - row[i].w + 2;
        if (bgrow(o, need) < 0) return -1;
        char *d = o->p + o->n, *start = d;
        for (int i = 0; i < nc; i++) {
            memcpy(d, row[i].s, row[i].n);
            d += row[i].n;
            size_t pad = widths[i] - row[i].w + (i + 1 < nc ? 2 : 0);
            memset(d, ' ', pad);
            d += pad;
        }
        while (d > start && d[-1] == ' ') d--;
        *d++ = '\n';
        o->n = (size_t)(d - o->p);
        return 0;
    }
    /* some cells wrap: each column's lines, then the row's lines side by side */
    lines_t cols[MAXCOL];
    memset(cols, 0, sizeof cols);
    int rc = -1;
    size_t nl = 1;
    for (int i = 0; i < nc; i++) {
        if (row[i].w > widths[i]) {
            if (wrap(&cols[i], row[i].s, row[i].n, (long)widths[i], "", 0, "", 0) < 0) goto out;
        } else if (lines_add(&cols[i], "", 0, row[i].s, row[i].n) < 0) {
            goto out;
        }
        if (cols[i].n > nl) nl = cols[i].n;
    }
    for (size_t k = 0; k < nl; k++) {
        size_t start = o->n;
        for (int i = 0; i < nc; i++) {
            if (i && bspaces(o, 2) < 0) goto out;
            size_t w = 0;
            if (k < cols[i].n) {
                if (bput(o, cols[i].text.p + cols[i].off[k], cols[i].len[k]) < 0) goto out;
                w = cols[i].w[k];
            }
            if (bspaces(o, widths[i] > w ? widths[i] - w : 0) < 0) goto out;
        }
        rstrip_spaces(o, start);
        if (bputc(o, '\n') < 0) goto out;
    }
    rc = 0;
out:
    for (int i = 0; i < nc; i++) lines_free(&cols[i]);
    (void)wl;
    return rc;
}

/* ------------------------------------------------------------------ what the table holds per connection */

#define MAXKEEP 16

typedef struct {
    double tkey;
    int64_t order, frame;
    uint8_t has_frame;
    char *detail;
    size_t ldetail;
} wanom_t;

typedef struct {
    char *kind;
    size_t lkind;
    int64_t count;
    int nkept;
    wanom_t kept[MAXKEEP];
} wkind_t;

/* A connection's transitions, packed one after another in its row buffer (a flood of SYNs
   keeps a million of them until the end of the capture: every byte counts):
     flags            bit 0: a time, bit 1: a frame, bits 2-3: the endpoint -- 0 or 1: the
                      connection's first or second endpoint name, 2: a new name (its text follows
                      and it becomes the next name), 3: a name given here only
     [time]           8 bytes, a double
     [frame]          varint, zigzag
     [endpoint]       varint length, text
     from, to         a byte each: a name of the writer's (255: varint length and text follow)
     cause            varint length, text */
#define ROW_T 1
#define ROW_FRAME 2
#define ROW_BIN 16          /* the endpoint given here is an IPv4 address and port, in 6 bytes */
#define NONAME 255

/* its anomalies, the few it shows of each kind (a connection that has some) */
typedef struct {
    wkind_t *kinds;
    uint32_t nkinds, norder;
} wanoms_t;

typedef struct wconn {
    struct wconn *hnext;
    wanoms_t *an;                   /* NULL: no anomaly */
    int64_t id;
    uint32_t n, nrows, seq;         /* seq: the order connections came in (end_file prints in it) */
    uint32_t epoff[2];              /* where the two endpoint names are in rows */
    uint16_t eplen[2];
    uint8_t null_id, nep, epbin;    /* epbin: a bit per name kept as an IPv4 address and port (6 bytes) */
    char rows[];                    /* in the same allocation, to the byte: one malloc a connection */
} wconn_t;

#define WCONN_SIZE(n) (offsetof(wconn_t, rows) + (n) > sizeof(wconn_t) ? offsetof(wconn_t, rows) + (n) : sizeof(wconn_t))

/* "a.b.c.d:port" as rawfin writes an IPv4 endpoint, in 6 bytes (0: not that form exactly) */
static int ipv4_pack(const char *s, size_t n, uint8_t *out) {
    const char *e = s + n;
    for (int part = 0; part < 5; part++) {
        if (s >= e || *s < '0' || *s > '9') return 0;
        if (*s == '0' && s + 1 < e && s[1] >= '0' && s[1] <= '9') return 0;     /* no leading zeros */
        uint32_t v = 0;
        int digits = 0;
        while (s < e && *s >= '0' && *s <= '9' && digits < 6) { v = v * 10 + (uint32_t)(*s++ - '0'); digits++; }
        if (part < 4) {
            if (v > 255 || s >= e || *s != (part < 3 ? '.' : ':')) return 0;
            out[part] = (uint8_t)v;
            s++;
        } else {
            if (v > 65535 || s != e) return 0;
            out[4] = (uint8_t)(v >> 8);
            out[5] = (uint8_t)v;
        }
    }
    return 1;
}

/* v in decimal at p; returns the end (what snprintf's "%u" writes, without its call: a table's
   endpoints are written this way once per row) */
static char *udec(char *p, unsigned v) {
    char t[10];
    int n = 0;
    do { t[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) *p++ = t[--n];
    return p;
}

/* "a.b.c.d:port" of the packed endpoint (4 address bytes, the port big-endian), NUL-terminated in
   out (24 bytes at least); returns its length */
static size_t ipv4_text(const uint8_t *b, char *out) {
    char *p = out;
    for (int i = 0; i < 4; i++) {
        p = udec(p, b[i]);
        *p++ = i < 3 ? '.' : ':';
    }
    p = udec(p, (unsigned)(b[4] << 8 | b[5]));
    *p = 0;
    return (size_t)(p - out);
}

static size_t vput(char *d, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) { d[n++] = (char)(v | 0x80); v >>= 7; }
    d[n++] = (char)v;
    return n;
}

static const char *vget(const char *p, uint64_t *v) {
    uint64_t x = 0;
    int sh = 0;
    unsigned char b;
    do {
        b = (unsigned char)*p++;
        x |= (uint64_t)(b & 0x7F) << sh;
        sh += 7;
    } while (b & 0x80);
    *v = x;
    return p;
}

static void wconn_free(wconn_t *c) {
    if (c->an) {
        for (uint32_t i = 0; i < c->an->nkinds; i++) {
            free(c->an->kinds[i].kind);
            for (int k = 0; k < c->an->kinds[i].nkept; k++) free(c->an->kinds[i].kept[k].detail);
        }
        free(c->an->kinds);
        free(c->an);
    }
    free(c);
}

/* ------------------------------------------------------------------ the writer */

enum { M_JSONL, M_CSV, M_TABLE, M_SUMMARY };

typedef struct {
    PyObject_HEAD
    int mode, summary, busy;
    long width;
    unsigned wrap_first, swrap_first;  /* a bit per column: the ones that wrap first */
    size_t floor;
    int per_kind, batch, ncols;
    PyObject *write;
    str_t ph[NPHR];
    str_t hdr[5], shdr[6];
    str_t *cols;
    int8_t *colkey;                 /* each csv column's key number (-1: one the writer does not know) */
    str_t afirst_pad;           /* the anomaly lines' indent before the frame */
    size_t awhere;              /* the frame's right-aligned width */
    str_t arest;
    double origin;
    int has_origin, first, closed;
    buf_t carry, out, scratch, nscratch, tmp, tmp2;
    buf_t ordb, cellb, atb, txt;  /* a block's scratch, kept from one block to the next */
    buf_t rowbuf;                   /* a transition's packed row, before it goes to its connection */
    shapes_t shapes;
    jobj_t nested;                  /* a record's nested object (final, anomalies), read when needed */
    lines_t L;
    /* table */
    wconn_t **tab;
    uint32_t ntab, nconn, seq;
    wconn_t *last;                  /* the connection of the last record held */
    str_t names[NONAME];            /* state names, held once: a row names them by number */
    int nnames;
    char *file;                     /* the capture's label, as its records carry it */
    size_t lfile;
    /* summary */
    buf_t srows;
    size_t nsrows;
    size_t swidths[6];
    int slaid;
} Writer;

#define FLUSH_AT (1 << 16)

static int w_flush(Writer *w) {
    if (!w->out.n) return 0;
    PyObject *b = PyBytes_FromStringAndSize(w->out.p, (Py_ssize_t)w->out.n);
    if (!b) return -1;
    w->out.n = 0;
    PyObject *r = PyObject_CallOneArg(w->write, b);
    Py_DECREF(b);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

static uint64_t hash_id(int64_t id) {
    uint64_t x = (uint64_t)id * 0x9E3779B97F4A7C15ULL;
    return x ^ (x >> 29);
}

static wconn_t *tab_find(Writer *w, int64_t id, int unlink) {
    if (!w->ntab) return NULL;
    wconn_t **pp = &w->tab[hash_id(id) & (w->ntab - 1)];
    for (; *pp; pp = &(*pp)->hnext)
        if ((*pp)->id == id) {
            wconn_t *c = *pp;
            if (unlink) {
                if (w->last == c) w->last = NULL;
                *pp = c->hnext;
                w->nconn--;
            }
            return c;
        }
    return NULL;
}

static wconn_t *tab_add(Writer *w, int64_t id) {
    if (w->nconn + 1 > w->ntab) {
        uint32_t n = w->ntab ? w->ntab * 2 : 1024;
        wconn_t **t = calloc(n, sizeof *t);
        if (!t) { werr_set(NULL); return NULL; }
        for (uint32_t i = 0; i < w->ntab; i++)
            for (wconn_t *c = w->tab[i], *nx; c; c = nx) {
                nx = c->hnext;
                uint32_t h = (uint32_t)(hash_id(c->id) & (n - 1));
                c->hnext = t[h];
                t[h] = c;
            }
        free(w->tab);
        w->tab = t;
        w->ntab = n;
    }
    wconn_t *c = calloc(1, WCONN_SIZE(0));  /* (no room for rows yet: each row is sized to fit) */
    if (!c) { werr_set(NULL); return NULL; }
    c->id = id;
    c->seq = w->seq++;
    uint32_t h = (uint32_t)(hash_id(id) & (w->ntab - 1));
    c->hnext = w->tab[h];
    w->tab[h] = c;
    w->nconn++;
    return c;
}

static char *sdup(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) { werr_set(NULL); return NULL; }
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static int64_t jint(const jf_t *f) {
    const char *p = f->v, *e = f->v + f->vl;
    int neg = p < e && *p == '-';
    if (neg) p++;
    uint64_t v = 0;
    while (p < e && *p >= '0' && *p <= '9') v = v * 10 + (uint64_t)(*p++ - '0');
    if (p != e) return strtoll(f->v, NULL, 10);      /* not a plain integer: let libc say */
    return neg ? -(int64_t)v : (int64_t)v;
}

/* a JSON number as float(text) has it: exact when the digits fit 53 bits and the power of ten
   is small (both exact, one correctly rounded division), else strtod */
static double jdouble(const jf_t *f) {
    static const double P10[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13,
                                 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const char *p = f->v, *e = f->v + f->vl;
    int neg = p < e && *p == '-';
    if (neg) p++;
    uint64_t m = 0;
    int digits = 0, frac = 0, dot = 0;
    for (; p < e; p++) {
        if (*p >= '0' && *p <= '9') {
            if (digits || *p != '0') digits++;
            if (digits > 19) break;             /* beyond 64 bits: strtod */
            m = m * 10 + (uint64_t)(*p - '0');
            if (dot) frac++;
        } else if (*p == '.' && !dot) {
            dot = 1;
        } else {
            break;
        }
    }
    if (p != e || frac > 22 || m > (1ULL << 53)) {
        char tmp[64];
        if (f->vl < sizeof tmp) {
            memcpy(tmp, f->v, f->vl);
            tmp[f->vl] = 0;
            return strtod(tmp, NULL);
        }
        return strtod(f->v, NULL);
    }
    double x = (double)m / P10[frac];
    return neg ? -x : x;
}

#define NULL_ID INT64_MIN

/* a state name as the writer's number for it (NONAME: too many names) */
static int name_id(Writer *w, const char *s, size_t n) {
    for (int i = 0; i < w->nnames; i++)
        if (w->names[i].n == n && !memcmp(w->names[i].s, s, n)) return i;
    if (w->nnames == NONAME) return NONAME;
    char *d = malloc(n + 1);
    if (!d) { werr_set(NULL); return -1; }
    memcpy(d, s, n);
    d[n] = 0;
    w->names[w->nnames].s = d;
    w->names[w->nnames].n = n;
    w->names[w->nnames].w = cps(d, n);
    return w->nnames++;
}

/* a transition or an anomaly, held for its connection */
static int hold(Writer *w, const jobj_t *r, int is_anomaly) {
    const jf_t *conn = JGET(r, K_CONN), *frame = JGET(r, K_FRAME), *time = JGET(r, K_TIME);
    const jf_t *ep = JGET(r, K_ENDPOINT), *file = JGET(r, K_FILE);
    int64_t id = (!conn || conn->t != J_NUM) ? NULL_ID : jint(conn);
    wconn_t *c = (w->last && w->last->id == id) ? w->last : tab_find(w, id, 0);
    if (!c) {
        if (!(c = tab_add(w, id))) return -1;
        c->null_id = id == NULL_ID;
    }
    if (file && file->t == J_STR && (file->vl != w->lfile || memcmp(file->v, w->file, file->vl))) {
        char *f = malloc(file->vl + 1);
        if (!f) { werr_set(NULL); return -1; }
        memcpy(f, file->v, file->vl);
        f[file->vl] = 0;
        free(w->file);
        w->file = f;
        w->lfile = file->vl;
    }
    double t = (time && time->t == J_NUM) ? jdouble(time) : 0.0;
    int has_t = time && time->t == J_NUM;
    int has_frame = frame && frame->t == J_NUM;
    int64_t fr = has_frame ? jint(frame) : 0;
    if (!is_anomaly) {
        const jf_t *from = JGET(r, K_FROM), *to = JGET(r, K_TO), *cause = JGET(r, K_CAUSE);
        if (!from || !to || !cause || !ep || from->t != J_STR || to->t != J_STR || cause->t != J_STR ||
            ep->t != J_STR) {
            werr_set("a transition record without from/to/cause/endpoint");
            return -1;
        }
        /* a transition the capture cannot decide: "?" after it, the other reading after its cause */
        const jf_t *inf = JGET(r, K_INFERRED);
        int has_inf = inf && inf->t == J_STR;
        const str_t *im = &w->ph[P_INF_MARK], *io = &w->ph[P_INF_OPEN], *ic = &w->ph[P_INF_CLOSE];
        const char *tov = to->v, *cv = cause->v;
        size_t tol = to->vl, cl = cause->vl;
        if (has_inf) {                      /* the texts as the table shows them, in the scratch */
            buf_t *b = &w->tmp;
            b->n = 0;
            if (bput(b, to->v, to->vl) < 0 || bput(b, im->s, im->n) < 0 || bput(b, cause->v, cause->vl) < 0 ||
                bput(b, io->s, io->n) < 0 || bput(b, inf->v, inf->vl) < 0 || bput(b, ic->s, ic->n) < 0)
                return -1;
            tov = b->p;
            tol = to->vl + im->n;
            cv = b->p + tol;
            cl = b->n - tol;
        }
        uint8_t bin[6];
        int isbin = ipv4_pack(ep->v, ep->vl, bin);
        int code = 3;
        for (int i = 0; i < c->nep; i++) {
            if (c->epbin >> i & 1) {
                if (isbin && !memcmp(c->rows + c->epoff[i], bin, 6)) code = i;
            } else if (!isbin && c->eplen[i] == ep->vl && !memcmp(c->rows + c->epoff[i], ep->v, ep->vl)) {
                code = i;
            }
        }
        if (code == 3 && c->nep < 2 && ep->vl <= 0xFFFF) code = 2;
        int fid = name_id(w, from->v, from->vl), tid = name_id(w, tov, tol);
        if (fid < 0 || tid < 0) return -1;
        /* the row into the scratch first, so the connection's memory grows by what it takes */
        buf_t *rb = &w->rowbuf;
        rb->n = 0;
        if (bgrow(rb, 1 + 8 + 10 + (code >= 2 ? 10 + ep->vl : 0) + 2 + (fid == NONAME ? 10 + from->vl : 0) +
                          (tid == NONAME ? 10 + tol : 0) + 10 + cl) < 0)
            return -1;
        char *d = rb->p;
        size_t name_at = 0;
        int binname = code >= 2 && isbin;
        *d++ = (char)((has_t ? ROW_T : 0) | (has_frame ? ROW_FRAME : 0) | code << 2 | (binname ? ROW_BIN : 0));
        if (has_t) { memcpy(d, &t, 8); d += 8; }
        if (has_frame) d += vput(d, ((uint64_t)fr << 1) ^ (uint64_t)(fr >> 63));
        if (binname) {                      /* an IPv4 endpoint: its 6 bytes */
            name_at = (size_t)(d - rb->p);
            memcpy(d, bin, 6);
            d += 6;
        } else if (code >= 2) {
            d += vput(d, ep->vl);
            name_at = (size_t)(d - rb->p);
            memcpy(d, ep->v, ep->vl);
            d += ep->vl;
        }
        *d++ = (char)fid;
        if (fid == NONAME) { d += vput(d, from->vl); memcpy(d, from->v, from->vl); d += from->vl; }
        *d++ = (char)tid;
        if (tid == NONAME) { d += vput(d, tol); memcpy(d, tov, tol); d += tol; }
        d += vput(d, cl);
        memcpy(d, cv, cl);
        d += cl;
        size_t len = (size_t)(d - rb->p);
        if (c->n + len > UINT32_MAX) { werr_set("a connection with more transitions than the table can hold"); return -1; }
        wconn_t *g = realloc(c, WCONN_SIZE(c->n + len));     /* to the byte: a connection has few rows */
        if (!g) { werr_set(NULL); return -1; }
        if (g != c) {                       /* it moved: its hash chain names it anew */
            wconn_t **pp = &w->tab[hash_id(g->id) & (w->ntab - 1)];
            while (*pp != c) pp = &(*pp)->hnext;
            *pp = g;
            if (w->last == c) w->last = g;
            c = g;
        }
        if (code == 2) {
            c->epoff[c->nep] = c->n + (uint32_t)name_at;
            c->eplen[c->nep] = (uint16_t)(binname ? 6 : ep->vl);
            if (binname) c->epbin |= (uint8_t)(1 << c->nep);
            c->nep++;
        }
        memcpy(c->rows + c->n, rb->p, len);
        c->n += (uint32_t)len;
        c->nrows++;
        w->last = c;
        return 0;
    }
    const jf_t *kind = JGET(r, K_KIND), *detail = JGET(r, K_DETAIL);
    if (!kind || !detail || kind->t != J_STR || detail->t != J_STR) {
        werr_set("an anomaly record without kind/detail");
        return -1;
    }
    w->last = c;
    if (!c->an && !(c->an = calloc(1, sizeof *c->an))) { werr_set(NULL); return -1; }
    wanoms_t *an = c->an;
    an->norder++;
    wkind_t *k = NULL;
    for (uint32_t i = 0; i < an->nkinds; i++)
        if (an->kinds[i].lkind == kind->vl && !memcmp(an->kinds[i].kind, kind->v, kind->vl)) k = &an->kinds[i];
    if (!k) {
        wkind_t *ks = realloc(an->kinds, (an->nkinds + 1) * sizeof *ks);
        if (!ks) { werr_set(NULL); return -1; }
        an->kinds = ks;
        k = &ks[an->nkinds];
        memset(k, 0, sizeof *k);
        if (!(k->kind = sdup(kind->v, kind->vl))) return -1;
        k->lkind = kind->vl;
        an->nkinds++;
    }
    k->count++;
    double tkey = has_t ? t : 0.0;
    int slot;
    if (k->nkept < w->per_kind) {
        slot = k->nkept++;
    } else {
        wanom_t *last = &k->kept[k->nkept - 1];
        if (!(tkey < last->tkey || (tkey == last->tkey && an->norder < last->order))) return 0;
        free(last->detail);
        slot = k->nkept - 1;
    }
    wanom_t a = {tkey, an->norder, fr, (uint8_t)has_frame, NULL, detail->vl};
    if (!(a.detail = sdup(detail->v, detail->vl))) { k->kept[slot].detail = NULL; return -1; }
    /* into place: the earliest of the kind, by time then arrival */
    while (slot > 0 && (a.tkey < k->kept[slot - 1].tkey ||
                        (a.tkey == k->kept[slot - 1].tkey && a.order < k->kept[slot - 1].order))) {
        k->kept[slot] = k->kept[slot - 1];
        slot--;
    }
    k->kept[slot] = a;
    return 0;
}

/* "conn N [file]: client C → server S (vlan V)" and "  close: ...", wrapped to the width */
/* " by client" / " by SERVER": who, as one of the connection's two sides */
static int by_whom(Writer *w, const jf_t *who, const jf_t *client, buf_t *b) {
    int p = jeq(who, client) ? P_BY_CLIENT : P_BY_SERVER;
    return bput(b, w->ph[p].s, w->ph[p].n);
}

/* the close and who did it (rawfin.render.sinks.close_words): "four_way by client", "reset by SERVER",
   "reset by SERVER after a FIN by client", "reset by client after its FIN" */
static int close_words(Writer *w, const jobj_t *r, const jf_t *client, const jf_t *close, buf_t *b) {
    const jf_t *closer = JGET(r, K_ACTIVE_CLOSER), *rst = JGET(r, K_RESET_BY);
    if (bvalue(b, close) < 0) return -1;
    if (jtruthy(rst)) {
        if (by_whom(w, rst, client, b) < 0) return -1;
        if (!jtruthy(closer)) return 0;
        if (jeq(closer, rst)) return bput(b, w->ph[P_AFTER_OWN_FIN].s, w->ph[P_AFTER_OWN_FIN].n);
        if (bput(b, w->ph[P_AFTER_FIN].s, w->ph[P_AFTER_FIN].n) < 0) return -1;
    }
    return jtruthy(closer) ? by_whom(w, closer, client, b) : 0;
}

static int heading(Writer *w, const jobj_t *r, wconn_t *pc) {
    buf_t *h = &w->tmp;
    h->n = 0;
    const jf_t *conn = r ? JGET(r, K_CONN) : NULL, *file = r ? JGET(r, K_FILE) : NULL;
    const jf_t *client = r ? JGET(r, K_CLIENT) : NULL;
    int has_file = 0;
    if (!client) {
        if (r ? (conn && conn->t != J_NULL) : !pc->null_id) {
            if (bputs(h, "conn ") < 0) return -1;
            if (r ? bvalue(h, conn) < 0 : bint(h, pc->id) < 0) return -1;
        } else if (bput(h, w->ph[P_NO_CONN].s, w->ph[P_NO_CONN].n) < 0) {
            return -1;
        }
        if (r ? jtruthy(file) : w->lfile > 0) {
            if (bputs(h, " [") < 0 || (r ? bvalue(h, file) : bput(h, w->file, w->lfile)) < 0 || bputc(h, ']') < 0)
                return -1;
        }
        if (wrap(&w->L, h->p, h->n, w->width, "", 0, "  ", 2) < 0) return -1;
        goto emit;
    }
    const jf_t *server = JGET(r, K_SERVER);
    if (bputs(h, "conn ") < 0 || bvalue(h, conn) < 0) return -1;
    if (jtruthy(file)) {
        has_file = 1;
        if (bputs(h, " [") < 0 || bvalue(h, file) < 0 || bputc(h, ']') < 0) return -1;
    }
    if (bputs(h, ": ") < 0 || bput(h, w->ph[P_CLIENT].s, w->ph[P_CLIENT].n) < 0 || bputc(h, ' ') < 0 ||
        bvalue(h, client) < 0 || bputc(h, ' ') < 0 || bput(h, w->ph[P_ARROW].s, w->ph[P_ARROW].n) < 0 ||
        bputc(h, ' ') < 0 || bput(h, w->ph[P_SERVER].s, w->ph[P_SERVER].n) < 0 || bputc(h, ' ') < 0 ||
        (server ? bvalue(h, server) : 0) < 0)
        return -1;
    const jf_t *vlan = JGET(r, K_VLAN);
    if (jtruthy(vlan) && vlan->t == J_ARR) {
        if (bputs(h, " (vlan ") < 0) return -1;
        const char *p = vlan->v, *e = vlan->v + vlan->vl, *s;
        size_t n;
        int k = 0;
        while ((p = jnext_item(p, e, &s, &n))) {
            if ((k++ && bputc(h, '.') < 0) || bput(h, s, n) < 0) return -1;
        }
        if (bputc(h, ')') < 0) return -1;
    }
    (void)has_file;
    buf_t *b = &w->tmp2;
    b->n = 0;
    const jf_t *close = JGET(r, K_CLOSE);
#define BIT(S_, N_) do { if (b->n && bputs(b, "; ") < 0) return -1; if (bput(b, (S_), (N_)) < 0) return -1; } while (0)
    if (jtruthy(JGET(r, K_MID_STREAM))) BIT(w->ph[P_MID].s, w->ph[P_MID].n);
    if (jtruthy(JGET(r, K_SERVER_GUESSED))) BIT(w->ph[P_GUESSED].s, w->ph[P_GUESSED].n);
    if (jtruthy(close)) {
        BIT(w->ph[P_CLOSE].s, w->ph[P_CLOSE].n);
        if (close_words(w, r, client, close, b) < 0) return -1;
    }
    if (jtruthy(JGET(r, K_SERVER_ACTIVE_CLOSE))) BIT(w->ph[P_SERVER_TW].s, w->ph[P_SERVER_TW].n);
#undef BIT
    if ((long)cps(h->p, h->n) <= w->width) {
        if (bput(&w->out, h->p, h->n) < 0 || bputc(&w->out, '\n') < 0) return -1;
    } else {
        if (wrap(&w->L, h->p, h->n, w->width, "", 0, "  ", 2) < 0) return -1;
        for (size_t k = 0; k < w->L.n; k++)
            if (bput(&w->out, w->L.text.p + w->L.off[k], w->L.len[k]) < 0 || bputc(&w->out, '\n') < 0) return -1;
    }
    if (!b->n) return 0;
    if (2 + (long)cps(b->p, b->n) <= w->width)
        return bputs(&w->out, "  ") < 0 || bput(&w->out, b->p, b->n) < 0 || bputc(&w->out, '\n') < 0 ? -1 : 0;
    if (wrap(&w->L, b->p, b->n, w->width, "  ", 2, "  ", 2) < 0) return -1;
emit:
    for (size_t k = 0; k < w->L.n; k++)
        if (bput(&w->out, w->L.text.p + w->L.off[k], w->L.len[k]) < 0 || bputc(&w->out, '\n') < 0) return -1;
    return 0;
}

/* a transition read back from its packed row */
typedef struct {
    double key, t;
    uint32_t idx;
    uint8_t has_t, has_frame;
    int64_t frame;
    const char *ep, *from, *to, *cause;
    const uint8_t *epbin;           /* the endpoint as 6 bytes (an IPv4 address and port), else NULL */
    size_t lep, lfrom, lto, lcause;
} ord_t;

static const char *unpack_row(const Writer *w, const wconn_t *c, const char *p, ord_t *o) {
    uint64_t v;
    uint8_t flags = (uint8_t)*p++;
    int code = flags >> 2 & 3;
    o->has_t = flags & ROW_T;
    o->has_frame = (flags & ROW_FRAME) != 0;
    o->t = 0.0;
    if (o->has_t) { memcpy(&o->t, p, 8); p += 8; }
    o->key = o->t;
    o->frame = 0;
    if (o->has_frame) { p = vget(p, &v); o->frame = (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }
    o->epbin = NULL;
    if (code >= 2 && (flags & ROW_BIN)) {
        o->epbin = (const uint8_t *)p;
        p += 6;
    } else if (code >= 2) {
        p = vget(p, &v);
        o->ep = p;
        o->lep = (size_t)v;
        p += v;
    } else if (c->epbin >> code & 1) {
        o->epbin = (const uint8_t *)(c->rows + c->epoff[code]);
    } else {
        o->ep = c->rows + c->epoff[code];
        o->lep = c->eplen[code];
    }
    for (int k = 0; k < 2; k++) {
        int id = (uint8_t)*p++;
        const char *s;
        size_t n;
        if (id == NONAME) { p = vget(p, &v); s = p; n = (size_t)v; p += v; }
        else { s = w->names[id].s; n = w->names[id].n; }
        if (k) { o->to = s; o->lto = n; } else { o->from = s; o->lfrom = n; }
    }
    p = vget(p, &v);
    o->cause = p;
    o->lcause = (size_t)v;
    return p + v;
}

static int cmp_ord(const void *a, const void *b) {
    const ord_t *x = a, *y = b;
    if (x->key < y->key) return -1;
    if (x->key > y->key) return 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

typedef struct { double key; int64_t order; const wanom_t *a; const wkind_t *k; } aord_t;

static int cmp_aord(const void *a, const void *b) {
    const aord_t *x = a, *y = b;
    if (x->key < y->key) return -1;
    if (x->key > y->key) return 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* one connection's block: heading, transitions, anomalies (TableSink._print_connection) */
static int block(Writer *w, const jobj_t *r, wconn_t *pc) {
    buf_t *o = &w->out;
    if (!w->first && bputc(o, '\n') < 0) return -1;
    w->first = 0;
    if (heading(w, r, pc) < 0) return -1;
    const jf_t *client = r ? JGET(r, K_CLIENT) : NULL, *server = r ? JGET(r, K_SERVER) : NULL;
    uint32_t n = pc ? pc->nrows : 0;
    int rc = -1;
    ord_t *ord = NULL;
    cell_t *cells = NULL;
    buf_t *txt = &w->txt;
    if (!n) {
        if (bput(o, w->ph[P_NO_CHANGES].s, w->ph[P_NO_CHANGES].n) < 0 || bputc(o, '\n') < 0) return -1;
    } else {
        w->ordb.n = w->cellb.n = w->atb.n = txt->n = 0;
        if (bgrow(&w->ordb, n * sizeof *ord) < 0 || bgrow(&w->cellb, (size_t)n * 5 * sizeof *cells) < 0 ||
            bgrow(&w->atb, (size_t)n * 6 * sizeof(size_t)) < 0)
            goto out;
        ord = (ord_t *)w->ordb.p;
        cells = (cell_t *)w->cellb.p;
        size_t *at = (size_t *)w->atb.p;
        const char *rp = pc->rows;
        int sorted = 1;
        for (uint32_t i = 0; i < n; i++) {
            rp = unpack_row(w, pc, rp, &ord[i]);
            ord[i].idx = i;
            if (i && ord[i].key < ord[i - 1].key) sorted = 0;
        }
        if (!sorted) qsort(ord, n, sizeof *ord, cmp_ord);
        /* the cells' text first (offsets), then the cells (the text buffer may move while it grows) */
        for (uint32_t i = 0; i < n; i++) {
            const ord_t h = ord[i];
            const char *ep = h.ep, *from = h.from, *to = h.to, *cause = h.cause;
            size_t lep = h.lep;
            char epbuf[24];
            if (h.epbin) {
                lep = ipv4_text(h.epbin, epbuf);
                ep = epbuf;
            }
            size_t *a = at + (size_t)i * 6;
            int role = -1;                                  /* the endpoint by role when the record says */
            if (client && client->t == J_STR && client->vl == lep && !memcmp(client->v, ep, lep)) role = P_CLIENT;
            else if (server && server->t == J_STR && server->vl == lep && !memcmp(server->v, ep, lep)) role = P_SERVER;
            const char *rs = role >= 0 ? w->ph[role].s : ep;
            size_t rn = role >= 0 ? w->ph[role].n : lep;
            char tb[400];
            int tn = h.has_t ? fmt6(tb, h.t - (w->has_origin ? w->origin : 0.0)) : 0;
            if (bgrow(txt, 24 + (size_t)tn + rn + h.lfrom + h.lto + w->ph[P_ARROW].n + 2 + h.lcause) < 0) goto out;
            char *d = txt->p + txt->n, *base = txt->p;
            a[0] = (size_t)(d - base);                      /* frame */
            if (h.has_frame) {
                char dg[24];
                int k = 0;
                uint64_t u = h.frame < 0 ? 0 - (uint64_t)h.frame : (uint64_t)h.frame;
                do { dg[k++] = (char)('0' + u % 10); u /= 10; } while (u);
                if (h.frame < 0) *d++ = '-';
                while (k) *d++ = dg[--k];
            }
            a[1] = (size_t)(d - base);                      /* time */
            memcpy(d, tb, (size_t)tn); d += tn;
            a[2] = (size_t)(d - base);
            memcpy(d, rs, rn); d += rn;
            a[3] = (size_t)(d - base);                      /* transition */
            memcpy(d, from, h.lfrom); d += h.lfrom;
            *d++ = ' ';
            memcpy(d, w->ph[P_ARROW].s, w->ph[P_ARROW].n); d += w->ph[P_ARROW].n;
            *d++ = ' ';
            memcpy(d, to, h.lto); d += h.lto;
            a[4] = (size_t)(d - base);                      /* cause */
            memcpy(d, cause, h.lcause); d += h.lcause;
            a[5] = (size_t)(d - base);
            txt->n = (size_t)(d - base);
        }
        for (uint32_t i = 0; i < n; i++) {
            size_t *a = at + (size_t)i * 6;
            for (int k = 0; k < 5; k++) {
                cell_t *c = &cells[(size_t)i * 5 + k];
                c->s = txt->p + a[k];
                c->n = a[k + 1] - a[k];
                c->w = k < 2 ? c->n : cps(c->s, c->n);     /* the frame and the time are digits */
            }
        }
        size_t widths[5];
        if (layout(5, w->hdr, cells, n, w->width, w->wrap_first, w->floor, widths, &w->L) < 0) goto out;
        if (emit_head(o, 5, w->hdr, widths) < 0) goto out;
        for (uint32_t i = 0; i < n; i++)
            if (emit_row(o, 5, &cells[(size_t)i * 5], widths, &w->L) < 0) goto out;
    }
    if (pc && pc->an && pc->an->nkinds) {
        const wanoms_t *an = pc->an;
        size_t na = 0;
        for (uint32_t i = 0; i < an->nkinds; i++) na += (size_t)an->kinds[i].nkept;
        aord_t *ao = malloc(na * sizeof *ao);
        if (!ao) { werr_set(NULL); goto out; }
        na = 0;
        for (uint32_t i = 0; i < an->nkinds; i++)
            for (int k = 0; k < an->kinds[i].nkept; k++) {
                const wanom_t *a = &an->kinds[i].kept[k];
                ao[na].key = a->tkey;
                ao[na].order = a->order;
                ao[na].a = a;
                ao[na].k = &an->kinds[i];
                na++;
            }
        qsort(ao, na, sizeof *ao, cmp_aord);
        if (bput(o, w->ph[P_ANOMALIES].s, w->ph[P_ANOMALIES].n) < 0 || bputc(o, '\n') < 0) { free(ao); goto out; }
        const wkind_t **korder = malloc((an->nkinds + 1) * sizeof *korder);
        if (!korder) { free(ao); werr_set(NULL); goto out; }
        uint32_t nk = 0;
        buf_t *pre = &w->tmp, *t = &w->tmp2;
        for (size_t i = 0; i < na; i++) {
            uint32_t j;
            for (j = 0; j < nk; j++)
                if (korder[j] == ao[i].k) break;
            if (j == nk) korder[nk++] = ao[i].k;
            /* "    " + where.rjust(11) + "  " */
            char where[48];
            int wl = ao[i].a->has_frame ? snprintf(where, sizeof where, "frame %lld", (long long)ao[i].a->frame)
                                        : snprintf(where, sizeof where, "%s", w->ph[P_END].s);
            size_t ww = cps(where, (size_t)wl);
            pre->n = 0;
            t->n = 0;
            if (bput(pre, w->afirst_pad.s, w->afirst_pad.n) < 0 ||
                bspaces(pre, w->awhere > ww ? w->awhere - ww : 0) < 0 || bput(pre, where, (size_t)wl) < 0 ||
                bspaces(pre, 2) < 0 || bput(t, ao[i].k->kind, ao[i].k->lkind) < 0 || bputs(t, ": ") < 0 ||
                bput(t, ao[i].a->detail, ao[i].a->ldetail) < 0 ||
                wrap(&w->L, t->p, t->n, w->width, pre->p, pre->n, w->arest.s, w->arest.n) < 0) {
                free(ao); free(korder); goto out;
            }
            for (size_t k = 0; k < w->L.n; k++)
                if (bput(o, w->L.text.p + w->L.off[k], w->L.len[k]) < 0 || bputc(o, '\n') < 0) {
                    free(ao); free(korder); goto out;
                }
        }
        free(ao);
        for (uint32_t j = 0; j < nk; j++) {
            int64_t more = korder[j]->count - w->per_kind;
            if (more <= 0) continue;
            /* the indent, then the "more" phrase with {n} and {kind} */
            int fail = bput(o, w->afirst_pad.s, w->afirst_pad.n) < 0 || bspaces(o, w->awhere + 2) < 0;
            const char *p = w->ph[P_MORE].s, *e = p + w->ph[P_MORE].n;
            while (!fail && p < e) {
                if (e - p >= 3 && !memcmp(p, "{n}", 3)) { fail = bint(o, (long long)more) < 0; p += 3; }
                else if (e - p >= 6 && !memcmp(p, "{kind}", 6)) { fail = bput(o, korder[j]->kind, korder[j]->lkind) < 0; p += 6; }
                else fail = bputc(o, *p++) < 0;
            }
            if (fail || bputc(o, '\n') < 0) { free(korder); goto out; }
        }
        free(korder);
    }
    rc = 0;
out:
    return rc;
}

/* ------------------------------------------------------------------ --summary: one row per connection */

static int summary_cells(Writer *w, const jobj_t *r, buf_t *b, size_t *at) {
    /* six cells into b, their offsets in at[0..6] */
    const jf_t *conn = JGET(r, K_CONN), *file = JGET(r, K_FILE), *client = JGET(r, K_CLIENT);
    const jf_t *server = JGET(r, K_SERVER), *close = JGET(r, K_CLOSE), *closer = JGET(r, K_ACTIVE_CLOSER);
    const jf_t *final = JGET(r, K_FINAL), *an = JGET(r, K_ANOMALIES);
    if (!conn || !client || !server) {
        werr_set("a connection record without conn/client/server");
        return -1;
    }
    at[0] = b->n;
    if (file) {
        const char *s = file->v, *slash = NULL;
        for (size_t i = 0; i < file->vl; i++)
            if (s[i] == '/') slash = s + i;
        const char *base = slash ? slash + 1 : s;
        if (bput(b, base, file->vl - (size_t)(base - s)) < 0 || bputc(b, '#') < 0) return -1;
    }
    if (bvalue(b, conn) < 0) return -1;
    at[1] = b->n;
    if (bvalue(b, client) < 0) return -1;
    at[2] = b->n;
    if (bvalue(b, server) < 0) return -1;
    if (jtruthy(JGET(r, K_SERVER_GUESSED)) && bput(b, w->ph[P_GUESS_MARK].s, w->ph[P_GUESS_MARK].n) < 0) return -1;
    at[3] = b->n;
    if (close && close_words(w, r, client, close, b) < 0) return -1;
    else if (!close && jtruthy(closer) && by_whom(w, closer, client, b) < 0) return -1;
    at[4] = b->n;
    {
        jobj_t *fo = &w->nested;
        const jf_t *fc = NULL, *fs = NULL;
        if (final && final->t == J_OBJ) {
            if (bgrow(&w->nscratch, final->vl + 1) < 0) return -1;
            if (jparse(final->v, final->v + final->vl, fo, w->nscratch.p, NULL) < 0) {
                werr_set("cannot read a connection record's final states");
                return -1;
            }
            for (int i = 0; i < fo->n; i++) {
                if (fo->f[i].kl == client->vl && !memcmp(fo->f[i].k, client->v, client->vl) && !fc) fc = &fo->f[i];
                if (fo->f[i].kl == server->vl && !memcmp(fo->f[i].k, server->v, server->vl) && !fs) fs = &fo->f[i];
            }
            /* a dict keeps the last value of a repeated key */
            for (int i = 0; i < fo->n; i++) {
                if (fo->f[i].kl == client->vl && !memcmp(fo->f[i].k, client->v, client->vl)) fc = &fo->f[i];
                if (fo->f[i].kl == server->vl && !memcmp(fo->f[i].k, server->v, server->vl)) fs = &fo->f[i];
            }
        }
        if ((fc ? bvalue(b, fc) : bputc(b, '?')) < 0 || bputc(b, '/') < 0 ||
            (fs ? bvalue(b, fs) : bputc(b, '?')) < 0)
            return -1;
    }
    at[5] = b->n;
    if (an && an->t == J_OBJ) {
        long long total = 0;
        const char *p = an->v, *e = an->v + an->vl;
        /* {"kind":n,...}: the numbers after each colon outside strings */
        while (p < e) {
            if (*p == '"') {
                p++;
                while (p < e && *p != '"') { if (*p == '\\') p++; p++; }
                p++;
                continue;
            }
            if (*p == ':') total += strtoll(p + 1, NULL, 10);
            p++;
        }
        if (total && bint(b, total) < 0) return -1;
    }
    at[6] = b->n;
    return 0;
}

static int summary_layout(Writer *w) {
    size_t n = w->nsrows;
    cell_t *cells = malloc((n ? n : 1) * 6 * sizeof *cells);
    if (!cells) { werr_set(NULL); return -1; }
    size_t off = 0;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 6; k++) {
            uint32_t len;
            memcpy(&len, w->srows.p + off, 4);
            off += 4;
            cell_t *c = &cells[i * 6 + k];
            c->s = w->srows.p + off;
            c->n = len;
            c->w = cps(c->s, len);
            off += len;
        }
    int rc = -1;
    if (layout(6, w->shdr, cells, n, w->width, w->swrap_first, w->floor, w->swidths, &w->L) < 0) goto out;
    w->slaid = 1;
    if (emit_head(&w->out, 6, w->shdr, w->swidths) < 0) goto out;
    for (size_t i = 0; i < n; i++)
        if (emit_row(&w->out, 6, &cells[i * 6], w->swidths, &w->L) < 0) goto out;
    rc = 0;
out:
    free(cells);
    bfree(&w->srows);
    w->nsrows = 0;
    return rc;
}

static int summary_row(Writer *w, const jobj_t *r) {
    buf_t *b = &w->tmp2;
    size_t at[7];
    b->n = 0;
    if (summary_cells(w, r, b, at) < 0) return -1;
    if (w->slaid) {
        cell_t row[6];
        for (int k = 0; k < 6; k++) {
            row[k].s = b->p + at[k];
            row[k].n = at[k + 1] - at[k];
            row[k].w = cps(row[k].s, row[k].n);
        }
        return emit_row(&w->out, 6, row, w->swidths, &w->L);
    }
    for (int k = 0; k < 6; k++) {
        uint32_t len = (uint32_t)(at[k + 1] - at[k]);
        if (bput(&w->srows, (const char *)&len, 4) < 0 || bput(&w->srows, b->p + at[k], len) < 0) return -1;
    }
    w->nsrows++;
    if (w->nsrows >= (size_t)w->batch) return summary_layout(w);
    return 0;
}

/* ------------------------------------------------------------------ csv */

/* does s have a character csv must quote for (, " CR LF)? Eight bytes at a time */
static int csv_special(const char *s, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v, a, b, c, d;
        memcpy(&v, s + i, 8);
        a = v ^ (ONES * ',');
        b = v ^ (ONES * '"');
        c = v ^ (ONES * '\r');
        d = v ^ (ONES * '\n');
        if ((((a - ONES) & ~a) | ((b - ONES) & ~b) | ((c - ONES) & ~c) | ((d - ONES) & ~d)) & HIGHS) return 1;
    }
    for (; i < n; i++)
        if (s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n') return 1;
    return 0;
}

static int csv_text(buf_t *o, const char *s, size_t n) {
    int quote = csv_special(s, n);
    if (!quote) return bput(o, s, n);
    if (bputc(o, '"') < 0) return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' && bputc(o, '"') < 0) return -1;
        if (bputc(o, s[i]) < 0) return -1;
    }
    return bputc(o, '"');
}

static int csv_cell(Writer *w, buf_t *o, const jf_t *f) {
    if (!f || f->t == J_NULL) return 0;
    if (f->t == J_STR) return csv_text(o, f->v, f->vl);
    if (f->t == J_NUM) return bput(o, f->v, f->vl);
    if (f->t == J_TRUE) return bputs(o, "True");
    if (f->t == J_FALSE) return bputs(o, "False");
    buf_t *t = &w->tmp;
    t->n = 0;
    if (f->t == J_OBJ) {                    /* "k=v; k=v" */
        jobj_t *so = &w->nested;
        if (bgrow(&w->nscratch, f->vl + 1) < 0) return -1;
        if (jparse(f->v, f->v + f->vl, so, w->nscratch.p, NULL) < 0) {
            werr_set("cannot read a record's nested object");
            return -1;
        }
        for (int i = 0; i < so->n; i++)
            if ((i && bputs(t, "; ") < 0) || bput(t, so->f[i].k, so->f[i].kl) < 0 || bputc(t, '=') < 0 ||
                bvalue(t, &so->f[i]) < 0)
                return -1;
    } else {                                /* a list: space-separated */
        const char *p = f->v, *e = f->v + f->vl, *s;
        size_t n;
        int k = 0;
        while ((p = jnext_item(p, e, &s, &n)))
            if ((k++ && bputc(t, ' ') < 0) || bput(t, s, n) < 0) return -1;
    }
    return csv_text(o, t->p, t->n);
}

static int csv_row(Writer *w, const jobj_t *r) {
    buf_t *o = &w->out;
    for (int i = 0; i < w->ncols; i++) {
        const jf_t *f = NULL;
        int id = w->colkey[i];
        if (id >= 0) {
            f = r->by[id];
        } else {
            for (int k = 0; k < r->n; k++)     /* the last of a repeated key, as a dict has it */
                if (r->f[k].kl == w->cols[i].n && !memcmp(r->f[k].k, w->cols[i].s, w->cols[i].n)) f = &r->f[k];
        }
        /* the common cells straight into the output: a number, a string with nothing to quote */
        if (f && (f->t == J_NUM || (f->t == J_STR && !csv_special(f->v, f->vl)))) {
            if (bgrow(o, f->vl + 1) < 0) return -1;
            if (i) o->p[o->n++] = ',';
            memcpy(o->p + o->n, f->v, f->vl);
            o->n += f->vl;
            continue;
        }
        if (i && bputc(o, ',') < 0) return -1;
        if (csv_cell(w, o, f) < 0) return -1;
    }
    return bput(o, "\r\n", 2);
}

/* ------------------------------------------------------------------ one record */

static int record(Writer *w, const char *line, size_t n) {
    /* --summary reads connection records only: a line that says first it is something else is
       passed over unread (the records put their type first; any other line is read whole) */
    if (w->summary && n > 9 && !memcmp(line, "{\"type\":\"", 9)) {
        const char *q = memchr(line + 9, '"', n - 9);
        if (q && !memchr(line + 9, '\\', (size_t)(q - line - 9)) &&
            !((size_t)(q - line - 9) == 10 && !memcmp(line + 9, "connection", 10)))
            return 0;
    }
    if (bgrow(&w->scratch, n + 1) < 0) return -1;
    jobj_t r;
    if (jparse(line, line + n, &r, w->scratch.p, &w->shapes) < 0) {
        snprintf(werr_line, sizeof werr_line, "rawfin writer: not a record: %.200s", line);
        werr_set(werr_line);
        return -1;
    }
    const jf_t *type = JGET(&r, K_TYPE);
    int conn = type && type->t == J_STR && type->vl == 10 && !memcmp(type->v, "connection", 10);
    switch (w->mode) {
    case M_JSONL:                           /* --summary: the connection records only */
        if (!conn) return 0;
        if (bput(&w->out, line, n) < 0 || bputc(&w->out, '\n') < 0) return -1;
        return 0;
    case M_CSV:
        if (!conn && w->summary) return 0;      /* --summary: one row per connection */
        return csv_row(w, &r);
    case M_SUMMARY:
        return conn ? summary_row(w, &r) : 0;
    default: {
        if (conn) {
            const jf_t *id = JGET(&r, K_CONN);
            wconn_t *pc = tab_find(w, (id && id->t == J_NUM) ? jint(id) : NULL_ID, 1);
            int rc = block(w, &r, pc);
            if (pc) wconn_free(pc);
            return rc;
        }
        if (type && type->t == J_STR && type->vl == 10 && !memcmp(type->v, "transition", 10)) return hold(w, &r, 0);
        if (type && type->t == J_STR && type->vl == 7 && !memcmp(type->v, "anomaly", 7)) return hold(w, &r, 1);
        return 0;
    }
    }
}

/* the records of a chunk of JSON lines (a line may have begun in the last chunk); no Python here */
static int feed_bytes(Writer *w, const char *p, const char *e) {
    if (w->carry.n) {
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        if (!nl) return bput(&w->carry, p, (size_t)(e - p));
        if (bput(&w->carry, p, (size_t)(nl - p)) < 0) return -1;
        int rc = record(w, w->carry.p, w->carry.n);
        w->carry.n = 0;
        if (rc < 0) return -1;
        p = nl + 1;
    }
    while (p < e) {
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        if (!nl) return bput(&w->carry, p, (size_t)(e - p));
        if (nl > p && record(w, p, (size_t)(nl - p)) < 0) return -1;
        p = nl + 1;
    }
    return 0;
}

static int w_busy(Writer *w) {
    if (w->busy) { PyErr_SetString(PyExc_RuntimeError, "the writer is in use by another thread"); return 1; }
    if (w->closed) { PyErr_SetString(PyExc_ValueError, "the writer is closed"); return 1; }
    return 0;
}

static PyObject *Writer_feed(Writer *w, PyObject *arg) {
    Py_buffer view;
    if (w_busy(w)) return NULL;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    int rc;
    w->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = feed_bytes(w, view.buf, (const char *)view.buf + view.len);
    Py_END_ALLOW_THREADS
    w->busy = 0;
    PyBuffer_Release(&view);
    if (rc < 0) { werr_raise(); return NULL; }
    if (w->out.n >= FLUSH_AT && w_flush(w) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Writer_set_origin(Writer *w, PyObject *arg) {
    if (arg == Py_None) {
        w->has_origin = 0;
        Py_RETURN_NONE;
    }
    double x = PyFloat_AsDouble(arg);
    if (x == -1.0 && PyErr_Occurred()) return NULL;
    w->origin = x;
    w->has_origin = 1;
    Py_RETURN_NONE;
}

/* the end of one capture: what came without a connection record is printed now */
static int cmp_seq(const void *a, const void *b) {
    uint32_t x = (*(wconn_t *const *)a)->seq, y = (*(wconn_t *const *)b)->seq;
    return x < y ? -1 : x > y;
}

static int end_file(Writer *w) {
    if (w->mode != M_TABLE || !w->nconn) return 0;
    /* what is left, in the order it came: out of the table first, then printed */
    wconn_t **left = malloc(w->nconn * sizeof *left);
    if (!left) { werr_set(NULL); return -1; }
    uint32_t n = 0;
    for (uint32_t i = 0; i < w->ntab; i++) {
        for (wconn_t *c = w->tab[i]; c; c = c->hnext) left[n++] = c;
        w->tab[i] = NULL;
    }
    w->nconn = 0;
    w->last = NULL;
    qsort(left, n, sizeof *left, cmp_seq);
    int rc = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (rc == 0) rc = block(w, NULL, left[i]);
        wconn_free(left[i]);
    }
    free(left);
    return rc;
}

static PyObject *Writer_end_file(Writer *w, PyObject *unused) {
    (void)unused;
    if (w_busy(w)) return NULL;
    if (end_file(w) < 0) { werr_raise(); return NULL; }
    if (w_flush(w) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Writer_close(Writer *w, PyObject *unused) {
    (void)unused;
    if (w->closed) Py_RETURN_NONE;
    if (w_busy(w)) return NULL;
    int rc = 0;
    if (w->carry.n) {
        rc = record(w, w->carry.p, w->carry.n);
        w->carry.n = 0;
    }
    if (rc == 0) rc = end_file(w);
    if (rc == 0 && w->mode == M_SUMMARY && !w->slaid && w->nsrows) rc = summary_layout(w);
    w->closed = 1;
    if (rc < 0) { werr_raise(); return NULL; }
    if (w_flush(w) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Writer_pending(Writer *w, PyObject *unused) {
    (void)unused;
    return PyLong_FromUnsignedLong(w->nconn);
}

/* ------------------------------------------------------------------ construction */

static int get_str(PyObject *d, const char *key, str_t *s) {
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v || !PyUnicode_Check(v)) {
        PyErr_Format(PyExc_ValueError, "layout[%s]: a string is needed", key);
        return -1;
    }
    return str_from(v, s);
}

static int get_strs(PyObject *d, const char *key, str_t *out, int want, str_t **alloc, int *n) {
    PyObject *v = PyDict_GetItemString(d, key);
    PyObject *seq = v ? PySequence_Fast(v, "a sequence of strings") : NULL;
    if (!seq) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "layout[%s]: a sequence of strings is needed", key);
        return -1;
    }
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
    if (want >= 0 && k != want) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "layout[%s]: %d strings are needed", key, want);
        return -1;
    }
    if (alloc) {
        *alloc = calloc((size_t)k + 1, sizeof(str_t));
        if (!*alloc) { Py_DECREF(seq); PyErr_NoMemory(); return -1; }
        out = *alloc;
        *n = (int)k;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *s = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyUnicode_Check(s) || str_from(s, &out[i]) < 0) {
            Py_DECREF(seq);
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "layout[%s]: strings only", key);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

/* a sequence of column numbers as a bit mask */
static int get_cols(PyObject *d, const char *key, int ncols, unsigned *mask) {
    PyObject *v = PyDict_GetItemString(d, key);
    PyObject *seq = v ? PySequence_Fast(v, "a sequence of column numbers") : NULL;
    if (!seq) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "layout[%s] is missing", key);
        return -1;
    }
    *mask = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        long c = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (c < 0 || c >= ncols) {
            Py_DECREF(seq);
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "layout[%s]: columns 0 to %d", key, ncols - 1);
            return -1;
        }
        *mask |= 1u << c;
    }
    Py_DECREF(seq);
    return 0;
}

static long get_int(PyObject *d, const char *key) {
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v) { PyErr_Format(PyExc_ValueError, "layout[%s] is missing", key); return -1; }
    return PyLong_AsLong(v);
}

static int Writer_init(Writer *w, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"layout", "write", NULL};
    PyObject *lay, *wr;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O", kwlist, &PyDict_Type, &lay, &wr)) return -1;
    if (w->write) { PyErr_SetString(PyExc_RuntimeError, "a Writer is set up once"); return -1; }
    Py_INCREF(wr);
    w->write = wr;
    w->first = 1;
    memset(&w->shapes, -1, sizeof w->shapes);
    PyObject *fmt = PyDict_GetItemString(lay, "format");
    PyObject *summ = PyDict_GetItemString(lay, "summary");
    if (!fmt || !PyUnicode_Check(fmt) || !summ) {
        PyErr_SetString(PyExc_ValueError, "layout: format and summary are needed");
        return -1;
    }
    int summary = PyObject_IsTrue(summ);
    if (summary < 0) return -1;
    w->summary = summary;
    if (PyUnicode_CompareWithASCIIString(fmt, "jsonl") == 0) w->mode = M_JSONL;
    else if (PyUnicode_CompareWithASCIIString(fmt, "csv") == 0) w->mode = M_CSV;
    else if (PyUnicode_CompareWithASCIIString(fmt, "table") == 0) w->mode = summary ? M_SUMMARY : M_TABLE;
    else { PyErr_SetString(PyExc_ValueError, "layout[format]: jsonl, csv or table"); return -1; }
    if ((w->width = get_int(lay, "width")) == -1 && PyErr_Occurred()) return -1;
    long pk = get_int(lay, "anomalies_per_kind");
    if (pk == -1 && PyErr_Occurred()) return -1;
    if (pk < 1 || pk > MAXKEEP) { PyErr_Format(PyExc_ValueError, "anomalies_per_kind: 1 to %d", MAXKEEP); return -1; }
    w->per_kind = (int)pk;
    long batch = get_int(lay, "summary_batch");
    if (batch == -1 && PyErr_Occurred()) return -1;
    w->batch = batch < 1 ? 1 : (int)batch;
    long indent = get_int(lay, "anomaly_indent"), where = get_int(lay, "anomaly_where");
    if ((indent == -1 || where == -1) && PyErr_Occurred()) return -1;
    if (indent < 0 || indent > 64 || where < 0 || where > 64) {
        PyErr_SetString(PyExc_ValueError, "anomaly_indent, anomaly_where: 0 to 64");
        return -1;
    }
    w->awhere = (size_t)where;
    w->afirst_pad.s = calloc((size_t)indent + 1, 1);
    w->arest.s = calloc((size_t)(indent + where + 4) + 1, 1);
    if (!w->afirst_pad.s || !w->arest.s) { PyErr_NoMemory(); return -1; }
    memset(w->afirst_pad.s, ' ', (size_t)indent);
    w->afirst_pad.n = w->afirst_pad.w = (size_t)indent;
    memset(w->arest.s, ' ', (size_t)(indent + where + 4));
    w->arest.n = w->arest.w = (size_t)(indent + where + 4);
    PyObject *ph = PyDict_GetItemString(lay, "phrases");
    if (!ph || !PyDict_Check(ph)) { PyErr_SetString(PyExc_ValueError, "layout[phrases]: a dict"); return -1; }
    for (int i = 0; i < NPHR; i++)
        if (get_str(ph, PHR_KEYS[i], &w->ph[i]) < 0) return -1;
    if (get_strs(lay, "headers", w->hdr, 5, NULL, NULL) < 0) return -1;
    if (get_cols(lay, "wrap_first", 5, &w->wrap_first) < 0 || get_cols(lay, "summary_wrap_first", 6, &w->swrap_first) < 0)
        return -1;
    long floor = get_int(lay, "wrap_first_floor");
    if (floor == -1 && PyErr_Occurred()) return -1;
    w->floor = floor < 0 ? 0 : (size_t)floor;
    if (get_strs(lay, "summary_headers", w->shdr, 6, NULL, NULL) < 0) return -1;
    if (get_strs(lay, "csv_columns", NULL, -1, &w->cols, &w->ncols) < 0) return -1;
    w->colkey = malloc((size_t)w->ncols + 1);
    if (!w->colkey) { PyErr_NoMemory(); return -1; }
    for (int i = 0; i < w->ncols; i++)
        w->colkey[i] = (int8_t)(w->cols[i].n ? key_id(w->cols[i].s, w->cols[i].n) : -1);
    if (w->mode == M_CSV) {                 /* the header row, as csv.writer writes it */
        for (int i = 0; i < w->ncols; i++)
            if ((i && bputc(&w->out, ',') < 0) || csv_text(&w->out, w->cols[i].s, w->cols[i].n) < 0) {
                werr_raise();
                return -1;
            }
        if (bputs(&w->out, "\r\n") < 0) { werr_raise(); return -1; }
    }
    return 0;
}

static void Writer_dealloc(Writer *w) {
    Py_XDECREF(w->write);
    for (int i = 0; i < NPHR; i++) free(w->ph[i].s);
    for (int i = 0; i < 5; i++) free(w->hdr[i].s);
    for (int i = 0; i < 6; i++) free(w->shdr[i].s);
    if (w->cols)
        for (int i = 0; i < w->ncols; i++) free(w->cols[i].s);
    free(w->cols);
    free(w->colkey);
    free(w->afirst_pad.s);
    free(w->arest.s);
    bfree(&w->carry); bfree(&w->out); bfree(&w->scratch); bfree(&w->nscratch);
    bfree(&w->ordb); bfree(&w->cellb); bfree(&w->atb); bfree(&w->txt); bfree(&w->rowbuf); bfree(&w->tmp); bfree(&w->tmp2); bfree(&w->srows);
    lines_free(&w->L);
    for (uint32_t i = 0; i < w->ntab; i++)
        for (wconn_t *c = w->tab[i], *nx; c; c = nx) {
            nx = c->hnext;
            wconn_free(c);
        }
    free(w->tab);
    for (int i = 0; i < w->nnames; i++) free(w->names[i].s);
    free(w->file);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyMethodDef Writer_methods[] = {
    {"feed", (PyCFunction)Writer_feed, METH_O, "feed(bytes): JSON lines (a line may span two calls)"},
    {"set_origin", (PyCFunction)Writer_set_origin, METH_O, "set_origin(seconds or None): what table times count from"},
    {"end_file", (PyCFunction)Writer_end_file, METH_NOARGS, "one capture is done: print what has no connection record"},
    {"close", (PyCFunction)Writer_close, METH_NOARGS, "write everything still held, then flush"},
    {"pending", (PyCFunction)Writer_pending, METH_NOARGS, "how many connections the table holds rows for"},
    {NULL, NULL, 0, NULL}};

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rawfin.render._writer.Writer",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Writer_init,
    .tp_dealloc = (destructor)Writer_dealloc,
    .tp_methods = Writer_methods,
    .tp_doc = "Writer(layout, write): JSON-line records in, table / --summary / csv bytes out through write.",
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "rawfin.render._writer",
                                       "The table, summary and csv writers of rawfin.render.sinks, in C.", -1,
                                       NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__writer(void) {
    keys_init();
    if (PyType_Ready(&WriterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&WriterType);
    if (PyModule_AddObject(m, "Writer", (PyObject *)&WriterType) < 0) { Py_DECREF(m); return NULL; }
#ifdef RAWFIN_SOURCES      /* setup.py: the sha256 of the C sources this was built from (rawfin/wire/native.py) */
    if (PyModule_AddStringConstant(m, "SOURCES", RAWFIN_SOURCES) < 0) { Py_DECREF(m); return NULL; }
#endif
    return m;
}

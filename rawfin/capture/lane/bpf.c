/* rawfin._engine, part bpf (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ --filter: tcpdump's language */

/* The filter is libpcap's own: rawfin.wire.bpf compiles the expression for each link type
   (pcap_compile) and hands over the address of libpcap's bpf_filter, which runs it here on
   every frame before it is decoded. A frame the program rejects is counted and goes no further,
   exactly as rawfin.capture.analysis.records drops it. */

typedef unsigned int (*bpf_fn)(const void *insns, const unsigned char *pkt, unsigned int wirelen,
                               unsigned int buflen);

#define MAXPROGS 16

typedef struct {
    bpf_fn run;             /* NULL: no filter */
    PyObject *compile;      /* linktype -> program bytes (8 bytes per instruction) */
    int n;
    int linktype[MAXPROGS];
    void *prog[MAXPROGS];
} filter_t;

static void filter_clear(filter_t *f) {
    for (int i = 0; i < f->n; i++) free(f->prog[i]);
    f->n = 0;
    f->run = NULL;
    Py_CLEAR(f->compile);
}

/* 1: the frame passes, 0: it does not, -1: error (the expression cannot be compiled for this link type) */
static int filter_pass(filter_t *f, int linktype, const uint8_t *d, Py_ssize_t n, int64_t orig_len) {
    if (!f->run) return 1;
    void *prog = NULL;
    for (int i = 0; i < f->n; i++)
        if (f->linktype[i] == linktype) { prog = f->prog[i]; break; }
    if (!prog) {
        if (f->n == MAXPROGS) { PyErr_SetString(PyExc_RuntimeError, "too many link types for --filter"); return -1; }
        PyObject *b = PyObject_CallFunction(f->compile, "i", linktype);
        if (!b) return -1;
        char *raw;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(b, &raw, &len) < 0) { Py_DECREF(b); return -1; }
        prog = malloc(len ? (size_t)len : 8);
        if (!prog) { Py_DECREF(b); PyErr_NoMemory(); return -1; }
        memcpy(prog, raw, (size_t)len);
        Py_DECREF(b);
        f->linktype[f->n] = linktype;
        f->prog[f->n++] = prog;
    }
    int64_t wire = orig_len > n ? orig_len : n;
    if (wire > 0xFFFFFFFFLL) wire = 0xFFFFFFFFLL;
    return f->run(prog, d, (unsigned int)wire, (unsigned int)n) != 0;
}

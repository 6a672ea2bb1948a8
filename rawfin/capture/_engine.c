/*
 * rawfin._engine: the compiled lane of `rawfin analyze` (and of check's and annotate's analysis).
 *
 * The Python observer (rawfin/core/observer.py with rawfin/core/endpoint.py) is the reference:
 * this file is a transliteration of its common paths -- a connection that opens with a
 * SYN or is picked up mid-stream, exchanges data (with the everyday retransmissions and
 * gaps), closes by FINs or RST, on up to two VLAN tags -- and nothing more.  The moment a
 * connection does anything else (a retransmitted FIN, a lost final ACK, a new SYN on its
 * pair, its directions on two VLANs...) the engine hands it to the Python observer: it
 * replays the connection's events so far into a fresh Python connection (whose records
 * were already written, so they are discarded) and lets Python take the event that did
 * not fit, and every later one.  The output is byte for byte the reference's
 * (tests/test_engine.py runs both on every capture it has).
 *
 * Next states come from rawfin.core.states.TRANSITIONS (set_table), and every other teardown
 * rule -- how a segment is classified in each state, what is held, what a close is called --
 * from rawfin.core.rules (set_rules), both handed over at start; the lane interprets them
 * (lane/interp.c) and decides nothing by itself.
 *
 * Time is a parameter here too: capture time, integer nanoseconds; no clock is read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

/* The lane is one translation unit, cut into parts by concern (rawfin/capture/lane/). */
#include "lane/table.c"
#include "lane/seq.c"
#include "lane/types.c"
#include "lane/bpf.c"
#include "lane/engine.c"
#include "lane/out.c"
#include "lane/conntable.c"
#include "lane/heap.c"
#include "lane/rules.c"
#include "lane/endpoint.c"
#include "lane/interp.c"
#include "lane/observer.c"
#include "lane/handoff.c"
#include "lane/loop.c"
#include "lane/decode.c"
#include "lane/finish.c"
#include "lane/module.c"

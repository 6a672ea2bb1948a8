/* rawfin._engine, part endpoint (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ the endpoint (rawfin/core/endpoint.py) */

#define BAIL 1      /* the connection does something this lane does not model: Python takes it */
#define ERR (-1)    /* a Python exception is set */

static int move(Engine *e, conn_t *c, int side, int inp, const char *cause, int64_t now, int64_t frame) {
    cep_t *p = &c->ep[side];
    int to = TABLE[p->state][inp];
    if (to < 0) return 0;
    int from = p->state;
    p->state = (uint8_t)to;
    if (out_transition(e, c, side, from, to, frame, now, cause) < 0) return ERR;
    if (to == CLOSING) c->closing_seen = 1;
    if (inp == I_RCV_RST && from == SYN_SENT) e->rst_from_syn_sent = 1;
    /* _enter */
    if (to == TIME_WAIT) p->time_wait_at = now + 2 * e->msl_ns;
    if (to == CLOSED || to == LISTEN) p->time_wait_at = -1;
    return 0;
}

/* Segment.describe(): "FIN,ACK seq=1006 ack=2001 len=5" */
static void describe(const ev_t *s, char *out, size_t n) {
    static const struct { uint8_t bit; const char *name; } order[8] = {
        {F_SYN, "SYN"}, {F_FIN, "FIN"}, {F_RST, "RST"}, {8, "PSH"}, {F_ACK, "ACK"}, {32, "URG"}, {64, "ECE"},
        {128, "CWR"}};
    size_t k = 0;
    int any = 0;
    out[0] = 0;
    for (int i = 0; i < 8; i++)
        if (s->flags & order[i].bit) {
            k += (size_t)snprintf(out + k, n - k, "%s%s", any ? "," : "", order[i].name);
            any = 1;
        }
    if (!any) k += (size_t)snprintf(out + k, n - k, "none");
    k += (size_t)snprintf(out + k, n - k, " seq=%u", s->seq);
    if (s->flags & F_ACK) k += (size_t)snprintf(out + k, n - k, " ack=%u", s->ack);
    if (s->data_len) snprintf(out + k, n - k, " len=%u", s->data_len);
}

static int observe_send_call(Engine *e, conn_t *c, int side, const ev_t *s) {
    cep_t *p = &c->ep[side];
    char cause[96];
    int st = p->state;
    if (s->flags & F_RST) {
        if (st != CLOSED && st != LISTEN && st != SYN_SENT && TABLE[st][I_ABORT] >= 0) {
            snprintf(cause, sizeof cause, "snd RST seq=%u", s->seq);
            return move(e, c, side, I_ABORT, cause, s->time_ns, s->frame);
        }
        return 0;
    }
    if (st == SYN_SENT && (s->flags & F_ACK)) return BAIL;      /* syn_ack_not_captured */
    if (s->flags & F_SYN) {
        if (st == CLOSED && !(s->flags & F_ACK)) {
            p->iss = p->snd_una = s->seq;
            p->snd_nxt = seq_end(s);
            snprintf(cause, sizeof cause, "snd SYN seq=%u", s->seq);
            return move(e, c, side, I_CONNECT, cause, s->time_ns, s->frame);
        } else if ((st == SYN_SENT || st == SYN_RECEIVED) && s->seq == p->iss) {
            if ((s->flags & F_ACK) && st == SYN_RECEIVED) { /* the SYN,ACK the table already sent */ }
            else if (st == SYN_SENT) return BAIL;                 /* syn_retransmission */
        } else if (st == SYN_RECEIVED) {
            p->iss = p->snd_una = s->seq;
            p->snd_nxt = seq_end(s);
        }
        return 0;
    }
    uint32_t end = seq_end(s);
    if (s->data_len && p->has_fin && SGE(s->seq, p->fin_seq + 1)) return BAIL;   /* data_after_fin */
    if (s->flags & F_FIN) {
        uint32_t fseq = fin_seq_of(s);
        if (!p->has_fin && (st == ESTABLISHED || st == CLOSE_WAIT || st == SYN_RECEIVED)) {
            p->fin_seq = fseq;
            p->has_fin = 1;
            p->snd_nxt = fseq + 1;
            snprintf(cause, sizeof cause, "snd FIN seq=%u", fseq);
            return move(e, c, side, I_CLOSE, cause, s->time_ns, s->frame);
        }
        if (p->has_fin) return BAIL;        /* fin_retransmission or duplicate_fin */
    }
    if (SGT(end, p->snd_nxt)) p->snd_nxt = end;
    return 0;
}

static int process_ack(Engine *e, conn_t *c, int side, const ev_t *s, int64_t now) {
    cep_t *p = &c->ep[side];
    char cause[96];
    int st = p->state;
    uint32_t ack = s->ack;
    if (st == SYN_RECEIVED) {
        if (SLT(p->snd_una, ack) && SLE(ack, p->snd_nxt)) {
            p->snd_una = ack;
            snprintf(cause, sizeof cause, "rcv ACK ack=%u", ack);
            int r = move(e, c, side, I_RCV_ACK_OF_SYN, cause, now, s->frame);
            if (r) return r;
            st = p->state;
        } else return BAIL;                    /* unacceptable_ack */
    }
    if (SGT(ack, p->snd_nxt)) {
        char detail[160];
        int r;
        if (p->has_fin && SGT(ack, p->fin_seq + 1)) {
            snprintf(detail, sizeof detail, "ack=%u is past FIN seq=%u: nothing follows a FIN, expected at most %u",
                     ack, p->fin_seq, p->fin_seq + 1);
            r = anomaly(e, c, side, "ack_beyond_fin", detail, now, s->frame);
        } else {
            snprintf(detail, sizeof detail, "ack=%u beyond what the capture shows sent (snd_nxt=%u)", ack, p->snd_nxt);
            r = anomaly(e, c, side, "acked_unseen_segment", detail, now, s->frame);
        }
        if (r) return r;
        p->snd_nxt = ack;
    }
    if (SLT(p->snd_una, ack)) p->snd_una = ack;
    if (p->has_fin && (st == FIN_WAIT_1 || st == CLOSING || st == LAST_ACK) && SGE(p->snd_una, p->fin_seq + 1)) {
        snprintf(cause, sizeof cause, "rcv ACK ack=%u of FIN seq=%u", ack, p->fin_seq);
        return move(e, c, side, I_RCV_ACK_OF_FIN, cause, now, s->frame);
    }
    return 0;
}

static int receive_call(Engine *e, conn_t *c, int side, const ev_t *s, int64_t now) {
    cep_t *p = &c->ep[side];
    char cause[96];
    int st = p->state, r;
    uint8_t f = s->flags;
    if (st == CLOSED) {
        if (!((f & F_SYN) && !(f & F_ACK))) return BAIL;      /* segment_after_close */
        return 0;
    }
    if (st == LISTEN) {
        if ((f & F_RST) || (f & F_ACK) || !(f & F_SYN)) return 0;
        p->irs = s->seq;
        p->rcv_nxt = seq_end(s);
        p->snd_una = p->iss;
        p->snd_nxt = p->iss + 1;
        snprintf(cause, sizeof cause, "rcv SYN seq=%u", s->seq);
        return move(e, c, side, I_RCV_SYN, cause, now, s->frame);
    }
    if (st == SYN_SENT) {
        int ack_ok = 0;
        if (f & F_ACK) {
            if (SLE(s->ack, p->iss) || SGT(s->ack, p->snd_nxt)) return BAIL;   /* unacceptable_ack */
            ack_ok = 1;
        }
        if (f & F_RST) {
            if (ack_ok) {
                snprintf(cause, sizeof cause, "rcv RST,ACK ack=%u", s->ack);
                return move(e, c, side, I_RCV_RST, cause, now, s->frame);
            }
            return 0;
        }
        if (!(f & F_SYN)) return 0;
        p->irs = s->seq;
        p->rcv_nxt = s->seq + 1;
        if (ack_ok) {
            p->snd_una = s->ack;
            snprintf(cause, sizeof cause, "rcv SYN,ACK seq=%u ack=%u", s->seq, s->ack);
            return move(e, c, side, I_RCV_SYN_ACK, cause, now, s->frame);
        }
        snprintf(cause, sizeof cause, "rcv SYN seq=%u", s->seq);
        return move(e, c, side, I_RCV_SYN, cause, now, s->frame);
    }
    if (st == TIME_WAIT) {
        if ((f & F_SYN) && !(f & F_ACK) && !(f & F_RST) && SGT(s->seq, p->rcv_nxt)) {
            snprintf(cause, sizeof cause, "rcv SYN seq=%u (above rcv_nxt=%u)", s->seq, p->rcv_nxt);
            return move(e, c, side, I_RCV_NEW_SYN, cause, now, s->frame);
        }
        if (f & F_RST) {
            if (s->seq != p->rcv_nxt) return BAIL;             /* rst_out_of_window */
            snprintf(cause, sizeof cause, "rcv RST seq=%u", s->seq);
            return move(e, c, side, I_RCV_RST, cause, now, s->frame);
        }
        if ((f & F_FIN) || s->data_len) return BAIL;          /* time_wait_reack, retransmission... */
        return 0;
    }
    /* synchronized states */
    if (st == SYN_RECEIVED && (f & F_SYN) && !(f & F_ACK) && s->seq == p->irs) return 0;
    int ok = acceptable(s->seq, seg_len(s), p->rcv_nxt, RCV_WND);
    if (!ok && SGT(s->seq, p->rcv_nxt)) ok = 1;
    if (f & F_RST) {
        if (s->seq != p->rcv_nxt) return BAIL;                /* rst_not_exact, rst_out_of_window */
        int inp = (st == SYN_RECEIVED && p->passive) ? I_RCV_RST_PASSIVE : I_RCV_RST;
        snprintf(cause, sizeof cause, "rcv RST seq=%u", s->seq);
        return move(e, c, side, inp, cause, now, s->frame);
    }
    if (!ok) {
        if ((f & F_FIN) && p->has_peer_fin && fin_seq_of(s) == p->peer_fin_seq) return 0;
        if (seg_len(s)) {
            char d[96], detail[192];
            describe(s, d, sizeof d);
            if (SLE(seq_end(s), p->rcv_nxt)) {
                snprintf(detail, sizeof detail, "%s already received (rcv_nxt=%u)", d, p->rcv_nxt);
                return anomaly(e, c, side, "retransmission", detail, now, s->frame);
            }
            snprintf(detail, sizeof detail, "%s outside the receive window (rcv_nxt=%u)", d, p->rcv_nxt);
            return anomaly(e, c, side, "unacceptable_segment", detail, now, s->frame);
        }
        return 0;
    }
    if (f & F_SYN) return BAIL;                               /* syn_in_window */
    if (!(f & F_ACK)) return BAIL;                            /* no_ack_flag */
    r = process_ack(e, c, side, s, now);
    if (r) return r;
    if (p->state == CLOSED) return 0;
    if (s->data_len) {
        if (p->state != ESTABLISHED && p->state != FIN_WAIT_1 && p->state != FIN_WAIT_2) return BAIL;
        int64_t lead = ssub(p->rcv_nxt, s->seq);
        if (lead < 0) {
            char detail[128];
            snprintf(detail, sizeof detail, "seq=%u but rcv_nxt=%u: %lld bytes missing", s->seq, p->rcv_nxt,
                     (long long)-lead);
            if ((r = anomaly(e, c, side, "previous_segment_not_captured", detail, now, s->frame))) return r;
            lead = 0;
        }
        if (lead < (int64_t)s->data_len) p->rcv_nxt = s->seq + s->data_len;
    }
    if (f & F_FIN) {
        uint32_t fseq = fin_seq_of(s);
        int64_t gap = ssub(fseq, p->rcv_nxt);
        if (gap > 0) {
            char detail[128];
            snprintf(detail, sizeof detail, "FIN seq=%u but rcv_nxt=%u: %lld bytes missing", fseq, p->rcv_nxt,
                     (long long)gap);
            if ((r = anomaly(e, c, side, "previous_segment_not_captured", detail, now, s->frame))) return r;
            gap = 0;
        }
        if (gap == 0) {
            p->rcv_nxt = fseq + 1;
            p->peer_fin_seq = fseq;
            p->has_peer_fin = 1;
            snprintf(cause, sizeof cause, "rcv FIN seq=%u", fseq);
            return move(e, c, side, I_RCV_FIN, cause, now, s->frame);
        }
    }
    return 0;
}

/* Endpoint.receive and Endpoint.observe_send: one Result each */
static int receive(Engine *e, conn_t *c, int side, const ev_t *s, int64_t now) {
    return end_call(e, receive_call(e, c, side, s, now));
}

static int observe_send(Engine *e, conn_t *c, int side, const ev_t *s) {
    return end_call(e, observe_send_call(e, c, side, s));
}

static int handle_timer(Engine *e, conn_t *c, int side, int64_t now) {
    cep_t *p = &c->ep[side];
    if (p->time_wait_at >= 0 && now >= p->time_wait_at)
        return move(e, c, side, I_TIMEOUT_2MSL, e->cause_2msl, now, -1);
    return 0;
}

/* rawfin._engine, part endpoint (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ what the endpoint rows need */

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

/* rawfin._engine, part table (included by rawfin/capture/_engine.c; one translation unit) */
/* ------------------------------------------------------------------ states, inputs, table */

enum { CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING,
       LAST_ACK, TIME_WAIT, NST };
static const char *ST_NAME[NST] = {"CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED",
                                   "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK",
                                   "TIME_WAIT"};
enum { I_LISTEN, I_CONNECT, I_CLOSE, I_ABORT, I_RCV_SYN, I_RCV_SYN_ACK, I_RCV_ACK_OF_SYN, I_RCV_ACK_OF_FIN,
       I_RCV_FIN, I_RCV_RST, I_RCV_RST_PASSIVE, I_RCV_NEW_SYN, I_TIMEOUT_2MSL, I_TIMEOUT_FIN_WAIT_2,
       I_TIMEOUT_GIVE_UP, I_RCV_DATA_AFTER_CLOSE, NIN };
static const char *IN_NAME[NIN] = {"LISTEN", "CONNECT", "CLOSE", "ABORT", "RCV_SYN", "RCV_SYN_ACK",
                                   "RCV_ACK_OF_SYN", "RCV_ACK_OF_FIN", "RCV_FIN", "RCV_RST", "RCV_RST_PASSIVE",
                                   "RCV_NEW_SYN", "TIMEOUT_2MSL", "TIMEOUT_FIN_WAIT_2", "TIMEOUT_GIVE_UP",
                                   "RCV_DATA_AFTER_CLOSE"};
static signed char TABLE[NST][NIN];
static size_t ST_LEN[NST];          /* strlen(ST_NAME[i]), made at import */
static char ST_PAD[NST][16];        /* ST_NAME[i] in 16 bytes (out_state copies them all), made at import */
static int table_set = 0;

static int name_index(const char *name, const char **names, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

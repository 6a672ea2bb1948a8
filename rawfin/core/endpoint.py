"""The sans-IO TCP endpoint: one side of a connection as RFC 9293 describes it.

It reads no clock and opens no socket. Each call takes ``now`` (integer
nanoseconds) and returns a :class:`~rawfin.core.events.Result`: the segments to
send, the transitions taken, the anomalies seen. Sequence-number judgement
happens in :meth:`Endpoint.receive`'s classification; the next state always
comes from :data:`rawfin.core.states.TRANSITIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rawfin.core import seq as sq
from rawfin.core.errors import StateError
from rawfin.core.events import Anomaly, Result, Transition
from rawfin.core.segment import Flags, Segment, fmt_endpoint
from rawfin.core import machine as M
from rawfin.core.machine import STOP, Ctx, run
from rawfin.core.states import Input, State, next_state
from rawfin.core.units import MS, SEC


_ACK = Flags.ACK
#: shutdown()'s ``how``, as Linux numbers them
SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2
_FIN_FROM = (State.ESTABLISHED, State.CLOSE_WAIT, State.SYN_RECEIVED)
#: the states whose send queue may still go out (data before our FIN, then the FIN)
_SENDING = frozenset((State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK))
#: Linux's TCP_INFINITE_SSTHRESH: no slow-start threshold until the first loss
INFINITE_SSTHRESH = 0x7FFFFFFF
#: CUBIC's multiplicative decrease (Linux's tcp_cubic beta 717/1024, RFC 9438 4.6)
_BETA_NUM, _BETA_DEN = 717, 1024
#: Linux's TCP_RESOURCE_PROBE_INTERVAL: how often a send queue the local device refused is tried again
RESOURCE_PROBE_NS = 500 * MS
#: Linux's TCP_ATO_MIN (TCP_DELACK_MIN): the delayed-ACK timeout; TCP_MAX_QUICKACKS: ACKs sent at once at first
DELACK_MIN_NS = 40 * MS
QUICKACKS = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Knobs of one endpoint. Defaults follow Linux where RFC 9293 leaves a choice."""

    msl_ns: int = 30 * SEC            # TIME_WAIT lasts 2*MSL: Linux's 60 s
    rto_ns: int = 1 * SEC             # initial retransmission timeout, until an RTT is measured (RFC 6298 2.1)
    rto_max_ns: int = 120 * SEC
    rto_min_ns: int = 200 * MS        # Linux's TCP_RTO_MIN: the floor of the variance term (RFC 6298 says 1 s)
    user_timeout_ns: int | None = None   # TCP_USER_TIMEOUT (RFC 5482): give up on data unACKed this long
    loss_probe: bool = False          # Linux's tail loss probe (RFC 8985 7), on when SACK was negotiated
    max_retries: int = 15             # Linux tcp_retries2
    fin_wait_2_timeout_ns: int | None = None   # Linux tcp_fin_timeout for orphans; None = RFC
    rcv_wnd: int = 65535
    mss: int = 1460
    init_cwnd: int = 10               # the initial congestion window in segments (RFC 6928; Linux's TCP_INIT_CWND)
    delayed_ack: bool = False         # Linux's delayed ACK (RFC 1122 4.2.3.2); False: every ACK at once (RFC 9293)
    close_on_fin: bool = False        # the application closes the moment it reads EOF
    observer: bool = False            # driven by a capture: send nothing, tolerate capture gaps
    relative_seq: bool = False        # texts show sequence numbers relative to each side's ISN (--seq relative)
    app_reads: bool = False           # the application reads with read(); False: it takes every byte as it comes

    def __post_init__(self) -> None:
        for name in ("msl_ns", "rto_ns", "rto_max_ns", "rto_min_ns", "mss", "max_retries", "init_cwnd"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.user_timeout_ns is not None and (not isinstance(self.user_timeout_ns, int)
                                                 or self.user_timeout_ns <= 0):
            raise ValueError(f"user_timeout_ns must be None or a positive integer, got {self.user_timeout_ns!r}")
        if not 0 <= self.rcv_wnd <= 0xFFFF:
            raise ValueError(f"rcv_wnd must be 0..65535, got {self.rcv_wnd}")


class _Out:
    """Collects what one call produces; turned into a frozen Result at the end."""

    __slots__ = ("segments", "transitions", "anomalies", "data", "retrans")

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.transitions: list[Transition] = []
        self.anomalies: list[Anomaly] = []
        self.data = bytearray()
        self.retrans: list[Segment] = []

    def result(self) -> Result:
        return Result(segments=tuple(self.segments), transitions=tuple(self.transitions),
                      anomalies=tuple(self.anomalies), data=bytes(self.data),
                      retransmissions=tuple(self.retrans))


class OwnBases:
    """A lone endpoint's bases for relative sequence numbers: its own ISN and, once it has it, the peer's
    (``get((ip, port))`` as the observer's dict of bases answers; None: not known, shown absolute)."""


    __slots__ = ("ep",)

    def __init__(self, ep: "Endpoint") -> None:
        self.ep = ep

    def get(self, key):
        ep = self.ep
        if key == ep.local:
            return ep.iss
        if key == ep.remote:
            return ep.irs           # 0 until the peer's SYN arrives: absolute until then
        return None


class Endpoint:
    """One TCP endpoint and its TCB (RFC 9293 names: snd_una, snd_nxt, rcv_nxt, iss, irs)."""

    __slots__ = ("config", "local", "remote", "vlan", "state", "iss", "irs", "snd_una", "snd_nxt", "snd_wnd",
                 "rcv_nxt", "rcv_wnd", "fin_seq", "peer_fin_seq", "passive", "rto_at", "time_wait_at",
                 "fin_wait_2_at", "_rto_cur", "_retries", "_unacked", "_ooo", "_name", "_peer_name",
                 "rd_shut", "wr_shut", "app_closed", "unread", "_sent_at", "srtt8_ns", "mdev4_ns", "mdev_max4_ns",
                 "rttvar4_ns", "_rtt_seq", "_retrans_stamp", "probing", "_tlp_high", "backoff", "total_retrans",
                 "cwnd", "ssthresh", "_cwnd_cnt", "_unsent", "_fin_queued", "_max_out", "_cwnd_usage_seq",
                 "_cwnd_limited", "tx_blocked", "probes_out", "_probes_stamp", "probe0_at", "bases",
                 "delack_at", "_ato", "_quick", "pingpong", "_rcv_wup")

    def __init__(self, *, local: tuple[str, int], remote: tuple[str, int] | None = None,
                 iss: int = 0, config: Config | None = None, vlan: tuple[int, ...] = (),
                 state: State = State.CLOSED) -> None:
        self.config = config or Config()
        self.local = local
        self.remote = remote
        self.vlan = vlan
        self.state = state
        self.iss = sq.wrap(iss)
        self.irs = 0
        self.snd_una = self.iss
        self.snd_nxt = self.iss
        self.snd_wnd = 65535
        self.rcv_nxt = 0
        self.rcv_wnd = self.config.rcv_wnd
        self.fin_seq: int | None = None        # the sequence number our FIN occupies
        self.peer_fin_seq: int | None = None   # the sequence number the peer's FIN occupied
        self.passive = False
        # timers: absolute deadlines in the caller's clock, None when not armed
        self.rto_at: int | None = None
        self.time_wait_at: int | None = None
        self.fin_wait_2_at: int | None = None
        self._rto_cur = self.config.rto_ns
        self._retries = 0
        # tuples, not lists: most endpoints (every observer's) never queue anything
        self._unacked: tuple[Segment, ...] = ()   # sent, not yet acknowledged (retransmission queue)
        self._sent_at: tuple[int, ...] = ()       # when each of them was last sent; -1 once retransmitted (Karn)
        # the RTT estimator (RFC 6298 as Linux's tcp_rtt_estimator keeps it, scaled as Linux scales it):
        # 8 * SRTT, 4 * the mean deviation, its maximum over the current RTT, 4 * RTTVAR (at least rto_min)
        self.srtt8_ns = 0           # 0: no measurement yet
        self.mdev4_ns = self.mdev_max4_ns = self.rttvar4_ns = 0
        self._rtt_seq = 0           # snd_nxt when rttvar last decayed: it decays once per RTT
        self._retrans_stamp: int | None = None   # the first RTO retransmission of what is still unACKed
        self.probing = False        # the armed rto_at is a tail loss probe's, not the RTO's
        self._tlp_high: int | None = None        # snd_nxt when the loss probe went out, until it is ACKed
        self.backoff = 0            # RTO doublings since the last RTT measurement (tcpi_backoff)
        self.total_retrans = 0      # every retransmission, probes included (tcpi_total_retrans)
        self._ooo: tuple[Segment, ...] = ()       # arrived ahead of rcv_nxt
        # congestion control (RFC 5681 with RFC 6928's initial window, as Linux keeps it: in segments)
        self.cwnd = self.config.init_cwnd
        self.ssthresh = INFINITE_SSTHRESH
        self._cwnd_cnt = 0          # segments ACKed toward the next +1 in congestion avoidance
        self._max_out = 0           # the most segments in flight in the current window (Linux's max_packets_out)
        self._cwnd_usage_seq = 0    # snd_nxt when _max_out was taken: a new window starts once it is ACKed
        self._cwnd_limited = False  # the last transmission stopped at cwnd
        # the send queue: written, not yet sent (the window was full); our FIN waits behind it
        self._unsent = b""
        self._fin_queued = False    # close()/shutdown() queued the FIN (fin_seq) and it has not been sent yet
        # the local device (Linux's qdisc) drops what is handed to it: see local_drops()
        self.tx_blocked = False
        self.probes_out = 0         # probes of a send queue that could not go (Linux's icsk_probes_out, tcpi_probes)
        self._probes_stamp: int | None = None     # when the first of those probes fired
        self.probe0_at: int | None = None         # the probe timer (Linux's ICSK_TIME_PROBE0), None when not armed
        # delayed ACK (Config.delayed_ack; Linux's icsk_ack): the timer, its timeout, ACKs left in quick-ACK
        # mode, the interactive ("pingpong") mode a received FIN starts, rcv_nxt when we last sent an ACK
        self.delack_at: int | None = None
        self._ato = 0
        self._quick = 0
        self.pingpong = False
        self._rcv_wup = 0
        self._name: str | None = None
        self._peer_name: str | None = None
        # the application's side of the socket (Linux's sk_shutdown and receive queue)
        self.rd_shut = False        # close(), or shutdown(SHUT_RD): nobody will read what arrives
        self.wr_shut = False        # shutdown(SHUT_WR) (or close()): our FIN is queued or sent
        self.app_closed = False     # close() (or abort()) was called: the socket is an orphan
        # relative sequence numbers in texts (rawfin.core.machine.bases_of): None, absolute; an observer's
        # connection gives its endpoints its own bases (what the capture shows of each side)
        self.bases = OwnBases(self) if self.config.relative_seq and not self.config.observer else None
        self.unread = 0             # bytes delivered that the application has not read (Config.app_reads)

    # -- names ------------------------------------------------------------
    @property
    def name(self) -> str:
        if self._name is None:
            self._name = fmt_endpoint(*self.local)
        return self._name

    @property
    def peer_name(self) -> str:
        if self.remote is None:
            return "*"
        if self._peer_name is None:
            self._peer_name = fmt_endpoint(*self.remote)
        return self._peer_name

    def __repr__(self) -> str:
        return (f"<Endpoint {self.name} {self.state.name} snd_una={self.snd_una} snd_nxt={self.snd_nxt} "
                f"rcv_nxt={self.rcv_nxt}>")

    # -- the table ----------------------------------------------------------
    def _move(self, out: _Out, inp: Input, cause: str, now: int, frame: int | None = None,
              values: tuple = ()) -> bool:
        rule = next_state(self.state, inp)
        if rule is None:
            return False
        old = self.state
        self.state = rule.to
        out.transitions.append(Transition(endpoint=self.name, peer=self.peer_name, from_=old, to=rule.to,
                                          input=inp, cause=cause, time_ns=now, frame=frame, values=values))
        self._enter(rule.to, now)
        return True

    def _enter(self, state: State, now: int) -> None:
        """Timers that belong to the state just entered."""
        cfg = self.config
        if state is State.TIME_WAIT:
            self.time_wait_at = now + 2 * cfg.msl_ns
            self.rto_at = None
            self._unacked = self._sent_at = ()
        elif state is State.FIN_WAIT_2 and cfg.fin_wait_2_timeout_ns is not None:
            self.fin_wait_2_at = now + cfg.fin_wait_2_timeout_ns
        if state in (State.CLOSED, State.LISTEN, State.TIME_WAIT):
            self._unsent = b""          # a reset (or the end) drops what was still waiting to go
            self._fin_queued = False
            self.probe0_at = self._probes_stamp = None    # probes_out stays: TCP_INFO still reports it
            self.delack_at = None
        if state is State.LISTEN:
            self.probes_out = 0
            self._ato = self._quick = 0
            self.pingpong = False
        if state in (State.CLOSED, State.LISTEN):
            self.rto_at = self.time_wait_at = self.fin_wait_2_at = None
            self._unacked = self._sent_at = ()
            self._ooo = ()
            self.cwnd, self.ssthresh, self._cwnd_cnt = cfg.init_cwnd, INFINITE_SSTHRESH, 0
            self._max_out = self._cwnd_usage_seq = 0
            self._cwnd_limited = False
            # a reused endpoint (connect/listen again) starts with a fresh retransmission budget
            self._retries = 0
            self._retrans_stamp = self._tlp_high = None
            self.probing = False
            # and knows nothing of the path yet: the next connection measures its own RTT
            self.srtt8_ns = self.mdev4_ns = self.mdev_max4_ns = self.rttvar4_ns = self.backoff = 0
            self._rto_cur = cfg.rto_ns
        if state is not State.FIN_WAIT_2:
            self.fin_wait_2_at = None

    def shown(self, n: int) -> int:
        """A sequence number of this endpoint's own, as texts show it (absolute, or relative to its ISN)."""
        return n if self.bases is None else sq.relative(n, self.bases.get(self.local))

    def _app(self, call: str, inp: Input) -> None:
        if next_state(self.state, inp) is None:
            raise StateError(call, self.state)

    # -- building segments -------------------------------------------------
    def _seg(self, flags: Flags, seqno: int, payload: bytes = b"", ack: bool = True) -> Segment:
        if self.remote is None:
            raise StateError("send", self.state, "no remote endpoint")
        return Segment(src=self.local[0], dst=self.remote[0], sport=self.local[1], dport=self.remote[1],
                       seq=seqno, ack=self.rcv_nxt if ack else 0, flags=flags | (_ACK if ack else 0),
                       window=self.rcv_wnd, payload=payload, vlan=self.vlan)

    def _emit(self, out: _Out, seg: Segment, now: int, track: bool = True) -> None:
        if self.config.observer:
            return
        if not self.tx_blocked:         # a SYN or SYN,ACK the device dropped is lost: its timer sends it again
            out.segments.append(seg)
        if track and seg.seg_len:
            self._unacked += (seg,)
            self._sent_at += (now,)
            if self.rto_at is None or self.probing:
                self._arm(now)

    def _delay_ack(self, c: Ctx) -> bool:
        """Whether the ACK owed for data or a FIN just taken waits (Linux's __tcp_ack_snd_check): the first
        16 ACKs of a connection go at once (quick-ACK mode) unless a FIN made it interactive; more than a
        full segment unACKed goes at once; else the delayed-ACK timer (40 ms, Linux's TCP_ATO_MIN) is armed,
        and whatever we send first carries the ACK. A FIN taken in FIN_WAIT_1/2, or before any data (the
        timer has no timeout yet), is ACKed at once."""
        st = self.state
        if c.marks & _TOOK_FIN:
            if st is not State.CLOSE_WAIT:
                return False
            self.pingpong = True        # tcp_fin: the peer closed first, our answer (the FIN) may carry the ACK
        if st not in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1, State.FIN_WAIT_2):
            return False
        if not self._ato:
            if not c.seg.data_len:
                return False            # no data yet, no delayed-ACK timeout: Linux's timer fires at once
            self._ato = DELACK_MIN_NS   # the first data: the delayed-ACK engine starts, in quick-ACK mode
            self._quick = QUICKACKS
        if sq.sub(self.rcv_nxt, self._rcv_wup) > self.config.mss or self._ooo:
            return False
        if self._quick and not self.pingpong:
            self._quick -= 1
            return False
        if self.delack_at is None:
            self.delack_at = c.now + self._ato
        return True

    def _result(self, out: _Out) -> Result:
        """The call's Result; with delayed ACKs, a segment it sent carrying the ACK of everything received
        means no ACK is owed any more (Linux's tcp_event_ack_sent)."""
        if self.config.delayed_ack:
            for seg in out.segments:
                if seg.has_ack and not seg.rst and seg.ack == self.rcv_nxt:
                    self.delack_at = None
                    self._rcv_wup = self.rcv_nxt
                    break
        return out.result()

    def _delack(self, out: _Out, now: int) -> None:
        """The delayed-ACK timer fired (Linux's tcp_delack_timer_handler): the ACK goes; an interactive
        connection leaves that mode, otherwise the timeout doubles (up to the RTO)."""
        self.delack_at = None
        if self.pingpong:
            self.pingpong = False
            self._ato = DELACK_MIN_NS
        else:
            self._ato = min(self._ato * 2, self._rto_cur)
        if self.state in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1, State.FIN_WAIT_2,
                          State.CLOSING, State.LAST_ACK):
            self._ack_now(out)

    def _ack_now(self, out: _Out) -> None:
        if not self.config.observer and not self.tx_blocked:
            out.segments.append(self._seg(Flags(0), self.snd_nxt))

    def _anomaly(self, out: _Out, kind: str, detail: str, now: int, frame: int | None, values: tuple = (),
                 at: str | None = None) -> None:
        out.anomalies.append(Anomaly(endpoint=self.name if at is None else at, kind=kind, detail=detail,
                                     time_ns=now, frame=frame, values=values))

    # -- application calls ---------------------------------------------------
    def listen(self, now: int) -> Result:
        self._app("listen", Input.LISTEN)
        out = _Out()
        self.passive = True
        self._move(out, Input.LISTEN, "listen()", now)
        return out.result()

    def connect(self, remote: tuple[str, int], now: int) -> Result:
        self._app("connect", Input.CONNECT)
        out = _Out()
        self.remote = remote
        self._peer_name = None
        self.passive = False
        self.probes_out = self._ato = self._quick = 0
        self.pingpong = False
        self.snd_una = self.iss
        self.snd_nxt = sq.add(self.iss, 1)
        syn = self._seg(Flags.SYN, self.iss, ack=False)
        self._move(out, Input.CONNECT, f"connect(): snd SYN seq={self.shown(self.iss)}", now)
        self._emit(out, syn, now)
        return out.result()

    def send(self, data: bytes, now: int) -> Result:
        if self.state not in (State.ESTABLISHED, State.CLOSE_WAIT):
            raise StateError("send", self.state, "the connection cannot send data now")
        if self._fin_queued:
            raise StateError("send", self.state, "the FIN is queued: nothing can follow it")
        out = _Out()
        self._unsent += bytes(data)
        self._push(out, now)
        return self._result(out)

    # -- the send queue and the congestion window (RFC 5681, RFC 6928; Linux's tcp_write_xmit) ----------------
    @property
    def write_seq(self) -> int:
        """The sequence number after everything written (and the queued FIN): snd_nxt plus the send queue."""
        return sq.add(self.snd_nxt, len(self._unsent) + (1 if self._fin_queued else 0))

    @property
    def in_flight(self) -> int:
        """Segments sent and not yet ACKed (Linux's tcp_packets_in_flight, no SACK)."""
        return len(self._unacked)

    def _push(self, out: _Out, now: int, probe: bool = False) -> None:
        """Send what the congestion window allows of the send queue, the FIN riding on its last segment.
        A FIN that fits one segment goes even when the window is full (Linux's tcp_cwnd_test). ``probe``:
        the tail loss probe sends one new segment whatever the window (RFC 8985 7.3); Linux sends it
        without PSH (a piece of the queued data, not the end of a write)."""
        if (not self._unsent and not self._fin_queued) or self.state not in _SENDING:
            return
        if self.tx_blocked:
            # the device refuses it (Linux: the qdisc drops the skb, it stays in the write queue): with
            # nothing in flight to clock it out, the probe timer tries again (tcp_check_probe_timer)
            if not self._unacked and self.rto_at is None and self.probe0_at is None:
                self.probe0_at = now + max(self._rto_cur, self.config.rto_min_ns)
            return
        mss = self.config.mss
        sent = 0
        self._cwnd_limited = False
        while self._unsent or self._fin_queued:
            chunk = self._unsent[:mss]
            last = len(self._unsent) <= mss
            fin = last and self._fin_queued
            if self.in_flight >= self.cwnd and not fin and not (probe and not sent):
                self._cwnd_limited = True
                break
            # PSH: the end of what was written; a probe's piece of the queue is not (the kernel sends it bare)
            flags = (Flags.PSH if chunk and (last or not probe) else Flags(0)) | (Flags.FIN if fin else Flags(0))
            seg = self._seg(flags, self.snd_nxt, chunk)
            self._unsent = self._unsent[len(chunk):]
            if fin:
                self._fin_queued = False
                self.snd_nxt = sq.add(self.fin_seq, 1)
            else:
                self.snd_nxt = sq.add(self.snd_nxt, len(chunk))
            self._emit(out, seg, now)
            sent += 1
            if probe:
                break
        self._cwnd_validate()

    def _cwnd_validate(self) -> None:
        """Remember the most segments in flight in this window (Linux's tcp_cwnd_validate): slow start
        grows the window only while it is used (RFC 7661's idea)."""
        out = self.in_flight
        if sq.ge(self.snd_una, self._cwnd_usage_seq) or self._cwnd_limited or out > self._max_out:
            self._max_out = out
            self._cwnd_usage_seq = self.snd_nxt

    def _cong_avoid(self, acked: int) -> None:
        """``acked`` segments newly ACKed: slow start (+1 segment each, RFC 5681 3.1) below ssthresh,
        then +1 per window's worth (RFC 5681's congestion avoidance); only while the window limits."""
        if acked <= 0:
            return
        if self.cwnd < self.ssthresh:
            if self.cwnd >= 2 * self._max_out:
                return                  # not cwnd-limited (Linux's tcp_is_cwnd_limited in slow start)
            grown = min(self.cwnd + acked, self.ssthresh)
            acked -= grown - self.cwnd
            self.cwnd = grown
            if not acked:
                return
        elif not self._cwnd_limited:
            return
        self._cwnd_cnt += acked
        if self._cwnd_cnt >= self.cwnd:
            self.cwnd += self._cwnd_cnt // self.cwnd
            self._cwnd_cnt %= self.cwnd

    def close(self, now: int, data: bytes = b"") -> Result:
        """close(), as Linux's tcp_close: the FIN (carrying ``data`` when given); a RST instead when data
        arrived that the application never read (RFC 1122 4.2.2.13, RFC 2525 2.17); nothing more after
        shutdown(SHUT_WR) sent the FIN already. From here on nobody reads: data that still arrives resets
        the connection (rawfin.core.rules, data_after_close). Closing twice is an error."""
        if self.app_closed:
            raise StateError("close", self.state, "the application closed this connection already")
        st = self.state
        if data and (st not in (State.ESTABLISHED, State.CLOSE_WAIT) or self.wr_shut):
            raise StateError("close", st, "cannot send data with the FIN")
        if self.unread and st not in (State.CLOSED, State.LISTEN, State.SYN_SENT, State.TIME_WAIT):
            n = self.unread
            self.unread = 0
            return self._abort(now, f"close() with {n} bytes unread: snd RST seq={self.shown(self.snd_nxt)}")
        out = _Out()
        if st in (State.LISTEN, State.SYN_SENT) or (st in _FIN_FROM and self.fin_seq is None):
            self._close(out, now, data)
        self.app_closed = self.rd_shut = self.wr_shut = True
        return self._result(out)

    def shutdown(self, now: int, how: int = SHUT_WR, data: bytes = b"") -> Result:
        """shutdown(): SHUT_WR sends our FIN (carrying ``data``, bytes written just before, when given;
        the connection still reads: a half-close), SHUT_RD sends nothing (what arrives later is still
        taken, as Linux does, until close()), SHUT_RDWR both. Again is harmless; on a connection that
        is not open it is an error (ENOTCONN)."""
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise ValueError(f"shutdown how must be SHUT_RD (0), SHUT_WR (1) or SHUT_RDWR (2), got {how!r}")
        st = self.state
        if self.app_closed:
            raise StateError("shutdown", st, "the application closed this connection already")
        if st in (State.CLOSED, State.LISTEN):
            raise StateError("shutdown", st, "not connected")
        if data and (how == SHUT_RD or self.wr_shut or st not in (State.ESTABLISHED, State.CLOSE_WAIT)):
            raise StateError("shutdown", st, "cannot send data with the FIN")
        out = _Out()
        if how in (SHUT_RD, SHUT_RDWR):
            self.rd_shut = True
        if how in (SHUT_WR, SHUT_RDWR) and not self.wr_shut:
            self.wr_shut = True
            if st is State.SYN_SENT or (st in _FIN_FROM and self.fin_seq is None):
                self._close(out, now, data)
        return self._result(out)

    def read(self, n: int) -> int:
        """The application reads up to ``n`` bytes of what arrived (Config.app_reads); how many it got."""
        got = min(max(n, 0), self.unread)
        self.unread -= got
        return got

    def _close(self, out: _Out, now: int, data: bytes = b"", frame: int | None = None) -> None:
        if self.state in (State.LISTEN, State.SYN_SENT):
            self._move(out, Input.CLOSE, "close()", now, frame)
            return
        self._unsent += bytes(data)
        self.fin_seq = sq.add(self.snd_nxt, len(self._unsent))
        self._fin_queued = True
        # the FIN rides on the last segment of the send queue, when the congestion window lets that go
        n = -(-len(self._unsent) // self.config.mss)
        if n == 0 or self.in_flight + n - 1 <= self.cwnd:
            cause = f"close(): snd FIN seq={self.shown(self.fin_seq)}"
        else:
            cause = f"close(): FIN seq={self.shown(self.fin_seq)} queued behind {len(self._unsent)} unsent bytes"
        self._move(out, Input.CLOSE, cause, now, frame)
        self._push(out, now)

    def abort(self, now: int) -> Result:
        """close() with SO_LINGER 0: a RST instead of the FIN."""
        self._app("abort", Input.ABORT)
        return self._abort(now, f"abort(): snd RST seq={self.shown(self.snd_nxt)}")

    def _abort(self, now: int, cause: str) -> Result:
        out = _Out()
        sends_rst = self.state not in (State.LISTEN, State.SYN_SENT, State.TIME_WAIT)
        rst = self._seg(Flags.RST, self.snd_nxt) if sends_rst else None
        self._move(out, Input.ABORT, cause if sends_rst else cause.split(":")[0], now)
        if rst is not None:
            self._emit(out, rst, now, track=False)
        self.app_closed = self.rd_shut = self.wr_shut = True
        return out.result()

    def local_drops(self, on: bool) -> None:
        """From now on the local device drops (``on``) or takes what this endpoint hands it: Linux's qdisc
        refusing a packet (``tc qdisc ... pfifo limit 0``; NET_XMIT_DROP). Nothing is sent while it drops:
        written data stays in the send queue and the probe timer tries it every 500 ms (Linux's
        TCP_RESOURCE_PROBE_INTERVAL), counting probes (tcpi_probes) until TCP_USER_TIMEOUT or tcp_retries2
        gives up; a retransmission the device refuses is tried again 500 ms later, without backoff; ACKs
        and RSTs are lost. Taking effect at the next transmission, as a qdisc change does."""
        self.tx_blocked = bool(on)

    def _probe0(self, out: _Out, now: int) -> None:
        """The probe timer fired (Linux's tcp_probe_timer/tcp_send_probe0 for a queue the device refused)."""
        self.probe0_at = None
        if self._unacked or not (self._unsent or self._fin_queued) or self.state not in _SENDING:
            self.probes_out, self._probes_stamp = 0, None
            return
        ut = self.config.user_timeout_ns
        if self._probes_stamp is None:
            self._probes_stamp = now
        elif ut is not None and now - self._probes_stamp >= ut:
            self._move(out, Input.TIMEOUT_GIVE_UP, f"gave up: nothing could be sent for TCP_USER_TIMEOUT "
                                                   f"({self.probes_out} probes)", now)
            return
        if self.probes_out >= self.config.max_retries:
            self._move(out, Input.TIMEOUT_GIVE_UP, f"gave up after {self.probes_out} probes", now)
            return
        if not self.tx_blocked:
            self._push(out, now)        # the device takes it again: the queue goes, the RTO takes over
            self.probes_out, self._probes_stamp = 0, None
            return
        self.probes_out += 1
        wait = RESOURCE_PROBE_NS
        if ut is not None:              # never past the user timeout (tcp_clamp_probe0_to_user_timeout)
            wait = min(wait, max(ut - (now - self._probes_stamp), 2 * MS))
        self.probe0_at = now + wait

    # -- time ------------------------------------------------------------------
    def next_deadline(self) -> int | None:
        """The earliest armed timer, or None."""
        ds = [d for d in (self.rto_at, self.time_wait_at, self.fin_wait_2_at, self.probe0_at, self.delack_at)
              if d is not None]
        return min(ds) if ds else None

    def handle_timer(self, now: int) -> Result:
        """Fire every timer due at ``now``, in rawfin.core.rules.TIMERS' order."""
        out = _Out()
        if self.probe0_at is not None and now >= self.probe0_at:
            self._probe0(out, now)      # never armed on an observer's endpoint: not one of the shared TIMERS
        if self.delack_at is not None and now >= self.delack_at:
            self._delack(out, now)      # the same: an observer's endpoint sends nothing
        c = Ctx()
        c.ep, c.seg, c.now, c.out = self, None, now, out
        run(PROGRAMS.timers, c)
        return self._result(out)

    # -- the retransmission timer: RFC 6298 with Linux's constants, RFC 8985's tail loss probe ------------------
    @property
    def rto_ns(self) -> int:
        """The RTO the next transmission gets, backoff included (Linux's icsk_rto)."""
        return self._rto_cur

    def _rto_base(self) -> int:
        """SRTT + 4 * RTTVAR (RFC 6298 2.3; the variance term at least rto_min, as Linux has it)."""
        if not self.srtt8_ns:
            return self.config.rto_ns
        return min((self.srtt8_ns >> 3) + self.rttvar4_ns, self.config.rto_max_ns)

    def _rtt_sample(self, m: int) -> None:
        """One RTT measurement of ``m`` ns (Linux's tcp_rtt_estimator: RFC 6298 2.2/2.3 with its gains, a
        mean deviation that shrinks slowly, and RTTVAR taken from the largest deviation of each RTT)."""
        m = max(m, 0)
        rto_min = self.config.rto_min_ns
        if self.srtt8_ns:
            err = m - (self.srtt8_ns >> 3)
            srtt8 = self.srtt8_ns + err                  # SRTT = 7/8 SRTT + 1/8 R
            if err < 0:
                err = -err - (self.mdev4_ns >> 2)
                if err > 0:
                    err >>= 3                            # a falling RTT moves the deviation 8 times less
            else:
                err -= self.mdev4_ns >> 2
            self.mdev4_ns += err                         # MDEV = 3/4 MDEV + 1/4 |err|
            if self.mdev4_ns > self.mdev_max4_ns:
                self.mdev_max4_ns = self.mdev4_ns
                if self.mdev_max4_ns > self.rttvar4_ns:
                    self.rttvar4_ns = self.mdev_max4_ns
            if sq.gt(self.snd_una, self._rtt_seq):      # once per RTT: RTTVAR decays toward this RTT's maximum
                if self.mdev_max4_ns < self.rttvar4_ns:
                    self.rttvar4_ns -= (self.rttvar4_ns - self.mdev_max4_ns) >> 2
                self._rtt_seq = self.snd_nxt
                self.mdev_max4_ns = rto_min
        else:                                            # the first measurement: SRTT = R, RTTVAR = R/2 (2.2)
            srtt8 = m << 3
            self.mdev4_ns = m << 1
            self.rttvar4_ns = self.mdev_max4_ns = max(self.mdev4_ns, rto_min)
            self._rtt_seq = self.snd_nxt
        self.srtt8_ns = max(1, srtt8)
        self._rto_cur = self._rto_base()
        self.backoff = 0                                 # RFC 6298 5.7: a measurement ends the backoff

    def _measure(self, acked: int, now: int) -> None:
        """An RTT sample from the oldest of the first ``acked`` queued segments, unless one of them was
        retransmitted (Karn's rule, RFC 6298 3)."""
        sent = self._sent_at[:acked]
        if sent and min(sent) >= 0:
            self._rtt_sample(now - sent[0])

    def _pto(self, now: int) -> int:
        """When the tail loss probe fires (Linux's tcp_schedule_loss_probe): 2 * SRTT, plus rto_min for a lone
        segment (the peer may delay its ACK) or 2 ms, and never after the RTO would."""
        if self.srtt8_ns:
            pto = (self.srtt8_ns >> 2) + (self.config.rto_min_ns if len(self._unacked) == 1 else 2 * MS)
        else:
            pto = 1 * SEC
        rto_left = self._sent_at[0] + self._rto_cur - now if self._sent_at and self._sent_at[0] >= 0 \
            else self._rto_cur
        return min(pto, max(rto_left, 1))

    def _arm(self, now: int) -> None:
        """Arm the retransmission timer for what is queued: the loss probe when it may go (RFC 8985 7.2:
        synchronized, no RTO since the last ACK, no probe unanswered), else the RTO."""
        if (self.config.loss_probe and self._retries == 0 and self._tlp_high is None
                and self.state not in (State.SYN_SENT, State.SYN_RECEIVED)):
            self.rto_at, self.probing = now + self._pto(now), True
        else:
            self.rto_at, self.probing = now + self._rto_cur, False

    def _retransmit(self, out: _Out, now: int) -> None:
        """The RTO fired: the oldest segment again, the RTO doubled (RFC 6298 5.4-5.6), never past what
        TCP_USER_TIMEOUT leaves (Linux's tcp_clamp_rto_to_user_timeout)."""
        first = self._unacked[0]
        again = first.with_(ack=self.rcv_nxt if first.has_ack else 0)
        if self.tx_blocked and not first.syn:
            # the device refused the retransmission (tcp_retransmit_timer): counted, tried again in 500 ms,
            # no backoff
            self._retries += 1
            if self._retrans_stamp is None:
                self._retrans_stamp = now
            wait = RESOURCE_PROBE_NS
            ut = self.config.user_timeout_ns
            if ut is not None:
                wait = max(min(wait, self._retrans_stamp + ut - now), 1)
            self.rto_at, self.probing = now + wait, False
            return
        if not first.syn:
            # RFC 5681 3.1 (Linux's tcp_enter_loss): the window collapses to one segment; the threshold is
            # taken once per loss episode, CUBIC's 0.7 of the window (RFC 9438 4.6), at least 2
            if self._retries == 0:
                self.ssthresh = max(self.cwnd * _BETA_NUM // _BETA_DEN, 2)
            self.cwnd, self._cwnd_cnt = 1, 0
        out.segments.append(again)
        out.retrans.append(again)
        self._sent_at = (-1,) + self._sent_at[1:]
        self._retries += 1
        self.total_retrans += 1
        if self._retrans_stamp is None:
            self._retrans_stamp = now
        self.backoff += 1
        self._rto_cur = min(self._rto_cur * 2, self.config.rto_max_ns)
        wait = self._rto_cur
        ut = self.config.user_timeout_ns
        if ut is not None:
            wait = max(min(wait, self._retrans_stamp + ut - now), 1)
        self.rto_at, self.probing = now + wait, False

    def _probe(self, out: _Out, now: int) -> None:
        """The tail loss probe fired (RFC 8985 7.3): a new segment when the send queue has one, else the last
        segment again; no backoff; then the RTO."""
        if self.tx_blocked:             # the device refused the probe: the RTO is next (tcp_send_loss_probe)
            self.rto_at, self.probing = now + self._rto_cur, False
            return
        if self._unsent or self._fin_queued:
            self._push(out, now, probe=True)
            self._tlp_high = self.snd_nxt
            self.rto_at, self.probing = now + self._rto_cur, False
            return
        last = self._unacked[-1]
        again = last.with_(ack=self.rcv_nxt if last.has_ack else 0)
        out.segments.append(again)
        out.retrans.append(again)
        self._sent_at = self._sent_at[:-1] + (-1,)
        self.total_retrans += 1
        self._tlp_high = self.snd_nxt
        self.rto_at, self.probing = now + self._rto_cur, False

    def rtx_info(self) -> dict[str, int]:
        """The retransmission state as numbers (what Linux's TCP_INFO reports of it): SRTT and the mean
        deviation (ns), the RTO with its backoff, RTO retransmissions of the segment now first in the queue,
        segments queued and how many of them were sent again, every retransmission so far."""
        return {"srtt_ns": self.srtt8_ns >> 3, "mdev_ns": self.mdev4_ns >> 2, "rto_ns": self._rto_cur,
                "backoff": self.backoff, "retransmits": self._retries, "unacked": len(self._unacked),
                "retrans": sum(1 for t in self._sent_at if t < 0), "total_retrans": self.total_retrans,
                "probes": self.probes_out}

    def user_timeout_expired(self, now: int) -> bool:
        """TCP_USER_TIMEOUT has passed since the first retransmission of what is still unACKed (Linux's
        retransmits_timed_out)."""
        ut = self.config.user_timeout_ns
        return ut is not None and self._retrans_stamp is not None and now - self._retrans_stamp >= ut

    # -- observer mode: what the wire shows this endpoint sending ------------------
    def pick_up(self, *, state: State, snd_nxt: int, rcv_nxt: int | None, remote: tuple[str, int]) -> None:
        """Start tracking a connection already under way (no handshake seen)."""
        self.state = state
        self.remote = remote
        self._peer_name = None
        self.iss = self.snd_una = self.snd_nxt = sq.wrap(snd_nxt)
        if rcv_nxt is not None:
            self.irs = self.rcv_nxt = sq.wrap(rcv_nxt)

    def observe_send(self, seg: Segment, now: int) -> Result:
        """The wire shows this endpoint sending ``seg``: infer the application call behind it
        (rawfin.core.rules.OBSERVE_SEND)."""
        out = _Out()
        c = Ctx()
        c.ep, c.seg, c.now, c.out = self, seg, now, out
        run(PROGRAMS.observe_send[self.state], c)
        return out.result()

    # -- arriving segments ---------------------------------------------------------
    def receive(self, seg: Segment, now: int) -> Result:
        out = _Out()
        had_gap = bool(self._ooo)
        if self.probes_out and seg.has_ack:
            self.probes_out = 0         # the peer answers (Linux's tcp_ack): probing starts over
        self._receive(out, seg, now)
        # segments that arrived ahead of a gap, now in order
        while self._ooo and self.state not in (State.CLOSED, State.LISTEN):
            ready = [s for s in self._ooo if sq.le(s.seq, self.rcv_nxt)]
            if not ready:
                break
            self._ooo = tuple(s for s in self._ooo if s not in ready)
            for s in sorted(ready, key=lambda s: sq.sub(s.seq, self.rcv_nxt)):
                self._receive(out, s, now)
        if had_gap and self.delack_at is not None:
            self._ack_now(out)          # a gap filled, or still open: Linux ACKs at once (ICSK_ACK_NOW)
        if self._unsent or self._fin_queued:
            self._push(out, now)        # an ACK opened the congestion window: what waited goes now
        return self._result(out)

    def _receive(self, out: _Out, seg: Segment, now: int) -> None:
        """One segment, classified and acted on as rawfin.core.rules.RECEIVE has it for this state."""
        c = Ctx()
        c.ep, c.seg, c.now, c.out = self, seg, now, out
        run(PROGRAMS.receive[self.state], c)

    def _reset_reply(self, seg: Segment) -> Segment:
        """RFC 9293's reply to a segment for no connection (what Linux sends too)."""
        base = Segment(src=seg.dst, dst=seg.src, sport=seg.dport, dport=seg.sport, vlan=seg.vlan, window=0)
        if seg.has_ack:
            return base.with_(seq=seg.ack, flags=Flags.RST)
        return base.with_(seq=0, ack=seg.seq_end, flags=Flags.RST | Flags.ACK)


# -- the endpoint's primitives: what the actions of rawfin.core.rules do to an Endpoint -----------------------

def _frame(c: Ctx) -> int | None:
    return c.seg.frame if c.seg is not None else None


def _text(tpl: tuple, c: Ctx, now: int, frame: int | None) -> tuple:
    """(text, now, frame, values) for _move and _anomaly."""
    text, values = M.render_template(tpl, c)
    return text, now, frame, values


def _send(what: str):
    if what == "ACK":
        def ack(c):
            ep = c.ep
            if ep.config.delayed_ack and c.marks & _NEED_ACK and ep._delay_ack(c):
                return
            ep._ack_now(c.out)
        return ack

    if what == "RST":
        def rst(c):
            if not c.ep.config.observer and not c.ep.tx_blocked:
                c.out.segments.append(c.ep._reset_reply(c.seg))
        return rst
    track = what == "SYN,ACK"

    def synack(c):
        c.ep._emit(c.out, c.ep._seg(Flags.SYN, c.ep.iss), c.now, track=track)
    return synack


def _remote(side: str):
    if side == "src":
        def f(c):
            ep, seg = c.ep, c.seg
            ep.remote = (seg.src, seg.sport)
            ep._peer_name = None
            ep.vlan = seg.vlan
        return f

    def g(c):
        c.ep.remote = (c.seg.dst, c.seg.dport)
        c.ep._peer_name = None
    return g


def _synchronized(c: Ctx) -> None:
    ep = c.ep
    if ep._unacked and ep._unacked[0].syn:
        ep._measure(1, c.now)      # the SYN's (or SYN,ACK's) round trip, unless it was sent again (Karn)
    ep._unacked = ep._sent_at = ()
    ep.rto_at = None
    ep.probing = False
    ep._retries = 0                # SYN and SYN,ACK retries are not data retries
    ep._retrans_stamp = None
    if not ep.srtt8_ns:
        ep._rto_cur = ep.config.rto_ns
        ep.backoff = 0


def _acked(c: Ctx) -> None:
    ep, ack = c.ep, c.seg.ack
    ep.snd_una = ack
    done = 0
    while done < len(ep._unacked) and not sq.gt(ep._unacked[done].seq_end, ack):
        done += 1
    ep._measure(done, c.now)
    ep._unacked, ep._sent_at = ep._unacked[done:], ep._sent_at[done:]
    if not ep.config.observer:
        ep._cong_avoid(done)
    ep._retries = 0
    ep._retrans_stamp = None
    if ep._tlp_high is not None and sq.ge(ack, ep._tlp_high):
        ep._tlp_high = None        # the probe (or what it probed for) arrived
    if ep._unacked:
        ep._arm(c.now)
    else:
        ep.rto_at, ep.probing = None, False


def _take_data(c: Ctx) -> None:
    ep, seg = c.ep, c.seg
    lead = sq.sub(ep.rcv_nxt, seg.seq)      # bytes of this segment we already have
    if lead < 0:
        lead = 0
    if lead < seg.data_len:
        c.out.data += seg.payload[lead:]
        ep.rcv_nxt = sq.add(seg.seq, seg.data_len)
        if ep.config.app_reads:
            ep.unread += seg.data_len - lead


def _queue(c: Ctx) -> None:
    if c.seg not in c.ep._ooo:
        c.ep._ooo += (c.seg,)


def _disarm_rto(c: Ctx) -> None:
    c.ep.rto_at = None
    c.ep.probing = False


def endpoint_action(a: tuple):
    """An action of the IR as a function of the context (returns STOP to end the program)."""
    name, args = a
    if name == "stop":
        return lambda c: STOP
    if name == "move":
        inp, tpl = _INPUTS[args[0]], args[1]
        return lambda c: c.ep._move(c.out, inp, *_text(tpl, c, c.now, _frame(c))) and None
    if name == "anomaly":
        kind, tpl = args[1], args[2]
        if args[0] == "peer":           # what the arriving segment's sender did: the anomaly is the sender's
            return lambda c: c.ep._anomaly(c.out, kind, *_text(tpl, c, c.now, _frame(c)),
                                           at=fmt_endpoint(c.seg.src, c.seg.sport))
        return lambda c: c.ep._anomaly(c.out, kind, *_text(tpl, c, c.now, _frame(c)))
    if name == "set":
        return M.setter(*args)
    if name == "send":
        return _send(args[0])
    if name == "mark":
        return M.marker(args[0])
    if name == "remote":
        return _remote(args[0])
    if name == "close":
        return lambda c: c.ep._close(c.out, c.now, frame=_frame(c))
    if name == "retransmit":
        return lambda c: c.ep._retransmit(c.out, c.now)
    if name == "probe":
        return lambda c: c.ep._probe(c.out, c.now)
    simple = {"synchronized": _synchronized, "acked": _acked, "take_data": _take_data, "queue": _queue,
              "disarm_rto": _disarm_rto}
    if name in simple:
        return simple[name]
    raise M.RuleError(f"an endpoint cannot {name!r}")


_INPUTS = list(Input)
_NEED_ACK, _TOOK_FIN = M.mark_bit("need_ack"), M.mark_bit("took_fin")


class _Programs(M.Lazy):
    """The endpoint's programs, built from the rules in force (rawfin.core.machine.install)."""

    __slots__ = ("_compiled", "receive", "observe_send", "timers")
    builders = {
        "receive": lambda c: M.PerState(c.receive, lambda p: M.build_program(p, endpoint_action)),
        "observe_send": lambda c: M.PerState(c.observe_send, lambda p: M.build_program(p, endpoint_action)),
        "timers": lambda c: M.build_program(c.timers, endpoint_action),
    }


PROGRAMS = _Programs()
M.on_install(PROGRAMS.load)

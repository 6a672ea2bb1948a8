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
from rawfin.core.states import Input, State, next_state
from rawfin.core.units import SEC


_ACK = Flags.ACK
_SYNCHRONIZED_DATA = (State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2)
_OUR_FIN_SENT = (State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSING, State.LAST_ACK, State.TIME_WAIT)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Knobs of one endpoint. Defaults follow Linux where RFC 9293 leaves a choice."""

    msl_ns: int = 30 * SEC            # TIME_WAIT lasts 2*MSL: Linux's 60 s
    rto_ns: int = 1 * SEC             # initial retransmission timeout (RFC 6298)
    rto_max_ns: int = 120 * SEC
    max_retries: int = 15             # Linux tcp_retries2
    fin_wait_2_timeout_ns: int | None = None   # Linux tcp_fin_timeout for orphans; None = RFC
    rcv_wnd: int = 65535
    mss: int = 1460
    close_on_fin: bool = False        # the application closes the moment it reads EOF
    observer: bool = False            # driven by a capture: send nothing, tolerate capture gaps

    def __post_init__(self) -> None:
        for name in ("msl_ns", "rto_ns", "rto_max_ns", "mss", "max_retries"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
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


class Endpoint:
    """One TCP endpoint and its TCB (RFC 9293 names: snd_una, snd_nxt, rcv_nxt, iss, irs)."""

    __slots__ = ("config", "local", "remote", "vlan", "state", "iss", "irs", "snd_una", "snd_nxt", "snd_wnd",
                 "rcv_nxt", "rcv_wnd", "fin_seq", "peer_fin_seq", "passive", "rto_at", "time_wait_at",
                 "fin_wait_2_at", "_rto_cur", "_retries", "_unacked", "_ooo", "_name", "_peer_name")

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
        self._ooo: tuple[Segment, ...] = ()       # arrived ahead of rcv_nxt
        self._name: str | None = None
        self._peer_name: str | None = None

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
    def _move(self, out: _Out, inp: Input, cause: str, now: int, frame: int | None = None) -> bool:
        rule = next_state(self.state, inp)
        if rule is None:
            return False
        old = self.state
        self.state = rule.to
        out.transitions.append(Transition(endpoint=self.name, peer=self.peer_name, from_=old, to=rule.to,
                                          input=inp, cause=cause, time_ns=now, frame=frame))
        self._enter(rule.to, now)
        return True

    def _enter(self, state: State, now: int) -> None:
        """Timers that belong to the state just entered."""
        cfg = self.config
        if state is State.TIME_WAIT:
            self.time_wait_at = now + 2 * cfg.msl_ns
            self.rto_at = None
            self._unacked = ()
        elif state is State.FIN_WAIT_2 and cfg.fin_wait_2_timeout_ns is not None:
            self.fin_wait_2_at = now + cfg.fin_wait_2_timeout_ns
        if state in (State.CLOSED, State.LISTEN):
            self.rto_at = self.time_wait_at = self.fin_wait_2_at = None
            self._unacked = ()
            self._ooo = ()
            # a reused endpoint (connect/listen again) starts with a fresh retransmission budget
            self._retries = 0
            self._rto_cur = cfg.rto_ns
        if state is not State.FIN_WAIT_2:
            self.fin_wait_2_at = None

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
        out.segments.append(seg)
        if track and seg.seg_len:
            self._unacked += (seg,)
            if self.rto_at is None:
                self.rto_at = now + self._rto_cur

    def _ack_now(self, out: _Out) -> None:
        if not self.config.observer:
            out.segments.append(self._seg(Flags(0), self.snd_nxt))

    def _anomaly(self, out: _Out, kind: str, detail: str, now: int, frame: int | None) -> None:
        out.anomalies.append(Anomaly(endpoint=self.name, kind=kind, detail=detail, time_ns=now, frame=frame))

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
        self.snd_una = self.iss
        self.snd_nxt = sq.add(self.iss, 1)
        syn = self._seg(Flags.SYN, self.iss, ack=False)
        self._move(out, Input.CONNECT, f"connect(): snd SYN seq={self.iss}", now)
        self._emit(out, syn, now)
        return out.result()

    def send(self, data: bytes, now: int) -> Result:
        if self.state not in (State.ESTABLISHED, State.CLOSE_WAIT):
            raise StateError("send", self.state, "the connection cannot send data now")
        out = _Out()
        mss = self.config.mss
        for i in range(0, len(data), mss):
            chunk = data[i:i + mss]
            seg = self._seg(Flags.PSH, self.snd_nxt, chunk)
            self.snd_nxt = sq.add(self.snd_nxt, len(chunk))
            self._emit(out, seg, now)
        return out.result()

    def close(self, now: int, data: bytes = b"") -> Result:
        """close() or shutdown(SHUT_WR): send our FIN (carrying ``data`` when given)."""
        self._app("close", Input.CLOSE)
        if data and self.state not in (State.ESTABLISHED, State.CLOSE_WAIT):
            raise StateError("close", self.state, "cannot send data with the FIN")
        out = _Out()
        self._close(out, now, data)
        return out.result()

    def shutdown(self, now: int) -> Result:
        """shutdown(SHUT_WR): our FIN goes out; we keep receiving (half-close)."""
        self._app("shutdown", Input.CLOSE)
        out = _Out()
        self._close(out, now)
        return out.result()

    def _close(self, out: _Out, now: int, data: bytes = b"", frame: int | None = None) -> None:
        if self.state in (State.LISTEN, State.SYN_SENT):
            self._move(out, Input.CLOSE, "close()", now, frame)
            return
        self.fin_seq = sq.add(self.snd_nxt, len(data))
        fin = self._seg(Flags.FIN | (Flags.PSH if data else 0), self.snd_nxt, data)
        self.snd_nxt = sq.add(self.fin_seq, 1)
        self._move(out, Input.CLOSE, f"close(): snd FIN seq={self.fin_seq}", now, frame)
        self._emit(out, fin, now)

    def abort(self, now: int) -> Result:
        self._app("abort", Input.ABORT)
        out = _Out()
        sends_rst = self.state not in (State.LISTEN, State.SYN_SENT, State.TIME_WAIT)
        cause = f"abort(): snd RST seq={self.snd_nxt}" if sends_rst else "abort()"
        rst = self._seg(Flags.RST, self.snd_nxt) if sends_rst else None
        self._move(out, Input.ABORT, cause, now)
        if rst is not None:
            self._emit(out, rst, now, track=False)
        return out.result()

    # -- time ------------------------------------------------------------------
    def next_deadline(self) -> int | None:
        """The earliest armed timer, or None."""
        ds = [d for d in (self.rto_at, self.time_wait_at, self.fin_wait_2_at) if d is not None]
        return min(ds) if ds else None

    def handle_timer(self, now: int) -> Result:
        """Fire every timer due at ``now``."""
        out = _Out()
        if self.time_wait_at is not None and now >= self.time_wait_at:
            waited = 2 * self.config.msl_ns / SEC
            self._move(out, Input.TIMEOUT_2MSL, f"2MSL expired ({waited:g} s in TIME_WAIT)", now)
        if self.fin_wait_2_at is not None and now >= self.fin_wait_2_at:
            self._move(out, Input.TIMEOUT_FIN_WAIT_2, "FIN_WAIT_2 timeout", now)
        if self.rto_at is not None and now >= self.rto_at and self._unacked:
            if self._retries >= self.config.max_retries:
                self._move(out, Input.TIMEOUT_GIVE_UP, f"gave up after {self._retries} retransmissions", now)
            else:
                first = self._unacked[0]
                again = first.with_(ack=self.rcv_nxt if first.has_ack else 0)
                out.segments.append(again)
                out.retrans.append(again)
                self._retries += 1
                self._rto_cur = min(self._rto_cur * 2, self.config.rto_max_ns)
                self.rto_at = now + self._rto_cur
        elif self.rto_at is not None and not self._unacked:
            self.rto_at = None
        return out.result()

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
        """The wire shows this endpoint sending ``seg``: infer the application call behind it."""
        out = _Out()
        frame = seg.frame
        st = self.state
        if seg.rst:
            # SYN_SENT's RST answers an unacceptable ACK (RFC 9293 3.10.7.3): no abort
            if st not in (State.CLOSED, State.LISTEN, State.SYN_SENT) and next_state(st, Input.ABORT):
                self._move(out, Input.ABORT, f"snd RST seq={seg.seq}", now, frame)
            return out.result()
        if st is State.SYN_SENT and seg.has_ack:
            # it ACKs a SYN,ACK the capture does not show
            self.irs = sq.add(seg.ack, -1)
            self.rcv_nxt = seg.ack
            self._anomaly(out, "syn_ack_not_captured",
                          f"snd ACK ack={seg.ack} implies a SYN,ACK seq={self.irs} not in the capture", now, frame)
            self._move(out, Input.RCV_SYN_ACK, f"SYN,ACK not captured (snd ACK ack={seg.ack})", now, frame)
            st = self.state
        if seg.syn:
            if st is State.CLOSED and not seg.has_ack:
                self.remote = (seg.dst, seg.dport)
                self._peer_name = None
                self.iss = self.snd_una = seg.seq
                self.snd_nxt = seg.seq_end
                self._move(out, Input.CONNECT, f"snd SYN seq={seg.seq}", now, frame)
            elif st in (State.SYN_SENT, State.SYN_RECEIVED) and seg.seq == self.iss:
                if seg.has_ack and st is State.SYN_RECEIVED:
                    pass  # a SYN,ACK (or its retransmission) as the table already sent
                elif st is State.SYN_SENT:
                    self._anomaly(out, "syn_retransmission", f"SYN seq={seg.seq} sent again", now, frame)
            elif st is State.SYN_RECEIVED:
                self.iss = self.snd_una = seg.seq
                self.snd_nxt = seg.seq_end
            return out.result()
        end = seg.seq_end
        if seg.data_len and self.fin_seq is not None and sq.ge(seg.seq, sq.add(self.fin_seq, 1)):
            self._anomaly(out, "data_after_fin",
                          f"{seg.data_len} bytes at seq={seg.seq} after this side's FIN seq={self.fin_seq}",
                          now, frame)
        if seg.fin:
            fseq = seg.fin_seq
            if self.fin_seq is None and st in (State.ESTABLISHED, State.CLOSE_WAIT, State.SYN_RECEIVED):
                self.snd_nxt = fseq
                self.fin_seq = fseq
                self.snd_nxt = sq.add(fseq, 1)
                self._move(out, Input.CLOSE, f"snd FIN seq={fseq}", now, frame)
                return out.result()
            if self.fin_seq is not None and fseq == self.fin_seq:
                self._anomaly(out, "fin_retransmission", f"FIN seq={fseq} sent again", now, frame)
            elif self.fin_seq is not None:
                self._anomaly(out, "duplicate_fin",
                              f"second FIN at seq={fseq}; this side's FIN was seq={self.fin_seq}", now, frame)
        if sq.gt(end, self.snd_nxt):
            self.snd_nxt = end
        return out.result()

    # -- arriving segments ---------------------------------------------------------
    def receive(self, seg: Segment, now: int) -> Result:
        out = _Out()
        self._receive(out, seg, now)
        # segments that arrived ahead of a gap, now in order
        while self._ooo and self.state not in (State.CLOSED, State.LISTEN):
            ready = [s for s in self._ooo if sq.le(s.seq, self.rcv_nxt)]
            if not ready:
                break
            self._ooo = tuple(s for s in self._ooo if s not in ready)
            for s in sorted(ready, key=lambda s: sq.sub(s.seq, self.rcv_nxt)):
                self._receive(out, s, now)
        return out.result()

    def _receive(self, out: _Out, seg: Segment, now: int) -> None:
        st = self.state
        frame = seg.frame
        if st is State.CLOSED:
            self._rcv_closed(out, seg, now)
        elif st is State.LISTEN:
            self._rcv_listen(out, seg, now)
        elif st is State.SYN_SENT:
            self._rcv_syn_sent(out, seg, now)
        elif st is State.TIME_WAIT:
            self._rcv_time_wait(out, seg, now)
        else:
            self._rcv_synchronized(out, seg, now, frame)

    def _reset_reply(self, seg: Segment) -> Segment:
        """RFC 9293's reply to a segment for no connection (what Linux sends too)."""
        base = Segment(src=seg.dst, dst=seg.src, sport=seg.dport, dport=seg.sport, vlan=seg.vlan, window=0)
        if seg.has_ack:
            return base.with_(seq=seg.ack, flags=Flags.RST)
        return base.with_(seq=0, ack=seg.seq_end, flags=Flags.RST | Flags.ACK)

    def _rcv_closed(self, out: _Out, seg: Segment, now: int) -> None:
        if not (seg.syn and not seg.has_ack):    # a SYN to a closed port is a refusal, not an anomaly
            self._anomaly(out, "segment_after_close", f"{seg.describe()} arrived for a closed connection",
                          now, seg.frame)
        if not seg.rst and not self.config.observer:
            out.segments.append(self._reset_reply(seg))

    def _rcv_listen(self, out: _Out, seg: Segment, now: int) -> None:
        if seg.rst:
            return
        if seg.has_ack:
            if not self.config.observer:
                out.segments.append(self._reset_reply(seg))
            return
        if not seg.syn:
            return
        self.remote = (seg.src, seg.sport)
        self._peer_name = None
        self.vlan = seg.vlan
        self.irs = seg.seq
        # data on a SYN: Linux (no TFO) drops it; an observer is handed it only when the SYN,ACK took it
        self.rcv_nxt = seg.seq_end if self.config.observer else sq.add(seg.seq, 1)
        self.snd_una = self.iss
        self.snd_nxt = sq.add(self.iss, 1)
        synack = self._seg(Flags.SYN, self.iss)
        self._move(out, Input.RCV_SYN, f"rcv SYN seq={seg.seq}", now, seg.frame)
        self._emit(out, synack, now)

    def _rcv_syn_sent(self, out: _Out, seg: Segment, now: int) -> None:
        frame = seg.frame
        ack_ok = False
        if seg.has_ack:
            if sq.le(seg.ack, self.iss) or sq.gt(seg.ack, self.snd_nxt):
                if not seg.rst and not self.config.observer:
                    out.segments.append(self._reset_reply(seg))
                self._anomaly(out, "unacceptable_ack", f"ack={seg.ack} does not cover our SYN seq={self.iss}",
                              now, frame)
                return
            ack_ok = True
        if seg.rst:
            if ack_ok:
                self._move(out, Input.RCV_RST, f"rcv RST,ACK ack={seg.ack}", now, frame)
            return
        if not seg.syn:
            return
        self.irs = seg.seq
        self.rcv_nxt = sq.add(seg.seq, 1)
        if ack_ok:
            self.snd_una = seg.ack
            self._unacked = ()
            self.rto_at = None
            self._retries = 0
            self._rto_cur = self.config.rto_ns
            self._move(out, Input.RCV_SYN_ACK, f"rcv SYN,ACK seq={seg.seq} ack={seg.ack}", now, frame)
            self._ack_now(out)
        else:
            synack = self._seg(Flags.SYN, self.iss)
            self._move(out, Input.RCV_SYN, f"rcv SYN seq={seg.seq}", now, frame)
            self._emit(out, synack, now, track=False)

    def _rcv_time_wait(self, out: _Out, seg: Segment, now: int) -> None:
        frame = seg.frame
        if seg.syn and not seg.has_ack and not seg.rst and sq.gt(seg.seq, self.rcv_nxt):
            self._move(out, Input.RCV_NEW_SYN, f"rcv SYN seq={seg.seq} (above rcv_nxt={self.rcv_nxt})",
                       now, frame)
            return
        if seg.rst:
            if seg.seq == self.rcv_nxt:
                self._move(out, Input.RCV_RST, f"rcv RST seq={seg.seq}", now, frame)
            else:
                self._anomaly(out, "rst_out_of_window",
                              f"RST seq={seg.seq} in TIME_WAIT, expected seq={self.rcv_nxt}", now, frame)
            return
        if seg.fin and self.peer_fin_seq is not None and seg.fin_seq == self.peer_fin_seq:
            self._move(out, Input.RCV_FIN, f"rcv FIN seq={seg.fin_seq} again: re-ACK it", now, frame)
            self._anomaly(out, "time_wait_reack",
                          f"FIN seq={seg.fin_seq} retransmitted; TIME_WAIT ACKs it again (ack={self.rcv_nxt})",
                          now, frame)
            self._ack_now(out)
            return
        if seg.data_len or seg.fin:
            if self.config.observer and sq.le(seg.seq_end, self.rcv_nxt):
                self._anomaly(out, "retransmission",
                              f"{seg.describe()} already received (rcv_nxt={self.rcv_nxt})", now, frame)
            else:
                self._anomaly(out, "segment_in_time_wait", f"{seg.describe()} arrived in TIME_WAIT", now, frame)
            self._ack_now(out)

    def _rcv_synchronized(self, out: _Out, seg: Segment, now: int, frame: int | None) -> None:
        cfg = self.config
        st = self.state
        # a retransmitted SYN while we wait for the ACK of our SYN,ACK
        if st is State.SYN_RECEIVED and seg.syn and not seg.has_ack and seg.seq == self.irs:
            if not cfg.observer:
                out.segments.append(self._seg(Flags.SYN, self.iss))
            return
        ok = sq.acceptable(seg.seq, seg.seg_len, self.rcv_nxt, self.rcv_wnd)
        if cfg.observer and not ok and sq.gt(seg.seq, self.rcv_nxt):
            ok = True   # beyond the window we model: the capture missed what opened it
        # RST, as RFC 5961 section 3 has it
        if seg.rst:
            if seg.seq == self.rcv_nxt:
                inp = Input.RCV_RST_PASSIVE if (st is State.SYN_RECEIVED and self.passive) else Input.RCV_RST
                self._move(out, inp, f"rcv RST seq={seg.seq}", now, frame)
            elif ok:
                self._anomaly(out, "rst_not_exact",
                              f"RST seq={seg.seq} in window but rcv_nxt={self.rcv_nxt}: challenge ACK",
                              now, frame)
                self._ack_now(out)
            else:
                self._anomaly(out, "rst_out_of_window",
                              f"RST seq={seg.seq} outside the window starting at rcv_nxt={self.rcv_nxt}",
                              now, frame)
            return
        if not ok:
            if seg.fin and self.peer_fin_seq is not None and seg.fin_seq == self.peer_fin_seq:
                if not cfg.observer:   # an observer hears of it from the sender's side
                    self._anomaly(out, "fin_retransmission",
                                  f"FIN seq={seg.fin_seq} retransmitted (our ACK {self.rcv_nxt} was lost or late)",
                                  now, frame)
            elif seg.seg_len:
                if cfg.observer and sq.le(seg.seq_end, self.rcv_nxt):
                    self._anomaly(out, "retransmission",
                                  f"{seg.describe()} already received (rcv_nxt={self.rcv_nxt})", now, frame)
                else:
                    self._anomaly(out, "unacceptable_segment",
                                  f"{seg.describe()} outside the receive window (rcv_nxt={self.rcv_nxt})",
                                  now, frame)
            self._ack_now(out)
            return
        if seg.syn:
            self._anomaly(out, "syn_in_window", f"SYN seq={seg.seq} on a synchronized connection: challenge ACK",
                          now, frame)
            self._ack_now(out)
            return
        if not seg.has_ack:
            self._anomaly(out, "no_ack_flag", f"{seg.describe()} without ACK is dropped", now, frame)
            return
        if not self._process_ack(out, seg, now, frame):
            return
        if self.state is State.CLOSED:
            return
        need_ack = False
        # the data
        if seg.data_len:
            if self.state not in _SYNCHRONIZED_DATA:
                self._anomaly(out, "data_after_fin",
                              f"{seg.data_len} bytes at seq={seg.seq} after the peer's FIN seq={self.peer_fin_seq}",
                              now, frame)
                self._ack_now(out)
                return
            lead = sq.sub(self.rcv_nxt, seg.seq)    # bytes of this segment we already have
            if lead < 0:
                if not cfg.observer:
                    self._ooo += (seg,)
                    self._ack_now(out)   # duplicate ACK asks for the gap
                    return
                self._anomaly(out, "previous_segment_not_captured",
                              f"seq={seg.seq} but rcv_nxt={self.rcv_nxt}: {-lead} bytes missing", now, frame)
                lead = 0
            if lead < seg.data_len:
                out.data += seg.payload[lead:]
                self.rcv_nxt = sq.add(seg.seq, seg.data_len)
            need_ack = True
        # the FIN
        if seg.fin:
            fseq = seg.fin_seq
            gap = sq.sub(fseq, self.rcv_nxt)
            if gap > 0:
                if not cfg.observer:
                    if seg not in self._ooo:
                        self._ooo += (seg,)
                    self._ack_now(out)
                    return
                self._anomaly(out, "previous_segment_not_captured",
                              f"FIN seq={fseq} but rcv_nxt={self.rcv_nxt}: {gap} bytes missing", now, frame)
                gap = 0
            if gap == 0:
                self.rcv_nxt = sq.add(fseq, 1)
                self.peer_fin_seq = fseq
                self._move(out, Input.RCV_FIN, f"rcv FIN seq={fseq}", now, frame)
                need_ack = True
                if cfg.close_on_fin and self.state is State.CLOSE_WAIT:
                    self._close(out, now, frame=frame)   # our FIN carries the ACK: three-segment close
                    need_ack = False
        if need_ack:
            self._ack_now(out)

    def _process_ack(self, out: _Out, seg: Segment, now: int, frame: int | None) -> bool:
        """RFC 9293's ACK check; False when the segment is to be dropped."""
        st = self.state
        ack = seg.ack
        if st is State.SYN_RECEIVED:
            if sq.lt(self.snd_una, ack) and sq.le(ack, self.snd_nxt):
                self.snd_una = ack
                self._unacked = ()
                self.rto_at = None
                self._retries = 0              # as _rcv_syn_sent does: SYN,ACK retries are not data retries
                self._rto_cur = self.config.rto_ns
                self._move(out, Input.RCV_ACK_OF_SYN, f"rcv ACK ack={ack}", now, frame)
                st = self.state
            else:
                if not self.config.observer:
                    out.segments.append(self._reset_reply(seg))
                self._anomaly(out, "unacceptable_ack",
                              f"ack={ack} does not acknowledge our SYN,ACK (expected {self.snd_nxt})", now, frame)
                return False
        if sq.gt(ack, self.snd_nxt):
            if not self.config.observer:
                self._anomaly(out, "ack_of_unsent_data",
                              f"ack={ack} beyond anything sent (snd_nxt={self.snd_nxt})", now, frame)
                self._ack_now(out)
                return False
            if self.fin_seq is not None and sq.gt(ack, sq.add(self.fin_seq, 1)):
                self._anomaly(out, "ack_beyond_fin",
                              f"ack={ack} is past FIN seq={self.fin_seq}: nothing follows a FIN, expected "
                              f"at most {sq.add(self.fin_seq, 1)}", now, frame)
            else:
                self._anomaly(out, "acked_unseen_segment",
                              f"ack={ack} beyond what the capture shows sent (snd_nxt={self.snd_nxt})", now, frame)
            self.snd_nxt = ack
        if sq.lt(self.snd_una, ack):
            self.snd_una = ack
            self._unacked = tuple(s for s in self._unacked if sq.gt(s.seq_end, ack))
            self._retries = 0
            self._rto_cur = self.config.rto_ns
            self.rto_at = (now + self._rto_cur) if self._unacked else None
        self.snd_wnd = seg.window
        if (self.fin_seq is not None and st in (State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK)
                and sq.ge(self.snd_una, sq.add(self.fin_seq, 1))):
            self._move(out, Input.RCV_ACK_OF_FIN, f"rcv ACK ack={ack} of FIN seq={self.fin_seq}", now, frame)
        return True

"""rawfin's endpoint as packetdrill's system under test: a socket layer on virtual time.

:class:`Stack` gives the script's system calls (socket, bind, listen, accept,
connect, read/write and friends, shutdown, close, setsockopt, getsockopt, fcntl,
ioctl, poll) Linux's semantics over :class:`rawfin.core.endpoint.Endpoint`: file
descriptors from 3, an accept queue, a receive buffer the application reads
from, ``EPIPE`` after ``shutdown(SHUT_WR)``, ``ECONNRESET`` after a reset,
``O_NONBLOCK``, blocking calls that return when the endpoint lets them.
The endpoint decides every state; the socket layer only calls it.

What the endpoint leaves to the host, the stack does as Linux does it
(:class:`Personality`): the TCP options of SYN and SYN,ACK (MSS from the MTU,
SACK permitted, timestamps, window scale from ``tcp_rmem``), timestamps on every
segment once both sides offered them, the sending MSS from the peer's, PSH on
the last segment of a write only, Linux's delayed ACK (the endpoint's, turned on here), a
``tc qdisc`` on tun0 that drops everything, and the ``sysctl`` settings a script makes
(``tcp_timestamps``, ``tcp_sack``, ``tcp_window_scaling``, ``tcp_rmem``,
``tcp_fin_timeout``, ``tcp_syn_retries``...). Time is virtual: nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import errno as E
import random

from rawfin.core import seq as sq
from rawfin.core.endpoint import Config, Endpoint
from rawfin.core.events import Result
from rawfin.core.segment import Flags, Segment
from rawfin.core.states import State
from rawfin.core.units import MS, SEC
from rawfin.sim import pktrun
from rawfin.sim.host import AddressInUse, Host, Step
from rawfin.sim.pktrun import Pending, ShellCommand, Target
from rawfin.wire import tcpraw

_US = 1000
O_NONBLOCK = 0o4000
POLLIN, POLLOUT, POLLERR, POLLHUP, POLLRDHUP = 0x1, 0x4, 0x8, 0x10, 0x2000
_CONNECTED = (State.ESTABLISHED, State.CLOSE_WAIT)
_CAN_FIN = (State.ESTABLISHED, State.CLOSE_WAIT, State.SYN_RECEIVED)

#: Linux's defaults for the sysctls the model reads (a fresh network namespace's values)
SYSCTL_DEFAULTS = {
    "net.ipv4.tcp_timestamps": "1", "net.ipv4.tcp_sack": "1", "net.ipv4.tcp_window_scaling": "1",
    "net.ipv4.tcp_rmem": "4096 131072 6291456", "net.core.rmem_max": "212992",
    "net.ipv4.tcp_fin_timeout": "60", "net.ipv4.tcp_syn_retries": "6", "net.ipv4.tcp_synack_retries": "5",
    "net.ipv4.tcp_retries2": "15", "net.ipv4.tcp_early_retrans": "3",
}
#: Linux's numbers for the states (tcpi_state; include/net/tcp_states.h)
LINUX_STATE = {State.ESTABLISHED: 1, State.SYN_SENT: 2, State.SYN_RECEIVED: 3, State.FIN_WAIT_1: 4,
               State.FIN_WAIT_2: 5, State.TIME_WAIT: 6, State.CLOSED: 7, State.CLOSE_WAIT: 8, State.LAST_ACK: 9,
               State.LISTEN: 10, State.CLOSING: 11}
#: the TCP_INFO fields rawfin's endpoint models (a %{ }% block reading another one is refused)
TCP_INFO_FIELDS = frozenset({"tcpi_state", "tcpi_retransmits", "tcpi_probes", "tcpi_backoff", "tcpi_options",
                             "tcpi_rto", "tcpi_snd_mss", "tcpi_unacked", "tcpi_retrans", "tcpi_rtt",
                             "tcpi_rttvar", "tcpi_total_retrans", "tcpi_snd_cwnd", "tcpi_snd_ssthresh"})
_NO_CONN_INFO = {f: 0 for f in TCP_INFO_FIELDS}
_NO_CONN_INFO["tcpi_rto"] = 1_000_000
_NO_CONN_INFO["tcpi_snd_cwnd"] = 10
_NO_CONN_INFO["tcpi_snd_ssthresh"] = 0x7FFFFFFF

#: sysctls that change nothing rawfin models (said so in the output, never silently)
NO_EFFECT = "no effect on rawfin's model"


class Personality:
    """What Linux puts around the endpoint's segments: options, timestamps, segment sizes."""

    def __init__(self, sysctl: dict[str, str], mtu: int, v6: bool) -> None:
        self.sysctl = sysctl
        self.mtu = mtu
        self.v6 = v6

    def _on(self, name: str) -> bool:
        return self.sysctl.get(name, "0").strip() not in ("0", "")

    @property
    def adv_mss(self) -> int:
        return self.mtu - (60 if self.v6 else 40)

    @property
    def wscale(self) -> int:
        """tcp_select_initial_window: the shift that lets the largest receive buffer fit."""
        try:
            space = max(int(self.sysctl.get("net.ipv4.tcp_rmem", "0 0 0").split()[2]),
                        int(self.sysctl.get("net.core.rmem_max", "0")))
        except (ValueError, IndexError):
            space = 6291456
        ws = 0
        while space > 0xFFFF and ws < 14:
            space >>= 1
            ws += 1
        return ws

    def syn_options(self, peer: "PeerOptions | None", ts_val: int) -> tuple:
        """The options of our SYN (``peer`` None) or SYN,ACK, in tcp_options_write's order."""
        ts = self._on("net.ipv4.tcp_timestamps") and (peer is None or peer.ts is not None)
        sack = self._on("net.ipv4.tcp_sack") and (peer is None or peer.sack)
        ws = self._on("net.ipv4.tcp_window_scaling") and (peer is None or peer.wscale is not None)
        out: list = [("MSS", self.adv_mss)]
        if ts:
            ecr = 0 if peer is None else peer.ts
            out += ([("SAckOK", b"")] if sack else [("NOP", None), ("NOP", None)])
            out.append(("Timestamp", (ts_val, ecr)))
        elif sack:
            out += [("NOP", None), ("NOP", None), ("SAckOK", b"")]
        if ws:
            out += [("NOP", None), ("WScale", self.wscale)]
        return tuple(out)


@dataclasses.dataclass(slots=True)
class PeerOptions:
    mss: int = 536
    wscale: int | None = None
    sack: bool = False
    ts: int | None = None

    @classmethod
    def of(cls, seg: Segment) -> "PeerOptions":
        p = cls()
        for name, v in seg.options:
            if name == "MSS":
                p.mss = v
            elif name == "WScale":
                p.wscale = v
            elif name == "SAckOK":
                p.sack = True
            elif name == "Timestamp":
                p.ts = v[0]
        return p


class Conn:
    """One connection: the endpoint, the socket it belongs to (None once closed), the TCP options."""

    def __init__(self, ep: Endpoint, ts_base: int) -> None:
        self.ep = ep
        self.sock: Sock | None = None
        self.peer: PeerOptions | None = None
        self.ts_on = False
        self.ts_base = ts_base
        self.ts_recent = 0
        self.orphan = False
        self.early = bytearray()              # data that arrived before accept()
        self.defer_retrans = 0                # TCP_DEFER_ACCEPT of its listener, in SYN,ACK retransmissions
        self.syn_ack_rtx = 0
        self.deferred = False                 # its bare ACK was held back (TCP_DEFER_ACCEPT)
        self.listener: Sock | None = None     # the listening socket it came from, until accepted
        self.linger2_s: int | None = None     # TCP_LINGER2 of the socket it belonged to


class Sock:
    """A file descriptor's socket."""

    def __init__(self, fd: int, family: int, nonblock: bool) -> None:
        self.fd = fd
        self.family = family
        self.nonblock = nonblock
        self.bound: tuple[str, int] | None = None
        self.listening = False
        self.backlog = 0
        self.queue: list[Conn] = []
        self.conn: Conn | None = None
        self.rcvbuf = bytearray()
        self.eof = False
        self.err = 0
        self.shut_rd = False
        self.shut_wr = False
        self.opts: dict[str, object] = {}
        self.linger: tuple[int, int] = (0, 0)


class Stack:
    """The socket layer over rawfin's endpoints (virtual time in ns, driven by :class:`RawfinTarget`)."""

    def __init__(self, cfg: pktrun.RunConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.sysctl = dict(SYSCTL_DEFAULTS)
        self.pers = Personality(self.sysctl, cfg.mtu, cfg.wire_v6)
        self.now = 0
        self.socks: dict[int, Sock] = {}
        # the endpoints, their demultiplexing, the closed port's answers and the timers: tidy's sans-IO host
        self.host = Host("rawfin", (cfg.local_ip, cfg.bind_port), self._config(), isn=self.rng.randrange(2**32))
        self.conns: dict[Endpoint, Conn] = {}
        self.out: list[tuple[int, Segment, str]] = []     # segments sent: time, segment, state after
        self.last_state = ""
        self.transitions: list[tuple] = []
        self.notes: list[str] = []
        self.pending: list[tuple[Pending, object]] = []
        self.qdisc_drops = False          # tun0's root qdisc drops every packet (pfifo/bfifo limit 0)
        self._ports = iter(range(40000 + self.rng.randrange(0, 10000), 65536))

    # -- segments out ----------------------------------------------------------------------
    def _config(self) -> Config:
        fin = int(self.sysctl.get("net.ipv4.tcp_fin_timeout", "60") or 60)
        # app_reads: the endpoint counts what the application has not read (close() then resets)
        return Config(msl_ns=30 * SEC, rto_ns=1 * SEC, max_retries=int(self.sysctl.get("net.ipv4.tcp_retries2",
                                                                                        "15") or 15),
                      fin_wait_2_timeout_ns=None if fin <= 0 else None, mss=self.pers.adv_mss, app_reads=True,
                      delayed_ack=True)

    def _apply(self, conn: Conn | None, res: Result) -> None:
        for t in res.transitions:
            self.transitions.append((t.time_ns, t.endpoint, t.peer, t.from_.value, t.to.value, t.cause))
        segs = list(res.segments)
        # PSH on the last segment of a burst of data only, as Linux does for one write (or one ACK's worth)
        data = [i for i, s in enumerate(segs) if s.data_len and s.flags & Flags.PSH]
        for i in data[:-1]:
            segs[i] = segs[i].with_(flags=segs[i].flags & ~Flags.PSH)
        state = (conn.ep.state.value if conn is not None else "CLOSED")
        if self.qdisc_drops and segs:    # what no endpoint sent (the closed port's RST): the qdisc drops it too
            self.notes.append(f"the qdisc dropped {len(segs)} segment(s) at {self.now / SEC:.6f} s")
            segs = []
        for s in segs:
            self.out.append((self.now, self._decorate(conn, s), state))
        if res.data and conn is not None:
            if conn.sock is not None:
                conn.sock.rcvbuf += res.data
            elif not conn.orphan:
                conn.early += res.data            # not accepted yet: the accept queue holds it

    def _ts_val(self, conn: Conn) -> int:
        return (conn.ts_base + self.now // MS) & 0xFFFFFFFF

    def _decorate(self, conn: Conn | None, s: Segment) -> Segment:
        if conn is None:
            return s
        if s.syn:
            opts = self.pers.syn_options(conn.peer if s.has_ack else None, self._ts_val(conn))
            return s.with_(options=opts)
        if conn.ts_on and not (s.rst and not s.has_ack and s.window == 0):
            return s.with_(options=(("NOP", None), ("NOP", None),
                                    ("Timestamp", (self._ts_val(conn), conn.ts_recent))))
        return s

    def _negotiated(self, conn: Conn, peer_syn: Segment, we_sent_syn: bool) -> None:
        conn.peer = PeerOptions.of(peer_syn)
        conn.ts_on = conn.peer.ts is not None and self.pers._on("net.ipv4.tcp_timestamps")
        mss = min(conn.peer.mss, self.pers.adv_mss) - (12 if conn.ts_on else 0)
        # Linux probes a lost tail (RFC 8985) only on a SACK connection, with tcp_early_retrans 3 or 4
        probe = (conn.peer.sack and self.pers._on("net.ipv4.tcp_sack")
                 and self.sysctl.get("net.ipv4.tcp_early_retrans", "3").strip() in ("3", "4"))
        conn.ep.config = dataclasses.replace(conn.ep.config, mss=max(mss, 64), loss_probe=bool(probe))

    # -- segments in -------------------------------------------------------------------------
    def find_any(self, seg: Segment) -> Conn | None:
        """The connection this segment's 4-tuple belongs to, whatever its state."""
        return self.conns.get(self.host.table.get((seg.dport, seg.src, seg.sport)))

    def _listening_sock(self, port: int) -> Sock | None:
        for s in self.socks.values():
            if s.listening and s.bound and s.bound[1] == port:
                return s
        return None

    def _new_conn(self, ep: Endpoint) -> Conn:
        ep.local_drops(self.qdisc_drops)
        conn = Conn(ep, self.rng.randrange(2**32))
        self.conns[ep] = conn
        return conn

    def receive(self, seg: Segment) -> None:
        now = self.now
        conn = self.find_any(seg)
        if conn is not None and conn.ep.state is State.CLOSED:
            conn = None
        ls = self._listening_sock(seg.dport) if conn is None else None
        if ls is not None and seg.syn and not seg.has_ack and not seg.rst and len(ls.queue) > ls.backlog:
            self.notes.append(f"SYN dropped: the accept queue of fd {ls.fd} is full")
            return
        if conn is not None and self._before(conn, seg):
            return
        for step in self.host.deliver(seg, now):
            self._step(step, seg, ls)

    @staticmethod
    def secs_to_retrans(seconds: int, timeout: int = 1, rto_max: int = 120) -> int:
        """TCP_DEFER_ACCEPT's seconds as SYN,ACK retransmissions (Linux's secs_to_retrans)."""
        if seconds <= 0:
            return 0
        res, period = 1, timeout
        while seconds > period and res < 255:
            res += 1
            timeout = min(timeout * 2, rto_max)
            period += timeout
        return res

    def _before(self, conn: Conn, seg: Segment) -> bool:
        """What Linux does before the endpoint sees a segment; True when the segment is done with."""
        ep = conn.ep
        if (conn.defer_retrans and ep.state is State.SYN_RECEIVED and seg.flags == Flags.ACK and not seg.data_len
                and seg.ack == ep.snd_nxt and conn.syn_ack_rtx < conn.defer_retrans):
            # TCP_DEFER_ACCEPT: a bare ACK does not complete the connection; data (or the deferral's end) will
            conn.deferred = True
            self.notes.append(f"TCP_DEFER_ACCEPT: the bare ACK at {self.now / SEC:.3f} s is held back, as Linux "
                              f"does, until data arrives or the deferral ends")
            return True
        if conn.ts_on:
            ts = next((v for n, v in seg.options if n == "Timestamp"), None)
            if ts is not None and (not seg.has_ack or sq.le(seg.ack, ep.snd_nxt)) and sq.le(seg.seq, ep.rcv_nxt):
                conn.ts_recent = ts[0]
        if ep.state is State.SYN_SENT and seg.syn:
            self._negotiated(conn, seg, True)
            if conn.ts_on:
                conn.ts_recent = conn.peer.ts or 0
        return False

    def _step(self, step: Step, seg: Segment | None = None, listener: "Sock | None" = None) -> None:
        """Act on what the host did: log it, decorate and send its segments, wake the calls it concerns."""
        ep = step.endpoint
        if step.stand_in:
            self._apply(None, step.result)
            return
        conn = self.conns.get(ep)
        if step.accepted and seg is not None:
            # the listener took a SYN and is now this connection (a fresh listener took its place)
            conn = self._new_conn(ep)
            conn.listener = listener
            if listener is not None:
                conn.defer_retrans = self.secs_to_retrans(int(listener.opts.get("TCP_DEFER_ACCEPT", 0) or 0))
            self._negotiated(conn, seg, False)
            if conn.peer.ts is not None:
                conn.ts_recent = conn.peer.ts
        if conn is None:
            self._apply(None, step.result)
            return
        res = step.result
        if seg is None and conn.deferred and ep.state is State.SYN_RECEIVED and res.retransmissions:
            # TCP_DEFER_ACCEPT: Linux resends the SYN,ACK only once, when the deferral is about to end
            conn.syn_ack_rtx += 1
            if conn.syn_ack_rtx < conn.defer_retrans:
                drop = {id(x) for x in res.retransmissions}
                res = Result(segments=tuple(x for x in res.segments if id(x) not in drop),
                             transitions=res.transitions, anomalies=res.anomalies, data=res.data)
        step = Step(endpoint=ep, result=res)
        before = step.result.transitions[0].from_ if step.result.transitions else ep.state
        self._apply(conn, step.result)
        self._after(conn, before, step.result)

    def _abort_quietly(self, conn: Conn) -> Result:
        """The endpoint goes to CLOSED by abort(); its own RST is not sent (the caller sends Linux's)."""
        res = conn.ep.abort(self.now)
        return Result(transitions=res.transitions, anomalies=res.anomalies)

    def _after(self, conn: Conn, before: State, res: Result) -> None:
        ep = conn.ep
        sock = conn.sock
        if conn.listener is not None and ep.state in (State.ESTABLISHED, State.CLOSE_WAIT) \
                and conn not in conn.listener.queue:
            conn.listener.queue.append(conn)
        for t in res.transitions:
            if t.to is State.CLOSED and t.from_ is not State.LISTEN:
                if sock is not None:
                    if "RST" in t.cause or t.input.name in ("RCV_RST", "RCV_RST_PASSIVE"):
                        sock.err = E.ECONNREFUSED if t.from_ is State.SYN_SENT else E.ECONNRESET
                    elif t.input.name == "TIMEOUT_GIVE_UP":
                        sock.err = E.ETIMEDOUT
            if t.input.name == "RCV_FIN" and sock is not None:
                sock.eof = True
        if conn.orphan and ep.state is State.FIN_WAIT_2 and ep.fin_wait_2_at is None:
            self._arm_fin_wait_2(conn)

    def _arm_fin_wait_2(self, conn: Conn) -> None:
        secs = conn.linger2_s
        if secs is None:
            secs = int(self.sysctl.get("net.ipv4.tcp_fin_timeout", "60") or 60)
        if secs > 0:
            conn.ep.fin_wait_2_at = self.now + secs * SEC

    # -- time ------------------------------------------------------------------------------
    def next_deadline(self) -> int | None:
        ds = [d for d in (self.host.next_deadline(),) if d is not None]
        ds += [info for _, info in self.pending if isinstance(info, int)]
        return min(ds) if ds else None

    def advance(self, to: int) -> None:
        while True:
            d = self.next_deadline()
            if d is None or d > to:
                break
            self.now = max(self.now, d)
            for step in self.host.due(self.now):
                self._step(step)
            self.retry()
        self.now = max(self.now, to)
        self.retry()

    # -- system calls ------------------------------------------------------------------------
    def _fd(self) -> int:
        fd = 3
        while fd in self.socks:
            fd += 1
        return fd

    def call(self, p: Pending) -> bool:
        """Run ``p``; True when it returned (else it waits in :attr:`pending`)."""
        c = p.call
        fn = getattr(self, "_sys_" + c.name)
        sock = None
        if c.fd is not None:
            sock = self.socks.get(c.fd)
            if sock is None:
                return self._done(p, -1, E.EBADF)
        r = fn(p, sock)
        if r is None:                        # would block
            if sock is not None and sock.nonblock and c.name not in ("poll",):
                return self._done(p, -1, E.EAGAIN)
            deadline = None
            if c.name == "poll" and c.args.get("timeout", -1) >= 0:
                deadline = self.now + c.args["timeout"] * MS
            self.pending.append((p, deadline))
            return False
        return True

    def retry(self) -> None:
        for p, deadline in list(self.pending):
            sock = self.socks.get(p.call.fd) if p.call.fd is not None else None
            if p.call.fd is not None and sock is None:
                self.pending.remove((p, deadline))
                self._done(p, -1, E.EBADF)
                continue
            r = getattr(self, "_sys_" + p.call.name)(p, sock)
            if r is None and deadline is not None and self.now >= deadline:
                self._done(p, 0, 0, [0] * len(p.call.args["fds"]))
                r = True
            if r is not None:
                self.pending.remove((p, deadline))

    def _done(self, p: Pending, ret: int, err: int = 0, out: object = None) -> bool:
        p.done, p.ret, p.errno, p.out, p.end_us = True, ret, err, out, self.now // _US
        return True

    def _sys_socket(self, p, _):
        a = p.call.args
        if a["type"] & 0xF != 1 or a["proto"] not in (0, 6):
            self.notes.append("socket(): only SOCK_STREAM/IPPROTO_TCP sockets are modelled")
            return self._done(p, -1, E.EPROTONOSUPPORT)
        fd = self._fd()
        self.socks[fd] = Sock(fd, a["domain"], bool(a["type"] & O_NONBLOCK))
        return self._done(p, fd)

    def _sys_bind(self, p, s: Sock):
        ip, port = p.call.args["addr"]
        for o in self.socks.values():
            if o is not s and o.bound and o.bound[1] == port and not (s.opts.get("SO_REUSEADDR") and
                                                                      not o.listening):
                return self._done(p, -1, E.EADDRINUSE)
        s.bound = (self._wire_ip(ip), port)
        return self._done(p, 0)

    def _wire_ip(self, ip: str) -> str:
        return ip[7:] if ip.startswith("::ffff:") else ip

    def _sys_listen(self, p, s: Sock):
        if s.conn is not None:
            return self._done(p, -1, E.EINVAL)
        if s.bound is None:
            s.bound = (self.cfg.local_ip, next(self._ports))
        if not s.listening:
            try:
                step = self.host.listen(self.now, port=s.bound[1], reuse_addr=bool(s.opts.get("SO_REUSEADDR")))
            except AddressInUse:
                return self._done(p, -1, E.EADDRINUSE)
            self._apply(None, step.result)
        s.listening = True
        s.backlog = p.call.args["backlog"]
        return self._done(p, 0)

    def _sys_accept(self, p, s: Sock):
        if not s.listening:
            return self._done(p, -1, E.EINVAL)
        if not s.queue:
            return None
        conn = s.queue.pop(0)
        conn.listener = None
        fd = self._fd()
        ns = Sock(fd, s.family, False)
        ns.bound = conn.ep.local
        ns.conn = conn
        conn.sock = ns
        ns.opts = {k: v for k, v in s.opts.items() if k in ("TCP_USER_TIMEOUT", "TCP_LINGER2", "TCP_NODELAY")}
        self._user_timeout(conn, ns)
        ns.rcvbuf = bytearray(conn.early)
        if conn.ep.peer_fin_seq is not None:
            ns.eof = True
        self.socks[fd] = ns
        return self._done(p, fd, 0, conn.ep.remote)

    def _sys_connect(self, p, s: Sock):
        conn = s.conn
        if conn is None:
            if s.listening:
                return self._done(p, -1, E.EISCONN)
            ip, port = p.call.args["addr"]
            local = s.bound or (self.cfg.local_ip, next(self._ports))
            try:
                step = self.host.connect(self.now, (self._wire_ip(ip), port), port=local[1])
            except AddressInUse:
                return self._done(p, -1, E.EADDRINUSE)
            conn = self._new_conn(step.endpoint)
            conn.sock = s
            s.conn = conn
            s.bound = local
            self._user_timeout(conn, s)
            self._apply(conn, step.result)
            p.call.args["_started"] = True
            if s.nonblock:
                return self._done(p, -1, E.EINPROGRESS)
            return None
        st = conn.ep.state
        if s.err:
            err, s.err = s.err, 0
            return self._done(p, -1, err)
        if st is State.SYN_SENT:
            return None if not s.nonblock else self._done(p, -1, E.EALREADY)
        if st in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1, State.FIN_WAIT_2):
            return self._done(p, 0) if p.call.args.get("_started") else self._done(p, -1, E.EISCONN)
        return self._done(p, -1, E.ECONNREFUSED)

    def _readable(self, s: Sock, count: int, peek: bool = False):
        if s.rcvbuf:
            n = min(count, len(s.rcvbuf))
            if not peek:
                del s.rcvbuf[:n]
                if s.conn is not None:
                    s.conn.ep.read(n)       # the endpoint knows what the application has read
            return n, 0
        if s.err:
            err = s.err
            s.err = 0
            return -1, err
        if s.eof or s.shut_rd:
            return 0, 0
        if s.conn is None or s.conn.ep.state in (State.CLOSED,):
            return (-1, E.ENOTCONN) if s.conn is None else (0, 0)
        return None

    def _sys_read(self, p, s: Sock):
        if s.listening:
            return self._done(p, -1, E.ENOTCONN)
        r = self._readable(s, p.call.args["count"], bool(p.call.args.get("flags", 0) & 2))
        if r is None:
            if p.call.args.get("flags", 0) & 0x40:       # MSG_DONTWAIT
                return self._done(p, -1, E.EAGAIN)
            return None
        return self._done(p, *r)

    _sys_recv = _sys_recvfrom = _sys_readv = _sys_recvmsg = _sys_read

    def _sys_write(self, p, s: Sock):
        n = p.call.args["count"]
        conn = s.conn
        if s.err:
            err, s.err = s.err, 0
            return self._done(p, -1, err)
        if conn is None:
            return self._done(p, -1, E.EPIPE if s.shut_wr else E.ENOTCONN)
        st = conn.ep.state
        if s.shut_wr or st not in _CONNECTED + (State.SYN_SENT, State.SYN_RECEIVED):
            return self._done(p, -1, E.EPIPE)
        if st in (State.SYN_SENT, State.SYN_RECEIVED):
            return None
        self._apply(conn, conn.ep.send(bytes(n), self.now))
        return self._done(p, n)

    _sys_send = _sys_sendto = _sys_writev = _sys_sendmsg = _sys_write

    def _sys_shutdown(self, p, s: Sock):
        how = p.call.args["how"]
        if how not in (0, 1, 2):
            return self._done(p, -1, E.EINVAL)
        conn = s.conn
        if conn is None or conn.ep.state in (State.CLOSED,):
            if s.listening and how in (0, 2):
                s.listening = False
                if s.bound[1] in self.host.listeners:
                    self._apply(None, self.host.close_listener(self.now, port=s.bound[1]).result)
                return self._done(p, 0)
            return self._done(p, -1, E.ENOTCONN)
        if how in (0, 2):
            s.shut_rd = True
        if how in (1, 2):
            s.shut_wr = True
        ep = conn.ep
        before = ep.state
        res = ep.shutdown(self.now, how)           # the core: FIN for SHUT_WR, nothing for SHUT_RD
        self._apply(conn, res)
        self._after(conn, before, res)
        return self._done(p, 0)

    def _sys_close(self, p, s: Sock):
        del self.socks[s.fd]
        self.pending = [(q, d) for q, d in self.pending if q.call.fd != s.fd]
        if s.listening:
            if s.bound[1] in self.host.listeners:
                self._apply(None, self.host.close_listener(self.now, port=s.bound[1]).result)
            # children nobody accepted: a reset for the established, nothing for the half-open
            for c in list(self.conns.values()):
                if c.listener is s:
                    if c.ep.state in (State.ESTABLISHED, State.CLOSE_WAIT):
                        self._apply(c, c.ep.abort(self.now))
                    elif c.ep.state is State.SYN_RECEIVED:
                        self._apply(c, self._abort_quietly(c))
            return self._done(p, 0)
        conn = s.conn
        if conn is None:
            return self._done(p, 0)
        conn.sock = None
        conn.orphan = True
        if "TCP_LINGER2" in s.opts:
            conn.linger2_s = s.opts["TCP_LINGER2"]
        ep = conn.ep
        before = ep.state
        if s.linger[0] and s.linger[1] == 0 and ep.state not in (State.CLOSED, State.TIME_WAIT):
            res = ep.abort(self.now)                # SO_LINGER 0: a RST instead of the FIN
        else:
            res = ep.close(self.now)                # the core: FIN, RST for unread data, or nothing more
        self._apply(conn, res)
        self._after(conn, before, res)
        return self._done(p, 0)

    def _sys_setsockopt(self, p, s: Sock):
        a = p.call.args
        name, value = a["opt"], a["value"]
        if name == "SO_LINGER":
            if not isinstance(value, tuple):
                return self._done(p, -1, E.EINVAL)
            s.linger = value
        elif name == "TCP_LINGER2":
            s.opts[name] = value
        elif name in ("SO_REUSEADDR", "SO_REUSEPORT", "TCP_USER_TIMEOUT", "TCP_DEFER_ACCEPT"):
            if name == "TCP_USER_TIMEOUT" and (not isinstance(value, int) or value < 0):
                return self._done(p, -1, E.EINVAL)
            s.opts[name] = value
            if name == "TCP_USER_TIMEOUT" and s.conn is not None:
                self._user_timeout(s.conn, s)
        else:
            s.opts[name] = value
            self.notes.append(f"setsockopt {name}: {NO_EFFECT}")
        return self._done(p, 0)

    @staticmethod
    def _user_timeout(conn: Conn, s: Sock) -> None:
        """The socket's TCP_USER_TIMEOUT (milliseconds, 0 = none) in its endpoint's Config."""
        ms = int(s.opts.get("TCP_USER_TIMEOUT", 0) or 0)
        conn.ep.config = dataclasses.replace(conn.ep.config, user_timeout_ns=ms * MS if ms > 0 else None)

    def _sys_getsockopt(self, p, s: Sock):
        name = p.call.args["opt"]
        if name == "SO_ERROR":
            err, s.err = s.err, 0
            return self._done(p, 0, 0, err)
        if name == "SO_LINGER":
            return self._done(p, 0, 0, s.linger)
        if name == "TCP_LINGER2":
            v = s.opts.get(name)
            return self._done(p, 0, 0, v if v is not None else int(self.sysctl["net.ipv4.tcp_fin_timeout"]))
        if name == "SO_TYPE":
            return self._done(p, 0, 0, 1)
        return self._done(p, 0, 0, s.opts.get(name, 0))

    def _sys_tcp_info(self, p, s: Sock):
        """getsockopt(TCP_INFO) for a %{ }% block: the fields rawfin's endpoint models, in Linux's units."""
        conn = s.conn
        if conn is None:
            return self._done(p, 0, 0, dict(_NO_CONN_INFO, tcpi_state=LINUX_STATE[
                State.LISTEN if s.listening else State.CLOSED]))
        ep = conn.ep
        x = ep.rtx_info()
        peer = conn.peer
        options = ((1 if conn.ts_on else 0)
                   | (2 if peer is not None and peer.sack and self.pers._on("net.ipv4.tcp_sack") else 0)
                   | (4 if peer is not None and peer.wscale is not None
                      and self.pers._on("net.ipv4.tcp_window_scaling") else 0))
        return self._done(p, 0, 0, {
            "tcpi_state": LINUX_STATE[ep.state], "tcpi_retransmits": x["retransmits"], "tcpi_probes": x["probes"],
            "tcpi_backoff": x["backoff"], "tcpi_options": options, "tcpi_rto": x["rto_ns"] // _US,
            "tcpi_snd_mss": ep.config.mss, "tcpi_unacked": x["unacked"], "tcpi_retrans": x["retrans"],
            "tcpi_rtt": x["srtt_ns"] // _US, "tcpi_rttvar": x["mdev_ns"] // _US,
            "tcpi_total_retrans": x["total_retrans"], "tcpi_snd_cwnd": ep.cwnd, "tcpi_snd_ssthresh": ep.ssthresh})

    def _sys_fcntl(self, p, s: Sock):
        cmd, arg = p.call.args["cmd"], p.call.args["arg"]
        if cmd == 3:          # F_GETFL
            return self._done(p, 2 | (O_NONBLOCK if s.nonblock else 0))
        if cmd == 4:          # F_SETFL
            s.nonblock = bool(arg & O_NONBLOCK)
            return self._done(p, 0)
        if cmd in (1, 2):
            return self._done(p, 0)
        return self._done(p, -1, E.EINVAL)

    def _sys_ioctl(self, p, s: Sock):
        req = p.call.args["request"]
        if req == 0x541B:
            return self._done(p, 0, 0, len(s.rcvbuf))
        ep = s.conn.ep if s.conn else None
        return self._done(p, 0, 0, 0 if ep is None else sq.sub(ep.write_seq, ep.snd_una))

    def _revents(self, s: Sock, events: int) -> int:
        r = 0
        if s.listening:
            return POLLIN & events if s.queue else 0
        conn = s.conn
        if s.rcvbuf or s.eof or s.shut_rd:
            r |= POLLIN
        if conn is not None and conn.ep.state in _CONNECTED + (State.FIN_WAIT_1, State.FIN_WAIT_2) \
                and not s.shut_wr:
            r |= POLLOUT
        if s.eof:
            r |= POLLRDHUP
        if s.err:
            r |= POLLERR
        if (s.shut_wr and (s.eof or s.shut_rd)) or (conn is not None and conn.ep.state is State.CLOSED):
            r |= POLLHUP
        return r & (events | POLLERR | POLLHUP)

    def _sys_poll(self, p, _):
        fds = p.call.args["fds"]
        rev = [self._revents(self.socks[fd], ev) if fd in self.socks else 0x20 for fd, ev, _ in fds]
        n = sum(1 for r in rev if r)
        if n or p.call.args["timeout"] == 0:
            return self._done(p, n, 0, rev)
        return None

    # -- sysctls ------------------------------------------------------------------------------
    def shell(self, cmd: ShellCommand) -> str:
        if cmd.kind == "sysctl":
            used, unused = [], []
            for k, v in cmd.sysctls:
                if k in SYSCTL_DEFAULTS:
                    self.sysctl[k] = v.strip().strip('"')
                    used.append(f"{k}={v}")
                    self.host.config = self._config()       # connections made from now on
                else:
                    unused.append(k)
            return "; ".join(x for x in ("sysctl " + ", ".join(used) if used else "",
                                         f"sysctl {', '.join(unused)}: {NO_EFFECT}" if unused else "") if x)
        if cmd.kind == "tcp-metrics-flush":
            return "ip tcp_metrics flush: rawfin keeps no metrics"
        return self._qdisc(cmd.args)

    def _qdisc(self, args: tuple[str, ...]) -> str:
        """``tc qdisc add|replace|change|del dev tun0 root ...``: a pfifo or bfifo with ``limit 0`` drops
        everything the stack sends (Linux's NET_XMIT_DROP: endpoint.local_drops); deleting the root
        qdisc, or any other, lets it through. Pacing and delays of other qdiscs are not modelled."""
        text = "tc " + " ".join(args)
        words = [w for w in args if not w.startswith("2>") and not w.startswith(">")]
        verb = words[1] if len(words) > 1 else ""
        if verb in ("del", "delete"):
            drops = False
        elif verb in ("add", "replace", "change"):
            kind = next((w for w in words[2:] if w in ("pfifo", "bfifo", "pfifo_fast", "fq", "fq_codel", "netem",
                                                           "noqueue", "sfq", "tbf", "htb", "prio")), "")
            limit = words[words.index("limit") + 1] if "limit" in words[:-1] else None
            drops = kind in ("pfifo", "bfifo") and limit is not None and limit.strip() == "0"
            if not drops and kind not in ("pfifo", "bfifo", "pfifo_fast"):
                return f"{text}: {NO_EFFECT} (rawfin models only a qdisc that drops everything)"
        else:
            return f"{text}: {NO_EFFECT}"
        if drops != self.qdisc_drops:
            self.qdisc_drops = drops
            for conn in self.conns.values():
                conn.ep.local_drops(drops)
            return f"{text}: from {self.now / SEC:.6f} s everything rawfin sends is " + (
                "dropped by the qdisc (data waits, probed every 500 ms)" if drops else "sent again")
        return f"{text}: " + ("drops everything, as before" if drops else "lets everything through")


class RawfinTarget(Target):
    """packetdrill's system under test played by rawfin's endpoint, on virtual time."""

    name = "rawfin"
    truth = "rawfin's endpoint (its own transitions)"
    tcp_info_fields = TCP_INFO_FIELDS

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.stack: Stack | None = None
        self._sent = 0

    def open(self, cfg: pktrun.RunConfig) -> None:
        self.stack = Stack(cfg, self.seed)

    def now(self) -> int:
        return self.stack.now // _US

    def wait(self, until_us: int) -> None:
        if until_us * _US > self.stack.now:
            self.stack.advance(until_us * _US)

    def inject(self, raw: bytes, pkt: tcpraw.Packet) -> str | None:
        st = self.stack
        st.receive(pkt.seg)
        st.retry()
        conn = st.find_any(pkt.seg)
        return conn.ep.state.value if conn is not None else "CLOSED"

    def sniff(self, until_us: int | None) -> tuple[int, bytes] | None:
        st = self.stack
        while True:
            if self._sent < len(st.out):
                t, seg, state = st.out[self._sent]
                self._sent += 1
                return t // _US, tcpraw.build(seg), state
            d = st.next_deadline()
            limit = None if until_us is None else until_us * _US
            if d is None or (limit is not None and d > limit):
                if limit is not None and limit > st.now:
                    st.advance(limit)
                    continue
                return None
            st.advance(d)

    def start_call(self, p: Pending) -> None:
        self.stack.call(p)

    def wait_call(self, p: Pending, until_us: int) -> bool:
        if p.done:
            return True
        st = self.stack
        while not p.done:
            d = st.next_deadline()
            if d is None or d > until_us * _US:
                return False
            st.advance(d)
        return True

    def can_block_forever(self, p: Pending) -> bool:
        return not p.done and self.stack.next_deadline() is None

    def shell(self, cmd: ShellCommand) -> str:
        return self.stack.shell(cmd)

    def transitions(self) -> list:
        return list(self.stack.transitions) if self.stack else []

    def notes(self) -> list[str]:
        return list(self.stack.notes) if self.stack else []


"""The kernel's own account of its TCP states: tracepoint ``sock:inet_sock_set_state``.

:class:`Tracer` records the tracepoint (and ``tcp:tcp_retransmit_skb``,
``tcp:tcp_receive_reset``, ``tcp:tcp_send_reset`` where the kernel has them)
in a trace instance of rawfin's own under ``tracefs/instances/``, mounting
tracefs when it is not mounted. The instance, and a mount rawfin made, are
removed again when the tracer stops.

:func:`interpret` turns the kernel's raw state changes into rawfin's state
names and applies the TIME_WAIT hand-off rule: when an active closer enters
TIME_WAIT, Linux replaces the socket with a small *timewait socket* and the
tracepoint reports ``FIN_WAIT2 -> CLOSE`` (or ``CLOSING -> CLOSE``) while
``ss`` shows ``TIME-WAIT``. rawfin counts that as TIME_WAIT and says so in the
note. One more Linux habit: a socket closed by the application (orphaned)
that reaches FIN_WAIT2 is handed to a timewait socket at once, in *substate*
FIN_WAIT2, before the peer's FIN arrives; its later move to TIME_WAIT is not
traced. :func:`timewait_sockets` reads that substate from ``/proc/net/tcp``.

Timestamps: the instance uses the ``tai`` trace clock, which differs from
CLOCK_REALTIME (the clock packet sockets stamp frames with) by a whole number
of seconds, so kernel events and captured frames share one time line.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import select
import time
from dataclasses import dataclass

from rawfin.core.errors import PrivilegeError, RawfinError
from rawfin.core.segment import fmt_endpoint
from rawfin.core.states import State

# -- state names ----------------------------------------------------------------

#: Linux's names (without ``TCP_``) -> rawfin's RFC 9293 names.
KERNEL_TO_STATE: dict[str, State] = {
    "ESTABLISHED": State.ESTABLISHED,
    "SYN_SENT": State.SYN_SENT,
    "SYN_RECV": State.SYN_RECEIVED,
    "NEW_SYN_RECV": State.SYN_RECEIVED,   # a request socket (SYN cookie-less mini socket)
    "FIN_WAIT1": State.FIN_WAIT_1,
    "FIN_WAIT2": State.FIN_WAIT_2,
    "TIME_WAIT": State.TIME_WAIT,
    "CLOSE": State.CLOSED,
    "CLOSE_WAIT": State.CLOSE_WAIT,
    "LAST_ACK": State.LAST_ACK,
    "LISTEN": State.LISTEN,
    "CLOSING": State.CLOSING,
}

#: Numeric states of include/net/tcp_states.h (as /proc/net/tcp prints them).
KERNEL_STATE_NUMBERS = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
                        6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
                        11: "CLOSING", 12: "NEW_SYN_RECV"}


def kernel_state(name: str) -> State:
    """rawfin's State for a kernel state name (``TCP_FIN_WAIT1``, ``FIN_WAIT1``, ``SYN_RECV``...)."""
    key = name.upper().removeprefix("TCP_")
    try:
        return KERNEL_TO_STATE[key]
    except KeyError:
        raise ValueError(f"unknown kernel TCP state {name!r}") from None


# -- events ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class KernelEvent:
    """One tracepoint hit, as the kernel wrote it.

    ``kind`` is ``state`` (inet_sock_set_state), ``retransmit``, ``receive_reset``
    or ``send_reset``. ``old``/``new`` are kernel names without ``TCP_``
    (``FIN_WAIT2``); for the tcp_* events ``new`` holds the socket's state.
    ``time_ns`` is CLOCK_REALTIME nanoseconds (microsecond resolution).
    """

    time_ns: int
    kind: str
    local: tuple[str, int]
    remote: tuple[str, int]
    old: str = ""
    new: str = ""
    skaddr: str = ""
    line: str = ""

    @property
    def key(self) -> tuple:
        return (self.local, self.remote)

    @property
    def endpoint(self) -> str:
        return fmt_endpoint(*self.local)

    @property
    def peer(self) -> str:
        return fmt_endpoint(*self.remote)

    def describe(self) -> str:
        if self.kind == "state":
            return f"{self.old} → {self.new}"
        return f"{self.kind} (in {self.new})" if self.new else self.kind


_HEAD = re.compile(r"^\s*(?P<task>.*?)\s+\[(?P<cpu>\d+)\]\s+(?P<flags>\S+\s+)?(?P<ts>\d+\.\d+):\s+"
                   r"(?P<event>\w+):\s+(?P<body>.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")
_EVENT_KIND = {"inet_sock_set_state": "state", "tcp_retransmit_skb": "retransmit",
               "tcp_receive_reset": "receive_reset", "tcp_send_reset": "send_reset"}


def parse_line(line: str, clock_offset_ns: int = 0) -> KernelEvent | None:
    """Parse one line of ``trace_pipe``; None for lines that are not one of rawfin's events.

    ``clock_offset_ns`` is added to the trace timestamp to give CLOCK_REALTIME.
    """
    m = _HEAD.match(line)
    if not m:
        return None
    kind = _EVENT_KIND.get(m.group("event"))
    if kind is None:
        return None
    f = dict(_FIELD.findall(m.group("body")))
    if f.get("protocol", "IPPROTO_TCP") != "IPPROTO_TCP":
        return None
    sec, _, frac = m.group("ts").partition(".")
    ts = int(sec) * 10**9 + int(frac.ljust(9, "0")[:9]) + clock_offset_ns
    if f.get("family") == "AF_INET6":
        saddr, daddr = f.get("saddrv6", "::"), f.get("daddrv6", "::")
        if saddr.startswith("::ffff:") and "." in saddr:
            saddr, daddr = saddr[7:], daddr[7:]
    else:
        saddr, daddr = f.get("saddr", "0.0.0.0"), f.get("daddr", "0.0.0.0")
    try:
        local = (saddr, int(f.get("sport", "0")))
        remote = (daddr, int(f.get("dport", "0")))
    except ValueError:
        return None
    if kind == "state":
        old = f.get("oldstate", "").removeprefix("TCP_")
        new = f.get("newstate", "").removeprefix("TCP_")
    else:
        old, new = "", f.get("state", "").removeprefix("TCP_")
    return KernelEvent(time_ns=ts, kind=kind, local=local, remote=remote, old=old, new=new,
                       skaddr=f.get("skaddr", ""), line=line.rstrip("\n"))


class Binder:
    """Gives ``CLOSE -> SYN_SENT`` its local port.

    connect() moves the socket to SYN_SENT before it binds a local port, so the
    tracepoint shows port 0 (and the text output has no socket address to tie
    it to the socket's next event). The next event that leaves SYN_SENT
    toward the same remote endpoint names the port; events are held until then.
    """

    def __init__(self) -> None:
        self._unbound: dict[tuple, list[KernelEvent]] = {}

    def feed(self, events: list[KernelEvent]) -> list[KernelEvent]:
        from dataclasses import replace
        out = []
        for ev in events:
            if ev.kind == "state" and ev.local[1] == 0 and ev.new == "SYN_SENT":
                self._unbound.setdefault(ev.remote, []).append(ev)
                continue
            if ev.kind == "state" and ev.old == "SYN_SENT" and self._unbound.get(ev.remote):
                first = self._unbound[ev.remote].pop(0)
                out.append(replace(first, local=ev.local))
            out.append(ev)
        return out

    def flush(self) -> list[KernelEvent]:
        out = [e for evs in self._unbound.values() for e in evs]
        self._unbound.clear()
        return out


# -- interpretation ----------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class KernelTransition:
    """A kernel state change in rawfin's names, with the kernel's own words beside it."""

    time_ns: int
    endpoint: str
    peer: str
    from_: State
    to: State
    kernel: str          # what the tracepoint said: "FIN_WAIT2 → CLOSE"
    note: str = ""
    source: str = "tracepoint"   # or "/proc/net/tcp" for what the tracepoint cannot see

    def record(self, conn: int | None = None) -> dict:
        return {"type": "kernel", "conn": conn, "time": round(self.time_ns / 1e9, 9),
                "endpoint": self.endpoint, "peer": self.peer, "from": self.from_.value, "to": self.to.value,
                "kernel": self.kernel, "note": self.note, "source": self.source}


HANDOFF_NOTE = ("the tracepoint says {k}: Linux handed the connection to a timewait socket "
                "(ss shows TIME-WAIT), counted as TIME_WAIT")
ORPHAN_NOTE = ("the tracepoint says FIN_WAIT2 → CLOSE before the peer's FIN: the closed (orphaned) socket "
               "was handed to a timewait socket in substate FIN_WAIT2 (ss shows FIN-WAIT-2); its move to "
               "TIME_WAIT is not traced")


class Interpreter:
    """Maps a stream of :class:`KernelEvent` to :class:`KernelTransition`, one socket at a time.

    ``peer_fin_seen(local, remote, time_ns)`` answers whether the peer's FIN had
    reached ``local`` by ``time_ns`` (from the wire); without it a
    ``FIN_WAIT2 -> CLOSE`` hand-off is counted as TIME_WAIT.
    """

    def __init__(self, peer_fin_seen=None) -> None:
        self.peer_fin_seen = peer_fin_seen
        self._reset: dict[tuple, str] = {}   # socket key -> "received" / "sent"
        self.orphans: dict[tuple, int] = {}  # sockets handed off in substate FIN_WAIT2 -> time
        self.retransmits: list[KernelEvent] = []

    def feed(self, events: list[KernelEvent]) -> list[KernelTransition]:
        """Interpret a batch (events read together are looked at together: a RST
        event right after a CLOSE explains it)."""
        out: list[KernelTransition] = []
        for i, ev in enumerate(events):
            if ev.kind == "retransmit":
                self.retransmits.append(ev)
                continue
            if ev.kind in ("receive_reset", "send_reset"):
                self._reset[ev.key] = "received" if ev.kind == "receive_reset" else "sent"
                continue
            later_rst = any(e.kind in ("send_reset", "receive_reset") and e.key == ev.key
                            for e in events[i + 1:i + 4])
            tr = self._one(ev, rst=later_rst or ev.key in self._reset)
            if tr is not None:
                out.append(tr)
        return out

    def _one(self, ev: KernelEvent, rst: bool) -> KernelTransition | None:
        if ev.kind != "state":
            return None
        try:
            old, new = kernel_state(ev.old), kernel_state(ev.new)
        except ValueError:
            return None
        said = ev.describe()
        note = ""
        if ev.old == "NEW_SYN_RECV" or ev.new == "NEW_SYN_RECV":
            note = "request socket"
        if new is State.CLOSED and old in (State.FIN_WAIT_2, State.CLOSING) and not rst:
            fin_seen = True
            if old is State.FIN_WAIT_2 and self.peer_fin_seen is not None:
                fin_seen = self.peer_fin_seen(ev.local, ev.remote, ev.time_ns)
            if fin_seen:
                new, note = State.TIME_WAIT, HANDOFF_NOTE.format(k=said)
            else:
                self.orphans[ev.key] = ev.time_ns
                new, note = State.FIN_WAIT_2, ORPHAN_NOTE
        elif new is State.CLOSED and rst:
            how = self._reset.get(ev.key, "")
            note = f"reset ({how})" if how else "reset"
        if old is new and not note:
            return None
        return KernelTransition(time_ns=ev.time_ns, endpoint=ev.endpoint, peer=ev.peer, from_=old, to=new,
                                kernel=said, note=note)

    def orphan_reached_time_wait(self, local: tuple[str, int], remote: tuple[str, int],
                                 time_ns: int, read=None) -> KernelTransition | None:
        """After the peer's FIN reached an orphan handed off in FIN_WAIT2: ask
        /proc/net/tcp whether its timewait socket is now in TIME_WAIT."""
        key = (local, remote)
        if key not in self.orphans:
            return None
        del self.orphans[key]
        sub = timewait_sockets(read).get(key)
        if sub is None:
            return None
        st = kernel_state(sub)
        return KernelTransition(time_ns=time_ns, endpoint=fmt_endpoint(*local), peer=fmt_endpoint(*remote),
                                from_=State.FIN_WAIT_2, to=st, kernel=f"timewait socket substate {sub}",
                                note="the tracepoint does not see a timewait socket's own move; "
                                     "/proc/net/tcp shows it", source="/proc/net/tcp")


# -- /proc/net/tcp ------------------------------------------------------------------

def _proc_addr(hexaddr: str) -> tuple[str, int]:
    import ipaddress
    import struct
    a, p = hexaddr.split(":")
    raw = bytes.fromhex(a)
    if len(raw) == 4:
        ip = str(ipaddress.IPv4Address(struct.pack("<I", int(a, 16))))
    else:
        words = struct.unpack("<4I", raw)
        ip6 = ipaddress.IPv6Address(struct.pack(">4I", *words))
        ip = str(ip6.ipv4_mapped) if ip6.ipv4_mapped else str(ip6)
    return ip, int(p, 16)


def _read_proc_net(name: str) -> str:
    with open(f"/proc/thread-self/net/{name}") as fh:
        return fh.read()


def proc_tcp(read=None) -> list[tuple[tuple[str, int], tuple[str, int], str, bool]]:
    """Every TCP socket in /proc/net/tcp{,6}: (local, remote, kernel state name, is_timewait).

    For a timewait socket the state column holds its substate (FIN_WAIT2 or TIME_WAIT).
    ``read(name)`` returns the text of /proc/net/NAME (another namespace's, say);
    by default the calling thread's namespace is read.
    """
    read = read or _read_proc_net
    out = []
    for name in ("tcp", "tcp6"):
        try:
            lines = read(name).splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            parts = ln.split()
            if len(parts) < 4:
                continue
            try:
                local, remote = _proc_addr(parts[1]), _proc_addr(parts[2])
                st = KERNEL_STATE_NUMBERS.get(int(parts[3], 16), parts[3])
            except ValueError:
                continue
            # only a timewait socket shows timer kind 3 ("tr" column)
            tw = parts[5].startswith("03:")
            out.append((local, remote, st, tw))
    return out


def timewait_sockets(read=None) -> dict[tuple, str]:
    """(local, remote) -> substate for every socket in TIME_WAIT or an orphan's FIN_WAIT2."""
    return {(l, r): st for l, r, st, tw in proc_tcp(read) if st == "TIME_WAIT" or tw}


# -- tracefs ------------------------------------------------------------------------

_counter = itertools.count()


def _mounts() -> list[tuple[str, str]]:
    try:
        with open("/proc/self/mounts") as fh:
            return [(p[1], p[2]) for p in (ln.split() for ln in fh) if len(p) > 2]
    except OSError:
        return []


def find_tracefs() -> str | None:
    """Where tracefs is mounted now (None when nowhere)."""
    for path, fstype in _mounts():
        if fstype == "tracefs":
            return path.replace("\\040", " ")
    for path, fstype in _mounts():
        if fstype == "debugfs" and os.path.isdir(os.path.join(path, "tracing", "instances")):
            return os.path.join(path, "tracing")
    return None


def tracefs_missing_reason() -> str | None:
    """Why kernel truth cannot work here, or None when it can (mounting is allowed)."""
    if os.geteuid() != 0:
        return "not root: tracefs needs root (or CAP_SYS_ADMIN to mount it)"
    root = find_tracefs()
    if root is None:
        if not any(ln.split()[-1] == "tracefs" for ln in _read("/proc/filesystems").splitlines() if ln.strip()):
            return "the kernel has no tracefs (CONFIG_TRACING off)"
        return None
    if not os.path.isdir(os.path.join(root, "events", "sock", "inet_sock_set_state")):
        return "the kernel has no tracepoint sock:inet_sock_set_state"
    return None


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


class Tracer:
    """A trace instance of rawfin's own, recording TCP state changes. Use as a context manager.

    ``filters`` is a tracefs filter expression applied to the state event
    (``protocol == 6`` is always added).
    """

    EVENTS = ("sock/inet_sock_set_state", "tcp/tcp_retransmit_skb", "tcp/tcp_receive_reset",
              "tcp/tcp_send_reset")

    def __init__(self, *, state_filter: str | None = None, buffer_kb: int = 1024) -> None:
        self.state_filter = state_filter
        self.buffer_kb = buffer_kb
        self.root: str | None = None
        self.instance: str | None = None
        self.mounted: str | None = None
        self.fd: int | None = None
        self.offset_ns = 0
        self._buf = b""
        self.events_enabled: list[str] = []

    # -- lifecycle
    def __enter__(self) -> "Tracer":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        why = tracefs_missing_reason()
        if why and why.startswith("not root"):
            raise PrivilegeError(f"--kernel-truth: {why}")
        if why:
            raise RawfinError(f"--kernel-truth: {why}")
        root = find_tracefs()
        if root is None:
            root = self._mount()
        self.root = root
        name = f"rawfin-{os.getpid()}-{next(_counter)}"
        path = os.path.join(root, "instances", name)
        try:
            os.mkdir(path)
        except PermissionError:
            raise PrivilegeError(f"cannot create the trace instance {path}: needs root") from None
        self.instance = path
        clock = "mono"
        try:
            _write(os.path.join(path, "trace_clock"), "tai")
            clock = "tai"
        except OSError:
            _write(os.path.join(path, "trace_clock"), "mono")
        self.offset_ns = self._clock_offset(clock)
        try:
            _write(os.path.join(path, "buffer_size_kb"), str(self.buffer_kb))
        except OSError:
            pass
        for ev in self.EVENTS:
            d = os.path.join(path, "events", ev)
            if not os.path.isdir(d):
                if ev == self.EVENTS[0]:
                    raise RawfinError("--kernel-truth: the kernel has no tracepoint sock:inet_sock_set_state")
                continue
            if ev == self.EVENTS[0]:
                flt = "protocol == 6"
                if self.state_filter:
                    flt = f"({flt}) && ({self.state_filter})"
                _write(os.path.join(d, "filter"), flt)
            _write(os.path.join(d, "enable"), "1")
            self.events_enabled.append(ev)
        _write(os.path.join(path, "tracing_on"), "1")
        self.fd = os.open(os.path.join(path, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)

    @staticmethod
    def _clock_offset(clock: str) -> int:
        """Nanoseconds to add to a trace timestamp to get CLOCK_REALTIME."""
        if clock == "tai":
            tai = time.clock_gettime_ns(time.CLOCK_TAI)
            real = time.time_ns()
            return -round((tai - real) / 1e9) * 10**9   # a whole number of seconds
        best = None
        for _ in range(5):
            a = time.time_ns()
            m = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            b = time.time_ns()
            if best is None or b - a < best[0]:
                best = (b - a, (a + b) // 2 - m)
        return best[1]

    def _mount(self) -> str:
        for target in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
            if os.path.isdir(target):
                try:
                    _mount_tracefs(target)
                    self.mounted = target
                    return target
                except OSError as e:
                    if e.errno == errno.EPERM:
                        raise PrivilegeError("--kernel-truth: cannot mount tracefs: needs root "
                                             "(CAP_SYS_ADMIN)") from None
        raise RawfinError("--kernel-truth: tracefs is not mounted and cannot be mounted at /sys/kernel/tracing")

    def stop(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            finally:
                self.fd = None
        if self.instance is not None:
            try:
                _write(os.path.join(self.instance, "tracing_on"), "0")
            except OSError:
                pass
            for ev in self.events_enabled:
                try:
                    _write(os.path.join(self.instance, "events", ev, "enable"), "0")
                except OSError:
                    pass
            for _ in range(50):
                try:
                    os.rmdir(self.instance)
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        break
                    time.sleep(0.02)
            self.instance = None
        if self.mounted is not None:
            try:
                _umount(self.mounted)
            except OSError:
                pass
            self.mounted = None

    # -- reading
    def fileno(self) -> int:
        if self.fd is None:
            raise RawfinError("tracer is not running")
        return self.fd

    def read(self, timeout: float = 0.0) -> list[KernelEvent]:
        """Whatever the kernel has recorded so far (waiting up to ``timeout`` seconds for the first)."""
        if self.fd is None:
            return []
        if timeout > 0:
            select.select([self.fd], [], [], timeout)
        chunks = []
        while True:
            try:
                b = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EINTR):
                    break
                raise
            if not b:
                break
            chunks.append(b)
        if not chunks:
            return []
        data = self._buf + b"".join(chunks)
        lines = data.split(b"\n")
        self._buf = lines.pop()
        out = []
        for ln in lines:
            ev = parse_line(ln.decode("utf-8", "replace"), self.offset_ns)
            if ev is not None:
                out.append(ev)
        return out

    def drain(self, settle: float = 0.05) -> list[KernelEvent]:
        """Read until the kernel has nothing more for ``settle`` seconds."""
        out = []
        while True:
            got = self.read(timeout=settle)
            if not got:
                return out
            out.extend(got)


def _libc():
    import ctypes
    import ctypes.util
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mount_tracefs(target: str) -> None:
    import ctypes
    libc = _libc()
    if libc.mount(b"nodev", target.encode(), b"tracefs", 0, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), target)


def _umount(target: str) -> None:
    import ctypes
    libc = _libc()
    if libc.umount2(target.encode(), 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), target)

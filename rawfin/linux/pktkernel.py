"""The Linux kernel as packetdrill's system under test, in a network namespace of rawfin's own.

As packetdrill's own local mode does: a TUN device named ``tun0`` (with a
``virtio_net_hdr`` and checksum/TSO offload, so a 10,000-byte write leaves as one
segment as on a NIC), the system under test's address on it (192.168.0.1 by
default, or ``--local_ip``), a route to the script's side (192.0.2.1, or
``--remote_ip``) through it; inbound segments are written to the device,
outbound ones read from it. The script's system calls are made by one thread
of rawfin's that lives in the namespace, through libc itself (``ctypes``), so
their return values and errno are the kernel's own. The kernel's state changes
come from the tracepoint ``sock:inet_sock_set_state`` (:mod:`rawfin.linux.kernel`).
Shell commands of the safe subset run inside the namespace (``net.*`` sysctls
are the namespace's own). Closing the namespace removes everything: nothing is
left on the machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import ipaddress
import os
import queue
import select
import shutil
import socket
import struct
import subprocess
import threading
import time

from rawfin.core.errors import PrivilegeError, RawfinError
from rawfin.sim.pktrun import Pending, RunConfig, ShellCommand, Target
from rawfin.wire import tcpraw

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN, IFF_NO_PI, IFF_VNET_HDR = 0x0001, 0x1000, 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN = 0x01, 0x02, 0x04, 0x08
CLONE_NEWNET = 0x40000000


def missing_reason() -> str | None:
    """Why the kernel target cannot run here (None when it can)."""
    from rawfin.linux import netns
    why = netns.missing_reason()
    if why:
        return why
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed (needed to address and route tun0)"
    return None


def realtime() -> tuple | None:
    """Run the calling thread SCHED_RR at the lowest real-time priority, as packetdrill does on a
    machine with more than one CPU (it only ever sleeps or waits in select, so it takes nothing from
    others; it just wakes on time when the machine is busy). The old policy, to restore; None if not
    allowed."""
    if (os.cpu_count() or 1) <= 1 or not hasattr(os, "sched_setscheduler"):
        return None
    try:
        old = (os.sched_getscheduler(0), os.sched_getparam(0))
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(os.sched_get_priority_min(os.SCHED_RR)))
        return old
    except OSError:
        return None


class _Libc:
    """The system calls, straight from libc, errno kept."""

    def __init__(self) -> None:
        c = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.c = c
        for name in ("read", "write", "send", "recv", "sendto", "recvfrom"):
            getattr(c, name).restype = ctypes.c_ssize_t
        c.read.argtypes = c.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
        c.send.argtypes = c.recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        c.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
        c.fcntl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long]

    def call(self, fn: str, *args) -> tuple[int, int]:
        ctypes.set_errno(0)
        r = getattr(self.c, fn)(*args)
        return r, (ctypes.get_errno() if r < 0 else 0)


def parse_tcp_info(raw: bytes) -> dict[str, int]:
    """Linux's struct tcp_info (include/uapi/linux/tcp.h) as the fields packetdrill gives a %{ }% block:
    eight bytes (two of them nibbles), then 32-bit counters in pktcode.FIELDS' order."""
    from rawfin.sim.pktcode import FIELDS
    u32 = FIELDS[8:]
    need = 8 + 4 * len(u32)
    if len(raw) < need:
        raise ValueError(f"TCP_INFO: {len(raw)} bytes, expected at least {need}")
    b = raw[:8]
    out = {"tcpi_state": b[0], "tcpi_ca_state": b[1], "tcpi_retransmits": b[2], "tcpi_probes": b[3],
           "tcpi_backoff": b[4], "tcpi_options": b[5], "tcpi_snd_wscale": b[6] & 0xF, "tcpi_rcv_wscale": b[6] >> 4}
    out.update(zip(u32, struct.unpack_from(f"={len(u32)}I", raw, 8)))
    return out


def _sockaddr(ip: str, port: int) -> bytes:
    """struct sockaddr_in / sockaddr_in6 for ``ip``:``port``."""
    if ":" in ip:
        return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI16s", port, 0,
                                                               socket.inet_pton(socket.AF_INET6, ip)) + b"\0" * 4
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", port, socket.inet_aton(ip))


class _Worker(threading.Thread):
    """The thread that lives in the namespace and makes every system call there."""

    def __init__(self, ns) -> None:
        super().__init__(name="rawfin-packetdrill-syscalls", daemon=True)
        self.ns = ns
        self.jobs: queue.Queue = queue.Queue()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.r, self.w = os.pipe()          # one byte per finished call: wakes the main loop's select
        os.set_blocking(self.r, False)
        self.libc = _Libc()
        self.clock = None

    def run(self) -> None:
        realtime()
        try:
            self.ns_ctx = self.ns.inside()
            self.ns_ctx.__enter__()          # this thread stays in the namespace for good
        except BaseException as e:          # noqa: BLE001 - handed to the caller
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        while True:
            job = self.jobs.get()
            if job is None:
                return
            fn, args, box = job
            try:
                box["result"] = fn(*args)
            except BaseException as e:      # noqa: BLE001 - handed to the caller
                box["error"] = e
            box["end_ns"] = time.monotonic_ns()
            box["done"] = True
            with contextlib.suppress(OSError):
                os.write(self.w, b"x")

    def submit(self, fn, *args) -> dict:
        box: dict = {"done": False}
        self.jobs.put((fn, args, box))
        return box

    def run_sync(self, fn, *args, timeout: float = 10.0):
        box = self.submit(fn, *args)
        end = time.monotonic() + timeout
        while not box["done"]:
            if time.monotonic() > end:
                raise RawfinError(f"the namespace's thread did not finish {getattr(fn, '__name__', fn)} "
                                  f"in {timeout:g} s")
            time.sleep(0.0005)
        if "error" in box:
            raise box["error"]
        return box["result"]


class KernelTarget(Target):
    """A real Linux socket in a namespace of rawfin's own, the script's packets over ``tun0``."""

    name = "kernel"

    def __init__(self, *, kernel_truth: bool = True) -> None:
        self.want_truth = kernel_truth
        self.truth = ""
        self.ns = None
        self.tun_fd: int | None = None
        self.worker: _Worker | None = None
        self.tracer = None
        self.interp = None
        self.events: list = []
        self.t0 = 0
        self.rt0 = 0
        self.queue: list[tuple[int, bytes, None]] = []
        self.fds: set[int] = set()
        self._notes: list[str] = []
        self._fin_at: dict = {}
        self.ktrans: list[tuple] = []
        self._orphan_checks: list[tuple[int, tuple, tuple, int]] = []   # (due µs, local, remote, FIN time ns)

    # -- lifecycle -------------------------------------------------------------------------
    def open(self, cfg: RunConfig) -> None:
        from rawfin.linux.netns import NetNamespace
        why = missing_reason()
        if why is not None:
            if "root" in why or "CAP_NET_ADMIN" in why:
                raise PrivilegeError(f"--against kernel: {why}")
            raise RawfinError(f"--against kernel: {why}")
        self.cfg = cfg
        try:
            self.ns = NetNamespace()
            self.ns.open()
            self.worker = _Worker(self.ns)
            self.worker.start()
            self.worker.ready.wait(10)
            if self.worker.error is not None:
                raise self.worker.error
            self.tun_fd = self.worker.run_sync(self._make_tun)
            self.worker.run_sync(self._address)
            self._start_truth(cfg)
            self._sched = realtime()
            self.t0 = time.monotonic_ns()
            self.rt0 = time.time_ns()
        except BaseException:
            self.close()
            raise

    def _make_tun(self) -> int:
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except PermissionError:
            raise PrivilegeError("opening /dev/net/tun needs root or CAP_NET_ADMIN") from None
        try:
            ifr = struct.pack("16sH", b"tun0", IFF_TUN | IFF_NO_PI | IFF_VNET_HDR).ljust(40, b"\0")
            fcntl.ioctl(fd, TUNSETIFF, ifr)
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)
            os.set_blocking(fd, False)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _ip(self, *args: str) -> None:
        r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise RawfinError(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")

    def _address(self) -> None:
        cfg = self.cfg
        self._ip("link", "set", "lo", "up")
        self._ip("link", "set", "tun0", "mtu", str(cfg.mtu), "up")
        if cfg.wire_v6:
            self._ip("-6", "addr", "add", f"{cfg.local_ip}/48", "dev", "tun0", "nodad")
            net = ipaddress.IPv6Network(f"{cfg.remote_ip}/32", strict=False)
            self._ip("-6", "route", "add", str(net), "dev", "tun0")
        else:
            with contextlib.suppress(OSError):
                with open("/proc/sys/net/ipv6/conf/tun0/disable_ipv6", "w") as fh:
                    fh.write("1")
            self._ip("addr", "add", f"{cfg.local_ip}/16", "dev", "tun0")
            net = ipaddress.IPv4Network(f"{cfg.remote_ip}/24", strict=False)
            if not ipaddress.IPv4Address(cfg.local_ip) in net:
                self._ip("route", "add", str(net), "dev", "tun0")

    def _start_truth(self, cfg: RunConfig) -> None:
        if not self.want_truth:
            self.truth = "not asked for"
            return
        from rawfin.linux.kernel import Interpreter, Tracer, tracefs_missing_reason
        why = tracefs_missing_reason()
        if why is not None:
            self.truth = f"unavailable: {why}"
            return
        try:
            self.tracer = Tracer(state_filter=f"sport == {cfg.bind_port} || dport == {cfg.connect_port}")
            self.tracer.start()
        except RawfinError as e:
            self.tracer = None
            self.truth = f"unavailable: {e}"
            return
        self.interp = Interpreter(peer_fin_seen=self._peer_fin_seen)
        self.truth = "tracepoint sock:inet_sock_set_state"

    def _peer_fin_seen(self, local, remote, time_ns: int) -> bool:
        t = self._fin_at.get((local, remote))
        return t is not None and t <= time_ns + 1000

    def close(self) -> None:
        old = getattr(self, "_sched", None)
        if old is not None:
            with contextlib.suppress(OSError):
                os.sched_setscheduler(0, old[0], old[1])
            self._sched = None
        if self.tracer is not None:
            with contextlib.suppress(Exception):
                self.tracer.stop()
            self.tracer = None
        w = self.worker
        if w is not None:
            for fd in list(self.fds):
                with contextlib.suppress(Exception):
                    # wake a call that still blocks, then let the fd go
                    w.libc.call("shutdown", fd, 2)
            if w.is_alive():
                with contextlib.suppress(Exception):
                    w.run_sync(self._close_all, timeout=2.0)
                w.jobs.put(None)
                w.join(2.0)
            for fd in (w.r, w.w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.worker = None
        if self.tun_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.tun_fd)
            self.tun_fd = None
        if self.ns is not None:
            self.ns.close()
            self.ns = None

    def _close_all(self) -> None:
        for fd in list(self.fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()

    # -- time and packets --------------------------------------------------------------------
    def now(self) -> int:
        return (time.monotonic_ns() - self.t0) // 1000

    def _pump(self, timeout_s: float) -> None:
        fds = [self.tun_fd, self.worker.r]
        if self.tracer is not None:
            fds.append(self.tracer.fileno())
        try:
            ready, _, _ = select.select(fds, [], [], max(0.0, timeout_s))
        except InterruptedError:
            ready = []
        self._read_tun()
        if self.tracer is not None and self.tracer.fileno() in ready:
            self._feed(self.tracer.read())
        if self._orphan_checks:
            self._check_orphans()
        with contextlib.suppress(OSError):
            os.read(self.worker.r, 4096)

    def _read_tun(self) -> None:
        while True:
            try:
                frame = os.read(self.tun_fd, 65536 + tcpraw.VNET_HDR_LEN)
            except BlockingIOError:
                return
            t = self.now()
            try:
                raw, _gso = tcpraw.strip_vnet(frame)
            except Exception:      # noqa: BLE001 - a frame without a virtio header is no TCP of ours
                continue
            self.queue.append((t, raw, None))

    def wait(self, until_us: int) -> None:
        while True:
            left = until_us - self.now()
            if left <= 0:
                self._read_tun()
                return
            self._pump(left / 1e6)

    def inject(self, raw: bytes, pkt: tcpraw.Packet) -> None:
        if pkt.seg.fin:
            key = ((pkt.seg.dst, pkt.seg.dport), (pkt.seg.src, pkt.seg.sport))
            t = self.rt0 + self.now() * 1000
            self._fin_at.setdefault(key, t)
            # an orphan handed to a timewait socket in FIN_WAIT2: its move to TIME_WAIT is not traced,
            # /proc/net/tcp shows it a moment after the FIN
            self._orphan_checks.append((self.now() + 5000, key[0], key[1], t))
        os.write(self.tun_fd, tcpraw.vnet_header() + raw)
        return None

    def sniff(self, until_us: int | None):
        cap = self.now() + 30_000_000 if until_us is None else until_us
        while True:
            self._read_tun()
            if self.queue:
                return self.queue.pop(0)
            left = cap - self.now()
            if left <= 0:
                return None
            self._pump(left / 1e6)

    # -- system calls --------------------------------------------------------------------------
    def start_call(self, p: Pending) -> None:
        box = self.worker.submit(self._syscall, p.call)
        p.out = box

    def wait_call(self, p: Pending, until_us: int) -> bool:
        box = p.out if isinstance(p.out, dict) else None
        while box is not None and not box["done"]:
            left = until_us - self.now()
            if left <= 0:
                return False
            self._pump(min(left / 1e6, 0.05))
        if box is not None:
            if "error" in box:
                raise box["error"]
            p.ret, p.errno, p.out = box["result"]
            p.end_us = (box["end_ns"] - self.t0) // 1000
        p.done = True
        return True

    def _syscall(self, call) -> tuple[int, int, object]:
        """Runs in the namespace's thread."""
        lc = self.worker.libc
        n, fd, a = call.name, call.fd, call.args
        if n == "socket":
            r, e = lc.call("socket", a["domain"], a["type"], a["proto"])
            if r >= 0:
                self.fds.add(r)
            return r, e, None
        if n in ("bind", "connect"):
            sa = _sockaddr(*a["addr"])
            r, e = lc.call(n, fd, sa, len(sa))
            return r, e, None
        if n == "listen":
            r, e = lc.call("listen", fd, a["backlog"])
            return r, e, None
        if n == "accept":
            buf = ctypes.create_string_buffer(128)
            ln = ctypes.c_uint32(128)
            r, e = lc.call("accept", fd, buf, ctypes.byref(ln))
            if r >= 0:
                self.fds.add(r)
            return r, e, None
        if n in ("read", "readv", "recv", "recvfrom", "recvmsg"):
            count = a["count"]
            buf = ctypes.create_string_buffer(max(count, 1))
            if n in ("read", "readv"):
                r, e = lc.call("read", fd, buf, count)
            else:
                r, e = lc.call("recv", fd, buf, count, a.get("flags", 0))
            return r, e, None
        if n in ("write", "writev", "send", "sendto", "sendmsg"):
            count = a["count"]
            buf = ctypes.create_string_buffer(max(count, 1))
            if n in ("write", "writev"):
                r, e = lc.call("write", fd, buf, count)
            else:
                r, e = lc.call("send", fd, buf, count, a.get("flags", 0) | socket.MSG_NOSIGNAL)
            return r, e, None
        if n == "close":
            r, e = lc.call("close", fd)
            self.fds.discard(fd)
            return r, e, None
        if n == "shutdown":
            r, e = lc.call("shutdown", fd, a["how"])
            return r, e, None
        if n == "setsockopt":
            v = a["value"]
            if isinstance(v, tuple):
                b = struct.pack("ii", *v)
            elif isinstance(v, str):
                b = v.encode()
            else:
                b = struct.pack("i", v)
            r, e = lc.call("setsockopt", fd, a["level"], a["name"], b, len(b))
            return r, e, None
        if n == "getsockopt":
            buf = ctypes.create_string_buffer(64)
            ln = ctypes.c_uint32(64)
            r, e = lc.call("getsockopt", fd, a["level"], a["name"], buf, ctypes.byref(ln))
            out = None
            if r == 0:
                raw = buf.raw[:ln.value]
                if a["opt"] == "SO_LINGER" and len(raw) >= 8:
                    out = struct.unpack("ii", raw[:8])
                elif len(raw) >= 4:
                    out = struct.unpack("i", raw[:4])[0]
            return r, e, out
        if n == "tcp_info":
            buf = ctypes.create_string_buffer(256)
            ln = ctypes.c_uint32(256)
            r, e = lc.call("getsockopt", fd, socket.IPPROTO_TCP, socket.TCP_INFO, buf, ctypes.byref(ln))
            return r, e, (parse_tcp_info(buf.raw[:ln.value]) if r == 0 else None)
        if n == "fcntl":
            r, e = lc.call("fcntl", fd, a["cmd"], a["arg"])
            return r, e, None
        if n == "ioctl":
            v = ctypes.c_int(0)
            r, e = lc.call("ioctl", fd, a["request"], ctypes.byref(v))
            return r, e, v.value
        if n == "poll":
            fds = a["fds"]
            arr = (ctypes.c_int * (2 * len(fds)))()
            for i, (f, ev, _) in enumerate(fds):
                arr[2 * i] = f
                arr[2 * i + 1] = ev & 0xFFFF
            r, e = lc.call("poll", arr, len(fds), a["timeout"])
            rev = [(arr[2 * i + 1] >> 16) & 0xFFFF for i in range(len(fds))]
            return r, e, rev
        raise RawfinError(f"{n}() is not supported against the kernel")

    # -- shell commands --------------------------------------------------------------------------
    def shell(self, cmd: ShellCommand) -> str:
        return self.worker.run_sync(self._shell, cmd)

    def _shell(self, cmd: ShellCommand) -> str:
        if cmd.kind == "sysctl":
            done, missing = [], []
            for k, v in cmd.sysctls:
                path = "/proc/sys/" + k.replace(".", "/")
                try:
                    with open(path, "w") as fh:
                        fh.write(v.strip().strip('"') + "\n")
                    done.append(f"{k}={v}")
                except FileNotFoundError:
                    missing.append(f"{k} (this kernel has no such setting)")
                except OSError as e:
                    missing.append(f"{k} ({e.strerror})")
            parts = ["sysctl " + ", ".join(done)] if done else []
            parts += [f"sysctl {m}: not set" for m in missing]
            return "; ".join(parts)
        if cmd.kind == "tcp-metrics-flush":
            r = subprocess.run(["ip", "tcp_metrics", "flush", "all"], capture_output=True, timeout=10)
            return "ip tcp_metrics flush all" + ("" if r.returncode == 0 else " (nothing to flush)")
        if shutil.which("tc") is None:
            return f"tc {' '.join(cmd.args)}: tc is not installed here, not run"
        r = subprocess.run(["tc", *cmd.args], capture_output=True, text=True, timeout=10)
        return f"tc {' '.join(cmd.args)}" + ("" if r.returncode == 0 else f" (failed: {r.stderr.strip()})")

    # -- the kernel's own states -------------------------------------------------------------------
    def _mine(self, e) -> bool:
        cfg = self.cfg
        return (e.local[0] in (cfg.local_ip, "::ffff:" + cfg.local_ip, "0.0.0.0", "::")
                and (e.remote[0] in (cfg.remote_ip, "0.0.0.0", "::") or e.local[1] == cfg.bind_port))

    def _feed(self, evs) -> None:
        self.events.extend(evs)
        if self.interp is None:
            return
        for tr in self.interp.feed([e for e in evs if self._mine(e)]):
            self._keep(tr)

    def _keep(self, tr) -> None:
        self.ktrans.append((tr.time_ns - self.rt0, tr.endpoint, tr.peer, tr.from_.value, tr.to.value,
                            tr.kernel + (f" ({tr.note})" if tr.note else "")))

    def _check_orphans(self, force: bool = False) -> None:
        if self.interp is None or self.ns is None:
            self._orphan_checks.clear()
            return
        now = self.now()
        for item in list(self._orphan_checks):
            due, local, remote, fin_ns = item
            if not force and now < due:
                continue
            self._orphan_checks.remove(item)
            if (local, remote) in self.interp.orphans:
                tr = self.interp.orphan_reached_time_wait(local, remote, fin_ns, read=self.ns.proc_net)
                if tr is not None:
                    self._keep(tr)

    def transitions(self) -> list:
        if self.tracer is None or self.interp is None:
            return []
        self._feed(self.tracer.drain(0.05))
        self._check_orphans(force=True)
        return sorted(self.ktrans, key=lambda t: t[0])

    def notes(self) -> list[str]:
        return list(self._notes)

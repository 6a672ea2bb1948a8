"""The kernel's packet ring: an ``AF_PACKET`` socket read through ``TPACKET_V3``, as libpcap reads it.

The kernel writes each captured frame into a ring of blocks shared with rawfin (``mmap``);
a block is handed to rawfin when it is full or when ``timeout_ms`` has passed since its
first frame, and handed back once its frames are read. Nothing is copied through a
system call per frame, and a burst the reader cannot follow at once waits in the ring
(``buffer_bytes`` of it) instead of being lost; what does not fit is counted by the
kernel (``PACKET_STATISTICS``: ``tp_drops``, and ``tp_freeze_q_cnt``, the times the ring
was full), and :meth:`PacketRing.stats` says so.

The socket is ``SOCK_DGRAM`` (Linux "cooked" capture): a frame starts at its network
header, whatever the link, and its ``sockaddr_ll`` says the protocol, the interface and
the direction. On the loopback device each packet passes twice (going out and coming in);
the outgoing copy is rejected in the kernel by a few BPF instructions put before the
capture filter, as libpcap rejects it in user space, so it takes no room in the ring.
``interface="any"`` captures on every interface (``tcpdump -i any``).

The layout of the ring follows ``linux/if_packet.h`` (``tpacket_req3``,
``tpacket_block_desc``, ``tpacket3_hdr``) and the kernel's
Documentation/networking/packet_mmap.rst.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import socket
import struct
from typing import Iterator

from rawfin.core.errors import PrivilegeError, UsageError

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_LOSING = 4
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
ARPHRD_LOOPBACK = 772

BLOCK_STATUS = 8                 # tpacket_block_desc: version, offset_to_priv, then hdr.bh1: status, ...
BLOCK_HEAD = struct.Struct("<III")   # block_status, num_pkts, offset_to_first_pkt
FRAME_HEAD = struct.Struct("<IIIIIIHH")   # tpacket3_hdr: next, sec, nsec, snaplen, len, status, mac, net
SLL_AT = 48                      # TPACKET_ALIGN(sizeof(struct tpacket3_hdr)): the sockaddr_ll follows
SLL = struct.Struct("<HHiHBB8s")  # family, protocol (big-endian), ifindex, hatype, pkttype, halen, addr

BLOCK_BYTES = 1 << 17            # 128 KiB: filled within the timeout at burst rates; larger frames are cut to fit
MIN_BLOCKS = 2
DEFAULT_BUFFER_KIB = 16384       # 16 MiB: about 110,000 short loopback segments waiting
DEFAULT_TIMEOUT_MS = 50          # a block that is not full is handed over after this long
SNAPLEN = 262144


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


# classic BPF opcodes and the kernel's ancillary offsets (linux/filter.h)
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_RET_K = 0x06
_SKF_AD_OFF = -0x1000
_SKF_AD_PKTTYPE = 4
_SKF_AD_IFINDEX = 8


def without_loopback_echo(program: bytes | None, lo_ifindex: int, snaplen: int = SNAPLEN) -> bytes:
    """``program`` (classic BPF for raw IP, 8 bytes an instruction) with a prefix that rejects the
    outgoing copy of a loopback packet (``lo_ifindex``) and accepts the rest as ``program`` would
    (everything, up to ``snaplen`` bytes, when there is no program)."""
    body = program if program else _insn(_RET_K, 0, 0, snaplen)
    n = len(body) // 8
    if n + 5 > 4096:
        raise UsageError("capture filter too long for the kernel (4,096 BPF instructions)")
    prefix = (_insn(_LD_W_ABS, 0, 0, _SKF_AD_OFF + _SKF_AD_PKTTYPE)
              + _insn(_JEQ_K, 0, 3, PACKET_OUTGOING)          # not outgoing: on to the filter
              + _insn(_LD_W_ABS, 0, 0, _SKF_AD_OFF + _SKF_AD_IFINDEX)
              + _insn(_JEQ_K, 0, 1, lo_ifindex)               # outgoing elsewhere: on to the filter
              + _insn(_RET_K, 0, 0, 0))                       # the loopback's outgoing copy: rejected
    return prefix + body


class _Fprog:
    """A ``struct sock_fprog`` whose instructions stay alive while the kernel copies them."""

    def __init__(self, insns: bytes) -> None:
        import ctypes

        self.buf = ctypes.create_string_buffer(insns, len(insns))
        self.packed = struct.pack("HL", len(insns) // 8, ctypes.addressof(self.buf))


def iface_type(iface: str) -> int | None:
    try:
        with open(f"/sys/class/net/{iface}/type") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def loopback_index() -> int:
    """The loopback device's interface index (1 on Linux), or -1 when there is none."""
    for name in ("lo",):
        try:
            return socket.if_nametoindex(name)
        except OSError:
            pass
    return -1


def mem_total() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _bind(s: socket.socket, ifindex: int) -> None:
    """bind() to every protocol on ``ifindex``, 0 meaning every interface (Python's own
    AF_PACKET bind wants an interface name, and "any" is none)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    sll = struct.pack("<HHiHBB8s", socket.AF_PACKET, socket.htons(ETH_P_ALL), ifindex, 0, 0, 0, b"")
    if libc.bind(s.fileno(), ctypes.c_char_p(sll), len(sll)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class PacketRing:
    """An ``AF_PACKET`` socket on ``interface`` (or ``"any"``) read through a ``TPACKET_V3`` ring.

    ``program``: a classic BPF program for raw IP packets (the capture filter), or None for
    every packet. ``buffer_bytes``: the ring's size, rounded to whole blocks (at least
    two); a size the kernel refuses raises :class:`UsageError`, a size it cannot give is
    halved until it can, and :attr:`buffer_bytes` and :attr:`note` say what was obtained.
    """

    def __init__(self, interface: str = "lo", *, program: bytes | None = None,
                 buffer_bytes: int = DEFAULT_BUFFER_KIB * 1024, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        self.interface = interface
        self.any = interface == "any"
        if not self.any and not os.path.exists(f"/sys/class/net/{interface}"):
            raise UsageError(f"no interface {interface!r} (see `ip link`; 'any' captures on every interface)")
        if buffer_bytes <= 0:
            raise UsageError(f"buffer size must be positive, not {buffer_bytes // 1024} KiB")
        total = mem_total()
        if total is not None and buffer_bytes > total // 2:
            raise UsageError(f"buffer size {buffer_bytes // 1024} KiB is more than half of this machine's memory "
                             f"({total // 1024} KiB)")
        self.lo_ifindex = loopback_index()
        self.loopback = not self.any and iface_type(interface) == ARPHRD_LOOPBACK
        self.note = ""
        self.sock: socket.socket | None = None
        self.map: mmap.mmap | None = None
        self.view: memoryview | None = None
        try:
            # protocol 0: nothing is queued until bind(), after the filter and the ring are in place
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        except PermissionError:
            raise PrivilegeError(f"capturing on {interface} needs root or CAP_NET_RAW (an AF_PACKET socket); "
                                 "run with sudo or `setcap cap_net_raw+ep` on the Python interpreter") from None
        self.sock = s
        try:
            self._setup(s, program, buffer_bytes, timeout_ms)
        except BaseException:
            self.close()
            raise
        self.poller = select.poll()
        self.poller.register(s.fileno(), select.POLLIN | select.POLLERR)
        self.next_block = 0
        self.received = 0           # frames handed to rawfin
        self.kernel_packets = 0     # PACKET_STATISTICS, summed (each read resets the kernel's counters)
        self.kernel_drops = 0
        self.freezes = 0

    def _setup(self, s: socket.socket, program: bytes | None, buffer_bytes: int, timeout_ms: int) -> None:
        s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        if self.lo_ifindex >= 0 and (self.any or self.loopback):
            program = without_loopback_echo(program, self.lo_ifindex)
        if program:
            fprog = _Fprog(program)
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog.packed)
        block = BLOCK_BYTES
        while block > mmap.PAGESIZE and buffer_bytes < MIN_BLOCKS * block:
            block //= 2
        nblocks = max(MIN_BLOCKS, -(-buffer_bytes // block))
        asked = nblocks * block
        while True:
            req = struct.pack("7I", block, nblocks, block, nblocks, timeout_ms, 0, 0)
            try:
                s.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
                break
            except OSError as e:
                if e.errno == errno.ENOMEM and nblocks > MIN_BLOCKS:
                    nblocks = max(MIN_BLOCKS, nblocks // 2)
                    continue
                if e.errno == errno.EINVAL:
                    raise UsageError(f"the kernel refuses a packet ring of {asked // 1024} KiB "
                                     f"({nblocks} blocks of {block // 1024} KiB): {e.strerror}") from None
                raise UsageError(f"cannot make a packet ring of {nblocks * block // 1024} KiB on "
                                 f"{self.interface}: {e.strerror}") from None
        self.block_bytes, self.nblocks = block, nblocks
        self.buffer_bytes = block * nblocks
        if self.buffer_bytes < asked:
            self.note = (f"the kernel could not give a {asked // 1024} KiB ring; "
                         f"capturing with {self.buffer_bytes // 1024} KiB")
        self.map = mmap.mmap(s.fileno(), self.buffer_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.map)
        try:
            _bind(s, 0 if self.any else socket.if_nametoindex(self.interface))
        except OSError as e:
            raise UsageError(f"cannot capture on {self.interface!r}: {e.strerror}") from None

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- blocks
    def wait(self, timeout_ms: int) -> bool:
        """True when the next block is rawfin's (after up to ``timeout_ms`` of waiting)."""
        if self._ready():
            return True
        try:
            self.poller.poll(timeout_ms)
        except InterruptedError:     # pragma: no cover - Python retries poll() itself (PEP 475)
            pass
        return self._ready()

    def _ready(self) -> bool:
        off = self.next_block * self.block_bytes
        return bool(BLOCK_HEAD.unpack_from(self.map, off + BLOCK_STATUS)[0] & TP_STATUS_USER)

    def blocks(self) -> Iterator[tuple[int, int, bool]]:
        """The blocks ready now, in ring order, as (offset, frames, losing); each is handed
        back to the kernel when the loop asks for the next one (or leaves). ``losing``: the
        kernel dropped frames since the counters were last read (:meth:`stats`) and before
        this block's first frame (``TP_STATUS_LOSING``: the ring was full, and this is the
        first block after it had room again). Read the counters then, so the flag of a
        later block means new drops."""
        while self._ready():
            off = self.next_block * self.block_bytes
            status, n, _first = BLOCK_HEAD.unpack_from(self.map, off + BLOCK_STATUS)
            try:
                yield off, n, bool(status & TP_STATUS_LOSING)
            finally:
                self.received += n
                struct.pack_into("<I", self.map, off + BLOCK_STATUS, TP_STATUS_KERNEL)
                self.next_block = (self.next_block + 1) % self.nblocks

    def frames(self, off: int) -> Iterator[tuple]:
        """The frames of the block at ``off``, each a tuple (data, orig_len, time_ns, protocol,
        ifindex, pkttype, hatype, addr): ``data`` the frame from its IP header on (a view
        into the ring, valid until the block is handed back), ``orig_len`` its length on
        the wire, ``time_ns`` the kernel's stamp (CLOCK_REALTIME), then the ``sockaddr_ll``:
        ``protocol`` (ETH_P_IP...), the interface, the direction (PACKET_HOST,
        PACKET_OUTGOING...), the ARPHRD type and the link-layer source address."""
        m, view = self.map, self.view
        _status, n, pos = BLOCK_HEAD.unpack_from(m, off + BLOCK_STATUS)
        pos += off
        frame, sll = FRAME_HEAD.unpack_from, SLL.unpack_from
        for _ in range(n):
            nxt, sec, nsec, snap, length, _st, _mac, net = frame(m, pos)
            _fam, proto, ifindex, hatype, pkttype, halen, addr = sll(m, pos + SLL_AT)
            yield (view[pos + net:pos + net + snap], length, sec * 1_000_000_000 + nsec,
                   (proto >> 8) | (proto & 0xFF) << 8, ifindex, pkttype, hatype, addr[:halen])
            pos += nxt

    # -- the kernel's counters
    def stats(self) -> dict:
        """Frames received by rawfin, and the kernel's counts since the ring was made:
        ``packets`` (passed the filter, including the dropped), ``drops`` (no room in the
        ring), ``freezes`` (times the ring was full)."""
        if self.sock is not None:
            try:
                raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
                p, d, f = struct.unpack("3I", raw)
                self.kernel_packets += p
                self.kernel_drops += d
                self.freezes += f
            except OSError:
                pass
        return {"received": self.received, "packets": self.kernel_packets, "drops": self.kernel_drops,
                "freezes": self.freezes}

    def close(self) -> None:
        if self.view is not None:
            self.view.release()
            self.view = None
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:      # a Frame's view still held somewhere: the GC closes it later
                pass
            self.map = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

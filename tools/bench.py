"""Throughput benchmark: one big synthetic capture, read by rawfin, Scapy and tshark.

    python tools/bench.py                 # 1,000,000 packets, 100,000 connections
    python tools/bench.py --quick         # 100,000 packets, 10,000 connections
    python tools/bench.py --packets 300000 --connections 30000 --out /tmp/b

The capture (classic pcap, Ethernet, microsecond timestamps) is generated from a
fixed seed and cached in ``--out`` under a name made of every parameter, so a second
run measures the same bytes without generating them again. Every connection has a
handshake, some request/response data and a close; connections start at ``--rate``
per second and overlap (a few thousand are open at once); the close mix is mostly
client-first four-way closes with server-first, three-way, simultaneous closes and a
few resets. Addresses are 10.0.0.0/8 and 2001:db8::/32 (IPv6 for about one
connection in ten); every connection has its own 4-tuple. Nothing is sent anywhere.

Then, in one run on that one file, each tool runs as a child process so its peak
RSS is its own (``os.wait4``'s ``ru_maxrss``):

* ``rawfin analyze FILE --format jsonl``: what a user gets, the compiled lane when it is
  built (``rawfin/capture/_engine.c``);
* ``rawfin analyze FILE --format jsonl --engine python``: the pure-Python reference, whose
  output must be the lane's byte for byte (the two outputs' SHA-256 are compared; the run
  fails if they differ). ``--no-reference`` skips it;
* Scapy's full dissection: ``scapy.utils.PcapReader`` over every packet, touching
  ``pkt[TCP].flags``. Scapy is slow, so it stops after ``--scapy-seconds`` of
  dissection and its rate is extrapolated to the whole file (the table says so);
* ``tshark -r FILE -q -z conv,tcp``, when tshark is installed;
* rawfin's other formats on the same file: the default table, ``--summary``, ``--format csv``
  and ``--summary --format csv``, each as a ratio to ``--format jsonl``'s time, with peak RSS
  (target: within 1.5x and under 150 MB). ``--repeat R`` keeps the best of R runs of each;
* a SYN flood (``tools/flood.py``: 1,000,000 unanswered SYNs from random sources in 20 s of
  capture time, so no half-open connection times out before the end): ``rawfin analyze
  --format jsonl`` at the defaults and with ``--max-connections 50000``, with peak RSS and the
  number of ``connection`` records (one per connection: nothing may be dropped silently).
  Targets: under 400 MB at the defaults, under 150 MB with the bound. ``--flood-syns N``,
  ``--no-flood``.

It prints packets/s, wall time, CPU time (user + system: steadier than wall time when
the machine is busy) and peak RSS for each, rawfin's speed as a multiple of the
others', and whether rawfin meets its targets (at least 2x tshark's speed, peak
RSS under 150 MB). Nothing here asserts a time: the numbers are reported, not judged
by a test.

Packets are built with ``struct`` from per-connection header templates, with the
IPv4 and TCP checksums computed arithmetically (the sum of 16-bit words is the big
integer of the bytes modulo 0xFFFF); ``tests/test_bench.py`` checks them against
Scapy and tshark.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from rawfin.core import seq as sq
from rawfin.wire.pcapio import LINKTYPE_ETHERNET, PcapWriter

__all__ = ["Capture", "generate", "cached_capture", "main"]

#: Bump when the generator's output changes, so cached captures are made again.
GENERATOR_VERSION = 2

DEFAULT_PACKETS = 1_000_000
DEFAULT_CONNECTIONS = 100_000
QUICK_PACKETS = 100_000
QUICK_CONNECTIONS = 10_000
DEFAULT_SEED = 9293
DEFAULT_RATE = 1000.0          # new connections per second of capture time
DEFAULT_OUT = "bench-out"
DEFAULT_SCAPY_SECONDS = 180.0  # the brief's "about three minutes"

TARGET_TSHARK_RATIO = 2.0      # rawfin at least twice tshark's packets/s
TARGET_RSS_MB = 150.0          # rawfin's peak RSS

#: The close mix: (share in percent, close, who closes first). Percentages sum to 100.
CLOSE_MIX: tuple[tuple[int, str, str], ...] = (
    (70, "4way", "client"),
    (10, "4way", "server"),
    (8, "3way", "client"),
    (2, "3way", "server"),
    (6, "simultaneous", "client"),
    (2, "rst", "client"),        # RST, no ACK flag, from the client
    (2, "rst_ack", "server"),    # RST,ACK from the server
)
#: What ``rawfin analyze`` calls each close in its ``connection`` records.
VERDICT = {"4way": "four_way", "3way": "three_way", "simultaneous": "simultaneous",
           "rst": "reset", "rst_ack": "reset"}
CLOSE_PACKETS = {"4way": 4, "3way": 3, "simultaneous": 4, "rst": 1, "rst_ack": 1}
HANDSHAKE_PACKETS = 3

IPV6_SHARE = 0.10
CLIENT_HOSTS = 4096            # client addresses; ports are handed out per host
SERVERS = 8
SERVER_PORT = 443
EPHEMERAL_LOW, EPHEMERAL_HIGH = 32768, 60999
START_US = 1_700_000_000 * 1_000_000   # 2023-11-14T22:13:20Z, as rawfin.sim.craft uses
THINK_MEAN_US = 1_000_000      # idle time between a response and the next request
CLOSE_IDLE_MEAN_US = 2_000_000  # idle time before the close (keep-alive)
MSS4, MSS6 = 1460, 1440
WINDOW_CLIENT, WINDOW_SERVER = 64240, 65160

_ACK, _PSH, _RST, _SYN, _FIN = 0x10, 0x08, 0x04, 0x02, 0x01
_PA, _FA, _SA = _PSH | _ACK, _FIN | _ACK, _SYN | _ACK

_ROUTER_MAC = bytes.fromhex("0200000000fe")
_ETH_IPV4, _ETH_IPV6 = b"\x08\x00", b"\x86\xdd"
_HDR4 = "!BBHHHBBH4s4sHHIIBBHHH"     # IPv4 (20) + TCP (20), one pack call
_HDR6 = "!IHBB16s16sHHIIBBHHH"       # IPv6 (40) + TCP (20)
_PACK4 = struct.Struct(_HDR4).pack
_PACK6 = struct.Struct(_HDR6).pack


def _words(b: bytes) -> int:
    """Plain sum of the 16-bit big-endian words of ``b`` (even length)."""
    return sum(int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2))


def _finish_sum(x: int) -> int:
    """Internet checksum field for a plain word sum ``x`` of data that is not all zeros.

    The ones'-complement sum equals ``x`` modulo 0xFFFF, written as 0xFFFF rather
    than 0 (end-around carry never yields 0 for non-zero data); the field is its
    complement.
    """
    r = x % 0xFFFF
    return 0xFFFF - r if r else 0


def checksum(data: bytes) -> int:
    """RFC 1071 checksum of ``data`` (exported for the tests)."""
    if len(data) & 1:
        data += b"\0"
    x = int.from_bytes(data, "big")
    if not x:
        return 0xFFFF
    return _finish_sum(x)


_MSS_OPT = {4: (b"\x02\x04" + MSS4.to_bytes(2, "big")), 6: (b"\x02\x04" + MSS6.to_bytes(2, "big"))}


class _Dir:
    """One direction of one connection: header templates and running IP fields."""

    __slots__ = ("eth", "src", "dst", "sport", "dport", "ip_base", "tcp_base", "ip_id", "ttl", "window",
                 "flow")

    def __init__(self, eth: bytes, src: bytes, dst: bytes, sport: int, dport: int, ttl: int, window: int,
                 ip_id: int, flow: int) -> None:
        self.eth, self.src, self.dst = eth, src, dst
        self.sport, self.dport, self.ttl, self.window = sport, dport, ttl, window
        self.ip_id, self.flow = ip_id, flow
        if len(src) == 4:
            # version/IHL + DF + TTL/protocol + addresses; length and id are added per packet
            self.ip_base = 0x4500 + 0x4000 + (ttl << 8 | 6) + _words(src) + _words(dst)
        else:
            self.ip_base = 0
        # pseudo-header (addresses, protocol 6) + ports; the TCP length is added per packet
        self.tcp_base = _words(src) + _words(dst) + 6 + sport + dport


def _frame(d: _Dir, flags: int, seq: int, ack: int, payload: bytes, mss: bytes) -> bytes:
    """One Ethernet frame: headers packed from ``d``, checksums computed arithmetically."""
    doff = 5 + (len(mss) >> 2)
    tcp_len = (doff << 2) + len(payload)
    x = (d.tcp_base + tcp_len + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF)
         + (doff << 12 | flags) + d.window)
    if mss:
        x += _words(mss)
    if payload:
        p = int.from_bytes(payload, "big")
        x += p << 8 if len(payload) & 1 else p
    tcsum = _finish_sum(x)
    if d.ip_base:
        total = 20 + tcp_len
        ip_id = d.ip_id
        d.ip_id = (ip_id + 1) & 0xFFFF
        icsum = _finish_sum(d.ip_base + total + ip_id)
        hdr = _PACK4(0x45, 0, total, ip_id, 0x4000, d.ttl, 6, icsum, d.src, d.dst,
                     d.sport, d.dport, seq, ack, doff << 4, flags, d.window, tcsum, 0)
    else:
        hdr = _PACK6(0x60000000 | d.flow, tcp_len, 6, d.ttl, d.src, d.dst,
                     d.sport, d.dport, seq, ack, doff << 4, flags, d.window, tcsum, 0)
    return d.eth + hdr + mss + payload


def _tls_message(size: int, blob: bytes) -> bytes:
    """``size`` bytes of TLS application-data records (opaque, as HTTPS looks on a wire)."""
    parts = []
    left = size
    while left > 0:
        body = min(left - 5, 16384)
        rest = left - 5 - body
        if 0 < rest < 6:              # leave the last record at least one byte of body
            body -= 6
        parts.append(b"\x17\x03\x03" + body.to_bytes(2, "big") + blob[:body])
        left -= body + 5
    return b"".join(parts)


def _exchange_packets(m: int) -> int:
    """Packets of one exchange: a one-segment request, ``m`` response segments, the client's ACKs.

    The client acknowledges every second segment and the last one (delayed ACK).
    """
    return 1 + m + (m + 1) // 2


def _plan_exchanges(budget: int, rng: random.Random) -> list[int]:
    """Response sizes in segments for ``budget`` data packets.

    Returns a list of ``m`` (a full exchange) ending, possibly, with -1 (a request the
    close acknowledges) or 0 (request and a one-segment response the close
    acknowledges), so the packets add up to exactly ``budget``.
    """
    plan = []
    rem = budget
    while rem >= 3:
        m_max = 1
        while _exchange_packets(m_max + 1) <= rem:
            m_max += 1
        m = m_max if rem <= 4 or rng.random() < 0.6 else rng.randint(1, m_max)
        plan.append(m)
        rem -= _exchange_packets(m)
    if rem == 1:
        plan.append(-1)
    elif rem == 2:
        plan.append(0)
    return plan


class _Builder:
    """Builds every frame of one connection, with capture times in microseconds."""

    def __init__(self, rng: random.Random, blob: bytes) -> None:
        self.rng = rng
        self.blob = blob
        self.eth: dict[tuple[int, int, bool], bytes] = {}
        self.unread_resets = 0

    def _eth(self, server: int, v6: bool, to_server: bool) -> bytes:
        key = (server, v6, to_server)
        e = self.eth.get(key)
        if e is None:
            smac = bytes.fromhex("02000000") + (0x100 + server).to_bytes(2, "big")
            pair = smac + _ROUTER_MAC if to_server else _ROUTER_MAC + smac
            e = self.eth[key] = pair + (_ETH_IPV6 if v6 else _ETH_IPV4)
        return e

    def connection(self, i: int, close: str, closer: str, budget: int, start_us: int,
                   v6: bool) -> list[tuple[int, bytes]]:
        rng = self.rng
        host, nth = i % CLIENT_HOSTS, i // CLIENT_HOSTS
        cport = EPHEMERAL_LOW + nth
        server = i % SERVERS
        if v6:
            caddr = bytes.fromhex("20010db8000100000000000000000000")[:12] + (1 + host).to_bytes(4, "big")
            saddr = bytes.fromhex("20010db8000000000000000000000000")[:12] + (1 + server).to_bytes(4, "big")
        else:
            caddr = ((10 << 24 | 1 << 16) + 1 + host).to_bytes(4, "big")
            saddr = ((10 << 24) + 1 + server).to_bytes(4, "big")
        c = _Dir(self._eth(server, v6, True), caddr, saddr, cport, SERVER_PORT, 57, WINDOW_CLIENT,
                 rng.getrandbits(16), rng.getrandbits(20))
        s = _Dir(self._eth(server, v6, False), saddr, caddr, SERVER_PORT, cport, 64, WINDOW_SERVER,
                 rng.getrandbits(16), rng.getrandbits(20))
        mss_opt = _MSS_OPT[6 if v6 else 4]
        mss = MSS6 if v6 else MSS4
        rtt = min(max(int(rng.lognormvariate(9.9, 1.0)), 100), 500_000)   # median ~20 ms
        isn_c, isn_s = rng.getrandbits(32), rng.getrandbits(32)
        if not i % 97:                   # some connections cross the 2**32 wrap in their data
            isn_c, isn_s = sq.wrap(-rng.randint(1, 3000)), sq.wrap(-rng.randint(1, 20000))

        frames: list[tuple[int, bytes]] = []
        t = start_us
        last: _Dir | None = None
        blob = self.blob
        randint = rng.randint

        def emit(d: _Dir, flags: int, seq: int, ack: int, payload: bytes = b"", opt: bytes = b"",
                 gap: int | None = None) -> None:
            nonlocal t, last
            if gap is None:
                gap = randint(5, 150) if d is last else rtt
            t += gap
            last = d
            frames.append((t, _frame(d, flags, seq, ack, payload, opt)))

        c_nxt, s_nxt = sq.add(isn_c, 1), sq.add(isn_s, 1)
        emit(c, _SYN, isn_c, 0, opt=mss_opt, gap=0)
        emit(s, _SA, isn_s, c_nxt, opt=mss_opt, gap=randint(20, 200))
        emit(c, _ACK, c_nxt, s_nxt)
        first = True
        answered = True                  # the closer's last data was answered (a request the server never did)
        for m in _plan_exchanges(budget, rng):
            think = None if first else int(rng.expovariate(1 / THINK_MEAN_US)) + 1
            first = False
            request = _tls_message(randint(80, 1200), blob)
            emit(c, _PA, c_nxt, s_nxt, request, gap=think)
            c_nxt = sq.add(c_nxt, len(request))
            if m < 0:
                answered = False
                break
            size = max(m - 1, 0) * mss + randint(40, mss)
            msg = _tls_message(size, blob)
            segs = [msg[k:k + mss] for k in range(0, len(msg), mss)]
            for n, chunk in enumerate(segs, 1):
                emit(s, _PA if n == len(segs) else _ACK, sq.add(s_nxt, (n - 1) * mss), c_nxt, chunk)
                if m and (n % 2 == 0 or n == len(segs)):
                    emit(c, _ACK, c_nxt, sq.add(s_nxt, (n - 1) * mss + len(chunk)))
            s_nxt = sq.add(s_nxt, len(msg))

        idle = int(rng.expovariate(1 / CLOSE_IDLE_MEAN_US)) + 1
        a, p = (c, s) if closer == "client" else (s, c)
        x, y = (c_nxt, s_nxt) if closer == "client" else (s_nxt, c_nxt)
        x1, y1 = sq.add(x, 1), sq.add(y, 1)
        if close == "4way":
            emit(a, _FA, x, y, gap=idle)
            emit(p, _ACK, y, x1)
            # (its application's close, woken by the FIN, 150 us or more after its stack's ACK: sooner, the FIN reads
            # as one that was waiting in FIN_WAIT_1, rawfin.core.rules.FIN_SOON_NS)
            emit(p, _FA, y, x1, gap=randint(150, 5000))
            emit(a, _ACK, x1, y1)
        elif close == "3way":
            emit(a, _FA, x, y, gap=idle)
            emit(p, _FA, y, x1)
            emit(a, _ACK, x1, y1)
        elif close == "simultaneous":
            emit(a, _FA, x, y, gap=idle)
            emit(p, _FA, y, x, gap=randint(5, 100))      # sent before the first FIN arrived
            emit(a, _ACK, x1, y1, gap=randint(5, 100))
            emit(p, _ACK, y1, x1, gap=randint(5, 100))
        elif close == "rst":
            emit(a, _RST, x, 0, gap=idle)
        elif close == "rst_ack":
            emit(a, _RST | _ACK, x, y, gap=idle)
            self.unread_resets += a is s and not answered
        else:  # pragma: no cover - CLOSE_MIX and this list are kept together
            raise ValueError(f"unknown close {close!r}")
        return frames


# --------------------------------------------------------------------------- the capture


@dataclass(frozen=True, slots=True, kw_only=True)
class Capture:
    """A generated capture and what is in it (what rawfin analyze should report)."""

    path: str
    packets: int
    connections: int
    seed: int
    rate: float
    ipv6_connections: int
    closes: dict[str, int]              # rawfin's verdict ("four_way", ...) -> connections
    server_first: int                   # connections the server closes first (FIN, not RST)
    unread_resets: int                  # RST,ACK right after a request the closer never answered: rawfin names
    #                                     it close_with_unread_data (the one anomaly this capture has)
    max_open: int                       # most connections open (SYN seen, close not ended) at once
    duration_s: float
    size_bytes: int
    generate_s: float                   # time it took to generate (of the original run when cached)
    cached: bool = False
    version: int = GENERATOR_VERSION
    mix: list = field(default_factory=list)  # (close, closer, connections)


def _close_kinds(m: int, rng: random.Random) -> list[tuple[str, str]]:
    """Exactly the CLOSE_MIX shares of ``m`` connections, shuffled."""
    kinds: list[tuple[str, str]] = []
    for share, close, closer in CLOSE_MIX[1:]:
        kinds += [(close, closer)] * (m * share // 100)
    kinds += [CLOSE_MIX[0][1:]] * (m - len(kinds))  # type: ignore[list-item]
    rng.shuffle(kinds)
    return kinds


def _spread(total: int, m: int, rng: random.Random) -> list[int]:
    """``total`` data packets over ``m`` connections, heavy-tailed (a few big downloads)."""
    if total == 0:
        return [0] * m
    w = [min(rng.paretovariate(1.2), 300.0) for _ in range(m)]
    scale = total / sum(w)
    out = [int(x * scale) for x in w]
    left = total - sum(out)
    for i in rng.sample(range(m), left):
        out[i] += 1
    return out


def minimum_packets(connections: int) -> int:
    """The fewest packets ``connections`` connections can have (handshakes and closes only)."""
    kinds = _close_kinds(connections, random.Random(0))
    return HANDSHAKE_PACKETS * connections + sum(CLOSE_PACKETS[c] for c, _ in kinds)


def generate(path: str | os.PathLike, *, packets: int, connections: int, seed: int = DEFAULT_SEED,
             rate: float = DEFAULT_RATE) -> Capture:
    """Write the capture to ``path`` (atomically) and say what is in it. Deterministic for a seed."""
    if connections < 1:
        raise ValueError("connections must be at least 1")
    if rate <= 0:
        raise ValueError("rate must be positive")
    if connections > CLIENT_HOSTS * (EPHEMERAL_HIGH - EPHEMERAL_LOW + 1):
        raise ValueError(f"at most {CLIENT_HOSTS * (EPHEMERAL_HIGH - EPHEMERAL_LOW + 1):,} connections")
    t0 = time.perf_counter()
    rng = random.Random(seed)
    kinds = _close_kinds(connections, rng)
    fixed = HANDSHAKE_PACKETS * connections + sum(CLOSE_PACKETS[c] for c, _ in kinds)
    if packets < fixed:
        raise ValueError(f"{packets:,} packets are too few for {connections:,} connections: handshakes and "
                         f"closes alone take {fixed:,}")
    budgets = _spread(packets - fixed, connections, rng)
    span_us = max(1, int(connections / rate * 1e6))
    starts = sorted((rng.randrange(span_us), i) for i in range(connections))
    v6 = [rng.random() < IPV6_SHARE for _ in range(connections)]
    builder = _Builder(rng, rng.randbytes(16384))

    heap: list = []
    push, replace, pop = heapq.heappush, heapq.heapreplace, heapq.heappop
    si, max_open, written = 0, 0, 0
    last_us = START_US
    with PcapWriter(path, LINKTYPE_ETHERNET) as w:
        write = w.write
        while si < connections or heap:
            if si < connections and (not heap or START_US + starts[si][0] <= heap[0][0]):
                st, i = starts[si]
                si += 1
                close, closer = kinds[i]
                frames = builder.connection(i, close, closer, budgets[i], START_US + st, v6[i])
                push(heap, (frames[0][0], i, 0, frames))
                if len(heap) > max_open:
                    max_open = len(heap)
                continue
            t, i, k, frames = heap[0]
            write(frames[k][1], t * 1000)
            written += 1
            last_us = t
            k += 1
            if k < len(frames):
                replace(heap, (frames[k][0], i, k, frames))
            else:
                pop(heap)
    assert written == packets, (written, packets)
    closes: dict[str, int] = {}
    mix: dict[tuple[str, str], int] = {}
    for close, closer in kinds:
        closes[VERDICT[close]] = closes.get(VERDICT[close], 0) + 1
        mix[(close, closer)] = mix.get((close, closer), 0) + 1
    return Capture(
        path=os.fspath(path), packets=packets, connections=connections, seed=seed, rate=rate,
        ipv6_connections=sum(v6), closes=dict(sorted(closes.items())),
        server_first=sum(1 for c, who in kinds if who == "server" and not c.startswith("rst")),
        unread_resets=builder.unread_resets,
        max_open=max_open, duration_s=(last_us - START_US) / 1e6, size_bytes=os.path.getsize(path),
        generate_s=time.perf_counter() - t0,
        mix=[[c, who, k] for (c, who), k in sorted(mix.items())])


def cache_name(packets: int, connections: int, seed: int, rate: float) -> str:
    return f"bench-v{GENERATOR_VERSION}-p{packets}-c{connections}-s{seed}-r{rate:g}.pcap"


def cached_info(path: str, version: int) -> dict | None:
    """What is stored beside a cached capture (``path`` + ``.json``), when both are there and the
    description still matches the file (its size, the generator's version)."""
    meta = path + ".json"
    if not (os.path.exists(path) and os.path.exists(meta)):
        return None
    try:
        with open(meta, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    ok = isinstance(info, dict) and info.get("size_bytes") == os.path.getsize(path) and info.get("version") == version
    return info if ok else None


def cached_capture(out_dir: str, *, packets: int, connections: int, seed: int = DEFAULT_SEED,
                   rate: float = DEFAULT_RATE, log=None) -> Capture:
    """The capture for these parameters from ``out_dir``, generated first when it is not there."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, cache_name(packets, connections, seed, rate))
    meta = path + ".json"
    info = cached_info(path, GENERATOR_VERSION)
    if info is not None:
        info.update(path=path, cached=True)
        try:
            return Capture(**info)
        except TypeError:
            pass
    if log:
        log(f"generating {path} ({packets:,} packets, {connections:,} connections) ...")
    cap = generate(path, packets=packets, connections=connections, seed=seed, rate=rate)
    tmp = meta + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(cap), f, indent=1)
    os.replace(tmp, meta)
    return cap


# --------------------------------------------------------------------------- measuring


@dataclass(kw_only=True)
class Result:
    tool: str
    command: str
    packets: int                  # packets the run covered (before extrapolation)
    wall_s: float                 # for the whole file (extrapolated when ``extrapolated``)
    cpu_s: float                  # user + system, likewise
    rss_mb: float
    ok: bool = True
    extrapolated: bool = False
    note: str = ""

    def pps(self, total: int) -> float:
        return total / self.wall_s if self.wall_s > 0 else 0.0

    def cpu_pps(self, total: int) -> float:
        return total / self.cpu_s if self.cpu_s > 0 else 0.0


def _child_env() -> dict[str, str]:
    """The environment for a Python child: this rawfin importable even when not installed."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


#: The measured command is started by this small program, not by the benchmark itself: a child's
#: ``ru_maxrss`` counts the memory of the process it was forked from (Linux keeps the old address
#: space's high-water mark at exec), and the benchmark may hold hundreds of MB by then (a flood it
#: has just generated: 218 MB reported for a run that peaks at 82 MB). It writes the command's
#: peak RSS (KiB), CPU and wall seconds to the file descriptor it is given, and exits with its code.
_MEASURE = """
import os, subprocess, sys, time
fd, cmd = int(sys.argv[1]), sys.argv[2:]
t0 = time.perf_counter()
p = subprocess.Popen(cmd)
_pid, status, ru = os.wait4(p.pid, 0)
wall = time.perf_counter() - t0
os.write(fd, f"{ru.ru_maxrss} {ru.ru_utime + ru.ru_stime} {wall}".encode())
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_child(cmd: list[str], stdout, env: dict[str, str] | None = None,
              cwd: str | None = None) -> tuple[float, float, float, int, str]:
    """Run ``cmd``; (wall seconds, CPU seconds, peak RSS in MB, exit code, stderr text) -- its own,
    measured by a small starter process (``_MEASURE``), whatever this benchmark holds.

    CPU is the child's user + system time: steadier than wall time on a busy machine.
    """
    r, w = os.pipe()
    p = subprocess.Popen([sys.executable, "-c", _MEASURE, str(w), *cmd], stdout=stdout, stderr=subprocess.PIPE,
                         env=env, cwd=cwd, pass_fds=(w,))
    os.close(w)
    assert p.stderr is not None
    err = p.stderr.read()
    p.stderr.close()
    p.wait()
    with os.fdopen(r, "rb") as f:
        got = f.read().split()
    if len(got) != 3:
        raise RuntimeError(f"could not measure {cmd[0]}: {err.decode('utf-8', 'replace')[-300:]}")
    maxrss, cpu, wall = int(got[0]), float(got[1]), float(got[2])
    rss_mb = maxrss / 1024 if sys.platform != "darwin" else maxrss / 2**20
    return wall, cpu, rss_mb, p.returncode, err.decode("utf-8", "replace")


#: the other outputs of ``rawfin analyze`` next to JSON lines: (name, flags, file suffix)
FORMATS = (("table", ["--format", "table"], "txt"), ("--summary", ["--summary"], "txt"),
           ("csv", ["--format", "csv"], "csv"), ("--summary csv", ["--summary", "--format", "csv"], "csv"))
TARGET_FORMAT_RATIO = 1.5      # every format within 1.5x of --format jsonl's time


def measure_rawfin(cap: Capture, out_dir: str, engine: str = "auto", flags: list[str] | None = None,
                   name: str | None = None, suffix: str = "jsonl", repeat: int = 1) -> tuple[Result, str]:
    """``rawfin analyze FILE --format jsonl`` (or ``flags``) into a file; (result, SHA-256 of
    what it printed). With ``repeat``, the best wall time of that many runs (its CPU time and
    the largest peak RSS).

    ``engine`` "auto" is what a user gets (the compiled lane when it is built);
    "python" is the reference implementation (the row that shows what the lane buys).
    """
    flags = ["--format", "jsonl"] if flags is None else flags
    cmd = [sys.executable, "-m", "rawfin", "analyze", cap.path, *flags, "--engine", engine]
    out_path = os.path.join(out_dir, f"rawfin-{engine}-{(name or 'jsonl').strip('-').replace(' ', '-')}.{suffix}")
    best = None
    for _ in range(max(1, repeat)):
        with open(out_path, "wb") as out:
            wall, cpu, rss, rc, err = run_child(cmd, out, _child_env())
        if best is None or (rc == 0 and wall < best[0]) or best[3] != 0:
            best = (wall, cpu, max(rss, best[2] if best else 0.0), rc, err)
        else:
            best = (best[0], best[1], max(rss, best[2]), best[3], best[4])
    wall, cpu, rss, rc, err = best
    digest = hashlib.sha256()
    with open(out_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    note = ""
    m = re.search(r"([\d,]+) frames; .*?([\d,]+) connections", err)
    frames = int(m.group(1).replace(",", "")) if m else 0
    if m:
        conns = int(m.group(2).replace(",", ""))
        note = f"{conns:,} connections" + ("" if conns == cap.connections else f" (expected {cap.connections:,})")
    ok = rc == 0 and frames == cap.packets
    if not ok:
        note = f"exit {rc}: {err.strip()[-300:]}"
    tool = ("rawfin" if engine == "auto" else "rawfin --engine python") + (f" {name}" if name else "")
    return Result(tool=tool, command=f"rawfin analyze FILE {' '.join(flags)} --engine {engine} > {out_path}",
                  packets=frames, wall_s=wall, cpu_s=cpu, rss_mb=rss, ok=ok, note=note), digest.hexdigest()


TARGET_FLOOD_RSS_MB = 400.0          # the flood at the defaults
TARGET_FLOOD_BOUNDED_RSS_MB = 150.0  # the flood with --max-connections FLOOD_MAX
FLOOD_MAX = 50_000


def measure_flood(flood: dict, out_dir: str, flags: list[str], name: str) -> Result:
    """``rawfin analyze FLOOD --format jsonl FLAGS`` into a file; ok when it has a ``connection``
    record for every connection of the flood."""
    out_path = os.path.join(out_dir, f"flood-{name}.jsonl")
    cmd = [sys.executable, "-m", "rawfin", "analyze", flood["path"], "--format", "jsonl", *flags]
    with open(out_path, "wb") as out:
        wall, cpu, rss, rc, err = run_child(cmd, out, _child_env())
    records = kinds = 0
    evicted = timeout = 0
    with open(out_path, "rb") as f:
        for line in f:
            if line.startswith(b'{"type":"connection"'):
                records += 1
                if b'"close":"evicted"' in line:
                    evicted += 1
                elif b'"close":"timeout"' in line:
                    timeout += 1
            kinds += 1
    os.unlink(out_path)
    ok = rc == 0 and records == flood["connections"]
    note = (f"{records:,} connection records of {flood['connections']:,}"
            + (f"; {evicted:,} evicted" if evicted else "") + (f"; {timeout:,} timed out" if timeout else ""))
    if rc != 0:
        note = f"exit {rc}: {err.strip()[-300:]}"
    return Result(tool=f"flood {name}", command=" ".join(["rawfin analyze FLOOD --format jsonl", *flags]),
                  packets=flood["syns"], wall_s=wall, cpu_s=cpu, rss_mb=rss, ok=ok, note=note)


def flood_report(flood: dict, results: list[tuple[Result, float]]) -> str:
    from tabulate import tabulate

    rows = [[r.tool, f"{r.wall_s:,.2f}", f"{r.cpu_s:,.2f}", f"{r.rss_mb:,.1f}", f"< {target:g}",
             _verdict(r.ok and r.rss_mb < target), r.note] for r, target in results]
    return "\n".join([f"SYN flood: {flood['path']}", f"  {flood['syns']:,} SYNs from random sources, "
                      f"{flood['connections']:,} connections, {flood['duration_s']:,.1f} s of capture time", "",
                      tabulate(rows, disable_numparse=True,
                               headers=["run", "wall s", "CPU s", "peak RSS MB", "target MB", "", "notes"])])


def _has_option(option: str) -> bool:
    p = subprocess.run([sys.executable, "-m", "rawfin", "analyze", "--help"], capture_output=True, text=True,
                       env=_child_env())
    return option in p.stdout


def format_report(cap: Capture, jsonl: Result, others: list[Result]) -> str:
    """Each format's time as a ratio to --format jsonl's, with peak RSS, and the targets."""
    from tabulate import tabulate

    rows = [["jsonl", f"{jsonl.wall_s:,.2f}", "1.00", f"{jsonl.cpu_s:,.2f}", "1.00", f"{jsonl.rss_mb:,.1f}", ""]]
    worst = 0.0
    for r in others:
        wr = r.wall_s / jsonl.wall_s if jsonl.wall_s else 0.0
        cr = r.cpu_s / jsonl.cpu_s if jsonl.cpu_s else 0.0
        worst = max(worst, wr)
        rows.append([r.tool.replace("rawfin ", "", 1), f"{r.wall_s:,.2f}", f"{wr:,.2f}", f"{r.cpu_s:,.2f}",
                     f"{cr:,.2f}", f"{r.rss_mb:,.1f}", "" if r.ok else "FAILED: " + r.note])
    most = max([jsonl.rss_mb] + [r.rss_mb for r in others])
    targets = [[f"every format within {TARGET_FORMAT_RATIO:g}x of jsonl (wall)", f"{worst:,.2f}x",
                _verdict(worst <= TARGET_FORMAT_RATIO)],
               [f"every format's peak RSS < {TARGET_RSS_MB:g} MB", f"{most:,.1f} MB", _verdict(most < TARGET_RSS_MB)]]
    return "\n".join(["rawfin analyze's formats on the same capture (output to a file each):", "",
                      tabulate(rows, disable_numparse=True, headers=["format", "wall s", "x jsonl", "CPU s", "x jsonl CPU", "peak RSS MB",
                                              "notes"],
                               colalign=("left", "right", "right", "right", "right", "right", "left")),
                      "", tabulate(targets, headers=["target", "measured", ""])])


#: issue 13: the lane within 10% of the lane before the rules became a table (commit 4f51ba3), same capture
TARGET_BASELINE_RATIO = 1.10


def _instructions(cmd: list[str], env: dict[str, str], cwd: str) -> int | None:
    """The instructions ``cmd`` executes, whole process, as valgrind's callgrind counts them (the same
    however loaded the machine is); None without valgrind or when it fails."""
    vg = shutil.which("valgrind")
    if not vg:
        return None
    with open(os.devnull, "wb") as out:
        p = subprocess.run([vg, "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd], stdout=out,
                           stderr=subprocess.PIPE, env=env, cwd=cwd)
    m = re.search(rb"Collected : (\d+)", p.stderr)
    return int(m.group(1)) if p.returncode == 0 and m else None


def measure_baseline(cap: Capture, tree: str, repeat: int, instructions: bool) -> list[str]:
    """``rawfin analyze FILE --format jsonl`` of this rawfin against another checkout ``tree`` (with its
    own ``.venv``, ``make venv`` there), on the same capture: both trees' modules compiled first (as an
    install leaves them), then ``repeat`` runs of each in turn (A B A B ...), the median CPU time of each
    and their ratio; with ``instructions``, the instructions of one run of each (callgrind), the figure
    to quote on a shared machine."""
    import statistics

    py = os.path.join(tree, ".venv", "bin", "python")
    if not os.path.exists(py):
        return [f"baseline: no {py} (run `make venv` in {tree})"]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base_env = dict(os.environ, PYTHONPATH=tree)
    path = os.path.abspath(cap.path)       # (each runs in its own tree: `-m` puts the directory first on the path)
    runs = {"this": ([sys.executable, "-m", "rawfin", "analyze", path, "--format", "jsonl"], _child_env(), here),
            "baseline": ([py, "-m", "rawfin", "analyze", path, "--format", "jsonl"], base_env, tree)}
    for exe, root in ((sys.executable, here), (py, tree)):
        subprocess.run([exe, "-m", "compileall", "-q", os.path.join(root, "rawfin")], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    cpu: dict[str, list[float]] = {"this": [], "baseline": []}
    for _ in range(max(1, repeat)):
        for name, (cmd, env, cwd) in runs.items():
            with open(os.devnull, "wb") as out:
                _wall, c, _rss, rc, err = run_child(cmd, out, env, cwd)
            if rc:
                return [f"baseline: {' '.join(cmd)}: exit {rc}: {err.strip()[-300:]}"]
            cpu[name].append(c)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    ratio = med["this"] / med["baseline"] if med["baseline"] else 0.0
    lines = ["", f"The lane against the baseline {tree} ({_tree(tree) or 'not a git checkout'}), "
                 f"`rawfin analyze FILE --format jsonl`, {len(cpu['this'])} runs each in turn:",
             f"  CPU s (median): this {med['this']:.2f}, baseline {med['baseline']:.2f}: {ratio:.2f}x "
             f"(target <= {TARGET_BASELINE_RATIO:g}x: {'ok' if ratio <= TARGET_BASELINE_RATIO else 'OVER'})"]
    if instructions:
        n = {k: _instructions(cmd, env, cwd) for k, (cmd, env, cwd) in runs.items()}
        if None in n.values():
            lines.append("  instructions: valgrind's callgrind is not available or failed")
        else:
            r = n["this"] / n["baseline"]
            lines.append(f"  instructions (callgrind, whole process): this {n['this']:,}, baseline "
                         f"{n['baseline']:,}: {r:.2f}x (target <= {TARGET_BASELINE_RATIO:g}x: "
                         f"{'ok' if r <= TARGET_BASELINE_RATIO else 'OVER'})")
    return lines


#: how much a user's way of asking may cost beside `rawfin analyze FILE --format jsonl` (CPU seconds)
VIEW_TARGETS = {"--filter 'tcp port 443' (every frame passes)": 1.25, "cat FILE | rawfin analyze -": 1.5,
                "rawfin analyze FILE.gz": 3.0, "--by server": 3.5}


def measure_views(cap: Capture, out_dir: str) -> list[str]:
    """The ways a tcpdump user asks (issue 15) against the plain lane, as CPU-time ratios measured
    here: the BPF filter run on every frame, a pipe, a gzip-compressed file, the pile-up view."""
    import gzip

    env = _child_env()
    base = [sys.executable, "-m", "rawfin", "analyze", "-q", "--format", "jsonl"]
    gz = os.path.join(out_dir, "bench.pcap.gz")
    with open(cap.path, "rb") as f, gzip.open(gz, "wb", compresslevel=1) as g:
        shutil.copyfileobj(f, g, 1 << 20)
    runs = {"plain": base + [cap.path],
            "--filter 'tcp port 443' (every frame passes)": base + ["--filter", "tcp port 443", cap.path],
            "cat FILE | rawfin analyze -": base + ["-"],
            "rawfin analyze FILE.gz": base + [gz],
            "--by server": base + ["--by", "server", cap.path]}
    cpu = {}
    for name, cmd in runs.items():
        with open(os.devnull, "wb") as out:
            if cmd[-1] == "-":
                with open(cap.path, "rb") as src:
                    t0 = time.perf_counter()
                    p = subprocess.Popen(cmd, stdin=src, stdout=out, stderr=subprocess.DEVNULL, env=env)
                    _pid, status, usage = os.wait4(p.pid, 0)
                    p.returncode = os.waitstatus_to_exitcode(status)
                    cpu[name] = (usage.ru_utime + usage.ru_stime, time.perf_counter() - t0, p.returncode)
            else:
                wall, c, _rss, rc, _err = run_child(cmd, out, env)
                cpu[name] = (c, wall, rc)
    os.unlink(gz)
    lines = ["", "Ways of asking, against `rawfin analyze FILE --format jsonl` (CPU time; same run):"]
    base_cpu = cpu["plain"][0] or 1e-9
    for name, target in VIEW_TARGETS.items():
        c, wall, rc = cpu[name]
        ratio = c / base_cpu
        verdict = "ok" if rc == 0 and ratio <= target else "OVER" if rc == 0 else f"exit {rc}"
        lines.append(f"  {name:<46} {c:6.2f} s CPU  {ratio:5.2f}x  (target <= {target:g}x: {verdict})")
    return lines


def lane_note() -> str:
    """Which implementation `rawfin analyze --format jsonl` runs here."""
    from rawfin.capture import engine

    return ("the compiled lane (rawfin/capture/_engine.c)" if engine.available()
            else f"the Python reference: {engine.WHY_NOT}")


_SCAPY_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from scapy.utils import PcapReader
from scapy.layers.inet import TCP
import scapy.layers.inet6  # noqa: F401  IPv6 over Ethernet
import scapy.layers.l2     # noqa: F401  Ether
budget = float(sys.argv[2])
t1 = time.perf_counter()
c1 = time.process_time()
n = tcp = 0
partial = False
with PcapReader(sys.argv[1]) as reader:
    for pkt in reader:
        n += 1
        if TCP in pkt:
            pkt[TCP].flags
            tcp += 1
        if not n & 1023 and time.perf_counter() - t1 > budget:
            partial = True
            break
t2 = time.perf_counter()
c2 = time.process_time()
print(json.dumps({"packets": n, "tcp": tcp, "startup_s": t1 - t0, "loop_s": t2 - t1, "loop_cpu_s": c2 - c1,
                  "partial": partial}))
"""


def measure_scapy(cap: Capture, budget_s: float) -> Result:
    import tempfile
    cmd = [sys.executable, "-c", _SCAPY_CHILD, cap.path, str(budget_s)]
    with tempfile.TemporaryFile() as out:
        wall, cpu, rss, rc, err = run_child(cmd, out, _child_env())
        out.seek(0)
        text = out.read().decode()
    try:
        info = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Result(tool="scapy", command="PcapReader", packets=0, wall_s=wall, cpu_s=cpu, rss_mb=rss, ok=False,
                      note=f"exit {rc}: {err.strip()[-300:]}")
    n = info["packets"]
    cmd_text = "scapy.utils.PcapReader: every packet, pkt[TCP].flags"
    if info["partial"]:
        # the process's own start-up plus the loop's rate over the whole file
        scale = cap.packets / n
        wall_full = (wall - info["loop_s"]) + info["loop_s"] * scale
        cpu_full = (cpu - info["loop_cpu_s"]) + info["loop_cpu_s"] * scale
        return Result(tool="scapy", command=cmd_text, packets=n, wall_s=wall_full, cpu_s=cpu_full, rss_mb=rss,
                      ok=rc == 0, extrapolated=True,
                      note=f"first {n:,} packets in {info['loop_s']:.0f} s, extrapolated to the whole file")
    return Result(tool="scapy", command=cmd_text, packets=n, wall_s=wall, cpu_s=cpu, rss_mb=rss,
                  ok=rc == 0 and n == cap.packets, note=f"{info['tcp']:,} TCP packets")


def measure_tshark(cap: Capture, tshark: str, keep_dir: str | None) -> Result:
    import tempfile
    cmd = [tshark, "-r", cap.path, "-q", "-z", "conv,tcp"]
    if keep_dir:
        out = open(os.path.join(keep_dir, "tshark-conv-tcp.txt"), "w+b")  # noqa: SIM115
    else:
        out = tempfile.TemporaryFile()
    with out:
        wall, cpu, rss, rc, err = run_child(cmd, out)
        out.seek(0)
        convs = count_conversations(out.read().decode("utf-8", "replace"))
    note = f"{convs:,} TCP conversations" + ("" if convs == cap.connections else f" (expected {cap.connections:,})")
    ok = rc == 0
    if not ok:
        note = f"exit {rc}: {err.strip()[-300:]}"
    return Result(tool="tshark", command="tshark -r FILE -q -z conv,tcp", packets=cap.packets, wall_s=wall,
                  cpu_s=cpu, rss_mb=rss, ok=ok, note=note)


def count_conversations(text: str) -> int:
    """Rows of a ``-z conv,tcp`` table."""
    return sum(1 for line in text.splitlines() if "<->" in line)


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def report(cap: Capture, results: list[Result], load: tuple[float, float] | None = None) -> str:
    """The table, the ratios and the targets, as text.

    ``load`` is the 1-minute load average before and after the runs: when it is
    above the number of CPUs, other work shared the machine and the wall times are
    pessimistic (CPU times are steadier).
    """
    from tabulate import tabulate

    by = {r.tool: r for r in results}
    n = cap.packets
    rows = []
    for r in results:
        rows.append([r.tool + (" (extrapolated)" if r.extrapolated else ""), f"{r.pps(n):,.0f}", f"{r.wall_s:,.2f}",
                     f"{r.cpu_pps(n):,.0f}", f"{r.cpu_s:,.2f}", f"{r.rss_mb:,.1f}",
                     ("" if r.ok else "FAILED: ") + r.note])
    lines = [
        f"capture: {cap.path}",
        f"  {cap.packets:,} packets, {cap.connections:,} connections ({cap.ipv6_connections:,} IPv6), "
        f"{cap.size_bytes / 1e6:,.1f} MB, {cap.duration_s:,.1f} s of capture time, "
        f"up to {cap.max_open:,} connections open at once",
        "  closes: " + ", ".join(f"{k} {v:,}" for k, v in cap.closes.items())
        + f"; {cap.server_first:,} closed first by the server",
        f"  generated in {cap.generate_s:,.1f} s" + (" (cached from an earlier run)" if cap.cached else ""),
        "",
        tabulate(rows, headers=["tool", "packets/s", "wall s", "packets/CPU s", "CPU s", "peak RSS MB", "notes"],
                 colalign=("left", "right", "right", "right", "right", "right", "left")),
        "",
    ]
    cpus = os.cpu_count() or 1
    if load is not None and max(load) > cpus:
        lines += [f"note: load average {load[0]:.1f} before / {load[1]:.1f} after on {cpus} CPUs: the machine "
                  "was busy, wall times are pessimistic; compare CPU times", ""]
    rf = by.get("rawfin")
    targets = []
    if rf is not None and rf.ok:
        for other in ("tshark", "scapy", "rawfin --engine python"):
            o = by.get(other)
            if o is not None and o.ok and o.wall_s > 0:
                lines.append(f"rawfin speed / {other} speed: {o.wall_s / rf.wall_s:,.2f}x wall, "
                             f"{o.cpu_s / rf.cpu_s:,.2f}x CPU" + (" (Scapy extrapolated)" if o.extrapolated else ""))
        ts = by.get("tshark")
        what = f"rawfin >= {TARGET_TSHARK_RATIO:g}x tshark's packets/s (wall)"
        if ts is not None and ts.ok:
            ratio = ts.wall_s / rf.wall_s
            targets.append([what, f"{ratio:,.2f}x", _verdict(ratio >= TARGET_TSHARK_RATIO)])
        else:
            targets.append([what, "tshark not run", "-"])
        targets.append([f"rawfin peak RSS < {TARGET_RSS_MB:g} MB", f"{rf.rss_mb:,.1f} MB",
                        _verdict(rf.rss_mb < TARGET_RSS_MB)])
        lines += ["", tabulate(targets, headers=["target", "measured", ""])]
    else:
        lines.append("rawfin did not finish cleanly: no ratios")
    return "\n".join(lines)


def _tree(root: str | None = None) -> str | None:
    """The git commit rawfin runs from (or the checkout ``root``), with "+dirty" for uncommitted changes
    (None outside git)."""
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "rawfin"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/bench.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--packets", type=int, default=None, metavar="N",
                   help=f"packets in the capture (default: {DEFAULT_PACKETS:,})")
    p.add_argument("--connections", type=int, default=None, metavar="M",
                   help=f"connections in the capture (default: {DEFAULT_CONNECTIONS:,})")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_PACKETS:,} packets and {QUICK_CONNECTIONS:,} connections (unless given)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help="where the cached captures and results go (default: %(default)s)")
    p.add_argument("--keep", action="store_true",
                   help="also keep the tools' outputs in DIR (rawfin's JSON lines instead of /dev/null, "
                        "tshark's conversation table)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="PER_S",
                   help="new connections per second of capture time (default: %(default)g)")
    p.add_argument("--scapy-seconds", type=float, default=DEFAULT_SCAPY_SECONDS, metavar="S",
                   help="stop Scapy after this much dissection and extrapolate (default: %(default)g)")
    p.add_argument("--no-scapy", action="store_true", help="skip Scapy")
    p.add_argument("--no-tshark", action="store_true", help="skip tshark")
    p.add_argument("--no-views", action="store_true",
                   help="skip the ways of asking (--filter, a pipe, .gz, --by server) against the plain lane")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the reference run (--engine python), which also checks the output is the same")
    p.add_argument("--no-formats", action="store_true",
                   help="skip the other formats (table, --summary, csv, --summary csv)")
    p.add_argument("--no-flood", action="store_true", help="skip the SYN flood")
    p.add_argument("--flood-syns", type=int, default=1_000_000, metavar="N",
                   help="SYNs in the flood (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=1, metavar="R",
                   help="run jsonl and each format R times and keep the best wall time (default: %(default)s)")
    p.add_argument("--baseline", metavar="TREE",
                   help="another rawfin checkout with its own .venv to compare the lane with, e.g. the lane "
                        "before the rules became a table: git worktree add ../rawfin-4f51ba3 4f51ba3 && "
                        "make -C ../rawfin-4f51ba3 venv (R runs each, --repeat; target <= 1.1x)")
    p.add_argument("--instructions", action="store_true",
                   help="with --baseline: also count both runs' instructions with valgrind's callgrind "
                        "(load independent)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    packets = args.packets or (QUICK_PACKETS if args.quick else DEFAULT_PACKETS)
    connections = args.connections or (QUICK_CONNECTIONS if args.quick else DEFAULT_CONNECTIONS)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        cap = cached_capture(args.out, packets=packets, connections=connections, seed=args.seed,
                             rate=args.rate, log=log)
    except ValueError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    keep_dir = None
    if args.keep:
        keep_dir = os.path.join(args.out, os.path.basename(cap.path)[:-5] + "-outputs")
        os.makedirs(keep_dir, exist_ok=True)
    results = []
    load_before = os.getloadavg()[0]
    log(f"rawfin analyze ({lane_note()}) ...")
    outs = keep_dir or tempfile.mkdtemp(prefix="rawfin-bench-", dir=args.out)
    rf, digest = measure_rawfin(cap, outs, repeat=args.repeat)
    results.append(rf)
    formats = []
    if not args.no_formats:
        for name, flags, suffix in FORMATS:
            log(f"rawfin analyze {' '.join(flags)} ...")
            formats.append(measure_rawfin(cap, outs, flags=flags, name=name, suffix=suffix, repeat=args.repeat)[0])
    same = None
    if not args.no_reference:
        log("rawfin analyze --engine python (the reference) ...")
        ref, ref_digest = measure_rawfin(cap, outs, "python")
        results.append(ref)
        same = digest == ref_digest
        if not same:
            rf.ok = False
            rf.note = "output differs from the reference's (--engine python)"
    views = [] if args.no_views else measure_views(cap, outs)
    if args.baseline:
        log(f"rawfin analyze --format jsonl against {args.baseline} ...")
        views += measure_baseline(cap, args.baseline, args.repeat, args.instructions)
    if not keep_dir:
        shutil.rmtree(outs, ignore_errors=True)
    if not args.no_scapy:
        log(f"scapy (at most {args.scapy_seconds:g} s, then extrapolated) ...")
        results.append(measure_scapy(cap, args.scapy_seconds))
    tshark = None if args.no_tshark else shutil.which("tshark")
    if tshark:
        log("tshark -z conv,tcp ...")
        results.append(measure_tshark(cap, tshark, keep_dir))
    elif not args.no_tshark:
        log("tshark is not installed: no tshark row")
    text = report(cap, results, (load_before, os.getloadavg()[0]))
    print(text)
    if formats:
        print("\n" + format_report(cap, rf, formats))
    if views:
        print("\n".join(views))
    floods: list[Result] = []
    if not args.no_flood:
        from flood import cached_flood
        flood = cached_flood(args.out, syns=args.flood_syns, log=log)
        fdir = tempfile.mkdtemp(prefix="rawfin-flood-", dir=args.out)
        runs = [([], "defaults", TARGET_FLOOD_RSS_MB)]
        if _has_option("--max-connections"):
            runs.append((["--max-connections", str(FLOOD_MAX)], f"--max-connections {FLOOD_MAX}",
                         TARGET_FLOOD_BOUNDED_RSS_MB))
        else:
            log("rawfin analyze has no --max-connections yet: the flood runs at the defaults only")
        measured = []
        for flags, name, target in runs:
            log(f"rawfin analyze FLOOD --format jsonl {' '.join(flags)} ...")
            r = measure_flood(flood, fdir, flags, name)
            measured.append((r, target))
            floods.append(r)
        shutil.rmtree(fdir, ignore_errors=True)
        print("\n" + flood_report(flood, measured))
    print(f"\nrawfin ran {lane_note()}" + ("" if same is None else
          f"; its output is {'byte for byte' if same else 'NOT'} the same as the reference's"))
    res_path = os.path.join(args.out, os.path.basename(cap.path)[:-5] + "-results.json")
    with open(res_path, "w", encoding="utf-8") as f:
        json.dump({"capture": asdict(cap), "rawfin_tree": _tree(), "load": [load_before, os.getloadavg()[0]],
                   "results": [dict(asdict(r), packets_per_s=r.pps(cap.packets),
                                    packets_per_cpu_s=r.cpu_pps(cap.packets)) for r in results],
                   "formats": [dict(asdict(r), ratio_to_jsonl=r.wall_s / rf.wall_s if rf.wall_s else None,
                                    cpu_ratio_to_jsonl=r.cpu_s / rf.cpu_s if rf.cpu_s else None)
                               for r in formats],
                   "flood": [asdict(r) for r in floods]}, f, indent=1)
    return 0 if all(r.ok for r in results + formats + floods) else 1


if __name__ == "__main__":
    raise SystemExit(main())

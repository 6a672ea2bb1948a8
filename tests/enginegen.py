"""Captures for the differential engine test (tests/test_engine.py): many, varied, made fast.

Two families, both built only with rawfin's own tools (the emulator, ``rawfin.sim.craft``,
``rawfin.wire.codec``, ``rawfin.wire.pcapio``):

* :func:`generated_cases` -- about 200 captures from the emulator: every built-in scenario
  over IPv4 and IPv6, with random drop/duplicate/reorder/delay rules (by probability with
  a seed, by segment number, by flags, by kind), random RTO/MSL/ISN overrides, the three
  capture points, several runs merged into one capture (interleaved on different ports,
  or one after the other on the same pair: port reuse), a capture started late or stopped
  early, and several link layers and file formats. The list of cases is fixed by a seed
  and cheap to make (no emulator runs): what a case holds is decided when it is written.
* :data:`EDGE` -- hand-made captures aimed at what a connection-tracking engine could get
  wrong: port reuse, sequence wrap, retransmitted FINs, RST in every state, data after
  FIN, SYN oddities, mid-stream pickups, captures that end mid-close, IP options, VLAN
  tags, every link type the decoder reads, damaged files, pcapng, nanosecond pcap, times
  that round awkwardly, IPv6 addresses that print awkwardly.

To look at them: ``python tests/enginegen.py OUTDIR`` writes every capture into OUTDIR
(``--only NAME`` for one).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import struct
import sys
from pathlib import Path
from typing import Callable, NamedTuple

from rawfin.sim import craft
from rawfin.core import seq as sq
from bench import checksum
from rawfin.wire.pcapio import (LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL,
                           LINKTYPE_LINUX_SLL2, LINKTYPE_LOOP, LINKTYPE_NFLOG, LINKTYPE_NULL, LINKTYPE_RAW,
                           PcapngWriter, PcapWriter)
from rawfin.core.segment import Flags, parse_flags

SEC = 1_000_000_000
MS = 1_000_000
US = 1_000
START_NS = 1_700_000_000 * SEC          # what rawfin.sim.craft and the emulator start at
C = ("192.0.2.2", 50001)
S = ("192.0.2.1", 80)
C6 = ("2001:db8::2", 50001)
S6 = ("2001:db8::1", 80)


class Pkt(NamedTuple):
    """One frame before it gets a link layer: capture time, raw IP bytes, who sent it."""

    time_ns: int
    data: bytes
    from_client: bool = True


def _to_bytes(seg) -> bytes:
    from rawfin.wire.codec import to_bytes      # Scapy: imported when the first capture is built
    return to_bytes(seg)


# --------------------------------------------------------------------------- link layers and files

MAC_C = bytes.fromhex("020000000002")
MAC_S = bytes.fromhex("020000000001")


def ethertype_of(ip: bytes) -> int:
    return 0x86DD if ip[0] >> 4 == 6 else 0x0800


def ether(ip: bytes, *, from_client: bool = True, vlans: tuple[int, ...] = (), tpids: tuple[int, ...] = (),
          ethertype: int | None = None) -> bytes:
    """An Ethernet frame around ``ip``; ``vlans`` outermost first (802.1Q unless ``tpids`` says)."""
    src, dst = (MAC_C, MAC_S) if from_client else (MAC_S, MAC_C)
    tags = b"".join(struct.pack("!HH", tpids[i] if i < len(tpids) else 0x8100, v) for i, v in enumerate(vlans))
    et = ethertype_of(ip) if ethertype is None else ethertype
    return dst + src + tags + struct.pack("!H", et) + ip


def sll(ip: bytes, from_client: bool = True) -> bytes:
    """Linux cooked v1: packet type, ARPHRD_ETHER, address length and address, protocol."""
    return struct.pack("!HHH8sH", 0 if not from_client else 4, 1, 6, MAC_C + b"\0\0", ethertype_of(ip)) + ip


def sll2(ip: bytes, from_client: bool = True) -> bytes:
    """Linux cooked v2: protocol, reserved, ifindex, ARPHRD_ETHER, packet type, address."""
    return struct.pack("!HHIHBB8s", ethertype_of(ip), 0, 2, 1, 0 if not from_client else 4, 6,
                       MAC_C + b"\0\0") + ip


def null_hdr(ip: bytes, big: bool = False, af6: int = 30) -> bytes:
    """BSD loopback: the address family in host byte order (LOOP: big-endian)."""
    af = af6 if ip[0] >> 4 == 6 else 2
    return struct.pack(">I" if big else "<I", af) + ip


def nflog(ip: bytes) -> bytes:
    """Linux NFLOG: nfgenmsg, a prefix TLV, then the payload TLV (type 9), lengths little-endian."""
    family = 10 if ip[0] >> 4 == 6 else 2

    def tlv(t: int, v: bytes) -> bytes:
        return struct.pack("<HH", 4 + len(v), t) + v + b"\0" * (-len(v) % 4)

    return bytes([family, 0]) + b"\0\0" + tlv(10, b"rawfin\0") + tlv(9, ip)


def pppoe(ip: bytes, from_client: bool = True) -> bytes:
    proto = 0x0057 if ip[0] >> 4 == 6 else 0x0021
    body = struct.pack("!H", proto) + ip
    return ether(struct.pack("!BBHH", 0x11, 0, 0x1234, len(body)) + body, from_client=from_client,
                 ethertype=0x8864)


def ipv4_header(src: str, dst: str, proto: int, payload_len: int, *, ident: int = 1, frag: int = 0x4000,
                options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + payload_len, ident, frag, 64, proto, 0,
                                ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + options)
    hdr[10:12] = checksum(bytes(hdr)).to_bytes(2, "big")
    return bytes(hdr)


def gtpu(inner: bytes, *, teid: int = 0x1000, with_seq: bool = False) -> bytes:
    """IPv4/UDP 2152/GTP-U (G-PDU) around an inner IP packet, as a mobile core's capture shows it."""
    if with_seq:
        gtp = struct.pack("!BBHIHBB", 0x32, 0xFF, len(inner) + 4, teid, 7, 0, 0) + inner
    else:
        gtp = struct.pack("!BBHI", 0x30, 0xFF, len(inner), teid) + inner
    udp = struct.pack("!HHHH", 2152, 2152, 8 + len(gtp), 0) + gtp
    return ipv4_header("10.200.0.1", "10.200.0.2", 17, len(udp)) + udp


def with_ip_options(ip: bytes, options: bytes) -> bytes:
    """The same IPv4 packet with ``options`` (a multiple of 4 bytes) in its header."""
    assert ip[0] >> 4 == 4 and len(options) % 4 == 0
    ihl = (ip[0] & 15) * 4
    hdr = bytearray(ip[:ihl] + options)
    hdr[0] = 0x40 | (len(hdr) // 4)
    hdr[2:4] = (len(hdr) + len(ip) - ihl).to_bytes(2, "big")
    hdr[10:12] = b"\0\0"
    hdr[10:12] = checksum(bytes(hdr)).to_bytes(2, "big")
    return bytes(hdr) + ip[ihl:]


def with_ipv6_ext(ip: bytes, nh: int, body: bytes) -> bytes:
    """The same IPv6 packet with one extension header (type ``nh``; ``body`` after next-header/length)."""
    assert ip[0] >> 4 == 6
    first_nh = ip[6]
    if nh == 51:                              # AH: length in 4-octet units minus 2
        ext = bytes([first_nh, (len(body) + 2) // 4 - 2]) + body
    elif nh == 44:                            # fragment header: fixed 8 bytes
        ext = bytes([first_nh, 0]) + body
    else:                                     # length in 8-octet units minus 1
        ext = bytes([first_nh, (len(body) + 2) // 8 - 1]) + body
    assert len(ext) % 8 == 0, len(ext)
    plen = int.from_bytes(ip[4:6], "big") + len(ext)
    return ip[:4] + plen.to_bytes(2, "big") + bytes([nh]) + ip[7:40] + ext + ip[40:]


def write_capture(path: str | Path, pkts: list[Pkt], container: str = "raw", *,
                  vlan_of: Callable[[int, Pkt], tuple[int, ...]] | None = None, snaplen: int | None = None) -> None:
    """Write ``pkts`` (in the order given) as ``container``.

    raw / ns (nanosecond pcap) / ether (with ``vlan_of`` tags) / sll / sll2 / null / loop /
    nflog / pppoe: classic pcap; pcapng: one raw-IP interface in nanoseconds; pcapng-mixed:
    the client's packets on a raw-IP interface in microseconds, the server's on an Ethernet
    interface in nanoseconds with an if_tsoffset.
    """
    path = str(path)
    if container.startswith("pcapng"):
        with PcapngWriter(path, comment="rawfin engine test") as w:
            if container == "pcapng":
                i_raw = w.add_interface(LINKTYPE_RAW, tsresol=9, name="raw0")
                for p in pkts:
                    w.write_packet(i_raw, p.data, time_ns=p.time_ns)
            elif container == "pcapng-mixed":
                i_raw = w.add_interface(LINKTYPE_RAW, tsresol=6, name="raw0")
                i_eth = w.add_interface(LINKTYPE_ETHERNET, tsresol=9, name="eth0", tsoffset=1_600_000_000)
                for p in pkts:
                    if p.from_client:
                        w.write_packet(i_raw, p.data, time_ns=p.time_ns, comments=("from the client",))
                    else:
                        w.write_packet(i_eth, ether(p.data, from_client=False), time_ns=p.time_ns, flags=1)
            else:
                raise ValueError(container)
        return
    linktypes = {"raw": LINKTYPE_RAW, "ns": LINKTYPE_RAW, "ether": LINKTYPE_ETHERNET, "sll": LINKTYPE_LINUX_SLL,
                 "sll2": LINKTYPE_LINUX_SLL2, "null": LINKTYPE_NULL, "loop": LINKTYPE_LOOP,
                 "nflog": LINKTYPE_NFLOG, "pppoe": LINKTYPE_ETHERNET, "ipv4": LINKTYPE_IPV4, "ipv6": LINKTYPE_IPV6}
    kw = {"snaplen": snaplen} if snaplen else {}
    with PcapWriter(path, linktypes[container], nanosecond=container == "ns", **kw) as w:
        for i, p in enumerate(pkts):
            if container == "ether":
                data = ether(p.data, from_client=p.from_client, vlans=vlan_of(i, p) if vlan_of else ())
            elif container == "sll":
                data = sll(p.data, p.from_client)
            elif container == "sll2":
                data = sll2(p.data, p.from_client)
            elif container in ("null", "loop"):
                data = null_hdr(p.data, big=container == "loop")
            elif container == "nflog":
                data = nflog(p.data)
            elif container == "pppoe":
                data = pppoe(p.data, p.from_client)
            else:
                data = p.data
            w.write(data, p.time_ns, orig_len=len(data))


# --------------------------------------------------------------------------- generated: the emulator

FAULT_ACTIONS = ("drop", "drop", "drop", "duplicate", "duplicate", "reorder", "reorder", "delay", "delay")
FLAG_PARTS = ("FIN", "SYN", "SYN,ACK", "RST", "ACK", "FA", "PA")
KIND_PARTS = ("data", "pure-ack", "final-ack")
CONTAINERS = ("raw",) * 8 + ("ns", "ns", "ether", "ether", "vlan", "pcapng", "pcapng-mixed", "sll", "null")


@dataclasses.dataclass(frozen=True)
class Run:
    """One emulator run: a built-in scenario with overrides and extra fault rules."""

    scenario: str
    ipv6: bool = False
    faults: tuple[str, ...] = ()
    seed: int = 0
    capture_at: str = "sender"
    rto_s: float | None = None
    msl_s: float | None = None
    isn_client: int | None = None
    isn_server: int | None = None
    client_ip: str | None = None
    client_port: int | None = None
    server_port: int | None = None
    gap_ns: int = 0             # parallel: start this long after the capture's start; sequential: after the last frame
    sequential: bool = False

    def describe(self) -> str:
        bits = [self.scenario, "IPv6" if self.ipv6 else "IPv4", f"capture-at {self.capture_at}"]
        bits += [f"--{k.replace('_', '-')} {v}" for k, v in (("rto", self.rto_s), ("msl", self.msl_s),
                                                              ("isn_client", self.isn_client),
                                                              ("isn_server", self.isn_server)) if v is not None]
        if self.client_ip or self.client_port or self.server_port:
            bits.append(f"client {self.client_ip or '-'}:{self.client_port or '-'} server port "
                        f"{self.server_port or '-'}")
        if self.faults:
            bits.append(f"faults {list(self.faults)} seed {self.seed}")
        if self.gap_ns:
            bits.append(f"{'after the previous run by' if self.sequential else 'starting at'} {self.gap_ns / SEC:g} s")
        return ", ".join(bits)


@dataclasses.dataclass(frozen=True)
class GenCase:
    """A generated capture: one or more runs, merged by time, then cut and wrapped."""

    name: str
    runs: tuple[Run, ...]
    container: str = "raw"
    head_cut: int = 0           # frames dropped from the start (the capture began late)
    tail_cut: int = 0           # frames dropped from the end (the capture stopped early)
    jitter_seed: int | None = None  # ns containers: sub-microsecond jitter on every time

    def describe(self) -> str:
        lines = [f"{self.name}: {self.container}" + (f", first {self.head_cut} frames cut" if self.head_cut else "")
                 + (f", last {self.tail_cut} frames cut" if self.tail_cut else "")
                 + (f", ns jitter seed {self.jitter_seed}" if self.jitter_seed is not None else "")]
        lines += [f"  run {i}: {r.describe()}" for i, r in enumerate(self.runs)]
        return "\n".join(lines)


def random_rule(rng: random.Random) -> str:
    """One fault rule in the emulator's syntax (docs/scenario-format.md)."""
    action = rng.choice(FAULT_ACTIONS)
    parts: list[str] = []
    style = rng.choice(("prob", "prob", "number", "flags", "flags", "kind"))
    if style == "number":
        parts.append(str(rng.randint(1, 18)))
    else:
        if rng.random() < 0.5:
            parts.append(rng.choice(("client", "server")))
        if style == "prob":
            parts.append(f"p={rng.choice((0.05, 0.1, 0.2, 0.3, 0.5))}")
        else:
            what = rng.choice(FLAG_PARTS if style == "flags" else KIND_PARTS)
            r = rng.random()
            what += "#*" if r < 0.25 else f"#{rng.randint(1, 3)}" if r < 0.6 else ""
            parts.append(what)
    rule = f"{action} " + ":".join(parts)
    if action == "delay":
        rule += f"@{rng.choice((0.0005, 0.002, 0.05, 0.3, 1.5, 2.9, 3.5, 10.0))}"
    elif action in ("duplicate", "reorder") and rng.random() < 0.5:
        rule += f"@{rng.choice((0.00001, 0.001, 0.02, 0.5, 2.5, 4.0))}"
    return rule


def _random_isn(rng: random.Random) -> int | None:
    r = rng.random()
    if r < 0.7:
        return None
    if r < 0.85:
        return sq.wrap(-rng.randint(1, 400))          # the data or the FIN crosses 2**32
    return rng.choice((0, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, rng.getrandbits(32)))


def _random_run(rng: random.Random, scenario: str, **kw) -> Run:
    base = dict(scenario=scenario, ipv6=rng.random() < 0.4,
                faults=tuple(random_rule(rng) for _ in range(rng.choice((0, 1, 1, 2, 2, 3)))),
                seed=rng.randrange(1000), capture_at=rng.choice(("sender", "sender", "client", "server")),
                rto_s=rng.choice((None, None, None, 0.2, 0.5, 3.0)), msl_s=rng.choice((None, None, None, 0.5, 1.0, 5.0)),
                isn_client=_random_isn(rng), isn_server=_random_isn(rng),
                server_port=rng.choice((None, None, None, 443, 8080, 1023)),
                client_port=rng.choice((None, None, None, 1024, 40000, 65535, 7)))
    base.update(kw)
    return Run(**base)


def generated_cases(count: int = 200, seed: int = 9293) -> list[GenCase]:
    """The generated cases: deterministic for a seed, made without running anything."""
    from rawfin.sim import scenarios
    names = scenarios.names()
    rng = random.Random(seed)
    cases: list[GenCase] = []

    def add(kind: str, runs: tuple[Run, ...], **kw) -> None:
        container = kw.pop("container", None) or rng.choice(CONTAINERS)
        cases.append(GenCase(name=f"g{len(cases):03d}-{kind}", runs=runs, container=container,
                             jitter_seed=rng.randrange(10 ** 6) if container == "ns" else None, **kw))

    # every scenario as it is, both IP versions, the three capture points in turn
    points = ("sender", "client", "server")
    for i, name in enumerate(names):
        for v6 in (False, True):
            add(f"{name}-{'v6' if v6 else 'v4'}", (Run(scenario=name, ipv6=v6, capture_at=points[(2 * i + v6) % 3]),),
                container="raw" if not (i + v6) % 3 else None)
    n_single = count - len(cases) - 60
    for i in range(max(n_single, 0)):
        name = names[i % len(names)]
        r = rng.random()
        add(f"{name}-r", (_random_run(rng, name),),
            head_cut=rng.randint(1, 4) if r < 0.08 else 0, tail_cut=rng.randint(1, 4) if 0.08 <= r < 0.2 else 0)
    # several connections interleaved in one capture: other client ports and addresses, v4 and v6
    for i in range(30):
        k = rng.randint(2, 5)
        runs = []
        for j in range(k):
            v6 = rng.random() < 0.4
            ip = (f"2001:db8::{0x10 + j:x}" if v6 else f"192.0.2.{10 + j}") if rng.random() < 0.5 else None
            runs.append(_random_run(rng, rng.choice(names), ipv6=v6, client_ip=ip, client_port=50001 + j * 7,
                                    gap_ns=rng.choice((0, 1, 2)) * rng.randint(0, 2000) * MS))
        add(f"merge{k}", tuple(runs), tail_cut=rng.choice((0, 0, 0, 2)))
    # the same pair again and again: port reuse within TIME_WAIT (new, same or lower ISN), after it
    for i in range(count - len(cases)):
        k = rng.randint(2, 4)
        v6 = rng.random() < 0.3
        runs = []
        isn = rng.getrandbits(32)
        for j in range(k):
            how = rng.choice(("higher", "higher", "same", "lower", "wrap"))
            isn = {"higher": sq.add(isn, 500_000), "same": isn, "lower": sq.add(isn, -500_000),
                   "wrap": sq.wrap(-rng.randint(1, 300))}[how]
            gap = rng.choice((0.001, 0.2, 1.0, 2.5, 4.0, 59.0, 61.0, 65.0))
            runs.append(_random_run(rng, rng.choice(names), ipv6=v6, isn_client=isn, client_port=None,
                                    client_ip=None, server_port=None, gap_ns=int(gap * SEC), sequential=j > 0))
        add(f"reuse{k}", tuple(runs), container=rng.choice(("raw", "raw", "ns", "ether", "pcapng")))
    return cases


def _play(run: Run):
    """Run one scenario; rules that make the scenario fail (a call its state refuses) are dropped
    from the end until it runs, then the overrides if it still fails. Returns the pair, the
    rules that were kept and whether the overrides were."""
    from rawfin.sim import scenarios
    from rawfin.sim.emulator import EmulatorError
    scn = scenarios.builtin(run.scenario)
    if run.client_ip or run.client_port:
        side = dataclasses.replace(scn.client, port=run.client_port or scn.client.port)
        if run.client_ip:
            side = dataclasses.replace(side, **{"address6" if run.ipv6 else "address": run.client_ip})
        scn = dataclasses.replace(scn, client=side)
    if run.server_port:
        scn = dataclasses.replace(scn, server=dataclasses.replace(scn.server, port=run.server_port))
    faults = list(run.faults)
    overrides = dict(msl_ns=None if run.msl_s is None else int(run.msl_s * SEC),
                     rto_ns=None if run.rto_s is None else int(run.rto_s * SEC),
                     isn_client=run.isn_client, isn_server=run.isn_server)
    while True:
        try:
            pair = scenarios.run(scn, faults=tuple(faults), seed=run.seed, ipv6=run.ipv6, **overrides)
            return pair, tuple(faults), bool(overrides)
        except (scenarios.ScenarioError, EmulatorError):
            if faults:
                faults.pop()
            elif overrides:
                overrides = {}          # e.g. port-reuse's second ISN is fixed: another first ISN breaks it
                faults = list(run.faults)
            else:
                raise


def build_case(case: GenCase) -> tuple[list[Pkt], list[tuple[int, ...]], str]:
    """The frames of a generated case (merged, cut), their VLAN tags, and what was really run."""
    merged = []
    notes = []
    last_ns = START_NS
    for k, run in enumerate(case.runs):
        pair, kept, overridden = _play(run)
        if not overridden and any(v is not None for v in (run.msl_s, run.rto_s, run.isn_client, run.isn_server)):
            notes.append(f"  run {k}: without the --msl/--rto/--isn overrides (with them the scenario refused a call)")
        if kept != run.faults:
            notes.append(f"  run {k}: rules kept {list(kept)} (the others made the scenario refuse a call)")
        frames = pair.capture(run.capture_at)
        if not frames:
            continue
        shift = (last_ns - frames[0][0] + run.gap_ns) if run.sequential else run.gap_ns
        client_ip = pair.client.ip
        for j, (t, seg, _ref) in enumerate(frames):
            merged.append((t + shift, k, j, _to_bytes(seg), seg.src == client_ip))
        last_ns = frames[-1][0] + shift
    merged.sort(key=lambda x: x[:3])
    jit = random.Random(case.jitter_seed) if case.jitter_seed is not None else None
    pkts = [Pkt(t + (jit.randrange(1000) if jit else 0), data, fc) for t, _, _, data, fc in merged]
    runs = [k for _, k, _, _, _ in merged]
    if case.head_cut:
        pkts, runs = pkts[case.head_cut:], runs[case.head_cut:]
    if case.tail_cut:
        pkts, runs = pkts[:-case.tail_cut], runs[:-case.tail_cut]
    vlans = []
    for i, p in enumerate(pkts):
        # a VLAN per run; the server's replies of every second run on another VLAN (a router on a stick)
        k = runs[i]
        vlans.append((100 + k,) if p.from_client or k % 2 else (200 + k,))
    return pkts, vlans, "\n".join(notes)


def write_case(case: GenCase, path: str | Path) -> str:
    """Write a generated case; returns its description (with the rules actually used)."""
    pkts, vlans, notes = build_case(case)
    if case.container == "vlan":
        write_capture(path, pkts, "ether", vlan_of=lambda i, p: vlans[i])
    else:
        write_capture(path, pkts, case.container)
    return case.describe() + ("\n" + notes if notes else "")


# --------------------------------------------------------------------------- hand-made: a conversation


class Conv:
    """A hand-written conversation: sends segments, keeps each side's next sequence number.

    ``send("c", "PA", data=b"...")`` sends from the client with seq = its next number and
    ack = the server's next number (when the ACK flag is set); ``seq=``/``ack=`` override,
    and a segment with an explicit seq does not move the next number (a retransmission)
    unless ``advance=True``.
    """

    def __init__(self, client=C, server=S, isn_c: int = 1000, isn_s: int = 2000, t0: int = START_NS) -> None:
        self.ep = {"c": client, "s": server}
        self.nxt = {"c": sq.wrap(isn_c), "s": sq.wrap(isn_s)}
        self.isn = dict(self.nxt)
        self.t = t0
        self.pkts: list[Pkt] = []

    def send(self, who: str, flags: str, *, data: bytes | int = b"", seq: int | None = None, ack: int | None = None,
             dt: int = MS, advance: bool | None = None, window: int = 65535) -> Pkt:
        other = "s" if who == "c" else "c"
        f = parse_flags(flags)
        if isinstance(data, int):
            data = bytes((0x41 + i % 26) for i in range(data))
        advance = seq is None if advance is None else advance
        seq = self.nxt[who] if seq is None else sq.wrap(seq)
        if ack is None:
            ack = self.nxt[other] if f & Flags.ACK else 0
        self.t += dt
        s = craft.segment(self.ep[who], self.ep[other], seq=seq, ack=ack, flags=f, payload=data, window=window)
        if advance:
            self.nxt[who] = s.seq_end
        p = Pkt(self.t, _to_bytes(s), who == "c")
        self.pkts.append(p)
        return p

    def wait(self, ns: int) -> "Conv":
        self.t += ns
        return self

    # the usual pieces
    def open(self) -> "Conv":
        self.send("c", "S", dt=0 if not self.pkts else MS)
        self.send("s", "SA")
        self.send("c", "A")
        return self

    def talk(self, req: int = 100, resp: int = 200) -> "Conv":
        if req:
            self.send("c", "PA", data=req)
            self.send("s", "A")
        if resp:
            self.send("s", "PA", data=resp)
            self.send("c", "A")
        return self

    def close(self, closer: str = "c", kind: str = "4way") -> "Conv":
        a, p = closer, ("s" if closer == "c" else "c")
        if kind == "4way":
            self.send(a, "FA")
            self.send(p, "A")
            self.send(p, "FA")
            self.send(a, "A")
        elif kind == "3way":
            self.send(a, "FA")
            self.send(p, "FA")
            self.send(a, "A")
        elif kind == "simultaneous":
            x, y = self.nxt[a], self.nxt[p]
            self.send(a, "FA")
            self.send(p, "FA", ack=x)
            self.send(a, "A", seq=sq.add(x, 1), ack=sq.add(y, 1), advance=True)
            self.send(p, "A", seq=sq.add(y, 1), ack=sq.add(x, 1), advance=True)
        else:
            raise ValueError(kind)
        return self


def merge(*convs: Conv) -> list[Pkt]:
    """Several conversations in one capture, by time (ties: in the order given)."""
    tagged = [(p.time_ns, i, j, p) for i, c in enumerate(convs) for j, p in enumerate(c.pkts)]
    return [p for *_, p in sorted(tagged, key=lambda x: x[:3])]


def conn(n: int, v6: bool = False, **kw) -> Conv:
    """Conversation number ``n``: its own client port, so several fit in one capture."""
    client, server = (C6, S6) if v6 else (C, S)
    return Conv((client[0], client[1] + n), server, **kw)


# --------------------------------------------------------------------------- hand-made: the cases

EDGE: dict[str, tuple[str, Callable[[Path], object]]] = {}   # name -> (file suffix, writer)


def edge(name: str, suffix: str = ".pcap"):
    def register(fn):
        assert name not in EDGE, name
        EDGE[name] = (suffix, fn)
        return fn
    return register


def _simple(name: str, build: Callable[[], list[Pkt]], container: str = "raw", **kw) -> None:
    edge(name)(lambda path: write_capture(path, build(), container, **kw))


# -- port reuse ---------------------------------------------------------------------------------

def _reuse(closer: str, isn_move: int | None, gap_ns: int, *, kind: str = "4way") -> list[Pkt]:
    a = Conv().open().talk().close(closer, kind)
    isn = a.isn["c"] if isn_move is None else sq.add(a.nxt["c"], isn_move)
    b = Conv(isn_c=isn, isn_s=7_000_000, t0=a.t + gap_ns).open().talk(50, 60).close("c")
    return a.pkts + b.pkts


for _closer in ("c", "s"):
    for _how, _move in (("higher-isn", 100_000), ("same-isn", None), ("lower-isn", -100_000), ("isn-next", 0)):
        _simple(f"reuse-tw-{'client' if _closer == 'c' else 'server'}-closed-{_how}",
                lambda c=_closer, m=_move: _reuse(c, m, SEC))
_simple("reuse-after-2msl", lambda: _reuse("c", 100_000, 61 * SEC))
_simple("reuse-just-after-2msl-for-msl1", lambda: _reuse("s", 100_000, 2 * SEC + 1))
_simple("reuse-just-before-2msl-for-msl1", lambda: _reuse("s", 100_000, 2 * SEC - 1))
_simple("reuse-after-3way-close", lambda: _reuse("c", 12345, 10 * MS, kind="3way"))
_simple("reuse-after-simultaneous-close", lambda: _reuse("c", 12345, 10 * MS, kind="simultaneous"))


@edge("reuse-while-established")
def _(path):
    a = Conv().open().talk()
    a.send("c", "S", seq=sq.add(a.nxt["c"], 1_000_000), advance=False)   # a new SYN on a live pair
    a.send("s", "A")                                                     # challenge ACK
    a.send("c", "R", seq=sq.add(a.nxt["c"], 1_000_001), ack=0, advance=False)
    a.talk(10, 10).close("c")
    write_capture(path, a.pkts)


@edge("reuse-syn-sent-other-isn")
def _(path):
    a = Conv()
    a.send("c", "S", dt=0)
    a.send("c", "S", seq=5_000_000, dt=SEC)        # the first SYN unanswered: another ISN
    b = Conv(isn_c=5_000_000, isn_s=9000, t0=a.t)
    b.nxt["c"] = sq.add(5_000_000, 1)
    b.send("s", "SA")
    b.send("c", "A")
    b.talk().close("s")
    write_capture(path, a.pkts + b.pkts)


@edge("reuse-after-rst")
def _(path):
    a = Conv().open().talk()
    a.send("c", "R", ack=0)
    b = Conv(isn_c=3000, isn_s=4000, t0=a.t + 5 * MS).open().talk().close("c")
    write_capture(path, a.pkts + b.pkts)


@edge("reuse-five-times")
def _(path):
    pkts, t = [], START_NS
    for k in range(5):
        c = Conv(isn_c=1000 + k * 777_777, isn_s=2000 + k * 333, t0=t).open().talk(10 * k, 20).close("cs"[k % 2])
        pkts += c.pkts
        t = c.t + (200 * MS if k % 2 else 40 * SEC)
    write_capture(path, pkts)


@edge("reuse-two-pairs-interleaved")
def _(path):
    a = conn(0).open().talk().close("s")
    b = conn(1, t0=START_NS + 500 * US).open().talk().close("c")
    a2 = conn(0, isn_c=900_000, t0=a.t + MS).open().close("c")
    b2 = conn(1, isn_c=1000, t0=b.t + 2 * MS).open().close("s")    # the same ISN as the first
    write_capture(path, merge(a, b, a2, b2))


# -- sequence numbers wrapping ------------------------------------------------------------------

_simple("wrap-data-client", lambda: Conv(isn_c=2 ** 32 - 50).open().talk(1000, 200).close("c").pkts)
_simple("wrap-data-both-small-mss", lambda: Conv(isn_c=2 ** 32 - 700, isn_s=2 ** 32 - 1300).open()
        .talk(1460, 2920).talk(3000, 1).close("s").pkts)
_simple("wrap-fin-at-max", lambda: Conv(isn_c=2 ** 32 - 102, isn_s=2 ** 32 - 202).open().talk(100, 200)
        .close("c").pkts)
_simple("wrap-fin-at-zero", lambda: Conv(isn_c=2 ** 32 - 101, isn_s=2 ** 32 - 201).open().talk(100, 200)
        .close("s", "3way").pkts)
_simple("wrap-isn-max", lambda: Conv(isn_c=2 ** 32 - 1, isn_s=2 ** 32 - 1).open().talk(5, 5)
        .close("c", "simultaneous").pkts)
_simple("wrap-isn-zero", lambda: Conv(isn_c=0, isn_s=0).open().talk(0, 0).close("c").pkts)
_simple("wrap-half-space", lambda: Conv(isn_c=2 ** 31 - 3, isn_s=2 ** 31).open().talk(10, 10).close("c").pkts)


@edge("wrap-fin-retransmitted-across")
def _(path):
    c = Conv(isn_c=2 ** 32 - 101, isn_s=10).open().talk(100, 0)
    fin = c.nxt["c"]                             # 2**32 - 1
    c.send("c", "FA")
    c.send("c", "FA", seq=fin, dt=200 * MS)      # sent again; ACK ack=0 follows
    c.send("s", "A")
    c.send("s", "FA", dt=5 * MS)
    c.send("c", "A")
    write_capture(path, c.pkts)


# -- FINs again -----------------------------------------------------------------------------------

def _fin_again(who_again: str, after_ns: int, kind: str = "4way") -> list[Pkt]:
    c = Conv().open().talk()
    fins = {}
    a, p = "c", "s"
    fins[a] = c.nxt[a]
    c.close("c", kind)
    fins[p] = sq.add(c.nxt[p], -1)
    who = {"passive": p, "active": a}[who_again]
    c.send(who, "FA", seq=fins[who], ack=c.nxt["s" if who == "c" else "c"], dt=after_ns)
    if who == p:
        c.send(a, "A", dt=MS)                   # TIME_WAIT answers it
    return c.pkts


for _who in ("passive", "active"):
    for _label, _after in (("at-once", 100 * US), ("in-hold", SEC), ("after-hold", 5 * SEC),
                           ("after-2msl-for-msl1", 3 * SEC), ("after-2msl", 70 * SEC)):
        _simple(f"fin-again-{_who}-{_label}", lambda w=_who, a=_after: _fin_again(w, a))
_simple("fin-again-passive-3way", lambda: _fin_again("passive", SEC, "3way"))
_simple("fin-again-simultaneous", lambda: _fin_again("active", SEC, "simultaneous"))


@edge("fin-retransmitted-before-ack")
def _(path):
    c = Conv().open().talk()
    x = c.nxt["c"]
    c.send("c", "FA")
    c.send("c", "FA", seq=x, dt=300 * MS)
    c.send("c", "FA", seq=x, dt=600 * MS)
    c.send("s", "A")
    c.send("s", "FA")
    c.send("c", "A")
    c.send("c", "A", seq=c.nxt["c"], dt=10 * US)          # the final ACK twice
    write_capture(path, c.pkts)


@edge("fin-ack-not-covering")
def _(path):
    c = Conv().open().talk()
    x = c.nxt["c"]
    c.send("c", "FA")
    c.send("s", "A", ack=x)                     # does not cover the FIN
    c.send("s", "PA", data=20, ack=x)
    c.send("s", "FA", ack=sq.add(x, 2))         # past it
    c.send("c", "A")
    write_capture(path, c.pkts)


@edge("fin-crossing-with-data")
def _(path):
    c = Conv().open().talk()
    x, y = c.nxt["c"], c.nxt["s"]
    c.send("c", "FPA", data=30)
    c.send("s", "PA", data=40, ack=x)           # sent before the FIN arrived
    c.send("s", "FA", ack=x)
    c.send("c", "A", ack=sq.add(y, 41))
    c.send("s", "A")
    write_capture(path, c.pkts)


# -- RST in every state --------------------------------------------------------------------------

RST_STATES = ("syn-sent", "syn-received", "established", "fin-wait-1", "fin-wait-2", "closing", "last-ack",
              "time-wait", "time-wait-late", "closed-after-2msl")
RST_MODES = ("exact-rst-ack", "exact-rst", "in-window", "out-of-window")


def _rst_case(state: str, sender: str, mode: str) -> list[Pkt]:
    c = Conv()
    c.send("c", "S", dt=0)
    if state != "syn-sent":
        c.send("s", "SA")
    if state not in ("syn-sent", "syn-received"):
        c.send("c", "A")
        c.talk()
    if state in ("fin-wait-1", "fin-wait-2", "last-ack", "time-wait", "time-wait-late", "closed-after-2msl"):
        c.send("c", "FA")
    if state in ("fin-wait-2", "last-ack", "time-wait", "time-wait-late", "closed-after-2msl"):
        c.send("s", "A")
    if state in ("last-ack", "time-wait", "time-wait-late", "closed-after-2msl"):
        c.send("s", "FA")
    if state in ("time-wait", "time-wait-late", "closed-after-2msl"):
        c.send("c", "A")
    if state == "closing":
        x = c.nxt["c"]
        c.send("c", "FA")
        c.send("s", "FA", ack=x)
    wait = {"time-wait-late": 5 * SEC, "closed-after-2msl": 70 * SEC}.get(state, MS)
    other = "s" if sender == "c" else "c"
    seq = c.nxt[sender]
    if state == "syn-sent" and sender == "s":
        seq = 0
    ack = c.nxt[other]
    if mode == "exact-rst-ack":
        c.send(sender, "RA", seq=seq, ack=ack, dt=wait)
    elif mode == "exact-rst":
        c.send(sender, "R", seq=seq, ack=0, dt=wait)
    elif mode == "in-window":
        c.send(sender, "RA", seq=sq.add(seq, 100), ack=ack, dt=wait)
        c.send(other, "A", dt=MS)                # the challenge ACK
    else:
        c.send(sender, "R", seq=sq.add(seq, 10_000_000), ack=0, dt=wait)
        c.send(other, "A", dt=MS)
    return c.pkts


for _state in RST_STATES:
    for _sender in ("c", "s"):
        for _mode in RST_MODES:
            _simple(f"rst-{_state}-from-{'client' if _sender == 'c' else 'server'}-{_mode}",
                    lambda st=_state, se=_sender, mo=_mode: _rst_case(st, se, mo))


# -- data after FIN, SYN oddities, pickups, captures that end early ------------------------------

@edge("data-after-fin-same-sender")
def _(path):
    c = Conv().open().talk()
    c.send("c", "FA")
    c.send("c", "PA", data=50, seq=c.nxt["c"])           # beyond its own FIN
    c.send("s", "A")
    c.send("s", "FA")
    c.send("c", "A")
    write_capture(path, c.pkts)


@edge("data-retransmitted-after-fin")
def _(path):
    c = Conv().open()
    x = c.nxt["c"]
    c.send("c", "PA", data=100)
    c.send("c", "FA")
    c.send("c", "PA", data=100, seq=x, dt=200 * MS)     # the lost data again, after the FIN
    c.send("s", "A")
    c.send("s", "FA")
    c.send("c", "A")
    write_capture(path, c.pkts)


@edge("half-close-long")
def _(path):
    c = Conv().open().talk(100, 0)
    c.send("c", "FA")
    c.send("s", "A")
    for _ in range(6):
        c.send("s", "PA", data=1000)
        c.send("c", "A")
    c.send("s", "FA", dt=2 * SEC)
    c.send("c", "A")
    write_capture(path, c.pkts)


@edge("data-after-close")
def _(path):
    c = Conv().open().talk().close("c")
    c.send("s", "PA", data=10, dt=10 * MS)
    c.send("c", "R", ack=0)
    write_capture(path, c.pkts)


@edge("syn-retransmitted")
def _(path):
    c = Conv()
    x = c.nxt["c"]
    c.send("c", "S", dt=0)
    c.send("c", "S", seq=x, dt=SEC)
    c.send("c", "S", seq=x, dt=2 * SEC)
    c.send("s", "SA")
    c.send("s", "SA", seq=c.isn["s"], dt=SEC)        # the SYN,ACK again too
    c.send("c", "A")
    c.talk().close("s")
    write_capture(path, c.pkts)


@edge("syn-with-data-and-fin")
def _(path):
    c = Conv()
    c.send("c", "S", data=20, dt=0)
    c.send("s", "SA")
    c.send("c", "FA")
    c.send("s", "FA")
    c.send("c", "A")
    write_capture(path, c.pkts)


@edge("simultaneous-open")
def _(path):
    c = Conv()
    c.send("c", "S", dt=0)
    c.send("s", "S", ack=0, dt=10 * US)
    c.send("c", "SA", seq=c.isn["c"])
    c.send("s", "SA", seq=c.isn["s"])
    c.talk().close("c")
    write_capture(path, c.pkts)


@edge("syn-refused-then-retry")
def _(path):
    c = Conv()
    c.send("c", "S", dt=0)
    c.send("s", "RA", seq=0)
    c.send("c", "S", seq=c.isn["c"], dt=SEC)
    c.send("s", "RA", seq=0)
    write_capture(path, c.pkts)


@edge("synack-wrong-ack")
def _(path):
    c = Conv()
    c.send("c", "S", dt=0)
    c.send("s", "SA", ack=12345)
    c.send("c", "R", seq=12345, ack=0)
    c.send("s", "SA", seq=c.isn["s"], dt=SEC)
    c.send("c", "A")
    c.close("c")
    write_capture(path, c.pkts)


_simple("syn-only", lambda: [Conv().send("c", "S", dt=0)])
_simple("synack-first", lambda: Conv().open().talk().close("c").pkts[1:])
_simple("synack-only", lambda: Conv().open().pkts[1:2])
_simple("handshake-only", lambda: Conv().open().pkts)
_simple("no-close", lambda: Conv().open().talk().talk().pkts)


def _pickup(start: int, client=C, server=S) -> list[Pkt]:
    return Conv(client, server).open().talk(300, 400).talk(20, 30).close("c").pkts[start:]


_simple("midstream-data", lambda: _pickup(3))
_simple("midstream-from-ack", lambda: _pickup(2))
_simple("midstream-at-fin", lambda: _pickup(11))
_simple("midstream-at-last-fin", lambda: _pickup(13))
_simple("midstream-final-ack-only", lambda: _pickup(14))
_simple("midstream-ephemeral-ports", lambda: _pickup(4, ("192.0.2.2", 40000), ("192.0.2.1", 50000)))
_simple("midstream-ephemeral-ports-reversed", lambda: _pickup(4, ("192.0.2.2", 50000), ("192.0.2.1", 40000)))
_simple("midstream-both-well-known", lambda: _pickup(5, ("192.0.2.2", 25), ("192.0.2.1", 587)))
_simple("midstream-equal-ports", lambda: _pickup(5, ("192.0.2.2", 5000), ("192.0.2.1", 5000)))


@edge("midstream-no-ack-flag")
def _(path):
    c = Conv(isn_c=5000, isn_s=6000)
    c.nxt = {"c": 5001, "s": 6001}
    c.send("c", "P", data=10, dt=0)
    c.send("s", "PA", data=10)
    c.close("s")
    write_capture(path, c.pkts)


@edge("one-sided-capture")
def _(path):
    pkts = Conv().open().talk().close("c").pkts
    write_capture(path, [p for p in pkts if not p.from_client])


for _n in range(1, 5):
    _simple(f"ends-mid-close-{_n}", lambda n=_n: Conv().open().talk().close("c").pkts[:-n])
_simple("ends-mid-close-3way", lambda: Conv().open().talk().close("s", "3way").pkts[:-1])
_simple("ends-mid-simultaneous", lambda: Conv().open().talk().close("c", "simultaneous").pkts[:-1])
_simple("ends-in-final-ack-hold", lambda: Conv().open().talk().close("s").pkts)


# -- headers and link layers --------------------------------------------------------------------

def _opts(pkts: list[Pkt], options: bytes) -> list[Pkt]:
    return [p._replace(data=with_ip_options(p.data, options)) for p in pkts]


_simple("ip-options-raw", lambda: _opts(Conv().open().talk().close("c").pkts, b"\x01\x01\x01\x00"))
_simple("ip-options-ether", lambda: _opts(Conv().open().talk().close("s").pkts,
                                          b"\x07\x0b\x04" + b"\0" * 8 + b"\x00"), "ether")   # record route
_simple("ip-options-max", lambda: _opts(Conv().open().talk().close("c").pkts, b"\x01" * 39 + b"\x00"), "ether")


def _vlan_case(vlan_of) -> Callable[[Path], None]:
    def write(path):
        write_capture(path, Conv().open().talk().close("c").pkts, "ether", vlan_of=vlan_of)
    return write


edge("vlan-one-tag")(_vlan_case(lambda i, p: (42,)))
edge("vlan-split-directions")(_vlan_case(lambda i, p: (10,) if p.from_client else (20,)))
edge("vlan-changes-midway")(_vlan_case(lambda i, p: (10,) if i < 6 else (11,)))
edge("vlan-some-untagged")(_vlan_case(lambda i, p: (7,) if i % 3 else ()))
edge("vlan-id-0-and-4095")(_vlan_case(lambda i, p: (0,) if p.from_client else (4095,)))


@edge("vlan-qinq")
def _(path):
    pkts = Conv().open().talk().close("c").pkts
    with PcapWriter(str(path), LINKTYPE_ETHERNET) as w:
        for p in pkts:
            w.write(ether(p.data, from_client=p.from_client, vlans=(100, 42), tpids=(0x88A8, 0x8100)), p.time_ns)


@edge("vlan-same-pair-two-vlans")
def _(path):
    a = Conv().open().talk().close("c")
    b = Conv(isn_c=1000, isn_s=2000, t0=START_NS + 300 * US).open().talk().close("s")
    pkts = merge(a, b)
    first = set(map(id, a.pkts))
    with PcapWriter(str(path), LINKTYPE_ETHERNET) as w:
        for p in pkts:
            w.write(ether(p.data, from_client=p.from_client, vlans=(5,) if id(p) in first else (6,)), p.time_ns)


for _ct in ("ether", "sll", "sll2", "null", "loop", "nflog", "pppoe", "ns", "pcapng", "pcapng-mixed"):
    for _v6 in (False, True):
        _simple(f"link-{_ct}-{'v6' if _v6 else 'v4'}",
                lambda v6=_v6: merge(conn(0, v6).open().talk().close("c"),
                                     conn(1, v6, t0=START_NS + 2 * MS).open().talk().close("s")), _ct)
_simple("link-ipv4-only", lambda: Conv().open().talk().close("c").pkts, "ipv4")
_simple("link-ipv6-only", lambda: Conv(C6, S6).open().talk().close("c").pkts, "ipv6")


@edge("link-unknown")
def _(path):
    with PcapWriter(str(path), 147) as w:
        for p in Conv().open().close("c").pkts:
            w.write(p.data, p.time_ns)


@edge("link-gtpu")
def _(path):
    pkts = Conv().open().talk().close("c").pkts
    with PcapWriter(str(path), LINKTYPE_ETHERNET) as w:
        for i, p in enumerate(pkts):
            w.write(ether(gtpu(p.data, with_seq=bool(i % 2))), p.time_ns)


@edge("ipv6-extension-headers")
def _(path):
    pkts = Conv(C6, S6).open().talk().close("c").pkts
    exts = [(0, b"\x01\x04\0\0\0\0"), (60, b"\x01\x04\0\0\0\0"), (43, b"\0\0\0\0\0\0"), (44, b"\0\0\0\0\0\x07"),
            (51, b"\0\0" + b"\0\0\0\x01" + b"\0\0\0\x02" + b"\0" * 4), None]
    out = []
    for i, p in enumerate(pkts):
        e = exts[i % len(exts)]
        data = p.data if e is None else with_ipv6_ext(p.data, *e)
        if i == 4:
            data = with_ipv6_ext(with_ipv6_ext(data, 60, b"\x01\x04\0\0\0\0"), 0, b"\x01\x04\0\0\0\0")
        out.append(p._replace(data=data))
    write_capture(path, out, "ether")


@edge("decode-zoo")
def _(path):
    """Everything the decoder passes over or calls malformed, between the segments of a connection."""
    c = Conv().open().talk()
    tcp = c.pkts[3].data                 # a data segment with its payload
    ip6 = Conv(C6, S6).send("c", "PA", data=10, dt=0).data
    odd: list[tuple[bytes, int | None]] = []

    def raw(b: bytes, orig: int | None = None) -> None:
        odd.append((b, orig))

    udp = struct.pack("!HHHH", 53, 53, 12, 0) + b"abcd"
    raw(ether(ipv4_header(C[0], S[0], 17, len(udp)) + udp))                                   # UDP
    raw(ether(ipv4_header(C[0], S[0], 1, 8) + b"\x08\0\0\0\0\0\0\0"))                         # ICMP
    raw(ether(ipv4_header(C[0], S[0], 99, 4) + b"\0\0\0\0"))                                  # protocol 99
    raw(ether(b"\0" * 28, ethertype=0x0806))                                                 # ARP
    raw(ether(b"\xaa\xaa\x03" + b"\0" * 40, ethertype=46))                                   # 802.3 LLC
    raw(ether(b"\0" * 30, ethertype=0x1234))                                                 # unknown type
    frag = bytearray(tcp)
    frag[6:8] = (0x2000).to_bytes(2, "big")                                                  # MF set
    raw(ether(bytes(frag)))
    frag[6:8] = (0x0010).to_bytes(2, "big")                                                  # offset 128
    raw(ether(bytes(frag)))
    raw(ether(with_ipv6_ext(ip6, 44, b"\x00\x09\0\0\0\x08")))                                 # IPv6 fragment
    tso = bytearray(tcp)
    tso[2:4] = b"\0\0"                                                                      # TSO: length 0
    raw(ether(bytes(tso)))
    raw(ether(tcp[:50]), orig=len(tcp) + 14)                                                 # snaplen cut
    raw(ether(tcp[:30]))                                                                     # TCP header cut
    raw(ether(tcp[:12]))                                                                     # IPv4 header cut
    bad = bytearray(tcp)
    bad[32] = 0x30                                                                           # data offset 3
    raw(ether(bytes(bad)))
    bad = bytearray(tcp)
    bad[0] = 0x44                                                                            # IHL 4
    raw(ether(bytes(bad)))
    bad = bytearray(tcp)
    bad[0] = 0x55                                                                            # v5 in 0x0800
    raw(ether(bytes(bad)))
    raw(ether(bytes([0x46]) + tcp[1:20]))                                                     # options cut
    bad = bytearray(tcp)
    bad[2:4] = (30).to_bytes(2, "big")                                                       # total < hdrs
    raw(ether(bytes(bad)))
    big = bytearray(tcp)
    big[2:4] = (len(tcp) + 500).to_bytes(2, "big")                                           # claims more
    raw(ether(bytes(big)))
    raw(ether(ip6[:30]))                                                                     # IPv6 cut
    raw(ether(with_ipv6_ext(ip6, 60, b"\x01\x04\0\0\0\0")[:44]))                              # ext header cut
    raw(ether(ip6[:50]))                                                                     # TCP cut (v6)
    raw(ether(ip6[:40] + ip6[40:52] + b"\x20" + ip6[53:]))                                   # v6 doff 2
    raw(ether(b"\x60" + ip6[1:4] + b"\0\0" + ip6[6:]))                                        # v6 plen 0
    raw(ether(ip6[:6] + bytes([58]) + ip6[7:]))                                              # ICMPv6
    raw(b"\x02\0\0\0\0\x01")                                                                 # Ethernet cut
    raw(ether(b"\0\x2a", ethertype=0x8100))                                                  # VLAN tag cut
    raw(ether(b"\x11\0\x12\x34", ethertype=0x8864))                                          # PPPoE cut
    raw(ether(b"\x11\0\x12\x34\0\x02\xc0\x21", ethertype=0x8864))                            # PPP LCP
    raw(ether(ipv4_header(C[0], S[0], 17, 12) + struct.pack("!HHHH", 2152, 2152, 12, 0) + b"\x30\xff"))  # GTP cut
    gt = gtpu(tcp)
    raw(ether(gt[:28] + b"\x48\xff" + gt[30:]))                                              # GTPv2
    raw(ether(gt[:28] + b"\x30\x01" + gt[30:]))                                              # echo request
    raw(ether(gtpu(b"\x50" + tcp[1:])))                                                      # bad inner version
    raw(ether(b"", ethertype=0x0800))                                                        # no IP at all
    raw(ether(tcp), orig=9000)                                                               # orig > cap
    with PcapWriter(str(path), LINKTYPE_ETHERNET) as w:
        t = START_NS
        for k, (data, orig) in enumerate(odd):
            t += 100 * US
            w.write(data, t, orig_len=orig)
            if k < len(c.pkts):
                t += 100 * US
                p = c.pkts[k]
                w.write(ether(p.data, from_client=p.from_client), t)
        c2 = Conv(t0=t).open().close("c")
        for p in c2.pkts:
            w.write(ether(p.data, from_client=p.from_client), p.time_ns)


@edge("snaplen-truncated")
def _(path):
    pkts = Conv().open().talk(3000, 5000).close("c", "3way").pkts
    write_capture(path, pkts, "ether", snaplen=68)


@edge("tcp-options-cut-by-snaplen")
def _(path):
    pkts = Conv().open().talk().close("c").pkts
    write_capture(path, pkts, "raw", snaplen=44)    # the SYNs' MSS option is cut


# -- files: damaged, empty, odd formats ------------------------------------------------------------

def _good_file(path, container="raw", n=None) -> bytes:
    write_capture(path, Conv().open().talk().close("c").pkts[:n], container)
    return Path(path).read_bytes()


@edge("truncated-last-record")
def _(path):
    data = _good_file(path)
    Path(path).write_bytes(data[:-7])


@edge("truncated-record-header")
def _(path):
    data = _good_file(path)
    Path(path).write_bytes(data + b"\x00\x01\x02")


@edge("truncated-mid-close")
def _(path):
    write_capture(path, merge(conn(0).open().talk().close("c"), conn(1, t0=START_NS + 30 * MS).open().talk()
                              .close("s")))
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:len(data) * 2 // 3])


@edge("corrupt-record-length")
def _(path):
    data = bytearray(_good_file(path))
    off = 24
    for _ in range(5):
        off += 16 + int.from_bytes(data[off + 8:off + 12], "little")
    data[off + 8:off + 12] = (0x7FFFFFF0).to_bytes(4, "little")
    Path(path).write_bytes(bytes(data))


@edge("header-only")
def _(path):
    _good_file(path, n=0)


@edge("empty-file")
def _(path):
    Path(path).write_bytes(b"")


@edge("text-file")
def _(path):
    Path(path).write_bytes(b"this is not a capture\n" * 3)


@edge("gzip-file")
def _(path):
    Path(path).write_bytes(b"\x1f\x8b\x08\x00" + b"\0" * 40)


@edge("pcap-header-cut")
def _(path):
    Path(path).write_bytes(_good_file(path)[:13])


@edge("missing-file")
def _(path):
    pass                                         # nothing written: exit 66


@edge("a-directory")
def _(path):
    Path(path).mkdir()


@edge("pcapng-truncated", ".pcapng")
def _(path):
    data = _good_file(path, "pcapng")
    Path(path).write_bytes(data[:-10])


@edge("pcapng-basic", ".pcapng")
def _(path):
    _good_file(path, "pcapng")


@edge("pcapng-tsresol-and-offset", ".pcapng")
def _(path):
    pkts = merge(conn(0).open().talk().close("c"), conn(1, t0=START_NS + 7 * MS).open().close("s"),
                 conn(2, t0=START_NS + 9 * MS).open().close("c", "3way"))
    with PcapngWriter(str(path)) as w:
        ifs = [w.add_interface(LINKTYPE_RAW, tsresol=0x80 | 20), w.add_interface(LINKTYPE_RAW, tsresol=3),
               w.add_interface(LINKTYPE_ETHERNET, tsresol=9, tsoffset=-5), w.add_interface(LINKTYPE_RAW, tsresol=6)]
        for i, p in enumerate(pkts):
            k = i % 4
            w.write_packet(ifs[k], ether(p.data) if k == 2 else p.data, time_ns=p.time_ns + 12_345)


@edge("pcapng-two-sections-spb", ".pcapng")
def _(path):
    """Two sections (the second big-endian) and a Simple Packet Block (no time at all)."""
    def block(e, btype, body):
        n = 12 + len(body)
        return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)

    def shb(e):
        return block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))

    def idb(e, lt):
        return block(e, 1, struct.pack(e + "HHI", lt, 0, 0) + struct.pack(e + "HH", 9, 1) + b"\x09\0\0\0"
                     + b"\0\0\0\0")

    def epb(e, t, data):
        pad = b"\0" * (-len(data) % 4)
        return block(e, 6, struct.pack(e + "IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(data), len(data)) + data + pad)

    def spb(e, data):
        return block(e, 3, struct.pack(e + "I", len(data)) + data + b"\0" * (-len(data) % 4))

    pkts = Conv().open().talk().close("c").pkts
    out = shb("<") + idb("<", LINKTYPE_RAW)
    for p in pkts[:6]:
        out += epb("<", p.time_ns, p.data)
    out += spb("<", pkts[6].data)
    out += shb(">") + idb(">", LINKTYPE_RAW)
    for p in pkts[7:]:
        out += epb(">", p.time_ns, p.data)
    Path(path).write_bytes(out)


def _pcap_custom(path, pkts: list[Pkt], *, endian: str = "<", magic: int = 0xA1B2C3D4, frac_div: int = 1000,
                 modified: bool = False, linktype: int = LINKTYPE_RAW, snaplen: int = 65535,
                 orig_len: Callable[[bytes], int] = len) -> None:
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)
    for p in pkts:
        sec, frac = divmod(p.time_ns, SEC)
        out += struct.pack(endian + "IIII", sec, frac // frac_div, len(p.data), orig_len(p.data))
        if modified:
            out += struct.pack(endian + "IHBB", 0, 0, 0, 0)
        out += p.data
    Path(path).write_bytes(out)


edge("pcap-big-endian")(lambda path: _pcap_custom(path, Conv().open().talk().close("c").pkts, endian=">"))
edge("pcap-big-endian-ns")(lambda path: _pcap_custom(path, Conv().open().talk().close("s").pkts, endian=">",
                                                     magic=0xA1B23C4D, frac_div=1))
edge("pcap-modified-kuznetsov")(lambda path: _pcap_custom(path, Conv().open().talk().close("c").pkts,
                                                          magic=0xA1B2CD34, modified=True))


edge("pcap-linktype-fcs-bits")(lambda path: _pcap_custom(
    path, [p._replace(data=ether(p.data, from_client=p.from_client) + b"\xde\xad\xbe\xef")
           for p in Conv().open().talk().close("c").pkts], linktype=LINKTYPE_ETHERNET | 0x14000000))
edge("pcap-orig-len-smaller")(lambda path: _pcap_custom(path, Conv().open().talk().close("c").pkts,
                                                        orig_len=lambda d: len(d) // 2))
edge("pcap-snaplen-zero")(lambda path: _pcap_custom(path, Conv().open().talk().close("s").pkts, snaplen=0))


def _jumbo(path, snaplen: int) -> None:
    pkts = Conv().open().talk().close("c").pkts
    frames = [ether(p.data, from_client=p.from_client) for p in pkts]
    frames[4] += b"\0" * 300_000             # a record far larger than any IP packet (trailing bytes)
    with PcapWriter(str(path), LINKTYPE_ETHERNET, snaplen=400_000) as w:
        for p, data in zip(pkts, frames):
            w.write(data, p.time_ns)
    raw = bytearray(Path(path).read_bytes())
    raw[16:20] = snaplen.to_bytes(4, "little")
    Path(path).write_bytes(bytes(raw))


edge("pcap-jumbo-record")(lambda path: _jumbo(path, 400_000))
edge("pcap-record-over-limit")(lambda path: _jumbo(path, 65_535))     # 300,014 > 262,144: corrupt


@edge("ether-padding-and-fcs")
def _(path):
    pkts = merge(conn(0).open().talk(1, 0).close("c"), conn(1, True, t0=START_NS + 3 * MS).open().talk(0, 1)
                 .close("s"))
    with PcapWriter(str(path), LINKTYPE_ETHERNET) as w:
        for p in pkts:
            data = ether(p.data, from_client=p.from_client)
            data += b"\xee" * max(0, 60 - len(data)) + b"\x12\x34\x56\x78"
            w.write(data, p.time_ns)


@edge("pcapng-time-huge", ".pcapng")
def _(path):
    pkts = Conv().open().talk().close("c").pkts
    with PcapngWriter(str(path)) as w:
        i = w.add_interface(LINKTYPE_RAW, tsresol=9)
        for k, p in enumerate(pkts):
            w.write_packet(i, p.data, ts_raw=(1 << 62) + k * MS if k > 5 else p.time_ns)


@edge("pcapng-time-negative", ".pcapng")
def _(path):
    pkts = Conv().open().talk().close("c").pkts
    with PcapngWriter(str(path)) as w:
        i = w.add_interface(LINKTYPE_RAW, tsresol=6, tsoffset=-1_800_000_000)
        for p in pkts:
            w.write_packet(i, p.data, ts_raw=p.time_ns // 1000)


def _late_after_rst(gap_ns: int) -> list[Pkt]:
    c = Conv().open().talk()
    c.send("c", "RA")
    c.send("s", "PA", data=10, dt=gap_ns)
    c.send("c", "R", ack=0, dt=MS, seq=c.nxt["c"])
    return c.pkts


for _label, _gap in (("1.5s", 1_500 * MS), ("2.5s", 2_500 * MS), ("70s", 70 * SEC)):
    _simple(f"late-segment-after-rst-{_label}", lambda g=_gap: _late_after_rst(g))


# -- time: rounding, order, extremes -------------------------------------------------------------

def _retime(pkts: list[Pkt], times: list[int]) -> list[Pkt]:
    return [p._replace(time_ns=times[i % len(times)] + (i // len(times)) * SEC) for i, p in enumerate(pkts)]


_ROUNDING = [START_NS + x for x in (500, 1_500, 2_500, 999_999_500, 123_456_500, 5, 999_999_999,
                                    100_000_000, 300_000_000, 700_000_500, 1, 999_500, 499)]
_simple("time-ns-rounding", lambda: _retime(Conv().open().talk().talk().close("c").pkts,
                                            sorted(_ROUNDING)), "ns")
_simple("time-ns-rounding-pcapng", lambda: _retime(Conv().open().talk().talk().close("s").pkts,
                                                   sorted(_ROUNDING)), "pcapng")
_simple("time-zero", lambda: [p._replace(time_ns=0) for p in Conv().open().talk().close("c").pkts])
_simple("time-small", lambda: _retime(Conv().open().talk().close("c").pkts, [1_000 * i for i in range(1, 30)]),
        "ns")
_simple("time-max-pcap", lambda: _retime(Conv().open().talk().close("c").pkts,
                                         [(2 ** 32 - 30) * SEC + i * 999_999 for i in range(20)]), "ns")
_simple("time-all-equal", lambda: [p._replace(time_ns=START_NS) for p in merge(
    conn(0).open().talk().close("c"), conn(1).open().talk().close("s"))])


@edge("time-backwards")
def _(path):
    a = conn(0).open().talk().close("c")
    b = conn(1, t0=START_NS + 100 * SEC).open().talk().close("s")
    d = conn(2, t0=START_NS + 50 * SEC).open().talk().close("c")
    e = conn(0, isn_c=1_000_000, t0=START_NS + 20 * SEC).open().close("s")   # back in time, same pair
    write_capture(path, a.pkts + b.pkts + d.pkts + e.pkts)


@edge("time-usec-overflow")
def _(path):
    pkts = Conv().open().talk().close("c").pkts
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)
    for i, p in enumerate(pkts):
        out += struct.pack("<IIII", 1_700_000_000 + i, 999_999 + i * 400_000, len(p.data), len(p.data)) + p.data
    Path(path).write_bytes(out)


@edge("expiry-ties")
def _(path):
    """Fifty connections close at the same instant; one packet 100 s later finds them all expired."""
    convs = []
    for k in range(50):
        c = conn(k, isn_c=1000 + k, t0=START_NS + k * US).open().talk(k, k)
        c.t = START_NS + SEC
        c.close("cs"[k % 3 == 0], ("4way", "3way", "simultaneous")[k % 3])
        convs.append(c)
    late = conn(999, t0=START_NS + 100 * SEC).open()
    tw = conn(1000, t0=START_NS + 2 * SEC).open().close("c")
    write_capture(path, merge(*convs, tw, late))


@edge("expiry-interleaved")
def _(path):
    """Connections whose TIME_WAITs end while others open and close, across several MSLs."""
    rng = random.Random(7)
    convs = []
    for k in range(40):
        c = conn(k, v6=k % 4 == 0, isn_c=rng.getrandbits(32), isn_s=rng.getrandbits(32),
                 t0=START_NS + rng.randrange(0, 150 * SEC)).open().talk(rng.randrange(1, 500), rng.randrange(0, 900))
        c.wait(rng.randrange(0, 5 * SEC))
        c.close("cs"[rng.random() < 0.3], rng.choice(("4way", "4way", "3way", "simultaneous")))
        if rng.random() < 0.3:
            c.send("s", "FA", seq=sq.add(c.nxt["s"], -1), dt=rng.randrange(1, 4 * SEC))
        convs.append(c)
    write_capture(path, merge(*convs), "ns")


# -- addresses that print awkwardly ----------------------------------------------------------------

IPV6_ODD = ("::", "::1", "2001:db8::1:0:0:1", "1:0:0:2:0:0:0:3", "fe80::1", "::ffff:192.0.2.1", "::192.0.2.9",
            "2001:db8:0:0:0:0:2:1", "0:0:0:0:0:1:0:0", "2001:db8:85a3::8a2e:370:7334", "ff02::1:ff00:1",
            "2001:db8:1:1:1:1:1:1", "64:ff9b::c000:201", "::ffff:0:0", "2001:0:0:1::1")


@edge("ipv6-addresses-print")
def _(path):
    convs = []
    for k, a in enumerate(IPV6_ODD):
        b = IPV6_ODD[(k + 5) % len(IPV6_ODD)]
        convs.append(Conv((a, 40000 + k), (b, 443), t0=START_NS + k * 100 * US).open().close("c", "3way"))
    write_capture(path, merge(*convs), "ether")


@edge("ipv4-addresses-print")
def _(path):
    addrs = ("0.0.0.0", "255.255.255.255", "10.0.0.1", "127.0.0.1", "1.2.3.4", "224.0.0.1", "100.64.0.1")
    convs = [Conv((a, 1 + k), (addrs[(k + 2) % len(addrs)], 65535 - k), t0=START_NS + k * MS).open().close("s")
             for k, a in enumerate(addrs)]
    write_capture(path, merge(*convs))


@edge("mixed-families-many-conns")
def _(path):
    rng = random.Random(11)
    convs = []
    for k in range(30):
        v6 = rng.random() < 0.5
        c = conn(k, v6, isn_c=rng.getrandbits(32), isn_s=rng.getrandbits(32), t0=START_NS + rng.randrange(10 * SEC))
        c.open().talk(rng.randrange(0, 3000), rng.randrange(0, 3000))
        r = rng.random()
        if r < 0.6:
            c.close("cs"[rng.random() < 0.4], rng.choice(("4way", "3way", "simultaneous")))
        elif r < 0.8:
            c.send("cs"[rng.random() < 0.5], "RA")
        convs.append(c)
    write_capture(path, merge(*convs), "pcapng-mixed")


def edge_cases() -> list[str]:
    return sorted(EDGE)


def write_edge(name: str, directory: Path) -> Path:
    suffix, fn = EDGE[name]
    path = Path(directory) / f"{name}{suffix}"
    fn(path)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python tests/enginegen.py", description=__doc__.split("\n\n")[0])
    p.add_argument("outdir")
    p.add_argument("--only", default=None, metavar="NAME", help="one case (a generated or an edge case name)")
    p.add_argument("--count", type=int, default=200)
    args = p.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    for case in generated_cases(args.count):
        if args.only in (None, case.name):
            print(write_case(case, out / f"{case.name}.pcap"))
    for name in edge_cases():
        if args.only in (None, name):
            print(f"{write_edge(name, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

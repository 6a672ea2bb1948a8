"""Build the segments of TCP openings and closings for your own tests.

Everything here returns :class:`~rawfin.core.segment.Segment` values (no Scapy; turn
them into packets with :mod:`rawfin.wire.codec`, or into a capture with the pcap
writer). All sequence arithmetic goes through :mod:`rawfin.core.seq`, so every
builder is correct across the 2**32 wrap.

Endpoints are ``(ip, port)`` tuples, IPv4 or IPv6; both ends of a connection
must use the same IP version.

Naming follows the study note's close (``x`` is the active closer's FIN
sequence number, ``y`` the passive closer's)::

    closer                      peer
      FIN,ACK seq=x   ack=y    ->
              <-  ACK     seq=y   ack=x+1
              <-  FIN,ACK seq=y   ack=x+1
      ACK     seq=x+1 ack=y+1  ->

Every segment after the SYN carries the ACK flag, as real stacks send them,
and every acknowledgment number covers exactly what the peer has sent, so a
dissector reading the result reports no "ACKed unseen segment" or "previous
segment not captured".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from rawfin.core import seq as sq
from rawfin.core.segment import Flags, Segment, norm_ip

Endpoint = tuple[str, int]
Closer = Literal["client", "server"]
CloseKind = Literal["4way", "3way", "fin_with_data", "simultaneous", "rst", "rst_ack"]

CLIENT: Endpoint = ("192.0.2.2", 50001)
SERVER: Endpoint = ("192.0.2.1", 80)
WINDOW = 65535
MSS_IPV4 = 1460
MSS_IPV6 = 1440

#: 2023-11-14T22:13:20Z: a fixed, recognisable start so crafted captures are reproducible.
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
DEFAULT_GAP_NS = 1_000_000  # 1 ms between segments

DEFAULT_REQUESTS: tuple[tuple[bytes, bytes], ...] = (
    (b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
)

FA = Flags.FIN | Flags.ACK
PA = Flags.PSH | Flags.ACK


# -- single segments -------------------------------------------------------

def segment(src: Endpoint, dst: Endpoint, *, seq: int, ack: int = 0, flags: Flags | int = Flags.ACK,
            payload: bytes = b"", window: int = WINDOW, time_ns: int | None = None) -> Segment:
    """One segment from ``src`` to ``dst`` (endpoints validated and normalised)."""
    (sip, sport), (dip, dport) = _endpoint(src, "src"), _endpoint(dst, "dst")
    if (":" in sip) != (":" in dip):
        raise ValueError(f"src {sip} and dst {dip} are not the same IP version")
    return Segment(src=sip, dst=dip, sport=sport, dport=dport, seq=sq.wrap(seq), ack=sq.wrap(ack),
                   flags=Flags(int(flags)), payload=bytes(payload), window=window, time_ns=time_ns)


def pure_ack(sender: Endpoint, receiver: Endpoint, seq: int, ack: int) -> Segment:
    """A bare ACK (no data)."""
    return segment(sender, receiver, seq=seq, ack=ack, flags=Flags.ACK)


# -- opening and data ------------------------------------------------------

def handshake(client: Endpoint = CLIENT, server: Endpoint = SERVER, isn_c: int = 1000,
              isn_s: int = 2000) -> list[Segment]:
    """SYN seq=isn_c; SYN,ACK seq=isn_s ack=isn_c+1; ACK seq=isn_c+1 ack=isn_s+1.

    The SYNs carry no options here; :func:`rawfin.wire.codec.to_scapy` adds the
    customary MSS option when it builds them.
    """
    _same_family(client, server)
    c1, s1 = sq.add(isn_c, 1), sq.add(isn_s, 1)
    return [
        segment(client, server, seq=isn_c, ack=0, flags=Flags.SYN),
        segment(server, client, seq=isn_s, ack=c1, flags=Flags.SYN | Flags.ACK),
        segment(client, server, seq=c1, ack=s1, flags=Flags.ACK),
    ]


def data(sender: Endpoint, receiver: Endpoint, seq: int, ack: int, payload: bytes, *,
         mss: int | None = None, push: bool = True) -> list[Segment]:
    """``payload`` as ACK segments of at most ``mss`` bytes (default: 1460 / 1440 by IP version).

    The last segment carries PSH when ``push`` is true. No acknowledgments
    from the receiver are included; the next sequence number is
    ``seq.add(seq, len(payload))``.
    """
    payload = bytes(payload)
    if not payload:
        return []
    mss = mss if mss is not None else _default_mss(sender)
    if mss <= 0:
        raise ValueError(f"mss must be positive, got {mss}")
    out = []
    for off in range(0, len(payload), mss):
        chunk = payload[off:off + mss]
        last = off + mss >= len(payload)
        out.append(segment(sender, receiver, seq=sq.add(seq, off), ack=ack,
                           flags=PA if (last and push) else Flags.ACK, payload=chunk))
    return out


# -- closing ---------------------------------------------------------------

def close_4way(client: Endpoint = CLIENT, server: Endpoint = SERVER, x: int = 1000, y: int = 2000, *,
               closer: Closer = "client") -> list[Segment]:
    """The four-segment close: FIN seq=x, ACK ack=x+1, FIN seq=y, ACK seq=x+1 ack=y+1."""
    a, p = _roles(client, server, closer)
    x1, y1 = sq.add(x, 1), sq.add(y, 1)
    return [
        segment(a, p, seq=x, ack=y, flags=FA),
        segment(p, a, seq=y, ack=x1, flags=Flags.ACK),
        segment(p, a, seq=y, ack=x1, flags=FA),
        segment(a, p, seq=x1, ack=y1, flags=Flags.ACK),
    ]


def close_fin_with_data(client: Endpoint = CLIENT, server: Endpoint = SERVER, x: int = 1000, y: int = 2000, *,
                        data: bytes = b"bye\r\n", closer: Closer = "client") -> list[Segment]:
    """A four-segment close whose FIN rides on the last data: FIN,PSH,ACK seq=x len=n.

    The peer acknowledges data and FIN together (ack = x+n+1), then closes.
    """
    payload = bytes(data)
    if not payload:
        raise ValueError("close_fin_with_data needs some data; use close_4way for a bare FIN")
    a, p = _roles(client, server, closer)
    xe = sq.add(x, len(payload) + 1)  # past the data and the FIN
    y1 = sq.add(y, 1)
    return [
        segment(a, p, seq=x, ack=y, flags=Flags.FIN | Flags.PSH | Flags.ACK, payload=payload),
        segment(p, a, seq=y, ack=xe, flags=Flags.ACK),
        segment(p, a, seq=y, ack=xe, flags=FA),
        segment(a, p, seq=xe, ack=y1, flags=Flags.ACK),
    ]


def close_3way(client: Endpoint = CLIENT, server: Endpoint = SERVER, x: int = 1000, y: int = 2000, *,
               closer: Closer = "client") -> list[Segment]:
    """The peer folds its ACK into its own FIN: FIN seq=x; FIN,ACK seq=y ack=x+1; ACK ack=y+1."""
    a, p = _roles(client, server, closer)
    x1, y1 = sq.add(x, 1), sq.add(y, 1)
    return [
        segment(a, p, seq=x, ack=y, flags=FA),
        segment(p, a, seq=y, ack=x1, flags=FA),
        segment(a, p, seq=x1, ack=y1, flags=Flags.ACK),
    ]


def close_simultaneous(client: Endpoint = CLIENT, server: Endpoint = SERVER, x: int = 1000, y: int = 2000, *,
                       closer: Closer = "client") -> list[Segment]:
    """Both ends send FIN before seeing the other's (FIN_WAIT_1 -> CLOSING -> TIME_WAIT on both sides).

    FIN seq=x ack=y; FIN seq=y ack=x (the peer has not seen the first FIN);
    ACK seq=x+1 ack=y+1; ACK seq=y+1 ack=x+1. ``closer``'s FIN is listed first.
    """
    a, p = _roles(client, server, closer)
    x1, y1 = sq.add(x, 1), sq.add(y, 1)
    return [
        segment(a, p, seq=x, ack=y, flags=FA),
        segment(p, a, seq=y, ack=x, flags=FA),
        segment(a, p, seq=x1, ack=y1, flags=Flags.ACK),
        segment(p, a, seq=y1, ack=x1, flags=Flags.ACK),
    ]


def rst(client: Endpoint = CLIENT, server: Endpoint = SERVER, x: int = 1000, y: int = 2000, *,
        closer: Closer = "client", with_ack: bool = False) -> list[Segment]:
    """An abortive close: one RST seq=x from ``closer`` (ack field 0), or RST,ACK seq=x ack=y."""
    a, p = _roles(client, server, closer)
    if with_ack:
        return [segment(a, p, seq=x, ack=y, flags=Flags.RST | Flags.ACK)]
    return [segment(a, p, seq=x, ack=0, flags=Flags.RST)]


# -- whole connections -----------------------------------------------------

def timed(segments: Iterable[Segment], start_ns: int = DEFAULT_START_NS,
          gap_ns: int = DEFAULT_GAP_NS) -> list[Segment]:
    """Copies of ``segments`` stamped ``start_ns``, ``start_ns + gap_ns``, ... (strictly increasing)."""
    if gap_ns <= 0:
        raise ValueError(f"gap_ns must be positive so timestamps increase, got {gap_ns}")
    if start_ns < 0:
        raise ValueError(f"start_ns must not be negative, got {start_ns}")
    return [s.with_(time_ns=start_ns + i * gap_ns) for i, s in enumerate(segments)]


def connection(client: Endpoint = CLIENT, server: Endpoint = SERVER, isn_c: int = 1000, isn_s: int = 2000, *,
               requests: Sequence[tuple[bytes, bytes]] = DEFAULT_REQUESTS, close: CloseKind = "4way",
               closer: Closer = "client", fin_data: bytes = b"bye\r\n", mss: int | None = None,
               start_ns: int = DEFAULT_START_NS, gap_ns: int = DEFAULT_GAP_NS) -> list[Segment]:
    """A whole connection: handshake, request/response exchanges, then ``close``.

    ``requests`` is a sequence of ``(request, response)`` byte pairs; either
    may be empty. Each request goes client -> server, the response (which
    acknowledges it) server -> client, and the client acknowledges the
    response; the receiver also acknowledges every second full-size segment,
    as delayed ACK does. ``close`` picks the closing pattern and ``closer``
    who starts it; ``fin_data`` is the data the FIN rides on for
    ``close="fin_with_data"``. Segments are stamped ``start_ns + i * gap_ns``.
    """
    closes = {
        "4way": close_4way,
        "3way": close_3way,
        "simultaneous": close_simultaneous,
        "rst": rst,
        "rst_ack": lambda *a, **k: rst(*a, **k, with_ack=True),
        "fin_with_data": lambda *a, **k: close_fin_with_data(*a, **k, data=fin_data),
    }
    if close not in closes:
        raise ValueError(f"close must be one of {', '.join(closes)}; got {close!r}")
    _roles(client, server, closer)  # validates endpoints and closer up front

    segs = handshake(client, server, isn_c, isn_s)
    c_nxt, s_nxt = sq.add(isn_c, 1), sq.add(isn_s, 1)
    for i, pair in enumerate(requests):
        try:
            request, response = pair
        except (TypeError, ValueError):
            raise ValueError(f"requests[{i}] must be a (request, response) pair of bytes") from None
        request, response = bytes(request), bytes(response)
        if request:
            segs += _transfer(client, server, c_nxt, s_nxt, request, mss)
            c_nxt = sq.add(c_nxt, len(request))
            if not response:
                segs.append(pure_ack(server, client, s_nxt, c_nxt))
        if response:
            segs += _transfer(server, client, s_nxt, c_nxt, response, mss)
            s_nxt = sq.add(s_nxt, len(response))
            segs.append(pure_ack(client, server, c_nxt, s_nxt))

    x, y = (c_nxt, s_nxt) if closer == "client" else (s_nxt, c_nxt)
    segs += closes[close](client, server, x, y, closer=closer)
    return timed(segs, start_ns, gap_ns)


def _transfer(sender: Endpoint, receiver: Endpoint, snd_nxt: int, rcv_nxt: int, payload: bytes,
              mss: int | None) -> list[Segment]:
    """Data segments plus the receiver's ACK after every second one (the final ACK is the caller's)."""
    chunks = data(sender, receiver, snd_nxt, rcv_nxt, payload, mss=mss)
    out: list[Segment] = []
    for i, s in enumerate(chunks, 1):
        out.append(s)
        if i % 2 == 0 and i < len(chunks):
            out.append(pure_ack(receiver, sender, rcv_nxt, s.seq_end))
    return out


# -- helpers ---------------------------------------------------------------

def _endpoint(ep: Endpoint, what: str) -> Endpoint:
    try:
        ip, port = ep
    except (TypeError, ValueError):
        raise ValueError(f"{what} endpoint must be an (ip, port) pair, got {ep!r}") from None
    try:
        ip = norm_ip(ip)
    except ValueError:
        raise ValueError(f"{what} endpoint {ep!r}: {ip!r} is not an IPv4 or IPv6 address") from None
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"{what} endpoint {ep!r}: port must be an integer 0..65535")
    return ip, port


def _same_family(client: Endpoint, server: Endpoint) -> tuple[Endpoint, Endpoint]:
    c, s = _endpoint(client, "client"), _endpoint(server, "server")
    if (":" in c[0]) != (":" in s[0]):
        raise ValueError(f"client {c[0]} and server {s[0]} are not the same IP version")
    return c, s


def _roles(client: Endpoint, server: Endpoint, closer: str) -> tuple[Endpoint, Endpoint]:
    """(active closer, passive closer)."""
    c, s = _same_family(client, server)
    if closer == "client":
        return c, s
    if closer == "server":
        return s, c
    raise ValueError(f"closer must be 'client' or 'server', got {closer!r}")


def _default_mss(ep: Endpoint) -> int:
    return MSS_IPV6 if ":" in str(ep[0]) else MSS_IPV4

"""Sequence-number arithmetic modulo 2**32 (RFC 9293 section 3.4).

Every sequence and acknowledgment number in rawfin passes through these
helpers; nothing else adds to a raw sequence field.
"""

from __future__ import annotations

MOD = 1 << 32
MASK = MOD - 1
HALF = 1 << 31


def wrap(n: int) -> int:
    """Reduce any integer to a sequence number in [0, 2**32)."""
    return n & MASK


def add(seq: int, n: int) -> int:
    """``seq + n`` modulo 2**32 (``n`` may be negative)."""
    return (seq + n) & MASK


def sub(a: int, b: int) -> int:
    """Signed distance ``a - b`` in (-2**31, 2**31]: how far ``a`` is ahead of ``b``."""
    d = (a - b) & MASK
    return d - MOD if d > HALF else d


def lt(a: int, b: int) -> bool:
    """``a < b`` in sequence space."""
    return sub(a, b) < 0


def le(a: int, b: int) -> bool:
    return sub(a, b) <= 0


def gt(a: int, b: int) -> bool:
    return sub(a, b) > 0


def ge(a: int, b: int) -> bool:
    return sub(a, b) >= 0


def between(lo: int, x: int, hi: int) -> bool:
    """``lo <= x < hi`` in sequence space (an empty range when lo == hi)."""
    return ((x - lo) & MASK) < ((hi - lo) & MASK)


def between_incl(lo: int, x: int, hi: int) -> bool:
    """``lo <= x <= hi`` in sequence space."""
    return ((x - lo) & MASK) <= ((hi - lo) & MASK)


def acceptable(seg_seq: int, seg_len: int, rcv_nxt: int, rcv_wnd: int) -> bool:
    """RFC 9293 section 3.10.7.4 segment acceptability test (the four cases)."""
    if seg_len == 0:
        if rcv_wnd == 0:
            return seg_seq == rcv_nxt
        return between(rcv_nxt, seg_seq, add(rcv_nxt, rcv_wnd))
    if rcv_wnd == 0:
        return False
    end = add(seg_seq, seg_len - 1)
    hi = add(rcv_nxt, rcv_wnd)
    return between(rcv_nxt, seg_seq, hi) or between(rcv_nxt, end, hi)


# -- relative sequence numbers (Wireshark's default view, tcpdump's without -S) ------------------------

def relative(n: int, base: int | None) -> int:
    """``n`` shown relative to its side's ``base``: ``(n - base) mod 2**32``; ``n`` itself while the
    base is not known (None)."""
    return n if base is None else (n - base) & MASK


def note_bases(bases: dict, src, dst, seq: int, ack: int, syn: bool, has_ack: bool) -> None:
    """What one segment from ``src`` to ``dst`` says about each side's base, as Wireshark reads it:
    a side's base is its SYN's sequence number (the SYN is 0, the first data byte 1); a side first seen
    without its SYN, one before the first sequence number it sends (that segment shows 1), or, when
    the other side speaks first, one before the first acknowledgment number it is sent. A base once
    known never changes."""
    if src not in bases:
        bases[src] = seq if syn else (seq - 1) & MASK
    if has_ack and dst not in bases:
        bases[dst] = (ack - 1) & MASK

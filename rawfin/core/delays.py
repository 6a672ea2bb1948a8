"""Round trips from the capture point, as the capture itself shows them (issue 14: which of two crossing
segments reached a host first).

A segment captured on its way to a host, and that host's immediate answer captured on its way back, are
one round trip from the capture point to that host and back: the handshake gives one on each side (SYN to
SYN,ACK: the server's side; SYN,ACK to its ACK: the client's). Whether a segment sent after a FIN overtook
that FIN on the way to its receiver is the event "the segment's trip to the receiver, plus the answer's trip
back, took less than the time between capturing the segment and capturing the receiver's answer to the
FIN"; its probability is read from the round trips the capture showed (their empirical distribution).

The samples are kept as a histogram of fixed size (eight buckets per octave of nanoseconds, integer
arithmetic only), so the memory is bounded whatever the capture, the order samples come in does not
matter, and the compiled lane (which only counts samples, in the same buckets) and the Python observer add
up to the same counts.
"""

from __future__ import annotations

from typing import Callable

#: buckets per octave (a bucket is at most 1/8 of its values wide); below SUB ns, one bucket per ns
SUB = 8
#: 64-bit nanoseconds: octaves 3..62 above the first SUB single-nanosecond buckets
NBUCKETS = 61 * SUB


def bucket(ns: int) -> int:
    """The bucket of a round trip of ``ns`` nanoseconds (>= 0). The lane's ``dly_bucket`` is the same."""
    if ns < SUB:
        return ns
    o = ns.bit_length() - 1                     # 2**o <= ns < 2**(o+1), o >= 3
    return (o - 2) * SUB + ((ns >> (o - 3)) & (SUB - 1))


def upper(b: int) -> int:
    """The first value above bucket ``b``."""
    if b < SUB:
        return b + 1
    o, sub = b // SUB + 2, b % SUB
    return (SUB + sub + 1) << (o - 3)


#: the two sides a round trip measures (from the capture point to that side's host and back)
CLIENT, SERVER = 0, 1


class RoundTrips:
    """The capture's round trips so far, to the clients' side and to the servers' side (where the capture
    point sits shows there: next to the clients, their side's trips are short), counted in buckets.

    ``pull``: where more counts wait (the compiled lane's, for the connections it follows): ``(side, bucket,
    count)`` triples and the holes filled, taken in before each reading, so a reading sees every sample of the
    frames before it.
    """

    __slots__ = ("counts", "reordered", "pull")

    def __init__(self) -> None:
        self.counts: tuple[list[int], list[int]] = ([0] * NBUCKETS, [0] * NBUCKETS)
        #: holes a receiver's duplicate ACK showed, filled with nothing sent again: the link reorders (after the
        #: capture point, or before it)
        self.reordered = 0
        self.pull: Callable[[], tuple] | None = None

    def add(self, side: int, ns: int) -> None:
        if ns >= 0:
            self.counts[side][bucket(ns)] += 1

    def _take_in(self) -> None:
        if self.pull is not None:
            trips, reordered = self.pull()
            for side, b, n in trips:
                self.counts[side][b] += n
            self.reordered += reordered

    def reorders(self) -> bool:
        """The capture has shown segments reaching a host out of order."""
        self._take_in()
        return self.reordered > 0

    def mostly_below(self, side: int, ns: int) -> bool:
        """More than half of the round trips to ``side`` were shorter than ``ns`` (counting whole buckets
        below it; no samples: no)."""
        self._take_in()
        counts = self.counts[side]
        below = 0
        for b, n in enumerate(counts):
            if upper(b) > ns:
                break
            below += n
        return 2 * below > sum(counts)

    def total(self) -> int:
        self._take_in()
        return sum(self.counts[0]) + sum(self.counts[1])


#: a connection outside an observer (a replay, a test's own) counts nothing
NO_ROUND_TRIPS = RoundTrips()

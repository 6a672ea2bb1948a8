"""rawfin.core.delays: the capture's round trips in buckets (the compiled lane counts in the same ones)."""

from __future__ import annotations

from rawfin.core.delays import CLIENT, NBUCKETS, SERVER, RoundTrips, bucket, upper


def test_buckets_are_contiguous_and_ordered():
    b = 0
    for ns in sorted(set(range(0, 5000)) | {2**k + d for k in range(12, 63) for d in (-1, 0, 1)}):
        nb = bucket(ns)
        assert nb >= b and nb < NBUCKETS
        assert ns < upper(nb) and (nb == 0 or ns >= upper(nb - 1))
        b = nb
    assert bucket(2**63 - 1) == NBUCKETS - 1


def test_a_bucket_is_at_most_an_eighth_of_its_values_wide():
    for b in range(8, NBUCKETS):
        lo, hi = upper(b - 1), upper(b)
        assert (hi - lo) * 8 <= lo


def test_mostly_below_counts_whole_buckets_under_the_time():
    t = RoundTrips()
    assert not t.mostly_below(CLIENT, 10**9)              # no samples: no
    for ms in (1, 2, 3):
        t.add(CLIENT, ms * 1_000_000)
    t.add(SERVER, 50 * 1_000_000)
    assert not t.mostly_below(CLIENT, 1_500_000)          # one of three below 1.5 ms
    assert t.mostly_below(CLIENT, 2_500_000)              # two of three below 2.5 ms
    assert not t.mostly_below(SERVER, 2_500_000)          # each side its own
    t.add(CLIENT, -5)                                     # a clock going back counts nothing
    assert t.total() == 4


def test_counts_pulled_from_elsewhere_come_in_before_a_reading():
    t = RoundTrips()
    t.pull = lambda: ([(CLIENT, bucket(1_000_000), 3)], 2)
    assert t.mostly_below(CLIENT, 2_000_000)
    assert t.reorders() and t.reordered == 4              # (pulled twice: 2 + 2)

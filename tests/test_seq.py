"""rawfin.core.seq: sequence arithmetic modulo 2**32, at and across the wrap (RFC 9293 section 3.4)."""

from __future__ import annotations

from hypothesis import assume, example, given
from hypothesis import strategies as st

from rawfin.core import seq as sq

MOD = 2**32
TOP = MOD - 1
HALF = 2**31

seqs = st.one_of(
    st.integers(0, TOP),
    st.integers(TOP - 1000, TOP),           # just below the wrap
    st.integers(0, 1000),                   # just above it
    st.sampled_from([0, 1, HALF - 1, HALF, HALF + 1, TOP - 1, TOP]),
)
# distances that stay clear of the ambiguous 2**31 (RFC 1982: undefined there)
dists = st.integers(-(HALF - 1), HALF - 1)
small = st.integers(0, 70_000)
windows = st.integers(0, 65535)


def test_module_constants():
    assert sq.MOD == MOD and sq.MASK == TOP and sq.HALF == HALF


# -- the wrap itself ------------------------------------------------------------------------
def test_add_wraps_at_top():
    assert sq.add(TOP, 1) == 0
    assert sq.add(TOP, 2) == 1
    assert sq.add(0, -1) == TOP
    assert sq.add(TOP - 5, 10) == 4
    assert sq.wrap(MOD) == 0 and sq.wrap(-1) == TOP and sq.wrap(MOD + 7) == 7


def test_order_across_wrap():
    assert sq.gt(0, TOP) and sq.lt(TOP, 0)
    assert sq.ge(0, TOP) and sq.le(TOP, 0)
    assert sq.sub(0, TOP) == 1 and sq.sub(TOP, 0) == -1
    assert sq.gt(5, TOP - 5) and sq.sub(5, TOP - 5) == 11
    assert sq.between(TOP - 1, TOP, 2) and sq.between(TOP - 1, 0, 2) and sq.between(TOP - 1, 1, 2)
    assert not sq.between(TOP - 1, 2, 2) and not sq.between(TOP - 1, TOP - 2, 2)
    assert sq.between_incl(TOP - 1, 2, 2)


def test_half_way_is_the_rfc1982_undefined_case():
    # At distance exactly 2**31 neither number is "before" the other in a consistent
    # way (RFC 1982 section 3.2). rawfin's sub() puts the distance at +2**31 from
    # both sides, so gt() holds both ways and lt() neither way. Pin that down so a
    # change is a decision, not an accident; TCP never compares numbers that far apart.
    a, b = HALF, 0
    assert sq.sub(a, b) == HALF and sq.sub(b, a) == HALF
    assert sq.gt(a, b) and sq.gt(b, a)
    assert not sq.lt(a, b) and not sq.lt(b, a)


# -- properties -------------------------------------------------------------------------------
@given(seqs, st.integers(-(2**40), 2**40))
def test_add_is_reduced(a, n):
    r = sq.add(a, n)
    assert 0 <= r <= TOP
    assert r == (a + n) % MOD


@given(seqs, st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40))
def test_add_is_associative_and_commutative_mod_2_32(a, m, n):
    assert sq.add(sq.add(a, m), n) == sq.add(a, m + n) == sq.add(sq.add(a, n), m)
    assert sq.add(sq.add(a, m), -m) == a


@given(seqs, seqs)
def test_sub_is_the_inverse_of_add(a, b):
    d = sq.sub(a, b)
    assert -HALF < d <= HALF
    assert sq.add(b, d) == a


@given(seqs, dists)
@example(TOP, 1)
@example(0, -1)
@example(TOP, HALF - 1)
def test_sub_recovers_a_distance(a, d):
    b = sq.add(a, d)
    assert sq.sub(b, a) == d
    assert sq.sub(a, b) == -d


@given(seqs, dists)
@example(TOP, 1)
@example(0, -1)
def test_comparisons_agree_with_the_distance(a, d):
    b = sq.add(a, d)
    assert sq.lt(a, b) == (d > 0) == sq.gt(b, a)
    assert sq.le(a, b) == (d >= 0) == sq.ge(b, a)
    assert sq.gt(a, b) == (d < 0) == sq.lt(b, a)
    assert sq.ge(a, b) == (d <= 0) == sq.le(b, a)
    # exactly one of <, ==, > (trichotomy) away from the half-way point
    assert [sq.lt(a, b), a == b, sq.gt(a, b)].count(True) == 1
    assert sq.le(a, b) == (sq.lt(a, b) or a == b)
    assert sq.ge(a, b) == (sq.gt(a, b) or a == b)


@given(seqs, st.integers(0, HALF - 1), st.integers(0, HALF - 1))
def test_order_is_transitive_on_a_short_span(a, m, n):
    assume(m + n < HALF)
    b, c = sq.add(a, m), sq.add(a, m + n)
    assert sq.le(a, b) and sq.le(b, c) and sq.le(a, c)
    if m and n:
        assert sq.lt(a, b) and sq.lt(b, c) and sq.lt(a, c)


@given(seqs, st.integers(0, TOP), st.integers(-(2**33), 2**33))
def test_between_is_invariant_under_shifting(lo, n, k):
    hi = sq.add(lo, n)
    for x in (lo, sq.add(lo, n // 2), sq.add(hi, -1), hi, sq.add(hi, 1)):
        assert sq.between(lo, x, hi) == sq.between(sq.add(lo, k), sq.add(x, k), sq.add(hi, k))


@given(seqs, st.integers(0, HALF - 1), st.integers(-(2**20), 2**31))
@example(TOP, 3, 0)
@example(TOP, 3, 1)
@example(TOP, 3, 3)
def test_between_matches_le_and_lt(lo, n, k):
    hi = sq.add(lo, n)
    x = sq.add(lo, k)
    expect = 0 <= k < n
    assert sq.between(lo, x, hi) == expect
    assert sq.between_incl(lo, x, hi) == (0 <= k <= n)
    if abs(k) < HALF and abs(k - n) < HALF:
        assert sq.between(lo, x, hi) == (sq.le(lo, x) and sq.lt(x, hi))
        assert sq.between_incl(lo, x, hi) == (sq.le(lo, x) and sq.le(x, hi))


@given(seqs, seqs)
def test_empty_range(lo, x):
    assert not sq.between(lo, x, lo)
    assert sq.between_incl(lo, x, lo) == (x == lo)


# -- RFC 9293 section 3.10.7.4: the four-case acceptability table ---------------------------------
def rfc9293_acceptable(seg_seq: int, seg_len: int, rcv_nxt: int, rcv_wnd: int) -> bool:
    """The table, written out from the RFC with plain integers (no rawfin.core.seq)."""

    def in_window(n: int) -> bool:          # RCV.NXT =< n < RCV.NXT+RCV.WND, mod 2**32
        return (n - rcv_nxt) % MOD < rcv_wnd

    if seg_len == 0 and rcv_wnd == 0:
        return seg_seq == rcv_nxt
    if seg_len == 0 and rcv_wnd > 0:
        return in_window(seg_seq)
    if seg_len > 0 and rcv_wnd == 0:
        return False
    return in_window(seg_seq) or in_window((seg_seq + seg_len - 1) % MOD)


@given(seqs, small, seqs, windows)
def test_acceptable_matches_the_rfc_table(rcv_nxt, seg_len, seg_seq, rcv_wnd):
    assert sq.acceptable(seg_seq, seg_len, rcv_nxt, rcv_wnd) == \
        rfc9293_acceptable(seg_seq, seg_len, rcv_nxt, rcv_wnd)


@given(seqs, st.integers(-70_000, 70_000), small, windows)
def test_acceptable_near_rcv_nxt_matches_the_rfc_table(rcv_nxt, off, seg_len, rcv_wnd):
    seg_seq = sq.add(rcv_nxt, off)
    assert sq.acceptable(seg_seq, seg_len, rcv_nxt, rcv_wnd) == \
        rfc9293_acceptable(seg_seq, seg_len, rcv_nxt, rcv_wnd)


def test_acceptable_four_cases_by_hand_across_the_wrap():
    nxt = TOP  # the window straddles 2**32
    # case 1: len 0, window 0 -> only seq == rcv_nxt
    assert sq.acceptable(TOP, 0, nxt, 0)
    assert not sq.acceptable(0, 0, nxt, 0)
    # case 2: len 0, window > 0 -> rcv_nxt <= seq < rcv_nxt + wnd
    assert sq.acceptable(TOP, 0, nxt, 10)
    assert sq.acceptable(8, 0, nxt, 10)       # TOP + 9 == 8
    assert not sq.acceptable(9, 0, nxt, 10)   # TOP + 10: one past the window
    assert not sq.acceptable(TOP - 1, 0, nxt, 10)
    # case 3: len > 0, window 0 -> never
    assert not sq.acceptable(TOP, 1, nxt, 0)
    # case 4: len > 0, window > 0 -> first or last byte in the window
    assert sq.acceptable(TOP - 5, 10, nxt, 10)    # starts before, ends inside
    assert not sq.acceptable(TOP - 5, 5, nxt, 10)  # ends at TOP - 1, just before
    assert sq.acceptable(TOP - 5, 6, nxt, 10)      # its last byte is TOP
    assert sq.acceptable(8, 100, nxt, 10)          # starts on the last byte of the window
    assert not sq.acceptable(9, 100, nxt, 10)


def test_acceptable_fin_after_data_at_the_wrap():
    # a FIN alone at rcv_nxt == 2**32 - 1 occupies one number
    assert sq.acceptable(TOP, 1, TOP, 65535)
    # its retransmission after we advanced rcv_nxt to 0 is old
    assert not sq.acceptable(TOP, 1, 0, 65535)

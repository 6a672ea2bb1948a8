"""The both-endpoint observer on crafted segments: what analyze infers from a wire."""

from __future__ import annotations

import pytest

from rawfin.sim import craft
from rawfin.core import seq as sq
from rawfin.core.events import Anomaly
from rawfin.core.observer import Observer
from rawfin.core.segment import Flags
from rawfin.render.records import record


def _recs(events) -> list:
    """The observer's events as the records every format shows."""
    return [record(e) for e in events]

C, S = ("192.0.2.2", 50001), ("192.0.2.1", 80)
C6, S6 = ("2001:db8::2", 50001), ("2001:db8::1", 80)
SEC = 1_000_000_000


def run(segs, msl_s=30):
    segs = [s.with_(frame=i + 1, time_ns=s.time_ns if s.time_ns is not None else i * 1_000_000)
            for i, s in enumerate(segs)]
    obs = Observer(msl_ns=msl_s * SEC)
    recs = []
    for s in segs:
        recs += _recs(obs.feed(s))
    recs += _recs(obs.finish())
    return recs


def conns(recs):
    return [r for r in recs if r["type"] == "connection"]


def moves(recs, endpoint):
    return [(r["from"], r["to"]) for r in recs if r["type"] == "transition" and r["endpoint"] == endpoint]


def kinds(recs):
    return [r["kind"] for r in recs if r["type"] == "anomaly"]


@pytest.mark.parametrize("client,server", [(C, S), (C6, S6)])
def test_seed_close_client_first(client, server):
    recs = run(craft.connection(client, server, close="4way", closer="client"))
    (conn,) = conns(recs)
    ce = f"[{client[0]}]:{client[1]}" if ":" in client[0] else f"{client[0]}:{client[1]}"
    se = f"[{server[0]}]:{server[1]}" if ":" in server[0] else f"{server[0]}:{server[1]}"
    assert conn["close"] == "four_way"
    assert conn["active_closer"] == ce and conn["passive_closer"] == se
    assert conn["final"] == {ce: "TIME_WAIT", se: "CLOSED"}
    assert conn["server_active_close"] is False and conn["mid_stream"] is False
    assert moves(recs, ce) == [("CLOSED", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED"),
                               ("ESTABLISHED", "FIN_WAIT_1"), ("FIN_WAIT_1", "FIN_WAIT_2"),
                               ("FIN_WAIT_2", "TIME_WAIT")]
    assert moves(recs, se) == [("LISTEN", "SYN_RECEIVED"), ("SYN_RECEIVED", "ESTABLISHED"),
                               ("ESTABLISHED", "CLOSE_WAIT"), ("CLOSE_WAIT", "LAST_ACK"), ("LAST_ACK", "CLOSED")]
    assert kinds(recs) == []


def test_server_first_close_is_flagged():
    recs = run(craft.connection(close="4way", closer="server"))
    (conn,) = conns(recs)
    assert conn["active_closer"] == "192.0.2.1:80"
    assert conn["server_active_close"] is True
    assert conn["final"]["192.0.2.1:80"] == "TIME_WAIT"


def test_three_segment_close_two_records_on_one_frame():
    segs = craft.connection(close="3way")
    recs = run(segs)
    fin_ack_frame = next(i + 1 for i, s in enumerate(segs) if s.fin and s.sport == 80)
    client = [r for r in recs if r["type"] == "transition" and r["endpoint"] == "192.0.2.2:50001"
              and r["frame"] == fin_ack_frame]
    assert [(r["from"], r["to"]) for r in client] == [("FIN_WAIT_1", "FIN_WAIT_2"), ("FIN_WAIT_2", "TIME_WAIT")]
    assert conns(recs)[0]["close"] == "three_way"


def test_simultaneous_close_both_through_closing():
    recs = run(craft.connection(close="simultaneous"))
    (conn,) = conns(recs)
    assert conn["close"] == "simultaneous"
    for ep in ("192.0.2.2:50001", "192.0.2.1:80"):
        assert ("FIN_WAIT_1", "CLOSING") in moves(recs, ep)
        assert ("CLOSING", "TIME_WAIT") in moves(recs, ep)


def test_fin_with_data():
    recs = run(craft.connection(close="fin_with_data"))
    (conn,) = conns(recs)
    assert conn["close"] == "four_way" and kinds(recs) == []


def test_reset_and_refused():
    (conn,) = conns(run(craft.connection(close="rst")))
    assert conn["close"] == "reset"
    syn = craft.handshake()[0]
    refuse = craft.segment(S, C, seq=0, ack=sq.add(syn.seq, 1), flags=Flags.RST | Flags.ACK)
    recs = run([syn, refuse])
    (conn,) = conns(recs)
    assert conn["close"] == "refused"
    # nobody listened: the server never moved
    assert moves(recs, "192.0.2.1:80") == []


def _lost_final_ack():
    """The seed's section 5 as a capture would show it: final ACK lost, FIN retransmitted, re-ACKed."""
    segs = craft.connection(close="4way")
    fin2, last = segs[-2], segs[-1]
    t = segs[-1].time_ns
    return segs + [fin2.with_(time_ns=t + SEC), last.with_(time_ns=t + SEC + 1_000_000)]


def test_lost_final_ack_retransmitted_fin_and_time_wait_reack():
    recs = run(_lost_final_ack())
    assert "fin_retransmission" in kinds(recs)
    assert "time_wait_reack" in kinds(recs)
    assert ("TIME_WAIT", "TIME_WAIT") in moves(recs, "192.0.2.2:50001")
    (conn,) = conns(recs)
    assert conn["final"] == {"192.0.2.2:50001": "TIME_WAIT", "192.0.2.1:80": "CLOSED"}


def test_final_ack_missing_at_the_end():
    recs = run(craft.connection(close="4way")[:-1])
    assert "final_ack_missing" in kinds(recs)
    (conn,) = conns(recs)
    assert conn["close"] == "incomplete"
    assert conn["final"]["192.0.2.1:80"] == "LAST_ACK"


def test_ack_that_does_not_cover_the_fin_says_what_was_expected():
    segs = craft.connection(close="4way")
    fin, ack, fin2, last = segs[-4:]
    x = fin.seq
    bad_ack = ack.with_(ack=x)                 # off by one: forgot that the FIN takes a number
    bad_fin = fin2.with_(ack=x)
    recs = run(segs[:-4] + [fin, bad_ack, bad_fin])
    an = [r for r in recs if r["type"] == "anomaly" and r["kind"] == "ack_not_covering_fin"]
    assert an and f"expected {sq.add(x, 1)}" in an[0]["detail"]
    assert an[0]["frame"] == len(segs) - 2


def test_data_after_fin_from_the_fins_sender():
    segs = craft.connection(close="4way")
    fin = segs[-4]
    extra = fin.with_(seq=sq.add(fin.seq, 1), flags=Flags.PSH | Flags.ACK, payload=b"late")
    recs = run(segs[:-3] + [extra])
    assert "data_after_fin" in kinds(recs)


def test_half_close_data_flows_after_first_fin():
    segs = craft.connection(close="4way")
    fin, ack, fin2, last = segs[-4:]
    data = craft.segment(S, C, seq=fin2.seq, ack=ack.ack, flags=Flags.PSH | Flags.ACK, payload=b"more data")
    ack_data = craft.segment(C, S, seq=last.seq, ack=sq.add(fin2.seq, 9))
    fin2b = fin2.with_(seq=sq.add(fin2.seq, 9))
    last_b = last.with_(ack=sq.add(fin2b.seq, 1))
    recs = run(segs[:-4] + [fin, ack, data, ack_data, fin2b, last_b])
    (conn,) = conns(recs)
    assert conn["close"] == "half_close"
    assert kinds(recs) == []


def test_close_across_the_wrap():
    segs = craft.connection(isn_c=2**32 - 2, isn_s=2**32 - 40, requests=((b"", b""),), close="4way")
    fin = segs[-4]
    recs = run(segs)
    assert conns(recs)[0]["close"] == "four_way"
    assert any(r.get("cause") == f"rcv ACK ack={sq.add(fin.seq, 1)} of FIN seq={fin.seq}" for r in recs)


def test_port_reuse_new_syn_in_time_wait_starts_a_new_connection():
    first = craft.connection(close="4way", closer="server")
    t = first[-1].time_ns + SEC
    second = craft.connection(isn_c=900_000, isn_s=5_000, close="4way", start_ns=t)
    recs = run(first + second)
    cs = conns(recs)
    assert [c["conn"] for c in cs] == [0, 1]
    assert cs[0]["close"] == "four_way" and cs[1]["close"] == "four_way"
    # the server's TIME_WAIT took the SYN: it closes there, on the SYN's frame
    syn_frame = len(first) + 1
    assert any(r["type"] == "transition" and r["conn"] == 0 and r["to"] == "CLOSED"
               and r["frame"] == syn_frame for r in recs)


def test_time_wait_expires_in_capture_time_and_the_connection_is_dropped():
    first = craft.connection(close="4way")
    obs = Observer(msl_ns=30 * SEC)
    for i, s in enumerate(first):
        _recs(obs.feed(s.with_(frame=i + 1)))
    assert len(obs.active) == 1
    later = craft.connection(("192.0.2.9", 40000), S, start_ns=first[-1].time_ns + 200 * SEC)
    recs = _recs(obs.feed(later[0].with_(frame=len(first) + 1)))
    expired = [r for r in recs if r["type"] == "transition" and r["to"] == "CLOSED" and r["frame"] is None]
    assert expired and expired[0]["time"] == pytest.approx((first[-1].time_ns + 60 * SEC) / 1e9)
    assert [r["conn"] for r in recs if r["type"] == "connection"] == [0]
    assert len({id(c) for c in obs.active.values()}) == 1      # only the new one is held


def test_mid_stream_pickup_guesses_the_server_by_port():
    segs = craft.connection(close="4way")[3:]      # no handshake
    recs = run(segs)
    (conn,) = conns(recs)
    assert conn["mid_stream"] is True and conn["server_guessed"] is True
    assert conn["server"] == "192.0.2.1:80" and conn["close"] == "four_way"


def test_same_four_tuple_on_two_vlans_is_two_connections():
    # overlapping address spaces: each connection has its own ISNs
    a = [s.with_(vlan=(10,)) for s in craft.connection(close="4way")]
    b = [s.with_(vlan=(20,), time_ns=s.time_ns + 500) for s in craft.connection(isn_c=7_000_000, isn_s=9_000_000)]
    merged = sorted(a + b, key=lambda s: s.time_ns)
    cs = conns(run(merged))
    assert len(cs) == 2 and all(c["close"] == "four_way" for c in cs)
    assert sorted(tuple(c["vlan"]) for c in cs) == [(10,), (20,)]


def test_the_same_packets_on_two_vlan_views_are_one_connection():
    # a capture that sees each packet twice (trunk and access port; one tag and two): the copies
    # are counted and passed over (tests/test_vlan.py has the captures, both engines)
    segs = craft.connection(close="4way")
    for views in (((), (10,)), ((10,), ()), ((10,), (100, 10)), ((10,), (20,))):
        merged = sorted([s.with_(vlan=views[0]) for s in segs] + [s.with_(vlan=views[1], time_ns=s.time_ns + 500)
                                                                    for s in segs], key=lambda s: s.time_ns)
        obs = Observer()
        recs = []
        for s in merged:
            recs += _recs(obs.feed(s))
        recs += _recs(obs.finish())
        cs = conns(recs)
        assert len(cs) == 1 and cs[0]["close"] == "four_way" and cs[0]["packets"] == len(segs), views
        assert obs.stats["vlan_copy"] == len(segs) and not [r for r in recs if r["type"] == "anomaly"], views


def test_directions_on_different_vlans_are_one_connection():
    segs = [s.with_(vlan=(80,) if s.sport == 50001 else (81,)) for s in craft.connection(close="4way")]
    cs = conns(run(segs))
    assert len(cs) == 1 and cs[0]["close"] == "four_way"


def test_filter_selects_connections():
    other = craft.connection(("192.0.2.7", 40000), ("192.0.2.8", 22), start_ns=craft.DEFAULT_START_NS + 10**6 // 2)
    segs = sorted(craft.connection() + other, key=lambda s: s.time_ns)
    obs = Observer(select=lambda c: 22 in {e[1] for e in c.eps})
    recs = []
    for i, s in enumerate(segs):
        recs += _recs(obs.feed(s.with_(frame=i + 1)))
    recs += _recs(obs.finish())
    assert {r["conn"] for r in recs} == {1}


def _all_records(segs, fast):
    obs = Observer(fast_path=fast)
    recs = []
    for s in segs:
        recs += _recs(obs.feed(s))
    return recs + _recs(obs.finish())


@pytest.mark.parametrize("close", ["4way", "3way", "simultaneous", "rst", "fin_with_data"])
def test_fast_path_changes_nothing(close):
    big = ((b"q" * 3000, b"r" * 9000), (b"x" * 10, b""), (b"", b"y" * 4000))
    segs = craft.connection(close=close, requests=big)
    segs = [s.with_(frame=i + 1) for i, s in enumerate(segs)] + [s.with_(frame=len(segs) + i + 1)
                                                                  for i, s in enumerate(segs[5:9])]
    assert _all_records(segs, True) == _all_records(segs, False)


def test_fast_path_changes_nothing_on_the_corpus():
    from rawfin.wire.decode import decode
    from rawfin.wire.pcapio import open_capture
    from rawfin.core.errors import CaptureError
    import shared_corpus
    files = shared_corpus.FILES
    if not files:
        pytest.skip(shared_corpus.WHY_MISSING)
    for f in files:
        segs = []
        try:
            for fr in open_capture(f):
                r = decode(fr.linktype, fr.data, fr.orig_len, fr.frame, fr.time_ns)
                if r.__class__.__name__ == "Segment":
                    segs.append(r)
        except CaptureError:
            pass
        assert _all_records(segs, True) == _all_records(segs, False), f.name


def _records_of_file(path, **kw):
    from rawfin.wire.decode import decode
    from rawfin.core.errors import CaptureError
    from rawfin.wire.pcapio import open_capture
    obs = Observer(**kw)
    recs = []
    try:
        for fr in open_capture(path):
            r = decode(fr.linktype, fr.data, fr.orig_len, fr.frame, fr.time_ns)
            recs += _recs(obs.feed(r)) if r.__class__.__name__ == "Segment" else _recs(obs.note_skip(r.kind, fr.frame, fr.time_ns,
                                                                                         r.reason))
    except CaptureError:
        pass
    return recs + _recs(obs.finish())


def test_time_wait_compaction_changes_nothing():
    """The small TIME_WAIT form gives exactly the records the full connection gives: on every
    shipped capture, every corpus capture, and crafted port reuse and TIME_WAIT expiry."""
    from pathlib import Path
    here = Path(__file__).resolve().parents[1]
    import shared_corpus
    files = sorted((here / "captures").glob("*.pcap")) + shared_corpus.FILES
    for f in files:
        assert _records_of_file(f) == _records_of_file(f, compact_time_wait=False), f.name
    # crafted: TIME_WAIT taken by a new SYN, re-ACK of a late FIN, expiry in capture time
    first = craft.connection(close="4way", closer="server")
    fin2 = first[-2]
    late = [fin2.with_(time_ns=first[-1].time_ns + 3 * SEC), first[-1].with_(time_ns=first[-1].time_ns + 3 * SEC + 1)]
    second = craft.connection(isn_c=900_000, isn_s=5_000, close="4way", start_ns=first[-1].time_ns + 5 * SEC)
    third = craft.connection(("192.0.2.9", 4000), S, start_ns=first[-1].time_ns + 200 * SEC)
    segs = [s.with_(frame=i + 1) for i, s in enumerate(first + late + second + third)]
    assert _all_records_kw(segs, {}) == _all_records_kw(segs, {"compact_time_wait": False})


def _all_records_kw(segs, kw):
    obs = Observer(**kw)
    recs = []
    for s in segs:
        recs += _recs(obs.feed(s))
    return recs + _recs(obs.finish())


def test_time_wait_compaction_shrinks_what_is_held():
    obs = Observer()
    segs = craft.connection(close="4way")
    for i, s in enumerate(segs):
        _recs(obs.feed(s.with_(frame=i + 1)))
    _recs(obs.tick(segs[-1].time_ns + 11 * SEC))          # past the final-ACK hold
    (held,) = set(obs.active.values())
    assert type(held).__name__ == "TimeWait"
    assert [held.a, held.b].count(None) == 1          # the CLOSED side is gone, the other is a tuple


# -- issue 16: an RST after data the application never answered -------------------------------------------
def _rst_after(answer: bytes | None, rst_ack: bool = True) -> list[str]:
    from rawfin.core.observer import Observer
    from rawfin.core.segment import Flags as Fl, Segment as Sg
    c, s = ("192.0.2.2", 50001), ("192.0.2.1", 80)

    def seg(src, dst, seq, ack, flags, payload=b"", t=0):
        return Sg(src=src[0], dst=dst[0], sport=src[1], dport=dst[1], seq=seq, ack=ack, flags=flags,
                  payload=payload, time_ns=t)
    A, P, Sy, R = Fl.ACK, Fl.PSH, Fl.SYN, Fl.RST
    segs = [seg(c, s, 1000, 0, Sy), seg(s, c, 2000, 1001, Sy | A), seg(c, s, 1001, 2001, A),
            seg(c, s, 1001, 2001, P | A, b"request"), seg(s, c, 2001, 1008, A)]      # the stack's ACK alone
    y = 2001
    if answer:
        segs.append(seg(s, c, 2001, 1008, P | A, answer))
        y += len(answer)
    segs.append(seg(s, c, y, 1008, R | A) if rst_ack else seg(s, c, y, 0, R))
    obs = Observer(final_ack_hold_ns=0)
    kinds = []
    for i, x in enumerate(segs):
        kinds += [ev.kind for ev in obs.feed(x.with_(frame=i + 1, time_ns=i * 1000)) if isinstance(ev, Anomaly)]
    return kinds


def test_rst_after_data_never_answered_is_named_close_with_unread_data():
    assert _rst_after(None) == ["close_with_unread_data"]


def test_rst_after_the_application_answered_is_not():
    assert _rst_after(b"response") == []


def test_rst_without_ack_is_not():
    # what a stack sends for a segment it has no connection for, not what close() sends (RST,ACK)
    assert _rst_after(None, rst_ack=False) == []


def test_nothing_to_report_is_a_shared_empty_tuple_nobody_can_add_to():
    segs = [s.with_(frame=i + 1, time_ns=i * 1_000_000) for i, s in enumerate(craft.connection(close="4way"))]
    obs = Observer()
    quiet = [r for r in (obs.feed(s) for s in segs) if not r]
    assert quiet, "the fast path reported nothing for some segments"
    for r in quiet:
        assert r == () and not hasattr(r, "append")

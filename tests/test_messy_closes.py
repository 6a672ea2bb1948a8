"""Closes through a lossy, reordering link, as a capture point between the hosts sees them (issue 14).

Each case is the packet pattern the lossy-link harness (tools/lossylink.py) met against the real
kernels, written out by hand: the segments the capture shows, and the states the kernel reported.
A capture "before the faults" shows every segment sent (some never arrived); one "after the faults"
shows only what arrived (some were sent and lost on the way).
"""

from __future__ import annotations

from rawfin.core.observer import Observer
from rawfin.core.segment import Flags, Segment
from rawfin.render.records import records_of

C, S = ("198.51.100.1", 20001), ("198.51.100.2", 8080)
CN, SN = "198.51.100.1:20001", "198.51.100.2:8080"
X, Y = 1000, 5000          # the client's and the server's ISN
MS = 1_000_000
A, F, R, P = Flags.ACK, Flags.FIN, Flags.RST, Flags.PSH


def seg(frm: str, seq: int, ack: int, flags=A, data: int = 0, ms: float = 0.0) -> Segment:
    """A segment from "c" or "s"; seq and ack relative to the ISNs (the SYN is 0)."""
    src, dst = (C, S) if frm == "c" else (S, C)
    mine, theirs = (X, Y) if frm == "c" else (Y, X)
    return Segment(src=src[0], dst=dst[0], sport=src[1], dport=dst[1], seq=(mine + seq) % 2**32,
                   ack=(theirs + ack) % 2**32 if flags & A else 0, flags=int(flags), payload=b"x" * data,
                   time_ns=int(ms * MS))


def opened(req: int = 100, resp: int = 200) -> list[Segment]:
    """Handshake, a request and a response: the client's next seq is 1+req, the server's 1+resp."""
    return [seg("c", 0, 0, Flags.SYN), seg("s", 0, 1, Flags.SYN | A, ms=0.1), seg("c", 1, 1, ms=0.2),
            seg("c", 1, 1, P | A, req, ms=1), seg("s", 1, 1 + req, P | A, resp, ms=2),
            seg("c", 1 + req, 1 + resp, ms=3)]


def run(segs: list[Segment], observer: Observer | None = None) -> list[dict]:
    """The records (as --format jsonl has them) of the observer's events."""
    obs = observer or Observer()
    events = []
    for i, s in enumerate(segs):
        events += obs.feed(s.with_(frame=i + 1))
    return list(records_of(events + obs.finish()))


def path(recs: list[dict], who: str) -> list[str]:
    """The states entered from ESTABLISHED on, as the harness compares them with the kernel's."""
    states = [r["to"] for r in recs if r["type"] == "transition" and r["endpoint"] == who]
    states = states[states.index("ESTABLISHED"):]
    return [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]


def inferred(recs: list[dict], who: str) -> list[dict]:
    return [r for r in recs if r["type"] == "transition" and r["endpoint"] == who and r.get("inferred")]


def kinds(recs: list[dict]) -> list[str]:
    return [r["kind"] for r in recs if r["type"] == "anomaly"]


# pattern 1 -------------------------------------------------------------------------------------------------

def test_fin_lost_before_the_capture_point_shows_in_the_next_ack():
    """The client's FIN never reached the capture point; its ACK of the server's FIN carries seq = FIN + 1:
    it had closed, its FIN crossed the server's (kernel: FIN_WAIT_1 -> CLOSING -> TIME_WAIT)."""
    recs = run(opened() + [
        seg("s", 201, 101, F | A, ms=10),          # the server's FIN; the client's FIN (seq 101) was lost
        seg("c", 102, 202, ms=10.1),               # the client ACKs it with seq 102: one past its FIN
        seg("c", 101, 202, F | A, ms=210),         # its FIN again (RTO)
        seg("s", 202, 102, ms=210.1)])
    assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    assert path(recs, SN) == ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]
    assert "fin_not_captured" in kinds(recs)
    (mark,) = inferred(recs, CN)
    assert (mark["from"], mark["to"]) == ("ESTABLISHED", "FIN_WAIT_1")
    assert "CLOSE_WAIT" in str(mark["inferred"])           # the other reading, named


def test_fin_lost_before_the_capture_point_after_the_peer_fin_was_resent():
    """Client first: the server's FIN (carrying its ACK) was lost; the client sent its FIN again, and the
    server's ACK (seq = its FIN + 1) answers that copy: it had the first copy, CLOSE_WAIT then LAST_ACK."""
    recs = run(opened() + [
        seg("c", 101, 201, F | A, ms=10),
        seg("c", 101, 201, F | A, ms=210),         # again: nothing came back
        seg("s", 202, 102, ms=210.1),              # seq 202: the server's FIN (201) went out, unseen
        seg("s", 201, 102, F | A, ms=410),
        seg("c", 102, 202, ms=410.1)])
    assert path(recs, SN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]


# pattern 2 -------------------------------------------------------------------------------------------------

def test_crossing_fins_seen_at_the_receiver_in_the_opposite_order():
    """At the client's side: the server's FIN, then an older ACK of the server overtaken by it, then the
    client's own FIN, which does not cover the server's: the FINs crossed (both CLOSING)."""
    recs = run(opened() + [
        seg("s", 201, 101, F | A, ms=10),
        seg("s", 201, 101, ms=10.5),               # sent before the FIN, arrived after it
        seg("c", 101, 201, F | A, ms=11),          # the client's FIN: ack 201, it had not seen the server's
        seg("c", 102, 202, ms=12),
        seg("s", 202, 102, ms=12.5)])
    assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    assert path(recs, SN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    (conn,) = [r for r in recs if r["type"] == "connection"]
    assert conn["close"] == "simultaneous"


def test_simultaneous_close_order_at_the_receiver_is_marked_inferred():
    """Crossing FINs, then the server's ACK of the client's FIN, captured before the client answered the
    server's FIN: whether that ACK reached the client before the server's FIN (FIN_WAIT_2, as the kernel
    did when the link reordered them: lossylink reorder seed 1 connection 34) or after it (CLOSING) the
    packets cannot show. rawfin takes the FIN first and names the other reading."""
    recs = run(opened() + [
        seg("c", 101, 201, F | A, ms=10),
        seg("s", 201, 101, F | A, ms=10.1),        # the server's FIN: it had not seen the client's
        seg("s", 202, 102, ms=11),                 # the server took the client's FIN
        seg("c", 102, 202, ms=12)])                # the client's ACK covers both
    assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    (mark,) = inferred(recs, CN)
    assert mark["to"] == "CLOSING" and mark["alternative"] == ["FIN_WAIT_2"]
    assert mark["inferred"].startswith("or FIN_WAIT_2 if the segment its peer sent after the FIN in frame 8 ")


# pattern 3 -------------------------------------------------------------------------------------------------

def test_simultaneous_close_fin_lost_after_the_capture_point():
    """Before the faults: the client's FIN is captured but lost; the server ACKs nothing of it until the
    client sends it again, so the server took the client's ACK first: FIN_WAIT_2, then TIME_WAIT."""
    recs = run(opened() + [
        seg("c", 1, 101, P | A, 1448, ms=4), seg("c", 1449, 101, P | A, 100, ms=4.1),   # data resent below:
        seg("s", 101, 201, ms=5), seg("c", 1, 101, P | A, 1448, ms=30),                 # a loss after the
        seg("s", 101, 1549, ms=31),                                                     # capture point
        seg("c", 1549, 201, F | A, ms=40),
        seg("s", 201, 1549, F | A, ms=40.1),      # crosses it
        seg("c", 1550, 202, ms=40.2),              # the client ACKs the server's FIN
        seg("c", 1549, 202, F | A, ms=240),        # and sends its FIN again: no ACK of it came
        seg("s", 202, 1550, ms=240.1)])
    assert path(recs, SN) == ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]
    assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    assert "fin_lost" in kinds(recs)
    assert any("CLOSING" in str(r["inferred"]) for r in inferred(recs, SN))


def test_simultaneous_close_ack_lost_before_the_capture_point():
    """The same packets where the capture misses segments (losses before the capture point): the first FIN
    arrived and the server's ACK of it was lost on the way: CLOSING, then TIME_WAIT."""
    recs = run(opened() + [
        seg("c", 1449, 101, P | A, 100, ms=4.1),   # 1448 bytes before it never reached the capture point
        seg("s", 101, 1, ms=5), seg("c", 1, 101, P | A, 1448, ms=30),
        seg("s", 101, 1549, ms=31),
        seg("c", 1549, 201, F | A, ms=40),
        seg("s", 201, 1549, F | A, ms=40.1),
        seg("c", 1550, 202, ms=40.2),
        seg("c", 1549, 202, F | A, ms=240),
        seg("s", 202, 1550, ms=240.1)])
    assert path(recs, SN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    assert any("FIN_WAIT_2" in str(r["inferred"]) for r in inferred(recs, SN))


def test_ftp_style_simultaneous_close_with_a_lost_ack():
    """The server's FIN and the client's cross; the client's ACK of the server's FIN is captured but lost,
    so the server sends its FIN again, and that copy's ACK field is the first ACK of the client's FIN to
    reach it: the client moves to TIME_WAIT there, the server stays in CLOSING."""
    recs = run(opened() + [
        seg("s", 201, 101, F | A, ms=10),
        seg("c", 101, 201, F | A, ms=10.1),
        seg("c", 102, 202, ms=10.2),               # lost after the capture point
        seg("s", 201, 102, F | A, ms=210)])        # the server's FIN again, now ACKing the client's
    assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    assert path(recs, SN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING"]
    assert "final_ack_lost" in kinds(recs)
    (conn,) = [r for r in recs if r["type"] == "connection"]
    assert conn["final"] == {CN: "TIME_WAIT", SN: "CLOSING"}


def test_rst_lost_after_the_capture_point_receiver_keeps_sending():
    """The server aborts; its RST never reaches the client, which closes half a second later and is reset
    by the server's kernel then (kernel: ESTABLISHED -> FIN_WAIT_1 -> CLOSED)."""
    recs = run(opened() + [
        seg("s", 201, 101, R | A, ms=10),
        seg("c", 101, 201, F | A, ms=500),
        seg("s", 201, 0, R, ms=500.1)])
    assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSED"]
    assert path(recs, SN) == ["ESTABLISHED", "CLOSED"]
    assert "rst_not_received" in kinds(recs)


def test_rst_crossing_data_still_resets():
    """Data the client sent as the server's RST was on its way (within a round trip) shows nothing lost."""
    recs = run(opened() + [
        seg("s", 201, 101, R | A, ms=10),
        seg("c", 101, 201, P | A, 50, ms=10.05)])
    assert path(recs, CN) == ["ESTABLISHED", "CLOSED"]
    assert "rst_not_received" not in kinds(recs)


def test_rst_arrives_when_nothing_follows():
    recs = run(opened() + [seg("c", 101, 201, R | A, ms=10)])
    assert path(recs, SN) == ["ESTABLISHED", "CLOSED"]
    (conn,) = [r for r in recs if r["type"] == "connection"]
    assert conn["close"] == "reset"


# pattern 4 -------------------------------------------------------------------------------------------------

def test_fin_ahead_of_the_data_in_front_of_it_is_out_of_order():
    """The client's last data and its FIN are reordered: the FIN arrives first, the server's duplicate ACK
    shows it waiting for the gap, the data fills it: CLOSE_WAIT there, and nothing was lost."""
    recs = run(opened() + [
        seg("c", 201, 201, F | A, ms=10),          # FIN at 201, ahead of 101..201
        seg("s", 201, 101, ms=10.1),               # duplicate ACK: waits for 101
        seg("c", 101, 201, P | A, 100, ms=10.5),   # the data, late
        seg("s", 201, 202, ms=10.6),
        seg("s", 201, 202, F | A, ms=20),
        seg("c", 202, 202, ms=20.1)])
    assert path(recs, SN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    (cw,) = [r for r in recs if r["type"] == "transition" and r["to"] == "CLOSE_WAIT"]
    assert cw["frame"] == 9                        # the segment that filled the gap
    assert "retransmission" not in kinds(recs) and "previous_segment_not_captured" not in kinds(recs)


# what the capture cannot show: a FIN waiting behind data sent again (lossylink's unmarked misses) ---------------

def both_engines(segs: list[Segment], tmp_path) -> list[dict]:
    """The records of `rawfin analyze` for these segments written as a capture, by the compiled lane and by
    the Python reference: they must be equal (the lane interprets the same rows)."""
    import pytest
    from rawfin.capture import engine
    from rawfin.capture.analysis import records
    from rawfin.render.records import json_line, record
    from rawfin.wire.codec import to_bytes
    from rawfin.wire.pcapio import LINKTYPE_RAW, PcapWriter
    path = str(tmp_path / "messy.pcap")
    w = PcapWriter(path, linktype=LINKTYPE_RAW, nanosecond=True)
    for s in segs:
        raw = to_bytes(s)
        if s.ip_id is not None and raw[0] >> 4 == 4:     # the IPv4 ID the segment names, its checksum again
            raw = bytearray(raw)
            raw[4:6], raw[10:12] = s.ip_id.to_bytes(2, "big"), b"\0\0"
            ck = sum(int.from_bytes(raw[i:i + 2], "big") for i in range(0, (raw[0] & 15) * 4, 2))
            while ck >> 16:
                ck = (ck & 0xFFFF) + (ck >> 16)
            raw[10:12] = (~ck & 0xFFFF).to_bytes(2, "big")
            raw = bytes(raw)
        w.write(raw, s.time_ns)
    w.close()
    ref = list(records(path, record=record))
    if not engine.available():
        pytest.skip("the compiled lane is not built (make venv)")
    assert list(engine.records(path, record=record, json_of=json_line(None))) == ref
    return ref


def _resending_server_then_fins() -> list[Segment]:
    """lossylink simul10 seed 4 connection 45 (before the faults): the server's first data segment is lost
    after the capture point and sent again twice (RTO); both applications close at once, the server's FIN
    waits behind its retransmission; the client's ACK of everything and its FIN cross it; the server ACKs
    the FIN at once and its own FIN follows (kernel: ESTABLISHED -> FIN_WAIT_1 -> CLOSING -> TIME_WAIT)."""
    return opened(resp=0) + [
        seg("s", 1, 101, A, 1448, ms=4), seg("s", 1449, 101, P | A, 1023, ms=4.1),
        seg("c", 101, 1, ms=5),                    # a duplicate ACK: 1..1449 missing
        seg("s", 1, 101, A, 1448, ms=15),          # sent again
        seg("s", 1, 101, A, 1448, ms=225),         # and again
        seg("c", 101, 2472, ms=225.2),             # all of it acknowledged
        seg("c", 101, 2472, F | A, ms=225.3),      # the client closes
        seg("s", 2472, 102, ms=225.35),            # the server ACKs the FIN at once,
        seg("s", 2472, 102, F | A, ms=225.37),     # its FIN right behind
        seg("c", 102, 2473, ms=225.5)]


def test_fin_to_a_side_sending_data_again_names_closing(tmp_path):
    recs = both_engines(_resending_server_then_fins(), tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]    # the likelier reading
    (mark,) = inferred(recs, SN)
    assert (mark["from"], mark["to"]) == ("ESTABLISHED", "CLOSE_WAIT")
    assert mark["alternative"] == ["FIN_WAIT_1", "CLOSING"]                         # the kernel's path
    assert mark["inferred"].startswith("or FIN_WAIT_1 → CLOSING if its application had closed while it was "
                                       "sending data again")
    assert not inferred(recs, CN)


def test_a_side_that_sent_again_and_went_on_is_not_marked(tmp_path):
    """The same retransmissions, but the server sends again once all of it is acknowledged: a FIN waiting
    behind that data would have gone first, so the FIN that comes later is plainly CLOSE_WAIT."""
    segs = _resending_server_then_fins()
    ack_all = next(i for i, s in enumerate(segs) if s.time_ns == int(225.2 * MS))
    segs.insert(ack_all + 1, seg("s", 2472, 101, P | A, 10, ms=225.25))
    segs = [s if s.time_ns < int(225.25 * MS) or (s.src, s.sport) != S
            else s.with_(seq=(s.seq + 10) % 2**32) for s in segs]
    segs = [s if s.time_ns <= int(225.25 * MS) or (s.src, s.sport) != C
            else s.with_(ack=(s.ack + 10) % 2**32) for s in segs]
    # (its FIN well after its immediate ACK of the client's: 20 us after it, it is read as a FIN that waited behind
    # the 10 bytes the client's FIN acknowledged: test_an_immediate_ack_of_a_fin_then_a_fin_was_fin_wait_1)
    segs[-2:] = [segs[-2].with_(time_ns=int(300 * MS)), segs[-1].with_(time_ns=int(300.2 * MS))]
    recs = both_engines(segs, tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert not inferred(recs, SN)


def _fin_waiting_behind_data(fin_after_ack_ms: float = 0.012, fin_frees_data: bool = True) -> list[Segment]:
    """lossylink simul10 seed 8 connection 22 (after the faults): the server's last data arrives only when sent
    again (its first copy lost before the capture point); both applications close at once, the server's FIN
    waits behind that data (congestion window); the client's FIN acknowledges it; the server ACKs the FIN at once
    (Linux does so in FIN_WAIT_1, not in ESTABLISHED) and its FIN follows 12 us later, in the same pass
    (kernel: ESTABLISHED -> FIN_WAIT_1 -> CLOSING -> TIME_WAIT)."""
    return opened() + [
        seg("s", 201, 101, P | A, 1308, ms=413),
        *([] if fin_frees_data else [seg("c", 101, 1509, ms=413.2)]),
        seg("c", 101, 1509, F | A, ms=413.3),
        seg("s", 1509, 102, ms=413.349),
        seg("s", 1509, 102, F | A, ms=413.349 + fin_after_ack_ms),
        seg("c", 102, 1510, ms=413.5 + fin_after_ack_ms)]


def test_an_immediate_ack_of_a_fin_then_a_fin_was_fin_wait_1(tmp_path):
    recs = both_engines(_fin_waiting_behind_data(), tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]
    (mark,) = inferred(recs, SN)
    assert (mark["from"], mark["to"]) == ("ESTABLISHED", "FIN_WAIT_1")
    assert mark["alternative"] == ["CLOSE_WAIT", "LAST_ACK"]                        # the passive close, named
    assert not inferred(recs, CN)


def test_an_application_closing_after_an_immediate_ack_is_a_passive_close(tmp_path):
    """Its FIN 5 ms after its ACK (an application woken by the FIN), or a FIN that acknowledged nothing new (a FIN
    waiting would have gone before it): CLOSE_WAIT, LAST_ACK, as before (corpus zeek__pipelining-example.pcap,
    zeek__nflog-http.pcap: a BSD stack's immediate ACK of the FIN, its FIN 176 us or 0 us after it; the latter now
    marked)."""
    recs = both_engines(_fin_waiting_behind_data(fin_after_ack_ms=5), tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert not inferred(recs, SN)
    # its FIN 12 us after that ACK, the client's FIN freeing nothing: the same reading, but its application may have
    # closed the moment that FIN came (Linux in FIN_WAIT_1 sends them so: lossylink simul10 seeds 321, 326, 328,
    # before the faults), named
    recs = both_engines(_fin_waiting_behind_data(fin_frees_data=False), tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    (mark,) = inferred(recs, SN)
    assert (mark["to"], mark["alternative"]) == ("CLOSE_WAIT", ["FIN_WAIT_1", "CLOSING"])


def test_an_rst_to_time_wait_where_segments_get_lost_after_the_capture_point_is_marked(tmp_path):
    """lossylink messy seed 3 connection 11 (before the faults): a copy of the server's final ACK reaches the client
    after it closed; its RST to the server's TIME_WAIT is lost after the capture point (kernel: the server stays in
    TIME_WAIT). The capture showed the server's data sent again, received already: segments get lost after it."""
    segs = opened(resp=0) + [
        seg("s", 1, 101, A, 100, ms=4), seg("s", 101, 101, P | A, 100, ms=4.1),
        seg("s", 1, 101, A, 100, ms=210),          # sent again: its ACK from the client was lost after the capture
        seg("c", 101, 201, ms=210.1),
        seg("s", 201, 101, F | A, ms=300),         # the server closes first
        seg("c", 101, 202, ms=300.1),
        seg("c", 101, 202, F | A, ms=300.2),
        seg("s", 202, 102, ms=300.3),              # the final ACK (a copy of it, not captured here, reached the
        seg("c", 102, 0, R, ms=310.1)]             # client after it closed): its RST
    recs = both_engines(segs, tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT", "CLOSED"]
    (mark,) = inferred(recs, SN)
    assert (mark["from"], mark["to"]) == ("TIME_WAIT", "CLOSED")
    assert mark["alternative"] == ["TIME_WAIT"]
    # nothing shows where segments get lost (lossylink messy seed 3 connection 34: the capture's third connection):
    # marked all the same
    recs = both_engines([x for x in segs if x.time_ns != 210 * MS], tmp_path)
    (mark,) = inferred(recs, SN)
    assert (mark["to"], mark["alternative"]) == ("CLOSED", ["TIME_WAIT"])
    # segments lost before the capture point (the client acknowledges the server's data the capture never saw): it
    # sits next to the receivers, the RST arrived: no mark
    recs = both_engines([x for x in segs if x.time_ns not in (int(4.1 * MS), 210 * MS)], tmp_path)
    assert path(recs, SN)[-1] == "CLOSED" and not inferred(recs, SN)


def test_an_rst_to_the_compact_time_wait_form_is_marked_too(tmp_path):
    """lossylink messy seed 9 connection 46 (before the faults): the same RST after the connection shrank to its
    compact TimeWait form (nothing held any more): rules.TIME_WAIT_FORM names the same reading."""
    segs = opened(resp=0) + [
        seg("s", 1, 101, A, 100, ms=4), seg("c", 101, 101, ms=4.1),
        seg("c", 101, 101, F | A, ms=300),          # the client closes first
        seg("s", 101, 102, F | A, ms=300.2),
        seg("c", 102, 102, ms=300.3),
        seg("c", 102, 102, ms=4000),                # a copy of the final ACK, after the hold: the server answers
        seg("s", 102, 0, R, ms=4000.1)]             # with an RST, lost after the capture point
    for compact in (True, False):
        recs = run(segs, Observer(compact_time_wait=compact))
        assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT", "CLOSED"]
        (mark,) = inferred(recs, CN)
        assert (mark["from"], mark["to"], mark["alternative"]) == ("TIME_WAIT", "CLOSED", ["TIME_WAIT"])
    recs = both_engines(segs, tmp_path)
    assert [m["alternative"] for m in inferred(recs, CN)] == [["TIME_WAIT"]]
    # the server's data never captured (the client acknowledges it): segments lost before the capture point, the
    # RST arrived: no mark, in the compact form too, and where the lane hands that form over (its replay makes it
    # again: the evidence is the observer's)
    recs = both_engines([x for x in segs if x.time_ns != 4 * MS], tmp_path)
    assert "acked_unseen_segment" in kinds(recs)
    assert path(recs, CN)[-1] == "CLOSED" and not inferred(recs, CN)


def _unread_close_rst(all_acked: bool) -> list[Segment]:
    """lossylink rst50 seed 2 connection 20: the server closes with the client's last data unread (RST);
    the RSTs are lost after the capture point while the client sends that data again and again, and its
    application closes meanwhile: its FIN waits behind the data (kernel: ESTABLISHED -> FIN_WAIT_1 ->
    CLOSED when an RST gets through). ``all_acked``: the capture showed the server acknowledging the data before:
    sent again all the same, that ACK never reached the client (lossylink messy seed 305 connection 1): the same."""
    return opened() + [
        seg("c", 101, 201, P | A, 651, ms=4),
        *([seg("s", 201, 752, ms=4.1)] if all_acked else []),
        seg("s", 201, 752, R | A, ms=4.3),         # close() with the data unread
        seg("c", 101, 201, P | A, 651, ms=210),    # the client never got it: sends its data again
        seg("s", 201, 0, R, ms=210.2),
        seg("c", 101, 201, P | A, 651, ms=420),
        seg("s", 201, 0, R, ms=420.2)]             # this one arrives


def test_rst_to_a_side_sending_data_again_names_fin_wait_1(tmp_path):
    for all_acked in (False, True):
        recs = both_engines(_unread_close_rst(all_acked=all_acked), tmp_path)
        assert path(recs, CN) == ["ESTABLISHED", "CLOSED"]
        (mark,) = inferred(recs, CN)
        assert (mark["from"], mark["to"]) == ("ESTABLISHED", "CLOSED")
        assert mark["alternative"] == ["FIN_WAIT_1", "CLOSED"]
        assert "rst_not_received" in kinds(recs)


def test_rst_to_a_side_sending_data_its_closed_peer_never_took_names_fin_wait_1(tmp_path):
    """lossylink rst50 seed 303 connection 34 (before the faults): the server's last data, sent after the client
    closed with data unread (its RST lost after the capture point), sent again and again: the client never took it,
    the server's application closed meanwhile (FIN_WAIT_1, its FIN behind that data) when an RST got through."""
    segs = opened() + [
        seg("c", 101, 201, R | A, ms=4),           # the client closes with the server's data unread
        seg("s", 201, 101, P | A, 10, ms=4.1),     # the server's last data: the client is closed
        seg("c", 101, 0, R, ms=4.2),
        seg("s", 201, 101, P | A, 10, ms=210),     # sent again: the RSTs never reached it
        seg("c", 101, 0, R, ms=210.2),
        seg("s", 201, 101, P | A, 10, ms=620),
        seg("c", 101, 0, R, ms=620.2)]             # this one arrives
    recs = both_engines(segs, tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "CLOSED"]
    (mark,) = inferred(recs, SN)
    assert (mark["from"], mark["to"], mark["alternative"]) == ("ESTABLISHED", "CLOSED", ["FIN_WAIT_1", "CLOSED"])


def test_rst_after_everything_was_acknowledged_is_not_marked(tmp_path):
    """(corpus zeek__retransmit-fast009.pcap: data sent again, all of it ACKed, an RST a minute later)"""
    segs = opened() + [
        seg("c", 101, 201, P | A, 651, ms=4),
        seg("c", 101, 201, P | A, 651, ms=210),    # sent again (its first copy lost after the capture point)
        seg("s", 201, 752, ms=210.1),              # all of it acknowledged
        seg("s", 201, 752, R | A, ms=60_000)]
    recs = both_engines(segs, tmp_path)
    assert path(recs, CN)[-1] == "CLOSED"
    assert not inferred(recs, CN)


def test_crossing_fin_sent_again_to_a_side_that_said_nothing_is_marked(tmp_path):
    """lossylink simul10 seed 1 connection 12 (after the faults): the FINs cross; the server's FIN is sent
    again before any ACK of it, and the client sent nothing after its own FIN. The first copy reached it
    (CLOSING, its ACK lost on the way: the kernel's path) or was lost (FIN_WAIT_2): marked either way."""
    recs = both_engines(opened() + [
        seg("c", 101, 201, F | A, ms=10),
        seg("s", 201, 101, F | A, ms=10.1),        # crosses it
        seg("s", 201, 102, F | A, ms=210),         # again, now ACKing the client's FIN
        seg("s", 201, 102, F | A, ms=830),
        seg("c", 102, 202, ms=830.1)], tmp_path)
    marks = inferred(recs, CN)
    assert marks and any("CLOSING" in r["alternative"] or r["to"] == "CLOSING" for r in marks)


def test_fin_reordered_behind_a_later_segment_of_its_sender_waits_for_the_receiver(tmp_path):
    """lossylink reorder seed 2 connection 19 (after the faults): the client's FIN reaches the server after
    a bare ACK the client sent after it; the server's FIN, captured later, does not cover the client's FIN:
    the server had closed before the client's FIN reached it (FIN_WAIT_1 -> CLOSING, as the kernel)."""
    recs = both_engines(opened() + [
        seg("c", 102, 201, ms=10.0),               # sent after the FIN, arrived first
        seg("c", 101, 201, F | A, ms=10.1),
        seg("c", 102, 201, ms=10.3),               # again (a window update), after the FIN
        seg("s", 201, 101, F | A, ms=14),          # the server's FIN: ack 101, it had not the client's FIN
        seg("s", 202, 102, ms=15),
        seg("c", 102, 202, ms=16)], tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]


def _on_port(segs: list[Segment], port: int, after_ms: float) -> list[Segment]:
    """The same segments for a client on ``port``, ``after_ms`` later (another connection of the capture)."""
    out = []
    for s in segs:
        s = s.with_(time_ns=s.time_ns + int(after_ms * MS))
        out.append(s.with_(sport=port) if s.sport == C[1] else s.with_(dport=port))
    return out


def _crossing_fin_lost() -> list[Segment]:
    """lossylink fin30 seed 3 connection 9 (before the faults): the FINs cross, the server's is lost after
    the capture point; its ACK of the client's FIN arrives, then its FIN again (kernel: the client
    FIN_WAIT_1 -> FIN_WAIT_2 -> TIME_WAIT)."""
    return opened() + [
        seg("c", 101, 201, F | A, ms=10),
        seg("s", 201, 101, F | A, ms=10.02),       # crosses it; lost after the capture point
        seg("s", 202, 102, ms=10.06),              # the server ACKs the client's FIN
        seg("s", 201, 102, F | A, ms=216),         # its FIN again (RTO)
        seg("c", 102, 202, ms=216.1)]


def test_a_fin_sent_again_after_its_captured_ack_shows_losses_after_the_capture_point(tmp_path):
    """Earlier in the capture, a client sends its FIN again although the server's FIN,ACK acknowledging it
    is in the capture: that FIN,ACK never arrived, segments get lost after the capture point here. So in
    the crossing close that follows, the server's first FIN is taken as lost (FIN_WAIT_2, the kernel's
    path), and CLOSING is named as the other reading."""
    earlier = opened() + [
        seg("c", 101, 201, F | A, ms=10),
        seg("s", 201, 102, F | A, ms=10.1),        # lost after the capture point
        seg("c", 101, 201, F | A, ms=210),         # the client's FIN again: it never got that FIN,ACK
        seg("s", 202, 102, ms=210.1),
        seg("s", 201, 102, F | A, ms=410),
        seg("c", 102, 202, ms=410.1)]
    later = _on_port(_crossing_fin_lost(), 20002, after_ms=1000)
    recs = both_engines(earlier + later, tmp_path)
    client2 = "198.51.100.1:20002"
    assert path(recs, client2) == ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]
    assert any("CLOSING" in str(r["inferred"]) for r in inferred(recs, client2))
    assert "fin_lost" in kinds(recs)
    # with nothing to show where segments get lost, the first copy is taken as arrived (CLOSING), marked
    alone = both_engines(_crossing_fin_lost(), tmp_path)
    assert path(alone, CN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    assert any("FIN_WAIT_2" in str(r["inferred"]) for r in inferred(alone, CN))


def _answer_an_rto_later(rtt_ms: float) -> list[Segment]:
    """lossylink simul10 seed 10 connection 0 (after the faults): both close at once; the client's FIN and its
    ACK of the server's FIN are lost before the capture point; the server's FIN is the client's first news,
    and the client's answer is its FIN sent again, an RTO (204 ms) later, ACKing the server's (kernel:
    FIN_WAIT_1 -> CLOSING -> TIME_WAIT). ``rtt_ms``: the handshake's round trip."""
    r = rtt_ms
    return [seg("c", 0, 0, Flags.SYN), seg("s", 0, 1, Flags.SYN | A, ms=r / 2), seg("c", 1, 1, ms=r),
            seg("c", 1, 1, P | A, 100, ms=r + 1), seg("s", 1, 101, P | A, 200, ms=r + 2),
            seg("c", 101, 201, ms=r + 3),
            seg("s", 201, 101, F | A, ms=r + 10),
            seg("c", 101, 202, F | A, ms=r + 10 + 204),     # its FIN (sent again), the first the capture shows
            seg("s", 202, 102, ms=r + 10 + 204.1)]


def test_a_fin_answered_only_an_rto_later_names_the_fin_sent_again(tmp_path):
    recs = both_engines(_answer_an_rto_later(rtt_ms=0.2), tmp_path)
    assert path(recs, CN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    (mark,) = inferred(recs, CN)
    assert (mark["to"], mark["alternative"]) == ("CLOSE_WAIT", ["FIN_WAIT_1", "CLOSING"])
    assert mark["inferred"].startswith("or FIN_WAIT_1 → CLOSING if its FIN in frame 8 was one sent again")


def test_a_fin_answered_a_long_round_trip_later_is_not_marked(tmp_path):
    """(corpus zeek__truncated-header.pcap: the client's FIN,ACK 211 ms after the server's FIN, its round trip
    199 ms: a prompt answer from far away)"""
    recs = both_engines(_answer_an_rto_later(rtt_ms=190), tmp_path)
    assert path(recs, CN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert not inferred(recs, CN)


def test_crossing_ack_behind_another_segment_of_its_sender_is_still_marked(tmp_path):
    """lossylink reorder seed 16 connection 32 (before the faults): the FINs cross; after its FIN the server
    sends a bare ACK that does not cover the client's FIN, then its ACK of the client's FIN. The segment that
    decides the client's path (FIN first: CLOSING; that ACK first: FIN_WAIT_2, the kernel's path there) is
    the second one waiting behind the server's FIN, not the first: the reading is marked all the same."""
    recs = both_engines(opened() + [
        seg("c", 101, 201, F | A, ms=10),
        seg("s", 201, 101, F | A, ms=10.02),       # crosses it
        seg("s", 202, 101, ms=10.04),              # after its FIN: it has not the client's FIN yet
        seg("s", 202, 102, ms=10.3),               # the server ACKs the client's FIN
        seg("c", 102, 202, ms=10.35)], tmp_path)   # the client's answer to the server's FIN
    assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    (mark,) = inferred(recs, CN)
    assert mark["to"] == "CLOSING" and mark["alternative"] == ["FIN_WAIT_2"]


def test_a_syn_sent_again_does_not_stretch_the_round_trip(tmp_path):
    """lossylink loss12 seed 5 connection 1 (after the faults): the server's SYN,ACK to the first SYN is lost
    and the client sends its SYN again a second later. Counted from the first SYN the handshake's round trip
    would be a second and the FIN answered 204 ms later would look prompt; counted from the SYN the SYN,ACK
    answers (the latest: Karn's rule) it is 0.2 ms, and the answer names the FIN sent again (kernel:
    FIN_WAIT_1 -> CLOSING -> TIME_WAIT)."""
    segs = [s.with_(time_ns=s.time_ns + 1000 * MS) for s in _answer_an_rto_later(rtt_ms=0.2)]
    recs = both_engines([seg("c", 0, 0, Flags.SYN)] + segs, tmp_path)
    assert path(recs, CN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    (mark,) = inferred(recs, CN)
    assert (mark["to"], mark["alternative"]) == ("CLOSE_WAIT", ["FIN_WAIT_1", "CLOSING"])


def _fin_again_answered_at_once(answer_ms: float) -> list[Segment]:
    """lossylink loss12 seed 3 connection 7 (after the faults): both close at once; the server's FIN and its
    ACK of the client's FIN are lost before the capture point. The client's FIN is sent again an RTO
    (212 ms) later, and the server's FIN sent again (its timer armed with the client's) comes ``answer_ms``
    after that copy, ACKing it (kernel: FIN_WAIT_1 -> CLOSING -> TIME_WAIT)."""
    return opened() + [
        seg("c", 101, 201, F | A, ms=10),
        seg("c", 101, 201, F | A, ms=222),                  # the client's FIN sent again
        seg("s", 201, 102, F | A, ms=222 + answer_ms),      # the server's first FIN the capture shows
        seg("c", 102, 202, ms=222.2 + answer_ms)]


def test_a_fin_answered_within_a_round_trip_of_its_copy_counts_from_the_first_copy(tmp_path):
    """15 us after the copy sent again, well within the handshake's round trip (0.2 ms): no answer to that
    copy, so the server had the first, 212 ms earlier, and answered it only an RTO later."""
    recs = both_engines(_fin_again_answered_at_once(answer_ms=0.015), tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    (mark,) = inferred(recs, SN)
    assert (mark["to"], mark["alternative"]) == ("CLOSE_WAIT", ["FIN_WAIT_1", "CLOSING"])
    assert not inferred(recs, CN)


def test_a_fin_answered_a_round_trip_after_its_copy_is_not_marked(tmp_path):
    """2 ms after the copy sent again (ten round trips): an answer to that copy, the first lost after the
    capture point (a capture next to the client): a plain passive close."""
    recs = both_engines(_fin_again_answered_at_once(answer_ms=2), tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert not inferred(recs, SN)


def test_a_fin_answered_right_after_its_copy_where_losses_happen_after_the_capture_point(tmp_path):
    """Earlier in the capture a FIN,ACK in the capture never arrived (its FIN was sent again): segments get lost
    after this capture point, so the first copy of the client's FIN may be the one lost and the server's FIN an
    answer to the copy sent again: nothing to count from the first copy, no mark."""
    earlier = opened() + [
        seg("c", 101, 201, F | A, ms=10),
        seg("s", 201, 102, F | A, ms=10.1),        # lost after the capture point
        seg("c", 101, 201, F | A, ms=210),         # the client's FIN again: it never got that FIN,ACK
        seg("s", 202, 102, ms=210.1),
        seg("s", 201, 102, F | A, ms=410),
        seg("c", 102, 202, ms=410.1)]
    later = _on_port(_fin_again_answered_at_once(answer_ms=0.015), 20002, after_ms=1000)
    recs = [r for r in both_engines(earlier + later, tmp_path) if r.get("peer") == "198.51.100.1:20002"]
    assert path(recs, SN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert not inferred(recs, SN)
    # the same close alone (nothing shows where segments get lost) is marked
    assert inferred(both_engines(_fin_again_answered_at_once(answer_ms=0.015), tmp_path), SN)


# which of two crossing segments reached the receiver first: the capture's round trips (rawfin.core.delays) -------

def opened_2ms() -> list[Segment]:
    """opened(), where the capture point sees a round trip of 2 ms to each side (rawfin.core.delays)."""
    return [seg("c", 0, 0, Flags.SYN), seg("s", 0, 1, Flags.SYN | A, ms=2), seg("c", 1, 1, ms=4),
            seg("c", 1, 1, P | A, 100, ms=4.1), seg("s", 1, 101, P | A, 200, ms=6), seg("c", 101, 201, ms=8)]


def _data_reordered_after_the_capture_point(reordered: bool) -> list[Segment]:
    """Two data segments of the client; the server's duplicate ACK shows the second reached it first, and its
    next ACK covers both with nothing sent again: the link reorders after the capture point. Or (not
    ``reordered``) it ACKs them in order."""
    if reordered:
        acks = [seg("s", 201, 101, ms=12), seg("s", 201, 301, ms=13)]
    else:
        acks = [seg("s", 201, 201, ms=12), seg("s", 201, 301, ms=13)]
    return [seg("c", 101, 201, P | A, 100, ms=10), seg("c", 201, 201, P | A, 100, ms=10.1), *acks]


def _crossing_fins(answer_ms: float) -> list[Segment]:
    """lossylink reorder seed 1 connection 34 (before the faults): the FINs cross, the server's ACK of the
    client's FIN follows its own FIN, and the client answers the server's FIN ``answer_ms`` after that ACK was
    captured (the kernel: FIN_WAIT_2 when the ACK overtook the FIN on the way)."""
    return [seg("c", 301, 201, F | A, ms=20),
            seg("s", 201, 301, F | A, ms=20.02),      # crosses it
            seg("s", 202, 302, ms=21),                # the server ACKs the client's FIN
            seg("c", 302, 202, ms=21 + answer_ms)]    # the client's answer to the server's FIN


def test_crossing_order_from_the_round_trips_when_the_link_reorders(tmp_path):
    """The link reorders after the capture point, and the client answered the server's FIN 5 ms after the
    server's ACK of its FIN was captured, where every round trip to the client took 2 ms: that ACK more likely
    reached it first (FIN_WAIT_2), the FIN first (CLOSING) named as the other reading."""
    recs = both_engines(opened_2ms() + _data_reordered_after_the_capture_point(True) + _crossing_fins(5), tmp_path)
    assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]
    (mark,) = inferred(recs, CN)
    assert (mark["from"], mark["to"]) == ("FIN_WAIT_1", "FIN_WAIT_2") and mark["alternative"] == ["CLOSING"]
    assert mark["inferred"].startswith("or CLOSING if the FIN in frame ")
    assert path(recs, SN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]


def test_crossing_order_stays_the_sending_order_within_a_round_trip(tmp_path):
    """The same link, but the client answered 1 ms after that ACK was captured, less than every round trip to
    it: the FIN (sent first) more likely arrived first: CLOSING, FIN_WAIT_2 named."""
    recs = both_engines(opened_2ms() + _data_reordered_after_the_capture_point(True) + _crossing_fins(1), tmp_path)
    assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    (mark,) = inferred(recs, CN)
    assert mark["alternative"] == ["FIN_WAIT_2"]


def test_crossing_order_stays_the_sending_order_on_a_link_not_seen_reordering(tmp_path):
    """The answer 5 ms after the ACK, but nothing in the capture shows the link reordering (a link that keeps
    the order never lets the ACK overtake the FIN sent before it): CLOSING, FIN_WAIT_2 named."""
    recs = both_engines(opened_2ms() + _data_reordered_after_the_capture_point(False) + _crossing_fins(5), tmp_path)
    assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    (mark,) = inferred(recs, CN)
    assert mark["alternative"] == ["FIN_WAIT_2"]


def test_crossing_order_not_read_from_times_when_segments_go_missing_before_the_capture_point(tmp_path):
    """Reordering shown, the answer 5 ms after the ACK, but the capture also misses a segment of the client's
    (lost, or reordered, before the capture point): it may sit next to the receivers, where what it shows is the
    order segments arrived in. The FIN first (as captured): CLOSING, FIN_WAIT_2 named."""
    segs = opened_2ms() + _data_reordered_after_the_capture_point(True) + [
        seg("c", 401, 201, P | A, 100, ms=15),        # 301..401 never captured
        seg("s", 201, 501, ms=16)] + [
        seg("c", 501, 201, F | A, ms=20), seg("s", 201, 501, F | A, ms=20.02), seg("s", 202, 502, ms=21),
        seg("c", 502, 202, ms=26)]
    recs = both_engines(segs, tmp_path)
    assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    assert [m["alternative"] for m in inferred(recs, CN)] == [["FIN_WAIT_2"]]


def _slow_handshake(syn_ack_ms: float, ack_ms: float) -> list[Segment]:
    """A handshake whose halves the capture point sees as syn_ack_ms (to the server's side and back) and
    ack_ms - syn_ack_ms (to the client's), a request and a response (client's next seq 101, server's 201)."""
    return [seg("c", 0, 0, Flags.SYN), seg("s", 0, 1, Flags.SYN | A, ms=syn_ack_ms), seg("c", 1, 1, ms=ack_ms),
            seg("c", 1, 1, P | A, 100, ms=ack_ms + 0.1), seg("s", 1, 101, P | A, 200, ms=ack_ms + 8),
            seg("c", 101, 201, ms=ack_ms + 14)]


def test_a_fin_copied_by_the_network_is_not_a_fin_sent_again(tmp_path):
    """lossylink messy seed 305 connection 18 (after the faults): the server's FIN, duplicated on the way 6 ms after
    the first (round trip 12 ms), crosses the client's FIN. Read as a FIN sent again, the first copy was taken as
    lost and the client as the passive closer; a copy that soon says nothing (kernel: the client FIN_WAIT_1 ->
    CLOSING -> TIME_WAIT)."""
    segs = _slow_handshake(6, 12) + [
        seg("s", 201, 101, F | A, ms=100),
        seg("c", 101, 1, ms=101),                  # an old ACK of the client's, held back by the link
        seg("s", 202, 101, ms=102),                # the server's, behind its FIN
        seg("s", 201, 101, F | A, ms=106),         # the link's copy of the server's FIN
        seg("c", 101, 201, F | A, ms=109),         # the client's FIN: sent before the server's reached it
        seg("c", 102, 202, ms=112),
        seg("s", 202, 102, ms=120)]
    recs = both_engines(segs, tmp_path)
    assert path(recs, CN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    assert path(recs, SN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    assert "fin_lost" not in kinds(recs)


def test_a_fin_answered_an_rto_later_is_late_from_the_sides_own_round_trip(tmp_path):
    """lossylink messy seed 202 connection 23, seed 305 connection 30 (after the faults): the client's FIN is lost
    before the capture point, its ACK of the server's FIN too; the first thing the capture shows of it after the
    server's FIN is an old ACK the link held back, then its FIN sent again 220 ms after the server's FIN reached it.
    The round trip is 32 ms, the client's side of it 15 ms: late counts from the client's side (the FIN's way to
    it and the answer's way back), crossed or not: marked with FIN_WAIT_1 -> CLOSING."""
    segs = _slow_handshake(17, 32) + [
        seg("s", 201, 101, F | A, ms=100),
        seg("c", 101, 1, ms=103),                  # an old ACK, held back by the link
        seg("c", 101, 202, F | A, ms=320),         # its FIN, sent again
        seg("s", 202, 102, ms=330)]
    recs = both_engines(segs, tmp_path)
    assert path(recs, CN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    (mark,) = inferred(recs, CN)
    assert mark["alternative"] == ["FIN_WAIT_1", "CLOSING"]
    # answered 210 ms after: within the delayed ACK's time and the client's round trip: not marked
    segs[-2:] = [seg("c", 101, 202, F | A, ms=310), seg("s", 202, 102, ms=320)]
    assert not inferred(both_engines(segs, tmp_path), CN)


def test_an_old_copy_of_the_syn_after_an_abort_is_no_new_connection(tmp_path):
    """lossylink messy seed 202 connection 4 (after the faults): the server aborts; a copy of the client's SYN the
    link kept reaches it after that, its listener answers with a SYN,ACK of a new ISN, the client (reset by then)
    answers that with an RST. The kernel's socket went ESTABLISHED -> CLOSED and no other: a request socket is no
    connection state. Read as a new SYN_RECEIVED -> ESTABLISHED before."""
    segs = opened() + [
        seg("s", 201, 101, R | A, ms=10),          # the server aborts
        seg("c", 0, 0, Flags.SYN, ms=12),          # the link's old copy of the SYN
        seg("c", 101, 201, ms=13),
        seg("s", 90000, 1, Flags.SYN | A, ms=14),  # the listener's answer to the copy
        seg("c", 1, 0, R, ms=15)]
    recs = both_engines(segs, tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "CLOSED"]
    assert path(recs, CN) == ["ESTABLISHED", "CLOSED"]
    assert "old_syn" in kinds(recs)
    assert sum(r["type"] == "connection" for r in recs) == 1


def _fins_crossing_answered(answer_ip_id: int | None) -> list[Segment]:
    """lossylink reorder seed 301 connection 26 (before the faults): both close at once; the client's ACK of the
    server's FIN, sent after its own FIN, overtakes that FIN after the capture point (kernel: the server
    FIN_WAIT_1 -> FIN_WAIT_2 -> TIME_WAIT). The server, an orphan, went to a timewait socket with that ACK, and the
    timewait socket answered the client's FIN: its IPv4 ID 0, where the server's own segments counted."""
    segs = opened() + [
        seg("s", 201, 101, F | A, ms=10),
        seg("c", 101, 201, F | A, ms=10.01),       # crossing the server's
        seg("c", 102, 202, ms=15),                 # the client's ACK of the server's FIN
        seg("s", 202, 102, ms=30)]                 # the server's answer to the client's FIN
    segs = [x.with_(ip_id=1000 + i) for i, x in enumerate(segs)]
    segs[-1] = segs[-1].with_(ip_id=answer_ip_id)
    return segs


def test_an_answer_from_a_timewait_socket_shows_the_ack_came_first(tmp_path):
    recs = both_engines(_fins_crossing_answered(answer_ip_id=0), tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]
    (mark,) = inferred(recs, SN)
    assert mark["alternative"] == ["CLOSING"]
    # its full socket's answer (an ID of its count): nothing shows which came first, the order they were sent in
    recs = both_engines(_fins_crossing_answered(answer_ip_id=1034), tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    (mark,) = inferred(recs, SN)
    assert mark["alternative"] == ["FIN_WAIT_2"]


def test_a_copy_of_the_last_fin_after_the_final_ack_does_not_undo_it(tmp_path):
    """lossylink messy seed 316 connection 41 (after the faults): the client's FIN, the server's final ACK, then a
    copy of that FIN the link made, 10 ms after it (round trip 12 ms): not a FIN sent again for want of the ACK
    (kernel: the client LAST_ACK -> CLOSED). One sent again an RTO later still shows the ACK lost."""
    segs = _slow_handshake(6, 12) + [
        seg("s", 201, 101, F | A, ms=100),
        seg("c", 101, 202, ms=101),
        seg("c", 101, 202, F | A, ms=140),
        seg("s", 202, 102, ms=147),                # the final ACK
        seg("c", 101, 202, F | A, ms=150)]         # the link's copy of the client's FIN
    recs = both_engines(segs, tmp_path)
    assert path(recs, CN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert "final_ack_lost" not in kinds(recs)
    segs[-1] = seg("c", 101, 202, F | A, ms=360)   # sent again
    recs = both_engines(segs, tmp_path)
    assert path(recs, CN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK"]
    assert "final_ack_lost" in kinds(recs)


def test_an_answer_from_a_timewait_socket_is_not_read_where_segments_get_lost_before_the_capture_point(tmp_path):
    """Segments lost (or overtaken) before the capture point: it may sit next to the receivers, where a timewait
    socket's later reply can arrive before the answer its full socket sent first (lossylink reorder seeds 305, 309,
    after the faults). The order they were sent in, as without the ID."""
    segs = opened() + [
        seg("c", 101, 301, ms=5),                  # acknowledges 100 bytes of the server's the capture never saw
        seg("s", 301, 101, F | A, ms=10),
        seg("c", 101, 301, F | A, ms=10.01),
        seg("c", 102, 302, ms=15),
        seg("s", 302, 102, ms=30)]
    segs = [x.with_(ip_id=1000 + i) for i, x in enumerate(segs)]
    segs[-1] = segs[-1].with_(ip_id=0)
    recs = both_engines(segs, tmp_path)
    assert "acked_unseen_segment" in kinds(recs)
    assert path(recs, SN) == ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]


def _immediate_ack_lost(fin_ip_id_step: int = 2, lost_before: bool = True) -> list[Segment]:
    """lossylink simul10 seed 334 connection 25 (after the faults): the server's last data sent again (its first copy
    lost before the capture point); both applications close at once, the server's FIN waiting behind that data; the
    client's FIN acknowledges it; the server ACKs that FIN at once (Linux in FIN_WAIT_1) and its FIN follows, but
    that ACK is lost before the capture point: the FIN comes with an IPv4 ID two past the server's last (kernel:
    ESTABLISHED -> FIN_WAIT_1 -> CLOSING -> TIME_WAIT). ``lost_before``: the client's request reaches the capture
    point in the wrong order (its first half held up or lost before it)."""
    request = ([seg("c", 51, 1, P | A, 50, ms=1), seg("c", 1, 1, A, 50, ms=1.5)] if lost_before
               else [seg("c", 1, 1, P | A, 100, ms=1)])
    segs = [seg("c", 0, 0, Flags.SYN), seg("s", 0, 1, Flags.SYN | A, ms=0.1), seg("c", 1, 1, ms=0.2), *request,
            seg("s", 1, 101, P | A, 200, ms=2), seg("c", 101, 201, ms=3)]
    segs = [x.with_(ip_id=(1000 if (x.src, x.sport) == C else 2000) + i) for i, x in enumerate(segs)]
    return segs + [seg("s", 201, 101, P | A, 1308, ms=413).with_(ip_id=2011),   # sent again (2010 lost)
                   seg("c", 101, 1509, F | A, ms=413.3).with_(ip_id=1010),
                   seg("s", 1509, 102, F | A, ms=413.35).with_(ip_id=2011 + fin_ip_id_step),
                   seg("c", 102, 1510, ms=413.5).with_(ip_id=1011)]


def test_a_fin_right_after_a_segment_the_capture_never_saw_is_marked(tmp_path):
    recs = both_engines(_immediate_ack_lost(), tmp_path)
    assert "previous_segment_not_captured" in kinds(recs)
    assert path(recs, SN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]    # the likelier reading
    (mark,) = inferred(recs, SN)
    assert (mark["to"], mark["alternative"]) == ("CLOSE_WAIT", ["FIN_WAIT_1", "CLOSING"])   # the kernel's path
    assert "IPv4 ID shows missing" in mark["inferred"]
    assert not inferred(recs, CN)


def test_a_fin_after_several_segments_the_capture_never_saw_is_marked(tmp_path):
    """Three IDs skipped: its FIN may be one sent again, the first (and its ACK of the client's FIN) lost before the
    capture point (lossylink simul10 seed 347 connection 48, after the faults: kernel FIN_WAIT_1 -> CLOSING)."""
    recs = both_engines(_immediate_ack_lost(fin_ip_id_step=4), tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    (mark,) = inferred(recs, SN)
    assert (mark["to"], mark["alternative"]) == ("CLOSE_WAIT", ["FIN_WAIT_1", "CLOSING"])
    assert "was one sent again (its IPv4 ID shows segments of its missing)" in mark["inferred"]
    # an ID far ahead (a host numbering all its packets from one counter): not read
    recs = both_engines(_immediate_ack_lost(fin_ip_id_step=40), tmp_path)
    assert not inferred(recs, SN)


def test_a_fin_right_after_the_last_segment_or_without_losses_shown_is_not_marked(tmp_path):
    """Its FIN the next ID: nothing missing. One ID skipped where the capture shows no losses before it: a host
    that numbers all its packets from one counter (Windows) skips IDs for packets of other flows (corpus
    tcpdump__pptp.pcap)."""
    for segs in (_immediate_ack_lost(fin_ip_id_step=1), _immediate_ack_lost(lost_before=False)):
        recs = both_engines(segs, tmp_path)
        assert path(recs, SN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
        assert not inferred(recs, SN)


def _crossed_fin_answered_at_once(fin_after_ack_ms: float) -> list[Segment]:
    """lossylink messy seed 325 connection 33 (before the faults): the server's duplicate ACK crosses the client's
    FIN; the server ACKs that FIN at once and its own FIN follows 24 us later, as Linux sends them in FIN_WAIT_1
    (kernel: ESTABLISHED -> FIN_WAIT_1 -> CLOSING -> TIME_WAIT)."""
    return opened() + [
        seg("c", 101, 201, F | A, ms=10),
        seg("s", 201, 101, ms=10.5),               # sent before the client's FIN reached it: the two crossed
        seg("s", 201, 102, ms=11),                 # its ACK of that FIN, at once
        seg("s", 201, 102, F | A, ms=11 + fin_after_ack_ms),
        seg("c", 102, 202, ms=11.2 + fin_after_ack_ms)]


def test_a_fin_right_behind_an_immediate_ack_of_a_crossed_fin_is_marked(tmp_path):
    recs = both_engines(_crossed_fin_answered_at_once(0.024), tmp_path)
    assert path(recs, SN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]    # as before, its frames too
    (mark,) = inferred(recs, SN)
    assert (mark["from"], mark["to"], mark["frame"]) == ("CLOSE_WAIT", "LAST_ACK", 10)
    assert mark["alternative"] == ["FIN_WAIT_1", "CLOSING"]                         # the kernel's path
    recs = both_engines(_crossed_fin_answered_at_once(5), tmp_path)                 # an application woken by the FIN
    assert path(recs, SN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert not inferred(recs, SN)


def test_a_loss_probe_of_the_last_fin_after_the_final_ack_does_not_undo_it(tmp_path):
    """lossylink messy seed 334 connection 41 (before the faults): the client's FIN sent again 30 ms after the first
    (a loss probe; round trip 12 ms), 23 ms after the server's final ACK: the probe's timer fired while that ACK was
    on its way (kernel: the client LAST_ACK -> CLOSED). The ACK stays held (nothing after shows it lost); a FIN
    sent again an RTO later still shows it lost."""
    segs = _slow_handshake(6, 12) + [
        seg("s", 201, 101, F | A, ms=100),
        seg("c", 101, 202, ms=101),
        seg("c", 101, 202, F | A, ms=140),
        seg("s", 202, 102, ms=147),                # the final ACK
        seg("c", 101, 202, F | A, ms=170)]         # the loss probe
    recs = both_engines(segs, tmp_path)
    assert path(recs, CN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert "final_ack_lost" not in kinds(recs)
    assert [r["frame"] for r in recs if r["type"] == "transition" and r["endpoint"] == CN][-1] == len(segs) - 1
    segs[-1] = seg("c", 101, 202, F | A, ms=345)   # an RTO after the first
    recs = both_engines(segs, tmp_path)
    assert path(recs, CN) == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK"]
    assert "final_ack_lost" in kinds(recs)


def test_rst_to_a_passive_side_sending_data_again_names_last_ack(tmp_path):
    """lossylink loss20 seed 354 connection 29: the server closes first; the client, its FIN taken, sends data the
    server never acknowledges, again and again, its application closing meanwhile (its FIN waiting behind that
    data); the server's RST answers that data (kernel: the client CLOSE_WAIT -> LAST_ACK -> CLOSED)."""
    segs = opened() + [
        seg("s", 201, 101, F | A, ms=10),          # the server closes first
        seg("c", 101, 202, ms=10.1),
        seg("c", 101, 202, P | A, 437, ms=20),     # the client's data, not acknowledged
        seg("c", 101, 202, P | A, 437, ms=230),    # sent again
        seg("s", 202, 0, R, ms=230.2)]             # the server's answer: an RST
    recs = both_engines(segs, tmp_path)
    assert path(recs, CN) == ["ESTABLISHED", "CLOSE_WAIT", "CLOSED"]
    (mark,) = inferred(recs, CN)
    assert (mark["from"], mark["to"], mark["alternative"]) == ("CLOSE_WAIT", "CLOSED", ["LAST_ACK", "CLOSED"])

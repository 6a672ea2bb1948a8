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

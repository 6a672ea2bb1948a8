"""rawfin.sim.emulator: the link's faults, the virtual clock, hosts and the pair."""

from __future__ import annotations

import errno

import pytest

from rawfin.commands.scenario import records as scenario_records
from rawfin.core import seq as sq
from rawfin.sim.emulator import (EPOCH_NS, MS, SEC, AddressInUse, EmulatorError, Fault, Pair)
from rawfin.core.errors import StateError
from rawfin.core.segment import Flags
from rawfin.core.states import Input, State


def four_way(pair: Pair, *, server_first: bool = False, data: bool = True) -> Pair:
    """Handshake, a request and a response, then the close (client first unless told otherwise)."""
    pair.server.listen()
    pair.client.connect()
    pair.run_for(10 * MS)
    if data:
        pair.client.send(100)
        pair.run_for(10 * MS)
        pair.server.send(200)
        pair.run_for(10 * MS)
    first, second = (pair.server, pair.client) if server_first else (pair.client, pair.server)
    first.close()
    pair.run_for(10 * MS)
    second.close()
    pair.run()
    return pair


def flags_of(pair: Pair) -> list[str]:
    return [s.seg.describe().split()[0] for s in pair.sent]


# -- fault rules ----------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("final-ack", dict(action="drop", kind="final-ack")),
    ("server:FIN#2", dict(action="drop", sender="server", flags=Flags.FIN, nth=2)),
    ("9", dict(action="drop", number=9)),
    ("p=0.1", dict(action="drop", probability=0.1)),
    ("client:p=0.25", dict(action="drop", sender="client", probability=0.25)),
    ("delay server:FIN@0.5", dict(action="delay", sender="server", flags=Flags.FIN, by_ns=500 * MS)),
    ("duplicate client:data", dict(action="duplicate", sender="client", kind="data")),
    ("reorder client:data#*", dict(action="reorder", sender="client", kind="data", nth=0)),
    ("SYN,ACK", dict(flags=Flags.SYN | Flags.ACK)),
    ("server:FA", dict(sender="server", flags=Flags.FIN | Flags.ACK)),
])
def test_parse_rules(text, want):
    f = Fault.parse(text)
    for k, v in want.items():
        assert getattr(f, k) == v, (text, k)
    assert f.text.endswith(text.split(None, 1)[-1])


@pytest.mark.parametrize("bad", ["", "client:", "p=abc", "FIN#0", "FIN#x", "XYZ", "0", "delay FIN@soon",
                                 "p=1.5", "bogus FIN"])
def test_bad_rules_raise_the_projects_error(bad):
    with pytest.raises(EmulatorError):
        Fault.parse(bad)


def test_drop_by_number():
    pair = four_way(Pair(faults=["drop 3"]))
    assert [s.number for s in pair.sent if s.dropped] == [3]
    # the handshake's ACK was lost, but the server learns it from the next segment that carries it
    assert pair.server.state is State.CLOSED and pair.client.state is State.CLOSED


def test_drop_by_direction_and_flags_first_only():
    pair = four_way(Pair(faults=["drop server:FIN"]))
    fins = [s for s in pair.sent if s.sender == "server" and s.seg.fin]
    assert [s.dropped for s in fins] == [True, False]           # the first only; the retransmission passes
    # the rto: the 2 ms RTT the handshake measured plus Linux's 200 ms floor for the variance term
    assert fins[1].retransmission and fins[1].time_ns - fins[0].time_ns == 202 * MS
    assert pair.retransmissions() == [fins[1].number]


def test_drop_nth_matching():
    pair = four_way(Pair(faults=["drop client:pure-ack#2"]))
    acks = [s for s in pair.sent if s.sender == "client" and s.seg.flags == Flags.ACK]
    assert [s.dropped for s in acks][:3] == [False, True, False]


def test_final_ack_is_the_fourth_segment_of_the_close():
    pair = four_way(Pair(faults=["drop final-ack"]))
    dropped = [s for s in pair.sent if s.dropped]
    assert len(dropped) == 1
    d = dropped[0]
    assert d.sender == "client" and d.seg.flags == Flags.ACK
    # it ACKs the server's FIN
    server_fin = next(s for s in pair.sent if s.sender == "server" and s.seg.fin)
    assert d.seg.ack == sq.add(server_fin.seg.fin_seq, 1)


def scripted(*faults, seed=0):
    """normal-close through the scenario runner, whose calls wait for the handshake as sockets do."""
    from rawfin.sim import scenarios
    return scenarios.run(scenarios.builtin("normal-close"), faults=faults, seed=seed)


def test_probability_is_deterministic_for_a_seed():
    def run(seed):
        pair = scripted("drop p=0.3", seed=seed)
        return [s.number for s in pair.sent if s.dropped], pair.timeline()

    assert run(7) == run(7)
    outcomes = {tuple(run(seed)[0]) for seed in range(6)}
    assert len(outcomes) > 1           # the seed matters
    none = scripted("drop p=0")
    assert not any(s.dropped for s in none.sent)


def test_probability_one_drops_every_matching_segment():
    pair = scripted("drop server:p=1")
    server_sent = [s for s in pair.sent if s.sender == "server"]
    assert len(server_sent) > 1 and all(s.dropped for s in server_sent)
    assert all(not s.dropped for s in pair.sent if s.sender == "client")
    assert pair.client.state is State.CLOSED          # the client gave up on its SYN


def test_delay_moves_the_arrival():
    pair = four_way(Pair(faults=["delay server:FIN@0.15"]))       # less than the rto (202 ms)
    fin = next(s for s in pair.sent if s.sender == "server" and s.seg.fin)
    assert fin.delay_ns == 150 * MS
    tw = next(t for t in pair.transitions("client") if t.to is State.TIME_WAIT)
    assert tw.time_ns == fin.time_ns + 150 * MS + 1 * MS


def test_duplicate_arrives_twice_and_is_seen_twice_by_the_receiver_only():
    pair = four_way(Pair(faults=["duplicate client:data"]))
    data = next(s for s in pair.sent if s.seg.data_len and s.sender == "client")
    assert data.duplicated
    at_server = [ref for _, _, ref in pair.capture("server") if ref[1] == data.number]
    at_sender = [ref for _, _, ref in pair.capture("sender") if ref[1] == data.number]
    assert len(at_server) == 2 and len(at_sender) == 1
    # the copy is old news to the server: ACKed again, no state change
    assert pair.server.state is State.CLOSED


def test_reorder_lets_the_next_segment_overtake():
    pair = Pair(faults=["reorder client:data#1"])
    pair.server.listen()
    pair.client.connect()
    pair.run_for(10 * MS)
    pair.client.send(100)
    pair.client.send(100)
    pair.run_for(10 * MS)
    first, second = [s for s in pair.sent if s.seg.data_len]
    assert first.reordered and not second.reordered
    order = [ref[1] for _, _, ref in pair.capture("server") if ref[0] == "arrive"]
    assert order.index(second.number) < order.index(first.number)
    # both bytes runs are acknowledged in the end
    assert pair.server.current.rcv_nxt == sq.add(first.seg.seq, 200)


def test_reorder_without_a_successor_is_released_after_the_hold():
    pair = Pair(faults=["reorder client:data@0.2"])
    pair.server.listen()
    pair.client.connect()
    pair.run_for(10 * MS)
    pair.client.send(100)
    t0 = pair.now
    pair.run_for(1 * SEC)
    arrival = next(e for e in pair.log if type(e).__name__ == "Arrival" and e.number == 4)
    assert arrival.time_ns == t0 + 1 * MS + 200 * MS


# -- the virtual clock ------------------------------------------------------------------

def test_clock_starts_at_the_epoch_and_jumps():
    pair = Pair()
    assert pair.now == EPOCH_NS == 1_700_000_000 * SEC
    pair.run_for(5 * SEC)              # nothing to do: the clock still ends where it was told
    assert pair.elapsed_ns == 5 * SEC
    with pytest.raises(EmulatorError):
        pair.at(pair.now - 1, lambda: None)


def test_lost_final_ack_timeline_exact_virtual_times():
    pair = four_way(Pair(faults=["drop final-ack"]))
    ms = lambda x: round(x * MS)  # noqa: E731
    assert pair.timeline() == [
        (0, "server", "CLOSED", "LISTEN"),
        (0, "client", "CLOSED", "SYN_SENT"),
        (ms(1), "server", "LISTEN", "SYN_RECEIVED"),
        (ms(2), "client", "SYN_SENT", "ESTABLISHED"),
        (ms(3), "server", "SYN_RECEIVED", "ESTABLISHED"),
        (ms(30), "client", "ESTABLISHED", "FIN_WAIT_1"),
        (ms(31), "server", "ESTABLISHED", "CLOSE_WAIT"),
        (ms(32), "client", "FIN_WAIT_1", "FIN_WAIT_2"),
        (ms(40), "server", "CLOSE_WAIT", "LAST_ACK"),
        (ms(41), "client", "FIN_WAIT_2", "TIME_WAIT"),
        # the final ACK is lost; the server's RTO (its measured 2 ms RTT + Linux's 200 ms floor) fires at
        # 0.242 and the FIN arrives at 0.243
        (ms(243), "client", "TIME_WAIT", "TIME_WAIT"),
        (ms(244), "server", "LAST_ACK", "CLOSED"),
        # 2MSL restarted by the re-ACK: 60 s after 0.243
        (ms(60243), "client", "TIME_WAIT", "CLOSED"),
    ]
    restart = pair.transitions("client")[-2]
    assert restart.input is Input.RCV_FIN
    assert [s.number for s in pair.sent if s.retransmission] == [12]


# -- hosts: EADDRINUSE -------------------------------------------------------------------

def restart_listener(pair: Pair, at_ns: int) -> Exception | None:
    pair.run(pair.start_ns + at_ns)
    pair.server.close_listener()
    try:
        pair.server.listen()
    except AddressInUse as e:
        return e
    return None


def test_server_active_close_blocks_a_new_listener_with_eaddrinuse():
    pair = Pair()
    pair.server.listen()
    pair.client.connect()
    pair.run_for(10 * MS)
    pair.server.close()
    pair.run_for(10 * MS)
    pair.client.close()
    pair.run_for(10 * MS)
    assert pair.server.state is State.TIME_WAIT
    err = restart_listener(pair, 1 * SEC)
    assert isinstance(err, AddressInUse)
    assert err.errno == errno.EADDRINUSE
    assert err.holder.state is State.TIME_WAIT
    assert err.until_ns == pair.server.current.time_wait_at
    assert any(a.kind == "address_in_use" for a in pair.anomalies("server"))
    # after 2MSL the port is free
    pair.run(err.until_ns + 1)
    pair.server.listen()
    assert pair.server.listeners[80].state is State.LISTEN


def test_client_active_close_leaves_the_server_port_free():
    pair = Pair()
    pair.server.listen()
    pair.client.connect()
    pair.run_for(10 * MS)
    pair.client.close()
    pair.run_for(10 * MS)
    pair.server.close()
    pair.run_for(10 * MS)
    assert pair.client.state is State.TIME_WAIT and pair.server.state is State.CLOSED
    assert restart_listener(pair, 1 * SEC) is None
    assert not any(a.kind == "address_in_use" for a in pair.anomalies())


def test_reuse_addr_lets_a_listener_bind_over_time_wait():
    pair = Pair()
    pair.server.listen()
    pair.client.connect()
    pair.run_for(10 * MS)
    pair.server.close()
    pair.run_for(10 * MS)
    pair.client.close()
    pair.run_for(10 * MS)
    pair.server.close_listener()
    pair.server.listen(reuse_addr=True)
    with pytest.raises(AddressInUse):          # but never over another listener
        pair.server.listen(reuse_addr=True)


# -- the pair: connections, port reuse, captures ------------------------------------------------

def test_new_syn_in_time_wait_starts_a_new_connection():
    pair = Pair()
    pair.server.listen()
    pair.client.connect()
    pair.run_for(10 * MS)
    pair.server.close()
    pair.run_for(10 * MS)
    pair.client.close()
    pair.run_for(10 * MS)
    old = pair.server.current
    assert old.state is State.TIME_WAIT
    pair.client.connect(iss=500_000)
    pair.run_for(10 * MS)
    assert old.state is State.CLOSED
    assert any(t.input is Input.RCV_NEW_SYN for t in pair.transitions("server"))
    assert pair.server.current is not old and pair.server.state is State.ESTABLISHED
    assert pair.client.state is State.ESTABLISHED
    conns = {r["conn"] for r in scenario_records(pair)}
    assert conns == {0, 1}


def test_capture_points_differ_only_in_what_they_saw():
    pair = four_way(Pair(faults=["drop final-ack"]))
    lost = next(s for s in pair.sent if s.dropped)
    sender = pair.capture("sender")
    client = pair.capture("client")
    server = pair.capture("server")
    assert len(sender) == len(pair.sent)
    assert ("send", lost.number) in [ref for _, _, ref in client]          # the client sent it
    assert lost.number not in [ref[1] for _, _, ref in server]            # the server never saw it
    assert len(server) == len(pair.sent) - 1
    for cap in (sender, client, server):
        times = [t for t, _, _ in cap]
        assert times == sorted(times)


def test_record_frames_point_at_the_segment_in_the_written_capture(tmp_path):
    from rawfin.wire.codec import from_bytes
    from rawfin.wire.pcapio import iter_frames

    pair = four_way(Pair(faults=["drop final-ack"]))
    for where in ("sender", "client", "server"):
        path = tmp_path / f"{where}.pcap"
        n = pair.write_pcap(path, where)
        frames = {fr.frame: from_bytes(fr.data, frame=fr.frame) for fr in iter_frames(path)}
        assert len(frames) == n
        for r in scenario_records(pair, where):
            if r["type"] != "transition" or r["frame"] is None:
                continue
            seg = frames[r["frame"]]
            if r["to"] in ("FIN_WAIT_1", "LAST_ACK", "CLOSE_WAIT"):
                assert seg.fin, (where, r)
            if r["to"] == "SYN_SENT":
                assert seg.syn


def test_pcap_is_reproducible_and_timed_by_the_virtual_clock(tmp_path):
    from rawfin.wire.pcapio import iter_frames
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    four_way(Pair()).write_pcap(a)
    four_way(Pair()).write_pcap(b)
    assert a.read_bytes() == b.read_bytes()
    frames = list(iter_frames(a))
    assert frames[0].time_ns == EPOCH_NS and frames[0].linktype == 101


def test_misuse_raises_and_leaves_state_alone():
    pair = Pair()
    with pytest.raises(EmulatorError):
        pair.client.send(10)                    # no connection yet
    pair.server.listen()
    pair.client.connect()
    pair.run_for(10 * MS)
    pair.client.close()
    with pytest.raises(StateError):
        pair.client.close()
    assert pair.client.state is State.FIN_WAIT_1


def test_sequence_numbers_wrap_at_the_fin():
    pair = four_way(Pair(isn_client=2 ** 32 - 2), data=False)
    fin = next(s for s in pair.sent if s.sender == "client" and s.seg.fin)
    assert fin.seg.seq == 2 ** 32 - 1
    ack = next(s for s in pair.sent if s.sender == "server" and s.number > fin.number)
    assert ack.seg.ack == 0
    assert pair.client.state is State.CLOSED and pair.server.state is State.CLOSED


def test_ipv6_pair():
    pair = four_way(Pair(ipv6=True))
    assert pair.sent[0].seg.src == "2001:db8::2" and pair.sent[0].seg.dst == "2001:db8::1"
    assert pair.server.state is State.CLOSED


def test_segment_to_a_closed_port_gets_rst():
    pair = Pair()
    pair.client.connect()                        # nobody listens
    pair.run_for(10 * MS)
    rst = pair.sent[1].seg
    assert rst.rst and pair.sent[1].sender == "server"
    assert pair.client.state is State.CLOSED

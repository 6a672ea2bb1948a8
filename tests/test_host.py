"""The sans-IO host (rawfin.sim.host): one machine's connections and listeners, driven by hand."""

from __future__ import annotations

import pytest

from rawfin.core.endpoint import Config
from rawfin.core.segment import Flags, Segment
from rawfin.core.states import State
from rawfin.core.units import MS, SEC
from rawfin.sim.host import CALLS, AddressInUse, Host, HostError, is_final_ack, payload, perform

SERVER = ("192.0.2.1", 80)
CLIENT = ("192.0.2.2", 50001)
T = 1_000 * SEC


def wire(steps):
    return [seg for st in steps for seg in st.result.segments]


def pair_up():
    """A client and a server host, handshake done by handing segments across by hand."""
    srv = Host("server", SERVER, Config(msl_ns=1 * SEC), isn=2000, origin_ns=T)
    cli = Host("client", CLIENT, Config(msl_ns=1 * SEC), isn=1000, origin_ns=T)
    listen = srv.listen(T)
    assert listen.call == "listen(192.0.2.1:80)" and listen.created == (listen.endpoint,)
    syn, = cli.connect(T, SERVER).result.segments
    steps = srv.deliver(syn, T + MS)
    assert len(steps) == 1 and steps[0].accepted and len(steps[0].created) == 1
    fresh = steps[0].created[0]
    assert srv.listeners[80] is fresh and fresh.state is State.LISTEN and srv.current is listen.endpoint
    synack, = wire(steps)
    assert synack.flags == Flags.SYN | Flags.ACK and synack.ack == 1001
    ack, = wire(cli.deliver(synack, T + 2 * MS))
    assert ack.pure_ack
    assert wire(srv.deliver(ack, T + 3 * MS)) == []
    assert cli.ready and srv.ready
    return cli, srv


def test_a_close_by_hand_and_time_wait_by_the_deadline():
    cli, srv = pair_up()
    fin, = perform(cli, "close", T + 10 * MS).result.segments
    step, = srv.deliver(fin, T + 11 * MS)
    assert step.eof and srv.state is State.CLOSE_WAIT
    ack = step.result.segments[0]
    assert not is_final_ack(srv.current, ack)           # the server has sent no FIN yet
    cli.deliver(ack, T + 12 * MS)
    fin2, = srv.close(T + 20 * MS).result.segments
    last, = wire(cli.deliver(fin2, T + 21 * MS))
    assert is_final_ack(cli.current, last) and cli.state is State.TIME_WAIT
    srv.deliver(last, T + 22 * MS)
    assert srv.state is State.CLOSED
    assert cli.next_deadline() == T + 21 * MS + 2 * SEC
    assert cli.due(T + 2 * SEC) == []
    step, = cli.due(cli.next_deadline())
    assert step.result.transitions[-1].to is State.CLOSED and cli.next_deadline() is None


def test_address_in_use_says_who_holds_the_port_until_when():
    cli, srv = pair_up()
    srv.close_listener(T + 5 * MS)
    fin, = srv.close(T + 10 * MS).result.segments          # the server closes first: TIME_WAIT on port 80
    for seg in wire(cli.deliver(fin, T + 11 * MS)):
        srv.deliver(seg, T + 12 * MS)
    for seg in cli.close(T + 20 * MS).result.segments:
        srv.deliver(seg, T + 21 * MS)
    assert srv.state is State.TIME_WAIT
    with pytest.raises(AddressInUse) as ei:
        srv.listen(T + 1 * SEC)
    e = ei.value
    assert e.holder is srv.current and e.until_ns == T + 21 * MS + 2 * SEC
    assert e.step.error == "EADDRINUSE (TIME_WAIT until 2.021 s)" and e.step.call == "listen(192.0.2.1:80)"
    a, = e.step.result.anomalies
    assert a.kind == "address_in_use" and "until t=2.021 s" in a.detail
    assert perform(srv, "listen", T + 1 * SEC, reuse_addr=True).endpoint.state is State.LISTEN


def test_a_segment_nobody_has_is_answered_as_a_closed_port():
    srv = Host("server", SERVER)
    seg = Segment(src=CLIENT[0], dst=SERVER[0], sport=CLIENT[1], dport=81, seq=5, flags=Flags.SYN)
    step, = srv.deliver(seg, T)
    assert step.stand_in and step.owner is None and step.endpoint not in srv.endpoints
    rst, = step.result.segments
    assert rst.rst and rst.sport == 81


def test_calls_are_checked():
    h = Host("client", CLIENT)
    with pytest.raises(HostError, match="needs a connection"):
        perform(h, "send", T, data=b"x")
    with pytest.raises(HostError, match="no listener"):
        perform(h, "close-listener", T)
    with pytest.raises(HostError, match="unknown application call"):
        perform(h, "accept", T)
    assert "close-listener" in CALLS and payload(30) == b"abcdefghijklmnopqrstuvwxyzabcd"

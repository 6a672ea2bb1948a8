"""rawfin.linux.kernel: tracepoint lines, state names, the TIME_WAIT hand-off rule, the trace instance."""

from __future__ import annotations

import os
import socket
import time

import pytest

from rawfin.linux.kernel import (Binder, Interpreter, KernelEvent, Tracer, find_tracefs, kernel_state, parse_line,
                           proc_tcp, timewait_sockets, tracefs_missing_reason)
from rawfin.core.states import State

LINE = ("          python-11412   [001] ..s2. 1795666860.749962: inet_sock_set_state: family=AF_INET "
        "protocol=IPPROTO_TCP sport=46296 dport=54967 saddr=127.0.0.1 daddr=127.0.0.1 "
        "saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_FIN_WAIT2 newstate=TCP_CLOSE")


def ev(old, new, t=0, local=("127.0.0.1", 1000), remote=("127.0.0.1", 80), kind="state"):
    return KernelEvent(time_ns=t, kind=kind, local=local, remote=remote, old=old, new=new)


@pytest.mark.parametrize("kernel, ours", [
    ("TCP_ESTABLISHED", State.ESTABLISHED), ("SYN_SENT", State.SYN_SENT), ("TCP_SYN_RECV", State.SYN_RECEIVED),
    ("TCP_NEW_SYN_RECV", State.SYN_RECEIVED), ("FIN_WAIT1", State.FIN_WAIT_1), ("TCP_FIN_WAIT2", State.FIN_WAIT_2),
    ("TIME_WAIT", State.TIME_WAIT), ("TCP_CLOSE", State.CLOSED), ("CLOSE_WAIT", State.CLOSE_WAIT),
    ("TCP_LAST_ACK", State.LAST_ACK), ("LISTEN", State.LISTEN), ("TCP_CLOSING", State.CLOSING),
])
def test_kernel_state_names_map_to_rfc_names(kernel, ours):
    assert kernel_state(kernel) is ours


def test_unknown_kernel_state_is_an_error():
    with pytest.raises(ValueError):
        kernel_state("TCP_BOUND_INACTIVE")


def test_parse_line():
    e = parse_line(LINE, clock_offset_ns=-37 * 10**9)
    assert e.kind == "state" and e.old == "FIN_WAIT2" and e.new == "CLOSE"
    assert e.local == ("127.0.0.1", 46296) and e.remote == ("127.0.0.1", 54967)
    assert e.time_ns == 1795666860_749962000 - 37 * 10**9
    assert parse_line("# tracer: nop") is None
    assert parse_line(LINE.replace("IPPROTO_TCP", "IPPROTO_SCTP")) is None


def test_parse_ipv6_line():
    line = LINE.replace("family=AF_INET ", "family=AF_INET6 ").replace(
        "saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1", "saddrv6=2001:db8::1 daddrv6=2001:db8::2")
    e = parse_line(line)
    assert e.local == ("2001:db8::1", 46296) and e.remote == ("2001:db8::2", 54967)


def test_handoff_from_fin_wait2_counts_as_time_wait():
    [t] = Interpreter().feed([ev("FIN_WAIT2", "CLOSE")])
    assert (t.from_, t.to) == (State.FIN_WAIT_2, State.TIME_WAIT)
    assert t.kernel == "FIN_WAIT2 → CLOSE" and "timewait socket" in t.note and "TIME_WAIT" in t.note


def test_handoff_from_closing_counts_as_time_wait():
    [t] = Interpreter().feed([ev("CLOSING", "CLOSE")])
    assert (t.from_, t.to) == (State.CLOSING, State.TIME_WAIT)


def test_orphan_handoff_before_the_peers_fin_stays_fin_wait_2():
    it = Interpreter(peer_fin_seen=lambda local, remote, t: False)
    [t] = it.feed([ev("FIN_WAIT2", "CLOSE", t=5)])
    assert (t.from_, t.to) == (State.FIN_WAIT_2, State.FIN_WAIT_2)
    assert "substate FIN_WAIT2" in t.note
    assert it.orphans


def test_handoff_after_the_peers_fin_is_time_wait():
    it = Interpreter(peer_fin_seen=lambda local, remote, t: True)
    [t] = it.feed([ev("FIN_WAIT2", "CLOSE")])
    assert t.to is State.TIME_WAIT


def test_reset_close_is_not_time_wait():
    it = Interpreter()
    out = it.feed([ev("", "ESTABLISHED", kind="receive_reset"), ev("FIN_WAIT2", "CLOSE")])
    assert [(t.from_, t.to) for t in out] == [(State.FIN_WAIT_2, State.CLOSED)]
    assert "reset" in out[0].note
    # an abort: CLOSE first, the RST it sends right after
    out = Interpreter().feed([ev("FIN_WAIT2", "CLOSE"), ev("", "CLOSE", kind="send_reset")])
    assert out[0].to is State.CLOSED


def test_last_ack_to_close_is_closed():
    [t] = Interpreter().feed([ev("LAST_ACK", "CLOSE")])
    assert (t.from_, t.to) == (State.LAST_ACK, State.CLOSED) and not t.note


def test_binder_names_the_port_of_syn_sent():
    b = Binder()
    first = b.feed([ev("CLOSE", "SYN_SENT", local=("127.0.0.1", 0))])
    assert first == []
    out = b.feed([ev("SYN_SENT", "ESTABLISHED", local=("127.0.0.1", 4321))])
    assert [(e.local, e.old, e.new) for e in out] == [(("127.0.0.1", 4321), "CLOSE", "SYN_SENT"),
                                                       (("127.0.0.1", 4321), "SYN_SENT", "ESTABLISHED")]


def test_proc_tcp_shows_timewait_substate():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    c = socket.create_connection(ls.getsockname())
    a, _ = ls.accept()
    a.close()                      # the server closes first
    assert c.recv(1) == b""
    c.close()
    time.sleep(0.05)
    port = ls.getsockname()[1]
    tw = {k: v for k, v in timewait_sockets().items() if k[0][1] == port}
    ls.close()
    assert list(tw.values()) == ["TIME_WAIT"]
    assert any(st == "TIME_WAIT" and is_tw for (_, _, st, is_tw) in proc_tcp())


NO_TRACE = tracefs_missing_reason()


@pytest.mark.skipif(NO_TRACE is not None, reason=f"kernel truth unavailable: {NO_TRACE}")
def test_tracer_instance_is_removed_and_mount_restored():
    mounted_before = find_tracefs()
    with Tracer() as t:
        inst = t.instance
        assert os.path.isdir(inst) and "/instances/rawfin-" in inst
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen()
        port = ls.getsockname()[1]
        c = socket.create_connection(("127.0.0.1", port))
        a, _ = ls.accept()
        c.close()
        a.close()
        ls.close()
        evs = [e for e in t.drain(0.1) if port in (e.local[1], e.remote[1])]
        # the trace clock (TAI) is converted to CLOCK_REALTIME
        assert evs and abs(evs[0].time_ns - time.time_ns()) < 5 * 10**9
    assert not os.path.exists(inst)
    assert find_tracefs() == mounted_before
    states = {(e.old, e.new) for e in evs if e.kind == "state"}
    assert ("ESTABLISHED", "FIN_WAIT1") in states and ("LAST_ACK", "CLOSE") in states

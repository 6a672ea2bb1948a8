"""`rawfin peer`: rawfin's endpoint as the remote peer of a real Linux socket over TUN.

Every scenario runs against the kernel in a network namespace of rawfin's own;
each is bounded (the waits inside are bounded; the kernel's RTO is its own).
Skipped only where the capability is missing (not root / no CAP_NET_ADMIN,
no /dev/net/tun), with the reason.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

import pytest

from kernelcaps import needs_netns, needs_trace
from unprivileged import needs_setpriv
from rawfin.linux.peerfile import FileRun, ScenarioUnknown, run_scenario
from rawfin.sim import scenarios
from rawfin.core.states import State

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = scenarios.peer_names()


def test_the_scenarios_are_data():
    """Each is a scenario file (a built-in one or peer/NAME.toml) and the side the kernel plays;
    the emulator meets its expectations too (the same file, both sides rawfin's)."""
    assert NAMES == ["lost-final-ack", "simultaneous-close", "timewait-refin", "fin-with-data", "seq-wraparound",
                     "rst-in-fin-wait-2", "server-active-close"]
    for name in NAMES:
        scn = scenarios.peer_builtin(name)
        assert scn.kernel in ("client", "server") and scn.summary and scn.expect
        assert scenarios.check(scn, scenarios.run(scn)) == [], name


@needs_trace
@pytest.mark.parametrize("name", NAMES)
def test_scenario_against_the_kernel(name, tmp_path, no_leftovers):
    from rawfin.wire.pcapio import iter_frames

    cap = tmp_path / f"{name}.pcap"
    t0 = time.monotonic()
    o = run_scenario(name, write=str(cap))
    took = time.monotonic() - t0
    failed = [f"{c.what} [{c.detail}]" for c in o.checks if c.ok is False]
    assert not failed, f"{name}: " + "; ".join(failed)
    assert sum(c.ok is True for c in o.checks) >= 2
    assert o.scenario == name and o.description == scenarios.peer_builtin(name).summary
    assert took < 15
    # the capture holds every segment that crossed the TUN device
    frames = list(iter_frames(cap))
    crossed = [s for s in o.segments if not s.note.startswith("DROPPED") or s.direction == "kernel → rawfin"]
    assert len(frames) == len(crossed)


@needs_trace
def test_lost_final_ack_kernel_retransmits_with_its_own_rto(no_leftovers):
    o = run_scenario("lost-final-ack")
    fins = [s for s in o.segments if s.direction == "kernel → rawfin" and s.seg.fin]
    assert len(fins) >= 2
    gap = (fins[1].time_ns - fins[0].time_ns) / 1e9
    # Linux's RTO floor is 200 ms (TCP_RTO_MIN); anything from there to a few seconds is the kernel's call
    assert 0.15 < gap < 5, gap
    assert [k.to.value for k in o.kernel][-2:] == ["LAST_ACK", "CLOSED"]


@needs_trace
def test_simultaneous_close_handoff_rule():
    o = run_scenario("simultaneous-close")
    last = o.kernel[-1]
    assert last.kernel == "CLOSING → CLOSE" and last.to is State.TIME_WAIT and "timewait socket" in last.note


@needs_trace
def test_the_kernel_application_meets_the_reset():
    o = run_scenario("rst-in-fin-wait-2")
    c, = [c for c in o.checks if c.what.startswith("[expect] error")]
    assert c.ok and "ECONNRESET" in c.detail
    assert [k.to.value for k in o.kernel][-2:] == ["FIN_WAIT_2", "CLOSED"]


@needs_netns
def test_error_mid_scenario_cleans_up(tmp_path, no_leftovers):
    cap = tmp_path / "err.pcap"

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with FileRun(scenarios.builtin("normal-close"), write=str(cap), kernel_truth=False):
            raise Boom()
    assert cap.exists()                      # what happened before the error is kept
    assert not glob.glob(str(tmp_path / ".*.part"))


@needs_netns
def test_ctrl_c_mid_scenario_cleans_up(no_leftovers):
    with pytest.raises(KeyboardInterrupt):
        with FileRun(scenarios.builtin("normal-close"), kernel_truth=False):
            raise KeyboardInterrupt


@needs_netns
def test_without_kernel_truth_checks_fall_back_to_proc(no_leftovers):
    from rawfin.linux.peerfile import run_file
    scn = scenarios.peer_builtin("rst-in-fin-wait-2")
    o = run_file(scn, kernel_side=scn.kernel, kernel_truth=False)
    kernel_states = [c for c in o.checks if c.what.startswith("[expect] states: server")]
    assert kernel_states and all(c.ok is None and "no kernel truth" in c.detail for c in kernel_states)
    final = next(c for c in o.checks if c.what.startswith("[expect] final: server"))
    assert final.ok is True                 # from /proc/net/tcp: the socket is gone
    assert all(c.ok is not False for c in o.checks)


def test_unknown_scenario():
    with pytest.raises(ScenarioUnknown):
        run_scenario("no-such-thing")


def _cli(*args):
    cmd = [sys.executable, "-m", "rawfin", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd="/",
                          env=dict(os.environ, PYTHONPATH=ROOT, COLUMNS="100"))


def test_cli_list():
    r = _cli("peer", "--list")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert NAMES == [ln.split()[0] for ln in lines if not ln.startswith(" ")]
    assert max(map(len, lines)) <= 100


@needs_trace
def test_cli_table_and_jsonl(tmp_path):
    r = _cli("peer", "--scenario", "seq-wraparound", "--write", str(tmp_path / "w.pcap"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "from the tracepoint" in r.stdout and "from its state machine" in r.stdout
    assert "ack=0" in r.stdout
    assert max(map(len, r.stdout.splitlines())) <= 100     # the tables and the checks fit 100 columns
    r = _cli("peer", "--scenario", "rst-in-fin-wait-2", "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    import json
    recs = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert {x["type"] for x in recs} == {"transition", "kernel", "check", "note"}
    assert any(x["type"] == "note" and "ECONNRESET" in x["text"] for x in recs)


@needs_setpriv
def test_without_privilege_says_what_is_missing(as_nobody):
    r = as_nobody("peer", "--scenario", "lost-final-ack")
    assert r.returncode == 77, r.stdout + r.stderr
    assert "CAP_NET_ADMIN" in r.stderr and "Traceback" not in r.stderr

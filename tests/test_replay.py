"""`rawfin replay`: one side of a captured connection from the recording, the other side live.

Against the emulator (pure, virtual time) and against the kernel (root, TUN, tracefs; skipped with
the reason elsewhere). Every capture in captures/ from each side: no divergence. An edited capture
(a FIN retransmitted after it was ACKed) diverges and names the frame. Scenario files round-trip.
"""

from __future__ import annotations

import glob
import os

import pytest

from kernelcaps import needs_trace
from rawfin.core import seq as sq
from rawfin.cli import main
from rawfin.wire.pcapio import PcapWriter, iter_frames
from rawfin.sim.replay import Replayer, scenario_toml
from rawfin.commands.replay import load
from rawfin.linux.replayrun import run_emulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTURES = sorted(glob.glob(os.path.join(ROOT, "captures", "*.pcap")))
NAMES = [os.path.basename(c) for c in CAPTURES]


def cap(name: str) -> str:
    return os.path.join(ROOT, "captures", name)


def flat(text: str) -> str:
    """``text`` with every run of whitespace as one space: what a table or a paragraph wrapped to the
    terminal's width says, whatever the width."""
    return " ".join(text.split())


def edited(tmp_path, name="normal-close.pcap", copy=8, after_ns=200_000_000, drop=()) -> str:
    """The capture with frame ``copy`` sent again ``after_ns`` after it, at the end; frames in ``drop`` cut."""
    frames = list(iter_frames(cap(name)))
    out = str(tmp_path / "edited.pcap")
    w = PcapWriter(out, frames[0].linktype)
    for f in frames:
        if f.frame not in drop:
            w.write(f.data, f.time_ns)
    if copy:
        f = frames[copy - 1]
        w.write(f.data, f.time_ns + after_ns)
    w.close()
    return out


# -- the recording ------------------------------------------------------------------------

def test_losses_the_capture_implies():
    rec = load(cap("lost-final-ack.pcap"))
    assert [f.frame for f in rec.frames if f.lost] == [11]
    rec = load(cap("lost-fin.pcap"))
    assert [f.frame for f in rec.frames if f.lost] == [8]
    assert [f.frame for f in rec.frames if f.retransmission] == [9]
    assert not any(f.lost for f in load(cap("normal-close.pcap")).frames)


def test_an_ack_proven_received_is_not_lost(tmp_path):
    # the client sends its FIN again after the server ACKed it (frame 9) and the client
    # acknowledged the server's FIN (frame 11, which carries ack=1102 too): frame 9 arrived
    rec = load(edited(tmp_path))
    assert not any(f.lost for f in rec.frames)
    assert rec.frames[-1].retransmission and rec.frames[-1].frame == 12


def test_application_calls():
    calls = {(f.frame, f.sender): f.call for f in load(cap("half-close.pcap")).frames if f.call}
    assert calls[(1, "client")] == "connect"
    assert calls[(6, "client")] == "shutdown"        # the server sent data after the client's FIN
    assert calls[(14, "server")] == "close"
    assert calls[(8, "server")] == "send"
    calls = {f.frame: f.call for f in load(cap("rst-abort.pcap")).frames if f.call}
    assert calls[8] == "abort"
    fin = next(f for f in load(cap("fin-with-data.pcap")).frames if f.seg.fin)
    assert fin.call == "shutdown" and fin.seg.data_len == 100


def test_sequence_numbers_are_mapped_across_the_wrap():
    rec = load(cap("seq-wraparound.pcap"))
    addrs = {"client": rec.client, "server": rec.server}
    rp = Replayer(rec, "client", addrs)
    rp.isn["server"] = 2**32 - 3                  # the live server's ISN, near the wrap too
    # the recorded client's ack of the server's FIN (y + 1) lands on the live FIN + 1
    last = rec.frames[-1]
    assert rp.to_live("server", last.seg.ack) == sq.add(2**32 - 3, last.rel_ack)
    assert rp.to_live("server", rec.isn["server"]) == 2**32 - 3
    assert rp.to_live("client", last.seg.seq) == last.seg.seq    # rawfin keeps its recorded ISN


@pytest.mark.parametrize("argv, code, text", [
    (["--as", "server", "--conn", "5", "--against", "kernel"], 65, "no connection 5"),
    (["--as", "client", "--conn", "5"], 65, "no connection 5"),
])
def test_bad_input(capsys, argv, code, text):
    assert main(["replay", cap("normal-close.pcap"), *argv]) == code
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1


def test_no_handshake_needs_mid_stream(tmp_path, capsys):
    p = edited(tmp_path, copy=0, drop=(1, 2, 3))
    assert main(["replay", p, "--as", "client"]) == 65
    err = capsys.readouterr().err
    assert "no handshake" in err and "--mid-stream" in err and err.count("\n") == 1
    assert main(["replay", p, "--as", "client", "--mid-stream"]) == 0
    assert "made one up" in capsys.readouterr().out


def test_not_tcp(tmp_path, capsys):
    p = str(tmp_path / "udp.pcap")
    from scapy.layers.inet import IP, UDP
    w = PcapWriter(p, 101)
    w.write(bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=2)), 0)
    w.close()
    assert main(["replay", p, "--as", "client"]) == 65
    assert "not TCP" in capsys.readouterr().err


def test_missing_file_and_usage(capsys):
    assert main(["replay", "/nonexistent.pcap", "--as", "client"]) == 66
    assert main(["replay", cap("normal-close.pcap")]) == 2      # which side?


# -- against the emulator -------------------------------------------------------------------

@pytest.mark.parametrize("speed", [1.0, 0.0])
@pytest.mark.parametrize("side", ["client", "server"])
@pytest.mark.parametrize("name", NAMES)
def test_every_capture_against_the_emulator(name, side, speed):
    o = run_emulator(load(cap(name)), side, speed=speed)
    assert not o.diverged, [d.text for d in o.divergences]
    assert not o.notes


@pytest.mark.parametrize("side", ["client", "server"])
@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("pileup-kernel.pcap", "simultaneous-close.pcap")])
def test_side_by_side_states_are_each_sides_own(name, side):
    """A replay that follows the capture shows, on every row, the live run's states as its own
    transitions give them: the recorded states (a close() shows on its FIN's row, not before;
    rawfin's side ACKing a FIN is in TIME_WAIT when that ACK leaves, even one the link loses).
    A row shows the states when the next segment leaves, so a capture whose gaps are shorter than
    the live link's delay (pileup-kernel.pcap, 20 µs on loopback) shows a receiver's move a row late,
    and crossing FINs (simultaneous-close.pcap) leave in either order, so their rows differ."""
    from rawfin.commands.replay import rows

    o = run_emulator(load(cap(name)), side)
    assert not o.diverged
    for r in rows(o):
        if r["frame"] is None or not r["live_segment"] or r["live_segment"] == "—":
            continue
        assert (r["live_client"], r["live_server"]) == (r["rec_client"], r["rec_server"]), (name, side, r)


def test_edited_capture_diverges_against_the_emulator(tmp_path, capsys):
    p = edited(tmp_path)
    assert main(["replay", p, "--as", "server"]) == 1
    out = flat(capsys.readouterr().out)
    assert ("capture frame 12: the client retransmitted its FIN 200 ms after frame 8; the live emulator had "
            "received the ACK in frame 9 and did not") in out


def test_table_and_jsonl(capsys, tmp_path):
    w = str(tmp_path / "live.pcap")
    assert main(["replay", cap("lost-final-ack.pcap"), "--as", "client", "--write", w]) == 0
    out = flat(capsys.readouterr().out)
    assert "lost, as the capture implies" in out and "verdict: the live server followed the capture" in out
    assert len(list(iter_frames(w))) == 12          # the lost ACK never reached the live side
    assert main(["replay", cap("lost-final-ack.pcap"), "--as", "client", "--format", "jsonl"]) == 0
    import json
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert recs[-1] == {"type": "verdict", "conn": 0, "as": "client", "against": "emulator", "diverged": False,
                        "divergences": 0}
    assert sum(r["type"] == "replay" for r in recs) == 13


@pytest.mark.parametrize("against", ["emulator", pytest.param("kernel", marks=needs_trace)])
@pytest.mark.parametrize("columns", [100, 80])
def test_side_by_side_fits_the_terminal(columns, against, capsys, monkeypatch, tmp_path, request):
    """The side-by-side table, the lines above and under it, and a divergence fit COLUMNS: a frame is
    two rows (the recorded run, the live run) and a note under them, and nothing is cut away."""
    if against == "kernel":
        request.getfixturevalue("no_leftovers")
    monkeypatch.setenv("COLUMNS", str(columns))
    extra = ["--against", against, "--speed", "0"]
    assert main(["replay", cap("lost-final-ack.pcap"), "--as", "client", *extra]) == 0
    out = capsys.readouterr().out
    assert out and max(len(line) for line in out.splitlines()) <= columns, out
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("frame"))
    assert lines[head].split() == ["frame", "run", "time", "dir", "segment", "client", "server"]
    rec = next(i for i, line in enumerate(lines) if line.split()[:2] == ["11", "rec"])
    live = next(i for i in range(rec + 1, len(lines)) if lines[i].split()[0] == "live")   # (a cell may wrap)
    assert "TIME_WAIT" in lines[live]
    note = next(i for i in range(live + 1, len(lines)) if lines[i].lstrip().startswith("note:"))
    assert flat(" ".join(lines[note:note + 2])).startswith("note: lost, as the capture implies")
    assert all(not line.split() or line.split()[0] not in ("12", "rec") for line in lines[live + 1:note])
    if against == "emulator":   # the live server's states as its own transitions give them (its close() at 10)
        nine = next(i for i, line in enumerate(lines) if line.split()[:2] == ["9", "rec"])
        assert lines[nine + 1].split()[-2:] == ["FIN_WAIT_2", "CLOSE_WAIT"]
    assert "verdict: the live server followed the capture" in flat(out)
    # a divergence, wrapped, says all it says
    assert main(["replay", edited(tmp_path), "--as", "server", *extra]) == 1
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= columns, out
    assert (f"capture frame 12: the client retransmitted its FIN 200 ms after frame 8; the live {against} had "
            "received the ACK in frame 9 and did not") in flat(out)


@pytest.mark.parametrize("seq", ["absolute", "relative"])
def test_sequence_numbers_follow_the_option(seq, capsys):
    """The default (absolute) shows each run's own numbers: the capture's on 'rec' rows, the live ISN's on
    'live' rows; --seq relative shows both relative to their side's ISN, so a run that follows the
    capture has the same text on both rows, and the transitions under the table are relative too."""
    argv = ["replay", cap("lost-final-ack.pcap"), "--as", "client", "--format", "jsonl"]
    assert main(argv + ([] if seq == "absolute" else ["--seq", seq])) == 0
    import json
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows = {r["frame"]: r for r in recs if r["type"] == "replay" and r["frame"] is not None}
    if seq == "absolute":
        assert rows[1]["recorded"] == "SYN seq=1000" and rows[10]["recorded"] == "FIN,ACK seq=2201 ack=1102"
        assert rows[10]["live_segment"] != rows[10]["recorded"]          # the live server's own ISN
        assert rows[10]["live_segment"].endswith(" ack=1102")             # rawfin's side keeps its ISN
    else:
        assert rows[1]["recorded"] == "SYN seq=0" and rows[10]["recorded"] == "FIN,ACK seq=201 ack=102"
        assert all(r["live_segment"] == r["recorded"] for r in rows.values())
        causes = [r["cause"] for r in recs if r["type"] == "live_transition"]
        assert "rcv SYN seq=0" in causes and "close(): snd FIN seq=201" in causes


def test_side_by_side_in_other_formats():
    """Any other --tablefmt is tabulate's, with the note in a column of its own on the frame's first row."""
    from rawfin.commands.replay import rows, side_by_side, side_by_side_text

    o = run_emulator(load(cap("lost-final-ack.pcap")), "client")
    headers, frames = side_by_side(rows(o), o.rec.frames[0].time_ns, o.rp.start_ns)
    assert [r[1] for r in frames[10][0]] == ["rec", "live"] and frames[10][1].startswith("lost, as the capture")
    text = side_by_side_text(headers, frames, "github")
    assert "| note" in text.splitlines()[0]
    line = next(x for x in text.splitlines() if "lost, as the capture implies" in x)
    assert "| rec " in line and "| 11 " in line


# -- scenario files ----------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_scenario_round_trip(name, tmp_path):
    from rawfin.sim import scenarios
    from rawfin.capture.analysis import records
    from rawfin.render.records import record

    rec = load(cap(name))
    f = tmp_path / "s.toml"
    f.write_text(scenario_toml(rec))
    pair = scenarios.run(scenarios.load(str(f)))
    out = str(tmp_path / "s.pcap")
    pair.write_pcap(out)
    mine = {fr.frame for fr in rec.frames}

    def path(p, keep=None):
        return [(r["endpoint"], r["from"], r["to"], r["frame"]) for r in records(p, record=record)
                if r["type"] == "transition" and r["conn"] == 0 and (keep is None or r["frame"] in keep)]
    assert path(out) == path(cap(name), mine)


def test_export_command(tmp_path, capsys):
    f = str(tmp_path / "x.toml")
    assert main(["replay", cap("lost-final-ack.pcap"), "--export", "scenario", f]) == 0
    assert 'rule = "drop 11"' in open(f).read()
    assert main(["scenario", "--file", f]) == 0
    assert main(["replay", cap("lost-final-ack.pcap"), "--export", "ladder", f]) == 2


# -- against the kernel -------------------------------------------------------------------






@needs_trace
@pytest.mark.parametrize("side", ["client", "server"])
@pytest.mark.parametrize("name", NAMES)
def test_every_capture_against_the_kernel(name, side, no_leftovers):
    from rawfin.linux.replayrun import run_kernel
    o = run_kernel(load(cap(name)), side, speed=0)
    assert not o.diverged, [d.text for d in o.divergences]
    assert o.live_moves


@needs_trace
@pytest.mark.parametrize("speed", [1.0, 0.0])
def test_kernel_side_by_side_states_are_its_own(speed, no_leftovers):
    """Against the kernel the live server's close() shows on its FIN's row (frame 10), not on the
    delayed ACK that leaves just before it (frame 9), and the live client is in FIN_WAIT_2 at
    frame 9 and TIME_WAIT from its ACK of the FIN on: the rows agree with the capture's own."""
    from rawfin.commands.replay import rows
    from rawfin.linux.replayrun import run_kernel

    o = run_kernel(load(cap("lost-final-ack.pcap")), "client", speed=speed)
    assert not o.diverged, [d.text for d in o.divergences]
    live = {r["frame"]: (r["live_client"], r["live_server"]) for r in rows(o)
            if r["frame"] is not None and r["live_segment"] and r["live_segment"] != "—"}
    assert live[8] == ("FIN_WAIT_1", "CLOSE_WAIT")
    assert live[9] == ("FIN_WAIT_2", "CLOSE_WAIT")
    assert live[10] == ("TIME_WAIT", "LAST_ACK")
    assert live[11] == ("TIME_WAIT", "LAST_ACK")


@needs_trace
def test_lost_final_ack_against_the_kernel(capsys, no_leftovers):
    assert main(["replay", cap("lost-final-ack.pcap"), "--as", "client", "--against", "kernel"]) == 0
    out = flat(capsys.readouterr().out)
    assert "LAST_ACK → CLOSED" in out and "retransmission" in out
    assert "none: the live server followed the capture's states and segments" in out


@needs_trace
def test_edited_capture_diverges_against_the_kernel(tmp_path, capsys, no_leftovers):
    p = edited(tmp_path)
    assert main(["replay", p, "--as", "server", "--against", "kernel", "--speed", "0"]) == 1
    out = flat(capsys.readouterr().out)
    assert ("capture frame 12: the client retransmitted its FIN 200 ms after frame 8; the live kernel had "
            "received the ACK in frame 9 and did not") in out

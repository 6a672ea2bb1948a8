"""`rawfin live` against real loopback connections, with the kernel's tracepoint as the referee.

Each test opens Python sockets on 127.0.0.1 (ephemeral ports), sniffs them
with :class:`rawfin.linux.live.Live` and compares rawfin's wire-inferred transitions
with the kernel's own (sock:inet_sock_set_state). Every test is bounded to a
few seconds. Skipped only where the capability is missing, with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from unprivileged import needs_setpriv
from rawfin.linux.kernel import tracefs_missing_reason
from rawfin.render.records import record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _why_no_capture() -> str | None:
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
        s.close()
    except PermissionError:
        return "no AF_PACKET socket: needs root or CAP_NET_RAW"
    except (OSError, AttributeError) as e:
        return f"no AF_PACKET socket here: {e}"
    return None


NO_CAPTURE = _why_no_capture()
NO_TRACE = NO_CAPTURE or tracefs_missing_reason()
needs_capture = pytest.mark.skipif(NO_CAPTURE is not None, reason=str(NO_CAPTURE))
needs_trace = pytest.mark.skipif(NO_TRACE is not None, reason=f"kernel truth unavailable: {NO_TRACE}")


def listener() -> socket.socket:
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    return ls


def run_live(port: int, action, *, kernel_truth: bool = True, write: str | None = None, settle: float = 0.3,
             relative_seq: bool = False):
    """Sniff ``port`` on lo while ``action()`` runs; return (records, stats, live)."""
    from rawfin.commands.live import open_live

    records: list[dict] = []
    live = open_live(interface="lo", bpf=f"tcp and port {port}", kernel_truth=kernel_truth, write=write,
                     emit=records.append, relative_seq=relative_seq)
    result = {}
    t = threading.Thread(target=lambda: result.update(live.run(duration=10)), daemon=True)
    t.start()
    try:
        action()
        time.sleep(settle)
    finally:
        live.stop()
        t.join(timeout=10)
    assert not t.is_alive(), "live session did not stop"
    return records, result, live


def client_first(ls: socket.socket) -> None:
    c = socket.create_connection(ls.getsockname())
    a, _ = ls.accept()
    c.sendall(b"hello")
    assert a.recv(5) == b"hello"
    c.close()
    assert a.recv(10) == b""
    time.sleep(0.05)
    a.close()


def server_first(ls: socket.socket) -> None:
    c = socket.create_connection(ls.getsockname())
    a, _ = ls.accept()
    a.sendall(b"bye")
    a.close()
    assert c.recv(10) == b"bye"
    assert c.recv(10) == b""
    time.sleep(0.05)
    c.close()


def reset(ls: socket.socket) -> None:
    c = socket.create_connection(ls.getsockname())
    a, _ = ls.accept()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    time.sleep(0.05)
    with pytest.raises(ConnectionResetError):
        a.recv(10)
    a.close()


def half_close(ls: socket.socket) -> None:
    c = socket.create_connection(ls.getsockname())
    a, _ = ls.accept()
    c.shutdown(socket.SHUT_WR)             # client: FIN_WAIT_1 -> FIN_WAIT_2, still reading
    assert a.recv(10) == b""
    a.sendall(b"still talking")            # data after the client's FIN
    assert c.recv(20) == b"still talking"
    a.close()
    assert c.recv(10) == b""
    time.sleep(0.05)
    c.close()


def transitions(records, endpoint=None, source="transition"):
    return [(r["endpoint"], r["from"], r["to"]) for r in records
            if r["type"] == source and (endpoint is None or r["endpoint"] == endpoint)]


def assert_agree(records):
    wire = [r for r in records if r["type"] == "transition"]
    kern = [r for r in records if r["type"] == "kernel"]
    assert wire and kern
    bad = [r for r in kern if r["agree"] is False]
    assert not bad, "kernel transitions the wire does not show: " + "; ".join(
        f"{r['endpoint']} {r['from']}->{r['to']} ({r['kernel']})" for r in bad)
    # every close-related wire transition has its kernel counterpart
    kt = {(r["endpoint"], r["to"]) for r in kern}
    missing = [(r["endpoint"], r["from"], r["to"]) for r in wire
               if r["to"] not in ("CLOSED",) or r["from"] != "TIME_WAIT"
               if (r["endpoint"], r["to"]) not in kt]
    assert not missing, f"wire transitions the kernel never reported: {missing}"


def client_first_close() -> tuple[list[dict], dict, object, int]:
    """One connection the client closes first, on loopback, seen by live with kernel truth."""
    ls = listener()
    port = ls.getsockname()[1]
    recs, stats, live = run_live(port, lambda: client_first(ls))
    ls.close()
    return recs, stats, live, port


@needs_trace
def test_client_first_close_matches_kernel():
    recs, stats, live, port = client_first_close()
    server = f"127.0.0.1:{port}"
    conn = [r for r in recs if r["type"] == "connection"]
    assert len(conn) == 1 and conn[0]["close"] == "four_way" and conn[0]["active_closer"] != server
    client = conn[0]["client"]
    assert transitions(recs, client)[-3:] == [(client, "ESTABLISHED", "FIN_WAIT_1"),
                                              (client, "FIN_WAIT_1", "FIN_WAIT_2"),
                                              (client, "FIN_WAIT_2", "TIME_WAIT")]
    assert transitions(recs, server)[-2:] == [(server, "CLOSE_WAIT", "LAST_ACK"), (server, "LAST_ACK", "CLOSED")]
    assert_agree(recs)
    # the kernel's own words: the TIME_WAIT hand-off was counted as TIME_WAIT
    kt = [r for r in recs if r["type"] == "kernel" and r["endpoint"] == client]
    assert kt[-1]["to"] == "TIME_WAIT"
    assert stats["segments"] >= 7


@needs_trace
def test_server_first_close_matches_kernel():
    ls = listener()
    port = ls.getsockname()[1]
    recs, stats, live = run_live(port, lambda: server_first(ls))
    ls.close()
    server = f"127.0.0.1:{port}"
    conn = [r for r in recs if r["type"] == "connection"][0]
    assert conn["active_closer"] == server and conn["server_active_close"]
    kt = [(r["from"], r["to"]) for r in recs if r["type"] == "kernel" and r["endpoint"] == server]
    assert kt[-1][1] == "TIME_WAIT"
    assert ("ESTABLISHED", "FIN_WAIT_1") in kt
    assert_agree(recs)


@needs_trace
def test_reset_close_matches_kernel():
    ls = listener()
    port = ls.getsockname()[1]
    recs, stats, live = run_live(port, lambda: reset(ls))
    ls.close()
    server = f"127.0.0.1:{port}"
    conn = [r for r in recs if r["type"] == "connection"][0]
    assert conn["close"] == "reset"
    client = conn["client"]
    assert (client, "ESTABLISHED", "CLOSED") in transitions(recs, client)
    assert (server, "ESTABLISHED", "CLOSED") in transitions(recs, server)
    ks = [r for r in recs if r["type"] == "kernel" and r["endpoint"] == server]
    assert ks[-1]["to"] == "CLOSED" and "reset" in ks[-1]["note"]
    assert_agree(recs)


@needs_trace
def test_half_close_matches_kernel():
    ls = listener()
    port = ls.getsockname()[1]
    recs, stats, live = run_live(port, lambda: half_close(ls))
    ls.close()
    conn = [r for r in recs if r["type"] == "connection"][0]
    assert conn["close"] == "half_close"
    client = conn["client"]
    kt = [r for r in recs if r["type"] == "kernel" and r["endpoint"] == client]
    # shutdown() keeps the socket: the hand-off happens when the FIN arrives, a real TIME_WAIT
    assert kt[-1]["kernel"] == "FIN_WAIT2 → CLOSE" and kt[-1]["to"] == "TIME_WAIT"
    assert_agree(recs)


@needs_capture
def test_live_without_kernel_truth_writes_complete_capture(tmp_path):
    from rawfin.wire.pcapio import iter_frames

    ls = listener()
    port = ls.getsockname()[1]
    out = tmp_path / "live.pcap"
    recs, stats, live = run_live(port, lambda: client_first(ls), kernel_truth=False, write=str(out))
    ls.close()
    assert not [r for r in recs if r["type"] == "kernel"]
    frames = list(iter_frames(out))
    assert len(frames) == stats["segments"] >= 7
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


@needs_capture
@pytest.mark.parametrize("lane", [False, None])
def test_relative_sequence_numbers(lane, monkeypatch):
    """--seq relative: the kernel's random ISNs show as 0, its FIN after 5 bytes as seq=6 (the lane and
    the Python observer alike)."""
    from rawfin.commands import live as live_cmd

    real = live_cmd.open_live
    monkeypatch.setattr(live_cmd, "open_live", lambda **kw: real(lane=lane, **kw))
    ls = listener()
    port = ls.getsockname()[1]
    recs, _, _ = run_live(port, lambda: client_first(ls), kernel_truth=False, relative_seq=True)
    ls.close()
    causes = [r["cause"] for r in recs if r["type"] == "transition"]
    assert causes.count("snd SYN seq=0") == 1 and causes.count("rcv SYN seq=0") == 1, causes
    assert "rcv SYN,ACK seq=0 ack=1" in causes and "snd FIN seq=6" in causes and "rcv FIN seq=6" in causes


@needs_capture
def test_count_stops_the_capture():
    from rawfin.commands.live import open_live

    ls = listener()
    port = ls.getsockname()[1]
    live = open_live(interface="lo", bpf=f"tcp and port {port}")
    t = threading.Thread(target=lambda: client_first(ls), daemon=True)
    t.start()
    stats = live.run(count=3, duration=5)
    t.join(5)
    ls.close()
    assert stats["segments"] == 3


def _cli(*args, timeout=20, **kw):
    cmd = [sys.executable, "-m", "rawfin", *args]
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd="/", **kw)


@needs_capture
def test_cli_jsonl_streams_and_summarises(tmp_path):
    ls = listener()
    port = ls.getsockname()[1]
    out = tmp_path / "cli.pcap"
    cmd = [sys.executable, "-m", "rawfin", "live", "-i", "lo", "-f", f"tcp and port {port}", "--duration", "3",
           "--format", "jsonl", "--write", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    # wait for the capture to start (the message on stderr), then make the connection
    line = p.stderr.readline()
    assert "capturing on lo" in line
    client_first(ls)
    # the first transition arrives while the capture still runs (flushed line by line)
    first = p.stdout.readline()
    assert p.poll() is None and '"type":"transition"' in first
    p.send_signal(2)   # Ctrl-C
    rest, err = p.communicate(timeout=10)
    ls.close()
    assert p.returncode == 0, err
    assert '"type":"connection"' in rest
    assert "stopped by Ctrl-C" in err and "Traceback" not in err
    assert out.exists() and out.stat().st_size > 24


@needs_setpriv
def test_without_privilege_says_what_is_missing(as_nobody):
    r = as_nobody("live", "--duration", "1")
    assert r.returncode == 77, r.stderr
    assert "CAP_NET_RAW" in r.stderr and "root" in r.stderr
    assert "Traceback" not in r.stderr


def test_without_libpcap_only_the_default_filter_runs(monkeypatch):
    """No libpcap: the default 'tcp' needs no program (only TCP is decoded); any other expression
    is a usage error that names libpcap, never a filter language of rawfin's own."""
    import rawfin.wire.bpf as bpf_mod
    from rawfin.core.errors import UsageError
    from rawfin.linux.live import compile_filter

    monkeypatch.setattr(bpf_mod, "_load", lambda: None)
    assert compile_filter("tcp") is None
    with pytest.raises(UsageError, match="libpcap"):
        compile_filter("tcp and port 80")


@pytest.mark.skipif(not __import__("rawfin.wire.bpf").wire.bpf.available(), reason="libpcap is not installed")
def test_live_filter_is_tcpdumps_language():
    from rawfin.core.errors import UsageError
    from rawfin.linux.live import compile_filter

    insns = compile_filter("tcp and (port 80 or port 443) and not src host 10.0.0.1")
    assert insns and len(insns) % 8 == 0
    with pytest.raises(UsageError, match="bad filter"):
        compile_filter("tcp and prot 80")


@needs_trace
def test_analyze_of_a_live_capture_finds_the_kernels_transitions(tmp_path):
    """The kernel is the judge of `rawfin analyze` too: connections closed every way on loopback,
    written by live, then analyzed as a file: every wire transition is one the kernel's tracepoint
    reported, and every kernel transition is found, but the timewait hand-off rows that only say
    the tracepoint went quiet."""
    from collections import Counter

    from rawfin.capture.analysis import records

    ls = listener()
    port = ls.getsockname()[1]
    path = str(tmp_path / "loopback.pcap")

    def every_way():
        for act in (client_first, server_first, reset, half_close):
            act(ls)
            time.sleep(0.05)

    recs, _stats, _live = run_live(port, every_way, write=path)
    ls.close()
    kernel = Counter((r["endpoint"], r["from"], r["to"]) for r in recs if r["type"] == "kernel"
                     and r["from"] != r["to"])
    analyzed = list(records(path, record=record))
    wire = Counter((r["endpoint"], r["from"], r["to"]) for r in analyzed
                   if r["type"] == "transition" and r["frame"] is not None)
    assert wire == kernel
    closes = [r["close"] for r in analyzed if r["type"] == "connection"]
    # the kernel may fold an ACK into its FIN (delayed ACK): four_way or three_way for the plain closes
    assert len(closes) == 4 and closes[2] == "reset" and closes[3] == "half_close"
    assert all(c in ("four_way", "three_way") for c in closes[:2])


# -- the packet ring: drops, SIGTERM, -i any, -B ---------------------------------------------

def _live_proc(*args, preexec_fn=None) -> subprocess.Popen:
    """`rawfin live ARGS` as a user starts it, once its capture has started."""
    cmd = [sys.executable, "-m", "rawfin", "live", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    line = p.stderr.readline()
    assert "capturing on" in line, line + p.stderr.read()
    return p


def _burst(ls: socket.socket, n: int) -> None:
    """n short connections back to back (about ten segments each), as fast as Python makes them."""
    port = ls.getsockname()[1]

    def serve():
        for _ in range(n):
            a, _ = ls.accept()
            a.recv(100)
            a.sendall(b"ok")
            a.recv(100)
            a.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"hello")
        c.recv(10)
        c.close()
    t.join(10)
    assert not t.is_alive()


def _records(text: str) -> list[dict]:
    import json
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


def _across_a_stop(p: subprocess.Popen, ls: socket.socket) -> None:
    """30 open connections send data while ``p`` is stopped (SIGSTOP): some 4,000 segments, more
    than a 256 KiB ring holds; then ``p`` goes on, and a few more rounds pass before they close."""
    pairs = []
    for _ in range(30):
        c = socket.create_connection(ls.getsockname())
        a, _ = ls.accept()
        pairs.append((c, a))

    def rounds(n):
        for _ in range(n):
            for c, a in pairs:
                c.sendall(b"x" * 100)
                a.recv(100)
    try:
        rounds(2)
        time.sleep(0.3)                     # read by rawfin before it stops
        p.send_signal(signal.SIGSTOP)
        rounds(70)
    finally:
        p.send_signal(signal.SIGCONT)
    time.sleep(0.5)
    rounds(3)
    for c, a in pairs:
        c.close()
        a.close()
    time.sleep(0.3)


@needs_capture
def test_drops_are_reported_when_the_reader_is_stopped_during_a_burst():
    """A small ring (-B 256: 256 KiB), rawfin stopped (SIGSTOP) while 30 open connections send
    about 4,000 segments of data, then continued: the kernel drops what does not fit; rawfin
    says how many and where (the stats record, the closing line), and the connections whose
    sequence numbers jump across the gap carry the anomaly of a segment the capture missed."""
    import re

    ls = listener()
    port = ls.getsockname()[1]
    p = _live_proc("-i", "lo", "-f", f"tcp port {port}", "-B", "256", "--format", "jsonl")
    _across_a_stop(p, ls)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    ls.close()
    assert p.returncode == 0, err
    recs = _records(out)
    stats = recs[-1]
    assert stats["type"] == "stats" and stats["buffer_kib"] == 256
    assert stats["dropped"] > 0 and stats["ring_full"] > 0 and stats["gaps"] >= 1
    assert sum(g["dropped"] for g in stats["drops_at"]) == stats["dropped"]
    m = re.search(r"(\d+) segments received, (\d+) dropped by the kernel", err)
    assert m and (int(m.group(1)), int(m.group(2))) == (stats["segments"], stats["dropped"]), err
    assert "(stopped by SIGTERM)" in err and "-B" in err and "Traceback" not in err
    gap = stats["drops_at"][0]["before_frame"]
    missed = [r for r in recs if r["type"] == "anomaly" and r["kind"] == "previous_segment_not_captured"]
    assert missed and all(r["frame"] >= gap for r in missed), (gap, missed[:3])
    conns = [r for r in recs if r["type"] == "connection"]
    assert len(conns) == 30
    assert sum(1 for r in conns if r["anomalies"].get("previous_segment_not_captured")) >= 15


@needs_capture
def test_drops_are_said_on_a_terminal_while_capturing():
    """With stderr on a terminal, the drops are said when rawfin sees them (the first block after
    the gap), before the capture ends."""
    import pty

    ls = listener()
    port = ls.getsockname()[1]
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "rawfin", "live", "-i", "lo", "-f", f"tcp port {port}", "-B", "256",
           "--format", "jsonl"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=dict(os.environ, PYTHONPATH=ROOT))
    os.close(slave)
    said = b""

    def read_for(seconds):
        nonlocal said
        import select
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    said += os.read(master, 4096)
                except OSError:
                    return
    try:
        read_for(0)
        while b"capturing on" not in said:
            read_for(0.2)
            assert p.poll() is None, said
        _across_a_stop(p, ls)
        read_for(0.5)
        assert p.poll() is None
        assert b"the kernel dropped" in said and b"before frame" in said, said
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
        read_for(0.2)
        os.close(master)
        ls.close()
    assert b"dropped by the kernel" in said.split(b"the kernel dropped")[-1]


@needs_capture
@pytest.mark.parametrize("ignore_sigint", [False, True], ids=["plain", "sigint-ignored"])
def test_sigterm_writes_everything(tmp_path, ignore_sigint):
    """SIGTERM ends live as Ctrl-C does: the capture file complete (tshark reads every frame),
    the table and the closing line printed. Also for a shell's background job, which starts
    with SIGINT ignored (SIGINT then does nothing, SIGTERM still ends it cleanly)."""
    ls = listener()
    port = ls.getsockname()[1]
    out = tmp_path / "term.pcap"
    pre = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    p = _live_proc("-i", "lo", "-f", f"tcp port {port}", "--write", str(out), preexec_fn=pre)
    _burst(ls, 20)
    client_first(ls)
    if ignore_sigint:
        p.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert p.poll() is None, "SIGINT was ignored by the parent: it must stay ignored"
    p.send_signal(signal.SIGTERM)
    stdout, err = p.communicate(timeout=30)
    ls.close()
    assert p.returncode == 0, err
    assert "(stopped by SIGTERM)" in err and "Traceback" not in err
    import re
    m = re.search(r"(\d+) segments received, 0 dropped by the kernel; 21 connections", err)
    assert m, err
    summary = stdout.split("summary:")[1]
    assert summary.count("four_way") + summary.count("three_way") == 21, stdout
    assert not list(tmp_path.glob("*.part"))
    if shutil.which("tshark"):
        r = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.number"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.split()) == int(m.group(1))


@needs_capture
def test_any_interface_sees_loopback_once(tmp_path):
    """-i any (Linux cooked capture, as tcpdump -i any): the loopback's packets once each, the same
    records as -i lo, and a --write file in LINKTYPE_LINUX_SLL2 that tshark and rawfin read."""
    ls = listener()
    port = ls.getsockname()[1]
    path = tmp_path / "any.pcap"
    flt = f"tcp port {port}"
    p_any = _live_proc("-i", "any", "-f", flt, "--format", "jsonl", "--write", str(path))
    p_lo = _live_proc("-i", "lo", "-f", flt, "--format", "jsonl")
    client_first(ls)
    server_first(ls)
    time.sleep(0.3)
    for p in (p_any, p_lo):
        p.send_signal(signal.SIGTERM)
    (out_any, err_any), (out_lo, err_lo) = p_any.communicate(timeout=30), p_lo.communicate(timeout=30)
    ls.close()
    assert p_any.returncode == 0 and p_lo.returncode == 0, err_any + err_lo
    any_recs, lo_recs = _records(out_any), _records(out_lo)

    def essence(recs):
        return [(r["type"], r.get("endpoint"), r.get("from"), r.get("to"), r.get("close")) for r in recs
                if r["type"] != "stats"]
    assert essence(any_recs) == essence(lo_recs)
    assert any_recs[-1]["segments"] == lo_recs[-1]["segments"] >= 14
    from rawfin.wire.pcapio import open_capture
    with open_capture(str(path)) as reader:
        assert reader.interfaces[0].linktype == 276
        assert sum(1 for _ in reader) == any_recs[-1]["received"]
    r = subprocess.run([sys.executable, "-m", "rawfin", "analyze", str(path), "--format", "jsonl"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    closes = [x["close"] for x in _records(r.stdout) if x["type"] == "connection"]
    assert len(closes) == 2 and all(c in ("four_way", "three_way") for c in closes), r.stdout + r.stderr
    if shutil.which("tshark"):
        t = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "sll.pkttype", "-e", "tcp.dstport"],
                           capture_output=True, text=True, timeout=60)
        assert t.returncode == 0 and len(t.stdout.splitlines()) == any_recs[-1]["received"], t.stderr


@needs_capture
@pytest.mark.parametrize("size, message", [("0", "1 KiB or more"), ("-5", "1 KiB or more"),
                                           ("lots", "whole number of KiB"),
                                           ("1000000000000", "more than half of this machine's memory")])
def test_buffer_sizes_the_kernel_cannot_take_are_clear_errors(size, message):
    r = _cli("live", "-i", "lo", "--duration", "1", "-B", size)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


@needs_capture
def test_a_tiny_buffer_is_raised_to_two_pages():
    r = _cli("live", "-i", "lo", "--duration", "0.2", "-B", "1", "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    stats = _records(r.stdout)[-1]
    assert stats["type"] == "stats" and stats["buffer_kib"] == 8


def test_live_table_fits_the_width():
    """Each event is one line while the capture runs; a cause longer than the room left wraps
    under itself, so nothing runs past the width (COLUMNS, else 100)."""
    import io

    from rawfin.commands.live import LiveTable

    buf = io.StringIO()
    t = LiveTable(buf, kernel=False, origin_ns=0, width=100)
    t.write({"type": "transition", "conn": 7, "frame": 3, "time": 1.5, "endpoint": "[2001:db8::1]:443",
             "peer": "[2001:db8::2]:50000", "from": "FIN_WAIT_1", "to": "FIN_WAIT_2",
             "cause": "rcv ACK ack=2993822859 of FIN seq=2993822858 and a much longer explanation of it"})
    t.write({"type": "connection", "conn": 7, "client": "[2001:db8::2]:50000", "server": "[2001:db8::1]:443",
             "close": "four_way", "active_closer": "[2001:db8::2]:50000", "server_active_close": False,
             "final": {"[2001:db8::2]:50000": "TIME_WAIT", "[2001:db8::1]:443": "CLOSED"}, "anomalies": {}})
    t.close({}, None)
    lines = buf.getvalue().splitlines()
    assert max(len(x) for x in lines) <= 100, lines
    event = [x for x in lines if "FIN_WAIT_1" in x][0]
    cont = lines[lines.index(event) + 1]
    assert cont.strip() and len(cont) - len(cont.lstrip()) == event.index("rcv ACK")   # under the cause
    assert "summary:" in lines and any("four_way" in x for x in lines)


@needs_capture
@pytest.mark.parametrize("engine", ["c", "python"])
def test_max_connections_evicts_and_counts_live(engine):
    """live takes analyze's limits (one vocabulary): with --max-connections 1, three connections
    kept open make two evictions: each evicted one's record says so, the stats record and the
    closing line count them."""
    from rawfin.capture import engine as lane

    if engine == "c" and not lane.available():
        pytest.skip("rawfin.capture._engine is not built")
    ls = listener()
    port = ls.getsockname()[1]
    p = _live_proc("-i", "lo", "-f", f"tcp port {port}", "--format", "jsonl", "--max-connections", "1",
                   "--engine", engine)
    held = []
    for _ in range(3):
        c = socket.create_connection(("127.0.0.1", port))
        held += [c, ls.accept()[0]]
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    for s in held + [ls]:
        s.close()
    assert p.returncode == 0, err
    recs = _records(out)
    closes = [r["close"] for r in recs if r["type"] == "connection"]
    assert closes.count("evicted") == 2 and len(closes) == 3, out
    assert recs[-1]["type"] == "stats" and recs[-1]["evicted"] == 2 and recs[-1]["timeout"] == 0
    assert "2 evicted to stay within --max-connections" in err, err

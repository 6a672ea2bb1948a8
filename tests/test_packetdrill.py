"""`rawfin packetdrill`: packetdrill's language, and the project's own scripts against both targets.

The scripts in tests/packetdrill/ are the project's own, written in packetdrill's
language: close and shutdown in every state, SO_LINGER 0, unread data at close,
data after close, simultaneous close, lost final ACK, FIN retransmission, TIME_WAIT
re-ACK and RST in TIME_WAIT. Each must pass against rawfin's endpoint (virtual
time: this proves the core) and against the Linux kernel in a namespace of
rawfin's own (this proves the runner; skipped without root/TUN).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernelcaps import NO_NETNS, needs_netns
from rawfin.cli import main
from rawfin.sim import pktrun, pktscript as ps
from rawfin.sim.pktsock import RawfinTarget

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = sorted(glob.glob(os.path.join(HERE, "packetdrill", "*.pkt")))
NAMES = [os.path.basename(s) for s in SCRIPTS]
# the machine is shared while the suite runs: timing is checked, with room for a busy scheduler
KERNEL_TOLERANCE_US = 20000


# -- the language ---------------------------------------------------------------------------

def test_parse_events_times_and_packets():
    s = ps.parse(
        "--tolerance_usecs=7000\n"
        "`../common/defaults.sh`\n"
        "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n"
        "+0 setsockopt(3, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0\n"
        "+.1 < S 0:0(0) win 32792 <mss 1000,sackOK,nop,nop,nop,wscale 7>\n"
        "*  > S. 0:0(0) ack 1 <...>\n"
        "+.01...0.2 read(4, ..., 1000) = -1 ECONNRESET (Connection reset by peer)\n"
        "+.3~+.400 > F. 1:1(0) ack 1 <nop,nop,TS val 100 ecr 200>\n"
        "0.5~0.7 > R 1:1(0) win 0\n", "t.pkt")
    assert s.option("tolerance_usecs") == "7000"
    assert s.init_command.command == "../common/defaults.sh"
    e = s.events
    assert [x.line for x in e] == [3, 4, 5, 6, 7, 8, 9]
    assert e[1].action.args[3].get("linger").value == 0
    syn = e[2].action
    assert (syn.direction, syn.flags, syn.seq, syn.end, syn.window, e[2].time.usecs) == ("<", "S", 0, 0, 32792,
                                                                                         100000)
    assert [o.text() for o in syn.options] == ["mss 1000", "sackOK", "nop", "nop", "nop", "wscale 7"]
    assert e[3].time.kind == "any" and e[3].action.options is None
    rd = e[4].action
    assert (rd.name, rd.end_usecs, rd.errno, rd.note) == ("read", 200000, "ECONNRESET", "Connection reset by peer")
    assert (e[5].time.kind, e[5].time.usecs, e[5].time.end_usecs) == ("relative_range", 300000, 400000)
    assert e[5].action.options[2].values == (100, 200)
    assert (e[6].time.kind, e[6].action.text()) == ("absolute_range", "R 1:1(0) win 0")


SOCKET = "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n"


@pytest.mark.parametrize("text,line,words,code", [
    # not the language: 65, "syntax error"
    (SOCKET + "+0 < S 0:0(0) <mss 1460>\n", 2, "window must be specified", 65),
    (SOCKET + "\n+0 > S 0:10(0)\n", 3, "inconsistent TCP sequence", 65),
    ("1 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n", 1, "first event should be at time 0", 65),
    (SOCKET + "+0 < S 0:0(0) win 1 <...>\n", 2, "only be used with outbound", 65),
    (SOCKET + "* write(3, ..., 1) = 1\n", 2, "<star> can only be used", 65),
    ("0 socket(..., SOCK_STREAM, IPPROTO_TCP = 3\n", 1, "expected ',' or ')'", 65),
    (SOCKET + "+0 > Q 0:0(0)\n", 2, "bad TCP flags", 65),
    (SOCKET + "+0 < S 0:0(0) win 1 <mss 1460,nop>\n", 2, "not padded", 65),
    # the language, but not what rawfin runs: 69, "not supported by rawfin"
    (SOCKET + "+0 %{ print(tcpi_probes) }%\n", 2, "rawfin runs only assert statements", 69),
    (SOCKET + "+0 %{ assert __import__('os').system('true') }%\n", 2, "outside what rawfin runs", 69),
    (SOCKET + "+0 %{ assert tcpi_snd_cwnd_clamp > 1 }%\n", 2, "a TCP_INFO field rawfin does not read", 69),
    (SOCKET + "+0 < S 0:0(0) win 1 <mss 1460,FO 1234,nop,nop>\n", 2, "Fast Open", 69),
    (SOCKET + "+0 < udp(10)\n", 2, "UDP packets", 69),
    (SOCKET + "+0 > S.1 0:0(0)\n", 2, "AccECN", 69),
    (SOCKET + "+0 > (flowlabel 0x1) S 0:0(0)\n", 2, "flow labels", 69),
])
def test_script_errors_and_refusals_name_the_line(text, line, words, code):
    with pytest.raises(ps.ScriptError) as ei:
        ps.parse(text, "bad.pkt")
    what = "syntax error" if code == 65 else "not supported by rawfin"
    assert (ei.value.line, ei.value.exit_code, isinstance(ei.value, ps.Unsupported)) == (line, code, code == 69)
    assert words in str(ei.value) and str(ei.value).startswith(f"bad.pkt:{line}: {what}: ")


@pytest.mark.parametrize("event,words", [
    ("+0 epoll_create(1) = 5", "system call epoll_create() is not supported"),
    ("+0 ioctl(3, SIOCGSTAMP, ...) = 0", "unknown symbol SIOCGSTAMP"),
    ("+0 setsockopt(3, SOL_TCP, TCP_INFO, [1], 4) = 0", "socket option TCP_INFO"),
    ("+0 `rm -rf /tmp/x`", "shell command 'rm -rf /tmp/x'"),
    ("+0 `sysctl -q kernel.panic=1`", "only net.* settings"),
    ("+0 `cat /proc/net/tcp | wc -l`", "pipes"),
])
def test_runtime_features_are_refused_before_anything_runs(event, words):
    s = ps.parse(f"0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n{event}\n", "x.pkt")
    with pytest.raises(ps.Unsupported) as ei:
        pktrun.check_script(s, pktrun.make_config(s))
    assert ei.value.line == 2 and words in str(ei.value)


def test_shell_subset_reads_a_defaults_file(tmp_path):
    (tmp_path / "d.sh").write_text("#!/bin/bash\n# comment\nip tcp_metrics flush all > /dev/null 2>&1\n"
                                   'sysctl -q net.ipv4.tcp_rmem="4096 540000 $((15*1024*1024))"\n'
                                   "sysctl -q net.ipv4.tcp_timestamps=1 net.ipv4.tcp_sack=1\n"
                                   "tc qdisc add dev tun0 root pfifo\n")
    cmds = pktrun.parse_shell("./d.sh", "s.pkt", 3, str(tmp_path))
    assert [c.kind for c in cmds] == ["tcp-metrics-flush", "sysctl", "sysctl", "qdisc"]
    assert cmds[1].sysctls == (("net.ipv4.tcp_rmem", "4096 540000 15728640"),)
    assert cmds[2].sysctls == (("net.ipv4.tcp_timestamps", "1"), ("net.ipv4.tcp_sack", "1"))
    (tmp_path / "bad.sh").write_text("sysctl -q net.ipv4.tcp_sack=1\ncurl http://example.com\n")
    with pytest.raises(ps.Unsupported) as ei:
        pktrun.parse_shell("./bad.sh", "s.pkt", 3, str(tmp_path))
    assert ei.value.line == 3 and "bad.sh: shell command 'curl" in str(ei.value)


_TOKENS = st.sampled_from(["0", "+0", "+.1", "*", "...", "<", ">", "S", "S.", "F.", "R", ".", "0:0(0)",
                           "1:1001(1000)", "ack", "1", "win", "257", "<mss 1460>", "<...>", "socket(", ")",
                           "(", ",", "=", "-1", "EPIPE", "`sysctl -q net.ipv4.tcp_sack=1`", "%{ x }%", "{", "}",
                           "[1]", "SOL_SOCKET", "\n", "//c\n", "/*", "*/", '"', "`", "~", "0.5~0.7", "--mss=1",
                           "TS", "val", "ecr", "sack", "1:2", "\u00e9", "\x00"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=120), st.lists(_TOKENS, max_size=40).map(" ".join)))
def test_any_text_parses_or_gives_the_projects_error_with_a_line(text):
    try:
        ps.parse(text, "fuzz.pkt")
    except ps.ScriptError as e:
        assert e.path == "fuzz.pkt" and 1 <= e.line <= text.count("\n") + 1
        assert e.exit_code in (65, 69)


# -- the project's scripts against rawfin's endpoint -------------------------------------------

def _run(path: str, target, **ov):
    s = ps.parse_file(path)
    cfg = pktrun.make_config(s, ov)
    return pktrun.Runner(s, target, cfg).run()


@pytest.mark.parametrize("path", SCRIPTS, ids=NAMES)
def test_project_script_against_rawfin(path):
    o = _run(path, RawfinTarget())
    assert o.ok, o.failure
    assert all(r.verdict == "ok" for r in o.lines)
    assert o.wire and all(w.sut_state for w in o.wire)


V6 = {"ip_version": "ipv6", "mtu": 1520, "local_ip": "fd3d:0a0b:17d6::1", "remote_ip": "fd3d:fa7b:d17d::1"}
V6_SCRIPTS = [os.path.join(HERE, "packetdrill", n) for n in ("close-established.pkt", "client-close-first.pkt",
                                                             "data-after-close.pkt")]


@pytest.mark.parametrize("path", V6_SCRIPTS, ids=os.path.basename)
def test_project_script_over_ipv6_against_rawfin(path):
    # as Linux's selftests run them (ksft_runner.sh's IPv6 arguments: the MTU gives an MSS of 1460)
    o = _run(path, RawfinTarget(), **V6)
    assert o.ok, o.failure
    assert all(":" in w.seg.src for w in o.wire)


def test_rawfin_run_shows_both_sides_states():
    o = _run(os.path.join(HERE, "packetdrill", "close-established.pkt"), RawfinTarget())
    out = [w for w in o.wire if w.direction == "out"]
    # our FIN leaves in FIN_WAIT_1; the ACK of the peer's FIN in TIME_WAIT, the peer then CLOSED
    assert (out[1].script_text.startswith("F. 1:1(0) ack 1"), out[1].sut_state) == (True, "FIN_WAIT_1")
    assert (out[-1].sut_state, out[-1].peer_state) == ("TIME_WAIT", "CLOSED")
    assert [t[4] for t in o.transitions][-4:] == ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]


def test_mismatch_is_reported_in_packetdrills_words(tmp_path, capsys):
    src = open(os.path.join(HERE, "packetdrill", "linger-zero.pkt")).read()
    shutil.copy(os.path.join(HERE, "packetdrill", "defaults.sh"), tmp_path)
    bad = tmp_path / "expects-fin.pkt"
    bad.write_text(src.replace("+0 > R. 1:1(0) ack 1\n", "+0 > F. 1:1(0) ack 1\n"))
    line = bad.read_text().splitlines().index("   +0 > F. 1:1(0) ack 1") + 1
    rc = main(["packetdrill", "--against", "rawfin", str(bad)])
    out, err = capsys.readouterr()
    assert rc == 1
    want = f"script line {line}: expected F. 1:1(0) ack 1, got R. 1:1(0) ack 1"
    assert want in err and f"FAIL: {want}" in out
    assert "tcp_fin: expected 1 vs actual 0" in err


def test_cli_exit_codes(tmp_path, capsys):
    unsupported = tmp_path / "u.pkt"
    unsupported.write_text("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n\n+0 %{ print(1) }%\n")
    syntax = tmp_path / "s.pkt"
    syntax.write_text("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 > S 0:1(0)\n")
    good = os.path.join(HERE, "packetdrill", "close-in-syn-sent.pkt")
    assert main(["packetdrill", "--against", "rawfin", str(unsupported)]) == 69
    assert "u.pkt:3: not supported by rawfin: %{ }% block statement 'print(1)'" in capsys.readouterr().err
    assert main(["packetdrill", "--against", "rawfin", str(syntax)]) == 65
    assert "s.pkt:2: syntax error" in capsys.readouterr().err
    assert main(["packetdrill", "--against", "rawfin", str(tmp_path / "none.pkt")]) == 66
    capsys.readouterr()
    # several scripts: every good one still runs and is reported; the code is the worst
    assert main(["packetdrill", "--against", "rawfin", good, str(unsupported)]) == 69
    out = capsys.readouterr().out
    assert "PASS: all" in out and "refused" in out


def test_jsonl_and_capture(tmp_path, capsys):
    path = os.path.join(HERE, "packetdrill", "unread-data-close.pkt")
    cap = tmp_path / "u.pcap"
    assert main(["packetdrill", "--against", "rawfin", "--format", "jsonl", "--write", str(cap), path]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    kinds = {r["type"] for r in recs}
    assert {"line", "segment", "transition", "result"} <= kinds and recs[-1]["ok"] is True
    rst = [r for r in recs if r["type"] == "segment" and r["flags"] & 4]
    assert rst and rst[0]["script_text"].startswith("R. 1:1(0) ack 1001") and rst[0]["sut_state"] == "CLOSED"
    from rawfin.wire.pcapio import iter_frames
    from rawfin.wire.decode import decode
    segs = [decode(f.linktype, f.data, f.orig_len) for f in iter_frames(str(cap))]
    assert len(segs) == len([r for r in recs if r["type"] == "segment"])
    assert segs[-1].flags & 4 and segs[-1].ack == rst[0]["ack"]
    if shutil.which("tshark"):
        r = subprocess.run(["tshark", "-r", str(cap), "-T", "fields", "-e", "tcp.flags.reset"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.split()[-1] in ("1", "True")


def test_fault_injection_is_applied_and_reported(capsys):
    # the final ACK the script sends is dropped: rawfin, in LAST_ACK, never sees it, so the later
    # segment is not answered with a RST: the script fails where the lost ACK matters
    path = os.path.join(HERE, "packetdrill", "close-in-close-wait.pkt")
    rc = main(["packetdrill", "--against", "rawfin", "--drop", "client:pure-ack#3", path])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "faults on the link:" in out and "drop client:pure-ack#3" in out
    assert "never reached the rawfin" in out
    assert "expected R 2:2(0)" in err


# -- the kernel -----------------------------------------------------------------------------------

def _kernel_run(path: str):
    from rawfin.linux.pktkernel import KernelTarget
    o = _run(path, KernelTarget(), tolerance_usecs=KERNEL_TOLERANCE_US)
    if not o.ok and "timing error" in (o.failure or ""):
        o = _run(path, KernelTarget(), tolerance_usecs=KERNEL_TOLERANCE_US)   # a busy machine, once
    return o


@needs_netns
@pytest.mark.parametrize("path", SCRIPTS, ids=NAMES)
def test_project_script_against_the_kernel(path, no_leftovers):
    o = _kernel_run(path)
    assert o.ok, o.failure
    assert all(r.verdict == "ok" for r in o.lines)


@needs_netns
@pytest.mark.parametrize("path", V6_SCRIPTS[:2], ids=os.path.basename)
def test_project_script_over_ipv6_against_the_kernel(path, no_leftovers):
    from rawfin.linux.pktkernel import KernelTarget
    o = _run(path, KernelTarget(), tolerance_usecs=KERNEL_TOLERANCE_US, **V6)
    if not o.ok and "timing error" in (o.failure or ""):
        o = _run(path, KernelTarget(), tolerance_usecs=KERNEL_TOLERANCE_US, **V6)
    assert o.ok, o.failure
    assert all(w.seg.src.startswith("fd3d:") for w in o.wire)


@needs_netns
def test_kernel_run_capture_and_states(tmp_path, capsys, no_leftovers):
    path = os.path.join(HERE, "packetdrill", "data-after-close.pkt")
    cap = tmp_path / "k.pcap"
    rc = main(["packetdrill", "--tolerance-usecs", str(KERNEL_TOLERANCE_US), "--write", str(cap), path])
    out, err = capsys.readouterr()
    if rc != 0 and "timing error" in err:
        rc = main(["packetdrill", "--tolerance-usecs", str(KERNEL_TOLERANCE_US), "--write", str(cap), path])
        out, err = capsys.readouterr()
    assert rc == 0, err
    assert "PASS: all" in out and "against the kernel (Linux" in out
    if "tracepoint sock:inet_sock_set_state" in out:
        assert "ESTABLISHED → FIN_WAIT_1" in out and "FIN_WAIT_1 → FIN_WAIT_2" in out
    from rawfin.wire.pcapio import iter_frames
    from rawfin.wire.decode import decode
    segs = [decode(f.linktype, f.data, f.orig_len) for f in iter_frames(str(cap))]
    assert [s.flags & 4 for s in segs][-4:] == [0, 4, 0, 4]     # data, RST, data again, RST again


def test_kernel_target_without_privilege_says_so():
    if NO_NETNS is None and os.geteuid() == 0:
        pytest.skip("runs as root with namespaces: the refusal cannot be seen here")
    r = subprocess.run([sys.executable, "-m", "rawfin", "packetdrill", SCRIPTS[0]], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode in (69, 77) and "--against kernel" in r.stderr


# -- %{ }% blocks: assertions on TCP_INFO, evaluated without exec/eval ------------------------------------------
def test_code_block_assertions_hold_or_fail_in_packetdrills_words():
    from rawfin.sim import pktcode
    spec = ps.parse(SOCKET + "+0 %{ assert tcpi_probes == 6, tcpi_probes; \\\n  assert tcpi_backoff == 0 }%\n",
                    "c.pkt").events[1].action
    assert spec.fields == {"tcpi_probes", "tcpi_backoff"}
    assert pktcode.evaluate(spec, {"tcpi_probes": 6, "tcpi_backoff": 0}) is None
    assert pktcode.evaluate(spec, {"tcpi_probes": 2, "tcpi_backoff": 0}) == \
        "AssertionError: 2 (assert tcpi_probes == 6, tcpi_probes, where tcpi_probes = 2)"
    ranged = pktcode.parse_code("K = 5000\nassert K <= tcpi_rtt <= 20000, 'srtt=%d us' % tcpi_rtt")
    assert pktcode.evaluate(ranged, {"tcpi_rtt": 4999}).startswith("AssertionError: srtt=4999 us")
    state = pktcode.parse_code("assert tcpi_state == TCP_CLOSE and not tcpi_options & TCPI_OPT_SACK")
    assert pktcode.evaluate(state, {"tcpi_state": 7, "tcpi_options": 1}) is None


def test_code_block_reading_a_field_rawfin_does_not_model_is_refused_against_rawfin_only(tmp_path, capsys):
    f = tmp_path / "rcvrtt.pkt"
    f.write_text(SOCKET + "+0 %{ assert tcpi_rcv_rtt == 0 }%\n")
    assert main(["packetdrill", "--against", "rawfin", str(f)]) == 69
    assert "rcvrtt.pkt:2: not supported by rawfin: %{ }% block reads tcpi_rcv_rtt" in capsys.readouterr().err
    script = ps.parse_file(str(f))
    pktrun.check_script(script, pktrun.make_config(script, {}))     # the kernel has every field


def test_parse_tcp_info_reads_linux_struct_layout():
    import struct
    from rawfin.linux.pktkernel import parse_tcp_info
    from rawfin.sim.pktcode import FIELDS
    raw = bytes([1, 0, 2, 3, 4, 7, 0x87, 0]) + struct.pack("=24I", *range(100, 124)) + bytes(100)
    info = parse_tcp_info(raw)
    assert (info["tcpi_state"], info["tcpi_retransmits"], info["tcpi_probes"], info["tcpi_backoff"]) == (1, 2, 3, 4)
    assert (info["tcpi_snd_wscale"], info["tcpi_rcv_wscale"]) == (7, 8)
    assert (info["tcpi_rto"], info["tcpi_rtt"], info["tcpi_total_retrans"]) == (100, 115, 123)
    assert set(info) == set(FIELDS)

"""tshark, a real dissector, reads crafted connections: checksums good, no TCP analysis warnings.

Captures are written with Scapy's own PcapWriter (rawfin.wire.pcapio is a separate
piece of work), nanosecond pcap, link type chosen by Scapy from the first
packet (LINKTYPE_IPV4 228 / LINKTYPE_IPV6 229; one IP version per file).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from rawfin.sim import craft

TSHARK = shutil.which("tshark")
pytestmark = [
    pytest.mark.tshark,
    pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (apt-get install tshark)"),
]

C4, S4 = ("192.0.2.2", 50001), ("192.0.2.1", 80)
C6, S6 = ("2001:db8::2", 50001), ("2001:db8::1", 80)
REQUESTS = [(b"GET /big HTTP/1.1\r\n\r\n", b"B" * 7000), (b"ping", b""), (b"", b"server push")]
CLOSES = ["4way", "3way", "fin_with_data", "simultaneous", "rst", "rst_ack"]

# TCP expert-info messages a clean connection produces (chat/note level) and the one
# warning an abortive close is expected to produce (Wireshark rates RST a warning).
EXPECTED_EXPERT = (
    "Connection establish request (SYN)",
    "Connection establish acknowledge (SYN+ACK)",
    "Connection finish (FIN)",
    "This frame initiates the connection closing",
    "This frame undergoes the connection closing",
    "Connection reset (RST)",
)
PI_NOTE = 0x00400000
PI_WARN = 0x00600000

FIELDS = ["frame.number", "frame.time_epoch", "ip.checksum.status", "tcp.checksum.status",
          "tcp.seq_raw", "tcp.ack_raw", "tcp.flags", "tcp.len",
          "_ws.expert.severity", "_ws.expert.message"]


def write_pcap(path, segs):
    from scapy.utils import EDecimal, PcapWriter

    from rawfin.wire import codec

    with PcapWriter(str(path), nano=True, sync=True) as w:
        for s in segs:
            pkt = codec.to_scapy(s)
            pkt.time = EDecimal(s.time_ns) / 1_000_000_000
            w.write(pkt)


def tshark(path, *args):
    cmd = [TSHARK, "-n", "-r", str(path), "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
           "-o", "tcp.relative_sequence_numbers:FALSE", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def dissect(path):
    field_args = [a for f in FIELDS for a in ("-e", f)]
    text = tshark(path, "-T", "fields", *field_args, "-E", "separator=\t", "-E", "aggregator=;",
                  "-E", "occurrence=a")
    return [dict(zip(FIELDS, line.split("\t"))) for line in text.splitlines()]


@pytest.mark.parametrize("close", CLOSES)
@pytest.mark.parametrize("closer", ["client", "server"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_tshark_accepts_crafted_connection(tmp_path, close, closer, family):
    client, server = (C4, S4) if family == "ipv4" else (C6, S6)
    # ISNs just below the wrap, so the data and the close cross 2**32.
    segs = craft.connection(client, server, 2**32 - 3000, 2**32 - 2, requests=REQUESTS,
                            close=close, closer=closer)
    path = tmp_path / f"{family}-{close}-{closer}.pcap"
    write_pcap(path, segs)

    frames = dissect(path)
    assert len(frames) == len(segs)
    for seg, fr in zip(segs, frames):
        where = f"frame {fr['frame.number']} ({seg.describe()})"
        assert fr["tcp.checksum.status"] == "1", f"{where}: TCP checksum not good: {fr}"
        if family == "ipv4":
            assert fr["ip.checksum.status"] == "1", f"{where}: IP checksum not good: {fr}"
        # tshark sees exactly the numbers we crafted, and our timestamps.
        assert (int(fr["tcp.seq_raw"]), int(fr["tcp.ack_raw"])) == (seg.seq, seg.ack), where
        assert int(fr["tcp.flags"], 16) == int(seg.flags), where
        assert int(fr["tcp.len"]) == seg.data_len, where
        assert fr["frame.time_epoch"] == f"{seg.time_ns // 10**9}.{seg.time_ns % 10**9:09d}", where
        messages = [m for m in fr["_ws.expert.message"].split(";") if m]
        severities = [int(x, 0) for x in fr["_ws.expert.severity"].split(";") if x]
        assert len(messages) == len(severities), where
        for sev, msg in zip(severities, messages):
            # Chat-level items from the application dissector (HTTP on port 80) are fine;
            # anything at note level or above must be one of TCP's expected ones.
            if sev >= PI_NOTE:
                assert msg.startswith(EXPECTED_EXPERT), f"{where}: unexpected expert info {msg!r}"
            if sev >= PI_WARN:
                assert seg.rst and msg.startswith("Connection reset"), f"{where}: warning {msg!r}"

    # No "ACKed unseen segment", "previous segment not captured", dup ACK, retransmission, ...
    flagged = tshark(path, "-Y", "tcp.analysis.flags", "-T", "fields", "-e", "frame.number",
                     "-e", "_ws.expert.message")
    assert flagged.strip() == "", f"TCP analysis flagged frames:\n{flagged}"
    # The whole file is one TCP stream.
    assert set(tshark(path, "-T", "fields", "-e", "tcp.stream").split()) == {"0"}


def test_tshark_sees_the_seed_close(tmp_path):
    """The seed's x=1000 / y=2000 close, handshake in front, as tshark reads it."""
    segs = craft.timed(craft.handshake(C4, S4, 999, 1999) + craft.close_4way(C4, S4, 1000, 2000))
    path = tmp_path / "seed.pcap"
    write_pcap(path, segs)
    frames = dissect(path)
    assert [(f["tcp.flags"], f["tcp.seq_raw"], f["tcp.ack_raw"]) for f in frames[3:]] == [
        ("0x0011", "1000", "2000"),
        ("0x0010", "2000", "1001"),
        ("0x0011", "2000", "1001"),
        ("0x0010", "1001", "2001"),
    ]
    assert tshark(path, "-Y", "tcp.analysis.flags").strip() == ""

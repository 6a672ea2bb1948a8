"""The lane as ``rawfin live`` drives it (:class:`rawfin.capture.engine.Stream`): frames one at a
time, capture time passing between them with no frame (``tick``), the final-ACK hold at 0.

Its output must be the Python observer's byte for byte, as for ``analyze``: every shipped
capture and every corpus capture is fed to both, with a tick between each pair of frames
(half-way through the gap, as the live loop lets time pass while it waits), with the
default MSL and with 1 s (so TIME_WAIT's 2MSL ends in a tick, not at a frame). No root
needed: the frames come from files.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from rawfin.capture import engine
from rawfin.core.units import SEC
from rawfin.wire.pcapio import open_capture
from rawfin.core.errors import CaptureError

import shared_corpus
from rawfin.render.records import json_line

REPO = Path(__file__).resolve().parents[1]
FILES = sorted(REPO.glob("captures/*.pcap")) + list(shared_corpus.FILES)

needs_lane = pytest.mark.skipif(not engine.available(), reason=f"rawfin.capture._engine is not built: {engine.WHY_NOT}")


def frames_fit(path: Path) -> bool:
    """Every time within 0..2**62 ns (a live capture's always are; analyze leaves other files to
    the reference)."""
    try:
        with open_capture(str(path)) as reader:
            return all(0 <= fr.time_ns < 1 << 62 for fr in reader)
    except CaptureError:
        return True


def stream_out(path: Path, *, lane: bool, msl_s: float) -> bytes:
    buf = io.BytesIO()
    s = engine.Stream(buf.write, msl_ns=int(msl_s * SEC), hold_ns=0, lane=lane, json_of=json_line(None))
    prev = None
    try:
        with open_capture(str(path)) as reader:
            for fr in reader:
                if not 0 <= fr.time_ns < 1 << 62:
                    break
                if prev is not None and fr.time_ns > prev + 1:
                    s.tick(prev + (fr.time_ns - prev) // 2)     # time passes before the next frame
                s.feed(fr.linktype, fr.data, fr.orig_len, fr.frame, fr.time_ns)
                s.flush()
                prev = fr.time_ns if prev is None else max(prev, fr.time_ns)
    except CaptureError:
        pass                      # damaged files: what came before the damage is compared
    if prev is not None:
        s.tick(prev + 3600 * SEC)  # an hour later, nothing more came: every TIME_WAIT has ended
    counts = s.finish()
    counts["by_close"] = sorted(counts["by_close"].items())
    buf.write(repr(sorted(counts.items())).encode())
    return buf.getvalue()


@needs_lane
@pytest.mark.parametrize("msl_s", [30.0, 1.0])
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_live_lane_equals_python_observer(path, msl_s):
    if not frames_fit(path):
        pytest.skip("frame times beyond 64-bit nanoseconds: never a live capture's")
    ref = stream_out(path, lane=False, msl_s=msl_s)
    got = stream_out(path, lane=True, msl_s=msl_s)
    if got != ref:
        a, b = ref.decode().splitlines(), got.decode().splitlines()
        i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        pytest.fail(f"{path.name}: line {i + 1} differs\n python: {a[i] if i < len(a) else '<end>'}\n"
                    f" lane:   {b[i] if i < len(b) else '<end>'}")


@needs_lane
def test_time_alone_ends_time_wait():
    """No frame after the close: TIME_WAIT -> CLOSED is written by a tick at 2MSL, on the
    frames' clock, and not before."""
    buf = io.BytesIO()
    s = engine.Stream(buf.write, msl_ns=SEC, hold_ns=0, json_of=json_line(None))
    last = 0
    with open_capture(str(REPO / "captures" / "normal-close.pcap")) as reader:
        for fr in reader:
            s.feed(fr.linktype, fr.data, fr.orig_len, fr.frame, fr.time_ns)
            last = fr.time_ns
    s.flush()
    tw = last - SEC // 1000          # the client entered TIME_WAIT at the server's FIN, 1 ms before the end
    s.tick(tw + 2 * SEC - 1)
    assert b'"from":"TIME_WAIT"' not in buf.getvalue()
    s.tick(tw + 2 * SEC)
    out = buf.getvalue().decode()
    assert '"from":"TIME_WAIT","to":"CLOSED"' in out and '"frame":null' in out
    # the connection is done: its record is out before the capture ends
    s.tick(last + 10 * SEC)
    assert '"type":"connection"' in buf.getvalue().decode()

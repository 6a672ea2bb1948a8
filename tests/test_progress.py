"""The progress bar (rawfin/render/progress.py) and the readers' progress callback."""

from __future__ import annotations

from pathlib import Path

from rawfin.capture.analysis import records
from rawfin.render.progress import Progress
from rawfin.wire.pcapio import PcapWriter, iter_frames

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


def test_the_bar_draws_on_one_line_at_most_four_times_a_second_and_clears(capsys):
    bar = Progress("a-long-capture-name-that-does-not-fit-the-line.pcap", 1000, "always")
    assert bar.callback == bar.update
    bar.update(500, 16384)
    bar.update(600, 32768)                    # within 0.25 s: not drawn again
    bar.done()
    err = capsys.readouterr().err
    drawn, cleared = err.split("\r")[1], err.split("\r")[2]
    assert drawn.startswith("a-long-capture-name-that-does-n…: [##########          ]  50.0%  16,384 frames")
    assert len(drawn) <= 99 and cleared == " " * 99 and "32,768" not in err


def test_off_unless_asked_or_on_a_terminal(capsys):
    for mode in ("never", "auto"):            # pytest's stderr is no terminal
        bar = Progress("x.pcap", None, mode)
        assert bar.callback is None
        bar.update(1, 1)
        bar.done()
    assert capsys.readouterr().err == ""


def test_the_reference_reader_reports_every_16384_frames(tmp_path):
    frames = list(iter_frames(CAPTURES / "normal-close.pcap"))
    path = tmp_path / "many.pcap"
    w = PcapWriter(str(path), frames[0].linktype)
    for i in range(16_500):
        fr = frames[i % len(frames)]
        w.write(fr.data, fr.time_ns + i * 1000)
    w.close()
    calls = []
    for _ in records(str(path), progress=lambda pos, n: calls.append((pos, n))):
        pass
    assert [n for _, n in calls] == [16384]
    assert all(0 < pos <= path.stat().st_size for pos, _ in calls)

"""The C writer (``rawfin/render/_writer.c``) against the Python sinks (``rawfin/render/sinks.py``).

``rawfin analyze``'s table, ``--summary``, csv and ``--summary`` JSON lines are written in C
from the lane's JSON lines; ``--engine python`` (and a machine without a C compiler) writes them
with the Python sinks. The two must give the same characters. Compared here, in-process:

* on the records of every shipped capture, every corpus file, and the emulator-generated and
  hand-made captures of ``tests/enginegen.py`` (at 100 columns; the shipped and corpus ones
  also at 60 and 200);
* on random record streams made to hurt: unicode, escapes, quotes and commas, words longer
  than a line, times out of order or missing, many anomalies of a kind, records of no
  connection, several files, VLANs; fed in random chunks that cut lines (and characters);

plus the layout rules themselves (wrapping, fitting, terminal width) and the memory rule:
the table holds nothing of a connection once its record has come.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

import enginegen
import shared_corpus
from rawfin.capture import engine
from rawfin.core.errors import CaptureError
from rawfin.render import sinks, tables
from rawfin.render.records import json_line, record, to_json

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "captures").glob("*.pcap"))
CORPUS_FILES = shared_corpus.FILES

needs_writer = pytest.mark.skipif(sinks._writer is None, reason="rawfin.render._writer is not built")
MODES = [("table", False), ("table", True), ("csv", False), ("csv", True), ("jsonl", True)]


def lane_output(path: Path, msl: float = 30.0) -> tuple[bytes, float | None]:
    """The records of a capture as JSON lines (the lane's, or the reference's when it declines)."""
    chunks: list[bytes] = []
    try:
        ok = engine.run(str(path), chunks.append, msl_s=msl, json_of=json_line(None)) if engine.available() else False
    except CaptureError:
        ok = True
    if not ok:
        from rawfin.capture.analysis import records
        chunks = []
        try:
            for r in records(str(path), msl_s=msl, record=record):
                chunks.append((to_json(r) + "\n").encode())
        except CaptureError:
            pass
    return b"".join(chunks), engine.first_time(str(path))


def python_side(fmt: str, summary: bool, files: list[tuple[bytes, float | None]], width: int) -> str:
    out = io.StringIO()
    sink = sinks.make_sink(fmt, out=out, summary=summary, width=width)
    for data, origin in files:
        sink.start_file()
        sink.set_origin(origin)
        for line in data.splitlines():
            sink.write(json.loads(line))
        sink.end_file()
    sink.close()
    return out.getvalue()


def c_side(fmt: str, summary: bool, files: list[tuple[bytes, float | None]], width: int,
           rng: random.Random | None = None) -> str:
    buf = io.BytesIO()
    sink = sinks.FastSink(fmt, out=io.TextIOWrapper(buf, encoding="utf-8", newline=""), summary=summary,
                          width=width)
    for data, origin in files:
        sink.start_file()
        sink.set_origin(origin)
        if rng is None:
            sink.feed(data)
        else:                       # cut anywhere: mid-line, mid-character
            k = 0
            while k < len(data):
                n = rng.choice((1, 2, 3, 7, 64, 1000, 1 << 16))
                sink.feed(data[k:k + n])
                k += n
        sink.end_file()
    sink.close()
    return buf.getvalue().decode("utf-8")


def first_difference(a: str, b: str) -> str:
    la, lb = a.splitlines(), b.splitlines()
    i = next((k for k, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
    return (f"line {i + 1} ({len(la)} and {len(lb)} lines)\n  python: {la[i] if i < len(la) else '(ends)'!r}\n"
            f"  c:      {lb[i] if i < len(lb) else '(ends)'!r}")


def agree(files: list[tuple[bytes, float | None]], width: int = 100, rng=None, what: str = "") -> None:
    for fmt, summary in MODES:
        a = python_side(fmt, summary, files, width)
        b = c_side(fmt, summary, files, width, rng)
        assert a == b, f"{what} --format {fmt}{' --summary' if summary else ''} at {width} columns: " \
                       + first_difference(a, b)


# --------------------------------------------------------------------------- real captures

@needs_writer
@pytest.mark.parametrize("path", SHIPPED + CORPUS_FILES, ids=lambda p: p.name)
def test_captures(path):
    data = lane_output(path)
    for width in (100, 60, 200):
        agree([data], width, what=path.name)
    agree([lane_output(path, msl=1.0)], what=f"{path.name} --msl 1")


@needs_writer
def test_several_files_in_one_sink():
    files = [lane_output(p) for p in SHIPPED[:4] + CORPUS_FILES[:4]]
    agree(files, what="several files")
    agree(files, 70, random.Random(1), what="several files, fed in random chunks")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("writers")
    paths = []
    for case in enginegen.generated_cases():
        p = d / f"{case.name}.pcap"
        enginegen.write_case(case, p)
        paths.append(p)
    for name in enginegen.edge_cases():
        try:
            paths.append(Path(enginegen.write_edge(name, d)))
        except Exception:           # the edge cases that are not a file (a directory, a missing file)
            pass
    return paths


@needs_writer
def test_generated_and_edge_captures(made):
    bad = []
    for p in made:
        if not p.is_file():
            continue
        data = lane_output(p)
        try:
            agree([data], what=p.name)
        except AssertionError as e:
            bad.append(str(e))
    assert not bad, f"{len(bad)} of {len(made)} captures differ; the first:\n{bad[0]}"


# --------------------------------------------------------------------------- random records

WORDS = ["rcv", "FIN", "seq=4294967295", "ack=0", "snd", "é", "☃", "日本語の文字", "a,b", 'say "hi"', "back\\slash",
         "tab\there", "x" * 130, "[2001:db8::1]:443", "192.0.2.1:80", "", "  ", "nl\nline", "semi;colon",
         "\u2028", "a_b_c_d_e_f_g_h_i_j_k_l_m", "cr\r"]
STATES = ["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "TIME_WAIT", "LAST_ACK", "SYN_RECEIVED"]
KINDS = ["retransmission", "fin_retransmission", "final_ack_lost", "malformed_packet", "odd kind ☃"]


def random_records(rng: random.Random, file: str | None = None) -> list[dict]:
    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, k)))

    def time():
        return rng.choice([None, round(rng.uniform(1.7e9, 1.7e9 + 100), 6), round(rng.uniform(0, 5), 6), 0.0,
                           1e-05, 123456789.5, rng.uniform(-3, 3)])

    recs = []
    conns = list(range(rng.randint(1, 12)))
    eps = {c: [rng.choice(WORDS[13:15]) + str(c), "192.0.2.9:" + str(1000 + c)] for c in conns}
    for c in conns:
        for _ in range(rng.randint(0, 15)):
            if rng.random() < 0.6:
                r = {"type": "transition", "conn": c, "frame": rng.choice([None, rng.randint(1, 10**9)]),
                     "time": time(), "endpoint": rng.choice(eps[c] + [text(2)]), "peer": eps[c][1],
                     "from": rng.choice(STATES), "to": rng.choice(STATES), "cause": text(12)}
            else:
                r = {"type": "anomaly", "conn": rng.choice([c, c, None]), "frame": rng.choice([None, rng.randint(1, 99)]),
                     "time": time(), "endpoint": rng.choice(eps[c]), "kind": rng.choice(KINDS), "detail": text(25)}
            if file is not None:
                r["file"] = file
            recs.append(r)
    rng.shuffle(conns)
    for c in conns:
        closer = rng.choice([None, eps[c][0], eps[c][1]])
        r = {"type": "connection", "conn": c, "client": eps[c][0], "server": eps[c][1],
             "server_guessed": rng.random() < 0.3, "active_closer": closer,
             "passive_closer": None if closer is None else eps[c][1] if closer == eps[c][0] else eps[c][0],
             "close": rng.choice(["four_way", "reset", "none", "", "incomplete"]),
             "final": {eps[c][0]: rng.choice(STATES), eps[c][1]: rng.choice(STATES)},
             "first_frame": 1, "last_frame": rng.randint(1, 10**6), "first_time": time(), "last_time": time(),
             "packets": rng.randint(1, 10**6), "mid_stream": rng.random() < 0.2,
             "server_active_close": rng.random() < 0.2,
             "anomalies": {k: rng.randint(1, 9) for k in rng.sample(KINDS, rng.randint(0, 3))}}
        if rng.random() < 0.2:
            r["vlan"] = [rng.randint(1, 4094) for _ in range(rng.randint(1, 2))]
        if file is not None:
            r["file"] = file
        recs.append(r)
    if rng.random() < 0.3:
        r = {"type": "anomaly", "conn": None, "frame": 3, "time": time(), "endpoint": "-", "kind": "malformed_packet",
             "detail": text(8)}
        if file is not None:
            r["file"] = file
        recs.insert(rng.randrange(len(recs) + 1), r)
    return recs


@needs_writer
@pytest.mark.parametrize("seed", range(60))
def test_random_records(seed):
    rng = random.Random(seed)
    nfiles = rng.choice([1, 1, 2, 3])
    files = []
    for i in range(nfiles):
        recs = random_records(rng, f"dir/cap ☃ {i}.pcap" if nfiles > 1 else None)
        data = "".join(to_json(r) + "\n" for r in recs).encode()
        files.append((data, rng.choice([None, 1.7e9, 0.5])))
    width = rng.choice([40, 60, 80, 100, 137, 250])
    agree(files, width, rng if seed % 2 else None, what=f"seed {seed}")


@needs_writer
def test_many_anomalies_of_a_kind_keep_the_earliest_and_count_the_rest():
    recs = []
    for i in range(200):    # arriving latest first: the table lists the earliest four by time
        recs.append({"type": "anomaly", "conn": 0, "frame": 1000 - i, "time": 100.0 - i / 10, "endpoint": "a",
                     "kind": "retransmission", "detail": f"number {i}"})
    recs.append({"type": "connection", "conn": 0, "client": "a", "server": "b"})
    data = "".join(to_json(r) + "\n" for r in recs).encode()
    agree([(data, 0.0)])
    text = python_side("table", False, [(data, 0.0)], 100)
    assert [ln.split()[1] for ln in text.splitlines() if "frame" in ln and "retransmission" in ln] == \
        ["801", "802", "803", "804"]
    assert "... and 196 more retransmission" in text


@needs_writer
def test_the_table_lets_go_of_a_connection_once_its_record_has_come():
    from rawfin.render import _writer
    got = []
    w = _writer.Writer(sinks.layout("table", False, 100), got.append)
    for c in range(1000):
        lines = [{"type": "transition", "conn": c, "frame": 1, "time": 1.0, "endpoint": "a", "peer": "b",
                  "from": "CLOSED", "to": "SYN_SENT", "cause": "snd SYN"},
                 {"type": "connection", "conn": c, "client": "a", "server": "b"}]
        w.feed("".join(to_json(r) + "\n" for r in lines).encode())
        assert w.pending() == 0
    w.close()
    assert b"".join(got).count(b"CLOSED \xe2\x86\x92 SYN_SENT") == 1000


@needs_writer
def test_a_line_that_is_not_a_record_is_an_error_not_a_crash():
    from rawfin.render import _writer
    w = _writer.Writer(sinks.layout("csv", False, 100), lambda b: None)
    with pytest.raises(ValueError, match="not a record"):
        w.feed(b'{"type":"transition",\n')
    with pytest.raises(ValueError):
        _writer.Writer({"format": "table"}, print)


# --------------------------------------------------------------------------- the layout rules

def test_wrap():
    assert tables.wrap("short", 10) == ["short"]
    assert tables.wrap("a b c d e f", 5) == ["a b c", "d e f"]
    assert tables.wrap("[2001:db8:1::d67]:32770", 21) == ["[2001:db8:1::d67]:", "32770"]
    assert tables.wrap("abcdefghij", 4) == ["abcd", "efgh", "ij"]
    assert tables.wrap("kind: a detail here", 14, "  > ", "    ") == ["  > kind: a", "    detail", "    here"]


def test_fit_gives_up_padding_then_free_text_then_the_widest():
    # padding first (left to right)
    assert tables.fit([7, 8, 10], [5, 8, 6], [5, 4, 8], 26) == [5, 8, 9]
    # the free-text column down to the floor, then the widest
    assert tables.fit([10, 30, 20], [10, 30, 20], [2, 2, 2], 50, first=(1,)) == [10, 16, 20]
    assert tables.fit([10, 30, 20], [10, 30, 20], [2, 2, 2], 40, first=(1,)) == [10, 12, 14]


def test_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "123")
    assert tables.terminal_width(io.StringIO()) == 123
    monkeypatch.setenv("COLUMNS", "7")
    assert tables.terminal_width(io.StringIO()) == tables.MIN_WIDTH
    monkeypatch.delenv("COLUMNS")
    assert tables.terminal_width(io.StringIO()) == 100


def test_without_the_compiled_writer_the_python_sinks_write(monkeypatch):
    monkeypatch.setattr(sinks, "_writer", None)
    for fmt, summary in MODES:
        sink = sinks.make_sink(fmt, out=io.StringIO(), summary=summary, fast=True)
        assert not isinstance(sink, sinks.FastSink)


# --------------------------------------------------------------------------- inferred transitions (issue 14)

def _inferred_stream() -> bytes:
    from rawfin.core.events import Transition
    from rawfin.core.states import Input, State
    from rawfin.render.records import transition_record
    t = Transition(endpoint="192.0.2.1:80", peer="192.0.2.2:50001", from_=State.FIN_WAIT_1, to=State.FIN_WAIT_2,
                   input=Input.RCV_ACK_OF_FIN, cause="rcv ACK ack=2202 of FIN seq=2201", time_ns=1_700_000_000_000_000_000,
                   frame=9, alternative=(State.CLOSING,),
                   inferred="the FIN in frame 7 arrived and its ACK was lost before the capture point")
    plain = Transition(endpoint="192.0.2.2:50001", peer="192.0.2.1:80", from_=State.ESTABLISHED,
                       to=State.FIN_WAIT_1, input=Input.CLOSE, cause="snd FIN seq=1101",
                       time_ns=1_700_000_000_000_000_000, frame=7)
    conn = {"type": "connection", "conn": 0, "client": "192.0.2.2:50001", "server": "192.0.2.1:80",
            "server_guessed": False, "active_closer": "192.0.2.2:50001", "passive_closer": "192.0.2.1:80",
            "close": "simultaneous", "final": {"192.0.2.2:50001": "TIME_WAIT", "192.0.2.1:80": "TIME_WAIT"},
            "first_frame": 1, "last_frame": 12, "first_time": 1700000000.0, "last_time": 1700000000.5,
            "packets": 12, "mid_stream": False, "server_active_close": False, "anomalies": {}}
    recs = [transition_record(plain, 0), transition_record(t, 0), conn]
    return "".join(to_json(r) + "\n" for r in recs).encode()


def test_an_inferred_transition_is_marked_with_its_alternative():
    data = _inferred_stream()
    rec = json.loads(data.splitlines()[1])
    assert rec["inferred"] == ("or CLOSING if the FIN in frame 7 arrived and its ACK was lost before the "
                               "capture point")
    assert rec["alternative"] == ["CLOSING"]
    assert "inferred" not in json.loads(data.splitlines()[0])
    table = python_side("table", False, [(data, 1700000000.0)], 200)
    (row,) = [ln for ln in table.splitlines() if ln.startswith("9 ")]
    assert "FIN_WAIT_1 → FIN_WAIT_2 ?" in row and "[or CLOSING if the FIN in frame 7 arrived" in row
    (plain,) = [ln for ln in table.splitlines() if ln.startswith("7 ")]
    assert "?" not in plain and "[" not in plain


@needs_writer
@pytest.mark.parametrize("width", [60, 100, 200])
def test_an_inferred_transition_the_compiled_writer_agrees(width):
    agree([(_inferred_stream(), 1700000000.0)], width=width, what="inferred")

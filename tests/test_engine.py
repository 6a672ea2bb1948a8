"""The compiled engine against the reference: byte for byte, on every capture we have or can make.

``rawfin analyze --format jsonl --engine python FILE`` (the reference) and ``... --engine c
FILE`` (``rawfin/capture/_engine.c``) must write the same stdout bytes, the same stderr and exit
with the same code. This module runs both on:

* every capture shipped in ``captures/`` and every file of the corpus (``../shared/corpus``,
  marked ``corpus``), with the default MSL and with ``--msl 1`` (so TIME_WAIT's expiry
  runs inside the capture);
* a few small benchmark captures (``tools/bench.py``'s ``generate``: thousands of overlapping
  connections, IPv4 and IPv6, sequence wrap, every kind of close);
* about 200 captures from rawfin's emulator with random faults, merged connections and port
  reuse, and about 230 hand-made edge cases (``tests/enginegen.py``);
* a few command lines with several files and odd ``--msl`` values;
* rules.HALF_OPEN's timeouts and ``--max-connections``, made small enough to act (on the shipped,
  corpus, generated and hand-made captures);
* the other formats (table, ``--summary``, csv, ``--summary`` csv and JSON lines), which the C
  writer writes on one side and the Python sinks on the other: on the shipped captures, the
  corpus (table) and some of the command lines.

On a mismatch the message names both command lines, the exit codes, and the first differing
line of stdout and of stderr (with the column where they part), not the whole output.

Which two sides are compared: ``RAWFIN_ENGINE_DIFF``

* ``c`` (default): ``--engine python`` against ``--engine c``; skipped when
  ``import rawfin.capture._engine`` fails;
* ``python``: ``--engine python`` against itself (the harness, with or without a build);
* ``self``: the command without any ``--engine`` against itself (for a tree without the
  option).

With other rules: ``RAWFIN_ENGINE_RULES=FILE`` (a file written like ``rawfin/core/rules.py``) puts
them in force in every command, for both sides (tests/test_rules.py does it with one rule changed).

How the commands run: ``RAWFIN_ENGINE_RUNNER``

* ``fork`` (default): one server process (``sys.executable``) imports rawfin once, then
  forks a fresh child per command, which runs ``python -m rawfin ...`` (``runpy``, as
  ``-m`` does) with its stdout and stderr on files and stdin on /dev/null; as many children
  at once as there are CPUs. About ten times cheaper than starting Python for each of the
  ~2,000 commands; ``test_fork_runner_is_faithful`` checks it against the next one;
* ``spawn``: ``subprocess`` of ``sys.executable -m rawfin ...`` for every command.

Commands are batched: the first test of a group runs the commands of every selected test of
the group, and each test then checks its own pair.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import itertools
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import enginegen
import shared_corpus

REPO = Path(__file__).resolve().parents[1]
CORPUS = shared_corpus.ROOT
SHIPPED = sorted(p.name for p in (REPO / "captures").glob("*.pcap"))
CORPUS_FILES = sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file()) if CORPUS.is_dir() \
    else []
MSLS = (None, "1")                       # the default (30 s) and 1 s
TIMEOUT_S = 300

MODE = os.environ.get("RAWFIN_ENGINE_DIFF", "c")
if MODE not in ("c", "python", "self"):
    raise ValueError(f"RAWFIN_ENGINE_DIFF={MODE!r}: use c, python or self")
RUNNER = os.environ.get("RAWFIN_ENGINE_RUNNER", "fork")
if RUNNER not in ("fork", "spawn"):
    raise ValueError(f"RAWFIN_ENGINE_RUNNER={RUNNER!r}: use fork or spawn")
#: (name, flags) of the two sides
SIDES = {"c": (("python", ["--engine", "python"]), ("c", ["--engine", "c"])),
         "python": (("python", ["--engine", "python"]), ("python again", ["--engine", "python"])),
         "self": (("reference", []), ("reference again", []))}[MODE]

_why_not = None
if MODE == "c":
    try:
        importlib.import_module("rawfin.capture._engine")
    except Exception as exc:  # ImportError, or a broken build
        _why_not = f"rawfin.capture._engine is not built: {type(exc).__name__}: {exc}"
pytestmark = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")


# --------------------------------------------------------------------------- running commands

_SERVER = r'''
import ctypes, json, os, runpy, signal, sys, traceback

proto_in = os.fdopen(os.dup(0), "r")
proto_out = os.fdopen(os.dup(1), "w")
_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 0)                      # the children's stdin; and nothing stray reaches the protocol
os.dup2(_null, 1)
os.close(_null)

# what `python -m rawfin analyze` imports anyway, so every child starts from there
import rawfin
for _m in ("rawfin.cli", "rawfin.commands.analyze", "rawfin.capture.analysis", "rawfin.render.sinks", "rawfin.wire.decode",
           "rawfin.wire.pcapio", "rawfin.core.observer", "rawfin.capture.engine", "rawfin.capture._engine"):
    try:
        __import__(_m)
    except Exception:
        pass
try:                                   # and what building the parser imports (tabulate, metadata...)
    rawfin.cli.build_parser().parse_args(["analyze", "--format", "jsonl", "x.pcap"])
except BaseException:
    pass
MAIN = os.path.join(os.path.dirname(rawfin.__file__), "__main__.py")
# other rules in force for every command (RAWFIN_ENGINE_RULES: a file like rawfin/core/rules.py)
if os.environ.get("RAWFIN_ENGINE_RULES"):
    import importlib.util
    from rawfin.core import machine as _machine
    _spec = importlib.util.spec_from_file_location("rules_in_force", os.environ["RAWFIN_ENGINE_RULES"])
    _rules = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_rules)
    _machine.install(_machine.compile_rules(_rules))
# the lane's compaction of SYN-alone connections made to act (RAWFIN_ENGINE_COMPACT_AFTER: 0 at once)
if os.environ.get("RAWFIN_ENGINE_COMPACT_AFTER"):
    import rawfin.capture.engine as _lane
    _lane.COMPACT_AFTER = int(os.environ["RAWFIN_ENGINE_COMPACT_AFTER"])
libc = ctypes.CDLL(None)
import gc
gc.freeze()                            # the children need not copy pages to count references


def _exit_status(code):
    # what the interpreter does with SystemExit(code)
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def child(job):
    status = 1
    try:
        os.close(proto_in.fileno())
        os.close(proto_out.fileno())
        fo = os.open(job["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        fe = os.open(job["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fo, 1)
        os.dup2(fe, 2)
        os.close(fo)
        os.close(fe)
        signal.alarm(job["timeout"])
        sys.argv = [MAIN] + job["argv"]
        try:
            runpy.run_module("rawfin", run_name="__main__", alter_sys=True)
            status = 0
        except SystemExit as e:
            status = _exit_status(e.code)
        except BaseException:
            traceback.print_exc()
            status = 1
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        for f in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                if f is not None:
                    f.flush()
            except BaseException:
                pass
        libc.fflush(None)              # a C engine's own stdio buffers
        os._exit(status)


for line in proto_in:
    req = json.loads(line)
    jobs = list(enumerate(req["jobs"]))
    results = [None] * len(jobs)
    running = {}
    while jobs or running:
        while jobs and len(running) < req["parallel"]:
            i, job = jobs.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                child(job)
            running[pid] = i
        pid, status = os.wait()
        results[running.pop(pid)] = os.waitstatus_to_exitcode(status)
    proto_out.write(json.dumps(results) + "\n")
    proto_out.flush()
'''


def _parallel() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 2


@dataclass
class Outcome:
    """One finished command: its exit code and where its stdout and stderr went."""

    argv: list[str]
    rc: int
    out: Path
    err: Path

    @property
    def stdout(self) -> bytes:
        return self.out.read_bytes()

    @property
    def stderr(self) -> bytes:
        return self.err.read_bytes()

    def discard(self) -> None:
        for p in (self.out, self.err):
            p.unlink(missing_ok=True)


#: ``python -m rawfin ARGV`` with rawfin.capture.engine.COMPACT_AFTER set first (the spawn runner's)
_SPAWN_COMPACT = ("import runpy, sys; import rawfin.capture.engine as lane; lane.COMPACT_AFTER = int(sys.argv.pop(1)); "
                  "runpy.run_module('rawfin', run_name='__main__', alter_sys=True)")


class Runner:
    """Runs ``python -m rawfin ARGV`` commands, many at once, outputs on files in ``workdir``.

    ``rules``: a file of other rules for every command (like rawfin/core/rules.py; the fork runner
    only), else ``RAWFIN_ENGINE_RULES`` from the environment. ``compact_after``: the lane's
    rawfin.capture.engine.COMPACT_AFTER in every command (0: every SYN-alone connection made compact at once)."""

    def __init__(self, workdir: Path, how: str = RUNNER, rules: str | None = None,
                 compact_after: int | None = None) -> None:
        self.workdir = workdir
        self.how = how
        self.env = dict(os.environ)
        self.compact_after = compact_after
        if rules is not None:
            self.env["RAWFIN_ENGINE_RULES"] = str(rules)
        if compact_after is not None:
            self.env["RAWFIN_ENGINE_COMPACT_AFTER"] = str(compact_after)
        if self.env.get("RAWFIN_ENGINE_RULES") and how != "fork":
            raise ValueError("RAWFIN_ENGINE_RULES needs RAWFIN_ENGINE_RUNNER=fork")
        self.count = itertools.count()
        self.server: subprocess.Popen | None = None
        self.log = workdir / "fork-server.log"

    def _paths(self) -> tuple[Path, Path]:
        n = next(self.count)
        return self.workdir / f"{n}.out", self.workdir / f"{n}.err"

    def run_many(self, argvs: list[list[str]]) -> list[Outcome]:
        paths = [self._paths() for _ in argvs]
        if self.how == "fork":
            rcs = self._fork(argvs, paths)
        else:
            rcs = self._spawn(argvs, paths)
        return [Outcome(a, rc, o, e) for a, rc, (o, e) in zip(argvs, rcs, paths)]

    def _spawn(self, argvs, paths) -> list[int]:
        start = [sys.executable, "-m", "rawfin"] if self.compact_after is None else \
            [sys.executable, "-c", _SPAWN_COMPACT, str(self.compact_after)]

        def one(argv, out, err) -> int:
            with open(out, "wb") as fo, open(err, "wb") as fe:
                try:
                    return subprocess.run([*start, *argv], stdin=subprocess.DEVNULL,
                                          stdout=fo, stderr=fe, cwd=REPO, timeout=TIMEOUT_S).returncode
                except subprocess.TimeoutExpired:
                    return -9
        with concurrent.futures.ThreadPoolExecutor(_parallel()) as pool:
            return list(pool.map(lambda job: one(job[0], *job[1]), zip(argvs, paths)))

    def _fork(self, argvs, paths) -> list[int]:
        if self.server is None or self.server.poll() is not None:
            self.server = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=open(self.log, "ab"), cwd=REPO,
                                           text=True, env=self.env)
        jobs = [{"argv": list(a), "out": str(o), "err": str(e), "timeout": TIMEOUT_S} for a, (o, e) in
                zip(argvs, paths)]
        try:
            self.server.stdin.write(json.dumps({"jobs": jobs, "parallel": _parallel()}) + "\n")
            self.server.stdin.flush()
            line = self.server.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise RuntimeError(f"the fork server died: {self.log.read_text(errors='replace')[-3000:]}")
        return json.loads(line)

    def close(self) -> None:
        if self.server is not None:
            self.server.stdin.close()
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.server.kill()
            self.server.stdout.close()
            self.server = None


# --------------------------------------------------------------------------- comparing


def _lines(b: bytes) -> list[bytes]:
    """The lines of ``b``, each with its newline (the last one may have none)."""
    parts = b.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _show(line: bytes | None, col: int) -> str:
    if line is None:
        return "(no such line: the output ends before it)"
    text = line.decode("utf-8", "replace")
    tail = ""
    if text.endswith("\n"):
        text = text[:-1]
    else:
        tail = "  (no newline at the end)"
    if len(text) > 300:
        start = max(0, min(col - 100, len(text) - 300))
        text = ("…" if start else "") + text[start:start + 300] + ("…" if start + 300 < len(text) else "")
    return text + tail


def first_difference(a: bytes, b: bytes, names: tuple[str, str]) -> str:
    """Where two outputs part: line number, column, and each side's line (cut to 300 characters)."""
    la, lb = _lines(a), _lines(b)
    i = next((k for k, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
    x = la[i] if i < len(la) else None
    y = lb[i] if i < len(lb) else None
    col = 0
    if x is not None and y is not None:
        col = next((k for k, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
    width = max(len(n) for n in names)
    na, nb = a.count(b"\n"), b.count(b"\n")
    return (f"first difference at line {i + 1}" + (f", column {col + 1}" if x is not None and y is not None else "")
            + f" ({names[0]}: {na} lines, {len(a):,} bytes; {names[1]}: {nb} lines, {len(b):,} bytes)\n"
            f"      {names[0]:<{width}}: {_show(x, col)}\n"
            f"      {names[1]:<{width}}: {_show(y, col)}")


def _rc_text(rc: int) -> str:
    if rc >= 0:
        return str(rc)
    import signal
    try:
        name = signal.Signals(-rc).name
    except ValueError:
        name = f"signal {-rc}"
    return f"{rc} (killed by {name}" + (f", after {TIMEOUT_S} s" if name in ("SIGALRM", "SIGKILL") else "") + ")"


def mismatch(left: Outcome, right: Outcome, context: str = "") -> str | None:
    """None when the two runs agree; else what differs, short enough to read."""
    (ln, _), (rn, _) = SIDES
    out_l, out_r = left.stdout, right.stdout
    err_l, err_r = left.stderr, right.stderr
    if left.rc == right.rc and out_l == out_r and err_l == err_r:
        return None
    lines = [f"{ln} and {rn} disagree",
             f"  {ln}: python -m rawfin {shlex.join(left.argv)}",
             f"  {rn}: python -m rawfin {shlex.join(right.argv)}"]
    lines.append(f"  exit code: {ln} {_rc_text(left.rc)}, {rn} {_rc_text(right.rc)}" if left.rc != right.rc else
                 f"  exit code: both {_rc_text(left.rc)}")
    for what, x, y in (("stdout", out_l, out_r), ("stderr", err_l, err_r)):
        lines.append(f"  {what}: " + ("identical" if x == y else first_difference(x, y, (ln, rn))))
    if context:
        lines.append("  " + context.replace("\n", "\n  "))
    return "\n".join(lines)


def analyze_argv(args: list[str], engine_flags: list[str]) -> list[str]:
    """``analyze --format jsonl --engine X ARGS``."""
    return ["analyze", "--format", "jsonl", *engine_flags, *args]


class Differ:
    """Runs each command on both sides (in batches) and compares the pairs."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.done: dict[tuple[str, ...], tuple[Outcome, Outcome]] = {}

    def prefetch(self, batch: list[list[str]]) -> None:
        todo = [tuple(a) for a in batch if tuple(a) not in self.done]
        todo = list(dict.fromkeys(todo))
        if not todo:
            return
        (_, lf), (_, rf) = SIDES
        outs = self.runner.run_many([analyze_argv(list(a), lf) for a in todo] +
                                    [analyze_argv(list(a), rf) for a in todo])
        for k, a in enumerate(todo):
            self.done[a] = (outs[k], outs[len(todo) + k])

    def check(self, args: list[str], batch: list[list[str]] = (), context: str = "") -> None:
        key = tuple(args)
        if key not in self.done:
            self.prefetch([list(key), *batch])
        left, right = self.done.pop(key)
        try:
            problem = mismatch(left, right, context)
        finally:
            left.discard()
            right.discard()
        if problem:
            pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engine")


@pytest.fixture(scope="session")
def runner(work):
    d = work / "outputs"
    d.mkdir()
    r = Runner(d)
    yield r
    r.close()


@pytest.fixture(scope="session")
def differ(runner) -> Differ:
    return Differ(runner)


def siblings(request) -> list[dict]:
    """The parameters of every selected test of the calling test's function, in run order."""
    me = request.node
    return [item.callspec.params for item in request.session.items
            if getattr(item, "originalname", None) == me.originalname and item.parent is me.parent
            and hasattr(item, "callspec")]


def check_group(differ: Differ, request, args_of, context: str = "") -> None:
    """Compare this test's command; the first test of its function runs every selected sibling's too.

    ``args_of(params)`` gives the arguments after ``--engine X`` for a test's parameters.
    A sibling whose arguments cannot be made (its capture failed to build) is left out of the
    batch: its own test reports the error.
    """
    mine = args_of(request.node.callspec.params)
    batch = []
    for p in siblings(request):
        try:
            batch.append(args_of(p))
        except Exception:
            pass
    differ.check(mine, batch, context)


def msl_args(msl: str | None) -> list[str]:
    return [] if msl is None else ["--msl", msl]


def _msl_id(m):
    return "msl-default" if m is None else f"msl-{m}"


# --------------------------------------------------------------------------- 1. shipped captures and the corpus


@pytest.mark.parametrize("msl", MSLS, ids=_msl_id)
@pytest.mark.parametrize("capture", SHIPPED)
def test_shipped_capture(differ, request, capture, msl):
    check_group(differ, request, lambda p: [*msl_args(p["msl"]), str(REPO / "captures" / p["capture"])])


needs_corpus = shared_corpus.needs_corpus


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("msl", MSLS, ids=_msl_id)
@pytest.mark.parametrize("name", CORPUS_FILES or ["(no corpus)"])
def test_corpus_file(differ, request, name, msl):
    check_group(differ, request, lambda p: [*msl_args(p["msl"]), str(CORPUS / p["name"])])


# --------------------------------------------------------------------------- 2. benchmark captures

BENCH = [  # (seed, rate): the default rate; sparse, so TIME_WAIT (60 s) expires inside; dense
    (1, 1000.0), (2, 20.0), (3, 20000.0)]


@pytest.fixture(scope="session")
def bench_dir(work) -> Path:
    import bench
    d = work / "bench"
    d.mkdir()
    for seed, rate in BENCH:
        bench.generate(d / f"bench-s{seed}-r{rate:g}.pcap", packets=20_000, connections=2_000, seed=seed, rate=rate)
    return d


@pytest.mark.parametrize("msl", MSLS, ids=_msl_id)
@pytest.mark.parametrize("seed,rate", BENCH, ids=[f"seed{s}-rate{r:g}" for s, r in BENCH])
def test_bench_capture(differ, request, bench_dir, seed, rate, msl):
    check_group(differ, request,
                lambda p: [*msl_args(p["msl"]), str(bench_dir / f"bench-s{p['seed']}-r{p['rate']:g}.pcap")],
                f"bench.generate(path, packets=20_000, connections=2_000, seed={seed}, rate={rate})")


# --------------------------------------------------------------------------- 3. generated by the emulator

GENERATED = {c.name: c for c in enginegen.generated_cases()}


class Made:
    """Captures written on first use into one session directory, with what each one holds."""

    def __init__(self, directory: Path, write) -> None:
        self.dir = directory
        self.write = write          # (name, directory) -> (path, description)
        self.paths: dict[str, tuple[Path, str]] = {}

    def path(self, name: str) -> Path:
        if name not in self.paths:
            self.paths[name] = self.write(name, self.dir)
        return self.paths[name][0]

    def about(self, name: str) -> str:
        self.path(name)
        return self.paths[name][1]


@pytest.fixture(scope="session")
def generated(work) -> Made:
    d = work / "generated"
    d.mkdir()

    def write(name, directory):
        path = directory / f"{name}.pcap"
        about = enginegen.write_case(GENERATED[name], path)
        return path, f"generated case {about}\n(again: python tests/enginegen.py DIR --only {name})"
    return Made(d, write)


@pytest.mark.parametrize("msl", MSLS, ids=_msl_id)
@pytest.mark.parametrize("case", sorted(GENERATED))
def test_generated_capture(differ, request, generated, case, msl):
    check_group(differ, request, lambda p: [*msl_args(p["msl"]), str(generated.path(p["case"]))],
                generated.about(case))


# --------------------------------------------------------------------------- 4. hand-made edge cases

@pytest.fixture(scope="session")
def edges(work) -> Made:
    d = work / "edge"
    d.mkdir()

    def write(name, directory):
        return (enginegen.write_edge(name, directory),
                f"edge case {name} (again: python tests/enginegen.py DIR --only {name})")
    return Made(d, write)


@pytest.mark.parametrize("msl", MSLS, ids=_msl_id)
@pytest.mark.parametrize("name", enginegen.edge_cases())
def test_edge_case(differ, request, edges, name, msl):
    check_group(differ, request, lambda p: [*msl_args(p["msl"]), str(edges.path(p["name"]))], edges.about(name))


# --------------------------------------------------------------------------- command lines

_CAPS = [str(REPO / "captures" / n) for n in ("normal-close.pcap", "port-reuse.pcap", "lost-final-ack.pcap")]

#: name -> arguments, from the edge-case captures (``e(NAME)``) and three shipped ones (``c[i]``)
VARIANTS = {
    "two-files": lambda c, e: [c[0], c[1]],
    "same-file-twice": lambda c, e: [c[0], c[0]],
    "three-files-one-cut-short": lambda c, e: [c[0], e("truncated-last-record"), c[2]],
    "files-pcapng-and-pcap": lambda c, e: [e("pcapng-basic"), c[1], e("link-sll-v6")],
    "a-missing-file-among-others": lambda c, e: [c[0], e("missing-file"), c[1]],
    "a-directory-among-others": lambda c, e: [c[0], e("a-directory")],
    "a-text-file-among-others": lambda c, e: [e("text-file"), c[2]],
    "unicode-file-names": lambda c, e: [e("çapture ☃ \"port-reuse\"", c[1]),
                                        e("çapture ☃ \"cut\"", e("truncated-last-record"))],
    "summary": lambda c, e: ["--summary", c[1]],
    "progress-never": lambda c, e: ["--progress", "never", c[0]],
    "msl-0.3": lambda c, e: ["--msl", "0.3", e("expiry-interleaved")],
    "msl-tiny": lambda c, e: ["--msl", "0.0000001", e("expiry-ties")],
    "msl-1e-9": lambda c, e: ["--msl", "1e-9", c[2]],
    "msl-huge": lambda c, e: ["--msl", "123456.789", e("reuse-after-2msl")],
    "msl-2.5": lambda c, e: ["--msl", "2.5", e("reuse-just-after-2msl-for-msl1")],
    "msl-repeated": lambda c, e: ["--msl", "5", "--msl", "1", c[1]],
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_command_line(differ, request, edges, variant):
    def e(name: str, copy_of: str | None = None) -> str:
        if copy_of is None:
            return str(edges.path(name))
        dst = edges.dir / f"{name}.pcap"         # a copy under a name that is not ASCII
        if not dst.exists():
            dst.write_bytes(Path(copy_of).read_bytes())
        return str(dst)
    check_group(differ, request, lambda p: VARIANTS[p["variant"]](_CAPS, e))


# --------------------------------------------------------------------------- the other formats

#: every format but plain JSON lines goes through the C writer on one side and the Python sinks on
#: the other (tests/test_writers.py compares the writers themselves on many more inputs)
FORMATS = {"table": ["--format", "table"], "summary": ["--format", "table", "--summary"],
           "csv": ["--format", "csv"], "summary-csv": ["--format", "csv", "--summary"],
           "summary-jsonl": ["--format", "jsonl", "--summary"]}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("capture", SHIPPED)
def test_format_shipped(differ, request, capture, fmt):
    check_group(differ, request, lambda p: [*FORMATS[p["fmt"]], str(REPO / "captures" / p["capture"])])


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("name", CORPUS_FILES or ["(no corpus)"])
def test_format_corpus_table(differ, request, name):
    check_group(differ, request, lambda p: ["--format", "table", "--msl", "1", str(CORPUS / p["name"])])


@pytest.mark.parametrize("fmt", ["table", "summary", "summary-csv"])
@pytest.mark.parametrize("variant", ["two-files", "three-files-one-cut-short", "files-pcapng-and-pcap",
                                     "a-missing-file-among-others", "unicode-file-names", "msl-0.3"])
def test_format_command_line(differ, request, edges, variant, fmt):
    def e(name: str, copy_of: str | None = None) -> str:
        if copy_of is None:
            return str(edges.path(name))
        dst = edges.dir / f"{name}.pcap"
        if not dst.exists():
            dst.write_bytes(Path(copy_of).read_bytes())
        return str(dst)
    check_group(differ, request, lambda p: [*FORMATS[p["fmt"]], *VARIANTS[p["variant"]](_CAPS, e)])


# --------------------------------------------------------------------------- the pile-up view

#: --by: the lane hands the view its moves (state codes, ns, a connection's names once) and the Python
#: observer's typed events, the reference the records; every socket counted (host) and samples written
BY = ["--by", "host", "--interval", "1s"]


@pytest.mark.parametrize("case", sorted(GENERATED))
def test_by_generated(differ, request, generated, case):
    check_group(differ, request, lambda p: [*BY, str(generated.path(p["case"]))], generated.about(case))


@pytest.mark.parametrize("name", enginegen.edge_cases())
def test_by_edge_case(differ, request, edges, name):
    check_group(differ, request, lambda p: [*BY, "--msl", "1", str(edges.path(p["name"]))], edges.about(name))


@pytest.mark.parametrize("name", enginegen.edge_cases())
def test_by_compact_at_once_edge_case(compact_differs, request, edges, name):
    check_group(compact_differs[0], request, lambda p: [*BY, str(edges.path(p["name"]))], edges.about(name))


# --------------------------------------------------------------------------- bounded memory

#: rules.HALF_OPEN's timeouts and --max-connections, small enough to act inside small captures
LIMITS = {"tight": ["--syn-timeout", "0.005", "--syn-ack-timeout", "0.002", "--max-connections", "1"],
          "few": ["--max-connections", "2", "--syn-timeout", "0.5"]}


@pytest.mark.parametrize("limits", list(LIMITS))
@pytest.mark.parametrize("capture", SHIPPED)
def test_limits_shipped(differ, request, capture, limits):
    check_group(differ, request, lambda p: [*LIMITS[p["limits"]], str(REPO / "captures" / p["capture"])])


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("limits", list(LIMITS))
@pytest.mark.parametrize("name", CORPUS_FILES or ["(no corpus)"])
def test_limits_corpus(differ, request, name, limits):
    check_group(differ, request, lambda p: [*LIMITS[p["limits"]], str(CORPUS / p["name"])])


@pytest.mark.parametrize("case", sorted(GENERATED))
def test_limits_generated(differ, request, generated, case):
    check_group(differ, request, lambda p: [*LIMITS["few"], str(generated.path(p["case"]))], generated.about(case))


@pytest.mark.parametrize("name", enginegen.edge_cases())
def test_limits_edge_case(differ, request, edges, name):
    check_group(differ, request, lambda p: [*LIMITS["tight"], str(edges.path(p["name"]))], edges.about(name))


# --------------------------------------------------------------------------- compact connections

#: The lane keeps a connection a SYN alone made in a compact form, and replays its SYN when more comes,
#: only under pressure (rawfin.capture.engine.COMPACT_AFTER newer connections born while it waits): the
#: captures above never get there. Here it is made to act: at once (0), as the lane did for every SYN
#: before, and after one newer connection (1), so the one that leaves the list may be compacted long after
#: its SYN, or answered already.


@pytest.fixture(scope="session")
def compact_differs(work):
    out = {}
    for n in (0, 1):
        d = work / f"outputs-compact-{n}"
        d.mkdir()
        out[n] = Differ(Runner(d, compact_after=n))
    yield out
    for dif in out.values():
        dif.runner.close()


@pytest.mark.parametrize("capture", SHIPPED)
def test_compact_at_once_shipped(compact_differs, request, capture):
    check_group(compact_differs[0], request, lambda p: [str(REPO / "captures" / p["capture"])])


@pytest.mark.parametrize("case", sorted(GENERATED))
def test_compact_at_once_generated(compact_differs, request, generated, case):
    check_group(compact_differs[0], request, lambda p: ["--msl", "1", str(generated.path(p["case"]))],
                generated.about(case))


@pytest.mark.parametrize("name", enginegen.edge_cases())
def test_compact_at_once_edge_case(compact_differs, request, edges, name):
    check_group(compact_differs[0], request, lambda p: [str(edges.path(p["name"]))], edges.about(name))


@pytest.mark.parametrize("seed,rate", BENCH, ids=[f"seed{s}-rate{r:g}" for s, r in BENCH])
def test_compact_after_one_bench(compact_differs, request, bench_dir, seed, rate):
    check_group(compact_differs[1], request,
                lambda p: ["--msl", "1", str(bench_dir / f"bench-s{p['seed']}-r{p['rate']:g}.pcap")],
                f"bench.generate(path, packets=20_000, connections=2_000, seed={seed}, rate={rate})")


@pytest.mark.parametrize("name", enginegen.edge_cases())
def test_compact_after_one_edge_case(compact_differs, request, edges, name):
    check_group(compact_differs[1], request, lambda p: ["--msl", "1", str(edges.path(p["name"]))], edges.about(name))


@pytest.mark.parametrize("name", enginegen.edge_cases())
def test_compact_after_one_timeouts_edge_case(compact_differs, request, edges, name):
    """rules.HALF_OPEN's timeouts give up on compact connections (with --max-connections the lane never
    compacts: the limit is the bound)"""
    check_group(compact_differs[1], request,
                lambda p: ["--syn-timeout", "0.005", "--syn-ack-timeout", "0.002", str(edges.path(p["name"]))],
                edges.about(name))


# --------------------------------------------------------------------------- relative sequence numbers

#: --seq relative: every text's sequence numbers relative to each side's base, formatted by the lane's
#: template interpreter (interp.c) on one side and rawfin.core.machine on the other
RELATIVE = ["--seq", "relative"]


@pytest.mark.parametrize("fmt", ["jsonl", "table"])
@pytest.mark.parametrize("capture", SHIPPED)
def test_relative_shipped(differ, request, capture, fmt):
    check_group(differ, request, lambda p: [*RELATIVE, "--format", p["fmt"], str(REPO / "captures" / p["capture"])])


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("name", CORPUS_FILES or ["(no corpus)"])
def test_relative_corpus(differ, request, name):
    check_group(differ, request, lambda p: [*RELATIVE, "--msl", "1", str(CORPUS / p["name"])])


@pytest.mark.parametrize("case", sorted(GENERATED))
def test_relative_generated(differ, request, generated, case):
    check_group(differ, request, lambda p: [*RELATIVE, str(generated.path(p["case"]))], generated.about(case))


@pytest.mark.parametrize("name", enginegen.edge_cases())
def test_relative_edge_case(differ, request, edges, name):
    check_group(differ, request, lambda p: [*RELATIVE, "--msl", "1", str(edges.path(p["name"]))], edges.about(name))


# --------------------------------------------------------------------------- the harness itself


def test_first_difference_is_short():
    a = b"".join(b'{"n":%d}\n' % i for i in range(100_000))
    b = a.replace(b'{"n":77777}', b'{"n":77778}')
    text = first_difference(a, b, ("python", "c"))
    assert "line 77778, column 10" in text and len(text) < 800
    assert '{"n":77777}' in text and '{"n":77778}' in text
    short = first_difference(b"x\ny\n", b"x\n", ("python", "c"))
    assert "line 2" in short and "ends before" in short
    assert "no newline at the end" in first_difference(b"x\ny", b"x\ny\n", ("python", "c"))


@pytest.mark.skipif(RUNNER != "fork", reason="only the fork runner needs checking against plain subprocesses")
@pytest.mark.skipif(bool(os.environ.get("RAWFIN_ENGINE_RULES")),
                    reason="RAWFIN_ENGINE_RULES: plain subprocesses run rawfin's own rules")
def test_fork_runner_is_faithful(work):
    """The fork server gives what ``python -m rawfin`` in a new process gives: same bytes, same code."""
    d = work / "faithful"
    d.mkdir()
    (name, flags), _ = SIDES
    argvs = [analyze_argv([str(REPO / "captures" / c)], flags) for c in SHIPPED[:4]]
    argvs += [analyze_argv(["--msl", "1", str(REPO / "captures" / "lost-final-ack.pcap")], flags),
              analyze_argv([str(REPO / "captures" / "nonexistent.pcap")], flags),
              analyze_argv(["--msl", "0", str(REPO / "captures" / "normal-close.pcap")], flags),
              ["analyze", "--format", "table", str(REPO / "captures" / "half-close.pcap")],
              ["--version"]]
    fork = Runner(d, "fork")
    try:
        forked = fork.run_many(argvs)
    finally:
        fork.close()
    spawned = Runner(d, "spawn").run_many(argvs)
    for f, s in zip(forked, spawned):
        assert (f.rc, f.stdout, f.stderr) == (s.rc, s.stdout, s.stderr), " ".join(f.argv)
    assert {f.rc for f in forked} >= {0, 2, 66}

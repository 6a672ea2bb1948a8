"""Scenarios: a TOML description of two applications, their settings and the link's faults.

The built-in scenarios are the files in ``rawfin/sim/scenarios/*.toml``; ``rawfin
scenario --file F.toml`` runs one of your own. The format is documented in
``docs/scenario-format.md``; in short::

    summary = "one line for --list"

    [config]                  # both sides (a side's own table overrides)
    msl = 30.0                # seconds; TIME_WAIT lasts 2*msl
    rto = 1.0                 # initial retransmission timeout, seconds

    [link]
    delay = 0.001             # one-way, seconds

    [client]
    isn = 1000
    calls = [
      { at = 0.0,   call = "connect" },
      { at = 0.010, call = "send", bytes = 100 },
      { at = 0.030, call = "close" },
    ]

    [server]
    isn = 2000
    calls = [
      { at = 0.0, call = "listen" },
      { on = "eof", after = 0.010, call = "close" },
    ]

    [[fault]]
    rule = "drop final-ack"

:func:`load` reads a file into a :class:`Scenario`; :func:`run` plays it on an
:class:`~rawfin.sim.emulator.Pair` and returns the pair.
"""

from __future__ import annotations

import importlib.resources
import math
import os
from dataclasses import dataclass, field

from rawfin.core.units import SEC
from rawfin.core.endpoint import Config
from rawfin.core.errors import EXIT_DATAERR, RawfinError
from rawfin.core.segment import norm_ip
from rawfin.core.states import Input, State
from rawfin.sim import tomlio
from rawfin.sim.host import CALLS, payload

_CALL_KEYS = {"at", "on", "after", "call", "bytes", "data", "port", "isn", "reuse_addr"}
_SIDE_KEYS = {"address", "address6", "port", "isn", "msl", "rto", "close_on_fin", "fin_wait_2_timeout",
              "calls"}
_CONFIG_KEYS = {"msl", "rto", "close_on_fin", "fin_wait_2_timeout"}
_TOP_KEYS = {"name", "summary", "description", "ipv6", "kernel", "config", "link", "client", "server", "fault",
             "expect"}


class ScenarioError(RawfinError):
    """A scenario file that cannot be read or run: names the file and what is wrong."""

    exit_code = EXIT_DATAERR


def _known(table: dict, keys: set, where: str) -> None:
    """A key the format does not know is an error naming it (a misspelling would be ignored otherwise)."""
    bad = set(table) - keys
    if bad:
        raise ScenarioError(f"{where}: unknown key {sorted(bad)[0]!r} (known: {', '.join(sorted(keys))})")


def _secs(v, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 10 ** 7:
        raise ScenarioError(f"{where}: expected a number of seconds 0 .. 10000000, got {v!r}")
    return round(v * SEC)


def _address(v, where: str, six: bool) -> str | None:
    if v is None:
        return None
    try:
        ip = norm_ip(v) if isinstance(v, str) else None
    except ValueError:
        ip = None
    if ip is None or (":" in ip) != six:
        raise ScenarioError(f"{where}: {v!r} is not an IPv{6 if six else 4} address")
    return ip


def _port(v, where: str) -> int | None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536):
        raise ScenarioError(f"{where}: port must be 1..65535, got {v!r}")
    return v


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One application call: at a time, or (``on="eof"``) a while after reading end-of-file."""

    side: str
    call: str
    at_ns: int | None = None
    on: str | None = None
    after_ns: int = 0
    data: bytes = b""
    port: int | None = None
    isn: int | None = None
    reuse_addr: bool = False

    def describe(self) -> str:
        when = f"at {self.at_ns / SEC:g} s" if self.at_ns is not None else f"{self.after_ns / SEC:g} s after EOF"
        return f"{self.side} {self.call} {when}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Side:
    address: str | None = None
    address6: str | None = None
    port: int | None = None
    isn: int | None = None
    config: dict = field(default_factory=dict)     # msl_ns, rto_ns, close_on_fin, fin_wait_2_timeout_ns


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    summary: str = ""
    description: str = ""
    path: str | None = None
    ipv6: bool = False
    config: dict = field(default_factory=dict)
    client: Side = Side()
    server: Side = Side()
    calls: tuple[Call, ...] = ()
    delay_ns: int | None = None
    seed: int = 0
    faults: tuple[str, ...] = ()
    expect: dict = field(default_factory=dict)
    kernel: str | None = None       # the side the Linux kernel plays under ``rawfin peer`` (None: not said)


# -- reading ---------------------------------------------------------------------------

def _config(table: dict, where: str) -> dict:
    out = {}
    for k, v in table.items():
        if k not in _CONFIG_KEYS:
            continue
        if k == "close_on_fin":
            if not isinstance(v, bool):
                raise ScenarioError(f"{where}.close_on_fin: expected true or false")
            out["close_on_fin"] = v
        else:
            out[f"{k}_ns"] = _secs(v, f"{where}.{k}")
            if k in ("msl", "rto") and out[f"{k}_ns"] <= 0:
                raise ScenarioError(f"{where}.{k}: must be more than 0")
    return out


def _call(side: str, i: int, c: dict, where: str) -> Call:
    w = f"{where}: {side}.calls[{i}]"
    if not isinstance(c, dict):
        raise ScenarioError(f"{w}: expected a table like {{ at = 0.0, call = \"connect\" }}")
    _known(c, _CALL_KEYS, w)
    name = c.get("call")
    if name not in CALLS:
        raise ScenarioError(f"{w}: call must be one of {', '.join(CALLS)}, got {name!r}")
    at = c.get("at")
    on = c.get("on")
    if (at is None) == (on is None):
        raise ScenarioError(f"{w}: give exactly one of at = SECONDS or on = \"eof\"")
    if on is not None and on != "eof":
        raise ScenarioError(f"{w}: on = {on!r}: the only event is \"eof\"")
    if "after" in c and on is None:
        raise ScenarioError(f"{w}: after = ... goes with on = \"eof\"")
    data = b""
    if "bytes" in c and "data" in c:
        raise ScenarioError(f"{w}: give bytes = N or data = \"...\", not both")
    if "bytes" in c:
        n = c["bytes"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ScenarioError(f"{w}: bytes must be a whole number >= 0")
        data = payload(n)
    elif "data" in c:
        if not isinstance(c["data"], str):
            raise ScenarioError(f"{w}: data must be a string")
        data = c["data"].encode("utf-8")
    if data and name not in ("send", "close", "shutdown"):
        raise ScenarioError(f"{w}: {name} carries no data")
    if name == "send" and not data:
        raise ScenarioError(f"{w}: send needs bytes = N or data = \"...\"")
    if side == "client" and name in ("listen", "close-listener") or side == "server" and name == "connect":
        raise ScenarioError(f"{w}: the {side} does not {name}")
    port = c.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise ScenarioError(f"{w}: port must be 1..65535")
    isn = c.get("isn")
    if isn is not None and (isinstance(isn, bool) or not isinstance(isn, int) or not 0 <= isn < 2 ** 32):
        raise ScenarioError(f"{w}: isn must be 0..4294967295")
    return Call(side=side, call=name, at_ns=_secs(at, f"{w}.at") if at is not None else None, on=on,
                after_ns=_secs(c.get("after", 0), f"{w}.after"), data=data, port=port, isn=isn,
                reuse_addr=bool(c.get("reuse_addr", False)))


_EXPECT_KEYS = {"final", "retransmissions", "dropped", "refused", "segments", "states", "error", "received"}
_STATES = tuple(State.__members__)


def _expect(t, where: str) -> dict:
    """The [expect] table, checked: a misspelt key or state would make an expectation that never fails."""
    w = f"{where}: expect"
    if not isinstance(t, dict):
        raise ScenarioError(f"{w} must be a table")
    _known(t, _EXPECT_KEYS, w)
    for key in ("retransmissions", "dropped", "refused", "segments"):
        v = t.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ScenarioError(f"{w}.{key}: expected a whole number >= 0, got {v!r}")
    for key, ok in (("final", lambda v: v in _STATES), ("error", lambda v: isinstance(v, str) and v.isupper()),
                    ("received", lambda v: not isinstance(v, bool) and isinstance(v, int) and v >= 0)):
        table = t.get(key, {})
        if not isinstance(table, dict) or set(table) - {"client", "server"} or not all(ok(v) for v in table.values()):
            raise ScenarioError(f"{w}.{key}: expected {{ client = ..., server = ... }} with "
                                + {"final": "state names", "error": "errno names such as \"ECONNRESET\"",
                                   "received": "byte counts"}[key] + f", got {table!r}")
    states = t.get("states", [])
    for line in states if isinstance(states, list) else [states]:
        parts = line.split() if isinstance(line, str) else []
        if len(parts) != 3 or parts[0] not in ("client", "server") or not set(parts[1:]) <= set(_STATES):
            raise ScenarioError(f"{w}.states: {line!r} is not \"SIDE FROM TO\" (e.g. \"client FIN_WAIT_2 TIME_WAIT\")")
    return dict(t)


def parse(doc: dict, name: str, path: str | None = None) -> Scenario:
    where = path or name
    _known(doc, _TOP_KEYS, where)
    config = _config(doc.get("config", {}), f"{where}: config")
    sides = {}
    calls: list[Call] = []
    for side in ("server", "client"):
        t = doc.get(side, {})
        if not isinstance(t, dict):
            raise ScenarioError(f"{where}: [{side}] must be a table")
        _known(t, _SIDE_KEYS, f"{where}: {side}")
        isn = t.get("isn")
        if isn is not None and (isinstance(isn, bool) or not isinstance(isn, int) or not 0 <= isn < 2 ** 32):
            raise ScenarioError(f"{where}: {side}.isn must be 0..4294967295")
        sides[side] = Side(address=_address(t.get("address"), f"{where}: {side}.address", False),
                           address6=_address(t.get("address6"), f"{where}: {side}.address6", True),
                           port=_port(t.get("port"), f"{where}: {side}.port"), isn=isn,
                           config=_config(t, f"{where}: {side}"))
        raw = t.get("calls", [])
        if not isinstance(raw, list):
            raise ScenarioError(f"{where}: {side}.calls must be a list of tables")
        calls += [_call(side, i, c, where) for i, c in enumerate(raw)]
    link = doc.get("link", {})
    faults = []
    for i, f in enumerate(doc.get("fault", [])):
        if not isinstance(f, dict) or not isinstance(f.get("rule"), str):
            raise ScenarioError(f"{where}: fault[{i}] needs rule = \"...\" (e.g. \"drop final-ack\")")
        faults.append(f["rule"])
    from rawfin.sim.emulator import EmulatorError, Fault
    for r in faults:
        try:
            Fault.parse(r)
        except EmulatorError as e:
            raise ScenarioError(f"{where}: {e}") from None
    kernel = doc.get("kernel")
    if kernel not in (None, "client", "server"):
        raise ScenarioError(f"{where}: kernel must be \"client\" or \"server\" (the side the kernel plays under "
                            f"rawfin peer), got {kernel!r}")
    seed = link.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ScenarioError(f"{where}: link.seed must be a whole number")
    return Scenario(name=doc.get("name", name), summary=doc.get("summary", ""),
                    description=doc.get("description", "").strip(), path=path, ipv6=bool(doc.get("ipv6", False)),
                    config=config, client=sides["client"], server=sides["server"], calls=tuple(calls),
                    delay_ns=_secs(link["delay"], f"{where}: link.delay") if "delay" in link else None,
                    seed=seed, faults=tuple(faults), expect=_expect(doc.get("expect", {}), where), kernel=kernel)


def load(path: str | os.PathLike) -> Scenario:
    """Read a scenario file (raises ScenarioError naming the file; OSError when unreadable)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        doc = tomlio.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomlio.TOMLDecodeError) as e:
        raise ScenarioError(f"{path}: not a valid TOML file: {e}") from None
    name = os.path.splitext(os.path.basename(path))[0]
    return parse(doc, name, path)


def _builtin_dir():
    return importlib.resources.files("rawfin.sim").joinpath("scenarios")


def names() -> list[str]:
    """The built-in scenarios, in the order ``--list`` prints them."""
    found = sorted(p.name[:-5] for p in _builtin_dir().iterdir() if p.name.endswith(".toml"))
    return sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


ORDER = ["normal-close", "lost-final-ack", "lost-fin", "simultaneous-close", "three-segment-close",
         "half-close", "fin-with-data", "rst-abort", "server-active-close", "time-wait-expiry",
         "seq-wraparound", "port-reuse"]


def builtin(name: str) -> Scenario:
    """A built-in scenario: ``NAME`` (``rawfin scenario --list``) or ``peer/NAME`` (only for ``rawfin peer``)."""
    res = _builtin_dir().joinpath(*f"{name}.toml".split("/"))
    if not res.is_file():
        raise ScenarioError(f"no built-in scenario {name!r} (rawfin scenario --list names them)")
    return parse(tomlio.loads(res.read_text("utf-8")), name.rpartition("/")[2], None)


#: ``rawfin peer --scenario NAME``: the files in ``scenarios/peer/``, in the order ``--list`` prints them.
PEER_ORDER = ["lost-final-ack", "simultaneous-close", "timewait-refin", "fin-with-data", "seq-wraparound",
              "rst-in-fin-wait-2", "server-active-close"]


def peer_names() -> list[str]:
    """The scenarios of ``rawfin peer --scenario`` (``scenarios/peer/*.toml``: each says the side the kernel plays)."""
    found = sorted(p.name[:-5] for p in _builtin_dir().joinpath("peer").iterdir() if p.name.endswith(".toml"))
    return sorted(found, key=lambda n: (PEER_ORDER.index(n) if n in PEER_ORDER else len(PEER_ORDER), n))


def peer_builtin(name: str) -> Scenario:
    """The scenario ``rawfin peer --scenario NAME`` plays (its ``kernel`` says which side the kernel plays)."""
    if name not in peer_names():
        raise ScenarioError(f"no peer scenario {name!r}; scenarios: {', '.join(peer_names())}")
    return builtin(f"peer/{name}")


# -- running ---------------------------------------------------------------------------

def run(scn: Scenario, *, msl_ns: int | None = None, rto_ns: int | None = None, isn_client: int | None = None,
        isn_server: int | None = None, faults: tuple[str, ...] = (), seed: int | None = None,
        ipv6: bool | None = None, delay_ns: int | None = None, relative_seq: bool = False):
    """Play ``scn`` to the end and return the :class:`~rawfin.sim.emulator.Pair`.

    The keyword arguments are the command line's overrides; ``faults`` are
    added to the scenario's own; ``relative_seq``: the endpoints' texts show sequence numbers
    relative to each side's ISN (--seq relative).
    """
    from rawfin.sim.emulator import (CLIENT, CLIENT6, DEFAULT_DELAY_NS, DEFAULT_ISN_CLIENT, DEFAULT_ISN_SERVER, SERVER,
                           SERVER6, AddressInUse, EmulatorError, Pair)
    from rawfin.core.errors import StateError

    v6 = scn.ipv6 if ipv6 is None else ipv6

    def addr(side: Side, default4, default6):
        ip = (side.address6 or default6[0]) if v6 else (side.address or default4[0])
        return (ip, side.port or default4[1])

    def cfg(side: Side) -> Config:
        kw = {**scn.config, **side.config}
        if msl_ns is not None:
            kw["msl_ns"] = msl_ns
        if rto_ns is not None:
            kw["rto_ns"] = rto_ns
        if relative_seq:
            kw["relative_seq"] = True
        try:
            return Config(**kw)
        except ValueError as e:
            raise ScenarioError(f"{scn.path or scn.name}: {e}") from None

    try:
        pair = Pair(client=addr(scn.client, CLIENT, CLIENT6), server=addr(scn.server, SERVER, SERVER6),
                    client_config=cfg(scn.client), server_config=cfg(scn.server),
                    isn_client=isn_client if isn_client is not None else (scn.client.isn if scn.client.isn
                                                                          is not None else DEFAULT_ISN_CLIENT),
                    isn_server=isn_server if isn_server is not None else (scn.server.isn if scn.server.isn
                                                                          is not None else DEFAULT_ISN_SERVER),
                    delay_ns=delay_ns if delay_ns is not None else (scn.delay_ns if scn.delay_ns is not None
                                                                    else DEFAULT_DELAY_NS),
                    faults=scn.faults + tuple(faults), seed=scn.seed if seed is None else seed)
    except ValueError as e:
        raise ScenarioError(f"{scn.path or scn.name}: {e}") from None

    where = scn.path or scn.name

    def action(c: Call):
        host = pair.client if c.side == "client" else pair.server

        def go() -> None:
            if c.call in ("send", "close", "shutdown", "abort") and not host.ready and (
                    host.current is None or host.current.state is not State.CLOSED):
                host.when_ready(go)     # as a blocking socket would: wait for the handshake
                return
            try:
                host.call(c.call, data=c.data, port=c.port, iss=c.isn, reuse_addr=c.reuse_addr)
            except AddressInUse:
                pass            # logged as an address_in_use anomaly: part of the story
            except (StateError, EmulatorError) as e:
                t = (pair.now - pair.start_ns) / SEC
                raise ScenarioError(f"{where}: {c.side} {c.call} at t={t:.6f} s: {e}") from None
        return go

    # calls at the same time: the server's first, then the client's, each in file order
    timed = sorted((c for c in scn.calls if c.at_ns is not None),
                   key=lambda c: (c.at_ns, 0 if c.side == "server" else 1))
    for c in timed:
        pair.at(pair.start_ns + c.at_ns, action(c))
    for c in scn.calls:
        if c.on == "eof":
            host = pair.client if c.side == "client" else pair.server
            host.on_eof(action(c), c.after_ns)
    pair.run()
    return pair


@dataclass(frozen=True, slots=True)
class Check:
    """One judged expectation: what was expected, whether it held (None: it could not be judged), and why."""

    what: str
    ok: bool | None
    detail: str = ""


class Facts:
    """What a run did, as :func:`judge` asks it; this base class reads an emulator :class:`~rawfin.sim.emulator.Pair`.

    A driver whose run cannot show everything (``rawfin peer --file``: the kernel's
    TIME_WAIT is not waited for, its ACKs are its own) answers the same questions with
    its own reasons, and ``None`` for "cannot be judged".
    """

    def __init__(self, pair) -> None:
        self.pair = pair

    def who(self, side: str) -> str:
        """Who plays ``side`` (``""``: the side's name says it)."""
        return ""

    def final(self, side: str) -> tuple[str | None, str]:
        """The state ``side``'s current connection ends in, and (when a TIME_WAIT there stands for
        CLOSED because its end was not waited for) why; else ``""``."""
        st = getattr(self.pair, side).state
        return (st.name if st is not None else None), ""

    def moved(self, side: str, frm: str, to: str) -> tuple[bool | None, str]:
        """Whether ``side`` went ``frm`` → ``to``, and what it did instead."""
        if (side, frm, to) in {(s, f, t) for _, s, f, t in self.pair.timeline()}:
            return True, ""
        return False, f"{side}: " + " → ".join(t for _, s, _, t in self.pair.timeline() if s == side)

    def retransmissions(self) -> tuple[int, str]:
        return len(self.pair.retransmissions()), ""

    def dropped(self) -> int:
        return sum(1 for s in self.pair.sent if s.dropped)

    def refused(self) -> tuple[int, str]:
        return sum(1 for a in self.pair.anomalies() if a.kind == "address_in_use"), ""

    def segments(self) -> tuple[int, str | None]:
        """How many segments were sent, and (when that cannot be judged) why not."""
        return len(self.pair.sent), None

    def error(self, side: str) -> tuple[str | None, str]:
        """The error ``side``'s application met reading its connection (None: none), and what shows it."""
        moves = self.pair.transitions(side)
        return app_error(moves[-1] if moves else None), ""

    def received(self, side: str) -> int:
        """Bytes ``side``'s application read, over the run."""
        return getattr(self.pair, side).host.received


def app_error(last) -> str | None:
    """The error an application reading a connection meets after its last transition ``last``, as
    Linux names it: an RST while it was being opened refuses it, an RST once synchronized resets it."""
    if last is None or last.input is not Input.RCV_RST:
        return None
    if last.from_ is State.SYN_SENT:
        return "ECONNREFUSED"
    if last.from_ in (State.SYN_RECEIVED, State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSE_WAIT):
        return "ECONNRESET"
    return None


def judge(scn: Scenario, facts: Facts) -> list[Check]:
    """Each expectation of ``scn``'s ``[expect]`` table, judged against what the run did."""
    exp = scn.expect
    out = []

    def named(side: str) -> str:
        who = facts.who(side)
        return f"{side} ({who})" if who else side

    for side, want in exp.get("final", {}).items():
        got, stands_for_closed = facts.final(side)
        what = f"[expect] final: {named(side)} ends in {want}"
        if got == want:
            out.append(Check(what, True, f"{got}"))
        elif want == "CLOSED" and got == "TIME_WAIT" and stands_for_closed:
            out.append(Check(what, True, f"TIME_WAIT at the end; {stands_for_closed}"))
        else:
            out.append(Check(what, False, f"got {got}"))
    if "retransmissions" in exp:
        n, detail = facts.retransmissions()
        out.append(Check(f"[expect] retransmissions = {exp['retransmissions']}", n == exp["retransmissions"],
                         detail or f"{n}"))
    if "dropped" in exp:
        n = facts.dropped()
        out.append(Check(f"[expect] dropped = {exp['dropped']}", n == exp["dropped"], f"{n} dropped by the link"))
    if "refused" in exp:
        n, detail = facts.refused()
        out.append(Check(f"[expect] refused = {exp['refused']}", n == exp["refused"], detail or f"{n}"))
    if "segments" in exp:
        n, why_not = facts.segments()
        out.append(Check(f"[expect] segments = {exp['segments']}", None if why_not else n == exp["segments"],
                         f"{n} here; not judged: {why_not}" if why_not else f"{n}"))
    for side, want in exp.get("error", {}).items():
        got, detail = facts.error(side)
        out.append(Check(f"[expect] error: {named(side)}'s application meets {want}", got == want,
                         detail or f"got {got}"))
    for side, want in exp.get("received", {}).items():
        got = facts.received(side)
        out.append(Check(f"[expect] received: {named(side)}'s application reads {want} bytes", got == want,
                         f"{got} bytes"))
    for want in exp.get("states", []):
        side, frm, to = want.split()       # "side FROM TO": this transition must appear
        ok, detail = facts.moved(side, frm, to)
        who = facts.who(side)
        out.append(Check(f"[expect] states: {want}" + (f" ({who})" if who else ""), ok, detail))
    return out


def check(scn: Scenario, pair) -> list[str]:
    """What the emulator run did not do that the scenario's ``[expect]`` table says it does."""
    return [f"{c.what}: {c.detail}" for c in judge(scn, Facts(pair)) if c.ok is False]


__all__ = ["Scenario", "Call", "Side", "ScenarioError", "load", "parse", "builtin", "names", "run", "check",
           "PEER_ORDER", "peer_names", "peer_builtin",
           "judge", "Check", "Facts",
           "CALLS", "ORDER"]

"""The packetdrill interpreter: one script, one system under test, a verdict per line.

:class:`Runner` walks a parsed script (:mod:`rawfin.sim.pktscript`) the way
packetdrill's ``run.c``/``run_packet.c``/``run_system_call.c`` do: event times
relative to the previous event (consecutive inbound packets anchored to each
other), the timing tolerance (``--tolerance_usecs``, 4 ms, or 12.5 % of the gap
to the previous event), the script's sequence numbers relative to each side's
ISN (a SYN's own sequence number absolute), TCP options built on inbound
packets and checked on outbound ones (``<...>``: not checked; TS val only with
``--tcp_ts_tick_usecs``; TS ecr never), an outbound window checked only when
given, TSO/GSO-sized outbound lines matched by joining consecutive segments,
system calls that must return at once (or, after ``...T``, block until ``T``),
their return values and errno.

What it drives is a :class:`Target`: rawfin's own endpoint on virtual time
(:class:`rawfin.sim.pktsock.RawfinTarget`) or a real Linux socket in a network
namespace of rawfin's own (:class:`rawfin.linux.pktkernel.KernelTarget`). The
runner owns the script's side of the wire, so the link faults of ``rawfin
scenario`` (``--drop``/``--delay``/``--duplicate``) act here, on the segments
both ways, and are reported.

The result is an :class:`Outcome`: every event line with its verdict, every
segment both ways (live values and the script's relative numbers), the system
under test's own transitions, the states both sides pass through as rawfin's
observer reads the wire, and the first failure in packetdrill's words.
"""

from __future__ import annotations

import errno as _errno
import os
import random
import shlex
from dataclasses import dataclass, field

from rawfin.core.segment import Flags, Segment
from rawfin.sim import pktscript as ps
from rawfin.sim.pktcode import CodeSpec, evaluate
from rawfin.sim.pktsyms import ERRNO, SOCKOPTS, symbol
from rawfin.wire import tcpraw

_SEC_US = 1_000_000


# -- configuration -------------------------------------------------------------------------

@dataclass(slots=True, kw_only=True)
class RunConfig:
    """packetdrill's configuration: the script's ``--options`` over the command line's, over defaults."""

    ip_version: str = "ipv4"            # ipv4, ipv6 or ipv4-mapped-ipv6
    local_ip: str = ""                  # the system under test's address
    remote_ip: str = ""                 # the script's (remote) address
    bind_port: int = 8080
    connect_port: int = 8080
    tolerance_usecs: int = 4000
    tolerance_percent: float = 12.5
    tcp_ts_tick_usecs: int = 0          # 0: outbound TS val not checked (packetdrill's default)
    tcp_ts_ecr_scaled: bool = False
    mss: int = 0                        # inbound GSO size (--mss)
    mtu: int = 1500
    strict_segments: bool = False
    script_dir: str = "."
    defines: dict = field(default_factory=dict)

    @property
    def wire_v6(self) -> bool:
        return self.ip_version == "ipv6"

    @property
    def socket_family(self) -> int:
        return 2 if self.ip_version == "ipv4" else 10

    def finish(self) -> "RunConfig":
        if not self.local_ip:
            self.local_ip = "fd3d:fa7b:d17d::1" if self.wire_v6 else "192.168.0.1"
        if not self.remote_ip:
            self.remote_ip = "2001:db8::1" if self.wire_v6 else "192.0.2.1"
        import ipaddress
        try:    # one spelling of each address (fd3d:0a0b::1 is fd3d:a0b::1 on the wire)
            self.local_ip = str(ipaddress.ip_address(self.local_ip.split("/")[0]))
            self.remote_ip = str(ipaddress.ip_address(self.remote_ip.split("/")[0]))
        except ValueError as e:
            raise ValueError(f"bad address: {e}") from None
        if (":" in self.local_ip) != self.wire_v6 or (":" in self.remote_ip) != self.wire_v6:
            raise ValueError(f"--local_ip {self.local_ip} and --remote_ip {self.remote_ip} must be "
                             f"{'IPv6' if self.wire_v6 else 'IPv4'} addresses for --ip_version={self.ip_version}")
        return self

    @property
    def bind_ip(self) -> str:
        return ("::ffff:" + self.local_ip) if self.ip_version == "ipv4-mapped-ipv6" else self.local_ip

    @property
    def connect_ip(self) -> str:
        return ("::ffff:" + self.remote_ip) if self.ip_version == "ipv4-mapped-ipv6" else self.remote_ip


#: script options rawfin honours (name -> how its value is read); anything else is refused
_OPTION_KINDS = {
    "ip_version": str, "local_ip": str, "remote_ip": str, "bind_port": int, "connect_port": int,
    "tolerance_usecs": int, "tolerance_percent": float, "tcp_ts_tick_usecs": int, "mss": int, "mtu": int,
    "gateway_ip": str, "netmask_ip": str, "define": str, "strict_segments": bool, "tcp_ts_ecr_scaled": bool,
    "verbose": bool, "debug": bool, "speed": int,
}


def make_config(script: ps.Script, overrides: dict | None = None) -> RunConfig:
    """The run's configuration; Unsupported for an option rawfin does not honour."""
    cfg = RunConfig(script_dir=os.path.dirname(os.path.abspath(script.path)) if script.path else ".")
    for o in script.options:
        kind = _OPTION_KINDS.get(o.name)
        if kind is None:
            raise ps.Unsupported(script.path, o.line, f"option --{o.name} is not supported")
        if o.name in ("gateway_ip", "netmask_ip", "verbose", "debug", "speed"):
            continue       # routing details of packetdrill's own device, and its chatter: no effect here
        if o.name == "define":
            k, _, v = (o.value or "").partition("=")
            cfg.defines[k] = v
            continue
        try:
            _set_option(cfg, o.name, o.value, kind)
        except ValueError as e:
            raise ps.ScriptError(script.path, o.line, f"--{o.name}: {e}") from None
    for name, value in (overrides or {}).items():
        if value is not None:
            setattr(cfg, name, value)
    if cfg.ip_version not in ("ipv4", "ipv6", "ipv4-mapped-ipv6"):
        raise ps.ScriptError(script.path, 1, f"--ip_version must be ipv4, ipv6 or ipv4-mapped-ipv6, "
                                             f"not {cfg.ip_version!r}")
    try:
        return cfg.finish()
    except ValueError as e:
        raise ps.ScriptError(script.path, 1, str(e)) from None


def _set_option(cfg: RunConfig, name: str, value: str | None, kind) -> None:
    if kind is bool:
        setattr(cfg, name, value in (None, "1", "true", "yes"))
        return
    if value is None:
        raise ValueError("needs a value (--name=value)")
    if kind is int:
        setattr(cfg, name, int(value, 0))
    elif kind is float:
        setattr(cfg, name, float(value))
    else:
        setattr(cfg, name, value)


# -- what a run produces ------------------------------------------------------------------------

@dataclass(slots=True, kw_only=True)
class LineResult:
    """One event line of the script and what became of it."""

    line: int
    text: str
    kind: str                        # inbound, outbound, syscall, command
    verdict: str = "not run"         # ok, FAIL, not run
    detail: str = ""                 # what happened (the call's result, the packet seen, a note)
    script_us: int | None = None     # when the script wanted it (µs since the start)
    live_us: int | None = None       # when it happened


@dataclass(slots=True, kw_only=True)
class WireRecord:
    """One segment on the wire between the script and the system under test."""

    time_ns: int                     # since the start of the run
    direction: str                   # "in" (script -> system under test) or "out"
    seg: Segment                     # live values
    script_text: str = ""            # in the script's relative numbers (F. 1:1(0) ack 1 ...)
    line: int | None = None          # the script line it belongs to
    note: str = ""                   # dropped, delayed, duplicate, not in the script ...
    sut_state: str = ""              # the system under test's own state after it
    peer_state: str = ""             # the script side's state after it (rawfin's observer reading the wire)


@dataclass(slots=True, kw_only=True)
class Outcome:
    path: str
    target: str
    lines: list[LineResult] = field(default_factory=list)
    wire: list[WireRecord] = field(default_factory=list)
    transitions: list = field(default_factory=list)       # the system under test's own (time_ns, from, to, cause)
    notes: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)       # what the fault rules did
    failure: str | None = None
    truth: str = ""                                       # where the state changes come from

    @property
    def ok(self) -> bool:
        return self.failure is None


class ScriptFailed(Exception):
    """A line did not hold (internal: the runner stops at the first, as packetdrill does)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


# -- the interface to a system under test ------------------------------------------------------

@dataclass(slots=True, kw_only=True)
class Call:
    """A system call with its arguments in live terms (fds are the target's own)."""

    name: str
    fd: int | None = None
    args: dict = field(default_factory=dict)
    blocking: bool = False           # the script says it blocks (``...T``)


@dataclass(slots=True, kw_only=True)
class Pending:
    """A call handed to the target; ``done`` once it returned."""

    call: Call
    start_us: int
    done: bool = False
    ret: int = 0
    errno: int = 0
    out: object = None
    end_us: int | None = None


class Target:
    """A system under test. Times are microseconds since the run started (the target's clock)."""

    name = "?"
    truth = ""
    #: the TCP_INFO fields a ``%{ }%`` block may read against this target (None: all of pktcode.FIELDS);
    #: a call ``tcp_info`` returns them as a dict in ``Pending.out``
    tcp_info_fields: frozenset[str] | None = None

    def open(self, cfg: RunConfig) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def now(self) -> int:
        raise NotImplementedError

    def wait(self, until_us: int) -> None:
        """Let time pass until ``until_us`` (packets the target sends meanwhile are kept)."""
        raise NotImplementedError

    def inject(self, raw: bytes, pkt: tcpraw.Packet) -> str | None:
        """Deliver an inbound packet; the target's state after it when the target knows it at once."""
        raise NotImplementedError

    def sniff(self, until_us: int | None) -> tuple[int, bytes, str | None] | None:
        """The next packet the target sent (time, raw IP bytes, the target's state right after sending
        it or None), waiting until ``until_us`` at most."""
        raise NotImplementedError

    def start_call(self, p: Pending) -> None:
        raise NotImplementedError

    def wait_call(self, p: Pending, until_us: int) -> bool:
        """Wait (letting time pass) until ``p`` returned or ``until_us``; True when it returned."""
        raise NotImplementedError

    def shell(self, cmd: "ShellCommand") -> str:
        """Apply one command of the safe subset; a short note of what it did."""
        raise NotImplementedError

    def transitions(self) -> list:
        """The system under test's own state changes: (time_ns, local, remote, from, to, cause)."""
        return []

    def notes(self) -> list[str]:
        """What the target wants the reader to know (settings without effect, resets it chose)."""
        return []

    def can_block_forever(self, p: Pending) -> bool:
        """True when nothing the target will do on its own can finish ``p`` (virtual time knows)."""
        return False


# -- shell commands: a safe subset, interpreted ---------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class ShellCommand:
    """One command of the subset: ``sysctl NAME=VALUE...``, ``tcp-metrics-flush``, ``qdisc ARGS``."""

    kind: str
    sysctls: tuple[tuple[str, str], ...] = ()
    args: tuple[str, ...] = ()
    text: str = ""


def _arith(text: str, path: str, line: int) -> str:
    """Expand ``$((a*b))`` the way bash does for the integer arithmetic defaults.sh uses."""
    out = ""
    i = 0
    while True:
        j = text.find("$((", i)
        if j < 0:
            return out + text[i:]
        k = text.find("))", j)
        if k < 0:
            raise ps.ScriptError(path, line, f"unterminated $(( in command {text!r}")
        expr = text[j + 3:k]
        import re
        if not re.fullmatch(r"[0-9+\-*/() \t]+", expr):
            raise ps.Unsupported(path, line, f"shell arithmetic {expr!r} (only integers and + - * /)")
        try:
            val = _eval_int(expr)
        except (ValueError, ZeroDivisionError):
            raise ps.ScriptError(path, line, f"bad arithmetic $(({expr}))") from None
        out += text[i:j] + str(val)
        i = k + 2


def _eval_int(expr: str) -> int:
    import ast
    import operator
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
           ast.Div: operator.floordiv}

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, int):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in ops:
            return ops[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        raise ValueError(expr)
    return ev(ast.parse(expr.replace("/", "//"), mode="eval"))


def parse_shell(text: str, path: str, line: int, base_dir: str, depth: int = 0) -> list[ShellCommand]:
    """A back-quoted command as rawfin's safe subset; Unsupported for anything else.

    Understood: ``sysctl [-q] [-w] [-e] net.X=V ...`` (``net.*`` only: they belong
    to the namespace), ``echo V > /proc/sys/net/...``, ``ip tcp_metrics flush
    ...``, ``tc qdisc ... dev tun0 ...``, and a shell script next to the script
    (``../common/defaults.sh``) made of those, read line by line, with ``$((..))``
    arithmetic, comments, ``;``/``&&``/newlines between commands and output
    redirections to /dev/null. Nothing is handed to a shell.
    """
    if depth > 4:
        raise ps.Unsupported(path, line, "shell scripts nested more than 4 deep")
    text = text.replace("\\\n", " ")
    out: list[ShellCommand] = []
    for raw in text.replace("&&", "\n").replace(";", "\n").splitlines():
        piece = raw.split("#", 1)[0].strip() if not raw.strip().startswith("#!") else ""
        if not piece:
            continue
        piece = _arith(piece, path, line)
        try:
            words = shlex.split(piece)
        except ValueError as e:
            raise ps.ScriptError(path, line, f"cannot read command {piece!r}: {e}") from None
        words = _strip_redirections(words, path, line, piece)
        if not words:
            continue
        cmd = words[0]
        if cmd.endswith(".sh") or cmd.endswith(".py"):
            target = os.path.normpath(os.path.join(base_dir, cmd))
            if cmd.endswith(".py"):
                if os.path.basename(cmd) == "set_sysctls.py":
                    pairs = []
                    for w in words[1:]:
                        k, eq, v = w.partition("=")
                        if not eq or not k.startswith("/proc/sys/net/"):
                            raise ps.Unsupported(path, line, f"set_sysctls.py {w!r}: only /proc/sys/net/... "
                                                             f"settings are run")
                        pairs.append((k[len("/proc/sys/"):].replace("/", "."), v))
                    out.append(ShellCommand(kind="sysctl", sysctls=tuple(pairs), text=piece))
                    continue
                raise ps.Unsupported(path, line, f"running {cmd} (a Python helper) is not supported")
            if len(words) > 1:
                raise ps.Unsupported(path, line, f"arguments to the shell script {cmd}")
            try:
                with open(target, encoding="utf-8") as fh:
                    body = fh.read()
            except OSError as e:
                raise ps.ScriptError(path, line, f"cannot read {target}: {e.strerror}") from None
            out.extend(_parse_file_lines(body, target, line, path, os.path.dirname(target), depth))
            continue
        if cmd == "sysctl":
            pairs = []
            for w in words[1:]:
                if w in ("-q", "-w", "-e", "--quiet", "--write"):
                    continue
                k, eq, v = w.partition("=")
                if not eq:
                    raise ps.Unsupported(path, line, f"sysctl {w!r}: only NAME=VALUE settings are run")
                if not k.startswith("net."):
                    raise ps.Unsupported(path, line, f"sysctl {k}: only net.* settings (they belong to the "
                                                     f"namespace) are run")
                pairs.append((k, v))
            out.append(ShellCommand(kind="sysctl", sysctls=tuple(pairs), text=piece))
        elif cmd == "echo" and len(words) == 4 and words[2] == ">" and words[3].startswith("/proc/sys/net/"):
            out.append(ShellCommand(kind="sysctl",
                                    sysctls=((words[3][len("/proc/sys/"):].replace("/", "."), words[1]),),
                                    text=piece))
        elif cmd == "ip" and words[1:3] == ["tcp_metrics", "flush"]:
            out.append(ShellCommand(kind="tcp-metrics-flush", text=piece))
        elif cmd == "tc" and len(words) > 2 and words[1] == "qdisc" and "tun0" in words:
            out.append(ShellCommand(kind="qdisc", args=tuple(words[1:]), text=piece))
        else:
            raise ps.Unsupported(path, line, f"shell command {piece!r}: rawfin runs only sysctl net.*, "
                                             f"ip tcp_metrics flush, tc qdisc on tun0 and scripts made of those")
    return out


def _parse_file_lines(body: str, target: str, line: int, path: str, base: str, depth: int) -> list[ShellCommand]:
    try:
        return parse_shell(body, target, 0, base, depth + 1)
    except ps.ScriptError as e:
        # name the script line that ran the file, and where in the file it went wrong
        cls = type(e)
        raise cls(path, line, f"{os.path.basename(target)}: {e.message}") from None


def _strip_redirections(words: list[str], path: str, line: int, piece: str) -> list[str]:
    out = []
    skip = False
    for i, w in enumerate(words):
        if skip:
            skip = False
            continue
        if w in ("2>&1", "1>&2", ">/dev/null", "2>/dev/null", "&>/dev/null"):
            continue
        if w in (">", "2>", "&>") and i + 1 < len(words) and words[i + 1] == "/dev/null":
            skip = True
            continue
        if w in ("|", "||", "&", "<", "`", "$(") or w.startswith("$("):
            raise ps.Unsupported(path, line, f"shell command {piece!r}: pipes, background jobs and "
                                             f"substitutions are not run")
        out.append(w)
    return out


# -- checks before anything runs --------------------------------------------------------------

SYSCALLS = {"socket", "bind", "listen", "accept", "connect", "read", "write", "send", "recv", "sendto",
            "recvfrom", "readv", "writev", "close", "shutdown", "setsockopt", "getsockopt", "fcntl", "ioctl",
            "poll", "sendmsg", "recvmsg"}


def _symbols_in(e, out: list) -> None:
    if isinstance(e, ps.Word):
        out.append(e.name)
    elif isinstance(e, ps.Or):
        _symbols_in(e.lhs, out)
        _symbols_in(e.rhs, out)
    elif isinstance(e, (ps.List, ps.Struct)):
        for i in e.items:
            _symbols_in(i, out)
    elif isinstance(e, ps.Assign):
        _symbols_in(e.value, out)


def check_script(script: ps.Script, cfg: RunConfig,
                 tcp_info_fields: frozenset[str] | None = None) -> dict[int, list[ShellCommand]]:
    """Refuse, before anything runs, what rawfin cannot run (Unsupported with the line); ``tcp_info_fields``
    the TCP_INFO fields the target has (None: all)."""
    shells: dict[int, list[ShellCommand]] = {}
    if script.init_command is not None:
        shells[script.init_line or 1] = parse_shell(script.init_command.command, script.path,
                                                    script.init_line or 1, cfg.script_dir)
    if script.cleanup_command is not None:
        shells[script.cleanup_line or 1] = parse_shell(script.cleanup_command.command, script.path,
                                                       script.cleanup_line or 1, cfg.script_dir)
    for ev in script.events:
        a = ev.action
        if isinstance(a, ps.CommandSpec):
            shells[ev.line] = parse_shell(a.command, script.path, ev.line, cfg.script_dir)
        elif isinstance(a, CodeSpec):
            missing = sorted(a.fields - tcp_info_fields) if tcp_info_fields is not None else []
            if missing:
                raise ps.Unsupported(script.path, ev.line, f"%{{ }}% block reads {', '.join(missing)}: not "
                                                           f"modelled by rawfin's endpoint")
        elif isinstance(a, ps.SyscallSpec):
            if a.name not in SYSCALLS:
                raise ps.Unsupported(script.path, ev.line, f"system call {a.name}() is not supported")
            names: list[str] = []
            for x in a.args:
                _symbols_in(x, names)
            for n in names:
                if n in ("htons", "inet_addr", "inet6_addr") or n.startswith("msg_") or n.startswith("sin"):
                    continue
                if symbol(n) is None:
                    raise ps.Unsupported(script.path, ev.line, f"unknown symbol {n} in {a.name}()")
            if a.errno and a.errno not in ERRNO:
                raise ps.ScriptError(script.path, ev.line, f"unknown errno {a.errno}")
            if a.name in ("setsockopt", "getsockopt") and len(a.args) >= 3:
                lv, nm = _int_or_none(a.args[1]), _int_or_none(a.args[2])
                if lv is not None and nm is not None and (lv, nm) not in SOCKOPTS:
                    raise ps.Unsupported(script.path, ev.line, f"socket option {a.args[2].text()} "
                                                               f"({a.name}) is not supported")
            if a.name == "ioctl" and len(a.args) >= 2:
                req = _int_or_none(a.args[1])
                if req not in (0x541B, 0x5411):
                    raise ps.Unsupported(script.path, ev.line, f"ioctl {a.args[1].text()} is not supported "
                                                               f"(only SIOCINQ/FIONREAD and SIOCOUTQ)")
            if a.name in ("sendmsg", "recvmsg") and any(isinstance(x, ps.Struct) and x.get("msg_control")
                                                      for x in a.args):
                raise ps.Unsupported(script.path, ev.line, f"{a.name}() with control messages is not supported")
        elif isinstance(a, ps.PacketSpec):
            if a.urg:
                raise ps.Unsupported(script.path, ev.line, "urgent pointers are not supported")
    return shells


def _int_or_none(e) -> int | None:
    try:
        return eval_int(e)
    except ValueError:
        return None


def eval_int(e) -> int:
    """An integer expression (``4``, ``0x10``, ``O_RDWR|O_NONBLOCK``, ``[1]``); ValueError otherwise."""
    if isinstance(e, ps.Int):
        return e.value
    if isinstance(e, ps.Word):
        v = symbol(e.name)
        if v is None:
            raise ValueError(f"unknown symbol {e.name}")
        return v
    if isinstance(e, ps.Or):
        return eval_int(e.lhs) | eval_int(e.rhs)
    if isinstance(e, ps.List) and len(e.items) == 1:
        return eval_int(e.items[0])
    if isinstance(e, ps.Call) and e.name == "htons" and len(e.args) == 1:
        return eval_int(e.args[0])
    raise ValueError(f"expected an integer, got {e.text()}")


# -- the packetdrill socket model ------------------------------------------------------------

@dataclass(slots=True)
class _Sock:
    """packetdrill's ``struct socket``: the script's view and the live view of one connection."""

    state: str = "init"          # init, listening, passive_packet_received, synack_sent, synack_acked,
                                 # active_connecting, syn_sent, syn_acked
    script_fd: int = -1
    live_fd: int = -1
    script_local_isn: int = 0
    script_remote_isn: int = 0
    live_local_isn: int = 0
    live_remote_isn: int = 0
    live_local: tuple = ("", 0)
    live_remote: tuple = ("", 0)
    ts_map: dict = field(default_factory=dict)
    first_ts: tuple | None = None   # (script val, live val)

    def local_offset(self, syn: bool) -> int:
        return (self.live_local_isn - self.script_local_isn) if syn else self.live_local_isn

    def remote_offset(self, syn: bool) -> int:
        return 0 if syn else self.live_remote_isn


# -- the runner -------------------------------------------------------------------------------

_STRICT_FLAGS = {"F": "tcp_fin", "P": "tcp_psh"}
_FLAG_BITS = {"F": Flags.FIN, "S": Flags.SYN, "R": Flags.RST, "P": Flags.PSH, ".": Flags.ACK, "U": Flags.URG,
              "E": Flags.ECE, "W": Flags.CWR}
_ECN = {"noecn": 0, "ect1": 1, "ect0": 2, "ce": 3}


def spec_flags(spec: ps.PacketSpec) -> int:
    f = 0
    for c in spec.flags:
        f |= _FLAG_BITS.get(c, 0)
    return f


def pd_flags(flags: int) -> str:
    """packetdrill's letters for TCP flags (``F.``, ``S.``, ``R``, ``P.``)."""
    s = "".join(c for c, b in (("F", 1), ("S", 2), ("R", 4), ("P", 8), ("U", 32), ("E", 64), ("W", 128))
                if flags & b)
    return s + "." if flags & 16 else (s or "-")


def pd_options(options) -> str:
    parts = []
    for name, v in options:
        if name == "MSS":
            parts.append(f"mss {v}")
        elif name == "WScale":
            parts.append(f"wscale {v}")
        elif name == "SAckOK":
            parts.append("sackOK")
        elif name == "Timestamp":
            parts.append(f"TS val {v[0]} ecr {v[1]}")
        elif name == "SAck":
            parts.append("sack " + " ".join(f"{v[i]}:{v[i + 1]}" for i in range(0, len(v), 2)))
        elif name == "NOP":
            parts.append("nop")
        elif name == "EOL":
            parts.append("eol")
        else:
            parts.append(f"kind {name}")
    return "<" + ",".join(parts) + ">" if parts else ""


def pd_text(seg: Segment, seqv: int, ackv: int, options=None, show_ack: bool | None = None) -> str:
    """A segment in packetdrill's notation with the given (script-space) numbers."""
    n = seg.data_len
    s = f"{pd_flags(seg.flags)} {seqv}:{(seqv + n) & 0xFFFFFFFF}({n})"
    if seg.has_ack or show_ack:
        s += f" ack {ackv}"
    s += f" win {seg.window}"
    o = pd_options(seg.options if options is None else options)
    return s + (" " + o if o else "")


class Runner:
    """Runs one script against one target; :meth:`run` returns the :class:`Outcome`."""

    def __init__(self, script: ps.Script, target: Target, cfg: RunConfig, *, faults=(), seed: int = 0) -> None:
        self.script = script
        self.t = target
        self.cfg = cfg
        self.out = Outcome(path=script.path, target=target.name)
        self.shells: dict[int, list[ShellCommand]] = {}
        self.socks: list[_Sock] = []
        self.sut: _Sock | None = None            # packetdrill's socket_under_test
        self.fds: dict[int, int] = {}            # script fd -> live fd
        self.rng = random.Random(seed)
        self.blocking: tuple[ps.Event, Pending, LineResult] | None = None
        self.last_event: ps.Event | None = None
        self.last_time: int | None = None        # adjusted script time of the previous event
        self.last_anchored = False
        self.script_last_us = 0
        self.rows: dict[int, LineResult] = {}
        from rawfin.sim.emulator import Link
        self.link = Link(delay_ns=0, faults=faults, seed=seed)
        self.link_count = 0
        self.fin_seen = {"in": False, "out": False}
        self.delayed: list[tuple[int, int, bytes, tcpraw.Packet, WireRecord]] = []   # inbound held back
        self.out_held: list[tuple[int, bytes, str | None]] = []                        # outbound held back
        self.states_out: dict[int, str] = {}
        self.client_side: str | None = None      # "script" or "sut": who sent the SYN

    # -- the main loop ---------------------------------------------------------------------
    def run(self) -> Outcome:
        self.shells = check_script(self.script, self.cfg, self.t.tcp_info_fields)
        for ev in self.script.events:
            r = LineResult(line=ev.line, text=ev.text(), kind=self._kind(ev))
            self.out.lines.append(r)
            self.rows[ev.line] = r
        self.t.open(self.cfg)
        self.out.truth = self.t.truth
        try:
            if self.script.init_command is not None:
                self._shell(self.script.init_line or 1, None)
            for ev in self.script.events:
                self._event(ev)
            self._finish_blocking(wait=True, final=True)
            if self.script.cleanup_command is not None:
                self._shell(self.script.cleanup_line or 1, None)
        except ScriptFailed as f:
            if self.out.failure is None:
                self.out.failure = f"script line {f.line}: {f.message}"
            r = self.rows.get(f.line)
            if r is not None:
                r.verdict = "FAIL"
                r.detail = r.detail or f.message
        finally:
            try:
                self._drain_rest()
            finally:
                self.out.transitions = self.t.transitions()
                self.out.notes += self.t.notes()
                self.t.close()
        self._states()
        return self.out

    @staticmethod
    def _kind(ev: ps.Event) -> str:
        a = ev.action
        if isinstance(a, ps.PacketSpec):
            return "inbound" if a.direction == "<" else "outbound"
        if isinstance(a, CodeSpec):
            return "code"
        return "syscall" if isinstance(a, ps.SyscallSpec) else "command"

    def _event(self, ev: ps.Event) -> None:
        r = self.rows[ev.line]
        self._finish_blocking()
        t0 = self._adjust(ev)
        r.script_us = t0
        a = ev.action
        if isinstance(a, ps.PacketSpec):
            if a.direction == "<":
                self._wait_for(ev, t0, r)
                self._inbound(ev, a, r)
            else:
                self._outbound(ev, a, t0, r)
        elif isinstance(a, ps.SyscallSpec):
            self._wait_for(ev, t0, r)
            self._syscall(ev, a, t0, r)
        elif isinstance(a, CodeSpec):
            self._wait_for(ev, t0, r)
            self._code(ev, a, r)
        else:
            self._wait_for(ev, t0, r)
            r.detail = self._shell(ev.line, r)
            r.verdict = "ok"
        self.script_last_us = t0
        self.last_time = t0
        self.last_event = ev
        self.last_anchored = isinstance(a, ps.PacketSpec) and a.direction == "<"

    def _adjust(self, ev: ps.Event) -> int:
        tm = ev.time
        if tm.kind in ("absolute", "absolute_range"):
            return tm.usecs
        anchored = isinstance(ev.action, ps.PacketSpec) and ev.action.direction == "<"
        if self.last_event is not None and self.last_anchored and anchored:
            offset = self.last_time or 0
        else:
            offset = self.t.now()
        self._offset = offset
        return offset + tm.usecs

    def _end_time(self, ev: ps.Event, t0: int) -> int | None:
        tm = ev.time
        if tm.end_usecs is None:
            return None
        return tm.end_usecs + (getattr(self, "_offset", 0) if tm.kind == "relative_range" else 0)

    def _tolerance(self, script_us: int) -> int:
        tol = self.cfg.tolerance_usecs
        if self.last_time is not None:
            dyn = int(self.cfg.tolerance_percent / 100.0 * (script_us - self.last_time))
            tol = max(tol, dyn)
        return tol

    def _verify_time(self, ev: ps.Event, script_us: int, end_us: int | None, live_us: int, what: str,
                     last: int | None = None) -> None:
        kind = ev.time.kind
        if kind == "any":
            return
        tol = self.cfg.tolerance_usecs
        ref = self.last_time if last is None else last
        if ref is not None:
            tol = max(tol, int(self.cfg.tolerance_percent / 100.0 * (script_us - ref)))
        s = lambda us: f"{us / 1e6:.6f}"
        if kind.endswith("range") and end_us is not None:
            if live_us < script_us - tol or live_us > end_us + tol:
                raise ScriptFailed(ev.line, f"timing error: expected {what} in time range {s(script_us)}~"
                                            f"{s(end_us)} sec but happened at {s(live_us)} sec")
            return
        if abs(live_us - script_us) > tol:
            raise ScriptFailed(ev.line, f"timing error: expected {what} at {s(script_us)} sec but happened at "
                                        f"{s(live_us)} sec; tolerance {s(tol)} sec")

    def _wait_for(self, ev: ps.Event, t0: int, r: LineResult) -> None:
        self._pump_until(t0)
        now = self.t.now()
        r.live_us = now
        what = {"inbound": "inbound packet", "syscall": "system call start", "command": "command",
                "code": "%{ }% block"}[r.kind]
        if self.out.lines and ev is not self.script.events[0]:
            self._verify_time(ev, t0, None, now, what)

    def _pump_until(self, t_us: int) -> None:
        """Let time pass to ``t_us``, delivering held-back inbound segments when they are due."""
        while self.delayed and self.delayed[0][0] <= t_us:
            due, _, raw, pkt, rec = self.delayed.pop(0)
            self.t.wait(due)
            rec.time_ns = self.t.now() * 1000
            rec.sut_state = self.t.inject(raw, pkt) or ""
        self.t.wait(t_us)

    # -- %{ }% blocks: assertions on the socket's TCP_INFO, taken now ------------------------------
    def _code(self, ev: ps.Event, spec: CodeSpec, r: LineResult) -> None:
        sock = self.sut
        if sock is None or sock.live_fd < 0:
            raise ScriptFailed(ev.line, "%{ }% block: no socket under test to read TCP_INFO from")
        p = Pending(call=Call(name="tcp_info", fd=sock.live_fd), start_us=self.t.now())
        self.t.start_call(p)
        if not self.t.wait_call(p, self.t.now() + 1_000_000):
            raise ScriptFailed(ev.line, "%{ }% block: getsockopt(TCP_INFO) did not return")
        if p.ret < 0 or not isinstance(p.out, dict):
            raise ScriptFailed(ev.line, f"%{{ }}% block: getsockopt(TCP_INFO) failed: "
                                        f"{_errno.errorcode.get(p.errno, p.errno)}")
        info = p.out
        failed = evaluate(spec, info)
        r.detail = ", ".join(f"{f} = {info[f]}" for f in sorted(spec.fields) if f in info)
        if failed:
            raise ScriptFailed(ev.line, failed)
        r.verdict = "ok"

    # -- shell commands --------------------------------------------------------------------
    def _shell(self, line: int, r: LineResult | None) -> str:
        notes = [self.t.shell(cmd) for cmd in self.shells.get(line, [])]
        text = _merge_notes([n for n in notes if n])
        if text:
            self.out.notes.append(f"line {line}: {text}")
        return text

    # -- inbound packets ----------------------------------------------------------------------
    def _inbound(self, ev: ps.Event, spec: ps.PacketSpec, r: LineResult) -> None:
        sock = self._socket_for(spec, ev)
        if sock.state == "synack_sent" and spec.has("."):
            sock.state = "synack_acked"
        elif sock.state == "syn_sent" and spec.has("S") and spec.has("."):
            sock.state = "syn_acked"
            sock.script_remote_isn = sock.live_remote_isn = spec.seq
        if self.client_side is None and spec.has("S") and not spec.has("."):
            self.client_side = "script"
        syn = spec.has("S")
        seqv = (spec.seq + sock.remote_offset(syn)) & 0xFFFFFFFF
        ackv = spec.ack or 0
        if spec.has("."):
            ackv = (ackv + sock.local_offset(syn)) & 0xFFFFFFFF
        options = []
        for o in spec.options or ():
            if o.kind == "TS":
                ecr = o.values[1]
                if spec.has("."):
                    live = sock.ts_map.get(ecr)
                    if live is not None:
                        ecr = live
                    elif self.cfg.tcp_ts_ecr_scaled and sock.first_ts is not None:
                        ecr = (ecr - sock.first_ts[0] + sock.first_ts[1]) & 0xFFFFFFFF
                    else:
                        raise ScriptFailed(ev.line, f"unable to infer live TS ecr for script TS ecr {ecr}; "
                                                    f"no matching or preceding outbound TS val")
                options.append(("Timestamp", (o.values[0], ecr)))
            elif o.kind == "sack":
                off = sock.local_offset(syn)
                options.append(("SAck", tuple((v + off) & 0xFFFFFFFF for v in o.values)))
            else:
                options.append(_OPT_SCAPY[o.kind](o))
        lr, ll = sock.live_remote, sock.live_local
        sport = spec.ports[0] if spec.ports and spec.ports[0] else lr[1]
        dport = spec.ports[1] if spec.ports and spec.ports[1] else ll[1]
        seg = Segment(src=lr[0], dst=ll[0], sport=sport, dport=dport, seq=seqv, ack=ackv, flags=spec_flags(spec),
                      window=spec.window or 0, payload=bytes(spec.length), options=tuple(options))
        tos = (_ECN.get(spec.ecn or "", 0) if spec.ecn else 0) | (spec.tos or 0)
        raw = tcpraw.build(seg, tos=tos, ttl=spec.ttl or 64)
        pkt = tcpraw.Packet(seg=seg, tos=tos, ttl=spec.ttl or 64, raw=raw)
        now = self.t.now()
        rec = WireRecord(time_ns=now * 1000, direction="in", seg=seg, script_text=spec.text(), line=ev.line)
        acts = self._faults("in", seg)
        self.out.wire.append(rec)
        r.verdict = "ok"
        r.detail = "sent"
        if "drop" in acts:
            rec.note = acts["drop"]
            r.detail = f"dropped on the way ({acts['drop']})"
            self.out.faults.append(f"line {ev.line}: {acts['drop']}: {spec.text()} never reached the "
                                   f"{self.t.name}")
            return
        if "delay" in acts:
            rule, by = acts["delay"]
            rec.note = f"{rule}: arrives {by / 1e6:g} s late"
            r.detail = rec.note
            self.out.faults.append(f"line {ev.line}: {rule}: {spec.text()} held back {by / 1e6:g} s")
            self._hold(now + by, raw, pkt, rec)
        else:
            rec.sut_state = self.t.inject(raw, pkt) or ""
        if "duplicate" in acts:
            rule, by = acts["duplicate"]
            copy = WireRecord(time_ns=(now + by) * 1000, direction="in", seg=seg, script_text=spec.text(),
                              line=ev.line, note=f"{rule}: a second copy")
            self.out.wire.append(copy)
            self.out.faults.append(f"line {ev.line}: {rule}: {spec.text()} delivered twice, the copy "
                                   f"{by / 1e6:g} s later")
            self._hold(now + by, raw, pkt, copy)
            if by == 0:
                self._pump_until(now)

    def _hold(self, due: int, raw: bytes, pkt: tcpraw.Packet, rec: WireRecord) -> None:
        self.delayed.append((due, len(self.delayed), raw, pkt, rec))
        self.delayed.sort(key=lambda x: (x[0], x[1]))

    def _faults(self, direction: str, seg: Segment) -> dict:
        if not self.link.faults:
            return {}
        self.link_count += 1
        sut_client = self.client_side == "sut"
        sender = ("server" if sut_client else "client") if direction == "in" else ("client" if sut_client else "server")
        final_ack = (seg.has_ack and not seg.data_len and not seg.flags & 7 and self.fin_seen["in" if direction
                     == "out" else "out"] and self.fin_seen[direction])
        if seg.fin:
            self.fin_seen[direction] = True
        acts = {}
        for f in self.link.decide(self.link_count, sender, seg, final_ack):
            if f.action == "drop":
                acts["drop"] = f.text
            elif f.action in ("delay", "duplicate"):
                acts[f.action] = (f.text, f.by_ns // 1000)
        return acts

    def _socket_for(self, spec: ps.PacketSpec, ev: ps.Event) -> _Sock:
        """packetdrill's find_or_create_socket_for_script_packet."""
        sut = self.sut
        if spec.direction == "<" and (sut is None or sut.state == "listening"):
            child = _Sock(state="passive_packet_received", script_remote_isn=spec.seq, live_remote_isn=spec.seq)
            child.live_remote = (self.cfg.remote_ip, self._ephemeral())
            child.live_local = (self.cfg.local_ip, self.cfg.bind_port)
            self.socks.append(child)
            self.sut = child
            return child
        if spec.direction == ">" and spec.has("S") and not spec.has(".") and sut is not None \
                and sut.state == "active_connecting":
            sut.state = "syn_sent"
            sut.script_local_isn = spec.seq
            return sut
        if sut is not None:
            return sut
        raise ScriptFailed(ev.line, "no matching socket for script packet")

    def _ephemeral(self) -> int:
        # a port of this run's own: the tracepoint sees every namespace on the machine
        return self.rng.randrange(40000, 60000)

    # -- outbound packets ---------------------------------------------------------------------
    def _outbound(self, ev: ps.Event, spec: ps.PacketSpec, t0: int, r: LineResult) -> None:
        sock = self._socket_for(spec, ev)
        end = self._end_time(ev, t0)
        if ev.time.kind == "any":
            deadline = None
        else:
            wait_s = int(max(t0, end or 0) - self.script_last_us) // _SEC_US + 2
            deadline = self.t.now() + wait_s * _SEC_US
        want = spec.length
        got: list[tuple[int, tcpraw.Packet]] = []
        total = 0
        while True:
            nxt = self._next_outbound(sock, deadline, ev)
            if nxt is None:
                if got:
                    break
                r.detail = "nothing arrived"
                raise ScriptFailed(ev.line, f"expected {spec.text()}, got nothing in {self._waited(deadline)}")
            t_us, pkt = nxt
            if got and not self._same_headers(got[-1][1], pkt):
                self._note_unexpected(got)
                got, total = [], 0
            got.append((t_us, pkt))
            total += pkt.seg.data_len
            if total >= want or self.cfg.strict_segments:
                break
        r.live_us = got[0][0]
        for t_us, pkt in got:
            rec = self._record_out(pkt, t_us, sock, ev.line)
            if len(got) > 1:
                rec.note = (rec.note + "; " if rec.note else "") + f"part of {len(got)} joined (TSO/GSO)"
        if total != want:
            actual = self._script_view(sock, got[0][1], got[-1][1], total)
            r.detail = f"got {actual}"
            raise ScriptFailed(ev.line, f"expected {spec.text()}, got {actual} (live packet payload: expected "
                                        f"{want} bytes vs actual {total} bytes)")
        self._verify_out(ev, spec, sock, got, t0, end, r)

    def _waited(self, deadline: int | None) -> str:
        return "the time the script allows" if deadline is None else "time (the script's time plus 2 s)"

    def _next_outbound(self, sock: _Sock, deadline: int | None, ev: ps.Event):
        """The next outbound segment of the socket under test, after the link's faults."""
        while True:
            limit = deadline
            if self.delayed:
                limit = self.delayed[0][0] if limit is None else min(limit, self.delayed[0][0])
            if self.out_held:
                limit = self.out_held[0][0] if limit is None else min(limit, self.out_held[0][0])
            if self.out_held and self.out_held[0][0] <= self.t.now():
                got = self.out_held.pop(0)
                held = True
            else:
                got = self.t.sniff(limit)
                held = False
            if got is None:
                if self.delayed and (deadline is None or self.delayed[0][0] <= deadline) \
                        and self.delayed[0][0] <= max(self.t.now(), self.delayed[0][0]):
                    self._pump_until(self.delayed[0][0])
                    continue
                if self.out_held and (deadline is None or self.out_held[0][0] <= deadline):
                    self.t.wait(self.out_held[0][0])
                    continue
                if deadline is not None and self.t.now() < deadline:
                    continue
                return None
            t_us, raw, state = got
            try:
                pkt = tcpraw.parse(raw, time_ns=t_us * 1000)
            except Exception:
                continue          # not TCP (router solicitations and the like): not the script's business
            if state:
                self.states_out[id(pkt.seg)] = state
            s = pkt.seg
            if not self._belongs(sock, s):
                continue
            if not held:
                acts = self._faults("out", s)
                if "drop" in acts:
                    rec = self._record_out(pkt, t_us, sock, None)
                    rec.note = f"{acts['drop']}: never reached the script"
                    self.out.faults.append(f"{acts['drop']}: {rec.script_text} sent at {t_us / 1e6:.6f} s was "
                                           f"dropped on the way to the script")
                    continue
                if "duplicate" in acts:
                    rule, by = acts["duplicate"]
                    self.out_held.append((t_us + by, raw, state))
                    self.out_held.sort(key=lambda x: x[0])
                    self.out.faults.append(f"{rule}: the script receives {pd_flags(s.flags)} seq {s.seq} twice")
                if "delay" in acts:
                    rule, by = acts["delay"]
                    self.out_held.append((t_us + by, raw, state))
                    self.out_held.sort(key=lambda x: x[0])
                    self.out.faults.append(f"{rule}: {pd_flags(s.flags)} seq {s.seq} reaches the script "
                                           f"{by / 1e6:g} s late")
                    continue
            return t_us, pkt

    def _belongs(self, sock: _Sock, s: Segment) -> bool:
        if sock.state == "syn_sent" and sock.live_local[1] == 0 or sock.state in ("active_connecting",):
            # the SYN of a connect(): learn the live port and ISN from it (find_connect_for_live_packet)
            if s.syn and not s.has_ack and s.dst == self.cfg.remote_ip and s.dport == sock.live_remote[1]:
                sock.live_local = (s.src, s.sport)
                sock.live_local_isn = s.seq
                self.client_side = "sut"
                return True
            return False
        if (s.src, s.sport) == sock.live_local and (s.dst, s.dport) == sock.live_remote:
            if sock.state == "passive_packet_received" and s.syn and s.has_ack:
                sock.state = "synack_sent"
                sock.live_local_isn = s.seq
            return True
        return False

    def _same_headers(self, a: tcpraw.Packet, b: tcpraw.Packet) -> bool:
        x, y = a.seg, b.seg
        return ((x.src, x.sport, x.dst, x.dport, x.ack, x.flags & ~9 & 0xFF, x.window) ==
                (y.src, y.sport, y.dst, y.dport, y.ack, y.flags & ~9 & 0xFF, y.window)
                and y.seq == (x.seq + x.data_len) & 0xFFFFFFFF)

    def _note_unexpected(self, got) -> None:
        for t_us, pkt in got:
            for rec in self.out.wire:
                if rec.seg is pkt.seg:
                    rec.note = "not what the script expected next"

    def _map_out(self, sock: _Sock, s: Segment) -> tuple[int, int]:
        syn = s.syn
        seqv = (s.seq - sock.local_offset(syn)) & 0xFFFFFFFF
        ackv = s.ack
        if s.has_ack:
            ackv = (s.ack - sock.remote_offset(syn)) & 0xFFFFFFFF
        return seqv, ackv

    def _script_view(self, sock: _Sock, first: tcpraw.Packet, last: tcpraw.Packet, total: int) -> str:
        s = last.seg.with_(seq=first.seg.seq, payload=b"", data_len=total)
        seqv, ackv = self._map_out(sock, s)
        return pd_text(s, seqv, ackv, self._script_options(sock, s.options))

    def _script_options(self, sock: _Sock, options) -> tuple:
        out = []
        for name, v in options:
            if name == "Timestamp" and sock.first_ts is not None:
                out.append((name, ((sock.first_ts[0] + v[0] - sock.first_ts[1]) & 0xFFFFFFFF, v[1])))
            elif name == "SAck":
                off = sock.remote_offset(False)
                out.append((name, tuple((x - off) & 0xFFFFFFFF for x in v)))
            else:
                out.append((name, v))
        return tuple(out)

    def _record_out(self, pkt: tcpraw.Packet, t_us: int, sock: _Sock, line: int | None) -> WireRecord:
        s = pkt.seg
        seqv, ackv = self._map_out(sock, s)
        rec = WireRecord(time_ns=t_us * 1000, direction="out", seg=s,
                         script_text=pd_text(s, seqv, ackv, self._script_options(sock, s.options)), line=line,
                         sut_state=self.states_out.get(id(s), ""))
        self.out.wire.append(rec)
        return rec

    def _verify_out(self, ev: ps.Event, spec: ps.PacketSpec, sock: _Sock, got, t0: int, end: int | None,
                    r: LineResult) -> None:
        first, last = got[0][1], got[-1][1]
        s = last.seg
        total = sum(p.seg.data_len for _, p in got)
        seqv, ackv = self._map_out(sock, first.seg)
        if s.has_ack:
            _, ackv = self._map_out(sock, s)
        else:
            ackv = s.ack
        # the TS val mapping (map_outbound_live_packet)
        s_ts = next((o for o in spec.options or () if o.kind == "TS"), None)
        a_ts = next((v for n, v in s.options if n == "Timestamp"), None)
        if s_ts is not None and a_ts is not None:
            sock.ts_map[s_ts.values[0]] = a_ts[0]
            if sock.first_ts is None:
                sock.first_ts = (s_ts.values[0], a_ts[0])
        actual = self._script_view(sock, first, last, total)
        r.detail = f"got {actual}"
        flags = s.flags
        want = spec_flags(spec)
        problems = []
        for letter, name, bit in (("F", "tcp_fin", 1), ("S", "tcp_syn", 2), ("R", "tcp_rst", 4),
                                  ("P", "tcp_psh", 8), (".", "tcp_ack", 16), ("U", "tcp_urg", 32),
                                  ("E", "tcp_ece", 64), ("W", "tcp_cwr", 128)):
            if bool(want & bit) != bool(flags & bit):
                problems.append(f"{name}: expected {int(bool(want & bit))} vs actual {int(bool(flags & bit))}")
                break
        if not problems and seqv != spec.seq:
            problems.append(f"tcp_seq: expected {spec.seq} vs actual {seqv}")
        if not problems and (spec.ack or 0) != ackv:
            problems.append(f"tcp_ack_seq: expected {spec.ack or 0} vs actual {ackv}")
        if not problems and spec.window is not None and spec.window != s.window:
            problems.append(f"tcp_window: expected {spec.window} vs actual {s.window}")
        if not problems and spec.options is not None:
            problems += self._check_options(spec, s.options, t0)
        if not problems:
            problems += self._check_ip(spec, last)
        if not problems and any(p.seg.payload.strip(b"\0") for _, p in got):
            problems.append("incorrect outbound data payload")
        if problems:
            raise ScriptFailed(ev.line, f"expected {spec.text()}, got {actual} ({problems[0]})")
        self._verify_time(ev, t0, end, got[0][0], "outbound packet")
        r.verdict = "ok"

    def _check_options(self, spec: ps.PacketSpec, actual, t0: int) -> list[str]:
        want = spec.options or ()
        if [_KIND_OF.get(o.kind) for o in want] != [n for n, _ in actual]:
            return ["bad outbound TCP options"]
        for o, (name, v) in zip(want, actual):
            if o.kind == "TS":
                tick = self.cfg.tcp_ts_tick_usecs
                if tick:
                    tol = max(self.cfg.tolerance_usecs, int(self.cfg.tolerance_percent / 100.0 * t0))
                    sock = self.sut
                    mapped = v[0]
                    if sock is not None and sock.first_ts is not None:
                        mapped = (sock.first_ts[0] + v[0] - sock.first_ts[1]) & 0xFFFFFFFF
                    diff = (mapped - o.values[0] + 2**31) % 2**32 - 2**31
                    if abs(diff) * tick > tol:
                        return [f"bad outbound TCP timestamp value, tolerance {tol}"]
            elif o.kind == "sack":
                off = self.sut.remote_offset(False) if self.sut else 0
                if tuple((x - off) & 0xFFFFFFFF for x in v) != o.values:
                    return [f"bad value in outbound TCP option (kind=5): expected: {o.text()}"]
            elif o.kind in ("mss", "wscale") and (v,) != o.values:
                return [f"bad value in outbound TCP option ({o.kind}): expected: {o.text()} actual: {o.kind} {v}"]
        return []

    def _check_ip(self, spec: ps.PacketSpec, pkt: tcpraw.Packet) -> list[str]:
        ecn = pkt.tos & 3
        if spec.ecn == "ect01" and ecn not in (1, 2):
            return [f"ip_ecn: expected: 0x1 or 0x2 vs actual: {ecn:#x}"]
        if spec.ecn and spec.ecn != "ect01" and _ECN[spec.ecn] != ecn:
            return [f"ip_ecn: expected: {_ECN[spec.ecn]:#x} vs actual: {ecn:#x}"]
        if spec.tos is not None and spec.tos != pkt.tos:
            return [f"tos: expected: {spec.tos:#x} vs actual: {pkt.tos:#x}"]
        if spec.ttl is not None and spec.ttl != pkt.ttl:
            return [f"ttl: expected: {spec.ttl} vs actual: {pkt.ttl}"]
        return []

    def _drain_rest(self) -> None:
        """Segments the target sent after the last line: shown, not judged (packetdrill ignores them)."""
        sock = self.sut
        while True:
            got = self.t.sniff(self.t.now())
            if got is None:
                return
            t_us, raw, state = got
            try:
                pkt = tcpraw.parse(raw, time_ns=t_us * 1000)
            except Exception:
                continue
            if state:
                self.states_out[id(pkt.seg)] = state
            if sock is not None and self._belongs(sock, pkt.seg):
                rec = self._record_out(pkt, t_us, sock, None)
                rec.note = "after the script's last line"

    # -- system calls --------------------------------------------------------------------------
    def _finish_blocking(self, wait: bool = False, final: bool = False) -> None:
        """Check a blocking call that returned; with ``wait``, give it one second to (packetdrill's
        await_idle_thread before the next call, and at the end of the script)."""
        if self.blocking is None:
            return
        ev, p, r = self.blocking
        if not p.done:
            if not wait:
                return
            if not self.t.wait_call(p, self.t.now() + _SEC_US):
                self.blocking = None
                raise ScriptFailed(ev.line, "exiting while a blocking system call is in progress" if final else
                                   "blocking system call while another blocking system call is already "
                                   "in progress")
        self.blocking = None
        self._check_result(ev, ev.action, p, r)
        end = ev.action.end_usecs
        if ev.time.kind == "relative":
            end += r.script_us - ev.time.usecs
        self._verify_time(ev, end, None, p.end_us or 0, "system call return", last=r.script_us)

    def _syscall(self, ev: ps.Event, spec: ps.SyscallSpec, t0: int, r: LineResult) -> None:
        self._finish_blocking(wait=True)
        call = self._resolve(ev, spec)
        if spec.name == "connect":        # run_syscall_connect: the socket is connecting from now on
            s = self._sock_of(call.fd)
            if s is not None and s.state == "init":
                s.state = "active_connecting"
                s.live_remote = (self.cfg.remote_ip, self.cfg.connect_port)
        p = Pending(call=call, start_us=self.t.now())
        self.t.start_call(p)
        if spec.blocking:
            self.blocking = (ev, p, r)
            r.detail = "blocking"
            r.verdict = "ok"
            return
        if not self.t.wait_call(p, self.t.now() + _SEC_US):
            r.detail = "blocked"
            raise ScriptFailed(ev.line, f"{spec.name}() blocked, but the script expects it to return at once "
                                        f"(write ...T before the call when it should block)")
        self._check_result(ev, spec, p, r)

    def _live_fd(self, ev: ps.Event, e) -> int:
        try:
            fd = eval_int(e)
        except ValueError as err:
            raise ScriptFailed(ev.line, str(err)) from None
        live = self.fds.get(fd)
        if live is None:
            raise ScriptFailed(ev.line, f"unable to find fd with script fd {fd}")
        return live

    def _resolve(self, ev: ps.Event, spec: ps.SyscallSpec) -> Call:
        n, a = spec.name, spec.args
        arity = {"socket": 3, "bind": 3, "listen": 2, "accept": 3, "connect": 3, "read": 3, "write": 3,
                 "send": 4, "recv": 4, "sendto": 6, "recvfrom": 6, "readv": 3, "writev": 3, "close": 1,
                 "shutdown": 2, "setsockopt": 5, "getsockopt": 5, "fcntl": None, "ioctl": 3, "poll": 3,
                 "sendmsg": 3, "recvmsg": 3}[n]
        if arity is not None and len(a) != arity:
            raise ScriptFailed(ev.line, f"{n}() takes {arity} arguments, the script gives {len(a)}")
        try:
            if n == "socket":
                dom = self.cfg.socket_family if isinstance(a[0], ps.Ellipsis_) else eval_int(a[0])
                return Call(name=n, args={"domain": dom, "type": eval_int(a[1]), "proto": eval_int(a[2])})
            if n == "poll":
                fds = []
                if not isinstance(a[0], ps.List):
                    raise ValueError("poll() wants a list of {fd=..., events=...}")
                for item in a[0].items:
                    if not isinstance(item, ps.Struct):
                        raise ValueError("poll() wants {fd=..., events=...} structures")
                    fds.append((self._live_fd(ev, item.get("fd")), eval_int(item.get("events")),
                                eval_int(item.get("revents") or ps.Int(value=0))))
                return Call(name=n, args={"fds": fds, "timeout": eval_int(a[2])}, blocking=spec.blocking)
            fd = self._live_fd(ev, a[0])
            args: dict = {}
            if n == "bind":
                args["addr"] = (self.cfg.bind_ip, self.cfg.bind_port)
            elif n == "connect":
                args["addr"] = (self.cfg.connect_ip, self.cfg.connect_port)
            elif n == "listen":
                args["backlog"] = eval_int(a[1])
            elif n in ("read", "write"):
                args["count"] = eval_int(a[2])
            elif n in ("send", "recv"):
                args["count"] = eval_int(a[2])
                args["flags"] = eval_int(a[3])
            elif n in ("sendto", "recvfrom"):
                args["count"] = eval_int(a[2])
                args["flags"] = eval_int(a[3])
            elif n in ("readv", "writev"):
                args["count"] = _iov_len(a[1])
            elif n in ("sendmsg", "recvmsg"):
                m = a[1]
                iov = m.get("msg_iov(1)") if isinstance(m, ps.Struct) else None
                if iov is None:
                    iov = next((i.value for i in getattr(m, "items", ()) if isinstance(i, ps.Assign)
                                and i.name.startswith("msg_iov")), None)
                args["count"] = _iov_len(iov) if iov is not None else 0
                args["flags"] = eval_int(a[2])
            elif n == "shutdown":
                args["how"] = eval_int(a[1])
            elif n in ("setsockopt", "getsockopt"):
                level, name = eval_int(a[1]), eval_int(a[2])
                args["level"], args["name"] = level, name
                args["opt"] = SOCKOPTS.get((level, name), f"{level}/{name}")
                if n == "setsockopt":
                    args["value"] = _opt_value(a[3])
                    args["len"] = eval_int(a[4])
                else:
                    args["expect"] = a[3]
                    args["len"] = a[4]
            elif n == "fcntl":
                args["cmd"] = eval_int(a[1])
                args["arg"] = eval_int(a[2]) if len(a) > 2 else 0
            elif n == "ioctl":
                args["request"] = eval_int(a[1])
                args["expect"] = a[2]
            return Call(name=n, fd=fd, args=args, blocking=spec.blocking)
        except ValueError as e:
            raise ScriptFailed(ev.line, f"{n}(): {e}") from None

    def _check_result(self, ev: ps.Event, spec: ps.SyscallSpec, p: Pending, r: LineResult) -> None:
        import os as _os
        try:
            expected = eval_int(spec.result)
        except ValueError as e:
            raise ScriptFailed(ev.line, f"{spec.name}(): {e}") from None
        got = f"= {p.ret}" + (f" {ERRNO_NAME.get(p.errno, p.errno)} ({_os.strerror(p.errno)})"
                              if p.ret < 0 else "")
        r.detail = got
        r.verdict = "ok"
        fd_result = spec.name in ("socket", "accept")
        if fd_result and expected >= 0:
            if p.ret < 0:
                raise ScriptFailed(ev.line, f"{spec.name}(): Expected non-negative result but got {p.ret} with "
                                            f"errno {p.errno} ({_os.strerror(p.errno)})")
        elif p.ret != expected:
            raise ScriptFailed(ev.line, f"{spec.name}(): Expected result {expected} but got {p.ret} with errno "
                                        f"{p.errno} ({_os.strerror(p.errno)})")
        if spec.errno is not None:
            want = ERRNO[spec.errno]
            if p.errno != want:
                raise ScriptFailed(ev.line, f"{spec.name}(): Expected errno {want} ({_os.strerror(want)}) but got "
                                            f"{p.errno} ({_os.strerror(p.errno)})")
        if fd_result and p.ret >= 0:
            self.fds[expected] = p.ret
            self._socket_call_done(spec.name, expected, p)
        elif spec.name == "listen" and p.ret == 0:
            s = self._sock_of(p.call.fd)
            if s is not None:
                s.state = "listening"
        elif spec.name == "close" and p.ret == 0:
            for k, v in list(self.fds.items()):
                if v == p.call.fd:
                    del self.fds[k]
        elif spec.name == "getsockopt" and p.ret == 0:
            self._check_value(ev, spec, spec.args[3], p.out)
        elif spec.name == "ioctl" and p.ret == 0:
            self._check_value(ev, spec, spec.args[2], p.out)
        elif spec.name == "poll" and p.ret >= 0 and isinstance(spec.args[0], ps.List):
            for item, rev in zip(spec.args[0].items, p.out or ()):
                want = item.get("revents")
                if want is not None and eval_int(want) != rev:
                    raise ScriptFailed(ev.line, f"poll(): Expected revents {want.text()} ({eval_int(want):#x}) "
                                                f"but got {rev:#x}")

    def _check_value(self, ev: ps.Event, spec: ps.SyscallSpec, want, got) -> None:
        if isinstance(want, ps.Ellipsis_) or got is None:
            return
        if isinstance(want, ps.Struct) and isinstance(got, tuple):     # {onoff=1, linger=0}
            vals = [eval_int(i.value if isinstance(i, ps.Assign) else i) for i in want.items]
            if tuple(vals) != tuple(got):
                raise ScriptFailed(ev.line, f"{spec.name}(): Bad {spec.name} value: expected {want.text()} but got "
                                            f"{got}")
            return
        try:
            w = eval_int(want)
        except ValueError:
            return
        if w != got:
            raise ScriptFailed(ev.line, f"{spec.name}(): Bad {spec.name} optval: expected: {w} actual: {got}")

    def _sock_of(self, live_fd: int | None) -> _Sock | None:
        for s in reversed(self.socks):
            if s.live_fd == live_fd:
                return s
        return None

    def _socket_call_done(self, name: str, script_fd: int, p: Pending) -> None:
        if name == "socket":
            s = _Sock(state="init", script_fd=script_fd, live_fd=p.ret)
            self.socks.append(s)
            self.sut = s
        else:   # accept: the connection the script's packets made
            child = self.sut
            if child is not None and child.live_fd < 0:
                child.script_fd = script_fd
                child.live_fd = p.ret

    # -- states both sides pass through --------------------------------------------------------
    def _states(self) -> None:
        """Each segment's states: the target's own (its truth) and the script side's (the observer)."""
        from rawfin.core.events import Transition
        from rawfin.core.observer import Observer
        trans = sorted(self.out.transitions, key=lambda t: t[0])
        obs = Observer(final_ack_hold_ns=0, fast_path=False)
        peer = (self.cfg.remote_ip, None)
        last_peer = ""
        for rec in sorted(self.out.wire, key=lambda w: w.time_ns):
            if rec.note.endswith("never reached the script") or rec.note.startswith("drop"):
                pass
            seg = rec.seg.with_(time_ns=rec.time_ns)
            for out in obs.feed(seg):
                if out.__class__ is Transition:
                    if out.endpoint.startswith(("[" + peer[0] + "]:", peer[0] + ":")):
                        last_peer = out.to.value
            rec.peer_state = last_peer
            if not rec.sut_state:
                st = ""
                for t in trans:
                    if t[0] <= rec.time_ns + (0 if rec.direction == "out" else 2_000_000):
                        st = t[4]
                rec.sut_state = st


def _merge_notes(notes: list[str]) -> str:
    """One note for a run of commands: the sysctls set together, those without effect together."""
    groups: dict[str, list[str]] = {}
    order: list[str] = []
    for n in notes:
        for part in n.split("; "):
            head, sep, rest = part.partition(": ")
            if part.startswith("sysctl ") and not sep:
                key, items = "sysctl", part[len("sysctl "):]
            elif part.startswith("sysctl ") and sep:
                key, items = f"sysctl (…): {rest}", head[len("sysctl "):]
            else:
                key, items = part, ""
            if key not in groups:
                groups[key] = []
                order.append(key)
            if items:
                groups[key].append(items)
    out = []
    for key in order:
        items = groups[key]
        if key == "sysctl":
            out.append("sysctl " + ", ".join(items))
        elif key.startswith("sysctl (…): "):
            out.append("sysctl " + ", ".join(items) + ": " + key[len("sysctl (…): "):])
        else:
            out.append(key)
    return "; ".join(out)


ERRNO_NAME = {v: k for k, v in sorted(ERRNO.items(), reverse=True)}
ERRNO_NAME.update({11: "EAGAIN"})

_OPT_SCAPY = {
    "nop": lambda o: ("NOP", None), "eol": lambda o: ("EOL", None), "mss": lambda o: ("MSS", o.values[0]),
    "wscale": lambda o: ("WScale", o.values[0]), "sackOK": lambda o: ("SAckOK", b""),
}
_KIND_OF = {"nop": "NOP", "eol": "EOL", "mss": "MSS", "wscale": "WScale", "sackOK": "SAckOK", "sack": "SAck",
            "TS": "Timestamp"}


def _iov_len(e) -> int:
    """The bytes of an iovec list ``[{..., 100}, {..., 50}]``."""
    if isinstance(e, ps.List):
        return sum(_iov_len(i) for i in e.items)
    if isinstance(e, ps.Struct) and len(e.items) == 2:
        return eval_int(e.items[1])
    raise ValueError(f"expected an iovec list [{{..., LEN}}], got {e.text()}")


def _opt_value(e):
    """A setsockopt value: an int (``[1]``), SO_LINGER's ``{onoff=1, linger=0}``, a string."""
    if isinstance(e, ps.Struct):
        on, lg = e.get("onoff"), e.get("linger")
        if on is None or lg is None:
            raise ValueError(f"expected {{onoff=N, linger=N}}, got {e.text()}")
        return (eval_int(on), eval_int(lg))
    if isinstance(e, ps.Str):
        return e.value
    return eval_int(e)

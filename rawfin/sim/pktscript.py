"""packetdrill's script language: a lexer, a parser and the syntax tree it builds.

A script (``.pkt``) is a list of events, each with a time and an action::

    0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
    +0  setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0
    +.1 < S 0:0(0) win 32792 <mss 1000,sackOK,nop,nop,nop,wscale 7>
    +0  > S. 0:0(0) ack 1 <...>
    +0  `sysctl -q net.ipv4.tcp_timestamps=1`

The tokens follow packetdrill's own lexer (``lexer.l``: longest match, then the
first rule) and the grammar its parser (``parser.y``), restricted to TCP over
IPv4/IPv6. ``%{ }%`` blocks are read by :mod:`rawfin.sim.pktcode` (assertions on
TCP_INFO only). What rawfin does not run (UDP/ICMP packets, other code in blocks,
Fast Open, MD5, AccECN, PSP/GRE/MPLS encapsulation, TCP options it does not know)
is refused here with the line number and what is missing
(:class:`Unsupported`); text that is not the language at all is a
:class:`ScriptError`. Both carry the file and line, so a command can print one
line and exit with its documented code: never a traceback, never a silent skip.

Nothing here reads a clock or opens a socket: the runners in
:mod:`rawfin.sim.pktrun` (rawfin's endpoint) and :mod:`rawfin.linux.pktkernel`
(the Linux kernel) interpret the tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from rawfin.core.errors import RawfinError
from rawfin.sim.pktcode import CodeError, CodeSpec, parse_code

#: sysexits EX_DATAERR: the text is not packetdrill's language
EXIT_SCRIPT_ERROR = 65
#: sysexits EX_UNAVAILABLE: the script needs a feature rawfin does not run
EXIT_UNSUPPORTED = 69


class ScriptError(RawfinError):
    """A script that is not packetdrill's language (or breaks one of its rules)."""

    exit_code = EXIT_SCRIPT_ERROR
    what = "syntax error"

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        super().__init__(f"{path}:{line}: {self.what}: {message}")


class Unsupported(ScriptError):
    """A script that uses a feature of packetdrill rawfin does not run."""

    exit_code = EXIT_UNSUPPORTED
    what = "not supported by rawfin"


# -- the syntax tree ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """``--name=value`` at the top of a script (value None for a bare ``--name``)."""

    name: str
    value: str | None
    line: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EventTime:
    """When an event happens, in microseconds (packetdrill's own unit).

    ``kind`` is ``absolute`` (``0.1``), ``relative`` (``+0.1``), ``any`` (``*``),
    ``absolute_range`` (``0.1~0.2``) or ``relative_range`` (``+0.1~+0.2``).
    """

    kind: str
    usecs: int = 0
    end_usecs: int | None = None

    def text(self) -> str:
        f = _fmt_secs
        return {"absolute": f(self.usecs), "relative": "+" + f(self.usecs), "any": "*",
                "absolute_range": f"{f(self.usecs)}~{f(self.end_usecs or 0)}",
                "relative_range": f"+{f(self.usecs)}~+{f(self.end_usecs or 0)}"}[self.kind]


def _fmt_secs(usecs: int) -> str:
    s = f"{usecs / 1e6:.6f}".rstrip("0").rstrip(".")
    return s or "0"


# expressions (arguments and results of system calls)
@dataclass(frozen=True, slots=True, kw_only=True)
class Ellipsis_:
    """``...``: "whatever the runner supplies" (an address, a buffer)."""

    def text(self) -> str:
        return "..."


@dataclass(frozen=True, slots=True, kw_only=True)
class Int:
    value: int
    hex: bool = False

    def text(self) -> str:
        return hex(self.value) if self.hex else str(self.value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Word:
    """A symbol such as ``SOL_SOCKET``, ``O_NONBLOCK`` or ``SHUT_WR``."""

    name: str

    def text(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True, kw_only=True)
class Str:
    value: str
    ellipsis: bool = False

    def text(self) -> str:
        return '"' + self.value + '"' + ("..." if self.ellipsis else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Or:
    """``A|B`` (bit flags)."""

    lhs: "Expr"
    rhs: "Expr"

    def text(self) -> str:
        return f"{self.lhs.text()}|{self.rhs.text()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Assign:
    """``name=value`` inside a structure (``onoff=1``, ``sin_port=htons(8080)``)."""

    name: str
    value: "Expr"

    def text(self) -> str:
        return f"{self.name}={self.value.text()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class List:
    """``[a, b]``: an array (``[1]`` is an int option value)."""

    items: tuple

    def text(self) -> str:
        return "[" + ", ".join(i.text() for i in self.items) + "]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Struct:
    """``{a=1, b=2}`` or ``{..., 100}``: a C structure."""

    items: tuple

    def text(self) -> str:
        return "{" + ", ".join(i.text() for i in self.items) + "}"

    def get(self, name: str) -> "Expr | None":
        for i in self.items:
            if isinstance(i, Assign) and i.name == name:
                return i.value
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """``htons(8080)``, ``inet_addr("192.0.2.1")``, ``msg_iov(1)``."""

    name: str
    args: tuple

    def text(self) -> str:
        return f"{self.name}(" + ", ".join(a.text() for a in self.args) + ")"


Expr = Ellipsis_ | Int | Word | Str | Or | Assign | List | Struct | Call


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpOption:
    """One TCP option of a packet line: ``kind`` is mss, wscale, sackOK, sack, TS, nop or eol."""

    kind: str
    values: tuple[int, ...] = ()

    def text(self) -> str:
        k, v = self.kind, self.values
        if k in ("mss", "wscale"):
            return f"{k} {v[0]}"
        if k == "TS":
            return f"TS val {v[0]} ecr {v[1]}"
        if k == "sack":
            return "sack " + " ".join(f"{v[i]}:{v[i + 1]}" for i in range(0, len(v), 2))
        return k

    @property
    def length(self) -> int:
        return {"nop": 1, "eol": 1, "mss": 4, "wscale": 3, "sackOK": 2, "TS": 10}.get(
            self.kind, 2 + 4 * len(self.values))


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketSpec:
    """``< S. 0:0(0) ack 1 win 257 <mss 1460,nop,wscale 7>``.

    ``direction`` is ``<`` (inbound: built and injected) or ``>`` (outbound:
    expected from the system under test). ``flags`` are packetdrill's letters
    (``S F R P . U E W``; ``.`` is ACK). ``window`` None means "not given"
    (allowed only outbound: not checked); ``options`` None means ``<...>``
    (outbound only: not checked).
    """

    direction: str
    flags: str
    seq: int
    end: int
    length: int
    ack: int | None = None
    window: int | None = None
    urg: int = 0
    options: tuple[TcpOption, ...] | None = ()
    ports: tuple[int, int] | None = None
    ecn: str | None = None          # noecn, ect0, ect1, ce, ect01 (outbound: either ECT)
    tos: int | None = None
    ttl: int | None = None

    def has(self, letter: str) -> bool:
        return letter in self.flags

    def text(self) -> str:
        """The line as packetdrill writes it (``F. 1001:1001(0) ack 1``)."""
        parts = [self.flags or "-", f"{self.seq}:{self.end}({self.length})"]
        if self.ack is not None:
            parts.append(f"ack {self.ack}")
        if self.window is not None:
            parts.append(f"win {self.window}")
        if self.urg:
            parts.append(f"urg {self.urg}")
        if self.options is None:
            parts.append("<...>")
        elif self.options:
            parts.append("<" + ",".join(o.text() for o in self.options) + ">")
        return " ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyscallSpec:
    """``accept(3, ..., ...) = 4`` or ``...0.2 read(4, ..., 1000) = 1000`` (a blocking call).

    ``end_usecs`` is the script's end time of a blocking call (``...T``), None
    for a call that must return at once. ``errno`` is the expected errno macro.
    """

    name: str
    args: tuple
    result: Expr
    errno: str | None = None
    note: str | None = None
    end_usecs: int | None = None

    @property
    def blocking(self) -> bool:
        return self.end_usecs is not None

    def text(self) -> str:
        s = f"{self.name}(" + ", ".join(a.text() for a in self.args) + f") = {self.result.text()}"
        if self.errno:
            s += f" {self.errno}"
        if self.note:
            s += f" ({self.note})"
        return s


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSpec:
    """A shell command in back quotes (`` `sysctl -q net.ipv4.tcp_timestamps=1` ``)."""

    command: str

    def text(self) -> str:
        return f"`{self.command}`"


Action = PacketSpec | SyscallSpec | CommandSpec | CodeSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    line: int
    time: EventTime
    action: Action

    def text(self) -> str:
        a = self.action
        what = f"{a.direction} {a.text()}" if isinstance(a, PacketSpec) else a.text()
        return f"{self.time.text()} {what}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Script:
    path: str
    options: tuple[Option, ...] = ()
    init_command: CommandSpec | None = None
    init_line: int | None = None
    events: tuple[Event, ...] = ()
    cleanup_command: CommandSpec | None = None
    cleanup_line: int | None = None
    lines: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def option(self, name: str, default: str | None = None) -> str | None:
        for o in reversed(self.options):
            if o.name == name:
                return o.value
        return default


# -- the lexer ------------------------------------------------------------------------------

#: words packetdrill's lexer always reads as keywords (never as a symbol)
KEYWORDS = frozenset("""sa_family sin_port sin_addr msg_name msg_iov msg_flags msg_control cmsg_data
cmsg_level cmsg_type ee_errno ee_origin ee_type ee_code ee_info ee_data scm_sec scm_nsec fd u32 u64 ptr
events revents onoff linger htons ipv4 ipv6 icmp udp GREv0 gre raw sum off key seq none checksum present
encap psp spi mpls label tc ttl inet_addr inet6_addr ack eol ecr mss mtu nop sack sackOK md5 TS FO FOEXP
ECN e0b e1b ceb tos flowlabel flags Flags val win urg wscale ect01 ect0 ect1 noecn ce id""".split())

_V4 = r"[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+"
_SEG = r"[0-9a-fA-F]{1,4}"
_V6 = "|".join([
    r"::ffff:(?:0{1,4}:)?" + _V4, rf"(?:{_SEG}:){{1,4}}:" + _V4,
    rf"(?:{_SEG}:){{7}}{_SEG}", rf"(?:{_SEG}:){{1,7}}:(?:{_SEG}(?::{_SEG}){{0,5}})?",
    rf":(?::{_SEG}){{1,7}}", r"::",
])
# (name, regex) in packetdrill's rule order: the longest match wins, then the first rule
_RULES = [
    ("ELLIPSIS", r"\.\.\."),
    ("OPTION", r"--[a-zA-Z0-9_]+"),
    ("FLOAT", r"-?[0-9]*\.[0-9]+"),
    ("INTEGER", r"-?[0-9]+"),
    ("HEX", r"0x[0-9a-fA-F]+"),
    ("WORD", r"[a-zA-Z0-9_]+"),
    ("STRING", r'"(?:\\.|[^"])*"'),
    ("BACKQUOTED", r"`(?:\\.|[^`])*`"),
    ("CHAR", r"[^ \t\n]"),
    ("SPACE", r"[ \t\r\n]+"),
    ("COMMENT", r"//[^\n]*(?:\n|$)"),
    ("CCOMMENT", r"/\*(?:[^*]|\*(?!/))*\*/"),
    ("CODE", r"%\{(?:[^}]|\}(?!%))*\}%"),
    ("IPV4_ADDR", _V4),
    ("IPV6_ADDR", _V6),
]
_COMPILED = [(n, re.compile(r)) for n, r in _RULES]


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    line: int
    value: object = None


class _Lexer:
    def __init__(self, path: str, text: str, defines: dict[str, str]) -> None:
        self.path, self.text, self.defines = path, text, defines
        self.pos, self.line = 0, 1
        self.last_line = 1

    def next(self) -> Token:
        text, pos = self.text, self.pos
        while True:
            if pos >= len(text):
                self.pos = pos
                return Token("EOF", "", self.last_line)   # an error at the end names the last line written
            best, best_len = None, 0
            for name, rx in _COMPILED:
                m = rx.match(text, pos)
                if m and len(m.group()) > best_len:
                    best, best_len = name, len(m.group())
            s = text[pos:pos + best_len]
            line = self.line
            self.line += s.count("\n")
            pos += best_len
            if best in ("SPACE", "COMMENT", "CCOMMENT"):
                continue
            self.pos = pos
            self.last_line = line
            return self._token(best, s, line)

    def _token(self, kind: str, s: str, line: int) -> Token:
        if kind == "FLOAT":
            return Token("FLOAT", s, line, s)
        if kind == "INTEGER":
            return Token("INTEGER", s, line, int(s))
        if kind == "HEX":
            return Token("HEX", s, line, int(s, 16))
        if kind == "STRING":
            return Token("STRING", s, line, s[1:-1])
        if kind == "BACKQUOTED":
            return Token("BACKQUOTED", s, line, s[1:-1])
        if kind == "CODE":
            return Token("CODE", s, line, s[2:-2].strip(" \t"))
        if kind == "WORD":
            if s in KEYWORDS:
                return Token("KW", s, line, s)
            v = self.defines.get(s)
            if v is not None:       # a --define'd symbol stands for its value
                if v.startswith('"') and v.endswith('"') and len(v) > 1:
                    return Token("STRING", s, line, v[1:-1])
                if v.startswith("`") and v.endswith("`") and len(v) > 1:
                    return Token("BACKQUOTED", s, line, v[1:-1])
                try:
                    return Token("INTEGER", s, line, int(v, 0))
                except ValueError:
                    return Token("WORD", s, line, v)
            return Token("WORD", s, line, s)
        if kind == "OPTION":
            return Token("OPTION", s, line, s[2:])
        if kind == "CHAR" and s == "`":
            raise ScriptError(self.path, line, "unterminated back-quoted command")
        if kind == "CHAR" and s == '"':
            raise ScriptError(self.path, line, "unterminated string")
        return Token(kind if kind != "CHAR" else s, s, line, s)


# -- the parser --------------------------------------------------------------------------------

_FLAG_LETTERS = set("FSRP.UEWA")
_TCP_OPTION_KEYWORDS = {"nop", "eol", "mss", "wscale", "sackOK", "sack", "TS", "md5", "FO", "FOEXP", "ECN"}
_ECN_WORDS = {"noecn", "ect0", "ect1", "ce", "ect01"}


def _usecs(tok: Token, path: str) -> int:
    """packetdrill's time: float seconds or integer seconds, in microseconds."""
    try:
        v = Decimal(tok.text)
    except InvalidOperation:
        raise ScriptError(path, tok.line, f"bad time {tok.text!r}") from None
    if v < 0:
        raise ScriptError(path, tok.line, "negative time")
    return int(v * 1_000_000)


class Parser:
    """Recursive descent over packetdrill's grammar (parser.y), TCP only."""

    def __init__(self, text: str, path: str = "<script>", defines: dict[str, str] | None = None) -> None:
        self.path = path
        self.text = text
        self.defines: dict[str, str] = dict(defines or {})
        self.lex = _Lexer(path, text, self.defines)
        self.tok = self.lex.next()
        self.ahead: list[Token] = []

    # token plumbing
    def _advance(self) -> Token:
        t = self.tok
        self.tok = self.ahead.pop(0) if self.ahead else self.lex.next()
        return t

    def _peek(self, n: int = 1) -> Token:
        while len(self.ahead) < n:
            self.ahead.append(self.lex.next())
        return self.ahead[n - 1]

    def _is(self, kind: str, text: str | None = None) -> bool:
        return self.tok.kind == kind and (text is None or self.tok.text == text)

    def _err(self, msg: str, tok: Token | None = None) -> ScriptError:
        return ScriptError(self.path, (tok or self.tok).line, msg)

    def _unsupported(self, msg: str, tok: Token | None = None) -> Unsupported:
        return Unsupported(self.path, (tok or self.tok).line, msg)

    def _expect(self, kind: str, text: str | None = None, what: str | None = None) -> Token:
        if not self._is(kind, text):
            want = what or (repr(text) if text else kind.lower())
            got = "the end of the script" if self.tok.kind == "EOF" else repr(self.tok.text)
            raise self._err(f"expected {want}, got {got}")
        return self._advance()

    def _int(self, what: str, lo: int = 0, hi: int = 2**32 - 1) -> int:
        if not self._is("INTEGER"):
            raise self._err(f"expected {what} (an integer), got "
                            f"{'the end of the script' if self.tok.kind == 'EOF' else repr(self.tok.text)}")
        t = self._advance()
        if not lo <= t.value <= hi:
            raise self._err(f"{what} out of range ({t.value} not in {lo}..{hi})", t)
        return t.value

    # script
    def parse(self) -> Script:
        options = []
        while self._is("OPTION"):
            options.append(self._option())
        init = init_line = None
        if self._is("BACKQUOTED"):
            t = self._advance()
            init, init_line = CommandSpec(command=t.value), t.line
        events: list[Event] = []
        cleanup = cleanup_line = None
        while not self._is("EOF"):
            if self._is("BACKQUOTED") and self._peek().kind == "EOF":
                t = self._advance()
                cleanup, cleanup_line = CommandSpec(command=t.value), t.line
                break
            events.append(self._event())
        if not events:
            raise self._err("a script needs at least one event")
        if events[0].time.kind != "absolute" or events[0].time.usecs != 0:
            raise ScriptError(self.path, events[0].line, "first event should be at time 0")
        last_abs = None
        for e in events:
            if e.time.kind in ("absolute", "absolute_range"):
                if last_abs is not None and e.time.usecs < last_abs:
                    raise ScriptError(self.path, e.line, f"time goes backward in script from {last_abs} usec "
                                                         f"to {e.time.usecs} usec")
                last_abs = e.time.usecs
        return Script(path=self.path, options=tuple(options), init_command=init, init_line=init_line,
                      events=tuple(events), cleanup_command=cleanup, cleanup_line=cleanup_line,
                      lines=tuple(self.text.splitlines()))

    def _option(self) -> Option:
        t = self._advance()
        name = t.value
        value = None
        if self._is("="):
            self._advance()
            v = self._advance()
            if v.kind not in ("INTEGER", "WORD", "STRING", "IPV4_ADDR", "IPV6_ADDR", "KW", "FLOAT", "HEX"):
                raise self._err(f"bad value for --{name}", v)
            value = v.value if v.kind == "STRING" else v.text
            if v.kind == "WORD" and self._is("="):       # --define=NAME=VALUE
                self._advance()
                rhs = self._advance()
                rv = {"STRING": f'"{rhs.value}"', "BACKQUOTED": f"`{rhs.value}`"}.get(rhs.kind, rhs.text)
                value = f"{v.text}={rv}"
        if name == "define" and value:
            k, _, v = value.partition("=")
            self.defines[k] = v
        return Option(name=name, value=value, line=t.line)

    # events
    def _event(self) -> Event:
        start = self.tok
        time = self._event_time()
        action = self._action(start)
        if time.kind == "any" and not (isinstance(action, PacketSpec) and action.direction == ">"):
            raise ScriptError(self.path, start.line, "event time <star> can only be used with outbound packets")
        if time.kind.endswith("range"):
            if not (isinstance(action, PacketSpec) and action.direction == ">"):
                raise ScriptError(self.path, start.line, "event time range can only be used with outbound packets")
            if (time.end_usecs or 0) < time.usecs:
                raise ScriptError(self.path, start.line, "time range is backwards")
        return Event(line=start.line, time=time, action=action)

    def _time(self) -> int:
        if not (self._is("FLOAT") or self._is("INTEGER")):
            got = "the end of the script" if self.tok.kind == "EOF" else repr(self.tok.text)
            raise self._err(f"expected an event time (such as 0, +0.1 or *), got {got}")
        return _usecs(self._advance(), self.path)

    def _event_time(self) -> EventTime:
        if self._is("*"):
            self._advance()
            return EventTime(kind="any")
        if self._is("+"):
            self._advance()
            t = self._time()
            if self._is("~"):
                self._advance()
                self._expect("+", "+", "'+' (a relative range is +T1~+T2)")
                return EventTime(kind="relative_range", usecs=t, end_usecs=self._time())
            return EventTime(kind="relative", usecs=t)
        t = self._time()
        if self._is("~"):
            self._advance()
            return EventTime(kind="absolute_range", usecs=t, end_usecs=self._time())
        return EventTime(kind="absolute", usecs=t)

    def _action(self, start: Token) -> Action:
        if self._is("<") or self._is(">"):
            return self._packet()
        if self._is("BACKQUOTED"):
            return CommandSpec(command=self._advance().value)
        if self._is("CODE"):
            t = self._advance()
            try:
                return parse_code(t.value)
            except CodeError as e:
                raise Unsupported(self.path, t.line, str(e)) from None
        if self._is("ELLIPSIS") or self._is("WORD"):
            return self._syscall()
        got = "the end of the script" if self.tok.kind == "EOF" else repr(self.tok.text)
        raise self._err(f"expected a packet ('<' or '>'), a system call or a `command` after the time, got {got}")

    # packets
    def _packet(self) -> PacketSpec:
        first = self.tok.line
        direction = self._advance().text
        ecn = tos = ttl = None
        if self._is("KW") and self.tok.text in ("ipv4", "ipv6", "gre", "GREv0", "mpls"):
            raise self._unsupported(f"encapsulated packets ({self.tok.text} ...:) are not supported")
        if self._is("(") or self._is("["):
            ecn, tos, ttl = self._ip_info()
        if self._is("KW", "encap"):
            raise self._unsupported("PSP encapsulation is not supported")
        if self._is("KW", "udp") or self._is("KW", "icmp"):
            raise self._unsupported(f"{self.tok.text.upper()} packets are not supported (TCP only)")
        ports = None
        if self._is("INTEGER") and self._peek().kind == ">":
            sport = self._int("src port", 0, 0xFFFF)
            self._advance()
            ports = (sport, self._int("dst port", 0, 0xFFFF))
        flags = self._flags()
        seq = self._int("TCP start sequence number")
        self._expect(":", ":", "':' in START:END(LENGTH)")
        end = self._int("TCP end sequence number")
        self._expect("(", "(", "'(' in START:END(LENGTH)")
        length = self._int("TCP payload size", 0, 0xFFFF)
        self._expect(")", ")", "')' in START:END(LENGTH)")
        if end != (seq + length) & 0xFFFFFFFF and end != seq + length:
            raise ScriptError(self.path, first, "inconsistent TCP sequence numbers and payload size")
        ack = window = None
        urg = 0
        if self._is("KW", "ack"):
            self._advance()
            ack = self._int("TCP ack sequence number")
        if self._is("KW", "win"):
            self._advance()
            window = self._int("TCP window value", 0, 0xFFFF)
        if self._is("KW", "urg"):
            self._advance()
            urg = self._int("urg_ptr value", 0, 0xFFFF)
        options: tuple[TcpOption, ...] | None = ()
        if self._is("<"):
            options = self._tcp_options()
        if window is None and direction == "<":
            raise ScriptError(self.path, first, "window must be specified for inbound packets")
        if options is None and direction == "<":
            raise ScriptError(self.path, first, "<...> for TCP options can only be used with outbound packets")
        if ecn == "ect01" and direction == "<":
            raise ScriptError(self.path, first, "[ect01] can only be used with outbound packets")
        if options:
            n = sum(o.length for o in options)
            if n % 4:
                raise ScriptError(self.path, first, f"TCP options are not padded correctly to ensure TCP header "
                                                    f"is a multiple of 4 bytes: {n % 4} excess bytes")
            if n > 40:
                raise ScriptError(self.path, first, "TCP header too large")
        return PacketSpec(direction=direction, flags=flags, seq=seq, end=end, length=length, ack=ack,
                          window=window, urg=urg, options=options, ports=ports, ecn=ecn, tos=tos, ttl=ttl)

    def _ip_info(self) -> tuple[str | None, int | None, int | None]:
        close = ")" if self._advance().text == "(" else "]"
        ecn = tos = ttl = None
        while True:
            if self._is("KW") and self.tok.text in _ECN_WORDS:
                ecn = self._advance().text
            elif self._is("KW", "tos"):
                self._advance()
                t = self._expect("HEX", what="a hex TOS value (tos 0x..)")
                if t.value > 0xFF:
                    raise self._err("tos out of range for 8 bits", t)
                tos = t.value
            elif self._is("KW", "ttl"):
                self._advance()
                ttl = self._int("ttl", 0, 255)
            elif self._is("KW", "flowlabel"):
                raise self._unsupported("IPv6 flow labels are not supported")
            else:
                raise self._err("expected ecn (noecn, ect0, ect1, ce, ect01), tos 0x.. or ttl N")
            if self._is(","):
                self._advance()
                continue
            self._expect(close, close)
            return ecn, tos, ttl

    def _flags(self) -> str:
        t = self.tok
        if self._is("FLOAT"):
            raise self._unsupported("AccECN ACE counters in the flags are not supported")
        if self._is("."):
            self._advance()
            return "."
        if self._is("-"):
            self._advance()
            return ""
        if self._is("WORD") or self._is("INTEGER"):
            letters = self._advance().text
            if self._is("FLOAT"):
                raise self._unsupported("AccECN ACE counters in the flags are not supported")
            bad = [c for c in letters if c not in _FLAG_LETTERS]
            if bad:
                raise self._err(f"bad TCP flags {letters!r} (letters F S R P U E W A, '.' for ACK)", t)
            if "A" in letters:
                raise self._unsupported("the AE flag (AccECN) is not supported", t)
            if self._is("."):
                self._advance()
                letters += "."
            if len(set(letters)) != len(letters):
                raise self._err(f"repeated TCP flag in {letters!r}", t)
            return letters
        got = "the end of the script" if t.kind == "EOF" else repr(t.text)
        raise self._err(f"expected TCP flags (such as S, S., F., R, P. or .), got {got}")

    def _tcp_options(self) -> tuple[TcpOption, ...] | None:
        self._advance()   # '<'
        if self._is("ELLIPSIS"):
            self._advance()
            self._expect(">", ">")
            return None
        out = []
        while True:
            t = self.tok
            if not (self._is("KW") and t.text in _TCP_OPTION_KEYWORDS):
                got = "the end of the script" if t.kind == "EOF" else repr(t.text)
                raise self._err(f"expected a TCP option (nop, eol, mss N, wscale N, sackOK, sack L:R, "
                                f"TS val V ecr E), got {got}")
            self._advance()
            k = t.text
            if k in ("FO", "FOEXP"):
                raise self._unsupported("TCP Fast Open options are not supported", t)
            if k == "md5":
                raise self._unsupported("TCP MD5 signature options are not supported", t)
            if k == "ECN":
                raise self._unsupported("AccECN options are not supported", t)
            if k == "mss":
                out.append(TcpOption(kind="mss", values=(self._int("mss value", 0, 0xFFFF),)))
            elif k == "wscale":
                out.append(TcpOption(kind="wscale", values=(self._int("window scale shift count", 0, 255),)))
            elif k == "TS":
                self._expect("KW", "val", "'val' (TS val V ecr E)")
                v = self._int("ts val")
                self._expect("KW", "ecr", "'ecr' (TS val V ecr E)")
                out.append(TcpOption(kind="TS", values=(v, self._int("ecr val"))))
            elif k == "sack":
                blocks = []
                while self._is("INTEGER"):
                    blocks.append(self._int("TCP SACK left sequence number"))
                    self._expect(":", ":", "':' in a SACK block L:R")
                    blocks.append(self._int("TCP SACK right sequence number"))
                if not blocks:
                    raise self._err("expected SACK blocks (sack L:R ...)")
                if len(blocks) > 8:
                    raise self._err("TCP option list too long")
                out.append(TcpOption(kind="sack", values=tuple(blocks)))
            else:
                out.append(TcpOption(kind=k))
            if self._is(","):
                self._advance()
                continue
            self._expect(">", ">", "',' or '>' in the TCP option list")
            return tuple(out)

    # system calls
    def _syscall(self) -> SyscallSpec:
        end = None
        if self._is("ELLIPSIS"):
            self._advance()
            end = self._time()
        name_tok = self._expect("WORD", what="a system call name")
        self._expect("(", "(", f"'(' after {name_tok.text}")
        args: list = []
        if not self._is(")"):
            args = self._expr_list(")")
        self._expect(")", ")", f"')' closing the arguments of {name_tok.text}")
        self._expect("=", "=", f"'= RESULT' after {name_tok.text}(...)")
        result = self._expr()
        errno = note = None
        if self._is("WORD") and re.fullmatch(r"E[A-Z0-9]+", self.tok.text):
            errno = self._advance().text
            if not self._is("("):
                raise self._err(f"expected '(' with the error's text after {errno}")
            note = self._note()
        elif self._is("(") and self._peek().kind in ("WORD", "KW"):
            note = self._note()
        return SyscallSpec(name=name_tok.text, args=tuple(args), result=result, errno=errno, note=note,
                           end_usecs=end)

    def _note(self) -> str:
        self._advance()   # '('
        words = []
        while not self._is(")"):
            if self._is("EOF"):
                raise self._err("unterminated note: expected ')'")
            words.append(self._advance().text)
        self._advance()
        return " ".join(words)

    def _expr_list(self, close: str) -> list:
        items = [self._expr()]
        while self._is(","):
            self._advance()
            items.append(self._expr())
        if not self._is(close):
            got = "the end of the script" if self.tok.kind == "EOF" else repr(self.tok.text)
            raise self._err(f"expected ',' or '{close}' in the list, got {got}")
        return items

    def _expr(self):
        lhs = self._primary()
        while self._is("|"):
            self._advance()
            lhs = Or(lhs=lhs, rhs=self._primary())
        return lhs

    def _primary(self):
        t = self.tok
        if self._is("ELLIPSIS"):
            self._advance()
            return Ellipsis_()
        if self._is("INTEGER"):
            return Int(value=self._advance().value)
        if self._is("HEX"):
            return Int(value=self._advance().value, hex=True)
        if self._is("STRING"):
            s = ""
            while self._is("STRING"):
                s += self._advance().value
            if self._is("ELLIPSIS"):
                self._advance()
                return Str(value=s, ellipsis=True)
            return Str(value=s)
        if self._is("[") or self._is("{"):
            close = "]" if t.text == "[" else "}"
            self._advance()
            items = [] if self._is(close) else self._expr_list(close)
            self._advance()
            return List(items=tuple(items)) if close == "]" else Struct(items=tuple(items))
        if self._is("WORD") or self._is("KW"):
            name = self._advance()
            if self._is("("):
                self._advance()
                args = [] if self._is(")") else self._expr_list(")")
                self._advance()
                call = Call(name=name.text, args=tuple(args))
                if self._is("="):
                    self._advance()
                    return Assign(name=call.text(), value=self._expr())
                return call
            if self._is("="):
                self._advance()
                return Assign(name=name.text, value=self._expr())
            if name.kind == "WORD" and isinstance(name.value, str) and name.value != name.text:
                return Word(name=name.value)    # a --define'd word
            return Word(name=name.text)
        if self._is("IPV4_ADDR") or self._is("IPV6_ADDR"):
            return Word(name=self._advance().text)
        if self._is("CODE"):
            raise self._unsupported("%{ }% code blocks are not supported")
        got = "the end of the script" if t.kind == "EOF" else repr(t.text)
        raise self._err(f"expected an expression, got {got}")


def parse(text: str, path: str = "<script>", defines: dict[str, str] | None = None) -> Script:
    """Parse a whole script; raises :class:`ScriptError` or :class:`Unsupported` with the line."""
    return Parser(text, path, defines).parse()


def parse_file(path: str, defines: dict[str, str] | None = None) -> Script:
    """Read and parse ``path`` (OSError when it cannot be read, ScriptError when not UTF-8)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ScriptError(path, line, "the script is not UTF-8 text") from None
    return parse(text, path, defines)

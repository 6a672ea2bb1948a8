"""packetdrill's ``%{ }%`` blocks, the safe part of them: assertions on TCP_INFO.

packetdrill hands a ``%{ }%`` block to a Python interpreter with the socket's ``struct tcp_info``
as variables (``tcpi_state``, ``tcpi_probes``...). rawfin never runs a script's code. It reads
the block with :mod:`ast` and accepts only what checks TCP_INFO:

- ``assert CONDITION[, MESSAGE]`` statements (separated by newlines or ``;``, lines joined
  with ``\\``), and ``NAME = INTEGER`` (packetdrill's scripts name constants that way);
- in them: integers, strings, ``True``/``False``, the ``tcpi_*`` fields, packetdrill's own
  constants (``TCP_ESTABLISHED``..., ``TCP_CA_Open``..., ``TCPI_OPT_SACK``...), comparisons
  (chained too), ``and``/``or``/``not``, ``+ - * // / % & | ^ << >>``, unary ``-``, tuples,
  and ``'format' % values`` in a message.

Anything else (calls, attributes, subscripts, imports, loops, names it does not know) is
:class:`~rawfin.sim.pktscript.Unsupported` with the line. Evaluation walks the checked tree;
nothing reaches ``eval``/``exec``.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass

#: struct tcp_info's fields in Linux's order (include/uapi/linux/tcp.h), the ones rawfin reads from the kernel
FIELDS = ("tcpi_state", "tcpi_ca_state", "tcpi_retransmits", "tcpi_probes", "tcpi_backoff", "tcpi_options",
          "tcpi_snd_wscale", "tcpi_rcv_wscale", "tcpi_rto", "tcpi_ato", "tcpi_snd_mss", "tcpi_rcv_mss",
          "tcpi_unacked", "tcpi_sacked", "tcpi_lost", "tcpi_retrans", "tcpi_fackets", "tcpi_last_data_sent",
          "tcpi_last_ack_sent", "tcpi_last_data_recv", "tcpi_last_ack_recv", "tcpi_pmtu", "tcpi_rcv_ssthresh",
          "tcpi_rtt", "tcpi_rttvar", "tcpi_snd_ssthresh", "tcpi_snd_cwnd", "tcpi_advmss", "tcpi_reordering",
          "tcpi_rcv_rtt", "tcpi_rcv_space", "tcpi_total_retrans")

#: the names packetdrill defines for a block (its code.c), with Linux's values
SYMBOLS = {
    "TCP_ESTABLISHED": 1, "TCP_SYN_SENT": 2, "TCP_SYN_RECV": 3, "TCP_FIN_WAIT1": 4, "TCP_FIN_WAIT2": 5,
    "TCP_TIME_WAIT": 6, "TCP_CLOSE": 7, "TCP_CLOSE_WAIT": 8, "TCP_LAST_ACK": 9, "TCP_LISTEN": 10,
    "TCP_CLOSING": 11,
    "TCP_CA_Open": 0, "TCP_CA_Disorder": 1, "TCP_CA_CWR": 2, "TCP_CA_Recovery": 3, "TCP_CA_Loss": 4,
    "TCPI_OPT_TIMESTAMPS": 1, "TCPI_OPT_SACK": 2, "TCPI_OPT_WSCALE": 4, "TCPI_OPT_ECN": 8,
    "TCPI_OPT_ECN_SEEN": 16, "TCPI_OPT_SYN_DATA": 32, "TCPI_OPT_USEC_TS": 64, "TCPI_OPT_TFO_CHILD": 128,
}

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
        ast.Div: operator.truediv, ast.Mod: operator.mod, ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
        ast.BitXor: operator.xor, ast.LShift: operator.lshift, ast.RShift: operator.rshift}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge}
_UNARY = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert}


class CodeError(Exception):
    """A block outside the subset (the parser turns it into Unsupported with the line)."""


@dataclass(frozen=True, slots=True)
class Check:
    """One statement of a block: an assertion (``message`` may be None) or a constant (``name``)."""

    source: str
    test: ast.expr | None = None
    message: ast.expr | None = None
    name: str | None = None
    value: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeSpec:
    """A ``%{ }%`` block rawfin runs: its checks and the TCP_INFO fields they read."""

    code: str
    checks: tuple[Check, ...]
    fields: frozenset[str]

    def text(self) -> str:
        return "%{ " + " ".join(self.code.split()) + " }%"


def parse_code(code: str) -> CodeSpec:
    """The block as checks; CodeError naming what is outside the subset."""
    src = code.replace("\\\n", " ")
    try:
        tree = ast.parse(src.strip() + "\n", mode="exec")
    except SyntaxError as e:
        raise CodeError(f"%{{ }}% block is not Python rawfin can read ({e.msg})") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise CodeError(f"%{{ }}% block is not Python rawfin can read ({e})") from None
    checks: list[Check] = []
    fields: set[str] = set()
    known: set[str] = set()
    for st in tree.body:
        seg = ast.get_source_segment(src, st) or ""
        if isinstance(st, ast.Assert):
            _check(st.test, fields, known, message=False)
            if st.msg is not None:
                _check(st.msg, fields, known, message=True)
            checks.append(Check(source=seg, test=st.test, message=st.msg))
        elif (isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name)
              and isinstance(st.value, ast.Constant) and type(st.value.value) is int):
            name = st.targets[0].id
            if name.startswith("tcpi_"):
                raise CodeError(f"%{{ }}% block assigns {name}, a TCP_INFO field")
            known.add(name)
            checks.append(Check(source=seg, name=name, value=st.value.value))
        else:
            raise CodeError(f"%{{ }}% block statement {seg!r}: rawfin runs only assert statements on "
                            f"TCP_INFO fields (and NAME = INTEGER)")
    return CodeSpec(code=code, checks=tuple(checks), fields=frozenset(fields))


def _check(node: ast.AST, fields: set[str], known: set[str], message: bool) -> None:
    def bad(what: str):
        return CodeError(f"%{{ }}% block: {what} is outside what rawfin runs (assertions on TCP_INFO fields)")

    def walk(n: ast.AST) -> None:
        if isinstance(n, ast.Constant):
            if type(n.value) not in (int, bool) and not (message and isinstance(n.value, str)):
                raise bad(f"the constant {n.value!r}")
        elif isinstance(n, ast.Name):
            if n.id in FIELDS:
                fields.add(n.id)
            elif n.id not in SYMBOLS and n.id not in known:
                raise bad(f"the name {n.id}" + (" (a TCP_INFO field rawfin does not read)"
                                                if n.id.startswith("tcpi_") else ""))
        elif isinstance(n, ast.BoolOp):
            for v in n.values:
                walk(v)
        elif isinstance(n, ast.UnaryOp) and type(n.op) in _UNARY:
            walk(n.operand)
        elif isinstance(n, ast.BinOp) and type(n.op) in _BIN:
            walk(n.left)
            walk(n.right)
        elif isinstance(n, ast.Compare) and all(type(o) in _CMP for o in n.ops):
            walk(n.left)
            for c in n.comparators:
                walk(c)
        elif isinstance(n, ast.Tuple) and message:
            for e in n.elts:
                walk(e)
        else:
            raise bad(f"{type(n).__name__.lower()} {ast.unparse(n)!r}")
    walk(node)


def evaluate(spec: CodeSpec, info: dict[str, int]) -> str | None:
    """Run the block's checks against one TCP_INFO snapshot: None when every assertion holds, else
    packetdrill's words for the first that does not."""
    env: dict[str, object] = dict(SYMBOLS)
    env.update(info)
    for c in spec.checks:
        if c.name is not None:
            env[c.name] = c.value
            continue
        try:
            held = _eval(c.test, env)
        except (ArithmeticError, TypeError, ValueError, KeyError) as e:
            return f"{type(e).__name__}: {e} ({c.source})"
        if not held:
            shown = ", ".join(f"{f} = {info[f]}" for f in sorted(_names(c.test)) if f in info)
            msg = ""
            if c.message is not None:
                try:
                    msg = f": {_eval(c.message, env)}"
                except (TypeError, ValueError, ZeroDivisionError) as e:
                    msg = f": (message: {e})"
            return f"AssertionError{msg} ({c.source}, where {shown})" if shown else f"AssertionError{msg} ({c.source})"
    return None


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id.startswith("tcpi_")}


def _eval(n: ast.AST, env: dict):
    if isinstance(n, ast.Constant):
        return n.value
    if isinstance(n, ast.Name):
        return env[n.id]
    if isinstance(n, ast.BoolOp):
        if isinstance(n.op, ast.And):
            v = True
            for x in n.values:
                v = _eval(x, env)
                if not v:
                    return v
            return v
        v = False
        for x in n.values:
            v = _eval(x, env)
            if v:
                return v
        return v
    if isinstance(n, ast.UnaryOp):
        return _UNARY[type(n.op)](_eval(n.operand, env))
    if isinstance(n, ast.BinOp):
        left, right = _eval(n.left, env), _eval(n.right, env)
        if isinstance(left, str) and not isinstance(n.op, ast.Mod):
            raise TypeError("only 'format' % values on strings")
        if isinstance(n.op, (ast.LShift, ast.Pow)) and isinstance(right, int) and right > 4096:
            raise ValueError("shift too large")
        return _BIN[type(n.op)](left, right)
    if isinstance(n, ast.Compare):
        left = _eval(n.left, env)
        for op, c in zip(n.ops, n.comparators):
            right = _eval(c, env)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(n, ast.Tuple):
        return tuple(_eval(e, env) for e in n.elts)
    raise TypeError(type(n).__name__)      # pragma: no cover - _check admitted only the above

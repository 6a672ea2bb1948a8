"""rawfin's rules with one rule changed: RFC 793's RST rule instead of RFC 5961's. An RST anywhere in
the receive window resets the connection (RFC 5961 section 3 asks for exactly rcv_nxt and answers any
other in-window RST with a challenge ACK). Everything else is rawfin/core/rules.py's."""

from rawfin.core.rules import *  # noqa: F401,F403 - every rule as it is
from rawfin.core import rules as _R
from rawfin.core.rules import STOP, Step, move, row


def _rfc793(step: Step) -> Step:
    if step.name != "rst":
        return step
    return Step(name=step.name, rows=tuple(
        row("RST #ok", move("RCV_RST", "rcv RST seq={seq} (in the window, RFC 793)"), STOP)
        if r.when == ("RST", "#ok") else r for r in step.rows))


RECEIVE = {st: tuple(_rfc793(s) for s in program) for st, program in _R.RECEIVE.items()}

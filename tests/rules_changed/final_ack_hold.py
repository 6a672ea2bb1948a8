"""rawfin's rules with one rule changed: the final ACK waits 0.5 s of capture time (not 3 s) for a
retransmitted FIN that would show it lost. Everything else is rawfin/core/rules.py's."""

from rawfin.core.rules import *  # noqa: F401,F403 - every rule as it is

FINAL_ACK_HOLD_NS = 500_000_000

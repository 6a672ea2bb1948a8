"""rawfin's rules with one rule changed: the final ACK waits 0.1 s of capture time (not 3 s) for a
retransmitted FIN that would show it lost (lost-final-ack.pcap's FIN comes again 0.2 s later, after
Linux's RTO). Everything else is rawfin/core/rules.py's."""

from rawfin.core.rules import *  # noqa: F401,F403 - every rule as it is

FINAL_ACK_HOLD_NS = 100_000_000

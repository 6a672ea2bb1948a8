"""rawfin: TCP connection teardown, visible and testable at the level of real packets.

The core (``rawfin.seq``, ``rawfin.segment``, ``rawfin.states``, ``rawfin.endpoint``)
imports nothing heavy; Scapy is loaded only by ``rawfin.codec`` and the drivers.
"""

__version__ = "0.1.0"

from .segment import Flags, Segment  # noqa: E402,F401
from .states import Input, State, TRANSITIONS  # noqa: E402,F401

__all__ = ["Flags", "Input", "Segment", "State", "TRANSITIONS", "__version__"]

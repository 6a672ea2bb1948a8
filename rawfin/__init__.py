"""rawfin: TCP connection teardown, visible and testable at the level of real packets.

The core (``rawfin.core.seq``, ``rawfin.core.segment``, ``rawfin.core.states``, ``rawfin.core.endpoint``)
imports nothing heavy; Scapy is loaded only by ``rawfin.wire.codec`` and the drivers.
"""

__version__ = "0.1.0"

from rawfin.core.segment import Flags, Segment  # noqa: E402,F401
from rawfin.core.states import Input, State, TRANSITIONS  # noqa: E402,F401

__all__ = ["Flags", "Input", "Segment", "State", "TRANSITIONS", "__version__"]

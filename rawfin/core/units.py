"""Time in rawfin is integer nanoseconds everywhere; these are the units it is counted in."""

NS = 1
US = 1_000
MS = 1_000_000
SEC = 1_000_000_000


def us_of(time_ns: int) -> int:
    """Integer nanoseconds rounded to whole microseconds (half a microsecond rounds up): how rawfin's
    records give a time, in Python and in the compiled lane alike."""
    return (time_ns + 500) // 1000


def seconds_of(time_ns: int | None) -> float | None:
    """A time as seconds for a record: its microseconds (:func:`us_of`) / 10**6. The float's repr is
    the exact decimal (1.000001, 0.03) for every time up to 2**62 ns; below 100 µs Python writes it
    with an exponent (5e-05), as the lane does."""
    return None if time_ns is None else us_of(time_ns) / 1_000_000

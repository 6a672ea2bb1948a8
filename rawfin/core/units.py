"""Time in rawfin is integer nanoseconds everywhere; these are the units it is counted in."""

NS = 1
US = 1_000
MS = 1_000_000
SEC = 1_000_000_000

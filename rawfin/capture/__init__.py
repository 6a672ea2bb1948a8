"""Capture analysis: the pipeline from a capture file to records, and its compiled lane."""

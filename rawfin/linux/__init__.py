"""Drivers that talk to the real Linux stack: namespaces, TUN, the tracepoint, live capture,
rawfin as a kernel socket's peer, and replays against the kernel."""

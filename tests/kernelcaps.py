"""What tests against the real kernel need, in one place: namespaces with TUN, tracefs, and a
check that nothing (no namespace, no TUN device) is left behind."""

from __future__ import annotations

import glob
import os

import pytest

from rawfin.linux.kernel import tracefs_missing_reason
from rawfin.linux.netns import missing_reason

NO_NETNS = missing_reason()
NO_TRACE = NO_NETNS or tracefs_missing_reason()
needs_netns = pytest.mark.skipif(NO_NETNS is not None, reason=f"no namespace with TUN: {NO_NETNS}")
needs_trace = pytest.mark.skipif(NO_TRACE is not None, reason=f"kernel truth unavailable: {NO_TRACE}")


def namespaces_held() -> set[str]:
    """The network namespaces this process's threads and file descriptors refer to."""
    out = set()
    for p in glob.glob("/proc/self/task/*/ns/net") + glob.glob("/proc/self/fd/*"):
        try:
            link = os.readlink(p)
        except OSError:
            continue
        if link.startswith("net:["):
            out.add(link)
    return out


@pytest.fixture
def no_leftovers():
    before = namespaces_held()
    yield
    assert namespaces_held() == before, "a network namespace (and its TUN device) was left behind"

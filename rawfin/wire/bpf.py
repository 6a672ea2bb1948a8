"""tcpdump's filter language: expressions compiled to BPF by libpcap, run on captured frames.

``tcp port 53``, ``src host 192.0.2.1``, ``not port 22 and host H``, ``tcp[tcpflags] & tcp-rst != 0``
mean here exactly what they mean to tcpdump, because libpcap compiles them (``pcap_compile``
on a dead handle of the frame's link type) and libpcap's own ``bpf_filter`` runs the program.
libpcap is loaded with ctypes when a filter is first used (Debian: ``libpcap0.8``); without it
:func:`require` raises a :class:`~rawfin.core.errors.UsageError` that says so.

Programs are compiled as tcpdump compiles them for ``tcpdump -r FILE``: on a handle opened on a
capture file of the frame's link type and byte order (an empty one of rawfin's own), which
matters where libpcap's code differs between files and live interfaces (the loopback address
family of DLT_NULL captures made on another OS, another byte order).

A :class:`Filter` holds one program per link type (a pcapng file can mix them), compiled on
first use. ``Filter.match(linktype, data, orig_len)`` is the per-frame test; the compiled lane
calls the same libpcap function through :meth:`Filter.lane_args`, so both paths agree.

This module imports nothing from rawfin but the error type.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import struct
import sys
import tempfile
import threading

from rawfin.core.errors import UsageError

#: what to install when libpcap is missing
INSTALL_HINT = "install libpcap (Debian/Ubuntu: apt-get install libpcap0.8; Fedora: dnf install libpcap)"

#: snaplen of the handle: the accept value of the programs (any non-zero return accepts)
_SNAPLEN = 262144


class _BpfInsn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn))]


class _Lib:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        lib.pcap_open_offline.restype = ctypes.c_void_p
        lib.pcap_open_offline.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram), ctypes.c_char_p, ctypes.c_int,
                                     ctypes.c_uint32]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_close.restype = None
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        lib.pcap_freecode.restype = None
        lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
        lib.bpf_filter.restype = ctypes.c_uint
        lib.bpf_filter.argtypes = [ctypes.POINTER(_BpfInsn), ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint]
        self.bpf_filter = lib.bpf_filter
        #: the address of libpcap's bpf_filter, for the compiled lane
        self.bpf_filter_addr = ctypes.cast(lib.bpf_filter, ctypes.c_void_p).value
        self.lock = threading.Lock()     # pcap_compile is not thread-safe in old libpcaps


@functools.lru_cache(maxsize=1)
def _load() -> _Lib | None:
    for name in (ctypes.util.find_library("pcap"), "libpcap.so.1", "libpcap.so.0.8", "libpcap.so"):
        if not name:
            continue
        try:
            return _Lib(ctypes.CDLL(name))
        except (OSError, AttributeError):
            continue
    return None


def available() -> bool:
    """True when libpcap can be loaded (filters can be compiled)."""
    return _load() is not None


def require(option: str = "--filter") -> _Lib:
    lib = _load()
    if lib is None:
        raise UsageError(f"{option} takes tcpdump's filter language, which needs libpcap, and libpcap is not "
                         f"installed: {INSTALL_HINT}")
    return lib


def compile_insns(expr: str, linktype: int, big_endian: bool = sys.byteorder == "big") -> bytes:
    """The program for ``expr`` on frames of ``linktype`` (a capture file's LINKTYPE_ value) from a
    file written in that byte order, as kernel-format instructions (``struct sock_filter``, 8 bytes
    each: what ``SO_ATTACH_FILTER`` takes).

    Raises UsageError naming libpcap's complaint when the expression does not compile."""
    lib = require()
    prog = _BpfProgram()
    header = struct.pack((">" if big_endian else "<") + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, _SNAPLEN, linktype)
    with lib.lock, tempfile.NamedTemporaryFile(prefix="rawfin-bpf-", suffix=".pcap") as f:
        f.write(header)
        f.flush()
        err = ctypes.create_string_buffer(512)
        handle = lib.lib.pcap_open_offline(f.name.encode(), err)
        if not handle:
            why = err.value.decode("utf-8", "replace")
            raise UsageError(f"--filter: libpcap cannot filter frames of link type {linktype}: {why}")
        try:
            if lib.lib.pcap_compile(handle, ctypes.byref(prog), expr.encode("utf-8"), 1, 0xFFFFFFFF) != 0:
                why = (lib.lib.pcap_geterr(handle) or b"").decode("utf-8", "replace")
                raise UsageError(f"bad filter {expr!r}: {why}" + (f" (link type {linktype})" if "link" in why else ""))
            try:
                return ctypes.string_at(prog.bf_insns, prog.bf_len * 8)
            finally:
                lib.lib.pcap_freecode(ctypes.byref(prog))
        finally:
            lib.lib.pcap_close(handle)


class Filter:
    """One tcpdump filter expression, compiled for each link type it meets.

    ``Filter("tcp port 80").match(linktype, data, orig_len)`` is libpcap's verdict on one frame.
    Construction checks the expression once (on Ethernet), so a typo is a usage error at once.
    """

    def __init__(self, expr: str, big_endian: bool = sys.byteorder == "big") -> None:
        self.expr = expr
        self.big_endian = big_endian
        self._lib = require()
        self._progs: dict[int, ctypes.Array] = {}
        self.program(1)

    def for_byte_order(self, big_endian: bool) -> "Filter":
        """The same expression for a capture file written in this byte order."""
        return self if big_endian == self.big_endian else Filter(self.expr, big_endian)

    def __repr__(self) -> str:
        return f"Filter({self.expr!r})"

    def program(self, linktype: int) -> ctypes.Array:
        prog = self._progs.get(linktype)
        if prog is None:
            raw = compile_insns(self.expr, linktype, self.big_endian)
            prog = (_BpfInsn * (len(raw) // 8)).from_buffer_copy(raw)
            self._progs[linktype] = prog
        return prog

    def insns(self, linktype: int) -> bytes:
        """The program for ``linktype`` as bytes (kernel format)."""
        return bytes(self.program(linktype))

    def match(self, linktype: int, data: bytes, orig_len: int) -> bool:
        prog = self._progs.get(linktype) or self.program(linktype)
        return self._lib.bpf_filter(prog, data, max(orig_len, len(data)), len(data)) != 0

    def lane_args(self) -> tuple[int, object]:
        """(address of libpcap's bpf_filter, a function linktype -> program bytes) for the lane."""
        return self._lib.bpf_filter_addr, self.insns


def parse(expr: str | None) -> Filter | None:
    """``--filter``'s value: None or blank for no filter."""
    if expr is None or not expr.strip():
        return None
    return Filter(expr)

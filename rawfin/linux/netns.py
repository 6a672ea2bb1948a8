"""A network namespace of rawfin's own, and a TUN device inside it.

The namespace is made with ``unshare(CLONE_NEWNET)`` in the calling thread,
which then returns home at once; rawfin keeps it alive only through file
descriptors (the namespace's, the TUN device's, the sockets opened in it).
Closing them removes the namespace and the device with it, so nothing is
left behind even when rawfin is killed; :class:`NetNamespace` and
:class:`Tun` close them on exit, error and Ctrl-C alike.

Work inside the namespace happens in ``with ns.inside():`` — the calling
thread enters with ``setns`` and goes back home afterwards; sockets and TUN
devices created there belong to the namespace for good. Addresses are set with
ioctls (no ``ip`` needed). Only documentation addresses (192.0.2.0/24) are
meant to be used, and only inside the namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import ipaddress
import os
import socket
import struct

from rawfin.core.errors import PrivilegeError, RawfinError

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_UP = 0x1
IFF_RUNNING = 0x40
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCSIFMTU = 0x8922

_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        if e in (errno.EPERM, errno.EACCES):
            raise PrivilegeError(f"{what}: needs root or CAP_NET_ADMIN ({os.strerror(e)})")
        raise OSError(e, f"{what}: {os.strerror(e)}")


def missing_reason() -> str | None:
    """Why rawfin cannot make a namespace with a TUN device here, or None."""
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun (TUN driver missing)"
    if not os.path.exists("/proc/thread-self/ns/net"):
        return "no network namespaces (/proc/thread-self/ns/net missing)"
    try:
        with NetNamespace() as ns, ns.inside():
            fd = os.open("/dev/net/tun", os.O_RDWR)
            os.close(fd)
    except PrivilegeError as e:
        return str(e)
    except OSError as e:
        return f"cannot use a network namespace with TUN: {e}"
    return None


class NetNamespace:
    """A fresh network namespace, held by a file descriptor. Use as a context manager."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self._home: int | None = None

    def __enter__(self) -> "NetNamespace":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_c().unshare(CLONE_NEWNET), "creating a network namespace (unshare CLONE_NEWNET)")
            try:
                self.fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                with contextlib.suppress(OSError):
                    self._set_up("lo")
            finally:
                _check(_c().setns(home, CLONE_NEWNET), "returning to the original network namespace")
        except BaseException:
            os.close(home)
            self.close()
            raise
        self._home = home

    def close(self) -> None:
        for name in ("fd", "_home"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)

    @contextlib.contextmanager
    def inside(self):
        """Run the block with the calling thread inside the namespace."""
        if self.fd is None:
            raise RawfinError("the namespace is closed")
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_c().setns(self.fd, CLONE_NEWNET), "entering rawfin's network namespace")
            try:
                yield self
            finally:
                _check(_c().setns(home, CLONE_NEWNET), "returning to the original network namespace")
        finally:
            os.close(home)

    # -- configuration (call inside) --------------------------------------------------
    @staticmethod
    def _ifreq(name: str, payload: bytes = b"") -> bytes:
        return struct.pack("16s", name.encode()) + payload.ljust(24, b"\0")

    def _set_up(self, name: str) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            r = fcntl.ioctl(s, SIOCGIFFLAGS, self._ifreq(name))
            flags = struct.unpack("16sH", r[:18])[1]
            fcntl.ioctl(s, SIOCSIFFLAGS, self._ifreq(name, struct.pack("H", flags | IFF_UP | IFF_RUNNING)))

    def configure(self, name: str, address: str, prefix: int = 24, mtu: int = 1500) -> None:
        """Give ``name`` an IPv4 address and bring it up (call inside the namespace)."""
        ip = ipaddress.IPv4Interface(f"{address}/{prefix}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            sin = struct.pack("HH4s", socket.AF_INET, 0, ip.ip.packed)
            fcntl.ioctl(s, SIOCSIFADDR, self._ifreq(name, sin))
            mask = struct.pack("HH4s", socket.AF_INET, 0, ip.network.netmask.packed)
            fcntl.ioctl(s, SIOCSIFNETMASK, self._ifreq(name, mask))
            fcntl.ioctl(s, SIOCSIFMTU, self._ifreq(name, struct.pack("i", mtu)))
        self._set_up(name)
        with contextlib.suppress(OSError):   # no IPv6 chatter (router solicitations) on the device
            with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as fh:
                fh.write("1")

    def proc_net(self, name: str) -> str:
        """The text of /proc/net/NAME as this namespace sees it."""
        with self.inside():
            with open(f"/proc/thread-self/net/{name}") as fh:
                return fh.read()


class Tun:
    """A TUN device (raw IP packets, no packet-info header), created in the current namespace."""

    def __init__(self, name: str = "rftun0") -> None:
        self.name = name
        self.fd: int | None = None

    def open(self) -> "Tun":
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except PermissionError:
            raise PrivilegeError("opening /dev/net/tun needs root or CAP_NET_ADMIN") from None
        except FileNotFoundError:
            raise RawfinError("no /dev/net/tun: the TUN driver is missing") from None
        try:
            ifr = struct.pack("16sH", self.name.encode(), IFF_TUN | IFF_NO_PI).ljust(40, b"\0")
            try:
                r = fcntl.ioctl(fd, TUNSETIFF, ifr)
            except PermissionError:
                raise PrivilegeError("creating a TUN device needs root or CAP_NET_ADMIN") from None
            self.name = r[:16].rstrip(b"\0").decode()
            os.set_blocking(fd, False)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def __enter__(self) -> "Tun":
        return self.open() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    def fileno(self) -> int:
        if self.fd is None:
            raise RawfinError("the TUN device is closed")
        return self.fd

    def read(self) -> bytes | None:
        """One packet from the kernel, or None when there is none waiting."""
        try:
            return os.read(self.fileno(), 65536)
        except BlockingIOError:
            return None

    def write(self, packet: bytes) -> None:
        """Hand one raw IP packet to the kernel, as if it had arrived on the device."""
        os.write(self.fileno(), packet)

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

"""The symbols packetdrill scripts use (``SOL_SOCKET``, ``O_NONBLOCK``, ``EPIPE``...), with Linux's values.

packetdrill resolves them with the C headers of the machine it runs on; rawfin
uses Linux's numbers (which are also what Python's ``socket``/``errno``/``os``
modules give on Linux), written out so the rawfin target means the same thing
on any machine.
"""

from __future__ import annotations

import errno as _errno

SYMBOLS: dict[str, int] = {
    # socket(2)
    "AF_INET": 2, "AF_INET6": 10, "AF_UNSPEC": 0, "PF_INET": 2, "PF_INET6": 10,
    "SOCK_STREAM": 1, "SOCK_DGRAM": 2, "SOCK_RAW": 3, "SOCK_NONBLOCK": 0o4000, "SOCK_CLOEXEC": 0o2000000,
    "IPPROTO_IP": 0, "IPPROTO_TCP": 6, "IPPROTO_UDP": 17, "IPPROTO_IPV6": 41, "SOL_IP": 0, "SOL_IPV6": 41,
    "SOL_SOCKET": 1, "SOL_TCP": 6,
    # SOL_SOCKET options
    "SO_DEBUG": 1, "SO_REUSEADDR": 2, "SO_TYPE": 3, "SO_ERROR": 4, "SO_DONTROUTE": 5, "SO_BROADCAST": 6,
    "SO_SNDBUF": 7, "SO_RCVBUF": 8, "SO_KEEPALIVE": 9, "SO_OOBINLINE": 10, "SO_LINGER": 13,
    "SO_REUSEPORT": 15, "SO_RCVLOWAT": 18, "SO_SNDLOWAT": 19, "SO_RCVTIMEO": 20, "SO_SNDTIMEO": 21,
    "SO_SNDBUFFORCE": 32, "SO_RCVBUFFORCE": 33, "SO_MARK": 36, "SO_MAX_PACING_RATE": 47,
    "SO_ZEROCOPY": 60,
    # SOL_TCP options
    "TCP_NODELAY": 1, "TCP_MAXSEG": 2, "TCP_CORK": 3, "TCP_KEEPIDLE": 4, "TCP_KEEPINTVL": 5,
    "TCP_KEEPCNT": 6, "TCP_SYNCNT": 7, "TCP_LINGER2": 8, "TCP_DEFER_ACCEPT": 9, "TCP_WINDOW_CLAMP": 10,
    "TCP_INFO": 11, "TCP_QUICKACK": 12, "TCP_CONGESTION": 13, "TCP_USER_TIMEOUT": 18,
    "TCP_NOTSENT_LOWAT": 25, "TCP_INQ": 36,
    # fcntl(2)
    "F_GETFD": 1, "F_SETFD": 2, "F_GETFL": 3, "F_SETFL": 4, "FD_CLOEXEC": 1,
    "O_RDONLY": 0, "O_WRONLY": 1, "O_RDWR": 2, "O_NONBLOCK": 0o4000, "O_NDELAY": 0o4000,
    # shutdown(2)
    "SHUT_RD": 0, "SHUT_WR": 1, "SHUT_RDWR": 2,
    # send/recv flags
    "MSG_OOB": 1, "MSG_PEEK": 2, "MSG_DONTROUTE": 4, "MSG_TRUNC": 0x20, "MSG_DONTWAIT": 0x40,
    "MSG_EOR": 0x80, "MSG_WAITALL": 0x100, "MSG_NOSIGNAL": 0x4000, "MSG_MORE": 0x8000,
    # poll(2)
    "POLLIN": 0x1, "POLLPRI": 0x2, "POLLOUT": 0x4, "POLLERR": 0x8, "POLLHUP": 0x10, "POLLNVAL": 0x20,
    "POLLRDNORM": 0x40, "POLLRDBAND": 0x80, "POLLWRNORM": 0x100, "POLLWRBAND": 0x200, "POLLRDHUP": 0x2000,
    # ioctl(2)
    "SIOCINQ": 0x541B, "FIONREAD": 0x541B, "SIOCOUTQ": 0x5411, "TIOCOUTQ": 0x5411, "SIOCOUTQNSD": 0x894B,
    "NULL": 0,
}

#: errno macros (the script's ``-1 EPIPE (Broken pipe)``) from Python's table of Linux's
ERRNO: dict[str, int] = {name: code for code, name in _errno.errorcode.items()}
ERRNO.update({"EWOULDBLOCK": _errno.EAGAIN, "EDEADLOCK": _errno.EDEADLK})

#: the socket options rawfin understands, (level, name) -> option name
SOCKOPTS = {(1, 2): "SO_REUSEADDR", (1, 15): "SO_REUSEPORT", (1, 13): "SO_LINGER", (1, 4): "SO_ERROR",
            (1, 7): "SO_SNDBUF", (1, 8): "SO_RCVBUF", (1, 9): "SO_KEEPALIVE", (1, 3): "SO_TYPE",
            (1, 32): "SO_SNDBUFFORCE", (1, 33): "SO_RCVBUFFORCE", (1, 18): "SO_RCVLOWAT",
            (6, 1): "TCP_NODELAY", (6, 2): "TCP_MAXSEG", (6, 3): "TCP_CORK", (6, 4): "TCP_KEEPIDLE",
            (6, 5): "TCP_KEEPINTVL", (6, 6): "TCP_KEEPCNT", (6, 7): "TCP_SYNCNT", (6, 8): "TCP_LINGER2",
            (6, 9): "TCP_DEFER_ACCEPT", (6, 12): "TCP_QUICKACK", (6, 18): "TCP_USER_TIMEOUT",
            (6, 10): "TCP_WINDOW_CLAMP", (6, 25): "TCP_NOTSENT_LOWAT"}


def symbol(name: str) -> int | None:
    """The value of a symbol, or None when rawfin does not know it."""
    v = SYMBOLS.get(name)
    if v is None:
        v = ERRNO.get(name)
    return v

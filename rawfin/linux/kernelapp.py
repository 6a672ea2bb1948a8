"""The kernel side's application: real Linux sockets in rawfin's network namespace.

:class:`KernelApp` has the methods :func:`rawfin.sim.host.perform` calls (``listen``,
``connect``, ``send``, ``close``, ``shutdown``, ``abort``, ``close_listener``), so a
scenario's or a replay's call names reach a real socket the way they reach rawfin's own
:class:`~rawfin.sim.host.Host`. The sockets are non-blocking: :meth:`KernelApp.accept` and
:meth:`KernelApp.read` are polled by the driver's loop (:mod:`rawfin.linux.peerfile`,
:mod:`rawfin.linux.replayrun`). Each call raises ``OSError`` as the socket call does.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Callable


def end_kernel_socket(s: socket.socket, call: str, data: bytes = b"") -> bool:
    """The kernel application's close(), shutdown(SHUT_WR) or abort() (SO_LINGER 0) on ``s``.

    ``data`` rides on the FIN (corked, so the FIN joins the queued bytes). True when ``s``
    is closed, so the caller forgets it.
    """
    if call == "abort":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        return True
    if data:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        s.send(data)
    if call == "shutdown":
        s.shutdown(socket.SHUT_WR)
        return False
    s.close()
    return True


class KernelApp:
    """The application on the kernel's side: its listener and its current connection.

    ``ns`` is the network namespace the sockets are made in (a
    :class:`~rawfin.linux.netns.NetNamespace`), ``addr`` the address they bind.
    ``connect_reuse_addr`` sets SO_REUSEADDR before a connect()'s bind (a replay binds the
    same port again and again). ``on_connection(sock)`` is called when a connection becomes
    the current one (connected or accepted). ``data`` is what the application read on the
    current connection, ``eof`` whether it read end-of-file (or an error, ``error``);
    ``received`` counts the bytes read over every connection.
    """

    def __init__(self, ns, addr: tuple[str, int], *, connect_reuse_addr: bool = False,
                 on_connection: Callable[[socket.socket], None] | None = None) -> None:
        self.ns = ns
        self.addr = addr
        self.connect_reuse_addr = connect_reuse_addr
        self.on_connection = on_connection
        self.listener: socket.socket | None = None
        self.sock: socket.socket | None = None
        self.socks: list[socket.socket] = []        # every socket made, closed by close_all()
        self.connecting = False
        self.had_connection = False
        self.data = b""
        self.eof = False
        self.error: str | None = None
        self.received = 0           # bytes read, over every connection

    # -- the calls (perform's names) ---------------------------------------------------------
    def listen(self, now: int, *, port: int | None = None, iss: int | None = None, reuse_addr: bool = False) -> None:
        """bind() + listen() on the app's address (the kernel picks its own ISN: ``iss`` is not for it)."""
        ls = self._socket()
        if reuse_addr:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(self.addr)
        ls.listen(4)
        ls.setblocking(False)
        self.listener = ls

    def close_listener(self, now: int, *, port: int | None = None) -> None:
        if self.listener is None:
            raise OSError(errno.EBADF, "no listening socket")
        self.listener.close()
        self.listener = None

    def connect(self, now: int, remote: tuple[str, int], *, port: int | None = None, iss: int | None = None) -> None:
        s = self._socket()
        if self.connect_reuse_addr:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(self.addr)
        s.setblocking(False)
        rc = s.connect_ex(remote)
        if rc not in (0, errno.EINPROGRESS):
            raise OSError(rc, "connect")
        self._current(s)
        self.connecting = True

    def send(self, now: int, data: bytes) -> None:
        n = self._conn().send(data)
        if n != len(data):
            raise OSError(errno.EAGAIN, f"sent {n} of {len(data)} bytes")

    def close(self, now: int, data: bytes = b"") -> None:
        s = self._conn()
        self.drain()        # close() with unread data would send a RST instead of a FIN
        self._end(s, "close", data)

    def shutdown(self, now: int, data: bytes = b"") -> None:
        self._end(self._conn(), "shutdown", data)

    def abort(self, now: int) -> None:
        self._end(self._conn(), "abort")

    # -- polled by the driver ------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """The current connection is established (a connect() in progress has finished)."""
        if self.sock is None:
            return False
        if self.connecting:
            try:
                self.sock.getpeername()
            except OSError:
                return False
            self.connecting = False
        return True

    def accept(self) -> bool:
        """Take a connection waiting on the listener (it becomes the current one); True if there was one."""
        if self.listener is None:
            return False
        try:
            s, _ = self.listener.accept()
        except OSError:         # BlockingIOError: nobody waiting
            return False
        s.setblocking(False)
        self.socks.append(s)
        self._current(s)
        return True

    def read(self) -> str | None:
        """Read what the current connection has: ``"eof"`` or ``"error"`` the moment the application
        meets end-of-file or an error (``error`` names it), else None."""
        s = self.sock
        if s is None or self.eof or self.connecting and not self.ready:
            return None
        while True:
            try:
                b = s.recv(65536)
            except BlockingIOError:
                return None
            except OSError as e:
                self.error = errno.errorcode.get(e.errno, str(e.errno))
                self.eof = True
                return "error"
            if not b:
                self.eof = True
                return "eof"
            self.data += b
            self.received += len(b)

    def drain(self) -> None:
        """Read what is queued on the current connection (end-of-file is left for :meth:`read`)."""
        while self.sock is not None:
            try:
                b = self.sock.recv(65536)
            except OSError:
                return
            if not b:
                return
            self.data += b
            self.received += len(b)

    def fds(self) -> list[int]:
        return [s.fileno() for s in (self.sock, self.listener) if s is not None]

    def close_all(self) -> None:
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.socks = []
        self.sock = self.listener = None

    # -- internals ------------------------------------------------------------------------------
    def _socket(self) -> socket.socket:
        with self.ns.inside():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socks.append(s)
        return s

    def _conn(self) -> socket.socket:
        if self.sock is None:
            raise OSError(errno.ENOTCONN, "no connection")
        return self.sock

    def _current(self, s: socket.socket) -> None:
        self.sock = s
        self.eof = False
        self.data = b""
        self.error = None
        self.had_connection = True
        if self.on_connection is not None:
            self.on_connection(s)

    def _end(self, s: socket.socket, call: str, data: bytes = b"") -> None:
        if end_kernel_socket(s, call, data):
            self.sock = None


__all__ = ["KernelApp", "end_kernel_socket"]

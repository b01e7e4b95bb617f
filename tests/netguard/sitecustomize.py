"""Loaded by a test subprocess (PYTHONPATH): refuse and record every outbound network attempt.

Connections to loopback stay allowed (the app serves on it and the test client talks to it); any
other connect, and any DNS lookup of a non-local name, raises ``OSError`` and is appended to the file
named by ``ATTNVIZ_NETLOG``.
"""
import os
import socket

_LOG = os.environ.get("ATTNVIZ_NETLOG", "")
_LOCAL = {"127.0.0.1", "::1", "localhost", "0.0.0.0", ""}


def _record(what: str) -> None:
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(what + "\n")


def _is_local(host) -> bool:
    return str(host) in _LOCAL or str(host).startswith("127.")


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
        _record(f"connect {address}")
        raise OSError(101, "network is unreachable (blocked by the test)")
    return _connect(self, address)


def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
        _record(f"connect_ex {address}")
        return 101
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if not _is_local(host if not isinstance(host, bytes) else host.decode()):
        _record(f"getaddrinfo {host}")
        raise socket.gaierror(socket.EAI_NONAME, "name resolution blocked by the test")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.getaddrinfo = getaddrinfo

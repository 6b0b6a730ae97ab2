"""Test-only network guard, loaded into every Python process the end-to-end tests
start (it rides on PYTHONPATH). Any connection or name lookup that is not for
this machine is refused and written to $APPLIANCE_NETGUARD_LOG."""

import errno
import ipaddress
import json
import os
import socket
import traceback

_LOG = os.environ.get("APPLIANCE_NETGUARD_LOG")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo


def _is_local(host) -> bool:
    if host is None:
        return True
    host = str(host).strip("[]")
    if host in _LOCAL_NAMES or host == "":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse(kind: str, target) -> None:
    if _LOG:
        with open(_LOG, "a") as handle:
            handle.write(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "kind": kind,
                        "target": repr(target),
                        "stack": traceback.format_stack(limit=8),
                    }
                )
                + "\n"
            )
    raise OSError(errno.ENETUNREACH, f"network guard: {kind} to {target!r} refused")


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
        _refuse("connect", address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
        _refuse("connect", address)
    return _connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _is_local(host if not isinstance(host, bytes) else host.decode()):
        _refuse("getaddrinfo", host)
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo

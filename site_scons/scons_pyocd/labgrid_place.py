"""``labgrid:PLACE``: a labgrid place as the way to a remote probe, and the lock across hosts.

labgrid (an optional extra: ``pip install 'scons-pyocd[labgrid]'``) has no pyOCD
driver, but an exporter can export a ``NetworkService`` resource pointing at a
``pyocd server``. A place matching it is acquired by one user on one host at a time
(``labgrid-client -p PLACE acquire``); that acquisition is the exclusion across
hosts and users. :func:`resolve` asks the coordinator (``LG_COORDINATOR``, default
``127.0.0.1:20408``, as ``labgrid-client`` does) through labgrid's client API:

- the place must exist and be acquired by this user on this host (or allowed to
  it): otherwise the error is labgrid's own reason (``place P is not acquired``,
  ``... acquired by bob ...``);
- its ``NetworkService`` named ``pyocd`` (or its only ``NetworkService``) gives the
  server's address and port;
- the acquisition (who, and when the place last changed) is returned so that board
  records trust a no-op only within the acquisition that flashed.

Every wait on the coordinator is bounded (``SCONS_PYOCD_REMOTE_TIMEOUT``). labgrid is
imported only here, only for a ``labgrid:`` probe.
"""

import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from datetime import datetime

from .errors import FlashError
from .remote import Address, answer_timeout, normalise_host

DEFAULT_COORDINATOR = "127.0.0.1:20408"
#: The name of the NetworkService that is the pyOCD server, when a place has several.
SERVICE_NAME = "pyocd"


@dataclass
class Place:
    """A place acquired by this user: its name, the pyOCD server it exports, and its
    acquisition ('acquired by HOST/USER at TIME', TIME the place's last change)."""
    name: str
    address: Address
    acquisition: str


def _labgrid():
    try:
        from labgrid.remote import client
        from labgrid.util.proxy import proxymanager
    except ImportError as exc:
        raise FlashError(f"PYOCD_PROBE='labgrid:...' needs labgrid, which the Python running SCons "
                         f"({sys.executable}) cannot import ({exc}). Install it: pip install "
                         "'scons-pyocd[labgrid]' (or pip install 'labgrid>=26,<27').") from None
    return client, proxymanager


def coordinator() -> str:
    return os.environ.get("LG_COORDINATOR", "").strip() or DEFAULT_COORDINATOR


def resolve(pattern: str, probe: str) -> Place:
    """The place ``pattern`` names (labgrid's matching: a name, a unique part of one, an
    alias), checked acquired by this user; raises FlashError with labgrid's reason."""
    client, proxymanager = _labgrid()
    if not pattern:
        raise FlashError(f"PYOCD_PROBE={probe!r} names no place: give labgrid:PLACE (a place of "
                         "'labgrid-client places').")
    where = coordinator()
    timeout = answer_timeout()
    with _quiet_loop() as loop:
        return _resolve(client, proxymanager, loop, pattern, where, timeout)


@contextlib.contextmanager
def _quiet_loop():
    """A fresh event loop, current while labgrid runs (its gRPC channel binds to the current
    loop), with labgrid's log (the root logger's) silenced: its errors become our message."""
    root = logging.getLogger()
    saved_level = root.level
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    root.setLevel(logging.CRITICAL + 1)
    try:
        yield loop
    finally:
        root.setLevel(saved_level)
        loop.close()
        asyncio.set_event_loop(None)


def _resolve(client, proxymanager, loop, pattern: str, where: str, timeout: float) -> Place:
    session = None
    try:
        try:
            address = proxymanager.get_grpc_address(where, default_port=20408)
            session = client.ClientSession(address, loop)
            loop.run_until_complete(asyncio.wait_for(session.start(), timeout))
        except (asyncio.TimeoutError, client.Error, OSError) as exc:
            why = f"no answer within {timeout:g} s" if isinstance(exc, asyncio.TimeoutError) else str(exc)
            session = None
            raise FlashError(f"cannot reach labgrid's coordinator at {where} ({why}) to find place "
                             f"{pattern!r}. Start labgrid-coordinator, or set LG_COORDINATOR to its "
                             "HOST:PORT (as for labgrid-client). Nothing was written.") from None
        try:
            place = session.get_place(pattern)
        except client.Error as exc:
            raise FlashError(f"labgrid has no place {pattern!r}: {_reason(exc)}. 'labgrid-client places' "
                             "lists the places; nothing was written.") from None
        try:
            place = session.get_acquired_place(place.name)
            resources = session.get_target_resources(place)
        except client.Error as exc:
            raise FlashError(f"labgrid place {place.name} is not yours to use now: {_reason(exc)}. Acquire "
                             f"it first ('labgrid-client -p {place.name} acquire'), or use a place you "
                             "acquired; nothing was written.") from None
        return Place(place.name, _service(place.name, resources),
                     f"acquired by {place.acquired} at "
                     f"{datetime.fromtimestamp(place.changed).isoformat(sep=' ', timespec='microseconds')}")
    finally:
        if session is not None:
            try:
                loop.run_until_complete(asyncio.wait_for(session.stop(), timeout))
                loop.run_until_complete(asyncio.wait_for(session.close(), timeout))
            except Exception:   # closing only: the answer is already in hand
                pass


def _reason(exc: Exception) -> str:
    """labgrid's own sentence, without its 'Error: ' prefix."""
    return " ".join(str(arg) for arg in exc.args).rstrip(". ") or type(exc).__name__


def _service(place: str, resources: dict) -> Address:
    """The address of the place's pyOCD server: its NetworkService named ``pyocd``, or its
    only NetworkService."""
    services = {name: entry for (name, cls), entry in resources.items() if cls == "NetworkService"}
    entry = services.get(SERVICE_NAME)
    if entry is None and len(services) == 1:
        entry = next(iter(services.values()))
    if entry is None:
        found = ", ".join(sorted(services)) or "none"
        raise FlashError(f"labgrid place {place} exports no pyOCD server: it needs a NetworkService "
                         f"resource named '{SERVICE_NAME}' (or exactly one NetworkService) with the "
                         f"address and port of a `pyocd server`; its NetworkServices: {found}. See "
                         "docs/farm.md for the exporter's configuration.")
    params = entry.args
    extra = getattr(entry, "extra", {}) or {}
    if extra.get("proxy_required") or os.environ.get("LG_PROXY"):
        raise FlashError(f"labgrid place {place}: its pyOCD server is reachable only through labgrid's "
                         "SSH proxy (LG_PROXY, or an address with an interface suffix), which scons-pyocd "
                         "does not use. Export an address this host reaches directly, or open a tunnel "
                         "yourself and use PYOCD_PROBE='remote:HOST:PORT'.")
    if not getattr(entry, "avail", True):
        raise FlashError(f"labgrid place {place}: its exporter reports the pyOCD server's NetworkService "
                         "unavailable. Check the exporter (and that its `pyocd server` runs).")
    host, port = params.get("address"), params.get("port")
    if not isinstance(host, str) or not host or not isinstance(port, int) or not 0 < port < 65536:
        raise FlashError(f"labgrid place {place}: the NetworkService of its pyOCD server has no usable "
                         f"address and port (address={host!r}, port={port!r}). Set both in the "
                         "exporter's configuration.")
    return Address(normalise_host(host), port)

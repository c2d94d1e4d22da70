"""The embedded default's broker: kombu's filesystem transport, woken the moment it has work.

kombu's filesystem transport keeps each message as a file in a folder and its consumer looks
at the folder once per ``polling_interval`` (1 s). On one machine every event and every hop
from stage to stage then waits for the next look: a 10-minute session of 61 segments spent
about a minute waiting on itself. This transport keeps the folder format and changes three
things:

- **Wake at once.** A consumer that finds nothing waits on a doorbell instead of sleeping.
  The doorbell rings when this process writes a message, and when a message is
  acknowledged or rejected here (prefetch then has room for the next). Messages written by
  another process (a separate ``capture-agent`` on the same home) are found by the
  fallback poll, ``FALLBACK_POLL_S``.
- **Atomic writes.** A message is written under a hidden temporary name and renamed into the
  queue folder, so a consumer never reads a half-written file.
- **Claim by rename in place.** A consumer claims a message by renaming it into the
  ``processed`` folder beside the queue (same file system, so the rename is atomic),
  instead of moving it to the system temporary folder, which may be another file system.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

TRANSPORT = "shared.embedded_broker:Transport"  # for Celery's ``broker_transport`` setting
FALLBACK_POLL_S = 0.25  # how soon a message from another process is seen, at the latest
_MESSAGE_SUFFIX = ".msg"


class _Doorbell:
    """Counts rings; a waiter sleeps until the count moves past what it saw, or a timeout.

    ``calls`` counts the rings of :func:`call_consumer`: work queued for the consumer's own
    loop, which the loop runs only once ``drain_events`` returns.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._rings = 0
        self.calls = 0

    @property
    def rings(self) -> int:
        return self._rings

    def ring(self, *, call: bool = False) -> None:
        with self._cond:
            self._rings += 1
            if call:
                self.calls += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._rings != seen, timeout)


_DOORBELL = _Doorbell()  # one per process: rings are cheap, spurious wake-ups harmless


def call_consumer() -> None:
    """Work was queued for the consumer's loop (Celery's ``call_soon``: the acknowledgement of
    a task a pool thread finished): make a waiting ``drain_events`` return, so the loop runs it
    now, not at its 2-second timeout (until then prefetch stays full and nothing is taken)."""
    _DOORBELL.ring(call=True)


class Channel(filesystem.Channel):
    def _put(self, queue: Any, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}{_MESSAGE_SUFFIX}"
        final = os.path.join(self.data_folder_out, name)
        tmp = os.path.join(self.data_folder_out, f".{name}.tmp")  # not a message: starts with .
        try:
            with open(tmp, "wb") as f:
                f.write(str_to_bytes(dumps(message)))
            os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc
        _DOORBELL.ring()

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        wanted = f"{queue}{_MESSAGE_SUFFIX}"
        processed = str(self.processed_folder)
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.startswith(".") or name.partition(".")[2] != wanted:
                continue
            claimed = os.path.join(processed, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except OSError:  # another consumer took it
                continue
            try:
                with open(claimed, "rb") as f:
                    payload = f.read()
                if not self.store_processed:
                    os.remove(claimed)
            except OSError as exc:
                raise ChannelError(f"Cannot read file {claimed!r} from queue.") from exc
            return loads(bytes_to_str(payload))
        raise virtual.Empty()

    def basic_ack(self, *args: Any, **kwargs: Any) -> None:
        super().basic_ack(*args, **kwargs)
        _DOORBELL.ring()

    def basic_reject(self, *args: Any, **kwargs: Any) -> None:
        super().basic_reject(*args, **kwargs)
        _DOORBELL.ring()


class Transport(filesystem.Transport):
    Channel = Channel
    polling_interval = FALLBACK_POLL_S

    def drain_events(self, connection: Any, timeout: Any = None, **kwargs: Any) -> None:
        """kombu's loop, with the doorbell in place of ``sleep(polling_interval)``."""
        started = monotonic()
        calls = _DOORBELL.calls
        while True:
            if _DOORBELL.calls != calls:
                raise TimeoutError()  # back to the consumer's loop: it has work queued
            seen = _DOORBELL.rings
            try:
                self.cycle.get(self._deliver, timeout=timeout)  # type: ignore[attr-defined]
                return
            except virtual.Empty:
                wait = self.polling_interval
                if timeout is not None:
                    left = timeout - (monotonic() - started)
                    if left <= 0:
                        raise TimeoutError() from None  # socket.timeout: what kombu expects
                    wait = min(wait, left)
                _DOORBELL.wait(seen, wait)

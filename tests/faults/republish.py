"""``python -m tests.faults.republish FOLDER``: publish a session folder's events (and copy
its segments) again, as a third party would, with the raw test shipper.

A process of its own, so two of them race each other and the agents for real.
"""

from __future__ import annotations

import sys
from pathlib import Path

from capture_agent.emit import EventEmitter
from shared.settings import get_settings
from shared.storage import Storage
from tests.support.shipping import ship_session_dir


def main(folder: str) -> None:
    settings = get_settings()
    emitter = EventEmitter(settings)
    try:
        ship_session_dir(Path(folder), Storage(settings.storage), emitter)
    finally:
        emitter.close()


if __name__ == "__main__":
    main(sys.argv[1])

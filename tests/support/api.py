"""``sessionpipe api`` as a real uvicorn subprocess on 127.0.0.1, for the tests that talk
to it over HTTP (the API's own, the web page's in a browser)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import ROOT
from tests.support.servers import free_port
from tests.support.waiting import wait_for

START_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


@dataclass
class ApiServer:
    base: str  # http://127.0.0.1:PORT
    token: str | None  # sent as the bearer token unless a request says otherwise
    log: Path

    def request(
        self, path: str, *, method: str = "GET", token: str | None = "", **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body; ``token=""`` sends the server's token, None none."""
        token = self.token if token == "" else token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.base + path, method=method, headers=headers)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=REQUEST_TIMEOUT_S) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, path: str, **kwargs: Any) -> Any:
        status, _, body = self.request(path, **kwargs)
        assert status == 200, (path, status, body)
        return json.loads(body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answers to look at, not to follow."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def start_api(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sessionpipe.cli", "api", *args],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


@contextmanager
def running_api(env: dict[str, str], log: Path) -> Iterator[ApiServer]:
    """The API on a free port of 127.0.0.1 with ``env`` (its token is
    ``SESSIONPIPE_API_TOKEN`` there), answering; stopped (SIGTERM) afterwards."""
    port = free_port()
    proc = start_api(env, log, "--host", "127.0.0.1", "--port", str(port))
    server = ApiServer(f"http://127.0.0.1:{port}", env.get("SESSIONPIPE_API_TOKEN"), log)

    def up() -> bool:
        assert proc.poll() is None, f"sessionpipe api exited:\n{log.read_text()}"
        try:
            return server.request("/healthz")[0] in (200, 503)
        except OSError:
            return False

    try:
        wait_for(up, START_TIMEOUT_S, "sessionpipe api to answer", poll=0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""``make up``: docker-compose.yml's long-running services on this machine, without Docker.

``python -m sessionpipe.up`` builds the services' environment, migrates the database and
then becomes ``honcho start`` with the checkout's ``Procfile`` (the same workers, API and
Flower as docker-compose.yml; ``tests/test_procfile.py`` keeps them the same). Ctrl-C stops
everything: honcho sends SIGTERM to every process group and SIGKILL 5 s later, so a task
cut off is taken again after its lease (``JOB_LEASE_S``), as after a crash.

The rules:

- **Where things are.** PostgreSQL and Redis on 127.0.0.1 (``DEFAULTS``: database
  ``sessionpipe`` as user ``postgres``, Redis database 0), unless ``.env`` or the
  environment name others. The database is created when it does not exist, then migrated
  (``sessionpipe db upgrade``).
- **Precedence**, lowest first: ``DEFAULTS``, the generated ``$SESSIONPIPE_HOME/local.env``
  (``var/local.env``), ``.env`` (as docker compose reads it), the environment. honcho is
  handed the finished environment and reads no env file itself.
- **Secrets** (``SECRETS``: the API's bearer token, Flower's user and password) come from
  the environment or ``.env``. One set nowhere is generated at random into ``local.env``
  (mode 0600, under the gitignored ``var/``) and printed once; nothing secret is ever
  written into the checkout's tracked files. A value still at ``.env.example``'s
  placeholder is refused: Flower never runs with a known password, nor the API with a
  known token (and the Procfile's shell refuses to start Flower with none).
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: The checkout: where the Procfile and .env are, and the services' working directory.
ROOT: Final = Path(__file__).resolve().parents[1]
PROCFILE: Final = ROOT / "Procfile"
DOTENV: Final = ROOT / ".env"
#: The file of generated secrets, in the embedded default's folder (gitignored ``var/``).
LOCAL_ENV_NAME: Final = "local.env"
DEFAULT_HOME: Final = "var"

#: The local services when nothing says otherwise (scripts/ensure-services.sh starts them).
DEFAULTS: Final[Mapping[str, str]] = {
    "SESSIONPIPE_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/sessionpipe",
    "SESSIONPIPE_BROKER_URL": "redis://127.0.0.1:6379/0",
    "SESSIONPIPE_API_PORT": "8000",
    "FLOWER_PORT": "5555",
    "PYTHONUNBUFFERED": "1",  # the services' logs reach honcho's output line by line
}
#: Bytes of randomness in a generated token or password (URL-safe base64: 43 characters).
SECRET_BYTES: Final = 32
GENERATED_FLOWER_USER: Final = "operator"
#: Each secret and how a missing one is made.
SECRETS: Final[Mapping[str, str | None]] = {
    "SESSIONPIPE_API_TOKEN": None,  # None: random
    "FLOWER_USER": GENERATED_FLOWER_USER,
    "FLOWER_PASSWORD": None,
}
#: ``.env.example``'s value: copied but never set.
PLACEHOLDER: Final = "change-me"
LOCAL_ENV_MODE: Final = 0o600
ADMIN_DATABASE: Final = "postgres"


class UpError(RuntimeError):
    """``make up`` cannot start as configured (the message says what to change)."""


@dataclass(frozen=True)
class UpEnv:
    env: dict[str, str]  # the services' whole environment
    generated: dict[str, str]  # secrets made now (to be written to local.env and shown)
    local_env: Path


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as docker compose reads ``.env``: blank lines and ``#`` comments
    skipped, an optional ``export``, one pair of surrounding quotes removed. A missing file
    is empty."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def resolve(environ: Mapping[str, str], dotenv: Path) -> UpEnv:
    """The services' environment (precedence as the module says) and the secrets to make.

    Raises :class:`UpError` for a secret left at the placeholder.
    """
    file_values = read_env_file(dotenv)
    home = Path(environ.get("SESSIONPIPE_HOME") or file_values.get("SESSIONPIPE_HOME")
                or DEFAULT_HOME)
    local_env = (home if home.is_absolute() else ROOT / home) / LOCAL_ENV_NAME
    env = {**DEFAULTS, **read_env_file(local_env), **file_values, **environ}
    generated: dict[str, str] = {}
    for name, fixed in SECRETS.items():
        value = env.get(name, "")
        if value == PLACEHOLDER:
            raise UpError(
                f"{name} is still {PLACEHOLDER!r} (from .env.example): set a real value in "
                f"{dotenv} or the environment, or remove it to have one generated"
            )
        if not value:
            generated[name] = env[name] = fixed or secrets.token_urlsafe(SECRET_BYTES)
    bin_dir = str(Path(sys.executable).parent)  # celery, sessionpipe: this venv's
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])
    return UpEnv(env=env, generated=generated, local_env=local_env)


def write_generated(local_env: Path, generated: Mapping[str, str]) -> None:
    """Add ``generated`` to ``local_env`` (created 0600; earlier lines kept)."""
    if not generated:
        return
    local_env.parent.mkdir(parents=True, exist_ok=True)
    kept = read_env_file(local_env)
    kept.update(generated)
    body = "".join(f"{key}={value}\n" for key, value in kept.items())
    header = "# Generated by `make up` (sessionpipe/up.py); never commit. Set these in .env\n"
    fd = os.open(local_env, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, LOCAL_ENV_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(header + "# or the environment to use others.\n" + body)
    os.chmod(local_env, LOCAL_ENV_MODE)  # an older file may have had looser bits


def ensure_database(database_url: str) -> None:
    """Create a PostgreSQL URL's database when it does not exist (other backends: nothing)."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "postgresql" or not url.database:
        return
    server = make_conninfo(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password or None,
    )
    try:
        psycopg.connect(make_conninfo(server, dbname=url.database)).close()
        return
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise UpError(f"PostgreSQL at {url.host}:{url.port or 5432}: {exc}") from None
    with psycopg.connect(make_conninfo(server, dbname=ADMIN_DATABASE), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
    print(f"created database {url.database}")


def announce(up: UpEnv) -> None:
    env = up.env
    for name, value in up.generated.items():
        print(f"generated {name}={value} (into {up.local_env})")
    print(
        f"status API: http://127.0.0.1:{env['SESSIONPIPE_API_PORT']}/ "
        f"(Authorization: Bearer $SESSIONPIPE_API_TOKEN)\n"
        f"Flower:     http://127.0.0.1:{env['FLOWER_PORT']}/ (user {env['FLOWER_USER']})\n"
        f"secrets:    the environment, .env, else {up.local_env}; Ctrl-C stops everything",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sessionpipe.up", description=__doc__)
    parser.add_argument("--dotenv", type=Path, default=DOTENV, help="default: ./.env")
    parser.add_argument("--procfile", type=Path, default=PROCFILE, help="default: ./Procfile")
    args = parser.parse_args(argv)
    try:
        up = resolve(os.environ, args.dotenv)
        ensure_database(up.env["SESSIONPIPE_DATABASE_URL"])
    except UpError as exc:
        sys.exit(f"make up: {exc}")
    write_generated(up.local_env, up.generated)
    announce(up)
    subprocess.run(
        [sys.executable, "-m", "sessionpipe.cli", "db", "upgrade"], cwd=ROOT, env=up.env, check=True
    )
    honcho = [sys.executable, "-m", "honcho", "start", "-f", str(args.procfile), "-d", str(ROOT),
              "-e", os.devnull]  # fmt: skip
    os.chdir(ROOT)
    os.execve(sys.executable, honcho, up.env)


if __name__ == "__main__":
    main()

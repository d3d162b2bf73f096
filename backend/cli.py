"""The `mes` command. Expected failures print one line and exit non-zero; never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from backend.principal import SYSTEM, Role

if TYPE_CHECKING:
    from backend.settings import Settings


class CommandError(Exception):
    """An expected failure: its message is the one line the user sees."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _settings() -> Settings:
    from backend.settings import get_settings

    return get_settings()


def _say(*lines: str) -> None:
    """Writes lines to stdout, flushed (so that a reader of a pipe sees them at once)."""
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


def _fail(message: str, code: int = 1) -> NoReturn:
    sys.stderr.write(f"mes: {message}\n")
    raise SystemExit(code)


# ---------------------------------------------------------------- database


def _safe_url(url: str) -> str:
    """The URL as it may be shown: without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unreadable MES_DATABASE_URL)"


def _reason(error: BaseException) -> str:
    """The first line of what went wrong, without SQLAlchemy's wrapping and links."""
    original = getattr(error, "orig", None) or error
    text = str(original).strip() or type(original).__name__
    return text.splitlines()[0]


def _db_revision_state(url: str) -> tuple[str | None, str]:
    """(current revision, head revision) of the database at `url`.

    A database that cannot be reached is a CommandError that names it (without password).
    """
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.exc import ArgumentError

    from backend.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head() or ""
    _open_sqlite_file(url)

    async def current() -> str | None:
        from backend.db import migration_engine

        try:
            engine = migration_engine(url)
        except (ArgumentError, ImportError, ValueError) as error:
            raise CommandError(f"bad MES_DATABASE_URL: {_reason(error)}") from error
        try:
            try:
                conn = await engine.connect()
            except Exception as error:  # refused, unknown host or database, bad password, ...
                raise CommandError(
                    f"cannot reach the database {_safe_url(url)}: {_reason(error)}"
                ) from error
            try:
                return await conn.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_revision()
                )
            finally:
                await conn.close()
        finally:
            await engine.dispose()

    return asyncio.run(current()), head


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases, in-memory and URI forms)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or parsed.query.get("uri"):
        return None
    return Path(database)


def _sqlite_file_missing(url: str) -> Path | None:
    """The file of a SQLite URL when it does not exist (so that checking creates nothing)."""
    path = _sqlite_file(url)
    return path if path is not None and not path.exists() else None


def _open_sqlite_file(url: str) -> None:
    """Opens (creating) a SQLite file with the standard library first: aiosqlite, when it
    cannot open a file, may print a thread's traceback after the event loop has closed."""
    import sqlite3

    path = _sqlite_file(url)
    if path is None:
        return
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as error:
        raise CommandError(f"cannot reach the database {_safe_url(url)}: {error}") from error


def _require_migrated(url: str) -> None:
    missing = _sqlite_file_missing(url)
    if missing is not None:
        raise CommandError(f"there is no database at {missing}: run `mes db upgrade` first")
    current, head = _db_revision_state(url)
    if current != head:
        raise CommandError(
            f"the database is at revision {current or 'none'}, not {head}: "
            "run `mes db upgrade` first"
        )


def cmd_db_upgrade(args: argparse.Namespace) -> None:
    from backend.migrate import upgrade

    url = _settings().database_url
    before, _ = _db_revision_state(url)  # first: says so when the database cannot be reached
    upgrade(url)
    after, _ = _db_revision_state(url)
    if before == after:
        _say(f"database at revision {after} (already up to date)")
    else:
        _say(f"database upgraded from revision {before or 'none'} to {after}")


# ---------------------------------------------------------------- users and tokens


def cmd_create_user(args: argparse.Namespace) -> None:
    from backend.auth import service
    from backend.db import Database
    from backend.errors import DomainError
    from backend.uow import transaction

    settings = _settings()
    _require_migrated(settings.database_url)

    async def run() -> None:
        db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        try:
            async with transaction(db, SYSTEM) as uow:
                user = await service.create_user(
                    uow,
                    settings,
                    username=args.name,
                    display_name=args.display_name or args.name,
                    password=args.password,
                    roles=[Role(r) for r in args.role],
                )
            _say(f"created user {user.username} with roles {', '.join(user.roles)}")
        except DomainError as error:
            raise CommandError(
                "; ".join(
                    f"{p.field}: {p.message}" if p.field else p.message for p in error.problems
                )
            ) from error
        finally:
            await db.dispose()

    asyncio.run(run())


def cmd_create_token(args: argparse.Namespace) -> None:
    from backend.auth import service
    from backend.db import Database
    from backend.errors import DomainError
    from backend.uow import transaction

    settings = _settings()
    _require_migrated(settings.database_url)

    async def run() -> None:
        db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        try:
            async with transaction(db, SYSTEM) as uow:
                _, token = await service.create_api_token(
                    uow, name=args.name, roles=[Role(r) for r in args.role]
                )
            _say(token)
        except DomainError as error:
            raise CommandError("; ".join(p.message for p in error.problems)) from error
        finally:
            await db.dispose()

    asyncio.run(run())


def cmd_revoke_token(args: argparse.Namespace) -> None:
    from backend.auth import service
    from backend.db import Database
    from backend.errors import DomainError
    from backend.uow import transaction

    settings = _settings()
    _require_migrated(settings.database_url)

    async def run() -> None:
        db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        try:
            async with transaction(db, SYSTEM) as uow:
                row = await service.revoke_api_token(uow, args.name)
            _say(f"token {row.name} revoked")
        except DomainError as error:
            raise CommandError("; ".join(p.message for p in error.problems)) from error
        finally:
            await db.dispose()

    asyncio.run(run())


def cmd_list_tokens(args: argparse.Namespace) -> None:
    from backend.auth import service
    from backend.db import Database

    settings = _settings()
    _require_migrated(settings.database_url)

    async def run() -> None:
        db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        try:
            async with db.read() as session:
                for row in await service.list_api_tokens(session):
                    state = (
                        f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
                    )
                    _say(f"{row.name}\t{','.join(row.roles)}\t{state}")
        finally:
            await db.dispose()

    asyncio.run(run())


# ---------------------------------------------------------------- serving


def _serve(host: str, port: int, workers: int) -> None:
    import uvicorn

    settings = _settings()
    settings.require_secret_key()
    _require_migrated(settings.database_url)
    uvicorn.run(
        "backend.app:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        proxy_headers=True,
        ws="websockets-sansio",
    )


def cmd_serve(args: argparse.Namespace) -> None:
    if args.workers < 1:
        raise CommandError("--workers must be at least 1")
    _serve(args.host, args.port, args.workers)


def cmd_worker(args: argparse.Namespace) -> None:
    from backend.jobs import run_worker

    run_worker()


def cmd_simulate(args: argparse.Namespace) -> None:
    from equipment_bridge.simulators.run import SimulatorError, run_simulators

    try:
        asyncio.run(
            run_simulators(args.opcua_port, args.modbus_port, args.seed, args.rollover, args.speed)
        )
    except SimulatorError as error:
        raise CommandError(str(error)) from error


def cmd_bridge(args: argparse.Namespace) -> None:
    from equipment_bridge.cli import run
    from equipment_bridge.config import BridgeConfigError

    try:
        run(args.config)
    except BridgeConfigError as error:
        raise CommandError(str(error)) from error


def cmd_export_schema(args: argparse.Namespace) -> None:
    from strawberry.printer import print_schema

    from backend.graphql import build_schema

    sys.stdout.write(print_schema(build_schema(_settings())) + "\n")


def cmd_demo(args: argparse.Namespace) -> None:
    from backend.db import Database
    from backend.demo import DemoCode, DemoQuality, demo_codes, demo_quality, seed
    from backend.migrate import upgrade
    from backend.settings import get_settings

    if not os.environ.get("MES_SECRET_KEY"):
        # Tokens signed with this key stop working when the demo restarts: fine for a demo.
        os.environ["MES_SECRET_KEY"] = secrets.token_urlsafe(32)
        get_settings.cache_clear()
    settings = _settings()
    _say(f"migrating {_safe_url(settings.database_url)} ...")
    upgrade(settings.database_url)

    async def run_seed() -> tuple[list[tuple[str, str, str]], list[DemoCode], DemoQuality]:
        db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        try:
            users = await seed(db, settings)
            codes = await demo_codes(db)
            quality = await demo_quality(db, settings)
        finally:
            await db.dispose()
        return [(u.username, u.password, ", ".join(u.roles)) for u in users], codes, quality

    logins, codes, quality = asyncio.run(run_seed())
    equipment = [] if args.no_equipment else _start_demo_equipment(settings, args)
    url = (
        f"http://{'localhost' if args.host in ('0.0.0.0', '127.0.0.1') else args.host}:{args.port}"
    )
    _say("\nThe demo plant is ready.")
    _say(f"  App and API:  {url}/   (GraphiQL: {url}/graphql)")
    _say("  Sign in as:")
    for username, password, roles in logins:
        _say(f"    {username:<11} password {password:<22} ({roles})")
    _say("  Lot labels (GS1: GTIN, expiry, lot; type the bracketed form or scan it):")
    for code in codes:
        _say(f"    {code.lot:<13} {code.status:<11} {code.printable}")
    _say("  Released orders to scan into: PO-1001 (blending), PO-1002 (tableting).")
    if quality.open_deviation:
        _say(
            f"  Open deviation for the supervisors' inbox: {quality.open_deviation} "
            "(sign in as supervisor or quality to decide it)."
        )
    if quality.batch_order:
        _say(
            f"  Batch record of the completed order {quality.batch_order} (opens as quality):",
            f"    {url}/orders/{quality.batch_order}/batch-record?token={quality.reviewer_token}",
            f"    as JSON: {url}/orders/{quality.batch_order}/batch-record.json "
            "with 'Authorization: Bearer <token>'",
        )
    if equipment:
        _say(
            f"  Live machines: PRESS-01 (OPC UA simulator on port {args.opcua_port}) and BLENDER-01"
            f" (Modbus TCP simulator on port {args.modbus_port}), fed in by the bridge."
        )
    _say("  Stop with Ctrl+C.\n")
    try:
        _serve(args.host, args.port, 1)
    finally:
        _stop_children(equipment)


def _start_demo_equipment(settings: Any, args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    """The machine simulators and the bridge, as child processes of the demo.

    The bridge gets a fresh EQUIPMENT API token and the demo's own URL; it keeps its outbox
    next to the database, so events made while the server starts are sent once it answers.
    """
    from backend.auth import service
    from backend.db import Database
    from backend.uow import transaction
    from equipment_bridge.config import DEMO_CONFIG

    async def make_token() -> str:
        db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        try:
            async with transaction(db, SYSTEM) as uow:
                _, token = await service.create_api_token(
                    uow, name=f"demo-bridge-{secrets.token_hex(4)}", roles=[Role.EQUIPMENT]
                )
        finally:
            await db.dispose()
        return token

    env = dict(os.environ)
    env.update(
        {
            "MES_BRIDGE_TOKEN": asyncio.run(make_token()),
            "MES_URL": f"http://127.0.0.1:{args.port}/graphql",
            "MES_SIM_OPCUA_PORT": str(args.opcua_port),
            "MES_SIM_MODBUS_PORT": str(args.modbus_port),
            "MES_BRIDGE_OUTBOX": str(Path("mes-bridge-outbox.sqlite").resolve()),
        }
    )
    simulators = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "equipment_bridge.simulators.run",
            "--opcua-port",
            str(args.opcua_port),
            "--modbus-port",
            str(args.modbus_port),
        ],
        env=env,
    )
    bridge = subprocess.Popen(
        [sys.executable, "-m", "equipment_bridge", "--config", str(DEMO_CONFIG)], env=env
    )
    return [simulators, bridge]


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in reversed(children):
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mes", description="Manufacturing Execution System")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace], None], help_: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.set_defaults(handler=handler)
        return sub

    db = commands.add_parser("db", help="database migrations")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    up = db_commands.add_parser("upgrade", help="apply the migrations up to head (idempotent)")
    up.set_defaults(handler=cmd_db_upgrade)

    roles = [r.value for r in Role]
    user = add("create-user", cmd_create_user, "add a user (for the first admin)")
    user.add_argument("name")
    user.add_argument("--password", required=True)
    user.add_argument("--role", action="append", required=True, choices=roles)
    user.add_argument("--display-name")

    token = add(
        "create-token", cmd_create_token, "create an API token for a system; prints it once"
    )
    token.add_argument("name")
    token.add_argument("--role", action="append", required=True, choices=roles)
    revoke = add("revoke-token", cmd_revoke_token, "revoke an API token by name")
    revoke.add_argument("name")
    add("list-tokens", cmd_list_tokens, "list API tokens (names, roles, state; never the tokens)")

    for name, handler, help_ in (
        ("serve", cmd_serve, "run the API, the subscriptions and the PWA"),
        ("demo", cmd_demo, "run the whole system on the embedded default"),
    ):
        sub = add(name, handler, help_)
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8000)
        if name == "serve":
            sub.add_argument("--workers", type=int, default=1)
        else:
            sub.add_argument(
                "--opcua-port",
                type=int,
                default=4840,
                help="the OPC UA press simulator's port (default 4840)",
            )
            sub.add_argument(
                "--modbus-port",
                type=int,
                default=5020,
                help="the Modbus TCP blender simulator's port (default 5020)",
            )
            sub.add_argument(
                "--no-equipment",
                action="store_true",
                help="start neither the machine simulators nor the bridge",
            )

    add("worker", cmd_worker, "run the arq worker (needs MES_REDIS_URL)")
    from equipment_bridge.simulators.run import add_arguments as add_simulator_arguments

    simulate = add(
        "simulate", cmd_simulate, "run the OPC UA press and Modbus TCP blender simulators"
    )
    add_simulator_arguments(simulate)
    bridge = add("bridge", cmd_bridge, "run the equipment bridge (OPC UA / Modbus TCP → MES)")
    bridge.add_argument("--config", required=True, metavar="FILE")
    add("export-schema", cmd_export_schema, "print the served schema as SDL")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    from pydantic import ValidationError

    from backend.settings import ConfigurationError

    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (CommandError, ConfigurationError) as error:
        _fail(str(error))
    except ValidationError as error:
        first = error.errors()[0]
        _fail(f"bad setting MES_{str(first['loc'][0]).upper()}: {first['msg']}")
    except OSError as error:
        _fail(f"{error.strerror or error}" + (f": {error.filename}" if error.filename else ""))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as error:  # a database that does not answer, and the like
        if _is_connection_error(error):
            _fail(f"cannot reach a service: {error}".splitlines()[0])
        raise


def _is_connection_error(error: BaseException) -> bool:
    names = {
        "OperationalError",
        "InterfaceError",
        "ConnectionRefusedError",
        "ConnectionError",
        "CannotConnectNowError",
        "InvalidCatalogNameError",
        "RedisConnectionError",
    }
    current: BaseException | None = error
    while current is not None:
        if type(current).__name__ in names:
            return True
        current = current.__cause__ or current.__context__
    return False


if __name__ == "__main__":
    main()

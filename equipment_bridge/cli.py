"""Command line of the bridge.

`mes bridge --config FILE` calls `run(FILE)`. Standalone (without the MES installed as a
command): `python -m equipment_bridge --config FILE`, plus operator commands on the outbox:

    python -m equipment_bridge check --config FILE          validate the config, print a summary
    python -m equipment_bridge quarantine list --config FILE
    python -m equipment_bridge quarantine export --config FILE   (JSON lines on stdout)
    python -m equipment_bridge quarantine retry --config FILE [--id ID ...]
    python -m equipment_bridge quarantine discard --config FILE (--id ID ... | --all)

Expected failures (bad config, missing token variable, unusable outbox) raise
`BridgeConfigError` with a one-line message; `main` prints it and exits 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence

from equipment_bridge.config import BridgeConfigError, load_config
from equipment_bridge.outbox import Outbox, OutboxError

__all__ = ["BridgeConfigError", "main", "run"]


def run(config_path: str) -> None:
    """Runs the bridge with the config at `config_path` until SIGINT/SIGTERM.

    Raises BridgeConfigError (one line: file, key path, problem) before starting anything
    when the config is bad or the token's environment variable is not set."""
    from equipment_bridge.app import main as app_main

    app_main(config_path)


def _outbox(config_path: str) -> Outbox:
    config = load_config(config_path)
    try:
        return Outbox(config.bridge.outbox.path)
    except OutboxError as error:
        raise BridgeConfigError(f"bridge.outbox.path: {error}") from None


def _check(config_path: str) -> None:
    config = load_config(config_path)
    out = sys.stdout
    out.write(f"config ok: bridge {config.bridge.id}, MES {config.bridge.mes.url}\n")
    for eq in config.equipment:
        where = eq.endpoint if eq.protocol == "opcua" else f"modbus://{eq.host}:{eq.port}"
        kinds = ", ".join(f"{name} ({sig.kind})" for name, sig in eq.signals.items())
        out.write(f"  {eq.code}: {where}: {kinds}\n")


def _quarantine(
    action: str, config_path: str, ids: Sequence[int], everything: bool = False
) -> None:
    outbox = _outbox(config_path)
    try:
        selected = list(ids) or None
        if action == "list":
            rows = outbox.quarantined()
            for r in rows:
                when = dt.datetime.fromtimestamp(r.quarantined_at, dt.UTC).isoformat(
                    timespec="seconds"
                )
                sys.stdout.write(
                    f"{r.id}\t{when}\t{r.equipment}\t{r.kind}\t{r.code}\t{r.field or ''}\t"
                    f"{r.message}\n"
                )
            sys.stdout.write(f"{len(rows)} quarantined events\n")
        elif action == "export":
            for r in outbox.quarantined():
                if selected is None or r.id in selected:
                    sys.stdout.write(
                        json.dumps(
                            {
                                "id": r.id,
                                "code": r.code,
                                "message": r.message,
                                "field": r.field,
                                "event": r.body,
                            }
                        )
                        + "\n"
                    )
        elif action == "retry":
            sys.stdout.write(f"{outbox.requeue(selected)} events put back in the send queue\n")
        elif selected is None and not everything:
            raise BridgeConfigError("name the quarantine ids to discard, or give --all")
        else:
            sys.stdout.write(f"{outbox.discard(selected)} quarantined events deleted\n")
    finally:
        outbox.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m equipment_bridge", description="MES equipment bridge"
    )
    parser.add_argument("--config", help="the bridge's YAML config (to run the bridge)")
    commands = parser.add_subparsers(dest="command")
    check = commands.add_parser("check", help="validate the config")
    check.add_argument("--config", required=True)
    quarantine = commands.add_parser("quarantine", help="events the MES refused")
    quarantine.add_argument("action", choices=["list", "export", "retry", "discard"])
    quarantine.add_argument(
        "--id",
        dest="ids",
        action="append",
        type=int,
        default=[],
        help="a quarantine id (repeatable; default: all)",
    )
    quarantine.add_argument("--config", required=True)
    quarantine.add_argument("--all", action="store_true", help="discard: all of them")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            _check(args.config)
        elif args.command == "quarantine":
            _quarantine(args.action, args.config, args.ids, args.all)
        elif args.config:
            run(args.config)
        else:
            parser.error("give --config FILE")
    except BridgeConfigError as error:
        sys.stderr.write(f"bridge: {error}\n")
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None

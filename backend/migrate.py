"""Runs the Alembic migrations from code (for `mes db upgrade`, `mes demo` and the tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations

# The migrations ship as a package, so that `pip install .` (not only -e) can migrate.
SCRIPT_LOCATION = Path(migrations.__file__).resolve().parent


def alembic_config(url: str) -> Config:
    """An Alembic config for this project's migrations against `url`."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Applies the migrations up to `revision`; does nothing when already there."""
    command.upgrade(alembic_config(url), revision)


def check(url: str) -> None:
    """Raises when the models and the migrations disagree (`alembic check`)."""
    command.check(alembic_config(url))

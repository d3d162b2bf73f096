"""The production docker-compose.yml: valid for Debian's docker-compose (1.29) and complete.

`docker-compose config` parses, interpolates and validates the file without a Docker engine, so
this runs on a machine that has none. Its output is the normalised file, read here as YAML.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML: installed with uvicorn[standard]

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES = {"postgres", "redis", "migrate", "api-1", "api-2", "worker"}
APIS = {"api-1": 8001, "api-2": 8002}


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is not installed; .ci/run installs Debian's docker-compose")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    return exe


def _config(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config ARGS` with only the MES_* variables given: no .env file is read."""
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MES_", "COMPOSE_"))}
    environ.update(env)
    command = [_docker_compose(), "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE)]
    return subprocess.run(
        [*command, "config", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = _config(tmp_path_factory.mktemp("compose"), MES_SECRET_KEY="test-secret-key")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


def test_config_is_valid(tmp_path: Path) -> None:
    result = _config(tmp_path, "-q", MES_SECRET_KEY="test-secret-key")
    assert result.returncode == 0, result.stderr


def test_secret_key_is_required(tmp_path: Path) -> None:
    result = _config(tmp_path)
    assert result.returncode != 0
    assert "MES_SECRET_KEY" in result.stderr


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= SERVICES


def test_backing_services_have_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name


def test_migrate_runs_once_after_postgres(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["mes", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize(("name", "port"), sorted(APIS.items()))
def test_api_replica(compose: dict[str, Any], name: str, port: int) -> None:
    api = compose["services"][name]
    assert api["command"][:2] == ["mes", "serve"]
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    depends_on = api["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    assert depends_on["redis"]["condition"] == "service_healthy"
    assert [int(p["published"]) for p in api["ports"]] == [port]
    env = api["environment"]
    assert env["MES_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert env["MES_REDIS_URL"] == "redis://redis:6379/0"
    assert env["MES_SECRET_KEY"] == "test-secret-key"


def test_worker(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["command"] == ["mes", "worker"]
    assert worker["environment"]["MES_REDIS_URL"] == "redis://redis:6379/0"
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"

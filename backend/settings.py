"""Configuration, read from MES_* environment variables (or a .env file in the working folder)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the server. Defaults are the embedded single-machine setup."""

    model_config = SettingsConfigDict(env_prefix="MES_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./mes.db"
    # SQLite only: FULL puts every committed transaction on disk before it is answered (it
    # survives a power cut); NORMAL is faster and survives a crash of the process only.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    redis_url: str | None = None
    secret_key: SecretStr | None = None

    # Sign-in
    token_ttl_seconds: int = Field(default=12 * 3600, gt=0)
    # How long a process trusts a token it has looked up: a revoked token, or a user
    # deactivated or given other roles, takes effect within this time (0: every request).
    auth_cache_seconds: float = Field(default=5.0, ge=0)
    login_free_failures: int = Field(default=3, ge=0)
    login_base_delay_seconds: float = Field(default=5.0, ge=0)
    login_max_delay_seconds: float = Field(default=60.0, ge=0)
    password_min_length: int = Field(default=8, ge=8)

    # GraphQL limits, applied before execution
    max_depth: int = 15
    max_aliases: int = 50
    max_cost: int = 50_000
    max_tokens: int = 20_000
    default_page_size: int = 50
    max_page_size: int = 500
    max_body_bytes: int = 1024 * 1024
    graphiql: bool = True
    # Reads whose every field is declared compilable are answered by one SQL statement on
    # PostgreSQL (backend/compiled); off: every query runs through the resolvers.
    compiled_reads: bool = True

    # Shop floor
    # Characters a keyboard-wedge scanner types in place of the GS separator (0x1D) that it
    # cannot send, e.g. "~". Empty: only a real GS separates GS1 fields.
    gs_stand_ins: str = ""
    # A scan synced this long after it was made is flagged as a late entry.
    late_entry_hours: float = 24.0
    # Clock difference tolerated between a device's `scannedAt` and the server.
    clock_skew_seconds: float = 300.0

    # Electronic signatures: wrong passwords in a row before signing locks, and for how long
    signing_max_failures: int = Field(default=3, ge=1)
    signing_lock_minutes: float = Field(default=15.0, gt=0)

    # Redis pub/sub channels are shared by every client of a Redis server, whatever the
    # database number: events carry this prefix (default: derived from the database URL), so
    # two plants, or two test runs, on one Redis never see each other's events.
    channel_prefix: str | None = None
    # Run the scheduled jobs (lot expiry, housekeeping) in this process when there is no Redis.
    run_scheduled_jobs: bool = True

    # Origins allowed to open the WebSocket from a browser (the PWA served elsewhere in development)
    allowed_origins: list[str] = Field(default_factory=list)

    def require_secret_key(self) -> str:
        """The token-signing key; a missing key is a configuration error, never a silent default."""
        if self.secret_key is None or not self.secret_key.get_secret_value():
            raise ConfigurationError(
                "MES_SECRET_KEY is not set: set it to a long random string (mes demo sets its own)"
            )
        return self.secret_key.get_secret_value()

    @property
    def event_channel_prefix(self) -> str:
        if self.channel_prefix is not None:
            return self.channel_prefix
        digest = hashlib.sha256(self.database_url.encode()).hexdigest()[:12]
        return f"mes:{digest}:"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


class ConfigurationError(RuntimeError):
    """The configuration cannot work; the message says what to set."""


@lru_cache
def get_settings() -> Settings:
    return Settings()

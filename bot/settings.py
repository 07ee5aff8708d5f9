"""The one settings model. Read here, in the composition root, and nowhere else.

Every field comes from an environment variable with the prefix ``WAYMARK_`` (or a ``.env``
file in the working directory); the README lists them with their defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flows.model import parse_duration


class Settings(BaseSettings):
    """Waymark's configuration.

    Attributes:
        bot_token: Telegram bot token from BotFather; without it ``waymark`` plays in the
            console.
        telegram_base_url: Bot API base URL (a loopback fake in tests); PTB appends the token.
        database_url: SQLAlchemy URL; default: SQLite file ``waymark.db`` in ``data_dir``.
        data_dir: Where the SQLite database and the generated key file live.
        key_file: The key ring file (mode 0600); default ``data_dir/waymark.key``.
        key_ring: The key ring's JSON in the environment instead of a file.
        max_retention: Caps every flow's retention for this deployment (e.g. ``30d``).
        default_language: The deployment's default language.
        admins: Telegram user ids of administrators (comma-separated).
        webhook_url: Public HTTPS URL Telegram posts updates to (webhook mode).
        webhook_secret: The ``secret_token`` Telegram must echo (webhook mode).
        webhook_listen: Address the webhook server binds.
        webhook_port: Port the webhook server binds.
        purge_interval: Seconds between two purges in the bot.
        open_access: Whether people outside any team may use the flows (as responders).
        invite_ttl: How long an invitation link stays usable.
        alert_remind_after: Unacknowledged alert: remind its supervisors after this long.
        alert_escalate_after: Still unacknowledged: escalate to the admins after this long.
        digest_every: How often each team's supervisors get a digest (e.g. 1d, 7d).
        outbox_interval: Seconds between two passes of the alert and digest sender.
    """

    model_config = SettingsConfigDict(
        env_prefix="WAYMARK_", env_file=".env", extra="ignore", frozen=True
    )

    bot_token: SecretStr | None = None
    telegram_base_url: str | None = None
    database_url: str | None = None
    data_dir: Path = Path("data")
    key_file: Path | None = None
    key_ring: SecretStr | None = None
    max_retention: str | None = None
    default_language: str = "en"
    admins: Annotated[tuple[int, ...], NoDecode] = ()
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(default=8443, ge=1, le=65535)
    purge_interval: int = Field(default=300, ge=1)
    open_access: bool = True
    invite_ttl: str = "7d"
    alert_remind_after: str = "15m"
    alert_escalate_after: str = "1h"
    digest_every: str = "1d"
    outbox_interval: float = Field(default=1.0, gt=0)

    @field_validator("admins", mode="before")
    @classmethod
    def _split_admins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(int(part) for part in value.replace(";", ",").split(",") if part.strip())
        if isinstance(value, int):
            return (value,)
        return value

    @field_validator(
        "max_retention", "invite_ttl", "alert_remind_after", "alert_escalate_after", "digest_every"
    )
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @property
    def max_retention_seconds(self) -> int | None:
        """``max_retention`` in seconds, or None when unset."""
        return parse_duration(self.max_retention) if self.max_retention else None

    def seconds(self, name: str) -> int:
        """A duration setting in seconds."""
        return parse_duration(str(getattr(self, name)))

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'waymark.db').resolve()}"

    @property
    def resolved_key_file(self) -> Path:
        """The key file path, defaulting into the data directory."""
        return self.key_file if self.key_file is not None else self.data_dir / "waymark.key"

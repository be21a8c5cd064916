"""One settings object per process, read from the environment (and `.env`), cached.

Defaults make a fresh clone work against the local emulator; for real Metriport set
`METRIPORT_API_KEY` and `METRIPORT_BASE_URL` (the sandbox is https://api.sandbox.metriport.com).
"""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMULATOR_URL = "http://127.0.0.1:8081"
# The emulator accepts any key that is base64 of "a:b" (tenant b, at least 5 characters), like Metriport.
EMULATOR_API_KEY = base64.b64encode(b"local:demo-tenant").decode()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    metriport_base_url: str = Field(EMULATOR_URL, description="Medical API base URL, without /medical/v1")
    metriport_api_key: SecretStr = Field(SecretStr(EMULATOR_API_KEY), description="x-api-key header value")
    metriport_webhook_key: SecretStr | None = Field(
        None, description="Webhook signing key; else read from the Prefect Secret block named below"
    )
    webhook_key_block: str = Field("metriport-webhook-key", description="Prefect Secret block name")
    webhook_key_refresh_seconds: float = Field(2.0, description="Re-read the block at most this often")
    webhook_key_grace_seconds: float = Field(3600.0, description="A replaced key still verifies this long")
    metriport_timeout_seconds: float = 20.0

    database_url: str = Field("sqlite:///./data/inbox.db", description="Inbox and waits database")
    bundle_dir: Path = Field(Path("./data/bundles"), description="Where bundles and documents are stored")

    receiver_max_body_bytes: int = 20 * 1024 * 1024
    dispatcher_poll_seconds: float = 0.5
    prefect_max_concurrent_calls: int = 4

    hot_window_seconds: float = Field(30.0, description="How long a wait watches its row before suspending")
    hot_window_give_way: bool = Field(True, description="Give a process slot back to runs queued for one")
    hot_window_give_way_seconds: float = Field(
        2.0,
        ge=0,
        description="When other runs queue for a process slot, a wait unanswered this long (or longer, while"
        " its stage's recent replies say one is nearer than a resume costs) suspends to give its slot back",
    )
    soft_deadline_seconds: float = Field(600.0, description="After this the reconciler asks Metriport")
    hard_deadline_seconds: float = Field(6 * 3600.0, description="After this a wait resolves as timeout")
    revive_attempts: int = Field(3, ge=0, description="How often the reconciler brings one crashed run back")
    document_download_attempts: int = Field(3, ge=1, description="Tries per document of a bulk download")
    document_retry_backoff_seconds: float = Field(1.0, ge=0, description="First pause between those tries")

    environment: str = Field("local", description="local, staging or production")
    paused_schedules: set[str] = Field(
        default_factory=set,
        description="Deployments (`flow/deployment`, JSON list) whose schedules are created inactive",
    )

    @model_validator(mode="after")
    def _refuse_placeholder_secrets_outside_local(self) -> "Settings":
        if self.environment != "local":
            if self.metriport_api_key.get_secret_value() in ("", EMULATOR_API_KEY):
                raise ValueError("METRIPORT_API_KEY must be set to a real key outside ENVIRONMENT=local")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()

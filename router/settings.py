"""All configuration, from the environment (and CLI flags that override it).

Nothing else in the project reads the environment. Unset ``REDIS_URL`` / ``DATABASE_URL``
mean the embedded defaults: route flags in a SQLite file (``flags_db_path``) and a SQLite
inference log in the home.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_HOME = Path("~/.lora-router")


class Prices(BaseModel):
    """Prices of one adapter (``price_overrides``); an unset price falls back to the
    gateway-wide one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    price_per_gpu_hour: float | None = Field(default=None, ge=0)
    price_per_1k_prompt_tokens: float | None = Field(default=None, ge=0)
    price_per_1k_completion_tokens: float | None = Field(default=None, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LORA_ROUTER_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        validate_default=True,
    )

    home: Path = Field(
        default=DEFAULT_HOME, validation_alias="LORA_ROUTER_HOME"
    )
    redis_url: str | None = Field(
        default=None, validation_alias="REDIS_URL"
    )
    database_url: str | None = Field(
        default=None, validation_alias="DATABASE_URL"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    routes_file: Path | None = None  # default: <home>/routes.yaml
    # the embedded (no Redis) durable route store: state + audit; default: see flags_db_path
    flags_db: Path | None = None
    replica_id: str | None = None  # default: hostname-pid

    # engine
    # embedded: torch in this process; remote: backend servers speaking vLLM's OpenAI
    # protocol (vLLM, or `lora-router serve --engine-api`); vllm: the GPU extra
    engine: Literal["embedded", "remote", "vllm"] = "embedded"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    batch_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    max_lora_rank: int = Field(default=16, ge=1, le=512)
    max_adapters: int = Field(default=8, ge=1, le=1024)
    max_queue: int = Field(default=1024, ge=1)
    request_timeout_s: float = Field(default=60.0, gt=0)
    torch_threads: int | None = Field(default=None, ge=1)
    # engine=vllm (the `vllm` extra, in process): adapters on the GPU per batch, vLLM's host
    # cache (None: max_adapters, never less: no resident adapter is evicted), its memory
    vllm_max_loras: int = Field(default=4, ge=1, le=256)
    vllm_max_cpu_loras: int | None = Field(default=None, ge=1)
    vllm_gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    vllm_max_model_len: int | None = Field(default=None, ge=16)
    vllm_enforce_eager: bool = False
    # CUDA only: decode steps replayed from CUDA graphs over a static KV cache whose context
    # is capped at static_max_len (adapters.static_decode); ignored on CPU
    cuda_graphs: bool = True
    static_max_len: int = Field(default=4096, ge=16, le=1_048_576)
    # remote engine: the backends' base URLs (comma-separated in the environment)
    engine_backends: Annotated[tuple[str, ...], NoDecode] = ()
    engine_probe_interval_s: float = Field(default=1.0, gt=0, le=300)  # health + re-sync
    engine_probe_timeout_s: float = Field(default=2.0, gt=0)
    engine_connect_timeout_s: float = Field(default=2.0, gt=0)
    engine_load_timeout_s: float = Field(default=120.0, gt=0)  # one adapter on one backend
    engine_start_timeout_s: float = Field(default=120.0, ge=0)  # wait for a first backend
    # the backends' `Authorization: Bearer` key (vLLM --api-key); `serve --engine-api`
    # requires it from its clients when set
    engine_api_key: SecretStr | None = None
    # where the backends find <home>/adapters (a shared volume); default: the same path
    engine_adapters_root: str | None = None

    # flags
    flags_resync_s: float = Field(default=5.0, gt=0)
    flags_ack_timeout_s: float = Field(default=10.0, gt=0)  # replicas' load acks (two-phase)
    flags_apply_timeout_s: float = Field(default=5.0, gt=0)  # a change waits this long for
    # every replica to report it applied (the answer says which are still pending)
    # how long an adapter loaded for a not-yet-committed change is kept before a reconcile
    # may unload it; default 2 * flags_ack_timeout_s + 5
    flags_load_grace_s: float | None = Field(default=None, gt=0)
    replica_ttl_s: float = Field(default=5.0, gt=0)  # heartbeat expiry: a dead replica's
    replica_heartbeat_s: float = Field(default=1.0, gt=0)  # load answer is not waited for
    public_url: str | None = None  # this gateway's URL in its replica record (default host:port)
    # admin API: when set, /admin/* requires "Authorization: Bearer <token>"; when unset,
    # /admin/* answers loopback clients only and `serve` refuses a non-loopback host
    admin_token: SecretStr | None = None
    # extra Host header values /admin/* accepts (comma-separated; "*" = any) besides
    # localhost, 127.0.0.1, [::1], the bound host and public_url's host (DNS rebinding)
    admin_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    # serve the admin API to any client without a token (`serve --insecure-open-admin`)
    insecure_open_admin: bool = False
    # API keys (router.auth): /v1 needs an app key when true, never when false; unset: the
    # home's access.yaml `require_app_key`, else once any key exists
    require_app_key: bool | None = None
    # the key the CLI's --url mode sends (`Authorization: Bearer`), before admin_token
    api_key: SecretStr | None = None
    keys_refresh_s: float = Field(default=1.0, gt=0, le=300)  # the gateway re-reads the keys

    # request limits, each answered with 413 (431 for headers) naming the limit
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)  # all names + values
    max_prompt_chars: int = Field(default=200_000, ge=1)  # checked before tokenising
    max_user_chars: int = Field(default=256, ge=1)  # `user` and the x-route-key header
    max_reason_chars: int = Field(default=1000, ge=1)  # admin `reason`
    max_policy_chars: int = Field(default=20_000, ge=1, le=1_000_000)  # a route's policy text
    max_actor_chars: int = Field(default=128, ge=1)  # admin `actor` and its header
    # Python's GIL switch interval for `serve`: the flag listener thread otherwise waits up
    # to the default 5 ms for the GIL while the loop and the engine are busy
    switch_interval_s: float = Field(default=0.0005, gt=0, le=0.1)

    # shadow copies: at most this many in flight (0 disables shadow copies)
    shadow_max_inflight: int = Field(default=8, ge=0)

    # inference log
    log_batch_size: int = Field(default=256, ge=1)
    log_flush_ms: float = Field(default=200.0, gt=0)
    log_queue_max: int = Field(default=10_000, ge=1)
    # the log journal is fsynced this often: a machine crash loses at most this much of the
    # records served (a process crash loses none)
    log_fsync_interval_s: float = Field(default=1.0, gt=0, le=60)
    input_store_enabled: bool = False
    input_store_retention_days: int = Field(default=30, ge=1)

    # drift monitor (router.drift): one replica (a Redis lease) reads the inference log
    # every interval, raises alerts and runs the routes' guards
    drift_enabled: bool = True
    drift_interval_s: float = Field(default=1.0, gt=0, le=3600)
    drift_lease_ttl_s: float = Field(default=10.0, gt=0)
    drift_window: int = Field(default=1000, ge=50)  # requests in the input-drift window
    drift_webhook_url: str | None = None  # alerts and incidents POSTed here, signed
    drift_webhook_secret: SecretStr | None = None  # HMAC-SHA256 key; required with a URL
    drift_webhook_timeout_s: float = Field(default=5.0, gt=0)

    # cost accounting (router.log.cost, `lora-router cost`, the dashboard's cost panel):
    # estimated cost = engine seconds / 3600 * price_per_gpu_hour (the hour of the engine's
    # device) + prompt and completion tokens / 1000 * their prices; unset prices count 0;
    # price_overrides: per adapter id, JSON {"id": {"price_per_1k_prompt_tokens": 0.1}}
    price_per_gpu_hour: float | None = Field(default=None, ge=0)
    price_per_1k_prompt_tokens: float | None = Field(default=None, ge=0)
    price_per_1k_completion_tokens: float | None = Field(default=None, ge=0)
    price_overrides: dict[str, Prices] = Field(default_factory=dict)
    price_currency: str = Field(default="USD", min_length=1, max_length=8)

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("redis_url")
    @classmethod
    def _check_redis(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return v

    @field_validator("database_url")
    @classmethod
    def _check_db(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("DATABASE_URL must be a postgresql:// URL (unset = embedded SQLite)")
        return v

    @field_validator("engine_backends", mode="before")
    @classmethod
    def _split_backends(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(u.strip() for u in v.split(",") if u.strip())
        return v

    @field_validator("engine_backends", mode="after")
    @classmethod
    def _check_backends(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for url in v:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"engine backend {url!r} must be an http:// or https:// URL")
        urls = tuple(u.rstrip("/") for u in v)
        if len(set(urls)) != len(urls):
            raise ValueError("an engine backend is listed twice")
        return urls

    @field_validator("admin_token", "api_key", "require_app_key", "engine_api_key",
                     "engine_adapters_root", mode="before")
    @classmethod
    def _empty_token(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("price_per_gpu_hour", "price_per_1k_prompt_tokens",
                     "price_per_1k_completion_tokens", mode="before")
    @classmethod
    def _empty_price(cls, v: object) -> object:
        return None if v == "" else v  # an empty variable: unset

    @field_validator("admin_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(h.strip().lower() for h in v.split(",") if h.strip())
        return v

    @model_validator(mode="after")
    def _check_engine(self) -> Settings:
        if self.engine == "remote" and not self.engine_backends:
            raise ValueError("engine=remote needs backends: set LORA_ROUTER_ENGINE_BACKENDS "
                             "to a comma-separated list of their URLs")
        return self

    @model_validator(mode="after")
    def _check_heartbeat(self) -> Settings:
        if self.replica_heartbeat_s >= self.replica_ttl_s:
            raise ValueError(
                f"replica_heartbeat_s ({self.replica_heartbeat_s}) must be shorter than "
                f"replica_ttl_s ({self.replica_ttl_s}), or replicas expire between beats"
            )
        return self

    @property
    def prices(self) -> Prices:
        """The gateway-wide prices (each adapter's ``price_overrides`` apply over them)."""
        return Prices(price_per_gpu_hour=self.price_per_gpu_hour,
                      price_per_1k_prompt_tokens=self.price_per_1k_prompt_tokens,
                      price_per_1k_completion_tokens=self.price_per_1k_completion_tokens)

    @property
    def load_grace_s(self) -> float:
        """Protection of adapters loaded for a change that has not committed yet."""
        if self.flags_load_grace_s is not None:
            return self.flags_load_grace_s
        return 2 * self.flags_ack_timeout_s + 5.0

    @property
    def own_url(self) -> str | None:
        if self.public_url:
            return self.public_url
        return f"http://{self.host}:{self.port}" if self.port else None

    @property
    def loopback_host(self) -> bool:
        """Whether the bound host is a loopback address (or ``localhost``)."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False

    @property
    def routes_path(self) -> Path:
        return self.routes_file if self.routes_file is not None else self.home / "routes.yaml"

    @property
    def flags_db_path(self) -> Path:
        """The embedded route store's SQLite file: ``flags_db``, else
        ``<home>/flags/routes.db`` for the home's routes file, else beside the routes file
        it was seeded from (``FILE.yaml`` -> ``FILE.db``): another table, another state."""
        if self.flags_db is not None:
            return self.flags_db.expanduser().resolve()
        routes = self.routes_path.expanduser().resolve()
        if routes == self.home / "routes.yaml":
            return self.home / "flags" / "routes.db"
        return routes.with_suffix(".db")

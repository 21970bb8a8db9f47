"""Node settings: defaults < ``LLMLAB_*`` environment < TOML file < command-line flags.

One pydantic-settings model is the single source of truth for every knob a node
has, so the README table, the CLI and the environment cannot drift apart.
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from llmlab_grpc import ROLES


class ConfigError(ValueError):
    """A setting is missing or wrong; the message says which and how to fix it."""


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the ``[node]`` table (or the top level) of the TOML file named by ``LLMLAB_CONFIG``."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is not None:
            try:
                raw = tomllib.loads(path.read_text())
            except FileNotFoundError as exc:
                raise ConfigError(f"config file {path} does not exist") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
            self._data = raw.get("node", raw)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class NamespacePolicy(BaseModel):
    """Defaults of one cache namespace (``[node.cache_namespaces.NAME]`` in the TOML file).

    A request's own controls win over these; these win over the node's defaults.
    """

    model_config = ConfigDict(extra="forbid")
    ttl_s: float | None = Field(None, gt=0, le=30 * 86400, description="time to live of entries stored here")
    max_age_s: float | None = Field(None, ge=0, description="accept only cached answers at most this old")
    semantic: bool | None = Field(None, description="semantic lookups and stores for queries in this namespace")
    min_similarity: float | None = Field(None, gt=0, le=1, description="similarity threshold of a semantic hit")


def default_name() -> str:
    """A readable name that is unlikely to clash on a LAN: host name plus a short suffix."""
    return f"{socket.gethostname().split('.')[0]}-{os.getpid() % 10000:04d}"


class NodeSettings(BaseSettings):
    """Everything one node process needs to know."""

    model_config = SettingsConfigDict(env_prefix="LLMLAB_", extra="forbid")

    name: str = Field(default_factory=default_name, description="node name, unique in the mesh")
    node_id: str = Field("", description="stable id; defaults to the name")
    roles: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(ROLES), description="roles to serve")
    host: str = Field("0.0.0.0", description="address the gRPC server binds")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    advertise_host: str = Field("", description="host peers dial; defaults to host (127.0.0.1 for 0.0.0.0)")
    mesh_secret: str = Field("", description="shared mesh secret (LLMLAB_MESH_SECRET)")
    peers: Annotated[list[str], NoDecode] = Field(default_factory=list, description="static peer seeds HOST:PORT")
    mdns: bool = Field(True, description="announce and browse with zeroconf")
    mdns_interface: str = Field("", description="bind zeroconf to this address; empty = all interfaces")
    heartbeat_interval_s: float = Field(1.0, gt=0, le=60)
    peer_timeout_s: float = Field(3.5, gt=0, le=600)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    drain_s: float = Field(5.0, ge=0, le=60, description="grace period for in-flight calls on stop")
    state_dir: Path | None = Field(
        None, description="this node's own state (last known models); default $LLMLAB_HOME/nodes/<node id>")

    # HTTP side and mobile bridge (role `bridge`, docs/bridge.md)
    http_port: int = Field(0, ge=0, le=65535, description="HTTP port of the bridge (PWA, dashboard, API); 0 = any")
    http_host: str = Field("", description="address the HTTP server binds; defaults to host")
    bridge_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="extra Origins allowed on /ws/task, e.g. http://box.local:8080")
    bridge_pairing_ttl_s: float = Field(600.0, ge=10, le=86400, description="life of a pairing token")
    bridge_heartbeat_ms: int = Field(2000, ge=100, le=60000, description="mobile heartbeat interval")
    bridge_max_message_bytes: int = Field(256 * 1024, ge=4096, le=4 * 1024 * 1024,
                                          description="largest WebSocket message accepted")
    bridge_rate_per_s: float = Field(20.0, gt=0, le=10000, description="messages/s per mobile connection")
    bridge_rate_burst: int = Field(40, ge=1, le=100000, description="burst of the per-connection rate limit")
    bridge_max_clients: int = Field(256, ge=1, le=10000, description="concurrent mobile connections")
    bridge_mobile_tools: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http_fetch", "local_cache"],
        description="tools a mobile node may announce; others are refused")
    bridge_sync_namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"],
        description="cache namespaces synced to paired phones; * is every namespace, '' (or default) the default one")
    bridge_sync_private: bool = Field(
        False, description="also sync entries stored with a per-user API key to paired phones (off: they stay private)")
    http_header_timeout_s: float = Field(10.0, gt=0, le=600,
                                         description="seconds a client has to send complete request headers")
    http_idle_timeout_s: float = Field(15.0, gt=0, le=3600,
                                       description="seconds an HTTP connection may stay silent (keep-alive, body)")
    http_max_connections: int = Field(512, ge=1, le=100000,
                                      description="open HTTP + WebSocket connections; more are closed at once")

    # LLM inference on Ray (role `llm`, docs/inference.md)
    ray_address: str = Field("", description="join this Ray cluster (HOST:PORT or 'auto'); empty = own local Ray")
    llm_backend: Literal["llama_cpp", "ollama", "openai"] = Field(
        "llama_cpp", description="runtime of the llm role: llama_cpp (embedded), ollama or openai")
    llm_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="models to serve; empty = smollm2-135m for llama_cpp, the server's models otherwise")
    ollama_url: str = Field("http://127.0.0.1:11434", description="base URL of the Ollama server")
    openai_url: str = Field("http://127.0.0.1:8000/v1", description="base URL of the OpenAI-compatible server")
    openai_api_key: str = Field("", description="bearer key for the OpenAI-compatible server (env only)")
    max_tokens_default: int = Field(256, ge=1, le=32768, description="max_tokens when a request leaves it unset")
    max_tokens_limit: int = Field(2048, ge=1, le=32768, description="largest max_tokens a request may ask for")
    llm_max_queued: int = Field(8, ge=0, le=1024, description="generations waiting per model before RESOURCE_EXHAUSTED")
    llm_threads: int = Field(0, ge=0, le=256, description="llama.cpp CPU threads; 0 = min(cores, 4)")
    llm_timeout_s: float = Field(120.0, gt=0, le=3600, description="HTTP backends: seconds to wait for the server")
    first_token_timeout_s: float = Field(
        20.0, gt=0, le=3600,
        description="planner: seconds an llm node may go without sending a piece of a generation (the first "
                    "one included, queue wait included) before the planner abandons it (next llm node first)")

    # Browser tool (role `tools`, docs/browser.md)
    allow_private_urls: bool = Field(
        False, description="let the browser open loopback, private and link-local addresses (never cloud metadata)")

    # LLM response cache (role `cache`, docs/cache.md)
    cache_store: Literal["ray", "memory"] = Field(
        "ray", description="where cached responses live: ray (Ray's object store) or memory (no Ray)")
    cache_ttl_s: float = Field(3600.0, gt=0, le=30 * 86400, description="default time to live of an entry, seconds")
    cache_max_ttl_s: float = Field(30 * 86400.0, gt=0, le=365 * 86400,
                                   description="longest time to live a put or a peer's copy gets; longer is capped")
    cache_max_bytes: int = Field(256 * 1024 * 1024, ge=1024, le=1 << 40,
                                 description="byte budget of the cache, every stored byte counted (prompt, params, "
                                             "response, metadata); least recently used go beyond it")
    cache_max_entries: int = Field(100_000, ge=1, le=10_000_000,
                                   description="entry cap; least recently used go beyond it")
    cache_max_value_bytes: int = Field(1024 * 1024, ge=1, le=8 * 1024 * 1024,
                                       description="largest response one entry may hold, bytes")
    cache_namespaces: dict[str, NamespacePolicy] = Field(
        default_factory=dict, description="per-namespace defaults: ttl_s, max_age_s, semantic, min_similarity "
                                          "(TOML table or JSON in LLMLAB_CACHE_NAMESPACES)")
    semantic_cache: bool = Field(False, description="semantic lookups and stores for every query this node plans")
    semantic_min_similarity: float = Field(0.9, gt=0, le=1, description="default similarity threshold of a "
                                                                          "semantic hit (the guard applies too)")
    semantic_embed_threads: int = Field(0, ge=0, le=64, description="CPU threads of the semantic cache's embedding "
                                                                    "model; 0: the cores the load average leaves "
                                                                    "idle, per question (at most 4)")
    cache_hot_bytes: int = Field(32 * 1024 * 1024, ge=0, le=1 << 40,
                                 description="ray store: in-process copies of the hottest values, bytes (0: none)")
    cache_max_prompt_bytes: int = Field(1024 * 1024, ge=1, le=8 * 1024 * 1024,
                                        description="largest prompt one entry may hold, UTF-8 bytes")
    cache_max_params_bytes: int = Field(256 * 1024, ge=1, le=1024 * 1024,
                                        description="largest params (tools_json, system_prompt, stop) of one entry, "
                                                    "bytes of canonical JSON")

    # Tool execution (role `tools`, docs/tools.md)
    builtin_tools: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["all"],
        description="built-in tools to load: comma-separated names of calculator,web_search,browser; all; none")
    tool_plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="extra tool modules to load: 'pkg.mod:ToolClass' or 'pkg.mod'")
    search_backend: Literal["", "local", "searxng"] = Field(
        "", description="web_search backend; empty = searxng when search_url is set, else local")
    search_url: str = Field("", description="base URL of a SearxNG instance (LLMLAB_SEARCH_URL)")
    search_db: Path | None = Field(None, description="local search index file; default $LLMLAB_HOME/search.db")
    search_timeout_s: float = Field(5.0, gt=0, le=120, description="SearxNG: seconds per HTTP attempt")
    search_retries: int = Field(2, ge=0, le=10, description="SearxNG: retries after a timeout, 429 or 5xx")

    # Planner (role `planner`)
    planner_tasks_max_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024, le=1 << 34,
                                         description="bytes of finished and running tasks a planner keeps for "
                                                     "ListTasks/GetTask; the oldest go beyond it (and beyond 500)")

    # Replication of cache entries (role `replica`, docs/replication.md)
    replica_count: int = Field(2, ge=0, le=16, description="replicas per cache entry besides its primary (N)")
    replication_queue: int = Field(1024, ge=1, le=1_000_000,
                                   description="puts waiting to be replicated; beyond it they wait for the retry")
    replication_retry_s: float = Field(5.0, gt=0, le=3600,
                                       description="seconds between retries of entries short of N replicas")
    anti_entropy_s: float = Field(30.0, gt=0, le=86400,
                                  description="seconds between anti-entropy rounds (digest compare with each peer)")
    write_acks: str = Field("2", description="W: copies verified before a put returns, this node's included: "
                                             "1 (do not wait), 2 (default: primary + one replica) ... or all")

    # OpenAI-compatible HTTP API on the bridge's port (role `bridge`, docs/openai_api.md)
    api_keys_file: Path | None = Field(None, description="API key digests for /v1; default $LLMLAB_HOME/api_keys.json")
    api_max_body_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024,
                                    description="largest /v1 request body, bytes (413 beyond)")
    api_timeout_s: float = Field(300.0, gt=0, le=3600,
                                 description="seconds a /v1 request may take before 504 (the work is cancelled)")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: flags (init kwargs), then the TOML file, then the environment.
        path = os.environ.get("LLMLAB_CONFIG")
        return init_settings, _TomlSource(settings_cls, Path(path) if path else None), env_settings

    @field_validator("roles", "peers", "builtin_tools", "tool_plugins", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        """``a, b,c`` (a flag or an environment variable) is the list ``[a, b, c]``."""
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, value: list[str]) -> list[str]:
        unknown = [r for r in value if r not in ROLES]
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(unknown)}; choose from {', '.join(ROLES)}")
        if not value:
            raise ValueError("a node needs at least one role")
        return list(dict.fromkeys(value))

    @field_validator("bridge_allowed_origins", "bridge_mobile_tools", mode="before")
    @classmethod
    def _split_bridge_lists(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        return value

    @field_validator("bridge_sync_namespaces", mode="before")
    @classmethod
    def _split_sync_namespaces(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [n.strip() for n in value.split(",")]
        if isinstance(value, list):
            value = ["" if n in ("default", "") else n for n in value]
        return value

    @field_validator("builtin_tools")
    @classmethod
    def _known_builtins(cls, value: list[str]) -> list[str]:
        known = ("calculator", "web_search", "browser")
        unknown = [t for t in value if t not in (*known, "all", "none")]
        if unknown:
            raise ValueError(f"unknown built-in tool(s) {', '.join(unknown)}; choose from {', '.join(known)}, "
                             "all or none")
        return list(dict.fromkeys(value))

    @field_validator("llm_models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [m.strip() for m in value.split(",") if m.strip()]
        return value

    @field_validator("write_acks", mode="before")
    @classmethod
    def _valid_write_acks(cls, value: Any) -> str:
        text = str(value).strip().lower()
        if text != "all" and not (text.isdigit() and 1 <= int(text) <= 17):
            raise ValueError(f"write_acks must be a number of copies from 1 to 17, or all; not {value!r}")
        return text

    @property
    def write_acks_count(self) -> int:
        """W as a number; 0 means all (the primary plus N replicas). Capped at N+1 by the replicator."""
        return 0 if self.write_acks == "all" else int(self.write_acks)

    @field_validator("peers")
    @classmethod
    def _valid_peers(cls, value: list[str]) -> list[str]:
        for peer in value:
            parse_address(peer)
        return value

    @property
    def effective_node_id(self) -> str:
        return self.node_id or self.name

    @property
    def node_state_dir(self) -> Path:
        """``state_dir``, else ``$LLMLAB_HOME/nodes/<node id>`` (``./.llmlab`` without LLMLAB_HOME)."""
        if self.state_dir is not None:
            return self.state_dir
        return Path(os.environ.get("LLMLAB_HOME") or ".llmlab") / "nodes" / self.effective_node_id

    def check(self) -> None:
        """Cross-field checks that pydantic field validators cannot express."""
        if not self.mesh_secret:
            raise ConfigError("no mesh secret: pass --secret or set LLMLAB_MESH_SECRET")
        if len(self.mesh_secret) < 8:
            raise ConfigError("the mesh secret must be at least 8 characters")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-ca (mTLS) needs --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key, self.tls_ca):
            if path is not None and not path.is_file():
                raise ConfigError(f"TLS file {path} does not exist")
        if self.cache_ttl_s > self.cache_max_ttl_s:
            raise ConfigError(f"--cache-ttl {self.cache_ttl_s:g} is above --cache-max-ttl {self.cache_max_ttl_s:g}")
        if self.max_tokens_default > self.max_tokens_limit:
            raise ConfigError(f"--max-tokens-default {self.max_tokens_default} is above "
                              f"--max-tokens-limit {self.max_tokens_limit}")


def parse_address(address: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` too), with an error a person can act on."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"peer address {address!r} is not HOST:PORT with a port 1-65535")
    return host.strip("[]"), int(port)

import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_KIND_UNSPECIFIED: _ClassVar[NodeKind]
    NODE_KIND_GRPC: _ClassVar[NodeKind]
    NODE_KIND_MOBILE: _ClassVar[NodeKind]

class PeerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PEER_STATE_UNSPECIFIED: _ClassVar[PeerState]
    PEER_STATE_ALIVE: _ClassVar[PeerState]
    PEER_STATE_SUSPECT: _ClassVar[PeerState]
    PEER_STATE_GONE: _ClassVar[PeerState]
    PEER_STATE_ONE_WAY: _ClassVar[PeerState]
NODE_KIND_UNSPECIFIED: NodeKind
NODE_KIND_GRPC: NodeKind
NODE_KIND_MOBILE: NodeKind
PEER_STATE_UNSPECIFIED: PeerState
PEER_STATE_ALIVE: PeerState
PEER_STATE_SUSPECT: PeerState
PEER_STATE_GONE: PeerState
PEER_STATE_ONE_WAY: PeerState

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "name", "address", "roles", "tools", "models", "version", "mesh_id", "kind", "via_node_id", "http_url", "started_unix_ms", "addresses")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESH_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VIA_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HTTP_URL_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    address: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    tools: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedScalarFieldContainer[str]
    version: str
    mesh_id: str
    kind: NodeKind
    via_node_id: str
    http_url: str
    started_unix_ms: int
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., address: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., tools: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., mesh_id: _Optional[str] = ..., kind: _Optional[_Union[NodeKind, str]] = ..., via_node_id: _Optional[str] = ..., http_url: _Optional[str] = ..., started_unix_ms: _Optional[int] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class NodeLoad(_message.Message):
    __slots__ = ("in_flight", "tools_running", "generations_running", "tokens_per_second")
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    TOOLS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    GENERATIONS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    in_flight: int
    tools_running: int
    generations_running: int
    tokens_per_second: float
    def __init__(self, in_flight: _Optional[int] = ..., tools_running: _Optional[int] = ..., generations_running: _Optional[int] = ..., tokens_per_second: _Optional[float] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ("info", "state", "last_seen", "source", "load", "cache_stats", "detail")
    INFO_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    CACHE_STATS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    info: NodeInfo
    state: PeerState
    last_seen: _timestamp_pb2.Timestamp
    source: str
    load: NodeLoad
    cache_stats: CacheStatistics
    detail: str
    def __init__(self, info: _Optional[_Union[NodeInfo, _Mapping]] = ..., state: _Optional[_Union[PeerState, str]] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., load: _Optional[_Union[NodeLoad, _Mapping]] = ..., cache_stats: _Optional[_Union[CacheStatistics, _Mapping]] = ..., detail: _Optional[str] = ...) -> None: ...

class GenerationParams(_message.Message):
    __slots__ = ("temperature", "top_p", "max_tokens", "seed", "system_prompt", "stop", "tools_json")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    TOOLS_JSON_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    system_prompt: str
    stop: _containers.RepeatedScalarFieldContainer[str]
    tools_json: str
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_tokens: _Optional[int] = ..., seed: _Optional[int] = ..., system_prompt: _Optional[str] = ..., stop: _Optional[_Iterable[str]] = ..., tools_json: _Optional[str] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content", "tool_call_id", "tool_calls_json")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_JSON_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    tool_call_id: str
    tool_calls_json: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ..., tool_call_id: _Optional[str] = ..., tool_calls_json: _Optional[str] = ...) -> None: ...

class CacheStatistics(_message.Message):
    __slots__ = ("hits", "misses", "hit_ratio", "puts", "evictions", "expirations", "entries", "bytes", "max_bytes", "max_entries", "store", "replica_entries", "replication_shortfall")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    HIT_RATIO_FIELD_NUMBER: _ClassVar[int]
    PUTS_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPIRATIONS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_SHORTFALL_FIELD_NUMBER: _ClassVar[int]
    hits: int
    misses: int
    hit_ratio: float
    puts: int
    evictions: int
    expirations: int
    entries: int
    bytes: int
    max_bytes: int
    max_entries: int
    store: str
    replica_entries: int
    replication_shortfall: int
    def __init__(self, hits: _Optional[int] = ..., misses: _Optional[int] = ..., hit_ratio: _Optional[float] = ..., puts: _Optional[int] = ..., evictions: _Optional[int] = ..., expirations: _Optional[int] = ..., entries: _Optional[int] = ..., bytes: _Optional[int] = ..., max_bytes: _Optional[int] = ..., max_entries: _Optional[int] = ..., store: _Optional[str] = ..., replica_entries: _Optional[int] = ..., replication_shortfall: _Optional[int] = ...) -> None: ...

class CacheEntry(_message.Message):
    __slots__ = ("key", "model", "prompt", "response", "created_unix_ms", "expires_unix_ms", "hits", "size_bytes", "checksum", "critical", "primary_node_id", "params", "namespace", "writer", "usage", "semantic_text", "context_hash", "embedding")
    KEY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_HASH_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    key: str
    model: str
    prompt: str
    response: str
    created_unix_ms: int
    expires_unix_ms: int
    hits: int
    size_bytes: int
    checksum: str
    critical: bool
    primary_node_id: str
    params: GenerationParams
    namespace: str
    writer: str
    usage: CachedUsage
    semantic_text: str
    context_hash: str
    embedding: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, key: _Optional[str] = ..., model: _Optional[str] = ..., prompt: _Optional[str] = ..., response: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., expires_unix_ms: _Optional[int] = ..., hits: _Optional[int] = ..., size_bytes: _Optional[int] = ..., checksum: _Optional[str] = ..., critical: _Optional[bool] = ..., primary_node_id: _Optional[str] = ..., params: _Optional[_Union[GenerationParams, _Mapping]] = ..., namespace: _Optional[str] = ..., writer: _Optional[str] = ..., usage: _Optional[_Union[CachedUsage, _Mapping]] = ..., semantic_text: _Optional[str] = ..., context_hash: _Optional[str] = ..., embedding: _Optional[_Iterable[float]] = ...) -> None: ...

class CachedUsage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "finish_reason")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., finish_reason: _Optional[str] = ...) -> None: ...

class ToolError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Attachment(_message.Message):
    __slots__ = ("name", "mime_type", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    mime_type: str
    data: bytes
    def __init__(self, name: _Optional[str] = ..., mime_type: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class ToolSpec(_message.Message):
    __slots__ = ("name", "description", "capabilities", "input_schema", "output_schema", "timeout_ms", "node_ids", "node_names", "usage")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    NODE_NAMES_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    input_schema: _struct_pb2.Struct
    output_schema: _struct_pb2.Struct
    timeout_ms: int
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    node_names: _containers.RepeatedScalarFieldContainer[str]
    usage: _containers.RepeatedCompositeFieldContainer[ToolUsage]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., input_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., output_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timeout_ms: _Optional[int] = ..., node_ids: _Optional[_Iterable[str]] = ..., node_names: _Optional[_Iterable[str]] = ..., usage: _Optional[_Iterable[_Union[ToolUsage, _Mapping]]] = ...) -> None: ...

class ToolUsage(_message.Message):
    __slots__ = ("node_id", "calls", "errors", "total_ms", "p50_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    calls: int
    errors: int
    total_ms: float
    p50_ms: float
    def __init__(self, node_id: _Optional[str] = ..., calls: _Optional[int] = ..., errors: _Optional[int] = ..., total_ms: _Optional[float] = ..., p50_ms: _Optional[float] = ...) -> None: ...

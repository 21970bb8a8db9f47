from llmlab_grpc.proto.llmlab.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CacheLookup(_message.Message):
    __slots__ = ("prompt", "model", "params", "namespace", "semantic_text", "context_hash")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_HASH_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    model: str
    params: _common_pb2.GenerationParams
    namespace: str
    semantic_text: str
    context_hash: str
    def __init__(self, prompt: _Optional[str] = ..., model: _Optional[str] = ..., params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ..., namespace: _Optional[str] = ..., semantic_text: _Optional[str] = ..., context_hash: _Optional[str] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("key", "lookup", "read_through", "max_age_ms", "semantic", "min_similarity", "candidates")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_FIELD_NUMBER: _ClassVar[int]
    READ_THROUGH_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    key: str
    lookup: CacheLookup
    read_through: bool
    max_age_ms: int
    semantic: bool
    min_similarity: float
    candidates: int
    def __init__(self, key: _Optional[str] = ..., lookup: _Optional[_Union[CacheLookup, _Mapping]] = ..., read_through: _Optional[bool] = ..., max_age_ms: _Optional[int] = ..., semantic: _Optional[bool] = ..., min_similarity: _Optional[float] = ..., candidates: _Optional[int] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("found", "entry", "source_node_id", "match", "similarity", "candidates")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    found: bool
    entry: _common_pb2.CacheEntry
    source_node_id: str
    match: str
    similarity: float
    candidates: _containers.RepeatedCompositeFieldContainer[SemanticCandidate]
    def __init__(self, found: _Optional[bool] = ..., entry: _Optional[_Union[_common_pb2.CacheEntry, _Mapping]] = ..., source_node_id: _Optional[str] = ..., match: _Optional[str] = ..., similarity: _Optional[float] = ..., candidates: _Optional[_Iterable[_Union[SemanticCandidate, _Mapping]]] = ...) -> None: ...

class SemanticCandidate(_message.Message):
    __slots__ = ("key", "semantic_text", "similarity", "accepted", "refused_because")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_TEXT_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_BECAUSE_FIELD_NUMBER: _ClassVar[int]
    key: str
    semantic_text: str
    similarity: float
    accepted: bool
    refused_because: str
    def __init__(self, key: _Optional[str] = ..., semantic_text: _Optional[str] = ..., similarity: _Optional[float] = ..., accepted: _Optional[bool] = ..., refused_because: _Optional[str] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("lookup", "response", "ttl_ms", "critical", "semantic", "writer", "usage")
    LOOKUP_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    lookup: CacheLookup
    response: str
    ttl_ms: int
    critical: bool
    semantic: bool
    writer: str
    usage: _common_pb2.CachedUsage
    def __init__(self, lookup: _Optional[_Union[CacheLookup, _Mapping]] = ..., response: _Optional[str] = ..., ttl_ms: _Optional[int] = ..., critical: _Optional[bool] = ..., semantic: _Optional[bool] = ..., writer: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.CachedUsage, _Mapping]] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("key", "entry", "copies", "copies_target", "write_acks")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    COPIES_TARGET_FIELD_NUMBER: _ClassVar[int]
    WRITE_ACKS_FIELD_NUMBER: _ClassVar[int]
    key: str
    entry: _common_pb2.CacheEntry
    copies: int
    copies_target: int
    write_acks: int
    def __init__(self, key: _Optional[str] = ..., entry: _Optional[_Union[_common_pb2.CacheEntry, _Mapping]] = ..., copies: _Optional[int] = ..., copies_target: _Optional[int] = ..., write_acks: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("key", "lookup")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_FIELD_NUMBER: _ClassVar[int]
    key: str
    lookup: CacheLookup
    def __init__(self, key: _Optional[str] = ..., lookup: _Optional[_Union[CacheLookup, _Mapping]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: _common_pb2.CacheStatistics
    def __init__(self, stats: _Optional[_Union[_common_pb2.CacheStatistics, _Mapping]] = ...) -> None: ...

class ClearRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClearResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

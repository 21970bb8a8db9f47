from llmlab_grpc.proto.llmlab.v1 import cache_pb2 as _cache_pb2
from llmlab_grpc.proto.llmlab.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tombstone(_message.Message):
    __slots__ = ("key", "deleted_unix_ms", "expires_unix_ms", "primary_node_id")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DELETED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    key: str
    deleted_unix_ms: int
    expires_unix_ms: int
    primary_node_id: str
    def __init__(self, key: _Optional[str] = ..., deleted_unix_ms: _Optional[int] = ..., expires_unix_ms: _Optional[int] = ..., primary_node_id: _Optional[str] = ...) -> None: ...

class DigestItem(_message.Message):
    __slots__ = ("key", "expires_unix_ms", "version", "tombstone", "checksum")
    KEY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    key: str
    expires_unix_ms: int
    version: int
    tombstone: bool
    checksum: str
    def __init__(self, key: _Optional[str] = ..., expires_unix_ms: _Optional[int] = ..., version: _Optional[int] = ..., tombstone: _Optional[bool] = ..., checksum: _Optional[str] = ...) -> None: ...

class DigestRequest(_message.Message):
    __slots__ = ("sender_node_id", "buckets", "members")
    SENDER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    sender_node_id: str
    buckets: _containers.RepeatedScalarFieldContainer[bytes]
    members: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sender_node_id: _Optional[str] = ..., buckets: _Optional[_Iterable[bytes]] = ..., members: _Optional[_Iterable[str]] = ...) -> None: ...

class DigestResponse(_message.Message):
    __slots__ = ("differing", "items", "truncated")
    DIFFERING_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    differing: _containers.RepeatedScalarFieldContainer[int]
    items: _containers.RepeatedCompositeFieldContainer[DigestItem]
    truncated: bool
    def __init__(self, differing: _Optional[_Iterable[int]] = ..., items: _Optional[_Iterable[_Union[DigestItem, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class StoreRequest(_message.Message):
    __slots__ = ("entry", "sender_node_id", "hint_for_node_id")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    SENDER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HINT_FOR_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    entry: _common_pb2.CacheEntry
    sender_node_id: str
    hint_for_node_id: str
    def __init__(self, entry: _Optional[_Union[_common_pb2.CacheEntry, _Mapping]] = ..., sender_node_id: _Optional[str] = ..., hint_for_node_id: _Optional[str] = ...) -> None: ...

class StoreResponse(_message.Message):
    __slots__ = ("accepted", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class FetchResponse(_message.Message):
    __slots__ = ("found", "entry")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    found: bool
    entry: _common_pb2.CacheEntry
    def __init__(self, found: _Optional[bool] = ..., entry: _Optional[_Union[_common_pb2.CacheEntry, _Mapping]] = ...) -> None: ...

class LocateRequest(_message.Message):
    __slots__ = ("key", "prompt", "model", "params", "namespace")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    key: str
    prompt: str
    model: str
    params: _common_pb2.GenerationParams
    namespace: str
    def __init__(self, key: _Optional[str] = ..., prompt: _Optional[str] = ..., model: _Optional[str] = ..., params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ..., namespace: _Optional[str] = ...) -> None: ...

class NodeRef(_message.Message):
    __slots__ = ("node_id", "name", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    address: str
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class LocateResponse(_message.Message):
    __slots__ = ("key", "primary", "replicas", "placement")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    key: str
    primary: NodeRef
    replicas: _containers.RepeatedCompositeFieldContainer[NodeRef]
    placement: _containers.RepeatedCompositeFieldContainer[NodeRef]
    def __init__(self, key: _Optional[str] = ..., primary: _Optional[_Union[NodeRef, _Mapping]] = ..., replicas: _Optional[_Iterable[_Union[NodeRef, _Mapping]]] = ..., placement: _Optional[_Iterable[_Union[NodeRef, _Mapping]]] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("sender_node_id", "entries", "tombstones")
    SENDER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONES_FIELD_NUMBER: _ClassVar[int]
    sender_node_id: str
    entries: _containers.RepeatedCompositeFieldContainer[_common_pb2.CacheEntry]
    tombstones: _containers.RepeatedCompositeFieldContainer[Tombstone]
    def __init__(self, sender_node_id: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[_common_pb2.CacheEntry, _Mapping]]] = ..., tombstones: _Optional[_Iterable[_Union[Tombstone, _Mapping]]] = ...) -> None: ...

class SyncResponse(_message.Message):
    __slots__ = ("stored", "rejected", "last_key")
    STORED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_KEY_FIELD_NUMBER: _ClassVar[int]
    stored: int
    rejected: int
    last_key: str
    def __init__(self, stored: _Optional[int] = ..., rejected: _Optional[int] = ..., last_key: _Optional[str] = ...) -> None: ...

class DropRequest(_message.Message):
    __slots__ = ("keys", "sender_node_id", "tombstones")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SENDER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONES_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    sender_node_id: str
    tombstones: _containers.RepeatedCompositeFieldContainer[Tombstone]
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., sender_node_id: _Optional[str] = ..., tombstones: _Optional[_Iterable[_Union[Tombstone, _Mapping]]] = ...) -> None: ...

class DropResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: int
    def __init__(self, dropped: _Optional[int] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("sender_node_id", "lookup", "vector", "min_similarity", "max_age_ms")
    SENDER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    sender_node_id: str
    lookup: _cache_pb2.CacheLookup
    vector: bytes
    min_similarity: float
    max_age_ms: int
    def __init__(self, sender_node_id: _Optional[str] = ..., lookup: _Optional[_Union[_cache_pb2.CacheLookup, _Mapping]] = ..., vector: _Optional[bytes] = ..., min_similarity: _Optional[float] = ..., max_age_ms: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("found", "entry", "similarity")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    found: bool
    entry: _common_pb2.CacheEntry
    similarity: float
    def __init__(self, found: _Optional[bool] = ..., entry: _Optional[_Union[_common_pb2.CacheEntry, _Mapping]] = ..., similarity: _Optional[float] = ...) -> None: ...

from llmlab_grpc.proto.llmlab.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("info", "load", "cache_stats", "now_unix_ms", "ray")
    INFO_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    CACHE_STATS_FIELD_NUMBER: _ClassVar[int]
    NOW_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RAY_FIELD_NUMBER: _ClassVar[int]
    info: _common_pb2.NodeInfo
    load: _common_pb2.NodeLoad
    cache_stats: _common_pb2.CacheStatistics
    now_unix_ms: int
    ray: RayAttachment
    def __init__(self, info: _Optional[_Union[_common_pb2.NodeInfo, _Mapping]] = ..., load: _Optional[_Union[_common_pb2.NodeLoad, _Mapping]] = ..., cache_stats: _Optional[_Union[_common_pb2.CacheStatistics, _Mapping]] = ..., now_unix_ms: _Optional[int] = ..., ray: _Optional[_Union[RayAttachment, _Mapping]] = ...) -> None: ...

class RayAttachment(_message.Message):
    __slots__ = ("cluster_address", "ray_node_id", "ray_node_ip", "on_this_machine", "own_cluster")
    CLUSTER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RAY_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RAY_NODE_IP_FIELD_NUMBER: _ClassVar[int]
    ON_THIS_MACHINE_FIELD_NUMBER: _ClassVar[int]
    OWN_CLUSTER_FIELD_NUMBER: _ClassVar[int]
    cluster_address: str
    ray_node_id: str
    ray_node_ip: str
    on_this_machine: bool
    own_cluster: bool
    def __init__(self, cluster_address: _Optional[str] = ..., ray_node_id: _Optional[str] = ..., ray_node_ip: _Optional[str] = ..., on_this_machine: _Optional[bool] = ..., own_cluster: _Optional[bool] = ...) -> None: ...

class ListPeersRequest(_message.Message):
    __slots__ = ("include_gone",)
    INCLUDE_GONE_FIELD_NUMBER: _ClassVar[int]
    include_gone: bool
    def __init__(self, include_gone: _Optional[bool] = ...) -> None: ...

class ListPeersResponse(_message.Message):
    __slots__ = ("peers", "self")
    PEERS_FIELD_NUMBER: _ClassVar[int]
    SELF_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[_common_pb2.Peer]
    self: _common_pb2.NodeInfo
    def __init__(self_, peers: _Optional[_Iterable[_Union[_common_pb2.Peer, _Mapping]]] = ..., self: _Optional[_Union[_common_pb2.NodeInfo, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("sender", "sent_unix_ms", "load", "cache_stats")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    CACHE_STATS_FIELD_NUMBER: _ClassVar[int]
    sender: _common_pb2.NodeInfo
    sent_unix_ms: int
    load: _common_pb2.NodeLoad
    cache_stats: _common_pb2.CacheStatistics
    def __init__(self, sender: _Optional[_Union[_common_pb2.NodeInfo, _Mapping]] = ..., sent_unix_ms: _Optional[int] = ..., load: _Optional[_Union[_common_pb2.NodeLoad, _Mapping]] = ..., cache_stats: _Optional[_Union[_common_pb2.CacheStatistics, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("receiver", "load", "known_peers", "sender_unreachable", "sender_addresses_tried", "sender_unreachable_error", "id_conflict")
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    KNOWN_PEERS_FIELD_NUMBER: _ClassVar[int]
    SENDER_UNREACHABLE_FIELD_NUMBER: _ClassVar[int]
    SENDER_ADDRESSES_TRIED_FIELD_NUMBER: _ClassVar[int]
    SENDER_UNREACHABLE_ERROR_FIELD_NUMBER: _ClassVar[int]
    ID_CONFLICT_FIELD_NUMBER: _ClassVar[int]
    receiver: _common_pb2.NodeInfo
    load: _common_pb2.NodeLoad
    known_peers: _containers.RepeatedCompositeFieldContainer[_common_pb2.NodeInfo]
    sender_unreachable: bool
    sender_addresses_tried: _containers.RepeatedScalarFieldContainer[str]
    sender_unreachable_error: str
    id_conflict: _common_pb2.NodeInfo
    def __init__(self, receiver: _Optional[_Union[_common_pb2.NodeInfo, _Mapping]] = ..., load: _Optional[_Union[_common_pb2.NodeLoad, _Mapping]] = ..., known_peers: _Optional[_Iterable[_Union[_common_pb2.NodeInfo, _Mapping]]] = ..., sender_unreachable: _Optional[bool] = ..., sender_addresses_tried: _Optional[_Iterable[str]] = ..., sender_unreachable_error: _Optional[str] = ..., id_conflict: _Optional[_Union[_common_pb2.NodeInfo, _Mapping]] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("node_id", "reason", "started_unix_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    started_unix_ms: int
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ..., started_unix_ms: _Optional[int] = ...) -> None: ...

class LeaveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetMetricsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetMetricsResponse(_message.Message):
    __slots__ = ("text", "node_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    node_id: str
    def __init__(self, text: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

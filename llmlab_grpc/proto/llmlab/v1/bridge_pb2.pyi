from google.protobuf import struct_pb2 as _struct_pb2
from llmlab_grpc.proto.llmlab.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BridgeEnvelope(_message.Message):
    __slots__ = ("id", "hello", "welcome", "task_assignment", "task_result", "cache_sync", "heartbeat", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    TASK_ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    TASK_RESULT_FIELD_NUMBER: _ClassVar[int]
    CACHE_SYNC_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    hello: Hello
    welcome: Welcome
    task_assignment: TaskAssignment
    task_result: TaskResult
    cache_sync: CacheSync
    heartbeat: Heartbeat
    error: BridgeError
    def __init__(self, id: _Optional[str] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., task_assignment: _Optional[_Union[TaskAssignment, _Mapping]] = ..., task_result: _Optional[_Union[TaskResult, _Mapping]] = ..., cache_sync: _Optional[_Union[CacheSync, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., error: _Optional[_Union[BridgeError, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("pairing_token", "name", "tools", "user_agent", "resume_node_id", "cache_replica")
    PAIRING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    RESUME_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_REPLICA_FIELD_NUMBER: _ClassVar[int]
    pairing_token: str
    name: str
    tools: _containers.RepeatedCompositeFieldContainer[_common_pb2.ToolSpec]
    user_agent: str
    resume_node_id: str
    cache_replica: bool
    def __init__(self, pairing_token: _Optional[str] = ..., name: _Optional[str] = ..., tools: _Optional[_Iterable[_Union[_common_pb2.ToolSpec, _Mapping]]] = ..., user_agent: _Optional[str] = ..., resume_node_id: _Optional[str] = ..., cache_replica: _Optional[bool] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("node_id", "bridge_node_id", "heartbeat_interval_ms", "max_message_bytes", "session_token", "rate_limit_per_s")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BRIDGE_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_PER_S_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    bridge_node_id: str
    heartbeat_interval_ms: int
    max_message_bytes: int
    session_token: str
    rate_limit_per_s: int
    def __init__(self, node_id: _Optional[str] = ..., bridge_node_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., session_token: _Optional[str] = ..., rate_limit_per_s: _Optional[int] = ...) -> None: ...

class TaskAssignment(_message.Message):
    __slots__ = ("task_id", "tool", "arguments", "deadline_unix_ms")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    tool: str
    arguments: _struct_pb2.Struct
    deadline_unix_ms: int
    def __init__(self, task_id: _Optional[str] = ..., tool: _Optional[str] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., deadline_unix_ms: _Optional[int] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "result", "error", "duration_ms")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    result: _struct_pb2.Struct
    error: _common_pb2.ToolError
    duration_ms: float
    def __init__(self, task_id: _Optional[str] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ToolError, _Mapping]] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class CacheSync(_message.Message):
    __slots__ = ("entries", "deleted_keys")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    DELETED_KEYS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_common_pb2.CacheEntry]
    deleted_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entries: _Optional[_Iterable[_Union[_common_pb2.CacheEntry, _Mapping]]] = ..., deleted_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent_unix_ms", "busy", "cache_entries", "current_task")
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    CACHE_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CURRENT_TASK_FIELD_NUMBER: _ClassVar[int]
    sent_unix_ms: int
    busy: int
    cache_entries: int
    current_task: str
    def __init__(self, sent_unix_ms: _Optional[int] = ..., busy: _Optional[int] = ..., cache_entries: _Optional[int] = ..., current_task: _Optional[str] = ...) -> None: ...

class BridgeError(_message.Message):
    __slots__ = ("code", "message", "ref_id")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REF_ID_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    ref_id: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., ref_id: _Optional[str] = ...) -> None: ...

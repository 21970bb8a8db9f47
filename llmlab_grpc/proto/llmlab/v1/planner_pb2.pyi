import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from llmlab_grpc.proto.llmlab.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StepKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_KIND_UNSPECIFIED: _ClassVar[StepKind]
    STEP_KIND_TOOL: _ClassVar[StepKind]
    STEP_KIND_LLM: _ClassVar[StepKind]

class CacheOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CACHE_OUTCOME_UNSPECIFIED: _ClassVar[CacheOutcome]
    CACHE_OUTCOME_NONE: _ClassVar[CacheOutcome]
    CACHE_OUTCOME_HIT: _ClassVar[CacheOutcome]
    CACHE_OUTCOME_MISS: _ClassVar[CacheOutcome]
    CACHE_OUTCOME_BYPASS: _ClassVar[CacheOutcome]
    CACHE_OUTCOME_SEMANTIC_HIT: _ClassVar[CacheOutcome]

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatus]
    TASK_STATUS_RUNNING: _ClassVar[TaskStatus]
    TASK_STATUS_SUCCEEDED: _ClassVar[TaskStatus]
    TASK_STATUS_FAILED: _ClassVar[TaskStatus]
STEP_KIND_UNSPECIFIED: StepKind
STEP_KIND_TOOL: StepKind
STEP_KIND_LLM: StepKind
CACHE_OUTCOME_UNSPECIFIED: CacheOutcome
CACHE_OUTCOME_NONE: CacheOutcome
CACHE_OUTCOME_HIT: CacheOutcome
CACHE_OUTCOME_MISS: CacheOutcome
CACHE_OUTCOME_BYPASS: CacheOutcome
CACHE_OUTCOME_SEMANTIC_HIT: CacheOutcome
TASK_STATUS_UNSPECIFIED: TaskStatus
TASK_STATUS_RUNNING: TaskStatus
TASK_STATUS_SUCCEEDED: TaskStatus
TASK_STATUS_FAILED: TaskStatus

class Query(_message.Message):
    __slots__ = ("text", "model", "params", "no_cache", "no_store", "cache_nondeterministic", "no_tools", "history", "cache")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    NO_STORE_FIELD_NUMBER: _ClassVar[int]
    CACHE_NONDETERMINISTIC_FIELD_NUMBER: _ClassVar[int]
    NO_TOOLS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    text: str
    model: str
    params: _common_pb2.GenerationParams
    no_cache: bool
    no_store: bool
    cache_nondeterministic: bool
    no_tools: bool
    history: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChatMessage]
    cache: CacheControl
    def __init__(self, text: _Optional[str] = ..., model: _Optional[str] = ..., params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ..., no_cache: _Optional[bool] = ..., no_store: _Optional[bool] = ..., cache_nondeterministic: _Optional[bool] = ..., no_tools: _Optional[bool] = ..., history: _Optional[_Iterable[_Union[_common_pb2.ChatMessage, _Mapping]]] = ..., cache: _Optional[_Union[CacheControl, _Mapping]] = ...) -> None: ...

class CacheControl(_message.Message):
    __slots__ = ("namespace", "ttl_s", "max_age_s", "semantic", "min_similarity", "writer")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_S_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    ttl_s: float
    max_age_s: float
    semantic: bool
    min_similarity: float
    writer: str
    def __init__(self, namespace: _Optional[str] = ..., ttl_s: _Optional[float] = ..., max_age_s: _Optional[float] = ..., semantic: _Optional[bool] = ..., min_similarity: _Optional[float] = ..., writer: _Optional[str] = ...) -> None: ...

class AskRequest(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: Query
    def __init__(self, query: _Optional[_Union[Query, _Mapping]] = ...) -> None: ...

class AskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class AskStreamRequest(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: Query
    def __init__(self, query: _Optional[_Union[Query, _Mapping]] = ...) -> None: ...

class AskStreamResponse(_message.Message):
    __slots__ = ("task_id", "plan_made", "step_started", "tool_result", "token", "step_done", "final")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_MADE_FIELD_NUMBER: _ClassVar[int]
    STEP_STARTED_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    STEP_DONE_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    plan_made: PlanMade
    step_started: StepStarted
    tool_result: ToolResult
    token: TokenDelta
    step_done: Step
    final: Task
    def __init__(self, task_id: _Optional[str] = ..., plan_made: _Optional[_Union[PlanMade, _Mapping]] = ..., step_started: _Optional[_Union[StepStarted, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResult, _Mapping]] = ..., token: _Optional[_Union[TokenDelta, _Mapping]] = ..., step_done: _Optional[_Union[Step, _Mapping]] = ..., final: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class PlanMade(_message.Message):
    __slots__ = ("steps",)
    STEPS_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    def __init__(self, steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ...) -> None: ...

class StepStarted(_message.Message):
    __slots__ = ("step_id", "node_id", "cache", "cache_match")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    CACHE_MATCH_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    node_id: str
    cache: CacheOutcome
    cache_match: CacheMatch
    def __init__(self, step_id: _Optional[str] = ..., node_id: _Optional[str] = ..., cache: _Optional[_Union[CacheOutcome, str]] = ..., cache_match: _Optional[_Union[CacheMatch, _Mapping]] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("step_id", "result")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    result: _struct_pb2.Struct
    def __init__(self, step_id: _Optional[str] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class TokenDelta(_message.Message):
    __slots__ = ("step_id", "text")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    text: str
    def __init__(self, step_id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("step_id", "kind", "name", "node_id", "node_name", "reason", "cache", "started_at", "duration_ms", "error", "depends_on", "arguments", "output", "failed_over", "usage", "cache_match", "cache_copies", "cache_copies_target")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    FAILED_OVER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    CACHE_MATCH_FIELD_NUMBER: _ClassVar[int]
    CACHE_COPIES_FIELD_NUMBER: _ClassVar[int]
    CACHE_COPIES_TARGET_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    kind: StepKind
    name: str
    node_id: str
    node_name: str
    reason: str
    cache: CacheOutcome
    started_at: _timestamp_pb2.Timestamp
    duration_ms: float
    error: str
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    arguments: _struct_pb2.Struct
    output: str
    failed_over: _containers.RepeatedScalarFieldContainer[str]
    usage: StepUsage
    cache_match: CacheMatch
    cache_copies: int
    cache_copies_target: int
    def __init__(self, step_id: _Optional[str] = ..., kind: _Optional[_Union[StepKind, str]] = ..., name: _Optional[str] = ..., node_id: _Optional[str] = ..., node_name: _Optional[str] = ..., reason: _Optional[str] = ..., cache: _Optional[_Union[CacheOutcome, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_ms: _Optional[float] = ..., error: _Optional[str] = ..., depends_on: _Optional[_Iterable[str]] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., output: _Optional[str] = ..., failed_over: _Optional[_Iterable[str]] = ..., usage: _Optional[_Union[StepUsage, _Mapping]] = ..., cache_match: _Optional[_Union[CacheMatch, _Mapping]] = ..., cache_copies: _Optional[int] = ..., cache_copies_target: _Optional[int] = ...) -> None: ...

class CacheMatch(_message.Message):
    __slots__ = ("key", "matched_prompt", "similarity", "namespace")
    KEY_FIELD_NUMBER: _ClassVar[int]
    MATCHED_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    key: str
    matched_prompt: str
    similarity: float
    namespace: str
    def __init__(self, key: _Optional[str] = ..., matched_prompt: _Optional[str] = ..., similarity: _Optional[float] = ..., namespace: _Optional[str] = ...) -> None: ...

class StepUsage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "finish_reason", "tool_calls_json")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_JSON_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    tool_calls_json: str
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., finish_reason: _Optional[str] = ..., tool_calls_json: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "query", "status", "answer", "steps", "created_at", "total_ms", "planner_node_id", "error", "query_sha256", "query_truncated", "trace_truncated")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    PLANNER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    QUERY_SHA256_FIELD_NUMBER: _ClassVar[int]
    QUERY_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TRACE_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    query: Query
    status: TaskStatus
    answer: str
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    created_at: _timestamp_pb2.Timestamp
    total_ms: float
    planner_node_id: str
    error: str
    query_sha256: str
    query_truncated: bool
    trace_truncated: bool
    def __init__(self, task_id: _Optional[str] = ..., query: _Optional[_Union[Query, _Mapping]] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., answer: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., total_ms: _Optional[float] = ..., planner_node_id: _Optional[str] = ..., error: _Optional[str] = ..., query_sha256: _Optional[str] = ..., query_truncated: _Optional[bool] = ..., trace_truncated: _Optional[bool] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("limit", "page_size", "page_token")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    limit: int
    page_size: int
    page_token: str
    def __init__(self, limit: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

import datetime

from . import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlanPutRequest(_message.Message):
    __slots__ = ("k", "m", "count", "catalog", "size", "replace")
    K_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    k: int
    m: int
    count: int
    catalog: str
    size: int
    replace: bool
    def __init__(self, k: _Optional[int] = ..., m: _Optional[int] = ..., count: _Optional[int] = ..., catalog: _Optional[str] = ..., size: _Optional[int] = ..., replace: _Optional[bool] = ...) -> None: ...

class PlannedKey(_message.Message):
    __slots__ = ("key", "plan_ticket", "expires", "chunk_ticket", "expires_at")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PLAN_TICKET_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TICKET_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    key: str
    plan_ticket: str
    expires: float
    chunk_ticket: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, key: _Optional[str] = ..., plan_ticket: _Optional[str] = ..., expires: _Optional[float] = ..., chunk_ticket: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PlanPutResponse(_message.Message):
    __slots__ = ("plans", "policy", "containers", "inline_max_bytes")
    PLANS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    INLINE_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[PlannedKey]
    policy: _common_pb2.ECPolicy
    containers: _containers.RepeatedCompositeFieldContainer[_common_pb2.ContainerInfo]
    inline_max_bytes: int
    def __init__(self, plans: _Optional[_Iterable[_Union[PlannedKey, _Mapping]]] = ..., policy: _Optional[_Union[_common_pb2.ECPolicy, _Mapping]] = ..., containers: _Optional[_Iterable[_Union[_common_pb2.ContainerInfo, _Mapping]]] = ..., inline_max_bytes: _Optional[int] = ...) -> None: ...

class ObjectCommit(_message.Message):
    __slots__ = ("key", "catalog", "name", "size", "policy", "chunks", "plan_ticket", "inline", "data", "crc32", "ttl", "replace_key", "replace_name")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    PLAN_TICKET_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    REPLACE_KEY_FIELD_NUMBER: _ClassVar[int]
    REPLACE_NAME_FIELD_NUMBER: _ClassVar[int]
    key: str
    catalog: str
    name: str
    size: int
    policy: _common_pb2.ECPolicy
    chunks: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChunkLocation]
    plan_ticket: str
    inline: bool
    data: bytes
    crc32: int
    ttl: float
    replace_key: str
    replace_name: bool
    def __init__(self, key: _Optional[str] = ..., catalog: _Optional[str] = ..., name: _Optional[str] = ..., size: _Optional[int] = ..., policy: _Optional[_Union[_common_pb2.ECPolicy, _Mapping]] = ..., chunks: _Optional[_Iterable[_Union[_common_pb2.ChunkLocation, _Mapping]]] = ..., plan_ticket: _Optional[str] = ..., inline: _Optional[bool] = ..., data: _Optional[bytes] = ..., crc32: _Optional[int] = ..., ttl: _Optional[float] = ..., replace_key: _Optional[str] = ..., replace_name: _Optional[bool] = ...) -> None: ...

class CommitPutRequest(_message.Message):
    __slots__ = ("objects",)
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedCompositeFieldContainer[ObjectCommit]
    def __init__(self, objects: _Optional[_Iterable[_Union[ObjectCommit, _Mapping]]] = ...) -> None: ...

class CommitPutResponse(_message.Message):
    __slots__ = ("objects",)
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedCompositeFieldContainer[_common_pb2.ObjectInfo]
    def __init__(self, objects: _Optional[_Iterable[_Union[_common_pb2.ObjectInfo, _Mapping]]] = ...) -> None: ...

class LocateRequest(_message.Message):
    __slots__ = ("keys", "fresh")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    FRESH_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    fresh: bool
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., fresh: _Optional[bool] = ...) -> None: ...

class Location(_message.Message):
    __slots__ = ("object", "policy", "chunks", "code", "message", "chunk_ticket", "inline", "data", "crc32")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TICKET_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    object: _common_pb2.ObjectInfo
    policy: _common_pb2.ECPolicy
    chunks: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChunkLocation]
    code: int
    message: str
    chunk_ticket: str
    inline: bool
    data: bytes
    crc32: int
    def __init__(self, object: _Optional[_Union[_common_pb2.ObjectInfo, _Mapping]] = ..., policy: _Optional[_Union[_common_pb2.ECPolicy, _Mapping]] = ..., chunks: _Optional[_Iterable[_Union[_common_pb2.ChunkLocation, _Mapping]]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., chunk_ticket: _Optional[str] = ..., inline: _Optional[bool] = ..., data: _Optional[bytes] = ..., crc32: _Optional[int] = ...) -> None: ...

class LocateResponse(_message.Message):
    __slots__ = ("locations",)
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    locations: _containers.RepeatedCompositeFieldContainer[Location]
    def __init__(self, locations: _Optional[_Iterable[_Union[Location, _Mapping]]] = ...) -> None: ...

class RelayPutHeader(_message.Message):
    __slots__ = ("catalog", "name", "size", "k", "m", "planned", "ttl", "replace_key", "replace_name")
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    PLANNED_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    REPLACE_KEY_FIELD_NUMBER: _ClassVar[int]
    REPLACE_NAME_FIELD_NUMBER: _ClassVar[int]
    catalog: str
    name: str
    size: int
    k: int
    m: int
    planned: PlannedKey
    ttl: float
    replace_key: str
    replace_name: bool
    def __init__(self, catalog: _Optional[str] = ..., name: _Optional[str] = ..., size: _Optional[int] = ..., k: _Optional[int] = ..., m: _Optional[int] = ..., planned: _Optional[_Union[PlannedKey, _Mapping]] = ..., ttl: _Optional[float] = ..., replace_key: _Optional[str] = ..., replace_name: _Optional[bool] = ...) -> None: ...

class RelayPutRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: RelayPutHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[RelayPutHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class RelayPutResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class RelayGetRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class RelayGetResponse(_message.Message):
    __slots__ = ("object", "data")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    object: _common_pb2.ObjectInfo
    data: bytes
    def __init__(self, object: _Optional[_Union[_common_pb2.ObjectInfo, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ChunkId(_message.Message):
    __slots__ = ("key", "index")
    KEY_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    key: str
    index: int
    def __init__(self, key: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class ReportDamageRequest(_message.Message):
    __slots__ = ("container_id", "chunks")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    chunks: _containers.RepeatedCompositeFieldContainer[ChunkId]
    def __init__(self, container_id: _Optional[str] = ..., chunks: _Optional[_Iterable[_Union[ChunkId, _Mapping]]] = ...) -> None: ...

class ReportDamageResponse(_message.Message):
    __slots__ = ("marked",)
    MARKED_FIELD_NUMBER: _ClassVar[int]
    marked: int
    def __init__(self, marked: _Optional[int] = ...) -> None: ...

class CheckChunksRequest(_message.Message):
    __slots__ = ("container_id", "chunks")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    chunks: _containers.RepeatedCompositeFieldContainer[ChunkId]
    def __init__(self, container_id: _Optional[str] = ..., chunks: _Optional[_Iterable[_Union[ChunkId, _Mapping]]] = ...) -> None: ...

class CheckChunksResponse(_message.Message):
    __slots__ = ("referenced",)
    REFERENCED_FIELD_NUMBER: _ClassVar[int]
    referenced: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, referenced: _Optional[_Iterable[bool]] = ...) -> None: ...

class ListRecordedChunksRequest(_message.Message):
    __slots__ = ("container_id", "shard")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    shard: int
    def __init__(self, container_id: _Optional[str] = ..., shard: _Optional[int] = ...) -> None: ...

class ListRecordedChunksResponse(_message.Message):
    __slots__ = ("chunks",)
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[ChunkId]
    def __init__(self, chunks: _Optional[_Iterable[_Union[ChunkId, _Mapping]]] = ...) -> None: ...

class PlanRepairRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class PlanRepairResponse(_message.Message):
    __slots__ = ("location", "write_ticket", "containers", "revision", "draining")
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    WRITE_TICKET_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    location: Location
    write_ticket: str
    containers: _containers.RepeatedCompositeFieldContainer[_common_pb2.ContainerInfo]
    revision: int
    draining: _containers.RepeatedCompositeFieldContainer[_common_pb2.ContainerInfo]
    def __init__(self, location: _Optional[_Union[Location, _Mapping]] = ..., write_ticket: _Optional[str] = ..., containers: _Optional[_Iterable[_Union[_common_pb2.ContainerInfo, _Mapping]]] = ..., revision: _Optional[int] = ..., draining: _Optional[_Iterable[_Union[_common_pb2.ContainerInfo, _Mapping]]] = ...) -> None: ...

class CommitRepairRequest(_message.Message):
    __slots__ = ("key", "revision", "chunks")
    KEY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    key: str
    revision: int
    chunks: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChunkLocation]
    def __init__(self, key: _Optional[str] = ..., revision: _Optional[int] = ..., chunks: _Optional[_Iterable[_Union[_common_pb2.ChunkLocation, _Mapping]]] = ...) -> None: ...

class CommitRepairResponse(_message.Message):
    __slots__ = ("repaired",)
    REPAIRED_FIELD_NUMBER: _ClassVar[int]
    repaired: int
    def __init__(self, repaired: _Optional[int] = ...) -> None: ...

class ExistsRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class ExistsResponse(_message.Message):
    __slots__ = ("exists",)
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    def __init__(self, exists: _Optional[bool] = ...) -> None: ...

class EvictRequest(_message.Message):
    __slots__ = ("key", "keys")
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    key: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class EvictResult(_message.Message):
    __slots__ = ("existed", "code", "message")
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    code: int
    message: str
    def __init__(self, existed: _Optional[bool] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class EvictResponse(_message.Message):
    __slots__ = ("existed", "results")
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    results: _containers.RepeatedCompositeFieldContainer[EvictResult]
    def __init__(self, existed: _Optional[bool] = ..., results: _Optional[_Iterable[_Union[EvictResult, _Mapping]]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("catalog", "name")
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    catalog: str
    name: str
    def __init__(self, catalog: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CatalogRequest(_message.Message):
    __slots__ = ("catalog", "k", "m", "ttl")
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    catalog: str
    k: int
    m: int
    ttl: float
    def __init__(self, catalog: _Optional[str] = ..., k: _Optional[int] = ..., m: _Optional[int] = ..., ttl: _Optional[float] = ...) -> None: ...

class CatalogInfo(_message.Message):
    __slots__ = ("owner", "name", "created", "objects", "bytes", "shared_with", "k", "m", "created_at", "ttl")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SHARED_WITH_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    owner: str
    name: str
    created: float
    objects: int
    bytes: int
    shared_with: _containers.RepeatedScalarFieldContainer[str]
    k: int
    m: int
    created_at: _timestamp_pb2.Timestamp
    ttl: float
    def __init__(self, owner: _Optional[str] = ..., name: _Optional[str] = ..., created: _Optional[float] = ..., objects: _Optional[int] = ..., bytes: _Optional[int] = ..., shared_with: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., m: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[float] = ...) -> None: ...

class ListCatalogsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCatalogsResponse(_message.Message):
    __slots__ = ("catalogs",)
    CATALOGS_FIELD_NUMBER: _ClassVar[int]
    catalogs: _containers.RepeatedCompositeFieldContainer[CatalogInfo]
    def __init__(self, catalogs: _Optional[_Iterable[_Union[CatalogInfo, _Mapping]]] = ...) -> None: ...

class DeleteCatalogRequest(_message.Message):
    __slots__ = ("catalog", "force")
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    catalog: str
    force: bool
    def __init__(self, catalog: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteCatalogResponse(_message.Message):
    __slots__ = ("evicted",)
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    evicted: int
    def __init__(self, evicted: _Optional[int] = ...) -> None: ...

class ShareRequest(_message.Message):
    __slots__ = ("catalog", "with_user")
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    WITH_USER_FIELD_NUMBER: _ClassVar[int]
    catalog: str
    with_user: str
    def __init__(self, catalog: _Optional[str] = ..., with_user: _Optional[str] = ...) -> None: ...

class ShareResponse(_message.Message):
    __slots__ = ("changed",)
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    def __init__(self, changed: _Optional[bool] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("catalog", "start_revision")
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    catalog: str
    start_revision: int
    def __init__(self, catalog: _Optional[str] = ..., start_revision: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("kind", "key", "name", "size", "time", "revision", "user", "owner", "catalog", "time_at", "replaced")
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    TIME_AT_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    kind: str
    key: str
    name: str
    size: int
    time: float
    revision: int
    user: str
    owner: str
    catalog: str
    time_at: _timestamp_pb2.Timestamp
    replaced: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[str] = ..., key: _Optional[str] = ..., name: _Optional[str] = ..., size: _Optional[int] = ..., time: _Optional[float] = ..., revision: _Optional[int] = ..., user: _Optional[str] = ..., owner: _Optional[str] = ..., catalog: _Optional[str] = ..., time_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replaced: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("name", "container")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    name: str
    container: bool
    def __init__(self, name: _Optional[str] = ..., container: _Optional[bool] = ...) -> None: ...

class CreateUserResponse(_message.Message):
    __slots__ = ("name", "token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    token: str
    def __init__(self, name: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("name", "admin", "container", "usage")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    admin: bool
    container: bool
    usage: Usage
    def __init__(self, name: _Optional[str] = ..., admin: _Optional[bool] = ..., container: _Optional[bool] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("bytes", "objects", "quota_bytes", "quota_objects")
    BYTES_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    QUOTA_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUOTA_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    objects: int
    quota_bytes: int
    quota_objects: int
    def __init__(self, bytes: _Optional[int] = ..., objects: _Optional[int] = ..., quota_bytes: _Optional[int] = ..., quota_objects: _Optional[int] = ...) -> None: ...

class SetQuotaRequest(_message.Message):
    __slots__ = ("name", "bytes", "objects")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    bytes: int
    objects: int
    def __init__(self, name: _Optional[str] = ..., bytes: _Optional[int] = ..., objects: _Optional[int] = ...) -> None: ...

class UserInfo(_message.Message):
    __slots__ = ("name", "admin", "created", "container", "created_at", "usage")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    admin: bool
    created: float
    container: bool
    created_at: _timestamp_pb2.Timestamp
    usage: Usage
    def __init__(self, name: _Optional[str] = ..., admin: _Optional[bool] = ..., created: _Optional[float] = ..., container: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users",)
    USERS_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[UserInfo]
    def __init__(self, users: _Optional[_Iterable[_Union[UserInfo, _Mapping]]] = ...) -> None: ...

class RemoveUserRequest(_message.Message):
    __slots__ = ("name", "purge")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PURGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    purge: bool
    def __init__(self, name: _Optional[str] = ..., purge: _Optional[bool] = ...) -> None: ...

class RemoveUserResponse(_message.Message):
    __slots__ = ("tokens_revoked", "objects_evicted")
    TOKENS_REVOKED_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_EVICTED_FIELD_NUMBER: _ClassVar[int]
    tokens_revoked: int
    objects_evicted: int
    def __init__(self, tokens_revoked: _Optional[int] = ..., objects_evicted: _Optional[int] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("id", "user", "created", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    user: str
    created: float
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., user: _Optional[str] = ..., created: _Optional[float] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "info")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    token: str
    info: TokenInfo
    def __init__(self, token: _Optional[str] = ..., info: _Optional[_Union[TokenInfo, _Mapping]] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegisterContainerRequest(_message.Message):
    __slots__ = ("container",)
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    container: _common_pb2.ContainerInfo
    def __init__(self, container: _Optional[_Union[_common_pb2.ContainerInfo, _Mapping]] = ...) -> None: ...

class TicketKey(_message.Message):
    __slots__ = ("id", "public_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    public_key: bytes
    def __init__(self, id: _Optional[str] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class RegisterContainerResponse(_message.Message):
    __slots__ = ("lease_id", "ttl_seconds", "ticket_keys")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TICKET_KEYS_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    ttl_seconds: int
    ticket_keys: _containers.RepeatedCompositeFieldContainer[TicketKey]
    def __init__(self, lease_id: _Optional[int] = ..., ttl_seconds: _Optional[int] = ..., ticket_keys: _Optional[_Iterable[_Union[TicketKey, _Mapping]]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("container_id", "lease_id", "free_bytes", "capacity_bytes", "chunk_count", "last_scrub")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_SCRUB_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    lease_id: int
    free_bytes: int
    capacity_bytes: int
    chunk_count: int
    last_scrub: float
    def __init__(self, container_id: _Optional[str] = ..., lease_id: _Optional[int] = ..., free_bytes: _Optional[int] = ..., capacity_bytes: _Optional[int] = ..., chunk_count: _Optional[int] = ..., last_scrub: _Optional[float] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("alive", "ticket_keys")
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    TICKET_KEYS_FIELD_NUMBER: _ClassVar[int]
    alive: bool
    ticket_keys: _containers.RepeatedCompositeFieldContainer[TicketKey]
    def __init__(self, alive: _Optional[bool] = ..., ticket_keys: _Optional[_Iterable[_Union[TicketKey, _Mapping]]] = ...) -> None: ...

class RotateTicketKeyRequest(_message.Message):
    __slots__ = ("grace_seconds",)
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    grace_seconds: int
    def __init__(self, grace_seconds: _Optional[int] = ...) -> None: ...

class RotateTicketKeyResponse(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListContainersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListContainersResponse(_message.Message):
    __slots__ = ("containers",)
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    containers: _containers.RepeatedCompositeFieldContainer[_common_pb2.ContainerInfo]
    def __init__(self, containers: _Optional[_Iterable[_Union[_common_pb2.ContainerInfo, _Mapping]]] = ...) -> None: ...

class CreateS3KeyRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class CreateS3KeyResponse(_message.Message):
    __slots__ = ("access_key_id", "secret_access_key", "user")
    ACCESS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    access_key_id: str
    secret_access_key: str
    user: str
    def __init__(self, access_key_id: _Optional[str] = ..., secret_access_key: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class RevokeS3KeyRequest(_message.Message):
    __slots__ = ("access_key_id",)
    ACCESS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    access_key_id: str
    def __init__(self, access_key_id: _Optional[str] = ...) -> None: ...

class RevokeS3KeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetS3SigningKeyRequest(_message.Message):
    __slots__ = ("access_key_id", "date", "region", "service")
    ACCESS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    access_key_id: str
    date: str
    region: str
    service: str
    def __init__(self, access_key_id: _Optional[str] = ..., date: _Optional[str] = ..., region: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class GetS3SigningKeyResponse(_message.Message):
    __slots__ = ("signing_key", "user", "token")
    SIGNING_KEY_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    signing_key: bytes
    user: str
    token: str
    def __init__(self, signing_key: _Optional[bytes] = ..., user: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GatewayStatus(_message.Message):
    __slots__ = ("address", "started", "version")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    address: str
    started: float
    version: str
    def __init__(self, address: _Optional[str] = ..., started: _Optional[float] = ..., version: _Optional[str] = ...) -> None: ...

class EtcdMemberStatus(_message.Message):
    __slots__ = ("endpoint", "healthy", "leader", "db_size_bytes", "error")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    DB_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    healthy: bool
    leader: bool
    db_size_bytes: int
    error: str
    def __init__(self, endpoint: _Optional[str] = ..., healthy: _Optional[bool] = ..., leader: _Optional[bool] = ..., db_size_bytes: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class ContainerStatus(_message.Message):
    __slots__ = ("container", "up", "last_seen", "draining", "drain")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    container: _common_pb2.ContainerInfo
    up: bool
    last_seen: float
    draining: bool
    drain: MoveStatus
    def __init__(self, container: _Optional[_Union[_common_pb2.ContainerInfo, _Mapping]] = ..., up: _Optional[bool] = ..., last_seen: _Optional[float] = ..., draining: _Optional[bool] = ..., drain: _Optional[_Union[MoveStatus, _Mapping]] = ...) -> None: ...

class MoveStatus(_message.Message):
    __slots__ = ("container_id", "active", "running", "done", "gateway", "started", "finished", "updated", "objects_moved", "chunks_moved", "bytes_moved", "chunks_left", "bytes_left", "stuck_objects", "stuck_keys", "bandwidth", "error")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_MOVED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_MOVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_MOVED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_LEFT_FIELD_NUMBER: _ClassVar[int]
    BYTES_LEFT_FIELD_NUMBER: _ClassVar[int]
    STUCK_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    STUCK_KEYS_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    active: bool
    running: bool
    done: bool
    gateway: str
    started: float
    finished: float
    updated: float
    objects_moved: int
    chunks_moved: int
    bytes_moved: int
    chunks_left: int
    bytes_left: int
    stuck_objects: int
    stuck_keys: _containers.RepeatedScalarFieldContainer[str]
    bandwidth: int
    error: str
    def __init__(self, container_id: _Optional[str] = ..., active: _Optional[bool] = ..., running: _Optional[bool] = ..., done: _Optional[bool] = ..., gateway: _Optional[str] = ..., started: _Optional[float] = ..., finished: _Optional[float] = ..., updated: _Optional[float] = ..., objects_moved: _Optional[int] = ..., chunks_moved: _Optional[int] = ..., bytes_moved: _Optional[int] = ..., chunks_left: _Optional[int] = ..., bytes_left: _Optional[int] = ..., stuck_objects: _Optional[int] = ..., stuck_keys: _Optional[_Iterable[str]] = ..., bandwidth: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class DrainContainerRequest(_message.Message):
    __slots__ = ("container_id", "bandwidth", "stop")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    bandwidth: int
    stop: bool
    def __init__(self, container_id: _Optional[str] = ..., bandwidth: _Optional[int] = ..., stop: _Optional[bool] = ...) -> None: ...

class RemoveContainerRequest(_message.Message):
    __slots__ = ("container_id", "force")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    force: bool
    def __init__(self, container_id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class RemoveContainerResponse(_message.Message):
    __slots__ = ("chunks_named",)
    CHUNKS_NAMED_FIELD_NUMBER: _ClassVar[int]
    chunks_named: int
    def __init__(self, chunks_named: _Optional[int] = ...) -> None: ...

class RebalanceRequest(_message.Message):
    __slots__ = ("bandwidth", "stop")
    BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    bandwidth: int
    stop: bool
    def __init__(self, bandwidth: _Optional[int] = ..., stop: _Optional[bool] = ...) -> None: ...

class RepairStatus(_message.Message):
    __slots__ = ("running", "gateway", "started", "finished", "objects_checked", "objects_total", "degraded_objects", "chunks_rebuilt", "unrepaired_objects", "bytes_repaired")
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_REBUILT_FIELD_NUMBER: _ClassVar[int]
    UNREPAIRED_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_REPAIRED_FIELD_NUMBER: _ClassVar[int]
    running: bool
    gateway: str
    started: float
    finished: float
    objects_checked: int
    objects_total: int
    degraded_objects: int
    chunks_rebuilt: int
    unrepaired_objects: int
    bytes_repaired: int
    def __init__(self, running: _Optional[bool] = ..., gateway: _Optional[str] = ..., started: _Optional[float] = ..., finished: _Optional[float] = ..., objects_checked: _Optional[int] = ..., objects_total: _Optional[int] = ..., degraded_objects: _Optional[int] = ..., chunks_rebuilt: _Optional[int] = ..., unrepaired_objects: _Optional[int] = ..., bytes_repaired: _Optional[int] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("gateways", "etcd_members", "containers", "objects", "bytes", "repair", "rebalance")
    GATEWAYS_FIELD_NUMBER: _ClassVar[int]
    ETCD_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FIELD_NUMBER: _ClassVar[int]
    REBALANCE_FIELD_NUMBER: _ClassVar[int]
    gateways: _containers.RepeatedCompositeFieldContainer[GatewayStatus]
    etcd_members: _containers.RepeatedCompositeFieldContainer[EtcdMemberStatus]
    containers: _containers.RepeatedCompositeFieldContainer[ContainerStatus]
    objects: int
    bytes: int
    repair: RepairStatus
    rebalance: MoveStatus
    def __init__(self, gateways: _Optional[_Iterable[_Union[GatewayStatus, _Mapping]]] = ..., etcd_members: _Optional[_Iterable[_Union[EtcdMemberStatus, _Mapping]]] = ..., containers: _Optional[_Iterable[_Union[ContainerStatus, _Mapping]]] = ..., objects: _Optional[int] = ..., bytes: _Optional[int] = ..., repair: _Optional[_Union[RepairStatus, _Mapping]] = ..., rebalance: _Optional[_Union[MoveStatus, _Mapping]] = ...) -> None: ...

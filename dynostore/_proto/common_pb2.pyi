import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ECPolicy(_message.Message):
    __slots__ = ("k", "m", "segment_size")
    K_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    k: int
    m: int
    segment_size: int
    def __init__(self, k: _Optional[int] = ..., m: _Optional[int] = ..., segment_size: _Optional[int] = ...) -> None: ...

class ContainerInfo(_message.Message):
    __slots__ = ("id", "address", "site", "backend", "capacity_bytes", "free_bytes", "chunk_count", "last_scrub", "registered")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_SCRUB_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    site: str
    backend: str
    capacity_bytes: int
    free_bytes: int
    chunk_count: int
    last_scrub: float
    registered: float
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., site: _Optional[str] = ..., backend: _Optional[str] = ..., capacity_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., chunk_count: _Optional[int] = ..., last_scrub: _Optional[float] = ..., registered: _Optional[float] = ...) -> None: ...

class ChunkLocation(_message.Message):
    __slots__ = ("index", "container_id", "address", "stored")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    index: int
    container_id: str
    address: str
    stored: bool
    def __init__(self, index: _Optional[int] = ..., container_id: _Optional[str] = ..., address: _Optional[str] = ..., stored: _Optional[bool] = ...) -> None: ...

class ObjectInfo(_message.Message):
    __slots__ = ("key", "name", "catalog", "owner", "size", "created", "created_at", "expires", "version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key: str
    name: str
    catalog: str
    owner: str
    size: int
    created: float
    created_at: _timestamp_pb2.Timestamp
    expires: float
    version: str
    def __init__(self, key: _Optional[str] = ..., name: _Optional[str] = ..., catalog: _Optional[str] = ..., owner: _Optional[str] = ..., size: _Optional[int] = ..., created: _Optional[float] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires: _Optional[float] = ..., version: _Optional[str] = ...) -> None: ...

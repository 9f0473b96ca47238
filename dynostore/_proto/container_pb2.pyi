from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChunkHeader(_message.Message):
    __slots__ = ("key", "index", "container_id", "ticket", "replace", "quiet")
    KEY_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    QUIET_FIELD_NUMBER: _ClassVar[int]
    key: str
    index: int
    container_id: str
    ticket: str
    replace: bool
    quiet: bool
    def __init__(self, key: _Optional[str] = ..., index: _Optional[int] = ..., container_id: _Optional[str] = ..., ticket: _Optional[str] = ..., replace: _Optional[bool] = ..., quiet: _Optional[bool] = ...) -> None: ...

class Fragment(_message.Message):
    __slots__ = ("data", "crc32", "offset")
    DATA_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    crc32: int
    offset: int
    def __init__(self, data: _Optional[bytes] = ..., crc32: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class PutChunkRequest(_message.Message):
    __slots__ = ("header", "fragment")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FRAGMENT_FIELD_NUMBER: _ClassVar[int]
    header: ChunkHeader
    fragment: Fragment
    def __init__(self, header: _Optional[_Union[ChunkHeader, _Mapping]] = ..., fragment: _Optional[_Union[Fragment, _Mapping]] = ...) -> None: ...

class PutChunkResponse(_message.Message):
    __slots__ = ("size", "fragments")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    size: int
    fragments: int
    def __init__(self, size: _Optional[int] = ..., fragments: _Optional[int] = ...) -> None: ...

class GetChunkRequest(_message.Message):
    __slots__ = ("key", "index", "offset", "length", "ticket", "quiet")
    KEY_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    QUIET_FIELD_NUMBER: _ClassVar[int]
    key: str
    index: int
    offset: int
    length: int
    ticket: str
    quiet: bool
    def __init__(self, key: _Optional[str] = ..., index: _Optional[int] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., ticket: _Optional[str] = ..., quiet: _Optional[bool] = ...) -> None: ...

class GetChunkResponse(_message.Message):
    __slots__ = ("fragment",)
    FRAGMENT_FIELD_NUMBER: _ClassVar[int]
    fragment: Fragment
    def __init__(self, fragment: _Optional[_Union[Fragment, _Mapping]] = ...) -> None: ...

class ChunkStatus(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class WholeChunk(_message.Message):
    __slots__ = ("header", "fragments")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    header: ChunkHeader
    fragments: _containers.RepeatedCompositeFieldContainer[Fragment]
    def __init__(self, header: _Optional[_Union[ChunkHeader, _Mapping]] = ..., fragments: _Optional[_Iterable[_Union[Fragment, _Mapping]]] = ...) -> None: ...

class WriteChunksRequest(_message.Message):
    __slots__ = ("chunks",)
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[WholeChunk]
    def __init__(self, chunks: _Optional[_Iterable[_Union[WholeChunk, _Mapping]]] = ...) -> None: ...

class WriteChunksResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ChunkStatus]
    def __init__(self, results: _Optional[_Iterable[_Union[ChunkStatus, _Mapping]]] = ...) -> None: ...

class ReadChunksRequest(_message.Message):
    __slots__ = ("chunks",)
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[ChunkHeader]
    def __init__(self, chunks: _Optional[_Iterable[_Union[ChunkHeader, _Mapping]]] = ...) -> None: ...

class ReadChunksResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ReadChunkResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ReadChunkResult, _Mapping]]] = ...) -> None: ...

class ReadChunkResult(_message.Message):
    __slots__ = ("status", "fragments")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    status: ChunkStatus
    fragments: _containers.RepeatedCompositeFieldContainer[Fragment]
    def __init__(self, status: _Optional[_Union[ChunkStatus, _Mapping]] = ..., fragments: _Optional[_Iterable[_Union[Fragment, _Mapping]]] = ...) -> None: ...

class DeleteChunkRequest(_message.Message):
    __slots__ = ("key", "index", "ticket")
    KEY_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    key: str
    index: int
    ticket: str
    def __init__(self, key: _Optional[str] = ..., index: _Optional[int] = ..., ticket: _Optional[str] = ...) -> None: ...

class DeleteChunkResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: _Optional[bool] = ...) -> None: ...

class StatRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatResponse(_message.Message):
    __slots__ = ("id", "site", "backend", "capacity_bytes", "free_bytes", "chunks")
    ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    id: str
    site: str
    backend: str
    capacity_bytes: int
    free_bytes: int
    chunks: int
    def __init__(self, id: _Optional[str] = ..., site: _Optional[str] = ..., backend: _Optional[str] = ..., capacity_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., chunks: _Optional[int] = ...) -> None: ...

"""Storage backends of a data container."""

from dynostore.container.backends.base import Backend, ChunkWriter, Usage
from dynostore.container.backends.fs import FileSystemBackend
from dynostore.container.backends.memory import MemoryBackend

__all__ = ["Backend", "ChunkWriter", "FileSystemBackend", "MemoryBackend", "Usage"]

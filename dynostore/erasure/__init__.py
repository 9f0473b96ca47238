"""Erasure coding and integrity: the codec, checksums and the chunk file format."""

from dynostore.erasure.checksum import checksum
from dynostore.erasure.codec import Codec

__all__ = ["Codec", "checksum"]

"""AWS Signature V4 for the S3 front door: checking requests, and reading their bodies with the hashes they promise.

Signatures are recomputed with botocore's own SigV4 code (its canonical
request, string to sign and HMAC), fed with what the request says it signed
and with the signing key the gateway derived for the access key's day,
region and service; this door never learns a secret access key. Bodies are
read in one of the forms S3 knows: a plain body whose SHA-256 is in
``x-amz-content-sha256`` (checked at its end), ``UNSIGNED-PAYLOAD``, and
``aws-chunked`` streams with a signature per chunk
(``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``) or none (``STREAMING-UNSIGNED-PAYLOAD-TRAILER``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import calendar
import contextlib
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web
from botocore.auth import EMPTY_SHA256_HASH, UNSIGNED_PAYLOAD, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

from dynostore.erasure.checksum import checksum
from dynostore.errors import DynoStoreError, NotFound
from dynostore.s3.errors import S3Error, access_denied

ALGORITHM = "AWS4-HMAC-SHA256"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
# How far a signed request's X-Amz-Date may be from the door's clock (S3's rule).
MAX_SKEW_SECONDS = 15 * 60
# The longest a presigned URL may live (S3's rule: 7 days).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
# Seconds the door keeps a signing key it fetched (a revoked access key works at most this long).
KEY_CACHE_SECONDS = 60.0
READ_SIZE = 1024 * 1024
# Segments at least this large are hashed in a worker thread.
HASH_IN_THREAD_BYTES = 256 * 1024
MAX_CHUNK_BYTES = 64 * 1024 * 1024
_AUTH_HEADER = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,\s*Signature=([0-9a-f]{64})\s*"
)
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")

# (access key id, date, region) -> (signing key, user, token); fetched from the gateway.
KeySource = Callable[[str, str, str], Awaitable[tuple[bytes, str, str]]]


@dataclass
class Caller:
    """Who signed a request, and what the door needs to read its body."""

    user: str
    token: str
    access_key_id: str
    signing_key: bytes
    timestamp: str
    scope: str
    signature: str
    payload_hash: str
    presigned: bool = False


class SigningKeys:
    """Signing keys fetched from the gateway, kept for :data:`KEY_CACHE_SECONDS`."""

    def __init__(self, fetch: KeySource) -> None:
        """Fetch keys with ``fetch(access_key_id, date, region)``."""
        self._fetch = fetch
        self._cache: dict[tuple[str, str, str], tuple[float, tuple[bytes, str, str]]] = {}

    async def get(self, access_key_id: str, date: str, region: str) -> tuple[bytes, str, str]:
        """``(signing_key, user, token)`` of an access key for one day and region.

        Raises:
            S3Error: InvalidAccessKeyId when the gateway knows no such key.
        """
        wanted = (access_key_id, date, region)
        cached = self._cache.get(wanted)
        if cached is not None and time.monotonic() - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        try:
            value = await self._fetch(access_key_id, date, region)
        except NotFound:
            raise S3Error(
                "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.", 403
            ) from None
        except DynoStoreError as exc:
            raise S3Error("InvalidAccessKeyId", f"The access key could not be checked: {exc}", 403) from None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[wanted] = (time.monotonic(), value)
        return value


class _Verifier(S3SigV4Auth):
    """botocore's S3 SigV4 signer, told what the request signed and given a signing key instead of a secret."""

    def __init__(self, access_key_id: str, region: str, signing_key: bytes, signed: list[str], payload: str) -> None:
        super().__init__(Credentials(access_key_id, "-"), "s3", region)
        self._signing_key = signing_key
        self._signed = signed
        self._payload = payload

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name) or []:
                headers[name] = value
        return headers

    def payload(self, request: AWSRequest) -> str:
        return self._payload

    def signature(self, string_to_sign: str, request: AWSRequest) -> str:
        return str(self._sign(self._signing_key, string_to_sign, hex=True))


def _canonical_path(raw_path: str) -> str:
    """The URI-encoded path as SigV4 signs it for S3 (every byte but unreserved ones and '/' encoded)."""
    return quote(unquote(raw_path.split("?", 1)[0]), safe="/~")


def _expected_signature(
    request: web.Request, caller: Caller, region: str, signed: list[str], exclude_query: str = ""
) -> str:
    headers = HTTPHeaders()
    for name, value in request.headers.items():
        headers[name.lower()] = value
    params = [(k, v) for k, v in request.query.items() if k != exclude_query]
    aws = AWSRequest(
        method=request.method,
        url="http://" + request.host + _canonical_path(request.raw_path),
        headers=headers,
        params=params,
    )
    aws.context["timestamp"] = caller.timestamp
    verifier = _Verifier(caller.access_key_id, region, caller.signing_key, signed, caller.payload_hash)
    canonical = verifier.canonical_request(aws)
    return verifier.signature(verifier.string_to_sign(aws, canonical), aws)


def _parse_credential(credential: str) -> tuple[str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or parts[3] != "s3" or parts[4] != "aws4_request":
        raise S3Error("AuthorizationHeaderMalformed", f"The credential {credential[:120]!r} is malformed.")
    return parts[0], parts[1], parts[2]


def _epoch(amz_date: str) -> float:
    if not _AMZ_DATE.fullmatch(amz_date):
        raise access_denied("The X-Amz-Date is missing or malformed (YYYYMMDDTHHMMSSZ).")
    return float(calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))


async def authenticate(request: web.Request, keys: SigningKeys) -> Caller:
    """Check the request's SigV4 signature (header or presigned query) and return its caller.

    Raises:
        S3Error: AccessDenied (unsigned or expired), SignatureDoesNotMatch,
            InvalidAccessKeyId, RequestTimeTooSkewed, AuthorizationHeaderMalformed.
    """
    header = request.headers.get("Authorization")
    if header is not None:
        match = _AUTH_HEADER.fullmatch(header.strip())
        if match is None and header.startswith("AWS "):
            raise access_denied("Signature Version 2 is not supported; sign with Signature Version 4 (s3v4).")
        if match is None:
            raise S3Error("AuthorizationHeaderMalformed", "Only AWS4-HMAC-SHA256 authorization is supported.")
        credential, signed_text, signature = match.groups()
        amz_date = request.headers.get("x-amz-date", "")
        payload_hash = request.headers.get("x-amz-content-sha256", "")
        if not payload_hash:
            raise S3Error("InvalidRequest", "Signed requests must carry x-amz-content-sha256.")
        presigned = False
        moment = _epoch(amz_date)
        if abs(time.time() - moment) > MAX_SKEW_SECONDS:
            raise S3Error(
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
                403,
            )
    elif request.query.get("X-Amz-Algorithm") is not None:
        if request.query.get("X-Amz-Algorithm") != ALGORITHM:
            raise S3Error("AuthorizationQueryParametersError", "Only AWS4-HMAC-SHA256 presigned URLs are supported.")
        credential = request.query.get("X-Amz-Credential", "")
        signed_text = request.query.get("X-Amz-SignedHeaders", "")
        signature = request.query.get("X-Amz-Signature", "")
        amz_date = request.query.get("X-Amz-Date", "")
        payload_hash = UNSIGNED_PAYLOAD
        presigned = True
        try:
            expires = int(request.query.get("X-Amz-Expires", ""))
        except ValueError:
            raise S3Error("AuthorizationQueryParametersError", "X-Amz-Expires must be a number of seconds.") from None
        if not 0 < expires <= MAX_PRESIGN_SECONDS:
            raise S3Error("AuthorizationQueryParametersError", "X-Amz-Expires must be 1 to 604800 seconds.")
        if time.time() > _epoch(amz_date) + expires:
            raise access_denied("Request has expired")
    elif "AWSAccessKeyId" in request.query:
        raise access_denied("Signature Version 2 is not supported; sign with Signature Version 4 (s3v4).")
    else:
        raise access_denied("Anonymous access is not allowed; sign requests with an access key (docs/s3.md).")
    access_key_id, date, region = _parse_credential(credential)
    if amz_date[:8] != date:
        raise S3Error("AuthorizationHeaderMalformed", "The credential's date is not the request's date.")
    signed = [name.strip().lower() for name in signed_text.split(";") if name.strip()]
    if "host" not in signed:
        raise access_denied("The signed headers must include host.")
    signing_key, user, token = await keys.get(access_key_id, date, region)
    caller = Caller(
        user,
        token,
        access_key_id,
        signing_key,
        amz_date,
        f"{date}/{region}/s3/aws4_request",
        "",
        payload_hash,
        presigned,
    )
    expected = _expected_signature(request, caller, region, signed, "X-Amz-Signature" if presigned else "")
    if not hmac.compare_digest(expected, signature):
        raise S3Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            403,
        )
    caller.signature = signature
    return caller


@dataclass
class Body:
    """A request body as the bytes it carries, checked against the hashes its request promised."""

    request: web.Request
    caller: Caller
    size: int
    content_md5: bytes | None
    md5: Any = field(default_factory=hashlib.md5)
    trailers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, request: web.Request, caller: Caller) -> Body:
        """The body of ``request``, with its decoded size.

        Raises:
            S3Error: MissingContentLength, InvalidDigest, or an unsupported content hash.
        """
        chunked = caller.payload_hash.startswith("STREAMING-")
        length = (
            request.headers.get("x-amz-decoded-content-length") if chunked else request.headers.get("Content-Length")
        )
        if length is None:
            if request.content_length is None and not request.body_exists:
                length = "0"
            else:
                raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.", 411)
        try:
            size = int(length)
        except ValueError:
            raise invalid_length() from None
        if size < 0:
            raise invalid_length()
        md5_header = request.headers.get("Content-MD5")
        content_md5 = None
        if md5_header is not None:
            try:
                content_md5 = base64.b64decode(md5_header, validate=True)
            except binascii.Error:
                content_md5 = b""
            if len(content_md5) != 16:
                raise S3Error("InvalidDigest", "The Content-MD5 you specified was invalid.")
        known = {UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER}
        if caller.payload_hash not in known and not re.fullmatch(r"[0-9a-f]{64}", caller.payload_hash):
            raise S3Error("InvalidArgument", f"x-amz-content-sha256 {caller.payload_hash[:80]!r} is not supported.")
        return cls(request, caller, size, content_md5)

    @property
    def etag(self) -> str:
        """The MD5 of the bytes read so far, in hex (S3's ETag of a single put)."""
        return str(self.md5.hexdigest())

    async def segments(self, segment_size: int) -> AsyncIterator[bytes]:
        """The body cut into segments of ``segment_size`` bytes (the last shorter), for the SDK's put.

        A large segment is hashed in two worker threads (MD5 in one, SHA-256
        and any ``x-amz-checksum-*`` in the other; hashlib lets go of the GIL)
        while it is handed on: the consumer codes and sends segment N and
        the next one is read while N is hashed, and N's hashing ends before
        N+1's starts (the hashes see the bytes in order). After the last
        segment the hashes are checked: a failed check raises S3Error before
        the consumer sees the end, so the SDK commits nothing.
        """
        mode = self.caller.payload_hash
        sha256 = hashlib.sha256() if re.fullmatch(r"[0-9a-f]{64}", mode) else None
        checksum = Checksum.asked(self.request)
        hashing: asyncio.Future[Any] | None = None
        try:
            async for segment in resegment(self._pieces(), segment_size):
                if hashing is not None:
                    await hashing
                    hashing = None
                if len(segment) >= HASH_IN_THREAD_BYTES:
                    hashing = asyncio.gather(
                        asyncio.to_thread(self.md5.update, segment),
                        asyncio.to_thread(_update_checks, sha256, checksum, segment),
                    )
                else:
                    self.md5.update(segment)
                    _update_checks(sha256, checksum, segment)
                yield segment
            if hashing is not None:
                await hashing
                hashing = None
        finally:
            if hashing is not None:  # the body failed or the consumer gave up: let the threads finish
                with contextlib.suppress(BaseException):
                    await asyncio.shield(hashing)
        if sha256 is not None and sha256.hexdigest() != mode:
            raise S3Error(
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        if self.content_md5 is not None and self.md5.digest() != self.content_md5:
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")
        if checksum is not None:
            checksum.check(self.trailers.get(checksum.header) or self.request.headers.get(checksum.header) or "")

    async def _pieces(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive, decoded from aws-chunked, checked against the declared length."""
        mode = self.caller.payload_hash
        if mode.startswith("STREAMING-"):
            source = self._chunks(signed=mode in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER))
        else:
            source = self.request.content.iter_chunked(READ_SIZE)
        total = 0
        async for piece in source:
            total += len(piece)
            if total > self.size:
                raise S3Error("IncompleteBody", "The body is longer than its declared length.")
            yield piece
        if total != self.size:
            raise S3Error("IncompleteBody", "You did not provide the number of bytes specified by the Content-Length.")

    async def read_all(self, limit: int) -> bytes:
        """The whole (small) body, checked.

        Raises:
            S3Error: it is longer than ``limit``, or a check fails.
        """
        if self.size > limit:
            raise S3Error("EntityTooLarge", f"This request's body may have at most {limit} bytes.")
        return b"".join([segment async for segment in self.segments(limit)])

    async def _chunks(self, signed: bool) -> AsyncIterator[bytes]:
        content = self.request.content
        previous = self.caller.signature
        while True:
            line = (await content.readline()).decode("latin-1").strip()
            size_text, _, extension = line.partition(";")
            try:
                size = int(size_text, 16)
            except ValueError:
                raise S3Error("IncompleteBody", "An aws-chunked chunk header is malformed.") from None
            if not 0 <= size <= MAX_CHUNK_BYTES:
                raise S3Error("InvalidChunkSizeError", "An aws-chunked chunk is too large.")
            data = await content.readexactly(size) if size else b""
            if signed:
                name, _, signature = extension.partition("=")
                if name != "chunk-signature":
                    raise S3Error("SignatureDoesNotMatch", "An aws-chunked chunk carries no chunk-signature.", 403)
                to_sign = "\n".join(
                    [
                        "AWS4-HMAC-SHA256-PAYLOAD",
                        self.caller.timestamp,
                        self.caller.scope,
                        previous,
                        EMPTY_SHA256_HASH,
                        hashlib.sha256(data).hexdigest(),
                    ]
                )
                expected = hmac.new(self.caller.signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
                if not hmac.compare_digest(expected, signature):
                    raise S3Error("SignatureDoesNotMatch", "The signature of an aws-chunked chunk does not match.", 403)
                previous = signature
            if size == 0:
                break
            yield data
            if await content.readexactly(2) != b"\r\n":
                raise S3Error("IncompleteBody", "An aws-chunked chunk is not followed by CRLF.")
        # Trailers (e.g. x-amz-checksum-crc32:...) up to an empty line.
        while line := (await content.readline()).decode("latin-1").strip():
            name, _, value = line.partition(":")
            self.trailers[name.strip().lower()] = value.strip()


def invalid_length() -> S3Error:
    """A Content-Length that is not a number of bytes."""
    return S3Error("InvalidArgument", "The content length is not a non-negative number.")


async def resegment(pieces: AsyncIterator[bytes], segment_size: int) -> AsyncIterator[bytes]:
    """``pieces`` cut into segments of ``segment_size`` bytes (the last shorter; one empty one for no bytes)."""
    held: list[bytes] = []
    length = 0
    yielded = False
    async for piece in pieces:
        held.append(piece)
        length += len(piece)
        if length >= segment_size:
            joined = held[0] if len(held) == 1 else b"".join(held)
            start = 0
            while length - start >= segment_size:
                yielded = True
                yield joined if start == 0 and len(joined) == segment_size else joined[start : start + segment_size]
                start += segment_size
            held = [joined[start:]] if start < len(joined) else []
            length -= start
    if length or not yielded:
        yield b"".join(held)


def _update_checks(sha256: Any, checksum: Checksum | None, data: bytes) -> None:
    """Feed ``data`` to the payload's SHA-256 and the asked checksum (either may be None)."""
    if sha256 is not None:
        sha256.update(data)
    if checksum is not None:
        checksum.update(data)


class Checksum:
    """An ``x-amz-checksum-*`` a request carries (as a header or a trailer): CRC32, SHA-1 or SHA-256.

    Other algorithms (CRC32C, CRC64NVME) are not checked.
    """

    def __init__(self, algorithm: str) -> None:
        """Compute ``algorithm`` (crc32, sha1 or sha256) over the body."""
        self.header = f"x-amz-checksum-{algorithm}"
        self._crc = 0
        self._hash = None if algorithm == "crc32" else hashlib.new(algorithm)

    @classmethod
    def asked(cls, request: web.Request) -> Checksum | None:
        """The checksum the request announces (``x-amz-trailer`` or a header), if this door computes it."""
        names = [request.headers.get("x-amz-trailer", "").strip().lower()]
        names += [n.lower() for n in request.headers if n.lower().startswith("x-amz-checksum-")]
        for name in names:
            algorithm = name.removeprefix("x-amz-checksum-")
            if name.startswith("x-amz-checksum-") and algorithm in ("crc32", "sha1", "sha256"):
                return cls(algorithm)
        return None

    def update(self, data: bytes) -> None:
        """Add ``data``."""
        if self._hash is None:
            self._crc = checksum(data, self._crc)
        else:
            self._hash.update(data)

    def check(self, expected: str) -> None:
        """Compare with the base64 value the client sent.

        Raises:
            S3Error: BadDigest when they differ.
        """
        digest = self._crc.to_bytes(4, "big") if self._hash is None else self._hash.digest()
        if base64.b64encode(digest).decode() != expected.strip():
            raise S3Error("BadDigest", f"The {self.header} you specified did not match the calculated checksum.")

"""The gateway's S3 access-key RPCs: issue, revoke, and hand the S3 front door a signing key.

A key is an access key id, a secret access key and a DynoStore token made
for it (the front door acts with that token for the key's user). The
gateway seals the secret and the token with AES-GCM under a key derived
(HKDF-SHA256) from its admin token, which every gateway of a fabric has,
and stores only that sealed blob in etcd. :meth:`GetS3SigningKey` gives the
front door, which authenticates with an admin token, the SigV4 signing key
of one day, region and service: never the secret itself.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import string

import grpc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dynostore._proto import gateway_pb2
from dynostore.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from dynostore.gateway.users import UserCalls

log = logging.getLogger(__name__)
ACCESS_KEY_PATTERN = re.compile(r"DS[A-Z0-9]{18}")
_DATE_PATTERN = re.compile(r"20[0-9]{6}")
_REGION_PATTERN = re.compile(r"[a-z0-9-]{1,32}")
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
_ID_ALPHABET = string.ascii_uppercase + string.digits


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 signing key: HMAC-SHA256 of ``AWS4`` + secret over date, region, service, ``aws4_request``."""
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


class Sealer:
    """AES-GCM sealing of access-key secrets, under a key derived from the gateways' admin token."""

    def __init__(self, admin_token: str) -> None:
        """Derive the sealing key from ``admin_token``."""
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"dynostore s3 key sealing v1").derive(
            admin_token.encode()
        )
        self._aead = AESGCM(derived)

    def seal(self, access_key_id: str, values: dict[str, str]) -> str:
        """``values`` encrypted and bound to ``access_key_id``, as base64 text."""
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, json.dumps(values).encode(), access_key_id.encode())
        return base64.b64encode(nonce + sealed).decode()

    def unseal(self, access_key_id: str, sealed: str) -> dict[str, str]:
        """What :meth:`seal` sealed for ``access_key_id``.

        Raises:
            FailedPrecondition: it was sealed under another admin token, or altered.
        """
        raw = base64.b64decode(sealed)
        try:
            plain = self._aead.decrypt(raw[:12], raw[12:], access_key_id.encode())
        except InvalidTag:
            raise FailedPrecondition(
                f"The secret of S3 access key {access_key_id} cannot be opened (sealed under another admin "
                "token?); issue a new key."
            ) from None
        values: dict[str, str] = json.loads(plain)
        return values


class S3KeyCalls(UserCalls):
    """The gateway's S3 access-key RPCs."""

    # Set by the server when it has an admin token (it derives the sealing key from it).
    s3_sealer: Sealer | None = None

    def _sealer(self) -> Sealer:
        if self.s3_sealer is None:
            raise FailedPrecondition("This gateway runs without an admin token, so it cannot issue S3 keys.")
        return self.s3_sealer

    async def CreateS3Key(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.CreateS3KeyRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CreateS3KeyResponse:
        owner = await self._token_owner(context, request.user)
        sealer = self._sealer()
        access_key_id = "DS" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(18))
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
        token, info = await self.registry.create_token(owner)
        sealed = sealer.seal(access_key_id, {"secret": secret, "token": token})
        await self.registry.put_s3_key(access_key_id, owner, info.id, sealed)
        log.info("S3 access key %s issued for %s.", access_key_id, owner)
        return gateway_pb2.CreateS3KeyResponse(access_key_id=access_key_id, secret_access_key=secret, user=owner)

    async def RevokeS3Key(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.RevokeS3KeyRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RevokeS3KeyResponse:
        user = await self._user(context)
        access_key_id = _access_key_id(request.access_key_id)
        record = await self.registry.get_s3_key(access_key_id)
        if record.user != user.name and not user.admin:
            raise NotFound(f"There is no S3 access key {access_key_id} of yours.")
        await self.registry.delete_s3_key(access_key_id)
        with contextlib.suppress(NotFound):  # revoked already (or its user removed)
            await self.registry.revoke_token(record.token_id, user)
        log.info("S3 access key %s of %s revoked.", access_key_id, record.user)
        return gateway_pb2.RevokeS3KeyResponse()

    async def GetS3SigningKey(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.GetS3SigningKeyRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetS3SigningKeyResponse:
        caller = await self._user(context)
        if not caller.admin:
            raise PermissionDenied("Only the S3 front door (with an admin token) may fetch signing keys.")
        access_key_id = _access_key_id(request.access_key_id)
        if not _DATE_PATTERN.fullmatch(request.date):
            raise InvalidArgument(f"{request.date[:20]!r} is not a SigV4 date (YYYYMMDD).")
        if not _REGION_PATTERN.fullmatch(request.region):
            raise InvalidArgument(f"{request.region[:40]!r} is not a region name.")
        if request.service != "s3":
            raise InvalidArgument(f"Signing keys are only given for the service 's3', not {request.service[:20]!r}.")
        record = await self.registry.get_s3_key(access_key_id)
        values = self._sealer().unseal(access_key_id, record.sealed)
        try:
            await self.registry.authenticate(values["token"])
        except Unauthenticated:
            raise NotFound(f"The S3 access key {access_key_id} was revoked with its user's tokens.") from None
        key = signing_key(values["secret"], request.date, request.region, request.service)
        return gateway_pb2.GetS3SigningKeyResponse(signing_key=key, user=record.user, token=values["token"])


def _access_key_id(value: str) -> str:
    if not ACCESS_KEY_PATTERN.fullmatch(value):
        raise InvalidArgument(f"{value[:40]!r} is not a DynoStore S3 access key id (DS and 18 letters or digits).")
    return value

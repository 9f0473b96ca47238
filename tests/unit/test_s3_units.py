"""Pieces of the S3 front door that need no fabric: key sealing, signing keys, byte ranges, XML, segments."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from dynostore.client.pipeline import ObjectInfo
from dynostore.errors import FailedPrecondition, NotFound
from dynostore.gateway.s3keys import Sealer, signing_key
from dynostore.s3.auth import Caller, resegment
from dynostore.s3.errors import S3Error
from dynostore.s3.objects import byte_range
from dynostore.s3.store import META, Bucket, Index, S3Object, Store, check_bucket_name, check_key
from dynostore.s3.xml import parse


def test_sealed_secrets_open_only_with_the_same_admin_token_and_key_id() -> None:
    sealed = Sealer("admin-1").seal("DSAAAAAAAAAAAAAAAAAA", {"secret": "s", "token": "t"})
    assert "secret" not in sealed
    assert Sealer("admin-1").unseal("DSAAAAAAAAAAAAAAAAAA", sealed) == {"secret": "s", "token": "t"}
    with pytest.raises(FailedPrecondition):
        Sealer("admin-2").unseal("DSAAAAAAAAAAAAAAAAAA", sealed)
    with pytest.raises(FailedPrecondition):
        Sealer("admin-1").unseal("DSBBBBBBBBBBBBBBBBBB", sealed)


def test_signing_key_is_the_one_botocore_signs_with() -> None:
    class Capture(SigV4Auth):
        key = b""

        def _sign(self, key: bytes, msg: str, hex: bool = False) -> bytes | str:
            if msg.startswith("AWS4-HMAC-SHA256\n"):
                Capture.key = key
            return super()._sign(key, msg, hex)

    signer = Capture(Credentials("DSAAAAAAAAAAAAAAAAAA", "secret/+x"), "s3", "eu-west-3")

    request = AWSRequest(method="GET", url="http://h/")
    request.context["timestamp"] = "20261201T120000Z"
    signer.signature("AWS4-HMAC-SHA256\nx", request)
    assert Capture.key == signing_key("secret/+x", "20261201", "eu-west-3", "s3")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-0", (0, 1)),
        ("bytes=5-", (5, 10)),
        ("bytes=-3", (7, 10)),
        ("bytes=-30", (0, 10)),
        ("bytes=2-100", (2, 10)),
        ("bytes=4-2", None),
        ("bytes=0-1,3-4", None),
        ("items=0-1", None),
        ("bytes=0-" + "9" * 5000, None),  # past int()'s limit on digits: ignored, not a server error
        ("bytes=\u0663-", None),  # a digit to regex's \d, not an ASCII one
    ],
)
def test_byte_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 10) == expected


def test_a_range_past_the_end_is_invalid() -> None:
    with pytest.raises(S3Error) as caught:
        byte_range("bytes=10-", 10)
    assert (caught.value.code, caught.value.status) == ("InvalidRange", 416)


@pytest.mark.parametrize("name", ["ab", "A-bucket", "-ab", "ab-", "a..b", "a_b", "x" * 64])
def test_bad_bucket_names(name: str) -> None:
    with pytest.raises(S3Error):
        check_bucket_name(name)


@pytest.mark.parametrize("key", ["", ".dynostore-s3/meta/x", "a\nb", "é" * 600])
def test_bad_keys(key: str) -> None:
    with pytest.raises(S3Error):
        check_key(key)


@pytest.mark.parametrize(
    "body", [b"<a", b'<!DOCTYPE x [<!ENTITY e "boom">]><Delete>&e;</Delete>', b"x" * (3 * 1024 * 1024)]
)
def test_hostile_xml_is_refused(body: bytes) -> None:
    with pytest.raises(S3Error) as caught:
        parse(body)
    assert caught.value.code == "MalformedXML"


def test_namespaces_are_stripped() -> None:
    root = parse(b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>k</Key></Object></Delete>')
    assert root.findtext("Object/Key") == "k"


@pytest.mark.parametrize(
    ("pieces", "size"), [([], 4), ([b"abc"], 4), ([b"ab", b"cdefgh", b"i"], 4), ([b"abcd", b"efgh"], 4)]
)
def test_resegment(pieces: list[bytes], size: int) -> None:
    async def source() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async def collect() -> list[bytes]:
        return [s async for s in resegment(source(), size)]

    segments = asyncio.run(collect())
    data = b"".join(pieces)
    assert b"".join(segments) == data
    assert all(len(s) == size for s in segments[:-1])
    assert len(segments) == max(1, -(-len(data) // size))


class _Overwritten:
    """A fabric client whose key ``k`` was overwritten between a door's listing and its read of the meta object."""

    def __init__(self) -> None:
        new = S3Object("k", 3, "new-etag", 2.0, parts=[("data2", 3)])
        self.meta = {"meta2": new.to_json()}
        self.infos = [ObjectInfo("meta2", META + "k", "b", "u", len(self.meta["meta2"]), 2.0)]

    async def get_batch(self, keys: list[str], token: str) -> list[bytes | None]:
        return [self.meta.get(key) for key in keys]  # "meta1", the one listed, is gone

    async def get(self, key: str, token: str) -> bytes:
        if key not in self.meta:
            raise NotFound(f"No object {key}.")
        return self.meta[key]

    async def list(self, catalog: str, token: str, name: str | None = None) -> list[ObjectInfo]:
        return [i for i in self.infos if name is None or i.name == name]


def test_a_listing_during_an_overwrite_keeps_the_key_with_its_new_version() -> None:
    client = _Overwritten()
    store = Store(client)  # type: ignore[arg-type]
    caller = Caller("u", "token", "DSAAAAAAAAAAAAAAAAAA", b"", "", "", "", "")
    listed = Index.of([ObjectInfo("meta1", META + "k", "b", "u", 100, 1.0)])
    found = asyncio.run(store.many(caller, Bucket("b", "b", "u", True), listed, ["k"]))
    assert found["k"].etag == "new-etag"
    client.infos, client.meta = [], {}  # deleted since the listing: left out
    assert asyncio.run(store.many(caller, Bucket("b", "b", "u", True), listed, ["k"])) == {}

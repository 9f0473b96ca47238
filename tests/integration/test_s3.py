"""The S3 front door (``dynostore s3``) against boto3, on one fabric with the door shared by the module."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.client import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from dynostore.client import AsyncClient, Client
from dynostore.errors import NotFound
from dynostore.local import LocalFabric, ManagedProcess
from dynostore.s3.auth import Caller
from dynostore.s3.store import DATA, META, S3Object, Store
from tests.servers import free_port, s3_client, s3_door

pytestmark = pytest.mark.integration


@dataclass
class Door:
    """A fabric with the S3 front door, two users and their access keys."""

    fabric: LocalFabric
    client: Client
    alice: str
    bob: str
    alice_keys: tuple[str, str]
    bob_keys: tuple[str, str]

    def s3(self, keys: tuple[str, str] | None = None, **config: Any) -> Any:
        """A boto3 S3 client of the door with ``keys`` (alice's by default)."""
        access_key_id, secret = keys or self.alice_keys
        return boto3.client(
            "s3",
            endpoint_url=self.fabric.s3_endpoint,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=Config(
                signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config
            ),
        )


@pytest.fixture(scope="module")
def door() -> Iterator[Door]:
    with LocalFabric(containers=5, s3=True) as fabric, fabric.client() as client:
        alice = fabric.create_user("alice")
        bob = fabric.create_user("bob")
        yield Door(
            fabric, client, alice, bob, client.create_s3_key(token_user=alice), client.create_s3_key(token_user=bob)
        )


def error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def test_keys_are_issued_per_user_and_the_secret_is_not_stored_in_clear(door: Door) -> None:
    access_key_id, secret = door.alice_keys
    assert access_key_id.startswith("DS")
    assert (len(access_key_id), len(secret)) == (20, 40)
    etcd_dump = b"".join(p.read_bytes() for p in (door.fabric.root / "etcd").rglob("*") if p.is_file())
    assert access_key_id.encode() in etcd_dump  # the record is there...
    assert secret.encode() not in etcd_dump  # ...but not the secret


def test_buckets(door: Door) -> None:
    s3 = door.s3()
    s3.create_bucket(Bucket="photos")
    with pytest.raises(ClientError) as caught:
        s3.create_bucket(Bucket="photos")
    assert error_code(caught.value) == "BucketAlreadyOwnedByYou"
    assert "photos" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="photos")
    assert s3.get_bucket_location(Bucket="photos")["LocationConstraint"] is None
    with pytest.raises(ClientError) as caught:
        s3.head_bucket(Bucket="nothing-here")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as caught:
        s3.list_objects_v2(Bucket="nothing-here")
    assert error_code(caught.value) == "NoSuchBucket"
    s3.put_object(Bucket="photos", Key="a", Body=b"x")
    with pytest.raises(ClientError) as caught:
        s3.delete_bucket(Bucket="photos")
    assert error_code(caught.value) == "BucketNotEmpty"
    s3.delete_object(Bucket="photos", Key="a")
    s3.delete_bucket(Bucket="photos")
    assert "photos" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_put_get_head_delete(door: Door) -> None:
    s3 = door.s3()
    s3.create_bucket(Bucket="objects")
    data = os.urandom(3 * 1024 * 1024 + 17)
    reply = s3.put_object(
        Bucket="objects", Key="dir/file.bin", Body=data, ContentType="application/x-test", Metadata={"run": "7"}
    )
    assert reply["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket="objects", Key="dir/file.bin")
    assert got["Body"].read() == data
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"run": "7"}
    assert got["ETag"] == reply["ETag"]
    head = s3.head_object(Bucket="objects", Key="dir/file.bin")
    assert head["ContentLength"] == len(data)
    ranged = s3.get_object(Bucket="objects", Key="dir/file.bin", Range="bytes=1048570-2097160")
    assert ranged["Body"].read() == data[1048570:2097161]
    assert ranged["ContentRange"] == f"bytes 1048570-2097160/{len(data)}"
    assert s3.get_object(Bucket="objects", Key="dir/file.bin", Range="bytes=-10")["Body"].read() == data[-10:]
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="objects", Key="dir/file.bin", Range=f"bytes={len(data)}-")
    assert error_code(caught.value) == "InvalidRange"
    # Overwrite: the new version wins, the old one's fabric objects go.
    s3.put_object(Bucket="objects", Key="dir/file.bin", Body=b"small now")
    assert s3.get_object(Bucket="objects", Key="dir/file.bin")["Body"].read() == b"small now"
    names = [o.name for o in door.client.list("objects", token_user=door.alice)]
    assert sorted(names) == [".dynostore-s3/data/dir/file.bin", ".dynostore-s3/meta/dir/file.bin"]
    s3.delete_object(Bucket="objects", Key="dir/file.bin")
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="objects", Key="dir/file.bin")
    assert error_code(caught.value) == "NoSuchKey"
    s3.delete_object(Bucket="objects", Key="dir/file.bin")  # deleting nothing is fine
    assert list(door.client.list("objects", token_user=door.alice)) == []


def test_refusals(door: Door) -> None:
    s3 = door.s3()
    s3.create_bucket(Bucket="private")
    s3.put_object(Bucket="private", Key="secret.txt", Body=b"alice's")
    wrong = door.s3((door.alice_keys[0], "x" * 40))
    with pytest.raises(ClientError) as caught:
        wrong.get_object(Bucket="private", Key="secret.txt")
    assert error_code(caught.value) == "SignatureDoesNotMatch"
    unknown = door.s3(("DS" + "Z" * 18, door.alice_keys[1]))
    with pytest.raises(ClientError) as caught:
        unknown.list_buckets()
    assert error_code(caught.value) == "InvalidAccessKeyId"
    assert requests.get(f"{door.fabric.s3_endpoint}/private/secret.txt", timeout=10).status_code == 403
    # Bob has no bucket "private" of his own, and alice's is not shared with him.
    bob = door.s3(door.bob_keys)
    with pytest.raises(ClientError) as caught:
        bob.get_object(Bucket="private", Key="secret.txt")
    assert error_code(caught.value) == "NoSuchBucket"
    with pytest.raises(ClientError) as caught:
        bob.get_object(Bucket="alice.private", Key="secret.txt")
    assert error_code(caught.value) == "AccessDenied"
    with pytest.raises(ClientError) as caught:
        bob.put_object(Bucket="alice.private", Key="x", Body=b"bob's")
    assert error_code(caught.value) == "AccessDenied"
    # Shared, it reads as owner.catalog, read-only.
    door.client.share("private", "bob", token_user=door.alice)
    assert bob.get_object(Bucket="alice.private", Key="secret.txt")["Body"].read() == b"alice's"
    assert "alice.private" in [b["Name"] for b in bob.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as caught:
        bob.put_object(Bucket="alice.private", Key="x", Body=b"bob's")
    assert error_code(caught.value) == "AccessDenied"
    with pytest.raises(ClientError) as caught:
        bob.delete_object(Bucket="alice.private", Key="secret.txt")
    assert error_code(caught.value) == "AccessDenied"


def test_presigned_urls(door: Door) -> None:
    s3 = door.s3()
    s3.create_bucket(Bucket="presigned")
    s3.put_object(Bucket="presigned", Key="a b+c/ü.txt", Body=b"shared by URL")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "presigned", "Key": "a b+c/ü.txt"}, ExpiresIn=60)
    assert requests.get(url, timeout=10).content == b"shared by URL"
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "presigned", "Key": "up"}, ExpiresIn=60)
    assert requests.put(put_url, data=b"uploaded by URL", timeout=10).status_code == 200
    assert s3.get_object(Bucket="presigned", Key="up")["Body"].read() == b"uploaded by URL"
    tampered = url.replace("presigned/a", "presigned/A")
    reply = requests.get(tampered, timeout=10)
    assert reply.status_code == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in reply.content
    short = s3.generate_presigned_url("get_object", Params={"Bucket": "presigned", "Key": "up"}, ExpiresIn=1)
    time.sleep(2.1)
    reply = requests.get(short, timeout=10)
    assert reply.status_code == 403
    assert b"Request has expired" in reply.content


def test_body_hashes_are_checked(door: Door) -> None:
    s3 = door.s3()
    s3.create_bucket(Bucket="hashes")
    data = b"checked bytes"
    good_md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    s3.put_object(Bucket="hashes", Key="good", Body=data, ContentMD5=good_md5)
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="hashes", Key="bad", Body=data, ContentMD5=base64.b64encode(b"0" * 16).decode())
    assert error_code(caught.value) == "BadDigest"
    # A body that is not what x-amz-content-sha256 promised: signed for one body, sent with another.
    request = signed_request(door, "PUT", "/hashes/swapped", b"the signed body")
    reply = requests.put(request.url, data=b"another body!!!", headers=dict(request.headers), timeout=10)
    assert reply.status_code == 400
    assert b"XAmzContentSHA256Mismatch" in reply.content
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="hashes").get("Contents", [])}
    assert keys == {"good"}  # neither refused put left an object


def test_large_body_hashes_are_checked_before_commit(door: Door) -> None:
    """Bodies of several segments (hashed in worker threads) with a wrong hash leave the old version in place."""
    s3 = door.s3()
    s3.create_bucket(Bucket="bighashes")
    original = os.urandom(9 * 1024 * 1024 + 5)
    s3.put_object(Bucket="bighashes", Key="big", Body=original)
    other = os.urandom(len(original))
    wrong_md5 = base64.b64encode(hashlib.md5(original).digest()).decode()
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="bighashes", Key="big", Body=other, ContentMD5=wrong_md5)
    assert error_code(caught.value) == "BadDigest"
    # Signed for one body, sent with another of the same length.
    request = signed_request(door, "PUT", "/bighashes/big", original)
    reply = requests.put(request.url, data=other, headers=dict(request.headers), timeout=60)
    assert reply.status_code == 400
    assert b"XAmzContentSHA256Mismatch" in reply.content
    request = signed_request(door, "PUT", "/bighashes/new", original)
    reply = requests.put(request.url, data=other, headers=dict(request.headers), timeout=60)
    assert reply.status_code == 400
    assert s3.get_object(Bucket="bighashes", Key="big")["Body"].read() == original
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="bighashes").get("Contents", [])}
    assert keys == {"big"}  # no refused put left or replaced an object


def signed_request(door: Door, method: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    """A request signed with alice's key by botocore's SigV4 signer."""
    request = AWSRequest(method=method, url=door.fabric.s3_endpoint + path, data=body, headers=headers or {})
    credentials = Credentials(*door.alice_keys)
    S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    return request.prepare()


def signed_as_is(door: Door, method: str, path: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """URL and headers of a request signed by botocore with the x-amz-content-sha256 given in ``headers``."""
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    request = AWSRequest(method=method, url=door.fabric.s3_endpoint + path, headers={**headers, "x-amz-date": amz_date})
    request.context["timestamp"] = amz_date
    auth = S3SigV4Auth(Credentials(*door.alice_keys), "s3", "us-east-1")
    signature = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    signed = auth.signed_headers(auth.headers_to_sign(request))
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={door.alice_keys[0]}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return request.url, {**dict(request.headers), "Authorization": authorization}


def aws_chunked(door: Door, path: str, data: bytes, chunk: int, tamper: bool = False) -> requests.Response:
    """PUT ``data`` as STREAMING-AWS4-HMAC-SHA256-PAYLOAD with a signature on every chunk, computed here."""
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    headers = {
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "x-amz-date": amz_date,
        "x-amz-decoded-content-length": str(len(data)),
        "content-encoding": "aws-chunked",
    }
    request = AWSRequest(method="PUT", url=door.fabric.s3_endpoint + path, headers=headers)
    auth = S3SigV4Auth(Credentials(*door.alice_keys), "s3", "us-east-1")
    request.context["timestamp"] = amz_date
    canonical = auth.canonical_request(request)
    string_to_sign = auth.string_to_sign(request, canonical)
    seed = auth.signature(string_to_sign, request)
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    key = ("AWS4" + door.alice_keys[1]).encode()
    for part in (amz_date[:8], "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    body, previous = b"", seed
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] + [b""]
    for i, piece in enumerate(pieces):
        empty, digest = hashlib.sha256(b"").hexdigest(), hashlib.sha256(piece).hexdigest()
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, empty, digest])
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        sent = piece[:-1] + b"!" if tamper and i == 1 else piece
        body += f"{len(piece):x};chunk-signature={signature}\r\n".encode() + sent + b"\r\n"
        previous = signature
    headers = dict(request.headers)
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={door.alice_keys[0]}/{scope}, "
        f"SignedHeaders={auth.signed_headers(auth.headers_to_sign(request))}, Signature={seed}"
    )
    return requests.put(request.url, data=body, headers=headers, timeout=30)


def test_aws_chunked_signed_uploads(door: Door) -> None:
    s3 = door.s3()
    s3.create_bucket(Bucket="chunked")
    data = os.urandom(200_000)
    reply = aws_chunked(door, "/chunked/streamed", data, 65536)
    assert reply.status_code == 200, reply.content
    assert s3.get_object(Bucket="chunked", Key="streamed")["Body"].read() == data
    reply = aws_chunked(door, "/chunked/tampered", data, 65536, tamper=True)
    assert reply.status_code == 403
    assert b"SignatureDoesNotMatch" in reply.content
    assert "Contents" not in s3.list_objects_v2(Bucket="chunked", Prefix="tampered")


def test_listing(door: Door) -> None:
    s3 = door.s3()
    s3.create_bucket(Bucket="listing")
    keys = ["a.txt", "b/1", "b/2", "b/c/3", "d", "e/1", "z z"]
    for key in keys:
        s3.put_object(Bucket="listing", Key=key, Body=key.encode())
    listed = s3.list_objects_v2(Bucket="listing")
    assert [o["Key"] for o in listed["Contents"]] == keys
    assert listed["Contents"][0]["ETag"] == f'"{hashlib.md5(b"a.txt").hexdigest()}"'
    assert listed["Contents"][0]["Size"] == 5
    top = s3.list_objects_v2(Bucket="listing", Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["a.txt", "d", "z z"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["b/", "e/"]
    inside = s3.list_objects_v2(Bucket="listing", Prefix="b/", Delimiter="/")
    assert [o["Key"] for o in inside["Contents"]] == ["b/1", "b/2"]
    assert [p["Prefix"] for p in inside["CommonPrefixes"]] == ["b/c/"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="listing", StartAfter="b/2")["Contents"]] == keys[3:]
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="listing", PaginationConfig={"PageSize": 2}))
    assert [len(p.get("Contents", [])) for p in pages] == [2, 2, 2, 1]
    assert [o["Key"] for p in pages for o in p["Contents"]] == keys
    delimited = list(
        s3.get_paginator("list_objects_v2").paginate(Bucket="listing", Delimiter="/", PaginationConfig={"PageSize": 1})
    )
    found = [o["Key"] for p in delimited for o in p.get("Contents", [])]
    found += [c["Prefix"] for p in delimited for c in p.get("CommonPrefixes", [])]
    assert sorted(found) == ["a.txt", "b/", "d", "e/", "z z"]
    v1 = list(s3.get_paginator("list_objects").paginate(Bucket="listing", PaginationConfig={"PageSize": 3}))
    assert [o["Key"] for p in v1 for o in p["Contents"]] == keys
    assert s3.list_objects(Bucket="listing", Prefix="b/", Delimiter="/")["CommonPrefixes"] == [{"Prefix": "b/c/"}]
    assert s3.list_objects_v2(Bucket="listing", MaxKeys=0)["KeyCount"] == 0
    reply = s3.delete_objects(Bucket="listing", Delete={"Objects": [{"Key": k} for k in keys] + [{"Key": "never"}]})
    assert sorted(d["Key"] for d in reply["Deleted"]) == sorted([*keys, "never"])
    assert "Contents" not in s3.list_objects_v2(Bucket="listing")


def test_conditional_gets(door: Door) -> None:
    s3 = door.s3()
    s3.create_bucket(Bucket="conditions")
    etag = s3.put_object(Bucket="conditions", Key="k", Body=b"v1")["ETag"]
    assert s3.get_object(Bucket="conditions", Key="k", IfMatch=etag)["Body"].read() == b"v1"
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="conditions", Key="k", IfMatch='"0000"')
    assert error_code(caught.value) == "PreconditionFailed"
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="conditions", Key="k", IfNoneMatch=etag)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    modified = s3.head_object(Bucket="conditions", Key="k")["LastModified"]
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="conditions", Key="k", IfModifiedSince=modified)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    assert s3.get_object(Bucket="conditions", Key="k", IfModifiedSince=modified.replace(year=2000))["Body"].read()


MiB = 1024 * 1024


def test_multipart_upload_by_hand(door: Door) -> None:
    s3 = door.s3()
    s3.create_bucket(Bucket="multipart")
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 3), os.urandom(1234)]
    upload = s3.create_multipart_upload(Bucket="multipart", Key="big", ContentType="text/x-big", Metadata={"a": "b"})
    upload_id = upload["UploadId"]
    listed = s3.list_multipart_uploads(Bucket="multipart")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in listed] == [("big", upload_id)]
    etags = []
    for number, data in enumerate(parts, 1):
        reply = s3.upload_part(Bucket="multipart", Key="big", UploadId=upload_id, PartNumber=number, Body=data)
        assert reply["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        etags.append(reply["ETag"])
    # A part sent again replaces the earlier one.
    s3.upload_part(Bucket="multipart", Key="big", UploadId=upload_id, PartNumber=3, Body=parts[2])
    listed_parts = s3.list_parts(Bucket="multipart", Key="big", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed_parts] == [
        (n, etags[n - 1], len(parts[n - 1])) for n in (1, 2, 3)
    ]
    with pytest.raises(ClientError) as caught:
        s3.complete_multipart_upload(
            Bucket="multipart",
            Key="big",
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 3, "ETag": etags[2]}, {"PartNumber": 1, "ETag": etags[0]}]},
        )
    assert error_code(caught.value) == "InvalidPartOrder"
    with pytest.raises(ClientError) as caught:
        s3.complete_multipart_upload(
            Bucket="multipart",
            Key="big",
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etags[1]}]},
        )
    assert error_code(caught.value) == "InvalidPart"
    reply = s3.complete_multipart_upload(
        Bucket="multipart",
        Key="big",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n - 1]} for n in (1, 2, 3)]},
    )
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    assert reply["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-3"'
    whole = b"".join(parts)
    got = s3.get_object(Bucket="multipart", Key="big")
    assert got["Body"].read() == whole
    assert (got["ContentType"], got["Metadata"], got["ETag"]) == ("text/x-big", {"a": "b"}, reply["ETag"])
    for start, end in [(0, 0), (5 * MiB - 2, 5 * MiB + 2), (10 * MiB, len(whole) - 1), (123, 10 * MiB + 5)]:
        ranged = s3.get_object(Bucket="multipart", Key="big", Range=f"bytes={start}-{end}")["Body"].read()
        assert ranged == whole[start : end + 1]
    assert s3.list_multipart_uploads(Bucket="multipart").get("Uploads", []) == []
    with pytest.raises(ClientError) as caught:
        s3.list_parts(Bucket="multipart", Key="big", UploadId=upload_id)
    assert error_code(caught.value) == "NoSuchUpload"
    # Abort leaves nothing behind.
    aborted = s3.create_multipart_upload(Bucket="multipart", Key="gone")["UploadId"]
    s3.upload_part(Bucket="multipart", Key="gone", UploadId=aborted, PartNumber=1, Body=b"part")
    s3.abort_multipart_upload(Bucket="multipart", Key="gone", UploadId=aborted)
    names = {o.name for o in door.client.list("multipart", token_user=door.alice)}
    assert not [n for n in names if aborted in n]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="multipart")["Contents"]] == ["big"]
    # Overwriting the multipart object evicts its parts.
    s3.put_object(Bucket="multipart", Key="big", Body=b"small")
    assert len(list(door.client.list("multipart", token_user=door.alice))) == 2


def test_copies(door: Door) -> None:
    s3 = door.s3()
    s3.create_bucket(Bucket="copy-from")
    s3.create_bucket(Bucket="copy-to")
    data = os.urandom(6 * MiB + 5)
    etag = s3.put_object(Bucket="copy-from", Key="src", Body=data, ContentType="x/y", Metadata={"m": "1"})["ETag"]
    reply = s3.copy_object(Bucket="copy-to", Key="dst", CopySource={"Bucket": "copy-from", "Key": "src"})
    assert reply["CopyObjectResult"]["ETag"] == etag
    got = s3.get_object(Bucket="copy-to", Key="dst")
    assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (data, "x/y", {"m": "1"})
    s3.copy_object(
        Bucket="copy-to",
        Key="dst",
        CopySource={"Bucket": "copy-from", "Key": "src"},
        MetadataDirective="REPLACE",
        ContentType="a/b",
        Metadata={"n": "2"},
    )
    head = s3.head_object(Bucket="copy-to", Key="dst")
    assert (head["ContentType"], head["Metadata"]) == ("a/b", {"n": "2"})
    with pytest.raises(ClientError) as caught:
        s3.copy_object(Bucket="copy-to", Key="x", CopySource={"Bucket": "copy-from", "Key": "missing"})
    assert error_code(caught.value) == "NoSuchKey"
    upload_id = s3.create_multipart_upload(Bucket="copy-to", Key="joined")["UploadId"]
    first = s3.upload_part_copy(
        Bucket="copy-to",
        Key="joined",
        UploadId=upload_id,
        PartNumber=1,
        CopySource={"Bucket": "copy-from", "Key": "src"},
        CopySourceRange=f"bytes=0-{5 * MiB - 1}",
    )["CopyPartResult"]["ETag"]
    second = s3.upload_part(Bucket="copy-to", Key="joined", UploadId=upload_id, PartNumber=2, Body=b"tail")["ETag"]
    s3.complete_multipart_upload(
        Bucket="copy-to",
        Key="joined",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]},
    )
    assert s3.get_object(Bucket="copy-to", Key="joined")["Body"].read() == data[: 5 * MiB] + b"tail"


def test_large_multipart_transfer(door: Door, tmp_path: Path) -> None:
    """boto3's managed transfer (parallel 8 MiB parts) up and down, byte for byte, and ranged reads across parts."""
    s3 = door.s3()
    s3.create_bucket(Bucket="large")
    source = tmp_path / "large.bin"
    source.write_bytes(os.urandom(40 * MiB + 123))
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4)
    s3.upload_file(str(source), "large", "large.bin", Config=config)
    head = s3.head_object(Bucket="large", Key="large.bin")
    assert head["ContentLength"] == source.stat().st_size
    assert head["ETag"].endswith('-6"')
    copy = tmp_path / "copy.bin"
    s3.download_file("large", "large.bin", str(copy), Config=config)
    assert hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()
    data = source.read_bytes()
    for start, end in [(8 * MiB - 1, 8 * MiB), (13 * MiB, 29 * MiB), (40 * MiB, 40 * MiB + 122)]:
        got = s3.get_object(Bucket="large", Key="large.bin", Range=f"bytes={start}-{end}")["Body"].read()
        assert got == data[start : end + 1]


def test_readers_during_overwrites_see_one_version_whole(door: Door) -> None:
    """Gets racing overwrites of the same key return one of the versions, whole, never an error or a mix."""
    s3 = door.s3()
    s3.create_bucket(Bucket="racing")
    versions = [bytes([i]) * (2 * MiB + i) for i in range(4)]
    s3.put_object(Bucket="racing", Key="k", Body=versions[0])
    stop = threading.Event()
    seen: list[bytes] = []
    failures: list[BaseException] = []

    def read() -> None:
        reader = door.s3()
        while not stop.is_set():
            try:
                seen.append(reader.get_object(Bucket="racing", Key="k")["Body"].read())
            except BaseException as exc:  # every failure is reported below
                failures.append(exc)
                return

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for data in versions[1:] * 3:
            s3.put_object(Bucket="racing", Key="k", Body=data)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert failures == []
    assert seen
    assert {v[:1] for v in seen if v not in versions} == set()
    assert s3.get_object(Bucket="racing", Key="k")["Body"].read() == versions[3]


def test_cli_issues_keys_and_revoking_one_refuses_it(door: Door) -> None:
    env = {**os.environ, "DYNOSTORE_GATEWAY": door.fabric.gateway, "DYNOSTORE_TOKEN": door.bob}
    made = subprocess.run(
        [sys.executable, "-m", "dynostore", "token", "new", "--s3"], env=env, capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    printed = dict(line.split(" = ") for line in made.stdout.splitlines())
    keys = (printed["aws_access_key_id"], printed["aws_secret_access_key"])
    s3 = door.s3(keys)
    s3.create_bucket(Bucket="bobs")
    assert "bobs" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(NotFound):  # another user's key is not bob's to revoke
        door.client.revoke_s3_key(door.alice_keys[0], token_user=door.bob)
    door.client.revoke_s3_key(keys[0], token_user=door.bob)
    # The door's cache of signing keys may serve the key up to a minute; a new door refuses it at once.
    with s3_door(door.fabric) as endpoint:
        fresh = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=keys[0],
            aws_secret_access_key=keys[1],
            region_name="us-east-1",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        with pytest.raises(ClientError) as caught:
            fresh.list_buckets()
        assert error_code(caught.value) == "InvalidAccessKeyId"


def test_two_doors_see_each_others_overwrites_and_deletes(door: Door) -> None:
    """A door that remembers where a key's version was finds the newer one another door wrote."""
    s3 = door.s3()
    s3.create_bucket(Bucket="two-doors")
    s3.put_object(Bucket="two-doors", Key="k", Body=b"first")
    with s3_door(door.fabric) as endpoint:
        other = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=door.alice_keys[0],
            aws_secret_access_key=door.alice_keys[1],
            region_name="us-east-1",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        assert other.get_object(Bucket="two-doors", Key="k")["Body"].read() == b"first"
        s3.put_object(Bucket="two-doors", Key="k", Body=b"second")
        assert other.get_object(Bucket="two-doors", Key="k")["Body"].read() == b"second"
        other.put_object(Bucket="two-doors", Key="k", Body=b"third")
        assert s3.get_object(Bucket="two-doors", Key="k")["Body"].read() == b"third"
        s3.delete_object(Bucket="two-doors", Key="k")
        with pytest.raises(ClientError) as caught:
            other.head_object(Bucket="two-doors", Key="k")
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_sdk_lists_the_objects_of_one_name(door: Door) -> None:
    """list(name=) answers from the name entries: the S3 door's lookups do not list whole buckets."""
    keys = [
        door.client.put(data=bytes([i]), token_user=door.alice, catalog="named", name=n) for i, n in enumerate("aba")
    ]
    assert sorted(i.key for i in door.client.list("named", token_user=door.alice, name="a")) == sorted(
        [keys[0], keys[2]]
    )
    assert [i.key for i in door.client.list("named", token_user=door.alice, name="b")] == [keys[1]]
    assert list(door.client.list("named", token_user=door.alice, name="c")) == []
    door.client.evict(keys[0], token_user=door.alice)
    assert [i.key for i in door.client.list("named", token_user=door.alice, name="a")] == [keys[2]]


def test_aws_chunked_unsigned_with_trailer(door: Door) -> None:
    """STREAMING-UNSIGNED-PAYLOAD-TRAILER: chunks without signatures, then a checksum trailer, which is checked."""
    s3 = door.s3()
    s3.create_bucket(Bucket="trailer")
    data = os.urandom(150_000)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    body = b""
    for start in range(0, len(data), 65536):
        piece = data[start : start + 65536]
        body += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    body += f"0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n".encode()
    headers = {
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
        "content-encoding": "aws-chunked",
        "content-length": str(len(body)),
    }
    url, signed_headers = signed_as_is(door, "PUT", "/trailer/obj", headers)
    reply = requests.put(url, data=body, headers=signed_headers, timeout=30)
    assert reply.status_code == 200, reply.content
    assert reply.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert s3.get_object(Bucket="trailer", Key="obj")["Body"].read() == data
    wrong = body.replace(crc.encode(), base64.b64encode(b"\0\0\0\0"))
    url, signed_headers = signed_as_is(door, "PUT", "/trailer/wrong", headers)
    reply = requests.put(url, data=wrong, headers=signed_headers, timeout=30)
    assert reply.status_code == 400
    assert b"<Code>BadDigest</Code>" in reply.content
    with pytest.raises(ClientError):
        s3.head_object(Bucket="trailer", Key="wrong")
    # The same checksum as a header of a plain body, as boto3 sends it.
    s3.put_object(Bucket="trailer", Key="header", Body=data, ChecksumCRC32=crc)
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="trailer", Key="header", Body=data, ChecksumCRC32=base64.b64encode(b"\0" * 4).decode())
    assert error_code(caught.value) == "BadDigest"


@pytest.mark.parametrize("relay", [False, True], ids=["direct", "relay"])
def test_sdk_streams_from_a_byte_on(door: Door, relay: bool) -> None:
    """get_stream(start=) yields the object from that byte on (the door's ranged reads), skipping whole segments."""
    data = os.urandom(10 * MiB + 3)
    key = door.client.put(data=data, token_user=door.alice, catalog="streams")
    small = door.client.put(data=b"tiny inline object", token_user=door.alice, catalog="streams")

    async def read(object_key: str, start: int) -> bytes:
        async with AsyncClient(door.fabric.gateway, relay=relay) as client:
            return b"".join([s async for s in client.get_stream(object_key, door.alice, start)])

    for start in (0, 1, 3 * MiB - 1, 3 * MiB, 3 * MiB + 1, 9 * MiB + 5, len(data) - 1, len(data), len(data) + 7):
        assert asyncio.run(read(key, start)) == data[start:], start
    assert asyncio.run(read(small, 5)) == b"tiny inline object"[5:]


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_a_door_that_died_with_connections_open_restarts_at_its_port_at_once(door: Door, how: str) -> None:
    """Its listening socket allows reuse: the dead door's connections (FIN_WAIT, TIME_WAIT) do not hold the port."""
    fabric = door.fabric
    port = free_port()
    ready = fabric.run_dir / f"s3-{port}.addr"
    command = ["s3", "--gateway", fabric.gateway, "--listen", f"127.0.0.1:{port}", "--ready-file", str(ready)]
    process = ManagedProcess(
        f"s3-{port}",
        [*fabric.python_command, *command],
        fabric.root / "logs" / f"s3-{port}.log",
        env={"DYNOSTORE_ADMIN_TOKEN": fabric.admin_token},
    )
    process.start()
    try:
        endpoint = f"http://{process.wait_for_file(ready)}"
        s3 = s3_client(endpoint, *door.alice_keys, retries={"max_attempts": 1})
        s3.create_bucket(Bucket=f"restart-{how}")
        s3.put_object(Bucket=f"restart-{how}", Key="k", Body=b"before")  # boto3 keeps this connection open
        process.kill() if how == "kill" else process.stop()
        ready.unlink()
        process.start()
        assert process.wait_for_file(ready) == f"127.0.0.1:{port}"  # the old code's door exited: port in use
        fresh = s3_client(endpoint, *door.alice_keys, retries={"max_attempts": 1})
        assert fresh.get_object(Bucket=f"restart-{how}", Key="k")["Body"].read() == b"before"
    finally:
        process.stop()


def test_bytes_are_visible_only_through_a_committed_version(door: Door) -> None:
    """A delete that evicted the meta object and died before the data object does not bring the bytes back.

    Before 2026-12-04 a PutObject's data object was named by its S3 key, so such a leftover (or the bytes of
    a put whose meta commit failed) showed as the key again, with a made-up ETag, once no meta object hid it.
    """
    s3 = door.s3()
    s3.create_bucket(Bucket="leftovers")
    s3.put_object(Bucket="leftovers", Key="k", Body=b"deleted soon")
    (meta,) = door.client.list("leftovers", token_user=door.alice, name=".dynostore-s3/meta/k")
    door.client.evict(meta.key, token_user=door.alice)  # the delete's first step only
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="leftovers", Key="k")
    assert error_code(caught.value) == "NoSuchKey"
    assert s3.list_objects_v2(Bucket="leftovers").get("Contents", []) == []
    names = {i.name: i.key for i in door.client.list("leftovers", token_user=door.alice)}
    assert set(names) == {".dynostore-s3/data/k"}
    # The door's leftover grace (600 s) keeps data objects this young: they may be another door's put.
    s3.put_object(Bucket="leftovers", Key="k", Body=b"new")
    s3.delete_object(Bucket="leftovers", Key="k")
    assert [i.key for i in door.client.list("leftovers", token_user=door.alice)] == [names[".dynostore-s3/data/k"]]

    # Doors with no grace: a put of the key anew does not look for leftovers; an overwrite that looks the
    # key up (a door that does not remember it) evicts them, and so does a delete.
    def data_objects() -> set[str]:
        return {i.key for i in door.client.list("leftovers", token_user=door.alice, name=".dynostore-s3/data/k")}

    with s3_door(door.fabric, "--leftover-grace", "0") as endpoint:
        s3_client(endpoint, *door.alice_keys).put_object(Bucket="leftovers", Key="k", Body=b"newer")
        assert len(data_objects()) == 2
        assert names[".dynostore-s3/data/k"] in data_objects()
    with s3_door(door.fabric, "--leftover-grace", "0") as endpoint:
        hasty = s3_client(endpoint, *door.alice_keys)
        hasty.put_object(Bucket="leftovers", Key="k", Body=b"newest")
        assert len(data_objects()) == 1
        assert names[".dynostore-s3/data/k"] not in data_objects()
        assert hasty.get_object(Bucket="leftovers", Key="k")["Body"].read() == b"newest"
        door.client.evict(
            next(iter(door.client.list("leftovers", token_user=door.alice, name=".dynostore-s3/meta/k"))).key,
            token_user=door.alice,
        )  # a delete's first step again, then a delete through the door
        hasty.delete_object(Bucket="leftovers", Key="k")
        assert data_objects() == set()


def test_two_doors_creating_one_key_at_once_leave_one_version(door: Door) -> None:
    """Each door found no version of a new key, then both committed: the later commit replaces the earlier.

    Before 2026-12-06 a new key's commit was a plain put, so this left two meta objects, and the door whose
    put was first kept serving its own version (it remembered its meta object, which still existed) after
    the other door's later put had returned. The second door here is the door's own code in this process,
    with its lookup done before the first door's put, as in the race.
    """
    s3 = door.s3()
    s3.create_bucket(Bucket="one-new-key")
    caller = Caller(door.alice, door.alice, "", b"", "", "", "", "")

    async def second_door() -> tuple[str, list[S3Object]]:
        async with AsyncClient(door.fabric.gateway) as client:
            store = Store(client)
            bucket = await store.writable(caller, "one-new-key")
            found = await store.previous(caller, bucket, "k")  # before the first door's put: no version yet
            s3.put_object(Bucket="one-new-key", Key="k", Body=b"first door")
            data = b"second door"
            data_key = await client.put(data, door.alice, bucket.catalog, name=DATA + "k")
            etag = hashlib.md5(data).hexdigest()
            await store.commit(
                caller, bucket, S3Object("k", len(data), etag, time.time(), parts=[(data_key, 11)]), found
            )
            return etag, found

    etag, found = asyncio.run(second_door())
    assert found == []
    assert s3.get_object(Bucket="one-new-key", Key="k")["Body"].read() == b"second door"
    assert s3.head_object(Bucket="one-new-key", Key="k")["ETag"] == f'"{etag}"'
    assert len(list(door.client.list("one-new-key", token_user=door.alice, name=META + "k"))) == 1
    s3.delete_object(Bucket="one-new-key", Key="k")
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="one-new-key", Key="k")
    assert error_code(caught.value) == "NoSuchKey"

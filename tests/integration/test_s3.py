"""The S3 front door (``dynostore s3``) against boto3, on one fabric with the door shared by the module."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.client import Config
from botocore.exceptions import ClientError

from dynostore.client import Client
from dynostore.local import LocalFabric

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
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
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
    assert sorted(names) == [".dynostore-s3/meta/dir/file.bin", "dir/file.bin"]
    s3.delete_object(Bucket="objects", Key="dir/file.bin")
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="objects", Key="dir/file.bin")
    assert error_code(caught.value) == "NoSuchKey"
    s3.delete_object(Bucket="objects", Key="dir/file.bin")  # deleting nothing is fine
    assert list(door.client.list("objects", token_user=door.alice)) == []

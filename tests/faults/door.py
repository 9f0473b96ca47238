"""The S3 front door under faults: boto3 threads that overwrite, delete, upload in parts, read and list objects.

Each worker owns a few object names and writes them one operation at a
time, so the versions of a name are in order; every worker reads and lists
every name. A version is the bytes a PutObject or a completed multipart
upload gave a name, or its absence after a DeleteObject. A read started at
time t may return the newest version whose request had returned 200 before
t, or any later one (in flight, or failed: a request that failed may or may
not have taken effect), never an older version nor a mix of two; the same
holds after recovery, and the ETag of a version is what S3 computes (the
MD5, or the MD5 of the parts' MD5s and their count).

Failures must be S3's own retryable answer (``ServiceUnavailable``, 503)
or, while the door itself was down, a connection error; an
``InternalError`` (the door failed on something it did not expect) or any
other code is a violation.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from tests.faults.ledger import INLINE_MAX, Ledger, MiB, newest_returned
from tests.faults.workload import Drawing
from tests.servers import s3_client

BUCKET = "doorfaults"
NAMES_PER_WORKER = 4
MAX_OPS_PER_WORKER = 400
# Multipart uploads of the whole run (each sends a 5 MiB part: S3's smallest but the last).
MAX_MULTIPART = 4
PART = 5 * MiB
RETRYABLE = frozenset({"ServiceUnavailable", "SlowDown"})
CONNECTION_ERRORS = (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError)


def door_client(endpoint: str, keys: tuple[str, str]) -> Any:
    """A boto3 client of the door that tries each request once (so the suite sees every failure)."""
    return s3_client(endpoint, *keys, retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30)


def etag_of(parts: list[bytes]) -> str:
    """The ETag S3 gives an object of one part (its MD5) or of several uploaded parts."""
    if len(parts) == 1:
        return hashlib.md5(parts[0]).hexdigest()
    joined = b"".join(hashlib.md5(part).digest() for part in parts)
    return f"{hashlib.md5(joined).hexdigest()}-{len(parts)}"


@dataclass
class S3Version:
    """One write of a name: the MD5 of its bytes (None: deleted), their size, the ETag, and when."""

    md5: str | None
    size: int
    etag: str
    started: float
    returned_at: float = 0.0

    def describe(self) -> str:
        return "absent" if self.md5 is None else f"{self.size} bytes, ETag {self.etag}"


class DoorLedger:
    """Every name's versions, and the checks of what reads returned (thread-safe); violations go to ``ledger``."""

    def __init__(self, ledger: Ledger, names: list[str]) -> None:
        self.ledger = ledger
        self._lock = threading.Lock()
        # Before the run every name is absent, as if deleted at the start.
        self.versions = {name: [S3Version(None, 0, "", 0.0, returned_at=ledger.started)] for name in names}
        self.multipart = 0
        # Requests that met a closed door (allowed only if the scenario stops the door).
        self.connection_errors = 0

    def count(self, op: str, outcome: str) -> None:
        with self._lock:
            self.ledger.figures.ops[f"s3 {op}", outcome] += 1

    def take_multipart(self) -> bool:
        """Whether the run may make one more multipart upload (counted as taken)."""
        with self._lock:
            if self.multipart >= MAX_MULTIPART:
                return False
            self.multipart += 1
            return True

    def begin(self, name: str, parts: list[bytes] | None) -> S3Version:
        """A write of ``name`` starts: ``parts`` of bytes, or None for a delete."""
        if parts is None:
            version = S3Version(None, 0, "", time.monotonic())
        else:
            data = b"".join(parts)
            version = S3Version(hashlib.md5(data).hexdigest(), len(data), etag_of(parts), time.monotonic())
        with self._lock:
            self.versions[name].append(version)
        return version

    def returned(self, op: str, name: str, version: S3Version, etag: str | None = None) -> None:
        if etag is not None and etag.strip('"') != version.etag:
            self.ledger.violation(f"s3 {op} of {name} answered ETag {etag}, S3 computes {version.etag}")
        with self._lock:
            version.returned_at = time.monotonic()
        self.count(op, "ok")

    def readable(self, name: str, started: float) -> list[S3Version]:
        """The versions a read of ``name`` started at ``started`` may see (see the module's docstring)."""
        with self._lock:
            versions = list(self.versions[name])
        return versions[newest_returned([v.returned_at for v in versions], started) :]

    def check(self, op: str, name: str, started: float, md5: str | None, size: int, etag: str = "") -> None:
        """Hold what a read of ``name`` found (``md5`` None: absent) to the versions it may see."""
        allowed = self.readable(name, started)
        for version in allowed:
            if version.md5 == md5 and (md5 is None or (version.size == size and (not etag or version.etag == etag))):
                self.count(op, "ok" if md5 is not None else "absent")
                return
        found = "absent" if md5 is None else f"{size} bytes, MD5 {md5}, ETag {etag or '-'}"
        self.ledger.violation(
            f"s3 {op} of {name} started at {started - self.ledger.started:.2f} s found {found}; it may see only "
            + "; ".join(v.describe() for v in allowed)
            + f"; faults: {self.ledger.around(started)}"
        )

    def check_etag(self, op: str, name: str, started: float, size: int, etag: str) -> None:
        """:meth:`check` of an answer that gives only the size and ETag (HeadObject, a listing)."""
        md5 = next((v.md5 for v in self.readable(name, started) if v.etag == etag), "no version's")
        self.check(op, name, started, md5, size, etag)

    def failed(self, op: str, name: str, exc: BaseException) -> None:
        """Count a request that failed, and hold its failure to what the door promises."""
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            self.count(op, code or "no code")
            if code not in RETRYABLE:
                self.ledger.violation(f"s3 {op} of {name} failed with {code}: {exc}")
        elif isinstance(exc, CONNECTION_ERRORS):
            self.count(op, type(exc).__name__)
            with self._lock:
                self.connection_errors += 1
        else:
            self.count(op, type(exc).__name__)
            self.ledger.violation(f"s3 {op} of {name} raised {exc!r}")


class DoorWorker(Drawing):
    """One boto3 thread: writes its own names one request at a time, reads and lists everyone's."""

    def __init__(
        self, number: int, endpoint: str, keys: tuple[str, str], door: DoorLedger, seed: int, deadline: float
    ) -> None:
        super().__init__(f"door-worker{number}", door.ledger, seed, deadline, MAX_OPS_PER_WORKER)
        self.s3 = door_client(endpoint, keys)
        self.door = door
        self.own = [f"w{number}/n{i}" for i in range(NAMES_PER_WORKER)]
        self.names = sorted(door.versions)
        self.ops = [
            (self.put, 8),
            (self.delete, 1),
            (self.multipart, 1),
            (self.get, 8),
            (self.head, 3),
            (self.list, 2),
        ]

    def _size(self) -> int:
        kind = self.rng.choices(["empty", "inline", "whole", "large"], weights=[1, 3, 5, 1])[0]
        if kind == "empty":
            return 0
        if kind == "inline":
            return self.rng.randint(1, INLINE_MAX)
        if kind == "whole":
            return self.rng.randint(INLINE_MAX + 1, 256 * 1024)
        return self.rng.randint(MiB, 4 * MiB)

    # writes

    def put(self) -> None:
        name = self.rng.choice(self.own)
        data = self.rng.randbytes(self._size())
        version = self.door.begin(name, [data])
        try:
            reply = self.s3.put_object(Bucket=BUCKET, Key=name, Body=data)
        except Exception as exc:
            self.door.failed("put", name, exc)
        else:
            self.door.returned("put", name, version, reply["ETag"])

    def delete(self) -> None:
        name = self.rng.choice(self.own)
        version = self.door.begin(name, None)
        try:
            self.s3.delete_object(Bucket=BUCKET, Key=name)
        except Exception as exc:
            self.door.failed("delete", name, exc)
        else:
            self.door.returned("delete", name, version)

    def multipart(self) -> None:
        """Two parts, 5 MiB and a small one; a failed upload is aborted (best effort)."""
        if not self.door.take_multipart():
            return self.put()
        name = self.rng.choice(self.own)
        parts = [self.rng.randbytes(PART), self.rng.randbytes(self.rng.randint(1, 300 * 1024))]
        version = self.door.begin(name, parts)
        upload = ""
        try:
            upload = self.s3.create_multipart_upload(Bucket=BUCKET, Key=name)["UploadId"]
            done = []
            for number, part in enumerate(parts, 1):
                reply = self.s3.upload_part(Bucket=BUCKET, Key=name, UploadId=upload, PartNumber=number, Body=part)
                done.append({"PartNumber": number, "ETag": reply["ETag"]})
            reply = self.s3.complete_multipart_upload(
                Bucket=BUCKET, Key=name, UploadId=upload, MultipartUpload={"Parts": done}
            )
        except Exception as exc:
            self.door.failed("multipart", name, exc)
            if upload:
                try:
                    self.s3.abort_multipart_upload(Bucket=BUCKET, Key=name, UploadId=upload)
                except Exception as abort:
                    self.door.failed("abort", name, abort)
                else:
                    self.door.count("abort", "ok")
        else:
            self.door.returned("multipart", name, version, reply["ETag"])

    # reads

    def get(self) -> None:
        name = self.rng.choice(self.names)
        started = time.monotonic()
        try:
            reply = self.s3.get_object(Bucket=BUCKET, Key=name)
            data = reply["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchKey":
                return self.door.check("get", name, started, None, 0)
            self.door.failed("get", name, exc)
        except Exception as exc:
            self.door.failed("get", name, exc)
        else:
            self.door.check("get", name, started, hashlib.md5(data).hexdigest(), len(data), reply["ETag"].strip('"'))

    def head(self) -> None:
        name = self.rng.choice(self.names)
        started = time.monotonic()
        try:
            reply = self.s3.head_object(Bucket=BUCKET, Key=name)
        except ClientError as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return self.door.check("head", name, started, None, 0)
            self.door.failed("head", name, exc)
        except Exception as exc:
            self.door.failed("head", name, exc)
        else:
            self.door.check_etag("head", name, started, reply["ContentLength"], reply["ETag"].strip('"'))

    def list(self) -> None:
        """List one worker's names; each is held to its own versions (absent where not listed)."""
        prefix = f"w{self.rng.randrange(len(self.names) // NAMES_PER_WORKER)}/"
        started = time.monotonic()
        try:
            reply = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        except Exception as exc:
            self.door.failed("list", prefix, exc)
            return
        listed = {item["Key"]: item for item in reply.get("Contents", [])}
        for name in (n for n in self.names if n.startswith(prefix)):
            item = listed.pop(name, None)
            if item is None:
                self.door.check("list", name, started, None, 0)
                continue
            self.door.check_etag("list", name, started, item["Size"], item["ETag"].strip('"'))
        for name in listed:
            self.door.ledger.violation(f"s3 list of {prefix} lists {name}, which no worker wrote")


def door_workers(
    endpoint: str, keys: tuple[str, str], ledger: Ledger, rng: random.Random, deadline: float, count: int
) -> tuple[DoorLedger, list[DoorWorker]]:
    """The bucket, made now, and ``count`` workers of it (not started) with their ledger."""
    door_client(endpoint, keys).create_bucket(Bucket=BUCKET)
    names = [f"w{i}/n{j}" for i in range(count) for j in range(NAMES_PER_WORKER)]
    door = DoorLedger(ledger, names)
    workers = [DoorWorker(i, endpoint, keys, door, rng.randrange(2**32), deadline) for i in range(count)]
    return door, workers


def check_door(door: DoorLedger, endpoint: str, keys: tuple[str, str], door_stopped: bool) -> None:
    """After recovery: every name reads back as a version it may hold, and the bucket lists exactly those."""
    s3 = door_client(endpoint, keys)
    if door.connection_errors and not door_stopped:
        door.ledger.violation(f"{door.connection_errors} requests found the door closed, and it was never stopped")
    listed = {
        item["Key"]: item
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for item in page.get("Contents", [])
    }
    checked = 0
    for name in sorted(door.versions):
        started = time.monotonic()
        try:
            reply = s3.get_object(Bucket=BUCKET, Key=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "NoSuchKey":
                door.ledger.violation(f"after recovery, s3 get of {name} failed: {exc}")
                continue
            door.check("get after", name, started, None, 0)
            if name in listed:
                door.ledger.violation(f"after recovery, {name} is listed but reads as absent")
            continue
        data = reply["Body"].read()
        etag = reply["ETag"].strip('"')
        door.check("get after", name, started, hashlib.md5(data).hexdigest(), len(data), etag)
        item = listed.get(name)
        if item is None or (item["Size"], item["ETag"].strip('"')) != (len(data), etag):
            door.ledger.violation(f"after recovery, {name} reads as {len(data)} bytes, ETag {etag}; listed: {item}")
        checked += 1
    for name in set(listed) - set(door.versions):
        door.ledger.violation(f"after recovery, the bucket lists {name}, which no worker wrote")
    door.ledger.figures.objects_checked = checked

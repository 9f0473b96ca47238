"""The backend conformance suite against real servers (moto S3, Ceph RADOS, Ceph RGW), and their failures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dynostore.container.backends import Backend, ChunkWriter
from dynostore.container.backends.s3 import S3Backend
from dynostore.erasure import format as chunk_format
from dynostore.erasure.checksum import checksum
from dynostore.errors import NotFound, Unavailable
from dynostore.local import free_port
from tests.backend_conformance import KEY, BackendConformance, MiB, read, run, write
from tests.conftest import skip_or_fail
from tests.servers import REGION, CephCluster, S3Server, ceph_cluster, ceph_missing, moto_server

pytestmark = pytest.mark.integration


async def write_all(writer: ChunkWriter, fragments: int) -> None:
    """Write ``fragments`` random fragments of 1 MiB, then commit."""
    for _ in range(fragments):
        data = os.urandom(MiB)
        await writer.write(data, checksum(data))
    await writer.commit()


def s3_backend(server: S3Server, **kwargs: Any) -> S3Backend:
    return S3Backend(
        "dynostore",
        endpoint=server.endpoint,
        region=REGION,
        prefix=f"t-{uuid.uuid4().hex[:12]}/",
        access_key=server.access_key,
        secret_key=server.secret_key,
        part_size=5 * MiB,
        **kwargs,
    )


def rados_backend(cluster: CephCluster) -> Backend:
    from dynostore.container.backends.rados import RadosBackend

    return RadosBackend(
        cluster.pool,
        ceph_conf=cluster.conf,
        namespace=f"t-{uuid.uuid4().hex[:12]}",
        object_size=2 * MiB,
        capacity_bytes=1 << 30,
    )


@pytest.fixture(params=["s3-moto", "rados", "s3-rgw"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    made: Backend
    if request.param == "s3-moto":
        made = s3_backend(request.getfixturevalue("moto"))
    elif request.param == "s3-rgw":
        cluster: CephCluster = request.getfixturevalue("ceph")
        assert cluster.rgw is not None
        made = s3_backend(cluster.rgw)
    else:
        made = rados_backend(request.getfixturevalue("ceph"))
    run(made.check())
    yield made
    run(made.close())


class TestRemoteBackends(BackendConformance):
    """S3 on moto and on Ceph RGW, and RADOS on a micro Ceph cluster."""


def test_s3_uses_multipart_and_ranged_reads(moto: S3Server) -> None:
    backend = s3_backend(moto)
    calls: list[tuple[str, dict[str, Any]]] = []
    original = backend.call

    async def spy(operation: str, **kwargs: Any) -> dict[str, Any]:
        calls.append((operation, kwargs))
        return await original(operation, **kwargs)

    backend.call = spy  # type: ignore[method-assign]
    fragments = [os.urandom(MiB) for _ in range(12)]
    run(write(backend, fragments))
    parts = [kw for op, kw in calls if op == "upload_part"]
    assert len(parts) == 3  # 12 MiB in parts of >= 5 MiB: 5+, 5+, rest
    assert all(len(kw["Body"]) >= 5 * MiB for kw in parts[:-1])
    calls.clear()
    assert run(read(backend, offset=10 * MiB, length=10)) == [fragments[10]]
    ranges = [kw["Range"] for op, kw in calls if op == "get_object"]
    assert ranges[0].startswith("bytes=-")  # the tail with the index
    start, stop = (int(x) for x in ranges[-1].removeprefix("bytes=").split("-"))
    assert stop - start + 1 == MiB + 8  # one record fetched, not the chunk
    run(backend.close())


def test_s3_part_upload_failure_aborts_cleanly(moto: S3Server) -> None:
    backend = s3_backend(moto)
    original = backend.call
    uploads = 0

    async def flaky(operation: str, **kwargs: Any) -> dict[str, Any]:
        nonlocal uploads
        if operation == "upload_part":
            uploads += 1
            if uploads == 2:
                raise Unavailable("S3 upload_part failed: injected.")
        return await original(operation, **kwargs)

    backend.call = flaky  # type: ignore[method-assign]

    async def scenario() -> None:
        writer = await backend.open_writer(KEY, 0)
        with pytest.raises(Unavailable):
            await write_all(writer, 20)
        await writer.abort()

    run(scenario())
    with pytest.raises(NotFound):
        run(read(backend))
    client = moto.client()
    assert client.list_multipart_uploads(Bucket="dynostore", Prefix=backend.prefix).get("Uploads", []) == []
    run(backend.close())


def test_s3_server_stopped_mid_put_fails_the_write(tmp_path: Path) -> None:
    with moto_server(tmp_path) as server:
        server.create_bucket("dynostore")
        backend = s3_backend(server, timeout=5.0)
        run(backend.check())

        async def scenario() -> None:
            writer = await backend.open_writer(KEY, 0)
            for _ in range(6):  # one part uploaded
                data = os.urandom(MiB)
                await writer.write(data, checksum(data))
            assert server.process is not None
            server.process.kill()
            started = time.monotonic()
            with pytest.raises(Unavailable, match="S3"):
                await write_all(writer, 10)
            assert time.monotonic() - started < 60
            await writer.abort()  # logs, does not raise

        run(scenario())
        run(backend.close())


def _container(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dynostore", "container", "--gateway", "127.0.0.1:1", "--root", str(tmp_path), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DYNOSTORE_TOKEN": "unused"},
        check=False,
    )


def test_unreachable_s3_is_one_clear_message(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    done = _container(tmp_path, "--backend", "s3", "--s3-bucket", "nope", "--s3-endpoint", endpoint)
    assert done.returncode == 1
    assert f"Cannot reach S3 bucket 'nope' at {endpoint}" in done.stderr
    assert "s3_bucket / s3_endpoint" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_s3_bucket_is_one_clear_message(tmp_path: Path, moto: S3Server) -> None:
    keys = moto.write_credentials(tmp_path / "keys")
    done = _container(
        tmp_path,
        "--backend", "s3", "--s3-bucket", "no-such-bucket", "--s3-endpoint", moto.endpoint,
        "--s3-access-key-file", str(keys["s3_access_key_file"]),
        "--s3-secret-key-file", str(keys["s3_secret_key_file"]),
    )  # fmt: skip
    assert done.returncode == 1
    assert "Cannot reach S3 bucket 'no-such-bucket'" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_rados_pool_is_one_clear_message(tmp_path: Path, ceph: CephCluster) -> None:
    done = _container(tmp_path, "--backend", "rados", "--rados-pool", "nope", "--ceph-conf", str(ceph.conf))
    assert done.returncode == 1
    assert "Ceph pool 'nope' does not exist" in done.stderr
    assert "rados_pool" in done.stderr
    assert "Traceback" not in done.stderr


def test_unreachable_ceph_is_one_clear_message(tmp_path: Path, ceph: CephCluster) -> None:
    conf = tmp_path / "ceph.conf"
    conf.write_text(f"[global]\nmon host = [v1:127.0.0.1:{free_port()}]\nauth client required = none\n")
    started = time.monotonic()
    done = _container(
        tmp_path, "--backend", "rados", "--rados-pool", ceph.pool, "--ceph-conf", str(conf), "--capacity-bytes", "1"
    )
    assert done.returncode == 1
    assert "Cannot reach the Ceph cluster" in done.stderr
    assert "ceph_conf / rados_pool" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 90


def test_rados_part_write_failure_leaves_only_the_old_chunk(ceph: CephCluster) -> None:
    backend = rados_backend(ceph)
    run(backend.check())
    run(write(backend, [b"old"]))
    original = backend.call  # type: ignore[attr-defined]
    writes = 0

    async def flaky(operation: str, *args: Any) -> Any:
        nonlocal writes
        if operation == "write_full":
            writes += 1
            if writes == 3:
                raise Unavailable("RADOS write_full failed: injected.")
        return await original(operation, *args)

    backend.call = flaky  # type: ignore[attr-defined]

    async def scenario() -> None:
        writer = await backend.open_writer(KEY, 0)
        with pytest.raises(Unavailable):
            await write_all(writer, 12)
        await writer.abort()

    run(scenario())
    assert run(read(backend)) == [b"old"]
    names = run(backend.run(lambda: sorted(o.key for o in backend._ioctx.list_objects())))  # type: ignore[attr-defined]
    assert len(names) == 2  # the old chunk's head and its one part
    run(backend.close())


def test_a_commit_cancelled_while_it_completes_leaves_the_chunk_whole(backend: Backend) -> None:
    """A cancelled put (a hedged write given up) aborts only once the commit's last call, which cannot stop, ended.

    That call (RADOS: the head's ``write_full``; S3: ``complete_multipart_upload``)
    runs in a thread; the abort used to remove the parts (RADOS) or the
    upload (S3) under it, leaving a head without parts, or a store call still
    running after the abort returned.
    """
    original = backend.call  # type: ignore[attr-defined]
    rados = not isinstance(backend, S3Backend)
    last = "write_full" if rados else "complete_multipart_upload"
    name = backend._head(KEY, 0) if rados else backend._object(KEY, 0)  # type: ignore[attr-defined]
    started, release = asyncio.Event(), asyncio.Event()

    async def held(operation: str, *args: Any, **kwargs: Any) -> Any:
        if operation == last and (args[0] if rados else kwargs["Key"]) == name:

            async def later() -> Any:  # like a store call's thread: a cancelled wait leaves it running
                started.set()
                await release.wait()
                return await original(operation, *args, **kwargs)

            return await asyncio.shield(asyncio.ensure_future(later()))
        return await original(operation, *args, **kwargs)

    backend.call = held  # type: ignore[attr-defined]
    fragments = [os.urandom(MiB + 5) for _ in range(6)]  # RADOS: parts of 2 MiB; S3: two of 5 MiB and less

    async def cancelled() -> bool:
        writer = await backend.open_writer(KEY, 0)
        for f in fragments:
            await writer.write(f, checksum(f))
        committing = asyncio.ensure_future(writer.commit())
        await asyncio.wait_for(started.wait(), 60)
        committing.cancel()
        aborting = asyncio.ensure_future(writer.abort())
        await asyncio.sleep(0.05)
        waited = not aborting.done()  # the last call is held: the abort must still wait for it
        release.set()
        await aborting
        with contextlib.suppress(asyncio.CancelledError):
            await committing
        return waited

    chunks_before = run(backend.usage()).chunks
    waited = run(cancelled())
    backend.call = original  # type: ignore[attr-defined]
    # The commit ended after all: the chunk is whole (an orphan, for the scrub's garbage collection) and
    # counted, never a head whose parts the abort removed.
    assert run(read(backend)) == fragments
    assert waited
    assert run(backend.usage()).chunks == chunks_before + 1
    if rados:
        names = run(backend.run(lambda: sorted(o.key for o in backend._ioctx.list_objects())))  # type: ignore[attr-defined]
        stream = len(chunk_format.MAGIC) + sum(chunk_format.RECORD_HEADER_BYTES + len(f) for f in fragments)
        assert len(names) == 1 + -(-stream // (2 * MiB))  # the head and its parts, nothing else
    else:
        uploads = run(backend.call("list_multipart_uploads", Prefix=backend.prefix)).get("Uploads", [])  # type: ignore[attr-defined]
        assert uploads == []
    assert run(backend.delete(KEY, 0))


def test_s3_start_aborts_uploads_left_by_a_crash(moto: S3Server) -> None:
    backend = s3_backend(moto)
    client = moto.client()
    client.create_multipart_upload(Bucket="dynostore", Key=f"{backend.prefix}chunks/01/{KEY}.0")
    client.create_multipart_upload(Bucket="dynostore", Key="elsewhere/x")  # not this container's
    run(backend.check())
    left = client.list_multipart_uploads(Bucket="dynostore").get("Uploads", [])
    assert [u["Key"] for u in left if u["Key"].startswith(backend.prefix)] == []
    assert any(u["Key"] == "elsewhere/x" for u in left)
    run(backend.close())


def test_rados_osd_lost_mid_put_fails_the_write(tmp_path: Path) -> None:
    reason = ceph_missing()
    if reason:
        skip_or_fail(reason)
    from dynostore.container.backends.rados import RadosBackend

    with ceph_cluster(tmp_path / "ceph") as cluster:  # a cluster of its own: its osd is killed
        backend = RadosBackend(cluster.pool, ceph_conf=cluster.conf, object_size=2 * MiB, timeout=5.0)
        run(backend.check())

        async def scenario() -> None:
            writer = await backend.open_writer(KEY, 0)
            for _ in range(5):  # two parts written
                data = os.urandom(MiB)
                await writer.write(data, checksum(data))
            osd = int((tmp_path / "ceph" / "pids" / "osd.pid").read_text())
            os.kill(osd, signal.SIGKILL)
            started = time.monotonic()
            with pytest.raises(Unavailable, match="RADOS"):
                await write_all(writer, 10)
            assert time.monotonic() - started < 60
            await writer.abort()  # cannot remove the parts now: logs, does not raise

        run(scenario())
        run(backend.close())

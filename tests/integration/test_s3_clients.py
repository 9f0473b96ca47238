"""Real S3 clients against the front door: the AWS CLI, rclone and s3fs (fsspec)."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dynostore.local import LocalFabric
from tests.conftest import skip_or_fail

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


@dataclass
class Keys:
    """The front door's URL and one user's access key."""

    endpoint: str
    access_key_id: str
    secret: str


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    with LocalFabric(containers=5, s3=True) as fabric, fabric.client() as client:
        token = fabric.create_user("carol")
        yield Keys(fabric.s3_endpoint, *client.create_s3_key(token_user=token))


def make_tree(root: Path) -> Path:
    """A directory tree of small and larger files, nested, with awkward names."""
    files = {
        "a.txt": b"alpha\n",
        "empty": b"",
        "sub/b.bin": os.urandom(300_000),
        "sub/deeper/c d.bin": os.urandom(9 * MiB + 7),  # several parts for clients that split at 8 MiB
        "sub/deeper/ünïcode.txt": "ü".encode() * 1000,
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def same_tree(left: Path, right: Path) -> bool:
    names = sorted(str(p.relative_to(left)) for p in left.rglob("*") if p.is_file())
    if names != sorted(str(p.relative_to(right)) for p in right.rglob("*") if p.is_file()):
        return False
    return all(filecmp.cmp(left / n, right / n, shallow=False) for n in names)


def aws(keys: Keys, home: Path, *args: str) -> str:
    """Run the AWS CLI against the door; return its output."""
    executable = shutil.which("aws")
    if executable is None:
        skip_or_fail("The AWS CLI (aws) is not installed.")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": keys.access_key_id,
        "AWS_SECRET_ACCESS_KEY": keys.secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
    }
    result = subprocess.run(
        [executable, "--endpoint-url", keys.endpoint, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_aws_cli(keys: Keys, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    aws(keys, tmp_path, "s3", "mb", "s3://cli")
    aws(keys, tmp_path, "s3", "cp", str(tree / "sub/deeper/c d.bin"), "s3://cli/one/big.bin")
    aws(keys, tmp_path, "s3", "cp", "s3://cli/one/big.bin", str(tmp_path / "big.copy"))
    assert filecmp.cmp(tree / "sub/deeper/c d.bin", tmp_path / "big.copy", shallow=False)
    aws(keys, tmp_path, "s3", "sync", str(tree), "s3://cli/tree")
    listing = aws(keys, tmp_path, "s3", "ls", "--recursive", "s3://cli/tree/")
    assert sorted(line.split(maxsplit=3)[3] for line in listing.splitlines()) == sorted(
        f"tree/{p.relative_to(tree)}" for p in tree.rglob("*") if p.is_file()
    )
    assert "PRE sub/" in aws(keys, tmp_path, "s3", "ls", "s3://cli/tree/")
    # A second sync finds nothing to do; a changed file is sent again.
    assert aws(keys, tmp_path, "s3", "sync", str(tree), "s3://cli/tree").strip() == ""
    (tree / "a.txt").write_bytes(b"changed, and longer\n")
    assert "a.txt" in aws(keys, tmp_path, "s3", "sync", str(tree), "s3://cli/tree")
    aws(keys, tmp_path, "s3", "sync", "s3://cli/tree", str(tmp_path / "back"))
    assert same_tree(tree, tmp_path / "back")
    aws(keys, tmp_path, "s3", "rm", "--recursive", "s3://cli/")
    assert aws(keys, tmp_path, "s3", "ls", "--recursive", "s3://cli/").strip() == ""
    aws(keys, tmp_path, "s3", "rb", "s3://cli")
    assert "cli" not in aws(keys, tmp_path, "s3", "ls").split()


def rclone(keys: Keys, *args: str) -> str:
    """Run rclone against the door (a remote named ``door`` from environment variables)."""
    executable = shutil.which("rclone")
    if executable is None:
        skip_or_fail("rclone is not installed (Debian package rclone).")
    # rclone's S3 backend refuses a custom CA bundle over plain HTTP, so none is passed on.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env |= {
        "RCLONE_CONFIG": os.devnull,
        "RCLONE_CONFIG_DOOR_TYPE": "s3",
        "RCLONE_CONFIG_DOOR_PROVIDER": "Other",
        "RCLONE_CONFIG_DOOR_ENDPOINT": keys.endpoint,
        "RCLONE_CONFIG_DOOR_ACCESS_KEY_ID": keys.access_key_id,
        "RCLONE_CONFIG_DOOR_SECRET_ACCESS_KEY": keys.secret,
        "RCLONE_CONFIG_DOOR_REGION": "us-east-1",
        "RCLONE_CONFIG_DOOR_FORCE_PATH_STYLE": "true",
    }
    result = subprocess.run([executable, *args], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_rclone_copy_and_check(keys: Keys, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    rclone(keys, "mkdir", "door:rclone")
    # Parts of 5 MiB from 5 MiB on, so the 9 MiB file goes as a multipart upload.
    rclone(keys, "copy", str(tree), "door:rclone/tree", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M")
    report = rclone(keys, "check", str(tree), "door:rclone/tree")
    assert "0 differences found" in report
    (tree / "sub/b.bin").write_bytes(b"different now")
    with pytest.raises(AssertionError):
        rclone(keys, "check", str(tree), "door:rclone/tree")
    rclone(keys, "copy", "door:rclone/tree", str(tmp_path / "back"))
    assert filecmp.cmp(tree / "sub/deeper/c d.bin", tmp_path / "back/sub/deeper/c d.bin", shallow=False)
    assert sorted(rclone(keys, "lsf", "door:rclone/tree").split()) == ["a.txt", "empty", "sub/"]
    rclone(keys, "purge", "door:rclone")


def test_s3fs(keys: Keys, tmp_path: Path) -> None:
    try:
        import s3fs  # type: ignore[import-untyped]
    except ImportError:
        skip_or_fail("s3fs is not installed (pip install s3fs).")
    fs = s3fs.S3FileSystem(
        key=keys.access_key_id,
        secret=keys.secret,
        client_kwargs={"endpoint_url": keys.endpoint, "region_name": "us-east-1"},
        use_listings_cache=False,
    )
    fs.mkdir("fsspec")
    fs.pipe("fsspec/dir/x.txt", b"from fsspec")
    assert fs.cat("fsspec/dir/x.txt") == b"from fsspec"
    data = os.urandom(12 * MiB)
    with fs.open("fsspec/dir/big.bin", "wb", block_size=5 * MiB) as f:  # written as a multipart upload
        f.write(data)
    with fs.open("fsspec/dir/big.bin", "rb") as f:
        f.seek(6 * MiB)
        assert f.read(MiB) == data[6 * MiB : 7 * MiB]
    assert fs.cat("fsspec/dir/big.bin") == data
    assert sorted(fs.ls("fsspec/dir", detail=False)) == ["fsspec/dir/big.bin", "fsspec/dir/x.txt"]
    assert fs.info("fsspec/dir/big.bin")["size"] == len(data)
    tree = make_tree(tmp_path / "tree")
    fs.put(str(tree), "fsspec/tree", recursive=True)
    fs.get("fsspec/tree", str(tmp_path / "back"), recursive=True)
    assert same_tree(tree, tmp_path / "back")
    fs.rm("fsspec", recursive=True)
    assert not fs.exists("fsspec/dir/x.txt")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))

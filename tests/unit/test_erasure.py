import itertools
import os

import pytest

from dynostore.erasure import Codec
from dynostore.erasure import codec as codec_module
from dynostore.errors import DataLoss, InvalidArgument


@pytest.mark.parametrize(("k", "m"), [(3, 2), (4, 2), (2, 1), (6, 3)])
def test_every_loss_pattern_up_to_m_decodes(k: int, m: int) -> None:
    codec = Codec(k, m)
    segment = os.urandom(100_003)
    fragments = codec.encode(segment)
    assert len(fragments) == k + m
    for lost_count in range(m + 1):
        for lost in itertools.combinations(range(k + m), lost_count):
            present = [None if i in lost else f for i, f in enumerate(fragments)]
            assert codec.decode(present) == segment, f"lost {lost}"


@pytest.mark.parametrize("lost", list(itertools.combinations(range(5), 3)))
def test_more_than_m_lost_is_data_loss(lost: tuple[int, ...]) -> None:
    codec = Codec(3, 2)
    fragments = codec.encode(os.urandom(5000))
    present = [None if i in lost else f for i, f in enumerate(fragments)]
    with pytest.raises(DataLoss, match="Only 2 of the 3"):
        codec.decode(present)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 1024, 3 * 1024 * 1024])
def test_sizes_round_trip(size: int) -> None:
    codec = Codec(3, 2)
    segment = os.urandom(size)
    assert codec.decode(codec.encode(segment)) == segment


def test_without_parity_splits_and_joins() -> None:
    codec = Codec(3, 0)
    segment = os.urandom(10_001)
    fragments = codec.encode(segment)
    assert len(fragments) == 3
    assert codec.decode(fragments) == segment
    with pytest.raises(DataLoss):
        codec.decode([fragments[0], None, fragments[2]])


def test_fragment_size_matches_encoding() -> None:
    codec = Codec(3, 2)
    assert codec.fragment_size(3 * 1024 * 1024) == len(codec.encode(bytes(3 * 1024 * 1024))[0])


@pytest.mark.parametrize(("k", "m"), [(0, 2), (33, 1), (3, 17), (3, -1), (True, 1)])
def test_bad_policies_are_rejected(k: int, m: int) -> None:
    with pytest.raises(InvalidArgument):
        Codec(k, m)


@pytest.mark.parametrize("size", [0, 1, 999, 3 * 1024 * 1024 + 7])
def test_data_fragments_join_like_pyeclib_decodes(size: int) -> None:
    codec = Codec(3, 2)
    segment = os.urandom(size)
    data = codec.encode(segment)[:3]
    assert codec_module._headers_understood(3, 2)
    assert codec_module._join_data(data) == segment == codec_module._driver(3, 2).decode(data)


def test_join_leaves_fragments_it_does_not_understand_to_pyeclib() -> None:
    data = Codec(3, 2).encode(os.urandom(5000))[:3]
    assert codec_module._join_data([data[1], data[0], data[2]]) is None  # out of order
    assert codec_module._join_data([data[0][:40], data[1], data[2]]) is None  # truncated header
    assert codec_module._join_data([data[0][:-10], data[1], data[2]]) is None  # truncated payload

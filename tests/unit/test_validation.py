import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynostore import validation
from dynostore.errors import InvalidArgument, Unauthenticated


@pytest.mark.parametrize(
    "bad",
    ["../../etc/passwd", "", "A" * 32, "0" * 31, "0" * 33, "0" * 31 + "/", None, 12, b"0" * 32],
)
def test_bad_keys_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        validation.key(bad)


def test_good_key() -> None:
    assert validation.key("0123456789abcdef" * 2) == "0123456789abcdef" * 2


@given(st.text(max_size=100))
def test_key_validator_accepts_only_32_hex(value: str) -> None:
    ok = len(value) == 32 and all(ch in "0123456789abcdef" for ch in value)
    if ok:
        assert validation.key(value) == value
    else:
        with pytest.raises(InvalidArgument):
            validation.key(value)


@given(st.text(max_size=200))
def test_catalog_names_never_escape(value: str) -> None:
    try:
        validation.catalog(value)
    except InvalidArgument:
        return
    assert "/" not in value
    assert value not in (".", "..")
    assert value[0] in string.ascii_letters + string.digits


@given(st.text(max_size=80))
def test_user_names(value: str) -> None:
    try:
        validation.user_name(value)
    except InvalidArgument:
        return
    assert value[0] in string.ascii_lowercase
    assert set(value) <= set(string.ascii_lowercase + string.digits + "_-")


@pytest.mark.parametrize("bad", ["a\nb", "x" * 1025, "tab\there", 5])
def test_bad_object_names(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        validation.object_name(bad)


def test_unicode_object_names_are_fine() -> None:
    assert validation.object_name("données-é-☃.h5") == "données-é-☃.h5"


@pytest.mark.parametrize("bad", ["", None, "x\n", "ü" * 3, "x" * 513])
def test_bad_tokens(bad: object) -> None:
    with pytest.raises(Unauthenticated):
        validation.token(bad)


@pytest.mark.parametrize(("index", "total"), [(-1, 5), (5, 5), (True, 5)])
def test_chunk_index_range(index: int, total: int) -> None:
    with pytest.raises(InvalidArgument):
        validation.chunk_index(index, total)

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


HEX = "0123456789abcdef"
CATALOG_SYMBOLS = "._-"
USER_SYMBOLS = "_-"


def is_key(value: str) -> bool:
    """The spec of an object key, written independently of the validator: 32 lower-case hex digits."""
    return len(value) == 32 and all(ch in HEX for ch in value)


def is_catalog(value: str) -> bool:
    """1-128 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit."""
    allowed = string.ascii_letters + string.digits
    return 1 <= len(value) <= 128 and value[0] in allowed and all(ch in allowed + CATALOG_SYMBOLS for ch in value)


def is_user(value: str) -> bool:
    """1-64 lower-case ASCII letters, digits, '_' or '-', starting with a letter."""
    allowed = string.ascii_lowercase + string.digits + USER_SYMBOLS
    return 1 <= len(value) <= 64 and value[0] in string.ascii_lowercase and all(ch in allowed for ch in value)


# Valid values drawn from the spec's alphabet, so the accepting branch runs on every example.
keys = st.text(alphabet=HEX, min_size=32, max_size=32)
catalogs = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(string.ascii_letters + string.digits),
    st.text(alphabet=string.ascii_letters + string.digits + CATALOG_SYMBOLS, max_size=127),
)
users = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(string.ascii_lowercase),
    st.text(alphabet=string.ascii_lowercase + string.digits + USER_SYMBOLS, max_size=63),
)


# Near misses: a valid value with one character changed, inserted or removed, or any text.
def near_misses(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def mutate(value: str, position: int, char: str, how: int) -> str:
        i = position % (len(value) + 1)
        return [value[:i] + char + value[i + 1 :], value[:i] + char + value[i:], value[:i] + value[i + 1 :]][how]

    mutated = st.builds(mutate, valid, st.integers(0, 200), st.characters(), st.integers(0, 2))
    return st.one_of(mutated, st.text(max_size=200))


@given(keys)
def test_valid_keys_are_accepted(value: str) -> None:
    assert validation.key(value) == value


@given(near_misses(keys).filter(lambda v: not is_key(v)))
def test_invalid_keys_are_rejected(value: str) -> None:
    with pytest.raises(InvalidArgument):
        validation.key(value)


@given(catalogs)
def test_valid_catalog_names_are_accepted(value: str) -> None:
    assert validation.catalog(value) == value


@given(near_misses(catalogs).filter(lambda v: not is_catalog(v)))
def test_invalid_catalog_names_are_rejected(value: str) -> None:
    """Among them every name with '/', '.' or '..' alone, or a leading symbol: none escapes its directory."""
    with pytest.raises(InvalidArgument):
        validation.catalog(value)


@given(users)
def test_valid_user_names_are_accepted(value: str) -> None:
    assert validation.user_name(value) == value


@given(near_misses(users).filter(lambda v: not is_user(v)))
def test_invalid_user_names_are_rejected(value: str) -> None:
    with pytest.raises(InvalidArgument):
        validation.user_name(value)


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

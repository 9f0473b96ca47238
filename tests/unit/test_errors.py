import grpc
import pytest

from dynostore import errors


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (errors.NotFound, KeyError),
        (errors.PermissionDenied, PermissionError),
        (errors.InvalidArgument, ValueError),
        (errors.Unavailable, ConnectionError),
        (errors.DeadlineExceeded, TimeoutError),
    ],
)
def test_errors_are_also_builtin_errors(cls: type[errors.DynoStoreError], base: type[Exception]) -> None:
    assert issubclass(cls, base)
    assert issubclass(cls, errors.DynoStoreError)


def test_every_class_maps_back_from_its_code() -> None:
    for cls in errors.DynoStoreError.__subclasses__():
        again = errors.error_for_status(cls.code, "message")
        assert type(again) is cls
        assert str(again) == "message"


def test_unknown_code_gives_the_root() -> None:
    err = errors.error_for_status(grpc.StatusCode.ABORTED, "")
    assert type(err) is errors.DynoStoreError
    assert "ABORTED" in str(err)


def test_not_found_message_is_not_quoted() -> None:
    assert str(errors.NotFound("No object has the key x.")) == "No object has the key x."

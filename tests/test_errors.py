from __future__ import annotations

import pytest

from uplodr.errors import TooLarge, byte_size


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (64 * 1024 * 1024, "64 MiB"),
        (1536 * 1024, "1.5 MiB"),
        (3 * 1024**3, "3 GiB"),
        (200 * 1024, "200 KiB"),
        (1000 * 1024**2, "1000 MiB"),
        (1000, "1000 bytes"),
        (1, "1 byte"),
        (64 * 1024 * 1024 + 1, "64 MiB"),
    ],
)
def test_a_byte_count_is_shown_in_binary_units(count: int, shown: str) -> None:
    assert byte_size(count) == shown


def test_an_upload_over_the_limit_names_the_limit_for_people() -> None:
    error = TooLarge.over_limit("upload", 64 * 1024 * 1024)
    assert str(error) == "upload is larger than the limit of 64 MiB"
    assert error.code == "too_large"

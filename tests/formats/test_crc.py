"""CRC-32C as the VHDX reader computes it: the package's C extension, loaded without the package's
``__init__``, must give the standard values and the package's own answers, and fall back cleanly."""

from __future__ import annotations

import subprocess
import sys

import crc32c as package
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vhdtool.formats.vhdx import crc


@pytest.mark.parametrize(("data", "expected"), [
    (b"123456789", 0xE3069283),  # the CRC catalogue's check value for CRC-32C
    (bytes(32), 0x8A9136AA),  # RFC 3720 B.4: 32 bytes of zeros
    (b"\xff" * 32, 0x62A8AB43),  # RFC 3720 B.4: 32 bytes of ones
    (bytes(range(32)), 0x46DD794E),  # RFC 3720 B.4: incrementing bytes
])
def test_standard_values(data: bytes, expected: int) -> None:
    assert crc.crc32c(data) == expected


@given(st.binary(max_size=9000), st.binary(max_size=9000))
def test_same_as_the_package_and_continues_across_pieces(a: bytes, b: bytes) -> None:
    assert crc.crc32c(a + b) == package.crc32c(a + b)
    assert crc.crc32c(b, crc.crc32c(a)) == crc.crc32c(a + b)
    assert crc.crc32c(memoryview(bytearray(a))) == package.crc32c(a)


def test_falls_back_to_the_package_when_the_extension_cannot_be_loaded_alone(monkeypatch: pytest.MonkeyPatch
                                                                             ) -> None:
    def unavailable() -> None:
        raise ImportError("laid out otherwise")

    monkeypatch.setattr(crc, "_extension", unavailable)
    assert crc._function()(b"123456789") == 0xE3069283


def test_loading_it_does_not_run_the_package_init() -> None:
    """The point of the module: no ``importlib.metadata`` (about 25 ms) at start-up; and a later
    ``import crc32c`` reuses the extension already loaded."""
    probe = ("import sys; from vhdtool.formats.vhdx.crc import crc32c; "
             "assert crc32c(b'123456789') == 0xE3069283; "
             "print('crc32c' in sys.modules, 'importlib.metadata' in sys.modules); "
             "ext = sys.modules['crc32c._crc32c']; import crc32c; "
             "print(crc32c.crc32c(b'a') == 0xC1D04330, sys.modules['crc32c._crc32c'] is ext)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "True", "True"]

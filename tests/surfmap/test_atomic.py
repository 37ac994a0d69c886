"""The one atomic writer behind surfmap's and learn's files (surfmap._atomic)."""

import os
import stat

import pytest

from surfmap._atomic import atomic_write, atomic_write_bytes, is_tmp_name


def test_atomic_write_creates_parents_and_returns_path(tmp_path):
    path = tmp_path / "a" / "b" / "x.txt"
    assert atomic_write_bytes(str(path), b"one") == path
    assert path.read_bytes() == b"one"
    assert atomic_write_bytes(path, b"two", fsync=True).read_bytes() == b"two"
    assert os.listdir(path.parent) == ["x.txt"]


def test_atomic_write_error_leaves_old_file_and_no_tmp(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"old")

    def fail(fh):
        fh.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.npz"]


def test_atomic_write_permissions_follow_umask(tmp_path):
    old = os.umask(0o027)
    try:
        import surfmap._atomic as A

        mask, A._UMASK = A._UMASK, 0o027
        path = atomic_write_bytes(tmp_path / "x", b"")
        A._UMASK = mask
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # not mkstemp's 0o600


@pytest.mark.parametrize("name, expected", [(".images.npz.k2j3.tmp", True), (".flatmap.npz.42.tmp.npz", True),
                                            ("images.npz", False), (".hidden", False), ("x.tmp", False)])
def test_is_tmp_name(name, expected):
    assert is_tmp_name(name) is expected

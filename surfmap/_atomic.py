"""Atomic file writes: write to a temporary file beside the target, then rename it over the target.

The one writer behind every file that surfmap and :mod:`learn` produce (images, flat maps, manifests, GIFTI
files, figures, checkpoints, configs). A crash or an error while writing leaves the target as it was (absent,
or the previous file) and no temporary file behind; a process killed mid-write leaves at most a hidden
``.<name>.<random>.tmp`` beside it, which ``surfmap batch`` removes on its next run.

>>> from pathlib import Path
>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "hello.txt"
>>> atomic_write(path, lambda fh: fh.write(b"hello\\n")).read_text()
'hello\\n'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["TMP_SUFFIX", "atomic_write", "atomic_write_bytes", "is_tmp_name"]

TMP_SUFFIX = ".tmp"


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# once, at import: os.umask can only be read by setting it (and setting it is not thread-safe)
_UMASK = _read_umask()


def atomic_write(path, write: Callable[[Any], object], *, fsync: bool = False) -> Path:
    """Write through ``write(fh)`` to a temporary file beside ``path``, then rename it over ``path``.

    Parameters
    ----------
    path : str or Path
        The target; missing parent folders are created.
    write : callable
        Called once with a binary file object open for writing.
    fsync : bool
        Flush the data to the disk before the rename (slower; for files a user keeps).

    Returns
    -------
    Path
        ``path``. The file gets the permissions of a newly created file (``0o666`` less the umask).

    Raises
    ------
    Whatever ``write`` or the file system raises; ``path`` is then unchanged and the temporary file removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0o600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_bytes(path, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(data), fsync=fsync)


def is_tmp_name(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_write`'s temporary files (or an older surfmap's)."""
    return name.startswith(".") and (name.endswith(TMP_SUFFIX) or name.endswith(TMP_SUFFIX + ".npz"))

"""Output paths checked before anything is written, files with the user's permissions, and a
lock so two commands never write into one folder at once.

Every check raises ``ValueError`` naming the option and the path, so the command line reports
it as one line (exit 2) before any file is created.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` is (or can become) a writable folder: no part of it is a file, and the nearest
    existing folder accepts new entries. Creates nothing. Returns ``Path(path)``."""
    p = Path(path)
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{what}: {probe} is a file, not a folder; choose another path")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: cannot create files in {probe} (read-only or no permission); choose another path")
    return p


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` can be written as a file: it is not a folder and its folder is writable."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{what}: {p} is a folder; give a file name")
    check_output_dir(p.parent if str(p.parent) else Path("."), what)
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"{what}: {p} is not writable")
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: permission bits of a new output file: rw for everyone the user's umask allows (0644 usually)
FILE_MODE = 0o666 & ~_umask()


def set_file_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the mode an ordinary ``open(path, "w")`` would have (temp files are 0600)."""
    os.chmod(path, FILE_MODE)


class FolderLock:
    """An exclusive ``flock`` on ``folder`` itself (created if missing): a second command that tries
    to write into the same folder is refused with a clear message instead of racing. No lock
    file is left behind; the lock goes when the process exits, however it exits."""

    def __init__(self, folder: str | os.PathLike, what: str):
        self.folder, self.what, self.fd = Path(folder), what, None

    def __enter__(self) -> FolderLock:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ValueError(f"{self.what}: another process is writing into {self.folder}; "
                                 "wait for it to finish or choose another folder") from None
            import warnings  # a file system without locks (some NFS mounts): go on unlocked

            warnings.warn(f"{self.what}: cannot lock {self.folder} ({err.strerror}); not protected against a "
                          "second writer", RuntimeWarning, stacklevel=2)
            return self
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", *, fsync: bool = False):
    """A file object whose content replaces ``path`` when the block ends without an error.

    It writes to a temporary file in the same folder (the user's umask, not mkstemp's 0600) and
    renames it over ``path``, so ``path`` is never half-written; on an error the temporary file
    is removed and the error propagates. ``fsync``: flush to the disk before the rename.
    """
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    try:
        with atomic_file(path) as f:
            f.write(text)
    except OSError as err:
        if err.filename is None:  # a full disk: say which file
            raise OSError(f"could not write {path}: {err.strerror or err}") from None
        raise
    return Path(path)

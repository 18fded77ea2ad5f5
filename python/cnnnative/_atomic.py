"""Atomic file writes shared by every writer of the Python layer (checkpoints, ONNX export).

write_atomic(path, fill) writes through a temporary file in the target's folder, fsyncs it, renames it over
the target and fsyncs the folder, so a reader sees either the old file or the whole new one, and a kill at
any point leaves the previous file intact. The temporary file is named `<path>.tmp.<pid>.<n>`, the same
convention as the C++ model writer (cpp/src/core/model.cpp), so a successful save of a path also removes the
temporary files that killed saves of the same path left behind (only those whose process is gone).
"""
from __future__ import annotations

import itertools
import os
import re

_counter = itertools.count()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temporaries(path: str) -> list:
    """Removes `<path>.tmp.<pid>.<n>` files whose writing process no longer exists; returns their paths."""
    folder, base = os.path.split(os.path.abspath(path))
    pat = re.compile(re.escape(base) + r"\.tmp\.(\d+)\.(\d+)$")
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = pat.match(name)
        if m and not _pid_alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(folder, name))
                removed.append(os.path.join(folder, name))
            except OSError:
                pass
    return removed


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def write_atomic(path, fill) -> str:
    """Calls fill(f) with a binary file object open on a temporary file beside `path`, then makes it `path`
    atomically (fsync, rename, fsync of the folder). On any error, the temporary file is removed, `path` is
    unchanged and the error propagates. Returns the absolute path."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}.{next(_counter)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)
    clean_stale_temporaries(path)
    return path


def write_bytes_atomic(path, data: bytes) -> str:
    return write_atomic(path, lambda f: f.write(data))

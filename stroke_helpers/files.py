"""Atomic writes that say what went wrong; one writer per folder; folder swaps that recover.

Every file the project writes (JSON, CSV, checkpoints, NIfTI volumes, the slice cache, reports)
goes through :func:`replacing` or one of its shorthands:

- it is written to a temporary name in its own folder (``.tmp-<random>-NAME``), flushed to the
  disk (``fsync``) and renamed over ``NAME``: a reader sees the old file or the new one, never
  half of one, and a killed process leaves at most a ``.tmp-*`` file that the next writer of
  that folder removes (:func:`remove_temporaries`);
- on a full disk (``ENOSPC``) or an exhausted quota (``EDQUOT``) the temporary file is removed
  and :class:`NoSpaceError` says, in one line, ``no space left on DEVICE while writing FILE``;
  a read-only folder or a folder where a file belongs is one :class:`WriteError` line too.

One writer per folder: :func:`lock` holds ``.NAME.lock`` beside the folder (``fcntl.flock``,
released by the kernel when the process dies, so a killed writer's lock is simply taken over)
and writes the holder's pid, host and command into it, which a second writer's
:class:`LockedError` names.

Folders built whole (the phantom dataset, the shipped checkpoint) are built in ``OUT.partial``
and swapped in with :func:`swap_in` (the previous ``OUT`` set aside as ``OUT.old`` and removed
last); :func:`recover` resolves what an interrupted swap left behind.

Output files named by the user (``predict --out``, ``baseline --out``) follow
:func:`check_output`: an existing file is kept unless ``--force``, a folder is refused.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: pid files only
    fcntl = None

#: How a temporary file starts; every writer removes its own, :func:`remove_temporaries` a killed one's.
TMP_PREFIX = ".tmp-"
PARTIAL, OLD = ".partial", ".old"


class WriteError(RuntimeError):
    """A file or folder that could not be written as asked; the message names it, in one line."""


class NoSpaceError(WriteError):
    """The disk (or the quota) is full; the message names the device and the file."""


class LockedError(WriteError):
    """Another process is writing the folder; the message names it."""


# --- what went wrong ---------------------------------------------------------------------------


def mount_point(path: str | os.PathLike) -> Path:
    """The mount point of the file system ``path`` is (or would be) on."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def describe(exc: OSError, path: str | os.PathLike) -> WriteError:
    """The one-line error for an ``OSError`` met while writing ``path``."""
    path, code = Path(path), getattr(exc, "errno", None)
    if code == errno.ENOSPC:
        return NoSpaceError(f"no space left on {mount_point(path)} while writing {path}")
    if code == getattr(errno, "EDQUOT", None):
        return NoSpaceError(f"disk quota exceeded on {mount_point(path)} while writing {path}")
    if code == errno.EROFS:
        return WriteError(f"{path}: cannot write: {mount_point(path)} is mounted read-only")
    if code in (errno.EACCES, errno.EPERM):
        return WriteError(f"{path}: cannot write: permission denied")
    if code == errno.EISDIR or Path(path).is_dir():
        return WriteError(f"{path}: a folder, not a file")
    return WriteError(f"{path}: cannot write ({exc.strerror or exc})")


# --- atomic writes -----------------------------------------------------------------------------


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:  # some systems cannot open a folder: the rename is still atomic
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        pass


@contextmanager
def replacing(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; whatever is written there replaces ``path`` when
    the block ends (flushed to the disk first unless ``durable=False``, for files inside a
    folder that is itself swapped in whole). On any error the temporary file is removed and an
    ``OSError`` becomes one :class:`WriteError` line naming ``path``."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{path}: a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise describe(exc, path) from None
    # the real name last, so writers that choose the format by extension (nibabel, numpy) keep it
    tmp = path.with_name(f"{TMP_PREFIX}{secrets.token_hex(4)}-{path.name}")
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        _unlink(tmp)
        if isinstance(exc, OSError):
            raise describe(exc, path) from None
        raise
    if durable:
        _fsync(path.parent, directory=True)


def save_with(path: str | os.PathLike, save: Callable[[Path], object], durable: bool = True) -> Path:
    """``save(temporary path)`` (``nib.save``, ``np.savez``, ``shutil.copyfile``...), then
    :func:`replacing`; returns ``path``."""
    with replacing(path, durable) as tmp:
        save(tmp)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    return save_with(path, lambda tmp: tmp.write_bytes(data), durable)


def write_nifti(path: str | os.PathLike, image, durable: bool = True) -> Path:
    """A NIfTI image (``nibabel``), gzip-compressed when ``path`` ends in ``.gz``: by ISA-L
    (``isal.igzip``, level 1), several times faster than ``nib.save``'s zlib at level 1, in the
    same gzip format and no larger (benchmarks/phantom_bench.py times the phantom that relies on it)."""
    data = image.to_bytes()
    if str(path).endswith(".gz"):
        from isal import igzip

        data = igzip.compress(data, 1)
    return write_bytes(path, data, durable)


def write_text(path: str | os.PathLike, text: str, durable: bool = True) -> Path:
    return save_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable)


def write_json(obj, path: str | os.PathLike, indent: int = 1, durable: bool = True) -> Path:
    """``obj`` as JSON; nothing is written when it cannot be encoded."""
    return write_text(path, json.dumps(obj, indent=indent), durable)


def write_csv(path: str | os.PathLike, header: list[str], rows: list, durable: bool = True) -> Path:
    """A CSV file: ``rows`` are dicts (keyed by ``header``) or sequences."""
    import csv

    def save(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            if rows and isinstance(rows[0], dict):
                writer = csv.DictWriter(f, fieldnames=header)
                writer.writeheader()
            else:
                writer = csv.writer(f)
                writer.writerow(header)
            writer.writerows(rows)

    return save_with(path, save, durable)


class _Recording:
    """A binary file that remembers the ``OSError`` its writes met: ``torch.save`` reports a
    full disk as ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as exc:
            self.error = exc
            raise


def save_torch(obj, path: str | os.PathLike, durable: bool = True) -> Path:
    """``torch.save(obj)`` to ``path`` through :func:`replacing`."""
    import torch

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as raw:
            f = _Recording(raw)
            try:
                torch.save(obj, f)
                f.flush()
            except RuntimeError:
                if f.error is not None:
                    raise f.error from None
                raise

    return save_with(path, save, durable)


#: A temporary file of :func:`replacing`, or of the project's earlier versions (``last.pt.tmp``).
_TEMPORARY = re.compile(rf"{re.escape(TMP_PREFIX)}[0-9a-f]{{8}}-.+|.+\.(json|csv|pt)\.tmp")


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed writer left in ``folder`` (``.tmp-XXXXXXXX-NAME``, and
    the ``NAME.json.tmp``, ``.csv.tmp``, ``.pt.tmp`` of earlier versions; nothing else); call it
    only while holding the folder's :func:`lock`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.is_file() and _TEMPORARY.fullmatch(p.name)]
    for p in stale:
        _unlink(p)
    return stale


# --- output files named by the user ------------------------------------------------------------


def check_output(path: str | os.PathLike, force: bool = False, option: str = "--out") -> Path:
    """``path`` as an output file: a folder is refused, an existing file kept unless ``force``."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{path}: a folder; {option} takes a file name")
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it or choose another {option}")
    if path.parent.exists() and not path.parent.is_dir():
        raise WriteError(f"{path}: {path.parent} is a file, not a folder")
    return path


def check_replaceable(out: Path, force: bool, not_ours: Callable[[Path], str], what: str) -> None:
    """Refuse, in one line (``FileExistsError``), to replace a non-empty ``out`` unless ``force``,
    and even then unless ``not_ours(out)`` is ``''``: ``out`` is ``what``, written by the caller
    (``not_ours`` says why not otherwise)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise FileExistsError(f"{out} already exists and is not empty; pass --force (force=True) to replace it")
        why = not_ours(out)
        if why:
            raise FileExistsError(
                f"{out}: not {what} ({why}); --force replaces only such a dataset: choose another --out"
            )


# --- one writer per folder ---------------------------------------------------------------------

_HELD: dict[str, int] = {}  # this process's locks, by folder: nested calls share the lock


def lock_path(folder: str | os.PathLike) -> Path:
    """``.NAME.lock`` beside ``folder`` (so the folder itself need not exist yet)."""
    folder = Path(os.path.abspath(folder))
    return folder.parent / f".{folder.name}.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(text: str) -> dict:
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _who(holder: dict) -> str:
    if not holder:
        return "another process"
    since = f", since {holder['since']}" if holder.get("since") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('command', '?')}{since})"


def _make_parents(folder: Path) -> list[Path]:
    made = []
    p = folder
    while not p.exists():
        made.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise describe(exc, folder) from None
    return made


@contextmanager
def lock(folder: str | os.PathLike, doing: str = "") -> Iterator[None]:
    """Hold ``folder``'s lock while the block writes it; a second writer (another process) gets
    one :class:`LockedError` line naming the holder. The lock of a process that died is taken
    over (the kernel released it; where ``flock`` is unavailable, a dead pid on this host).
    Nested calls for one folder in one process share the lock. Parent folders made for the
    lock file are removed again if nothing else was put in them."""
    folder = Path(os.path.abspath(folder))
    key = str(folder)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    path = lock_path(folder)
    made = _make_parents(path.parent)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": doing or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) or "python",
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    fd = _acquire(path, folder, me)
    _HELD[key] = 1
    try:
        yield
    finally:
        _HELD.pop(key, None)
        _unlink(path)  # removed while still held: a waiting writer re-checks the file it locked
        os.close(fd)
        for p in made:
            try:
                p.rmdir()
            except OSError:
                break


def _acquire(path: Path, folder: Path, me: dict) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise describe(exc, path) from None
        previous = _holder(os.read(fd, 4096).decode(errors="replace"))
        try:
            if fcntl is None:
                raise OSError(errno.ENOLCK, "no flock")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"{folder} is being written by {_who(previous)}; wait for it to finish, or stop it and run again"
            ) from None
        except OSError:  # no flock here (some network file systems): trust a live pid on this host
            if previous and previous.get("pid") != me["pid"]:
                if previous.get("host") != me["host"] or _alive(int(previous.get("pid", 0))):
                    os.close(fd)
                    raise LockedError(
                        f"{folder} is being written by {_who(previous)}; wait for it to finish, "
                        f"or stop it and remove {path}"
                    ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its holder removed it as we waited: lock the new one
            os.close(fd)
            continue
        if previous and previous.get("pid") != me["pid"]:
            print(f"{folder}: the writer it names ({_who(previous)}) is gone; taking over its lock", flush=True)
        try:  # who holds it, for a second writer's message; the lock holds without it (full disk)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(me).encode())
        except OSError:
            pass
        return fd


# --- folders built whole -----------------------------------------------------------------------


def partial(out: str | os.PathLike) -> Path:
    """``OUT.partial``: where a folder is built before :func:`swap_in`."""
    out = Path(out)
    return out.with_name(out.name + PARTIAL)


def _old(out: Path) -> Path:
    return out.with_name(out.name + OLD)


def recover(out: str | os.PathLike) -> list[Path]:
    """Resolve what an interrupted build or swap of ``out`` left (call it holding ``out``'s
    :func:`lock`): ``OUT.partial`` is removed; ``OUT.old`` is put back when ``OUT`` is missing
    (the swap stopped between its two renames), else removed. Each step is printed."""
    out = Path(out)
    done = []
    if partial(out).exists():
        shutil.rmtree(partial(out))
        print(f"{partial(out)}: left by an interrupted run; removed, starting again from scratch", flush=True)
        done.append(partial(out))
    if _old(out).exists():
        if out.exists():
            shutil.rmtree(_old(out))
            print(f"{_old(out)}: left by an interrupted run; removed", flush=True)
        else:
            os.replace(_old(out), out)
            print(f"{_old(out)}: put back as {out} (an interrupted run had set it aside)", flush=True)
        done.append(_old(out))
    return done


def swap_in(tmp: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Move the finished folder ``tmp`` to ``out``: a previous ``out`` is set aside as
    ``OUT.old`` first and removed last, so some complete ``out`` exists at every moment."""
    tmp, out = Path(tmp), Path(out)
    old = _old(out)
    if old.exists():
        shutil.rmtree(old)
    try:
        if out.exists():
            os.replace(out, old)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    except OSError as exc:
        raise describe(exc, out) from None
    shutil.rmtree(old, ignore_errors=True)
    return out

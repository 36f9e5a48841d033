"""Atomic file writes, hashing and output-path checks, shared by every package that writes user-visible files."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Iterator

from core.errors import ToolkitError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same directory, so the final ``os.replace`` is atomic on POSIX:
    readers see either the old file or the complete new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    tmp_path = _new_temp_file(path, suffix)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:  # flush to disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _new_temp_file(path: Path, suffix: str) -> Path:
    """A new empty file next to ``path``, created 0o666 minus the umask as open() would (mkstemp gives 0600).

    The kernel applies the umask, so nothing reads it: reading it means setting it, which races with other threads
    (the background checkpoint saver writes files too).
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}{suffix}.tmp"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


def _remove_orphans(path: Path) -> None:
    """Temporary files a killed process left next to ``path`` (their pid is in the name and no longer runs)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*-*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    update_digest(h, path)
    return h.hexdigest()


def update_digest(digest, path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> None:
    """Feed a file's bytes to a hashlib object, a chunk at a time (model files are hundreds of MB)."""
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)


class OutputPathError(ToolkitError):
    """An output path that cannot be written (a folder, a read-only or missing place), found before the work."""


def check_writable(path: str | os.PathLike, option: str) -> None:
    """Make sure ``path`` can be written before minutes of work go into it: not a folder, its folder creatable and
    writable (a probe file is created and removed).

    Raises:
        OutputPathError: naming the option, the path and what the OS said.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a folder; give a file name, such as {path / 'out'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = _new_temp_file(path, ".probe")
        probe.unlink()
    except OSError as e:
        raise OutputPathError(f"{option} {path}: cannot write to {path.parent} ({e.strerror or e})") from None


def check_not_an_input(output: str | os.PathLike, inputs: dict[str, str | os.PathLike | None], option: str) -> None:
    """Refuse an output path that is one of the command's inputs, before anything is written: ``export
    m.safetensors -o m.safetensors`` must not replace the weights with the ONNX file, nor ``bench m.onnx --json
    m.onnx`` the model with its report. Links count: the check is on the resolved path and on the file's identity.

    Args:
        output: The path about to be written.
        inputs: What each input is called (e.g. "the checkpoint") → its path; None entries are ignored.
        option: The option that named ``output``, for the message.

    Raises:
        UsageError: naming the option, the path and the input it would destroy.
    """
    from core.errors import UsageError

    out = Path(output)
    for what, path in inputs.items():
        if path is None:
            continue
        same = out.resolve() == Path(path).resolve()
        if not same and out.exists() and Path(path).exists():
            same = os.path.samefile(out, path)  # a hard link is the same file under another name
        if same:
            raise UsageError(f"{option} {output} is {what} ({path}): writing there would destroy it; choose another "
                             "path")


class SetAside:
    """An earlier run's entries moved out of the way (renamed in their own folder, so nothing is copied or lost)
    while a new run is written in their place: :meth:`discard` deletes them once the new run has its first result,
    :meth:`restore` removes what the new run wrote under those names and puts them back when it produced nothing.
    A process killed before either leaves ``.<name>.replaced-<token>`` entries: :func:`recover_set_aside` restores
    them the next time the same output is written (the new run never got as far as a result).
    """

    def __init__(self, folder: Path, names: list[str]) -> None:
        self.folder, self._names = Path(folder), list(names)
        token = secrets.token_hex(4)
        self._moved: list[tuple[Path, Path]] = []
        for name in names:
            path = self.folder / name
            if path.exists() or path.is_symlink():
                aside = self.folder / f".{name}{_ASIDE}{token}"
                os.rename(path, aside)
                self._moved.append((path, aside))

    @property
    def moved(self) -> list[str]:
        return [path.name for path, _ in self._moved]

    def discard(self) -> None:
        for _, aside in self._moved:
            _remove(aside)
        self._moved = []

    def restore(self) -> None:
        for name in self._names:
            _remove(self.folder / name)
        for path, aside in self._moved:
            os.rename(aside, path)
        self._moved = []

    def settle(self, new_result: Path) -> None:
        """After the new run failed or was interrupted: it stays (the earlier entries go) if it got as far as
        ``new_result``, else the earlier run is put back."""
        if self._moved and Path(new_result).exists():
            self.discard()
        elif self._moved:
            self.restore()


_ASIDE = ".replaced-"


def recover_set_aside(folder: Path, names: list[str]) -> bool:
    """Undo a :class:`SetAside` whose process died before it discarded or restored: the new run's entries under
    ``names`` are removed and the newest set-aside ones put back (older leftovers are deleted). Returns whether
    anything was recovered."""
    folder = Path(folder)
    stale = [p for name in names for p in folder.glob(f".{name}{_ASIDE}*")]
    if not stale:
        return False
    newest = max(stale, key=lambda p: p.stat().st_mtime).name.rsplit(_ASIDE, 1)[1]
    for name in names:
        _remove(folder / name)
    for path in stale:
        name, token = path.name[1:].rsplit(_ASIDE, 1)
        if token == newest:
            os.rename(path, folder / name)
        else:
            _remove(path)
    return True


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()

"""File safety: files written so that a crash never leaves half a file under the final name,
and pickles read so that a downloaded one cannot run code.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import pickletools
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, TypeVar

from squeeze_span.errors import CheckpointError, UnsafePickleError

if TYPE_CHECKING:
    from torch import nn

Module = TypeVar("Module", bound="nn.Module")

# mkstemp's names: the prefix, 8 characters of tempfile's alphabet, the suffix.
_TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on failure removed.

    The rename is atomic on POSIX file systems, so readers see either the old file or
    the whole new one; the file is synced to disk before the rename and the folder after
    it, so a power cut cannot leave an empty file under the final name either. An OSError
    of the write (full disk, read-only folder) names `path`, not the temporary file.
    """
    path = Path(path)
    if path.is_dir():  # else the rename fails at the end, naming the temporary file, after the work is done
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _naming(error, path) from error
    os.close(descriptor)
    temp = Path(temp_name)
    try:
        yield temp
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        temp.chmod(0o666 & ~umask)
        _sync(temp)
        os.replace(temp, path)
        _sync(path.parent)
    except BaseException as error:
        written = temp.stat().st_size if temp.exists() else 0
        temp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise disk_full(path, written) from error
        if isinstance(error, OSError) and error.filename in (None, temp_name):
            raise _naming(error, path) from error
        raise


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def disk_full(path: Path, written: int = 0) -> OSError:
    """A full disk's error naming ``path`` and the space it needs: more than what was written before it filled."""
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
    need = f"it needs more than the {_size(written)} written before the disk filled" if written else "nothing fit"
    return OSError(errno.ENOSPC, f"No space left on device ({need}; {_size(free)} free)", str(path))


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 2**10:.0f} KiB"


def append_line(file: Any, path: Path, line: str | bytes) -> None:
    """Append ``line`` to an open log ``file`` and flush it; a failure names ``path`` (a full disk: its space)."""
    try:
        file.write(line)
        file.flush()
    except OSError as error:
        raise disk_full(path) if error.errno == errno.ENOSPC else _naming(error, path) from error


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` naming ``path`` instead of the temporary file (or no file): the user knows ``path``."""
    if error.errno is None:
        return OSError(f"{path}: {error}")
    return OSError(error.errno, error.strerror, str(path))


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> None:
    """Delete the temporary files that killed :func:`atomic_write` calls left in ``folder`` and below.

    Only names atomic_write makes are touched. Call it only while no other process writes
    there (under the run folder's lock).
    """
    for path in Path(folder).rglob(".*.tmp"):
        if _TEMPORARY_NAME.fullmatch(path.name) and path.is_file():
            path.unlink(missing_ok=True)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves globals only through an explicit allow-list, so a pickle cannot run code.

    ``allowed`` maps ``(module, name)`` to the object the pickle gets for that global:
    the real one where it is harmless (numpy's array rebuilders for CIFAR), an inert
    stand-in otherwise (StyleGAN2 pickles). Set it as a class attribute in a subclass or
    pass ``allowed=``; the default allows nothing. Any other global raises
    :class:`UnsafePickleError` naming ``source`` and the global; nothing is imported.
    ``encoding`` is pickle's: how Python 2 ``str`` objects are decoded ("bytes" keeps them).
    """

    allowed: ClassVar[Mapping[tuple[str, str], Any]] = {}

    def __init__(
        self,
        file: BinaryIO,
        *,
        source: str | os.PathLike[str],
        allowed: Mapping[tuple[str, str], Any] | None = None,
        encoding: str = "ASCII",
    ) -> None:
        super().__init__(file, encoding=encoding)
        self.file = file
        self.source = str(source)
        if allowed is not None:
            self.allowed = allowed  # type: ignore[misc]

    def load(self) -> Any:
        """The next pickle in the file, once :func:`check_pickle_lengths` has found its lengths honest."""
        check_pickle_lengths(self.file)
        return super().load()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source} asks for the global {module}.{name}, which is not on the allow-list; "
                "it was refused and nothing from the file was executed. Use a file from a trusted source"
            ) from None


class _BoundedReader:
    """``file`` read no further than ``end``: a read asks for at most the bytes that are there, so a
    claimed length allocates no more than the file holds."""

    def __init__(self, file: BinaryIO, end: int) -> None:
        self.file, self.end = file, end

    def read(self, count: int = -1) -> bytes:
        remaining = self.end - self.file.tell()
        return self.file.read(remaining if count < 0 else min(count, remaining))

    def readline(self) -> bytes:
        return self.file.readline(self.end - self.file.tell())

    def tell(self) -> int:
        return self.file.tell()


def check_pickle_lengths(file: BinaryIO) -> None:
    """Raise ``pickle.UnpicklingError`` where the pickle at ``file``'s position claims more than the file holds.

    Python's unpickler allocates what a length field or a memo index claims before it reads a byte
    of it (a 14-byte pickle can ask for 2**60 bytes), so each claim is first walked and checked
    here, reading only what is really there: counted strings and frames must fit in the file, and a
    memo index may not run ahead of the opcodes that could have filled it (picklers number them in
    order). The file is left where it was.
    """
    start = file.tell()
    end = file.seek(0, os.SEEK_END)
    file.seek(start)
    try:
        for count, (opcode, argument, _) in enumerate(pickletools.genops(_BoundedReader(file, end))):
            if opcode.name == "FRAME" and argument > end - file.tell():
                raise ValueError(f"a frame of {argument} bytes, but only {end - file.tell()} remain")
            if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(argument) > count:
                raise ValueError(f"memo index {argument} after {count} opcodes")
    except ValueError as error:  # genops' word for a truncated, over-long or unknown opcode
        raise pickle.UnpicklingError(str(error).splitlines()[0] if str(error) else "malformed pickle") from None
    finally:
        file.seek(start)


TORCH_ARCHIVE_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def is_torch_archive(path: Path) -> bool:
    """Whether ``path`` starts as torch.save's zip archive does (a safetensors file starts with its header length)."""
    with open(path, "rb") as file:
        return file.read(len(TORCH_ARCHIVE_MAGIC)) == TORCH_ARCHIVE_MAGIC


def load_torch_file(path: Path, map_location: Any = "cpu", *, what: str = "squeeze-span checkpoint") -> Any:
    """``torch.load(path, weights_only=True)``, with one-line errors: a refused global is named (torch's own
    message advises turning the protection off, which a user must never be told), a truncated or foreign
    file says so."""
    import torch  # fileio is imported where torch is not needed

    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning would precede our one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        zip_archive = is_torch_archive(path)
        refused = re.search(r"GLOBAL (\S+)", str(error)) if isinstance(error, pickle.UnpicklingError) else None
        if refused or (zip_archive and isinstance(error, pickle.UnpicklingError)):
            asked = f"the global {refused.group(1)}" if refused else "something other than tensors, numbers and strings"
            raise UnsafePickleError(
                f"{path} asks for {asked}, which a {what} never holds; it was refused and nothing from the file was "
                "executed. Use a file that squeeze-span wrote, from a source you trust"
            ) from None
        # Outside a zip archive torch's reason is an unpickler's (for text, a bare number): not worth showing.
        reason = (str(error).splitlines()[0] or type(error).__name__) if zip_archive else "not a torch zip archive"
        raise CheckpointError(
            f"{path} is not a readable {what} ({reason}); it is truncated or another kind of file: "
            "copy it again, or pass another"
        ) from None


def weights_misfit(
    module: nn.Module, weights: Mapping[str, Any], source: str | os.PathLike[str], describe: str
) -> str | None:
    """Where ``weights``, read from ``source``, first fail to fill ``module`` (which ``describe`` names):
    a key it lacks, a shape that differs, or a key it has to spare; None where they fit.

    One key is named, rather than the many-line list ``load_state_dict`` would raise. Only shapes
    are read from ``module``, so it may sit on the meta device (see :func:`build_for_weights`).
    """
    expected = module.state_dict()
    for key, value in expected.items():
        if key not in weights:
            return f"{source} lacks {key!r}, which {describe} needs"
        if weights[key].shape != value.shape:
            return f"{source}: {key!r} has shape {list(weights[key].shape)} but {describe} needs {list(value.shape)}"
    for key in sorted(weights):
        if key not in expected:
            return f"{source} has unexpected key {key!r}, which {describe} lacks"
    return None


def build_for_weights(
    build: Callable[[], Module], check: Callable[[Module], None], weights: Mapping[str, Any]
) -> Module:
    """The module ``build`` makes, holding ``weights``, with no memory spent on it until they fit.

    A file describes a network (its width, resolution, channels) beside its weights, and the
    description can lie: a width of 10**9 would allocate terabytes before any weight is compared.
    So the module is built on the meta device first (shapes without storage), and ``check`` compares
    it with ``weights`` (read from the file, so their sizes are real) and raises where they differ;
    only then is it given memory and loaded.
    """
    import torch

    with torch.device("meta"):
        module = build()
    check(module)
    module = module.to_empty(device="cpu")
    module.load_state_dict(dict(weights), strict=True)
    return module

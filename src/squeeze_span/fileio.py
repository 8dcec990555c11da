"""File safety: files written so that a crash never leaves half a file under the final name,
and pickles read so that a downloaded one cannot run code.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from squeeze_span.errors import UnsafePickleError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on failure removed.

    The rename is atomic on POSIX file systems, so readers see either the old file or
    the whole new one.
    """
    path = Path(path)
    if path.is_dir():  # else the rename fails at the end, naming the temporary file, after the work is done
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    temp = Path(temp_name)
    try:
        yield temp
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        temp.chmod(0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


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
        self.source = str(source)
        if allowed is not None:
            self.allowed = allowed  # type: ignore[misc]

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source} asks for the global {module}.{name}, which is not on the allow-list; "
                "it was refused and nothing from the file was executed. Use a file from a trusted source"
            ) from None

"""Read StyleGAN2-ADA network pickles as plain data, without running code from them.

A ``network-snapshot-*.pkl`` from NVlabs/stylegan2-ada-pytorch is a pickle that, when
loaded the ordinary way, imports NVIDIA's ``torch_utils.persistence`` and executes the
Python source embedded in the file (``module_src``), and restores each tensor storage
with ``torch.load(..., weights_only=False)``. A downloaded pickle can therefore run
anything. Here it is read with subclasses of the project's one
:class:`~squeeze_span.fileio.RestrictedUnpickler` (which also reads CIFAR pickles):
every global the pickle names is looked up in an explicit allow-list of inert
stand-ins, and anything else is refused with
:class:`~squeeze_span.errors.UnsafePickleError` before it runs.

What the stand-ins do instead of NVIDIA's code:

- ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` records
  ``class_name`` and ``state``; ``module_src`` is never executed nor kept (only
  whether it was there).
- ``dnnlib.util.EasyDict`` becomes a plain ``dict`` subclass.
- ``torch.storage._load_from_bytes(blob)`` is replaced by
  :func:`decode_legacy_storage`, which parses torch's legacy (non-zip) serialisation
  with the same restricted unpickler, allowing only the storage type names.
- ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` build plain tensors
  (``requires_grad=False``) and refuse backward hooks.
- numpy scalars are rebuilt only for non-object dtypes.

:func:`read_stylegan2_pkl` returns the top-level dict with each network as a
:class:`PickledModule`: class name, constructor arguments and a flattened state dict,
which is what a re-implementation of the networks needs.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from squeeze_span.errors import CheckpointError, UnsafePickleError, UserError
from squeeze_span.fileio import RestrictedUnpickler

try:
    from numpy._core.multiarray import scalar as _numpy_scalar_impl
except ImportError:  # numpy < 2
    from numpy.core.multiarray import scalar as _numpy_scalar_impl  # type: ignore[no-redef]

__all__ = [
    "NETWORK_KEYS",
    "PickledModule",
    "decode_legacy_storage",
    "read_stylegan2_pkl",
]

# Top-level entries of a training snapshot that hold networks.
NETWORK_KEYS: tuple[str, ...] = ("G", "D", "G_ema", "augment_pipe")
_REQUIRED_ANY: tuple[str, ...] = ("G", "D", "G_ema")

# Attributes every nn.Module pickles; they are not the class's own configuration.
_MODULE_INTERNALS = frozenset({"training"})


class _Refused(Exception):
    """Raised inside the unpickler by a stand-in that met something it will not build."""


class _Malformed(Exception):
    """Raised inside the unpickler by a stand-in that met data of the wrong shape."""


# ---------------------------------------------------------------------------
# Stand-ins for the globals a StyleGAN2-ADA pickle names.


class _PersistentObject:
    """What ``_reconstruct_persistent_obj(meta)`` becomes: the class name and its state."""

    __slots__ = ("class_name", "state", "has_module_src")

    def __init__(self, class_name: str, state: dict, has_module_src: bool) -> None:
        self.class_name = class_name
        self.state = state
        self.has_module_src = has_module_src

    def __setstate__(self, state: Any) -> None:
        raise _Malformed(f"a persistent {self.class_name} object carries extra pickled state")

    def __repr__(self) -> str:
        return f"<persistent {self.class_name}>"


def _reconstruct_persistent_obj(meta: Any) -> _PersistentObject:
    if not isinstance(meta, dict):
        raise _Malformed(f"a persistent object's metadata is a {type(meta).__name__}, not a dict")
    if meta.get("type") != "class":
        raise _Malformed(f"persistent objects of type {meta.get('type')!r} are not supported")
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise _Malformed("a persistent object's metadata lacks a class_name string or a state dict")
    module_src = meta.get("module_src")
    # The source is dropped here on purpose: it is never needed, so it is never kept.
    return _PersistentObject(class_name, state, isinstance(module_src, str) and bool(module_src))


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict, no attribute access."""

    def __setstate__(self, state: Any) -> None:
        # A real EasyDict keeps its attributes as items, so instance state means items.
        if isinstance(state, dict):
            self.update(state)
        elif state is not None:
            raise _Malformed("an EasyDict carries pickled state that is not a dict")


@dataclass(frozen=True)
class _Storage:
    """A decoded tensor storage: a flat 1-D tensor holding its elements."""

    flat: torch.Tensor


def _check_no_hooks(backward_hooks: Any) -> None:
    if backward_hooks is None or (isinstance(backward_hooks, dict) and not backward_hooks):
        return
    raise _Refused("a tensor in it carries backward hooks, which could run code")


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    metadata: Any = None,
) -> torch.Tensor:
    if not isinstance(storage, _Storage):
        raise _Malformed(f"a tensor is built on a {type(storage).__name__}, not on a storage")
    _check_no_hooks(backward_hooks)
    flat = storage.flat
    try:
        tensor = torch.empty((0,), dtype=flat.dtype).set_(flat.untyped_storage(), storage_offset, size, stride)
    except (RuntimeError, TypeError, ValueError, OverflowError) as error:
        raise _Malformed(f"a tensor does not fit its storage ({_first_line(error)})") from None
    if metadata:
        # Only the conj/neg bits of complex views live here.
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, bool) for k, v in metadata.items()
        ):
            raise _Malformed("a tensor's metadata is not a dict of flags")
        torch._utils.set_tensor_metadata(tensor, metadata)
    return tensor


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise _Malformed(f"a parameter wraps a {type(data).__name__}, not a tensor")
    _check_no_hooks(backward_hooks)
    # Parameters become plain tensors: nothing here trains them.
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any, state: Any) -> torch.Tensor:
    # The extra state is Python attributes set on the Parameter; a plain tensor drops them.
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise _Refused(f"it asks for a numpy scalar of dtype {dtype!r} built from a non-byte value")
    return _numpy_scalar_impl(dtype, data)


# ---------------------------------------------------------------------------
# Torch's legacy (non-zip) serialisation of one storage, as ``_load_from_bytes`` sees it:
# pickles of the magic number, the protocol version and sys_info, then the main pickle
# (the storage, as a persistent id), then a pickle of the storage keys, then per key an
# 8-byte little-endian element count and the raw bytes.

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and friends: only its dtype matters."""

    dtype: torch.dtype


_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexDoubleStorage": torch.complex128,
    "ComplexFloatStorage": torch.complex64,
}
_STORAGE_GLOBALS: dict[tuple[str, str], _StorageType] = {
    ("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()
}
# An untyped storage is saved as bytes.
_STORAGE_GLOBALS[("torch.storage", "UntypedStorage")] = _StorageType(torch.uint8)
_STORAGE_GLOBALS[("torch", "UntypedStorage")] = _StorageType(torch.uint8)


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: torch.dtype
    offset: int
    numel: int


class _LegacyStorageUnpickler(RestrictedUnpickler):
    allowed = _STORAGE_GLOBALS

    def __init__(self, file: BinaryIO, *, source: str, roots: dict[str, tuple[torch.dtype, int]]):
        super().__init__(file, source=source)
        self.roots = roots

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise _Malformed(f"unsupported persistent id {_short_repr(pid)}")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise _Malformed(f"unsupported persistent id {_short_repr(pid)}")
        if not isinstance(numel, int) or numel < 0:
            raise _Malformed("a storage has an invalid size")
        if self.roots.setdefault(key, (storage_type.dtype, numel)) != (storage_type.dtype, numel):
            raise _Malformed("a storage key is used with two different types or sizes")
        if view is None:
            return _StorageRef(key, storage_type.dtype, 0, numel)
        if not (
            isinstance(view, tuple)
            and len(view) == 3
            and all(isinstance(v, int) for v in view[1:])
            and 0 <= view[1]
            and 0 <= view[2]
            and view[1] + view[2] <= numel
        ):
            raise _Malformed("a storage view lies outside its storage")
        return _StorageRef(key, storage_type.dtype, view[1], view[2])


def _load_plain(file: BinaryIO, source: str) -> Any:
    """One pickle that may name no global at all."""
    return RestrictedUnpickler(file, source=source, allowed={}).load()


def _decode_legacy(blob: Any, source: str) -> torch.Tensor:
    if not isinstance(blob, (bytes, bytearray)):
        raise _Malformed(f"an embedded storage is a {type(blob).__name__}, not bytes")
    file = io.BytesIO(blob)
    if _load_plain(file, source) != _LEGACY_MAGIC:
        raise _Malformed("an embedded storage lacks torch's legacy magic number")
    if _load_plain(file, source) != _LEGACY_PROTOCOL:
        raise _Malformed("an embedded storage has an unknown torch serialisation version")
    sys_info = _load_plain(file, source)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise _Malformed("an embedded storage is big-endian or lacks its sys_info")
    roots: dict[str, tuple[torch.dtype, int]] = {}
    result = _LegacyStorageUnpickler(file, source=source, roots=roots).load()
    if not isinstance(result, _StorageRef):
        raise _Malformed(f"an embedded storage blob holds a {type(result).__name__}, not a storage")
    keys = _load_plain(file, source)
    if not isinstance(keys, list) or sorted(keys) != sorted(roots):
        raise _Malformed("an embedded storage's key list does not match its storages")
    flats: dict[str, torch.Tensor] = {}
    for key in keys:
        dtype, numel = roots[key]
        header = file.read(8)
        if len(header) != 8 or struct.unpack("<q", header)[0] != numel:
            raise _Malformed("an embedded storage's element count does not match its header")
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        raw = file.read(nbytes)
        if len(raw) != nbytes:
            raise _Malformed("an embedded storage is truncated")
        # A bytearray copy makes the buffer writable and owned by the tensor.
        flats[key] = torch.frombuffer(bytearray(raw), dtype=dtype) if numel else torch.empty(0, dtype=dtype)
    flat = flats[result.key]
    return flat[result.offset : result.offset + result.numel]


def decode_legacy_storage(blob: bytes, *, source: str = "embedded storage") -> torch.Tensor:
    """Decode what ``torch.storage._load_from_bytes`` would, without running its pickles.

    ``blob`` is one storage written by ``torch.save(storage, f,
    _use_new_zipfile_serialization=False)``. Returns a flat 1-D CPU tensor of the
    storage's dtype holding its elements. Raises :class:`UnsafePickleError` when a
    pickle inside names anything but a storage type, :class:`CheckpointError` when
    the blob is malformed or truncated.
    """
    try:
        return _decode_legacy(blob, source)
    except UserError:
        raise
    except _Malformed as error:
        raise CheckpointError(f"{source} is corrupt: {error}") from None
    except _CORRUPT_ERRORS as error:
        raise CheckpointError(
            f"{source} is truncated or corrupt ({type(error).__name__}: {_first_line(error)})"
        ) from None


def _load_from_bytes_safely(blob: Any, source: str) -> _Storage:
    try:
        return _Storage(_decode_legacy(blob, source))
    except (_Malformed, _Refused, UserError):
        raise
    except _CORRUPT_ERRORS as error:
        raise _Malformed(
            f"an embedded storage is truncated or corrupt ({type(error).__name__}: {_first_line(error)})"
        ) from None


# ---------------------------------------------------------------------------
# The StyleGAN2-ADA pickle.

_NUMPY_CORE_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")

_STYLEGAN2_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("numpy", "dtype"): np.dtype,
    **{(module, "scalar"): _numpy_scalar for module in _NUMPY_CORE_MODULES},
}


class _StyleGAN2Unpickler(RestrictedUnpickler):
    allowed = _STYLEGAN2_GLOBALS

    def find_class(self, module: str, name: str) -> Any:
        if module == "dnnlib.tflib" or module.startswith("dnnlib.tflib."):
            raise CheckpointError(
                f"{self.source} is a TensorFlow StyleGAN pickle (it refers to {module}.{name}); "
                "TensorFlow pickles are out of scope: convert it to PyTorch first with NVIDIA's "
                "legacy.py from stylegan2-ada-pytorch (python legacy.py --source=... --dest=...)"
            )
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            source = f"{self.source} (an embedded tensor storage)"
            return lambda blob: _load_from_bytes_safely(blob, source)
        return super().find_class(module, name)


@dataclass
class PickledModule:
    """One persistent network object from a StyleGAN2-ADA pickle, as plain data.

    ``state_dict`` is flattened as ``nn.Module.state_dict()`` would be (own
    parameters, own persistent buffers, then children with ``child.`` prefixes);
    its tensors are plain CPU tensors with ``requires_grad=False``. ``attributes``
    holds the object's own plain attributes (``z_dim``, ``num_ws``, ...), for
    diagnostics; ``children`` the nested persistent modules by name.
    """

    class_name: str
    init_args: tuple
    init_kwargs: dict
    state_dict: OrderedDict[str, torch.Tensor]
    attributes: dict
    children: dict[str, PickledModule] = field(default_factory=dict, repr=False)
    has_module_src: bool = False


def _to_plain(value: Any) -> Any:
    """EasyDicts and OrderedDicts to dicts, numpy scalars to Python numbers, recursively."""
    if isinstance(value, _PersistentObject):
        return _to_module(value, ())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return type(value)(_to_plain(item) for item in value)
    return value


def _named_dict(state: dict, key: str, owner: str) -> dict:
    value = state.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(name, str) for name in value):
        raise _Malformed(f"{owner}'s {key} is not a dict of names")
    return value


def _to_module(obj: _PersistentObject, path: tuple[int, ...]) -> PickledModule:
    if id(obj) in path:
        raise _Malformed(f"a {obj.class_name} contains itself")
    path = (*path, id(obj))
    state = obj.state
    owner = obj.class_name
    children: dict[str, PickledModule] = {}
    for name, child in _named_dict(state, "_modules", owner).items():
        if child is None:
            continue
        if not isinstance(child, _PersistentObject):
            raise _Malformed(f"{owner}.{name} is a {type(child).__name__}, not a persistent network object")
        children[name] = _to_module(child, path)

    state_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    own = [*_named_dict(state, "_parameters", owner).items()]
    own += [item for item in _named_dict(state, "_buffers", owner).items() if item[0] not in non_persistent]
    for name, tensor in own:
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise _Malformed(f"{owner}.{name} is a {type(tensor).__name__}, not a tensor")
        state_dict[name] = tensor.detach()
    for child_name, child in children.items():
        for name, tensor in child.state_dict.items():
            state_dict[f"{child_name}.{name}"] = tensor

    init_args = _to_plain(state.get("_init_args", ()))
    init_kwargs = _to_plain(state.get("_init_kwargs", {}))
    if not isinstance(init_args, (tuple, list)) or not isinstance(init_kwargs, dict):
        raise _Malformed(f"{owner}'s constructor arguments are not a tuple and a dict")
    attributes = {
        key: _to_plain(value)
        for key, value in state.items()
        if isinstance(key, str) and not key.startswith("_") and key not in _MODULE_INTERNALS
    }
    return PickledModule(
        class_name=obj.class_name,
        init_args=tuple(init_args),
        init_kwargs=init_kwargs,
        state_dict=state_dict,
        attributes=attributes,
        children=children,
        has_module_src=obj.has_module_src,
    )


# What a damaged pickle raises from inside the C unpickler or torch.
_CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    EOFError,
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
    struct.error,
)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _not_stylegan2(path: Path, found: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a StyleGAN2-ADA network pickle: expected a dict holding persistent "
        f"'G', 'D' and 'G_ema' networks (as stylegan2-ada-pytorch writes), found {found}"
    )


def read_stylegan2_pkl(path: str | os.PathLike[str]) -> dict[str, PickledModule | Any]:
    """Read a stylegan2-ada-pytorch network pickle without executing anything from it.

    Returns the top-level dict in file order: ``G``, ``D``, ``G_ema`` and
    ``augment_pipe`` as :class:`PickledModule` (or ``None`` where the file has
    ``None``), every other entry (``training_set_kwargs``, ...) as plain data.

    Raises :class:`CheckpointError` when the file is missing, truncated, corrupt,
    not a StyleGAN2-ADA pickle, or a TensorFlow pickle; :class:`UnsafePickleError`
    when it asks for anything outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing; give the path of a stylegan2-ada-pytorch network pickle (network-snapshot-*.pkl)"
        )
    try:
        with path.open("rb") as file:
            top = _StyleGAN2Unpickler(file, source=path).load()
        if not isinstance(top, dict):
            raise _not_stylegan2(path, f"a {type(top).__name__} at the top level")
        networks = [key for key in _REQUIRED_ANY if isinstance(top.get(key), _PersistentObject)]
        if not networks:
            raise _not_stylegan2(path, f"the keys {sorted(map(str, top))}")
        for key in NETWORK_KEYS:
            value = top.get(key)
            if value is not None and not isinstance(value, _PersistentObject):
                raise _not_stylegan2(path, f"a {type(value).__name__} under {key!r}")
        return {
            key: _to_module(value, ()) if isinstance(value, _PersistentObject) else _to_plain(value)
            for key, value in top.items()
        }
    except UserError:
        raise
    except _Refused as error:
        raise UnsafePickleError(f"{path} was refused: {error}; nothing from the file was executed") from None
    except _Malformed as error:
        raise CheckpointError(f"{path} is corrupt or not a StyleGAN2-ADA pickle: {error}") from None
    except _CORRUPT_ERRORS as error:
        raise CheckpointError(
            f"{path} is truncated or corrupt ({type(error).__name__}: {_first_line(error)}); download or copy it again"
        ) from None

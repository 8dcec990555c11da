"""StyleGAN2-ADA pickles read as data: the real-format fixture, hand-built pickles, attacks.

No test here ever plain-unpickles what it writes: malicious pickles are only handed to
the restricted reader, and a marker file proves that nothing in them ran.
"""

import io
import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from squeeze_span.data.datasets import load_pickle_safely
from squeeze_span.errors import CheckpointError, UnsafePickleError
from squeeze_span.fileio import RestrictedUnpickler
from squeeze_span.generators import safe_pickle
from squeeze_span.generators.safe_pickle import (
    PickledModule,
    decode_legacy_storage,
    read_stylegan2_pkl,
)
from tests.conftest import FIXTURES

FIXTURE_PKL = FIXTURES / "tiny_uncond.pkl"
FIXTURE_EXPECTED = FIXTURES / "tiny_uncond_expected.pt"

needs_fixture = pytest.mark.skipif(
    not (FIXTURE_PKL.is_file() and FIXTURE_EXPECTED.is_file()),
    reason=f"StyleGAN2-ADA fixture not found in {FIXTURES} (shared/fixtures/stylegan2_ada)",
)


@pytest.fixture(scope="module")
def fixture_networks() -> dict:
    return read_stylegan2_pkl(FIXTURE_PKL)


@pytest.fixture(scope="module")
def fixture_expected() -> dict:
    return torch.load(FIXTURE_EXPECTED, weights_only=True)


# ---------------------------------------------------------------------------
# The real-format fixture.


@needs_fixture
def test_fixture_top_level(fixture_networks):
    assert list(fixture_networks) == ["training_set_kwargs", "G", "D", "G_ema", "augment_pipe"]
    classes = {key: fixture_networks[key].class_name for key in ("G", "D", "G_ema", "augment_pipe")}
    assert classes == {
        "G": "Generator",
        "D": "Discriminator",
        "G_ema": "Generator",
        "augment_pipe": "AugmentPipe",
    }
    kwargs = fixture_networks["training_set_kwargs"]
    assert type(kwargs) is dict
    assert kwargs == {
        "class_name": "training.dataset.ImageFolderDataset",
        "path": "cifar10.zip",
        "use_labels": False,
        "max_size": 50000,
        "xflip": False,
        "resolution": 32,
    }


@needs_fixture
def test_fixture_state_dict_keys_and_init_kwargs(fixture_networks, fixture_expected):
    for key in ("G", "G_ema"):
        module = fixture_networks[key]
        assert sorted(module.state_dict) == fixture_expected["state_dict_keys_G"]
        assert module.init_kwargs == fixture_expected["init_kwargs_G"]
        assert module.init_args == ()
    D = fixture_networks["D"]
    assert sorted(D.state_dict) == fixture_expected["state_dict_keys_D"]
    assert D.init_kwargs == fixture_expected["init_kwargs_D"]
    # Nested EasyDicts come back as plain dicts.
    assert type(fixture_networks["G"].init_kwargs["mapping_kwargs"]) is dict
    assert type(D.init_kwargs["epilogue_kwargs"]) is dict
    assert fixture_networks["G"].attributes["num_ws"] == 8


@needs_fixture
def test_fixture_state_dict_order_and_tensors(fixture_networks):
    G_ema = fixture_networks["G_ema"]
    # nn.Module.state_dict order: own parameters, own buffers, then children.
    assert list(G_ema.state_dict)[:3] == [
        "synthesis.b4.const",
        "synthesis.b4.resample_filter",
        "synthesis.b4.conv1.weight",
    ]
    assert G_ema.state_dict["synthesis.b4.const"].shape == (64, 4, 4)
    assert G_ema.state_dict["mapping.w_avg"].shape == (32,)
    for key in ("G", "D", "G_ema"):
        for name, tensor in fixture_networks[key].state_dict.items():
            assert type(tensor) is torch.Tensor, name
            assert tensor.dtype == torch.float32, name
            assert not tensor.requires_grad, name
    # G_ema's parameters differ from G's, its buffers equal them (README).
    G = fixture_networks["G"]
    const = "synthesis.b4.const"
    assert not torch.equal(G.state_dict[const], G_ema.state_dict[const])
    assert torch.equal(G.state_dict["mapping.w_avg"], G_ema.state_dict["mapping.w_avg"])
    # Nested modules are kept, with their positional constructor arguments.
    mapping_fc0 = G_ema.children["mapping"].children["fc0"]
    assert mapping_fc0.class_name == "FullyConnectedLayer"
    assert mapping_fc0.init_args == (32, 32)
    assert isinstance(mapping_fc0.attributes["weight_gain"], float)
    assert G_ema.has_module_src


@needs_fixture
def test_fixture_augment_pipe(fixture_networks):
    pipe = fixture_networks["augment_pipe"]
    assert list(pipe.state_dict) == ["p", "Hz_geom", "Hz_fbank"]
    assert pipe.state_dict["p"].shape == ()
    assert pipe.state_dict["p"].item() == pytest.approx(0.2317, abs=1e-6)
    assert pipe.state_dict["Hz_geom"].shape == (12,)
    assert pipe.state_dict["Hz_fbank"].shape == (4, 43)
    assert pipe.init_kwargs["hue"] == 1
    assert pipe.attributes["xint_max"] == pytest.approx(0.125)


@needs_fixture
def test_truncated_fixture_is_a_checkpoint_error(tmp_path):
    data = FIXTURE_PKL.read_bytes()
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_stylegan2_pkl(truncated)


# ---------------------------------------------------------------------------
# Hand-built pickles in NVIDIA's layout. Writing them needs the globals NVIDIA's
# pickles name, so tiny stand-in modules are registered for the writer only.


@pytest.fixture
def nvidia_names(monkeypatch):
    def _reconstruct_persistent_obj(meta):
        raise AssertionError("the reader must never call the writer's stand-in")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"

    class EasyDict(dict):
        pass

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = EasyDict.__name__ = "EasyDict"

    class Network:
        pass

    Network.__module__ = "dnnlib.tflib.network"
    Network.__qualname__ = Network.__name__ = "Network"

    modules = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": types.ModuleType("torch_utils.persistence"),
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": types.ModuleType("dnnlib.util"),
        "dnnlib.tflib": types.ModuleType("dnnlib.tflib"),
        "dnnlib.tflib.network": types.ModuleType("dnnlib.tflib.network"),
    }
    modules["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    modules["dnnlib.util"].EasyDict = EasyDict
    modules["dnnlib.tflib.network"].Network = Network
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict, Network=Network)


class Persistent:
    """Pickles as NVIDIA's persistent objects do: a call with the metadata dict."""

    def __init__(self, names, class_name, state, module_src="# source omitted"):
        self.names, self.class_name, self.state, self.module_src = (
            names,
            class_name,
            state,
            module_src,
        )

    def __reduce__(self):
        meta = dict(
            type="class",
            version=6,
            module_src=self.module_src,
            class_name=self.class_name,
            state=self.state,
        )
        return (self.names.reconstruct, (meta,))


def module_state(parameters=None, buffers=None, modules=None, non_persistent=(), **attributes):
    return {
        "training": False,
        "_parameters": OrderedDict(parameters or {}),
        "_buffers": OrderedDict(buffers or {}),
        "_non_persistent_buffers_set": set(non_persistent),
        "_backward_hooks": OrderedDict(),
        "_forward_hooks": OrderedDict(),
        "_modules": OrderedDict(modules or {}),
        **attributes,
    }


def frozen_parameter(values):
    return torch.nn.Parameter(torch.as_tensor(values, dtype=torch.float32), requires_grad=False)


def write_pickle(path: Path, obj) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def test_hand_built_pickle_round_trips(tmp_path, nvidia_names):
    base = torch.arange(10, dtype=torch.float32)
    layer = Persistent(
        nvidia_names,
        "FullyConnectedLayer",
        module_state(
            parameters={"weight": frozen_parameter([[1.0, 2.0], [3.0, 4.0]]), "bias": None},
            buffers={"strided": base[2:8:2], "scratch": torch.zeros(3)},
            non_persistent=["scratch"],
            weight_gain=np.float64(0.5),
            _init_args=(2, 2),
            _init_kwargs={"activation": "lrelu"},
        ),
    )
    generator = Persistent(
        nvidia_names,
        "Generator",
        module_state(
            parameters={"const": frozen_parameter([7.0])},
            buffers={"count": torch.tensor([3], dtype=torch.int64)},
            modules={"fc": layer, "unused": None},
            z_dim=np.int64(2),
            _init_args=(),
            _init_kwargs=nvidia_names.EasyDict(z_dim=2, mapping_kwargs=nvidia_names.EasyDict(num_layers=np.int64(2))),
        ),
    )
    path = write_pickle(tmp_path / "snapshot.pkl", {"G": generator, "G_ema": generator, "D": None, "kimg": 5})

    result = read_stylegan2_pkl(path)

    assert list(result) == ["G", "G_ema", "D", "kimg"]
    assert result["D"] is None and result["kimg"] == 5
    G = result["G"]
    assert isinstance(G, PickledModule)
    assert G.class_name == "Generator"
    assert G.init_kwargs == {"z_dim": 2, "mapping_kwargs": {"num_layers": 2}}
    assert type(G.init_kwargs["mapping_kwargs"]) is dict
    assert type(G.init_kwargs["mapping_kwargs"]["num_layers"]) is int
    assert G.attributes == {"z_dim": 2}
    assert list(G.state_dict) == ["const", "count", "fc.weight", "fc.strided"]
    assert torch.equal(G.state_dict["const"], torch.tensor([7.0]))
    assert G.state_dict["count"].dtype == torch.int64
    assert torch.equal(G.state_dict["fc.weight"], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert torch.equal(G.state_dict["fc.strided"], torch.tensor([2.0, 4.0, 6.0]))
    assert G.state_dict["fc.strided"].stride() == (2,)
    fc = G.children["fc"]
    assert fc.init_args == (2, 2)
    assert fc.attributes == {"weight_gain": 0.5}
    assert G.has_module_src
    assert not any(tensor.requires_grad for tensor in G.state_dict.values())


# ---------------------------------------------------------------------------
# Attacks: each is refused (or read as inert data) and leaves no marker behind.


class Reduces:
    """Pickles as a call to ``function(*args)``; the reader must never make that call."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


@pytest.mark.parametrize(
    "function, argument",
    [
        (os.system, "touch {marker}"),
        (exec, "open({marker!r}, 'w').close()"),
        (eval, "open({marker!r}, 'w').close()"),
    ],
    ids=["os.system", "builtins.exec", "builtins.eval"],
)
def test_code_in_the_top_level_pickle_is_refused(tmp_path, function, argument):
    marker = tmp_path / "marker"
    payload = Reduces(function, argument.format(marker=str(marker)))
    path = write_pickle(tmp_path / "evil.pkl", {"G": payload})
    with pytest.raises(UnsafePickleError) as raised:
        read_stylegan2_pkl(path)
    message = str(raised.value)
    assert f".{function.__name__}" in message
    assert str(path) in message
    assert "nothing from the file was executed" in message
    assert "\n" not in message
    assert not marker.exists()


def test_module_src_is_never_executed(tmp_path, nvidia_names):
    marker = tmp_path / "marker"
    code = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    network = Persistent(
        nvidia_names,
        "Generator",
        module_state(parameters={"w": frozen_parameter([1.0])}, _init_kwargs={"z_dim": 1}),
        module_src=code,
    )
    path = write_pickle(tmp_path / "src.pkl", {"G": network, "D": network, "G_ema": network})
    result = read_stylegan2_pkl(path)
    assert not marker.exists()
    assert result["G"].class_name == "Generator"
    assert result["G"].has_module_src
    assert torch.equal(result["G"].state_dict["w"], torch.tensor([1.0]))
    assert code not in repr(result)


def legacy_header() -> bytes:
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    magic = 0x1950A86A20F9469CFC6C
    return b"".join(pickle.dumps(item, protocol=2) for item in (magic, 1001, sys_info))


@pytest.mark.parametrize("position", ["main pickle", "magic number"])
def test_code_in_an_embedded_storage_is_refused(tmp_path, position):
    marker = tmp_path / "marker"
    payload = pickle.dumps(Reduces(os.system, f"touch {marker}"), protocol=2)
    blob = legacy_header() + payload if position == "main pickle" else payload
    storage = Reduces(torch.storage._load_from_bytes, blob)
    tensor = Reduces(torch._utils._rebuild_tensor_v2, storage, 0, (1,), (1,), False, OrderedDict())
    path = write_pickle(tmp_path / "blob.pkl", {"G": tensor})
    with pytest.raises(UnsafePickleError, match=r"embedded tensor storage.*\.system"):
        read_stylegan2_pkl(path)
    assert not marker.exists()


def test_backward_hooks_are_refused(tmp_path):
    storage = torch.ones(2)._typed_storage()
    hooks = OrderedDict([(0, "hook")])
    tensor = Reduces(torch._utils._rebuild_tensor_v2, storage, 0, (2,), (1,), False, hooks)
    path = write_pickle(tmp_path / "hooks.pkl", {"G": tensor})
    with pytest.raises(UnsafePickleError, match="backward hooks"):
        read_stylegan2_pkl(path)


def test_numpy_arrays_are_not_on_the_allow_list(tmp_path):
    path = write_pickle(tmp_path / "array.pkl", {"G": np.zeros(2)})
    with pytest.raises(UnsafePickleError, match=r"numpy\..*_reconstruct"):
        read_stylegan2_pkl(path)


# ---------------------------------------------------------------------------
# Files that are not StyleGAN2-ADA pickles.


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        read_stylegan2_pkl(tmp_path / "network-snapshot-000000.pkl")


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is not a pickle\n", bytes(range(256)) * 4],
    ids=["empty", "text", "bytes"],
)
def test_non_pickle_file(tmp_path, content):
    path = tmp_path / "junk.pkl"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_stylegan2_pkl(path)


def test_tensorflow_pickle_points_to_legacy_py(tmp_path, nvidia_names):
    Network = nvidia_names.Network
    path = write_pickle(tmp_path / "tf.pkl", (Network(), Network(), Network()))
    with pytest.raises(CheckpointError, match="TensorFlow.*legacy.py") as raised:
        read_stylegan2_pkl(path)
    assert not isinstance(raised.value, UnsafePickleError)


@pytest.mark.parametrize(
    "top, found",
    [([1, 2], "list"), ({"model": 1}, "keys"), ({"G": "a string", "D": None}, "keys")],
)
def test_pickle_without_networks(tmp_path, top, found):
    path = write_pickle(tmp_path / "other.pkl", top)
    with pytest.raises(CheckpointError, match=f"not a StyleGAN2-ADA.*expected.*{found}"):
        read_stylegan2_pkl(path)


# ---------------------------------------------------------------------------
# Torch's legacy storage format, decoded without torch.load.


@pytest.mark.parametrize(
    "values",
    [
        torch.tensor([1.5, -2.25, 3.0e-8]),
        torch.tensor([1.5, -2.0, 65504.0], dtype=torch.float16),
        torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        torch.tensor([2**40, -1, 0], dtype=torch.int64),
        torch.tensor([True, False, True]),
        torch.tensor([], dtype=torch.float32),
    ],
    ids=["float32", "float16", "bfloat16", "int64", "bool", "empty"],
)
def test_legacy_storage_round_trip(values):
    buffer = io.BytesIO()
    torch.save(values._typed_storage(), buffer, _use_new_zipfile_serialization=False)
    decoded = decode_legacy_storage(buffer.getvalue())
    assert decoded.dtype == values.dtype
    assert torch.equal(decoded, values)


def test_legacy_untyped_storage_decodes_to_bytes():
    values = torch.tensor([1.0, 2.0])
    buffer = io.BytesIO()
    torch.save(values.untyped_storage(), buffer, _use_new_zipfile_serialization=False)
    decoded = decode_legacy_storage(buffer.getvalue())
    assert decoded.dtype == torch.uint8
    assert decoded.tolist() == list(values.numpy().tobytes())


def test_truncated_legacy_storage():
    buffer = io.BytesIO()
    torch.save(torch.ones(4)._typed_storage(), buffer, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="truncated"):
        decode_legacy_storage(buffer.getvalue()[:-3])


def test_restricted_unpickler_allow_list():
    data = pickle.dumps(OrderedDict(a=1), protocol=2)
    allowed = {("collections", "OrderedDict"): OrderedDict}
    assert RestrictedUnpickler(io.BytesIO(data), source="x", allowed=allowed).load() == {"a": 1}
    with pytest.raises(UnsafePickleError, match="^x asks for the global collections.OrderedDict.*refused"):
        RestrictedUnpickler(io.BytesIO(data), source="x").load()


def test_one_restricted_unpickler_serves_cifar_and_stylegan2_pickles(tmp_path):
    assert issubclass(safe_pickle._StyleGAN2Unpickler, RestrictedUnpickler)
    assert issubclass(safe_pickle._LegacyStorageUnpickler, RestrictedUnpickler)
    marker = tmp_path / "marker"
    path = write_pickle(tmp_path / "evil.pkl", {"G": Reduces(os.system, f"touch {marker}")})
    with pytest.raises(UnsafePickleError) as from_data:
        load_pickle_safely(path)
    with pytest.raises(UnsafePickleError) as from_generators:
        read_stylegan2_pkl(path)
    # The same refusal, word for word, from the CIFAR reader and the StyleGAN2 reader.
    assert str(from_data.value) == str(from_generators.value)
    assert str(from_data.value).startswith(f"{path} asks for the global {os.system.__module__}.system")
    assert not marker.exists()

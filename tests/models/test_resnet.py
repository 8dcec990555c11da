"""ResNet-18: torchvision's exact state-dict layout, both stems, widths, init and precision."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeeze_span.errors import ConfigError
from squeeze_span.models import (
    BACKBONES,
    ResNet,
    build_backbone,
    resnet18,
    resnet18_cifar,
)
from squeeze_span.models.resnet import BasicBlock

# torchvision.models.resnet18(num_classes=1000).state_dict(), key by key, in order.
TORCHVISION_RESNET18 = [
    ("conv1.weight", [64, 3, 7, 7]),
    ("bn1.weight", [64]),
    ("bn1.bias", [64]),
    ("bn1.running_mean", [64]),
    ("bn1.running_var", [64]),
    ("bn1.num_batches_tracked", []),
    ("layer1.0.conv1.weight", [64, 64, 3, 3]),
    ("layer1.0.bn1.weight", [64]),
    ("layer1.0.bn1.bias", [64]),
    ("layer1.0.bn1.running_mean", [64]),
    ("layer1.0.bn1.running_var", [64]),
    ("layer1.0.bn1.num_batches_tracked", []),
    ("layer1.0.conv2.weight", [64, 64, 3, 3]),
    ("layer1.0.bn2.weight", [64]),
    ("layer1.0.bn2.bias", [64]),
    ("layer1.0.bn2.running_mean", [64]),
    ("layer1.0.bn2.running_var", [64]),
    ("layer1.0.bn2.num_batches_tracked", []),
    ("layer1.1.conv1.weight", [64, 64, 3, 3]),
    ("layer1.1.bn1.weight", [64]),
    ("layer1.1.bn1.bias", [64]),
    ("layer1.1.bn1.running_mean", [64]),
    ("layer1.1.bn1.running_var", [64]),
    ("layer1.1.bn1.num_batches_tracked", []),
    ("layer1.1.conv2.weight", [64, 64, 3, 3]),
    ("layer1.1.bn2.weight", [64]),
    ("layer1.1.bn2.bias", [64]),
    ("layer1.1.bn2.running_mean", [64]),
    ("layer1.1.bn2.running_var", [64]),
    ("layer1.1.bn2.num_batches_tracked", []),
    ("layer2.0.conv1.weight", [128, 64, 3, 3]),
    ("layer2.0.bn1.weight", [128]),
    ("layer2.0.bn1.bias", [128]),
    ("layer2.0.bn1.running_mean", [128]),
    ("layer2.0.bn1.running_var", [128]),
    ("layer2.0.bn1.num_batches_tracked", []),
    ("layer2.0.conv2.weight", [128, 128, 3, 3]),
    ("layer2.0.bn2.weight", [128]),
    ("layer2.0.bn2.bias", [128]),
    ("layer2.0.bn2.running_mean", [128]),
    ("layer2.0.bn2.running_var", [128]),
    ("layer2.0.bn2.num_batches_tracked", []),
    ("layer2.0.downsample.0.weight", [128, 64, 1, 1]),
    ("layer2.0.downsample.1.weight", [128]),
    ("layer2.0.downsample.1.bias", [128]),
    ("layer2.0.downsample.1.running_mean", [128]),
    ("layer2.0.downsample.1.running_var", [128]),
    ("layer2.0.downsample.1.num_batches_tracked", []),
    ("layer2.1.conv1.weight", [128, 128, 3, 3]),
    ("layer2.1.bn1.weight", [128]),
    ("layer2.1.bn1.bias", [128]),
    ("layer2.1.bn1.running_mean", [128]),
    ("layer2.1.bn1.running_var", [128]),
    ("layer2.1.bn1.num_batches_tracked", []),
    ("layer2.1.conv2.weight", [128, 128, 3, 3]),
    ("layer2.1.bn2.weight", [128]),
    ("layer2.1.bn2.bias", [128]),
    ("layer2.1.bn2.running_mean", [128]),
    ("layer2.1.bn2.running_var", [128]),
    ("layer2.1.bn2.num_batches_tracked", []),
    ("layer3.0.conv1.weight", [256, 128, 3, 3]),
    ("layer3.0.bn1.weight", [256]),
    ("layer3.0.bn1.bias", [256]),
    ("layer3.0.bn1.running_mean", [256]),
    ("layer3.0.bn1.running_var", [256]),
    ("layer3.0.bn1.num_batches_tracked", []),
    ("layer3.0.conv2.weight", [256, 256, 3, 3]),
    ("layer3.0.bn2.weight", [256]),
    ("layer3.0.bn2.bias", [256]),
    ("layer3.0.bn2.running_mean", [256]),
    ("layer3.0.bn2.running_var", [256]),
    ("layer3.0.bn2.num_batches_tracked", []),
    ("layer3.0.downsample.0.weight", [256, 128, 1, 1]),
    ("layer3.0.downsample.1.weight", [256]),
    ("layer3.0.downsample.1.bias", [256]),
    ("layer3.0.downsample.1.running_mean", [256]),
    ("layer3.0.downsample.1.running_var", [256]),
    ("layer3.0.downsample.1.num_batches_tracked", []),
    ("layer3.1.conv1.weight", [256, 256, 3, 3]),
    ("layer3.1.bn1.weight", [256]),
    ("layer3.1.bn1.bias", [256]),
    ("layer3.1.bn1.running_mean", [256]),
    ("layer3.1.bn1.running_var", [256]),
    ("layer3.1.bn1.num_batches_tracked", []),
    ("layer3.1.conv2.weight", [256, 256, 3, 3]),
    ("layer3.1.bn2.weight", [256]),
    ("layer3.1.bn2.bias", [256]),
    ("layer3.1.bn2.running_mean", [256]),
    ("layer3.1.bn2.running_var", [256]),
    ("layer3.1.bn2.num_batches_tracked", []),
    ("layer4.0.conv1.weight", [512, 256, 3, 3]),
    ("layer4.0.bn1.weight", [512]),
    ("layer4.0.bn1.bias", [512]),
    ("layer4.0.bn1.running_mean", [512]),
    ("layer4.0.bn1.running_var", [512]),
    ("layer4.0.bn1.num_batches_tracked", []),
    ("layer4.0.conv2.weight", [512, 512, 3, 3]),
    ("layer4.0.bn2.weight", [512]),
    ("layer4.0.bn2.bias", [512]),
    ("layer4.0.bn2.running_mean", [512]),
    ("layer4.0.bn2.running_var", [512]),
    ("layer4.0.bn2.num_batches_tracked", []),
    ("layer4.0.downsample.0.weight", [512, 256, 1, 1]),
    ("layer4.0.downsample.1.weight", [512]),
    ("layer4.0.downsample.1.bias", [512]),
    ("layer4.0.downsample.1.running_mean", [512]),
    ("layer4.0.downsample.1.running_var", [512]),
    ("layer4.0.downsample.1.num_batches_tracked", []),
    ("layer4.1.conv1.weight", [512, 512, 3, 3]),
    ("layer4.1.bn1.weight", [512]),
    ("layer4.1.bn1.bias", [512]),
    ("layer4.1.bn1.running_mean", [512]),
    ("layer4.1.bn1.running_var", [512]),
    ("layer4.1.bn1.num_batches_tracked", []),
    ("layer4.1.conv2.weight", [512, 512, 3, 3]),
    ("layer4.1.bn2.weight", [512]),
    ("layer4.1.bn2.bias", [512]),
    ("layer4.1.bn2.running_mean", [512]),
    ("layer4.1.bn2.running_var", [512]),
    ("layer4.1.bn2.num_batches_tracked", []),
    ("fc.weight", [1000, 512]),
    ("fc.bias", [1000]),
]


def test_state_dict_is_torchvision_resnet18():
    state = resnet18(num_classes=1000).state_dict()
    assert [(key, list(value.shape)) for key, value in state.items()] == [
        (key, shape) for key, shape in TORCHVISION_RESNET18
    ]
    assert state["bn1.num_batches_tracked"].dtype == torch.int64


def test_parameter_count_is_torchvision_resnet18():
    model = resnet18(num_classes=1000)
    assert sum(parameter.numel() for parameter in model.parameters()) == 11_689_512


def test_cifar_stem_differs_only_in_conv1():
    cifar = resnet18_cifar(num_classes=1000).state_dict()
    assert list(cifar["conv1.weight"].shape) == [64, 3, 3, 3]
    assert [(key, list(value.shape)) for key, value in cifar.items() if key != "conv1.weight"] == [
        (key, shape) for key, shape in TORCHVISION_RESNET18 if key != "conv1.weight"
    ]


def test_no_classes_means_identity_head_and_no_fc_keys():
    model = resnet18(width=16)
    assert isinstance(model.fc, nn.Identity)
    assert not any(key.startswith("fc.") for key in model.state_dict())
    assert model.feature_dim == 128


@pytest.mark.parametrize("factory", [resnet18, resnet18_cifar])
@pytest.mark.parametrize("size", [32, 96])
def test_output_shapes(factory, size):
    model = factory(width=16).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 128)
        assert factory(width=16, num_classes=10).eval()(torch.randn(2, 3, size, size)).shape == (2, 10)


@pytest.mark.parametrize("factory", [resnet18, resnet18_cifar])
def test_one_input_channel(factory):
    model = factory(in_channels=1, width=8).eval()
    assert model.conv1.weight.shape[1] == 1
    with torch.no_grad():
        assert model(torch.randn(3, 1, 32, 32)).shape == (3, 64)


def test_stage_widths_follow_width():
    model = resnet18_cifar(width=16)
    assert [
        model.layer1[0].conv1.out_channels,
        model.layer2[0].conv1.out_channels,
        model.layer3[0].conv1.out_channels,
        model.layer4[0].conv1.out_channels,
    ] == [16, 32, 64, 128]


@pytest.mark.parametrize(("factory", "size", "layer1_size"), [(resnet18_cifar, 32, 32), (resnet18, 96, 24)])
def test_layer1_resolution(factory, size, layer1_size):
    model = factory(width=8).eval()
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.shape

        return hook

    model.layer1.register_forward_hook(record("layer1"))
    model.layer2.register_forward_hook(record("layer2"))
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    assert seen["layer1"] == (1, 8, layer1_size, layer1_size)
    assert seen["layer2"] == (1, 16, layer1_size // 2, layer1_size // 2)


def test_init_is_torchvision():
    model = resnet18(width=16)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    # Kaiming normal, fan_out: std = sqrt(2 / (out_channels * k * k)); layer4 convs are big enough to check.
    weight = model.layer4[1].conv2.weight
    expected_std = (2 / (128 * 3 * 3)) ** 0.5
    assert weight.mean().abs() < 0.05 * expected_std
    assert weight.std().item() == pytest.approx(expected_std, rel=0.05)


def test_zero_init_residual_zeroes_each_blocks_last_bn():
    model = resnet18(width=8, zero_init_residual=True)
    blocks = [module for module in model.modules() if isinstance(module, BasicBlock)]
    assert len(blocks) == 8
    for block in blocks:
        assert torch.count_nonzero(block.bn2.weight) == 0
        assert torch.count_nonzero(block.bn1.weight) == block.bn1.weight.numel()
    assert torch.count_nonzero(resnet18(width=8).layer1[0].bn2.weight) == 8


def test_zero_init_block_is_relu_of_input():
    """With bn2's gamma at zero the residual branch vanishes: an identity block returns relu(x)."""
    block = resnet18_cifar(width=4, zero_init_residual=True).layer1[0].eval()
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(x))


def _reference_bn(x, bn):
    return (x - bn.running_mean[None, :, None, None]) / torch.sqrt(bn.running_var[None, :, None, None] + bn.eps) * (
        bn.weight[None, :, None, None]
    ) + bn.bias[None, :, None, None]


@pytest.mark.parametrize(("in_planes", "planes", "stride"), [(4, 4, 1), (4, 6, 2)])
def test_block_matches_hand_computation(in_planes, planes, stride):
    torch.manual_seed(0)
    block = BasicBlock(in_planes, planes, stride).eval()
    for bn in [module for module in block.modules() if isinstance(module, nn.BatchNorm2d)]:
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, in_planes, 6, 6)
    hidden = torch.clamp(_reference_bn(F.conv2d(x, block.conv1.weight, stride=stride, padding=1), block.bn1), min=0)
    residual = _reference_bn(F.conv2d(hidden, block.conv2.weight, padding=1), block.bn2)
    if stride == 1 and in_planes == planes:
        assert block.downsample is None
        shortcut = x
    else:
        shortcut = _reference_bn(F.conv2d(x, block.downsample[0].weight, stride=stride), block.downsample[1])
    expected = torch.clamp(residual + shortcut, min=0)
    with torch.no_grad():
        output = block(x)
    assert output.shape == (2, planes, 6 // stride, 6 // stride)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factory", [resnet18, resnet18_cifar])
def test_bf16_autocast_channels_last(factory):
    torch.manual_seed(0)
    model = factory(width=16).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(x.to(memory_format=torch.channels_last))
    assert output.shape == (4, 128)
    assert torch.isfinite(output).all()
    relative_error = (output.float() - reference).norm() / reference.norm()
    assert relative_error < 0.05


def test_config_records_build_arguments():
    model = build_backbone("resnet18_cifar", in_channels=1, width=16, num_classes=10)
    assert isinstance(model, ResNet)
    assert model.arch == "resnet18_cifar"
    assert model.config == {"arch": "resnet18_cifar", "in_channels": 1, "width": 16, "num_classes": 10}


def test_registry_names_both_stems():
    assert BACKBONES == {"resnet18": resnet18, "resnet18_cifar": resnet18_cifar}


def test_unknown_backbone_names_closest():
    with pytest.raises(
        ConfigError,
        match=r"unknown backbone 'resnet18_cifr'; did you mean 'resnet18_cifar'\? "
        r"valid backbones: resnet18, resnet18_cifar",
    ):
        build_backbone("resnet18_cifr")


def test_unknown_backbone_without_close_match_lists_valid():
    with pytest.raises(ConfigError, match=r"^unknown backbone 'vit_b16'; valid backbones: resnet18, resnet18_cifar$"):
        build_backbone("vit_b16")


@pytest.mark.parametrize(("argument", "value"), [("width", 0), ("in_channels", 0), ("num_classes", -1)])
def test_bad_sizes_are_config_errors(argument, value):
    with pytest.raises(ConfigError, match=f"resnet18: {argument} must be an integer"):
        resnet18(**{argument: value})

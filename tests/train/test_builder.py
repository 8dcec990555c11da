import pytest
import torch

from squeeze_span.data import dataset_info
from squeeze_span.generators import Teacher, TeacherPool
from squeeze_span.methods import load_training_config
from squeeze_span.train.builder import build_run
from tests.conftest import tiny_run_overrides
from tests.eval.test_probe import write_learnable_image_folder
from tests.train.test_trainer import CONFIG

CPU = torch.device("cpu")


def parts_of(data, teacher, tmp_path, rank=0, **extra):
    config = load_training_config(CONFIG, tiny_run_overrides(data, teacher, tmp_path / "run", **extra))
    return build_run(config, CPU, rank)


def test_the_parts_of_a_tiny_run(learnable_fashion_mnist, tiny_teacher, tmp_path):
    parts = parts_of(learnable_fashion_mnist, tiny_teacher, tmp_path)
    assert (len(parts.dataset), parts.dataset.num_channels) == (160, 1)
    fashion = dataset_info("fashion_mnist")
    augmentation = parts.augmentation
    assert (augmentation.size, augmentation.mean, augmentation.std) == (32, fashion.mean, fashion.std)
    assert isinstance(parts.teacher, Teacher)
    assert parts.backbone.config == {
        "arch": "resnet18_cifar",
        "in_channels": 1,
        "width": 4,
        "num_classes": 0,
        "image_size": 32,  # the view size it trains at, for the probe
    }
    assert parts.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    context = parts.context
    assert (context.device, context.image_channels, context.num_classes) == (CPU, 1, 10)
    assert context.augmentation is augmentation and context.generator is parts.augment_generator
    assert context.teacher is parts.teacher and context.model.width == 4
    assert not (tmp_path / "run").exists()  # building writes no run folder: that is the trainer's


def test_each_rank_draws_its_own_augmentations_and_latents(learnable_fashion_mnist, tiny_teacher, tmp_path):
    first, second = (parts_of(learnable_fashion_mnist, tiny_teacher, tmp_path, rank) for rank in (0, 1))
    assert first.augment_generator.initial_seed() != second.augment_generator.initial_seed()
    assert first.teacher.latent_generator.initial_seed() != second.teacher.latent_generator.initial_seed()
    again = parts_of(learnable_fashion_mnist, tiny_teacher, tmp_path, 0)
    assert again.augment_generator.initial_seed() == first.augment_generator.initial_seed()


@pytest.mark.parametrize(("pool_size", "kind"), [(0, Teacher), (8, TeacherPool)])
def test_the_teacher_follows_the_config(learnable_fashion_mnist, tiny_teacher, tmp_path, pool_size, kind):
    parts = parts_of(learnable_fashion_mnist, tiny_teacher, tmp_path, **{"teacher.pool_size": pool_size})
    assert type(parts.teacher) is kind
    without = parts_of(learnable_fashion_mnist, None, tmp_path, **{"method.syn_ratio": 0.0})
    assert without.teacher is None and without.context.teacher is None


def test_the_view_size_is_the_configs_else_the_datasets(learnable_fashion_mnist, tiny_teacher, tmp_path):
    parts = parts_of(learnable_fashion_mnist, tiny_teacher, tmp_path, **{"data.image_size": 24})
    assert parts.augmentation.size == parts.backbone.config["image_size"] == 24
    folder = tmp_path / "images"
    write_learnable_image_folder(folder, "RGB")  # 16x16 images: an image folder's views keep their size
    parts = parts_of(folder, tiny_teacher, tmp_path, **{"data.dataset": "imagefolder"})
    assert parts.augmentation.size == parts.backbone.config["image_size"] == 16
    assert (parts.dataset.num_channels, parts.context.num_classes) == (3, 2)

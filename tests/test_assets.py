"""The embedded default ships with the package: it loads without any network and samples right."""

import torch

from squeeze_span.assets import FASHION_MNIST_CLASSIFIER, FASHION_MNIST_TEACHER
from squeeze_span.generators import Teacher, load_generator
from squeeze_span.models import load_backbone


def test_the_shipped_teacher_samples_32px_grayscale_images_in_range():
    teacher = Teacher(load_generator(FASHION_MNIST_TEACHER), seed=0)
    sample = teacher.sample(8)
    assert sample.images.shape == (8, 1, 32, 32) and sample.images.dtype == torch.float32
    assert sample.images.min() >= -1 and sample.images.max() <= 1
    assert sample.images.std() > 0.2  # garments on a black background, not a flat image
    assert [shape[0] for shape in teacher.feature_shapes] == [64, 64, 64, 64]


def test_the_shipped_teacher_keeps_its_discriminator_which_scores_images():
    from squeeze_span.generators import DiscriminatorFeatures, load_discriminator

    discriminator = load_discriminator(FASHION_MNIST_TEACHER)
    assert (discriminator.img_resolution, discriminator.img_channels) == (32, 1)
    images = Teacher(load_generator(FASHION_MNIST_TEACHER), seed=0).sample(8).images
    assert discriminator(images, None).shape == (8, 1)
    features = DiscriminatorFeatures(discriminator, "multi")
    assert features.tap_names == ["b32", "b16", "b8", "b4.fc"]
    assert features(images).shape == (8, features.feature_dim)


def test_the_shipped_classifier_is_a_ten_class_resnet18():
    classifier = load_backbone(FASHION_MNIST_CLASSIFIER)
    assert classifier.config == {"arch": "resnet18_cifar", "in_channels": 1, "width": 16, "num_classes": 10}
    logits = classifier(torch.zeros(2, 1, 32, 32))
    assert logits.shape == (2, 10)

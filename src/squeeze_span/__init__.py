"""squeeze-span: distil a visual backbone from a pretrained GAN generator (Squeeze and Span)."""

__version__ = "0.1.0"

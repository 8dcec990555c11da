"""The README's code runs: its "Use the backbone in your code" snippet, against a tiny export."""

import re
from pathlib import Path

import torch

from squeeze_span.models import resnet18_cifar, save_backbone
from squeeze_span.models.preprocessing import Preprocessing

README = Path(__file__).resolve().parents[1] / "README.md"


def snippet(section: str) -> str:
    """The first ```python block under the README heading ``## {section}``."""
    text = README.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)


def test_the_use_the_backbone_snippet_runs_on_an_export(tmp_path, capsys):
    model = resnet18_cifar(in_channels=1, width=4, image_size=32)
    model.preprocessing = Preprocessing(mean=(0.286,), std=(0.353,), image_size=32)
    path = save_backbone(model, tmp_path / "backbone.safetensors")
    code = snippet("Use the backbone in your code")
    assert '"backbone.safetensors"' in code
    torch.manual_seed(0)
    exec(code.replace('"backbone.safetensors"', repr(str(path))), {})
    assert capsys.readouterr().out.splitlines() == [
        "Preprocessing(mean=(0.286,), std=(0.353,), image_size=32)",
        "torch.Size([8, 32])",  # 8 * width
    ]

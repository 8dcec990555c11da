"""What kind of file a path is, among those squeeze-span reads, and which commands take it.

Every reader asks :func:`identify` before it reads, so a file of the wrong kind is named for what
it is (a GAN pickle given to ``probe``, a backbone given as ``teacher.path``) with the command that
takes it, instead of failing deep in a parser with that parser's complaint. Only a few bytes, a
safetensors header or a small JSON file are read: nothing is unpickled or built here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open

from squeeze_span import assets
from squeeze_span.fileio import TORCH_ARCHIVE_MAGIC

BACKBONE_FORMAT = "squeeze-span-backbone"
BACKBONE_METADATA_KEY = "squeeze_span"  # the safetensors metadata entry of an exported backbone
GAN_FORMAT = "squeeze-span-stylegan2"  # the "format" of each network's JSON in a convert-gan folder
GAN_NETWORK_NAMES = ("G_ema", "G", "D")  # in the order a teacher is looked for
RUN_CHECKPOINT = "checkpoints/last.pt"  # inside a run folder
RUN_CONFIG = "config.yaml"
SNAPSHOT_RECORD = "snapshot.json"  # beside a train-gan snapshot's networks
SNAPSHOTS = "snapshots"  # a train-gan run folder's snapshots

PICKLE_PROTOCOLS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # PROTO and its protocol
NVIDIA_PERSISTENCE = b"torch_utils.persistence"  # NVIDIA's networks pickle through it, near the file's start
PICKLE_PEEK = 1 << 16
# A run folder's resolved config names its method at the top level; a train-gan run's has none.
METHOD_LINE = re.compile(rb"^method:", re.MULTILINE)

GAN = "gan"
BACKBONE = "backbone"
GAN_READERS = "teacher.path, sample-gan, fd and probe-discriminator take it"
BACKBONE_READERS = "`squeeze-span probe`, `export` and load_backbone take it"


@dataclass(frozen=True)
class FileKind:
    """A kind of file: what it is, in words, and what to do with it."""

    description: str  # "a StyleGAN2-ADA network pickle"
    advice: str  # which commands take it, or what it needs first; "{path}" stands for the file's path
    holds: str | None  # GAN (a teacher's networks), BACKBONE, or None: nothing to read yet


GAN_PICKLE = FileKind("a StyleGAN2-ADA network pickle (a GAN)", f"{GAN_READERS}, as does convert-gan", GAN)
GAN_FOLDER = FileKind("a convert-gan folder (a GAN's networks)", GAN_READERS, GAN)
GAN_NETWORK = FileKind("one network of a convert-gan folder (a GAN)", f"{GAN_READERS} (pass its folder)", GAN)
GAN_SNAPSHOT = FileKind("a train-gan snapshot (a GAN's networks)", GAN_READERS, GAN)
GAN_RUN = FileKind(
    "a train-gan run folder", f"pass one of its snapshots ({SNAPSHOTS}/network-snapshot-*/): {GAN_READERS}", None
)
RUN_FOLDER = FileKind("a run folder (a trained backbone)", BACKBONE_READERS, BACKBONE)
EMPTY_RUN_FOLDER = FileKind(
    "a run folder with no checkpoint yet",
    f"train it, or resume it (`squeeze-span train {{path}}/{RUN_CONFIG} resume=auto`), then pass it",
    None,
)
TRAINING_CHECKPOINT = FileKind("a training checkpoint (a backbone's)", BACKBONE_READERS, BACKBONE)
EXPORTED_BACKBONE = FileKind("an exported backbone (.safetensors)", BACKBONE_READERS, BACKBONE)


def identify(spec: str | os.PathLike[str]) -> FileKind | None:
    """The kind of file ``spec`` (a path or ``asset:NAME``) is; None when it is missing or of no kind we know.

    A torch zip archive counts as a training checkpoint, since squeeze-span writes no other
    (a train-gan run's own checkpoint sits in a train-gan run folder, recognised as that folder).
    """
    path = assets.resolve(spec)
    if path.is_dir():
        return _folder_kind(path)
    if not path.is_file():
        return None
    with open(path, "rb") as file:
        start = file.read(PICKLE_PEEK)
    if start.startswith(TORCH_ARCHIVE_MAGIC):
        return TRAINING_CHECKPOINT
    if start.startswith(PICKLE_PROTOCOLS) and NVIDIA_PERSISTENCE in start:
        return GAN_PICKLE
    if path.suffix == ".safetensors":
        if _is_gan_description(path.with_suffix(".json")):
            return GAN_NETWORK
        if BACKBONE_METADATA_KEY in _safetensors_metadata(path):
            return EXPORTED_BACKBONE
    return None


def _folder_kind(path: Path) -> FileKind | None:
    if any(_is_gan_description(path / f"{name}.json") for name in GAN_NETWORK_NAMES):
        return GAN_SNAPSHOT if (path / SNAPSHOT_RECORD).is_file() else GAN_FOLDER
    config = path / RUN_CONFIG
    if not config.is_file():
        return None
    if not METHOD_LINE.search(config.read_bytes()):
        return GAN_RUN
    return RUN_FOLDER if (path / RUN_CHECKPOINT).is_file() else EMPTY_RUN_FOLDER


def _is_gan_description(path: Path) -> bool:
    try:
        description = json.loads(path.read_bytes())
    except (OSError, ValueError):  # absent, unreadable or not JSON: not a network's description
        return False
    return isinstance(description, dict) and description.get("format") == GAN_FORMAT


def _safetensors_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(path, framework="pt") as file:
            return file.metadata() or {}
    except (SafetensorError, OSError, ValueError):  # the reader says what is wrong with it
        return {}


def wrong_kind(path: str | os.PathLike[str], kind: FileKind, wanted: str) -> str:
    """The one line for ``kind`` of file given where ``wanted`` is needed: what it is, and what takes it."""
    return f"{path} is {kind.description}, not {wanted}; {kind.advice.format(path=path)}"

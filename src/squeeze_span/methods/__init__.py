"""Methods: each a small module on top of the shared trainer.

``METHODS`` maps a config's ``method.name`` to the method's class, and
``METHOD_CONFIGS`` to the dataclass that types its ``method`` section.
"""

from squeeze_span.methods.base import Method, MethodContext, ParameterGroup
from squeeze_span.methods.encode import Encode, EncodeConfig
from squeeze_span.methods.simsiam import SimSiam, SimSiamConfig
from squeeze_span.methods.squeeze_span import SqueezeSpan, SqueezeSpanConfig
from squeeze_span.methods.supervised import Supervised, SupervisedConfig
from squeeze_span.methods.vicreg import VICReg, VICRegConfig

METHODS: dict[str, type[Method]] = {
    "squeeze_span": SqueezeSpan,
    "vicreg": VICReg,
    "simsiam": SimSiam,
    "supervised": Supervised,
    "encode": Encode,
}
METHOD_CONFIGS: dict[str, type] = {
    "squeeze_span": SqueezeSpanConfig,
    "vicreg": VICRegConfig,
    "simsiam": SimSiamConfig,
    "supervised": SupervisedConfig,
    "encode": EncodeConfig,
}

__all__ = [
    "METHODS",
    "METHOD_CONFIGS",
    "Encode",
    "EncodeConfig",
    "Method",
    "MethodContext",
    "ParameterGroup",
    "SimSiam",
    "SimSiamConfig",
    "SqueezeSpan",
    "SqueezeSpanConfig",
    "Supervised",
    "SupervisedConfig",
    "VICReg",
    "VICRegConfig",
]

"""Methods: each a small module on top of the shared trainer.

``METHODS`` (in :mod:`squeeze_span.methods.registry`) maps a config's ``method.name`` to the
method's class, which names the dataclass that types its ``method`` section.
"""

from squeeze_span.methods.base import Method, MethodContext, ParameterGroup
from squeeze_span.methods.encode import Encode, EncodeConfig
from squeeze_span.methods.registry import DEFAULT_CONFIG, METHODS, load_training_config, method_configs
from squeeze_span.methods.simsiam import SimSiam, SimSiamConfig
from squeeze_span.methods.squeeze_span import SqueezeSpan, SqueezeSpanConfig
from squeeze_span.methods.supervised import Supervised, SupervisedConfig
from squeeze_span.methods.vicreg import VICReg, VICRegConfig

__all__ = [
    "DEFAULT_CONFIG",
    "METHODS",
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
    "load_training_config",
    "method_configs",
]

"""Methods: each a small module on top of the shared trainer.

``METHODS`` maps a config's ``method.name`` to the method's class, and
``METHOD_CONFIGS`` to the dataclass that types its ``method`` section.
"""

from squeeze_span.methods.base import Method, MethodContext
from squeeze_span.methods.squeeze_span import SqueezeSpan, SqueezeSpanConfig

METHODS: dict[str, type[Method]] = {"squeeze_span": SqueezeSpan}
METHOD_CONFIGS: dict[str, type] = {"squeeze_span": SqueezeSpanConfig}

__all__ = ["METHODS", "METHOD_CONFIGS", "Method", "MethodContext", "SqueezeSpan", "SqueezeSpanConfig"]

"""The networks attnviz compares: attention modules, backbones with an attention slot, a registry.

``models.build(name)`` returns a randomly initialised network whose state-dict keys match the
official release it mirrors; ``models.available()`` lists the names. No I/O beyond weights.
"""
from .checkpoint import unwrap_state_dict
from .registry import Architecture, available, build, get

__all__ = ["Architecture", "available", "build", "get", "unwrap_state_dict"]

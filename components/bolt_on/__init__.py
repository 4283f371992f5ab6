"""Bolt-on layers: the trainable stack from student width to teacher width."""

from components.bolt_on.stack import (
    BoltOnStack,
    BoltOnWidthError,
    LayerWidth,
    WidthProblem,
    build_bolt_on,
    width_chain,
    width_problems,
)

__all__ = [
    "BoltOnStack",
    "BoltOnWidthError",
    "LayerWidth",
    "WidthProblem",
    "build_bolt_on",
    "width_chain",
    "width_problems",
]

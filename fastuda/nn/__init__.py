"""fastuda.nn: drop-in nn.Modules built on fastuda.ops."""

from .attention import EfficientSelfAttention

__all__ = ["EfficientSelfAttention"]

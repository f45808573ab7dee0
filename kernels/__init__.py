"""Triton kernels of fastuda, installed as ``fastuda.kernels``.

One file per op: private ``@triton.jit`` kernels and plain launchers. Nothing
here imports from ``fastuda``; ``fastuda.ops`` is the only caller.

Set ``TRITON_INTERPRET=1`` before these modules are imported to run the kernels
on CPU tensors through Triton's interpreter (slow; for tests).
"""

"""Adapters that put fastuda's fused ops into other libraries' models.

``fastuda.integrations.hf.patch_segformer``: Hugging Face transformers Segformer (needs the ``hf``
extra: ``pip install fastuda[hf]``). Nothing is imported here, so fastuda never requires
transformers.
"""

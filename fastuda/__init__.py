"""fastuda: fast domain-adaptive semantic segmentation."""

from fastuda._versions import check_versions

__version__ = "0.1.0"

__all__ = ["Segmenter", "export_hf"]


def __getattr__(name: str):
    # Imported on first use: ``import fastuda`` stays light (no torch, no transformers).
    if name == "Segmenter":
        from fastuda.inference import Segmenter

        return Segmenter
    if name == "export_hf":
        from fastuda.integrations.hf import export_hf

        return export_hf
    raise AttributeError(f"module 'fastuda' has no attribute {name!r}")


check_versions()  # one warning per torch / triton / transformers outside the tested range

"""fastuda: fast domain-adaptive semantic segmentation."""

__version__ = "0.1.0"

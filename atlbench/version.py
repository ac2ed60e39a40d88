"""The package version, in a leaf module (records carry it; nothing here imports atlbench)."""

__all__ = ["__version__"]

__version__ = "0.2.0"

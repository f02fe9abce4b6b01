"""The version of quantbench (one place; the package face and the results read it)."""

__version__ = "0.1.0"

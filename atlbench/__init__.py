"""atlbench: benchmark and transferability analysis for applied transfer learning."""

__version__ = "0.1.0"

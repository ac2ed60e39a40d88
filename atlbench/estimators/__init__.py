"""Transferability estimators (placeholder; being written)."""

"""The editing engine: model specs, loading, and the staged pipeline (imports torch)."""

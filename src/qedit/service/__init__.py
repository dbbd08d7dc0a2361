"""The task service: store, dispatch, worker, storage, webhooks (no torch except in worker.py's engine load)."""

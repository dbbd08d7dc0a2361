"""Helpers shared by the test packages: the one place a test module may import from besides conftest.

``images`` (image files made in code), ``server`` (a real uvicorn subprocess), ``receiver`` (a local
HTTP receiver for webhooks and image hosts), ``databases`` (the test Postgres), ``engines`` (stand-in
``EditEngine``s), ``tasks`` (tasks made directly in a store), ``parity`` (one edit through qedit and through diffusers).
"""

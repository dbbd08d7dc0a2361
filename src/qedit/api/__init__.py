"""The HTTP API (never imports torch): ``qedit.api.app.create_app(settings)`` builds it."""

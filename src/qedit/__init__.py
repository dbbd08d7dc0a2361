"""qedit: self-hosted image editing by instruction with the Qwen-Image-Edit model family.

The package root stays light (no torch import) so that the API layer and the CLI's argument
parsing start fast; the engine is imported from ``qedit.engine`` when it is needed.
"""

__version__ = "0.1.0"

"""The Hugging Face libraries' side of loading: hub snapshots, and their console noise turned off.

Its own module because both the loader and the tiny preset need it: the loader builds the tiny
snapshot when asked for ``tiny``, and the preset writes that snapshot through diffusers, as noisy
there as anywhere. With both functions here, the loader imports the preset and the preset imports
nothing from the loader. The libraries are imported inside the functions, so importing this stays
cheap.
"""

from __future__ import annotations

from pathlib import Path

from qedit.errors import ModelLoadError

# what a diffusers-layout snapshot needs: configs, weights, tokenizer files, chat templates
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja"]


def download(hub_id: str) -> Path:
    """A hub snapshot through huggingface_hub's cache (needs a network, or HF_HUB_OFFLINE=1 and a cache)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, allow_patterns=SNAPSHOT_PATTERNS))
    except Exception as e:  # network down, unknown repo, no auth: all one message for the user
        raise ModelLoadError(f"cannot fetch {hub_id} from the hub ({type(e).__name__}: {e})") from None


def quiet_libraries() -> None:
    """diffusers/transformers print progress bars and deprecation chatter on every load; qedit
    reports its own progress, so theirs is switched off (called at load time, not at import).

    Call it before the first import of a diffusers model class: that import loads diffusers'
    quantizers, which import torchao, whose registrations make torch's pytree warn about enums
    and diffusers warn about torchao classes it looks for under older names.
    """
    import logging

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()

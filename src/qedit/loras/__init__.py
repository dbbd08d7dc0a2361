"""LoRA adapters before any tensor is read: torch-free, shared by the engine, the API and the CLI.

- ``spec``: what a request asks for (a source and a scale), parsed from ``FILE[:SCALE]`` or JSON.
- ``header``: a safetensors file's header (names, dtypes, shapes), from disk or a stream's first bytes.
- ``anatomy``: the key formats diffusers converts (diffusers/PEFT, DiffSynth, kohya, lightx2v,
  ComfyUI) read as modules, ranks and alphas, and whether they fit a transformer's config.
- ``sources``: where a LoRA may come from (local folder, hub organisation, URL host): the operator's
  allow-list.
- ``store``: sources turned into files on disk with their sha256 (a content-addressed download cache).
- ``lightning``: the few-step recipe: where the Lightning files of each variant are, the scheduler.

The API checks a request here at submit (allow-list and header, no tensors read); the engine then
loads the same files through diffusers' LoRA loader (``qedit.engine.adapters``).
"""

from qedit.loras.spec import MAX_LORAS, SCALE_MAX, SCALE_MIN, LoraSpec

__all__ = ["MAX_LORAS", "SCALE_MAX", "SCALE_MIN", "LoraSpec"]

"""A GGUF file of the tiny transformer, written with the gguf package (as QuantStack ships them), for
the GGUF loader, the footprint and `qedit memory` tests."""

from __future__ import annotations

from pathlib import Path


def write_gguf(snapshot: Path, out: Path, names: list[str] | None = None) -> Path:
    """The tiny transformer's weights as GGUF: Q8_0 (through ``gguf.quants``) for every 2-D weight whose
    rows split into blocks of 32, F32 for the rest; ``names`` keeps only those tensors."""
    import gguf
    from safetensors.torch import load_file

    state = load_file(snapshot / "transformer" / "diffusion_pytorch_model.safetensors")
    writer = gguf.GGUFWriter(str(out), "qwen_image")
    for name, tensor in state.items():
        if names is not None and name not in names:
            continue
        array = tensor.float().numpy()
        if array.ndim == 2 and array.shape[1] % 32 == 0 and name.endswith(".weight"):
            packed = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out

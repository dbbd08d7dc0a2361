"""The reference pipeline's areas follow the spec, and it runs on qedit's components unless it must not."""

from __future__ import annotations

import sys

from qedit.bench.reference import own_copy_reason, spec_areas
from qedit.models.options import EngineOptions
from qedit.models.specs import MP, get_spec


def test_the_reference_areas_become_the_specs_for_the_call_only() -> None:
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as plus

    pipe = type("QwenImageEditPlusPipeline", (), {"__module__": plus.__name__})()
    spec = get_spec("tiny-plus")
    with spec_areas(pipe, spec):
        assert sys.modules[type(pipe).__module__] is plus
        assert plus.calculate_dimensions(plus.VAE_IMAGE_SIZE, 1.0) == (128, 128)
        assert plus.calculate_dimensions(plus.CONDITION_IMAGE_SIZE, 1.0) == (64, 64)  # 56x56 rounded to 32
        assert plus.calculate_dimensions(MP, 2.0)[0] == 192  # the output area too
    assert plus.calculate_dimensions(MP, 1.0) == (1024, 1024)


def test_options_that_change_the_transformer_give_the_reference_its_own_copy() -> None:
    assert own_copy_reason(EngineOptions()) is None
    assert own_copy_reason(EngineOptions(cfg_batch="on", text_cache=0)) is None  # same weights, same modules
    assert "quantize=int8" in own_copy_reason(EngineOptions(quantize="int8"))  # type: ignore[operator]
    assert "cache=dbcache" in own_copy_reason(EngineOptions(cache="dbcache"))  # type: ignore[operator]

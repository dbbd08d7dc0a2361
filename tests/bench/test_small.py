"""The ``small`` preset: the transformer the bench needs, through the normal loader; and (slow) that
its transformer really dominates an edit at 512x512 while qedit matches the reference on it."""

from __future__ import annotations

import pytest

from qedit.engine.tiny import HIDDEN, build_components, ensure_tiny
from qedit.models.specs import get_spec


def test_small_has_a_wider_deeper_transformer_with_the_real_head_and_rope() -> None:
    components = build_components("small")
    t = components["transformer"].config
    assert (t.num_layers, t.num_attention_heads, t.attention_head_dim) == (4, 2, 128)
    assert tuple(t.axes_dims_rope) == (16, 56, 56)  # the real model's, summing to the head dim
    assert t.joint_attention_dim == components["text_encoder"].config.text_config.hidden_size == HIDDEN
    assert (t.in_channels, t.out_channels, t.patch_size) == (64, 16, 2)
    vae = components["vae"].config
    assert (vae.base_dim, vae.z_dim, len(vae.dim_mult)) == (4, 16, 4)  # narrower, same 8x factor and channels
    tiny = build_components("edit")["transformer"]
    params = sum(p.numel() for p in components["transformer"].parameters())
    assert params > 20 * sum(p.numel() for p in tiny.parameters())


def test_small_loads_by_name_and_works_at_512() -> None:
    from qedit.bench.inputs import default_size, working_size
    from qedit.engine.pipeline import Engine

    path = ensure_tiny("small")
    assert path.name == "small" and (path / "lightning").is_dir()
    engine = Engine.load("small")
    assert engine.spec.name == "small" and engine.components.transformer.config.num_layers == 4
    spec = get_spec("small")
    assert default_size(spec) == working_size(spec, (512, 512)) == (512, 512)


@pytest.mark.slow
def test_small_bench_is_transformer_bound_and_matches_the_reference() -> None:
    from qedit.bench.report import summary
    from qedit.bench.runner import BenchConfig, run_bench

    s = summary(run_bench(BenchConfig(model="small", repeat=1)))
    assert s["working_size"] == [512, 512] and s["steps"] == 8
    for side in ("qedit", "reference"):
        assert s[side]["transformer_passes"] == 16
        assert s[side]["transformer_share"] >= 0.8
    assert s["within_tolerance"]

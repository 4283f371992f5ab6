"""The one-kernel norm and GELU compute what transformers' eager blocks compute, keep the weights, and launch less."""

from __future__ import annotations

import collections

import pytest
import torch
from torch.overrides import TorchFunctionMode
from transformers import Qwen3Config, Qwen3Model, T5Config, T5EncoderModel
from transformers.activations import GELUTanh, NewGELUActivation
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm
from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm
from transformers.models.t5.modeling_t5 import T5LayerNorm

from components.models import build_model
from components.models.fused_kernels import FusedRMSNorm, use_fused_kernels
from schemas.models import T5EncoderTeacher

NORMS = [Qwen3RMSNorm, Qwen2RMSNorm, LlamaRMSNorm, T5LayerNorm]
BF16_ULP = 2.0**-7  # relative spacing of bfloat16: the fused kernel rounds once where the eager code rounds twice


class _Calls(TorchFunctionMode):
    """torch-level calls; on a CPU build `rms_norm` then decomposes, on CUDA it is `aten::_fused_rms_norm`."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls[getattr(func, "__name__", str(func))] += 1
        return func(*args, **(kwargs or {}))


def _pair(cls: type, weight_dtype: torch.dtype) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    eager = cls(48).to(weight_dtype)
    with torch.no_grad():
        eager.weight.normal_()
    fused = use_fused_kernels(torch.nn.Sequential(eager))[0]
    assert isinstance(fused, FusedRMSNorm) and fused.weight is eager.weight
    return eager, fused


@pytest.mark.parametrize("cls", NORMS)
def test_float32_norm_gives_the_same_values_and_gradients(cls: type) -> None:
    eager, fused = _pair(cls, torch.float32)
    x = (3 * torch.randn(2, 7, 48)).requires_grad_()
    expected = eager(x)
    (grad_x_eager, grad_w_eager) = torch.autograd.grad(expected.square().sum(), (x, eager.weight))
    got = fused(x)
    (grad_x, grad_w) = torch.autograd.grad(got.square().sum(), (x, fused.weight))
    assert got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_x, grad_x_eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_w, grad_w_eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls", NORMS)
@pytest.mark.parametrize(
    ("weight_dtype", "input_dtype"),
    [(torch.bfloat16, torch.bfloat16), (torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32)],
)
def test_half_precision_norm_keeps_the_output_dtype_and_differs_by_rounding_only(
    cls: type, weight_dtype: torch.dtype, input_dtype: torch.dtype
) -> None:
    eager, fused = _pair(cls, weight_dtype)
    x = (3 * torch.randn(2, 7, 48)).to(input_dtype)
    with torch.no_grad():
        expected, got = eager(x), fused(x)
        exact = eager.float()(x.float()) if weight_dtype == torch.float32 else None
    assert got.dtype == expected.dtype
    scale = expected.float().abs().clamp(min=1.0)
    assert ((got.float() - expected.float()).abs() / scale).max() <= 2 * BF16_ULP
    if exact is not None:  # float32 weights: rounding once is at least as close to the exact value as rounding twice
        assert (got.float() - exact).abs().max() <= (expected.float() - exact).abs().max() + 1e-6


@pytest.mark.parametrize("cls", [Qwen3RMSNorm, T5LayerNorm])
def test_autocast_gives_the_dtype_the_eager_norm_gives(cls: type) -> None:
    eager, fused = _pair(cls, torch.float32)
    for x in (torch.randn(3, 48), torch.randn(3, 48).bfloat16()):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected, got = eager(x), fused(x)
        assert got.dtype == expected.dtype
        torch.testing.assert_close(got.float(), expected.float(), rtol=2 * BF16_ULP, atol=2 * BF16_ULP)


def test_a_norm_of_another_formula_is_left_alone() -> None:
    model = torch.nn.Sequential(GemmaRMSNorm(16), Qwen3RMSNorm(16))
    use_fused_kernels(model)
    assert type(model[0]) is GemmaRMSNorm and type(model[1]) is FusedRMSNorm


def _tiny_qwen3() -> Qwen3Model:
    config = Qwen3Config(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=99,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return Qwen3Model(config).eval()


def test_whole_student_matches_keeps_its_state_dict_and_calls_the_fused_norm(tmp_path) -> None:
    eager = _tiny_qwen3()
    keys = list(eager.state_dict())
    ids = torch.randint(0, 99, (2, 9))
    mask = torch.ones_like(ids)
    eager_calls = _Calls()
    with torch.no_grad(), eager_calls:
        expected = eager(input_ids=ids, attention_mask=mask).last_hidden_state
    fused = use_fused_kernels(eager)
    norms = 2 * 4 + 1  # per layer: input, post-attention, q and k norms; then the final norm
    assert sum(type(m) is FusedRMSNorm for m in fused.modules()) == norms
    fused_calls = _Calls()
    with torch.no_grad(), fused_calls:
        got = fused(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert list(fused.state_dict()) == keys
    assert eager_calls.calls["rsqrt"] == norms and fused_calls.calls["rsqrt"] == 0
    assert fused_calls.calls["rms_norm"] == norms
    fused.save_pretrained(tmp_path)
    reloaded = Qwen3Model.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids, attention_mask=mask).last_hidden_state, got)


def test_t5_gets_the_one_kernel_tanh_gelu_with_the_same_output() -> None:
    config = T5Config(d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8, vocab_size=100, dropout_rate=0.0)
    config.feed_forward_proj = "gated-gelu"
    config.dense_act_fn, config.is_gated_act = "gelu_new", True
    torch.manual_seed(0)
    eager = T5EncoderModel(config).eval()
    assert any(type(m) is NewGELUActivation for m in eager.modules())
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        expected = eager(input_ids=ids).last_hidden_state
        fused = use_fused_kernels(eager)
        got = fused(input_ids=ids).last_hidden_state
    assert not any(type(m) in (NewGELUActivation, T5LayerNorm) for m in fused.modules())
    assert any(type(m) is GELUTanh for m in fused.modules())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_build_model_swaps_norms_on_cuda_only_and_not_when_turned_off() -> None:
    config = {"model_type": "t5", "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 1}
    config |= {"vocab_size": 99, "feed_forward_proj": "gated-gelu"}  # T5 v1.1: gelu_new
    source = T5EncoderTeacher(type="t5_encoder", dtype="float32", config=config, tokenizer="unused")
    on_cpu = build_model(source, "teacher")
    assert any(type(m) is GELUTanh for m in on_cpu.modules())  # one kernel on a CPU too
    assert any(type(m) is T5LayerNorm for m in on_cpu.modules())  # no fused RMSNorm kernel on a CPU
    plain = build_model(source, "teacher", fused_kernels=False)
    assert any(type(m) is NewGELUActivation for m in plain.modules())
    with torch.device("meta"):
        cuda_like = use_fused_kernels(T5EncoderModel(T5Config(**config)), norms=True)
    assert not any(type(m) is T5LayerNorm for m in cuda_like.modules())

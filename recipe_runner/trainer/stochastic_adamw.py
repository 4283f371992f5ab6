"""AdamW for bfloat16 weights: each update is computed in float32 and rounded to bfloat16 stochastically.

With round-to-nearest, an update smaller than half a bf16 spacing (2^-8 of the weight) is lost every step;
stochastic rounding rounds up with the probability of the remainder, so the expected weight follows the float32
trajectory. Weights, gradients and both moments stay in bf16: 8 bytes per trained parameter instead of 16.

torchao's `_AdamW(bf16_stochastic_round=True)` does the same maths, but as one compiled call per parameter: with
the ~380 tensors of the reference student and bolt-on, its step took 87 ms on a 2-core CPU (`recipe bench` small
widths, full depth), and the H100 step of the lowmem recipe was 240 ms slower than the fp32 one. Here parameters
are concatenated into flat chunks of at most CHUNK_ELEMENTS and each chunk is updated by a fixed number of
elementwise kernels, so the cost follows the parameter count rather than the number of tensors, and the float32
temporaries are bounded by the chunk.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator

import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 24  # float32 temporaries of about 5 x 64 MiB per chunk
_LOW_HALF = 1 << 16  # the float32 bits a bfloat16 drops


def stochastic_round(values: Tensor) -> Tensor:
    """bfloat16 copy of float32 `values`, rounded up with the probability of the dropped remainder.

    Adds uniform noise below the lowest kept bit to the float32 bit pattern, then truncates. The pattern is
    sign-magnitude, so this works the same for negative numbers and zeros. `values` is overwritten. Written with
    `rand_like` and bit views only, so torch.compile fuses it with the update that produced `values`.
    """
    noise = torch.rand_like(values).mul_(_LOW_HALF).to(torch.int32)  # uniform over [0, 2^16)
    bits = values.view(torch.int32).add_(noise).bitwise_and_(-_LOW_HALF)
    return bits.view(torch.float32).to(torch.bfloat16)  # exact: the dropped bits are zero


def _adamw_chunk(
    grad: Tensor,
    average: Tensor,
    square: Tensor,
    weights: Tensor,
    factors: Tensor,
    beta1: float,
    beta2: float,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """One AdamW step of flat bf16 slices, computed in float32: the new moments and the stochastically rounded weights.

    `factors` holds (step size, square-root bias correction, weight-decay factor) as a tensor, so the values that
    change every step do not make torch.compile build a new graph each step.
    """
    step_size, root_correction, keep = factors[0], factors[1], factors[2]
    grad = grad.float()
    average = average.float().lerp_(grad, 1 - beta1)
    square = square.float().mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    moments = average.to(torch.bfloat16), square.to(torch.bfloat16)
    step = average.div_(square.sqrt_().div_(root_correction).add_(eps)).mul_(step_size)
    weights = weights.float().mul_(keep).sub_(step)
    return *moments, stochastic_round(weights)


def _flat(tensor: Tensor, start: int, stop: int) -> Tensor:
    return tensor.view(-1)[start:stop]


def _gather(tensors: list[Tensor], chunk: list[tuple[int, int, int]]) -> Tensor:
    """The chunk's slices of `tensors`, concatenated (a view when the chunk is one slice)."""
    if len(chunk) == 1:
        return _flat(tensors[chunk[0][0]], chunk[0][1], chunk[0][2])
    return torch.cat([_flat(tensors[i], start, stop) for i, start, stop in chunk])


def _scatter(tensors: list[Tensor], values: Tensor, chunk: list[tuple[int, int, int]]) -> None:
    """Write flat `values` back into the chunk's slices of `tensors`."""
    targets = [_flat(tensors[i], start, stop) for i, start, stop in chunk]
    torch._foreach_copy_(targets, list(values.split([stop - start for _, start, stop in chunk])))


def _pieces(params: list[Tensor], budget: int) -> Iterator[list[tuple[int, int, int]]]:
    """(parameter index, start, stop) slices of the flattened parameters, grouped into chunks of <= budget."""
    chunk: list[tuple[int, int, int]] = []
    size = 0
    for index, param in enumerate(params):
        start = 0
        while start < param.numel():
            stop = min(param.numel(), start + budget - size)
            chunk.append((index, start, stop))
            size += stop - start
            start = stop
            if size == budget:
                yield chunk
                chunk, size = [], 0
    if chunk:
        yield chunk


class StochasticRoundingAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, torch's update rule) over bfloat16 parameters with bf16 moments."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        chunk_elements: int = CHUNK_ELEMENTS,
        seed: int = 0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.chunk_elements, self.seed = chunk_elements, seed
        # On CUDA the chunk update is compiled into one kernel: eager it is ~20 passes over the chunk (H100:
        # 77 ms of a 188 ms lowmem step). On a CPU it stays eager, where compiling would cost more than it saves.
        self._compiled_chunk = torch.compile(_adamw_chunk, fullgraph=True)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            by_step: dict[int, list[Tensor]] = defaultdict(list)
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.dtype != torch.bfloat16 or not param.is_contiguous():
                    raise TypeError(
                        f"StochasticRoundingAdamW updates contiguous bfloat16 parameters, got {param.dtype} "
                        f"{tuple(param.shape)}"
                    )
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                by_step[state["step"]].append(param)
            for step, params in by_step.items():
                self._update(params, group, step, self._rounding_seed(group, step))
        return loss

    def _rounding_seed(self, group: dict, step: int) -> int:
        """The rounding noise of a group's update comes from its own seed, not from the global generator: under
        DDP every process must round its copy of the weights alike (they draw their own dropout and samples), and
        a resumed run rounds as the whole run did (the step is in the optimizer's state)."""
        return (self.seed * 1_000_003 + self.param_groups.index(group)) * 1_000_000_007 + step

    def _update(self, params: list[Tensor], group: dict, step: int, seed: int) -> None:
        beta1, beta2 = group["betas"]
        lr, eps, decay = float(group["lr"]), group["eps"], group["weight_decay"]
        step_size = lr / (1 - beta1**step)
        root_correction = math.sqrt(1 - beta2**step)
        grads = [param.grad.contiguous() for param in params]
        averages = [self.state[param]["exp_avg"] for param in params]
        squares = [self.state[param]["exp_avg_sq"] for param in params]
        device = params[0].device
        update = self._compiled_chunk if device.type == "cuda" else _adamw_chunk
        factors = torch.tensor([step_size, root_correction, 1 - lr * decay], dtype=torch.float32, device=device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed % 2**63)
            for chunk in _pieces(params, self.chunk_elements):
                average, square, weights = update(
                    _gather(grads, chunk),
                    _gather(averages, chunk),
                    _gather(squares, chunk),
                    _gather(params, chunk),
                    factors,
                    beta1,
                    beta2,
                    eps,
                )
                _scatter(averages, average, chunk)
                _scatter(squares, square, chunk)
                _scatter(params, weights, chunk)

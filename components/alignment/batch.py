"""Batched alignment indices and the gathers that turn model outputs into per-tier vector pairs.

Collation happens in DataLoader workers; on the device every tier is a handful of index ops with no loop over samples.
Positions index each side's token sequence from its first token, so outputs must be right-padded (or shifted first).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from components.alignment.cross_tokenizer import SampleAlignment

GATHER_TIERS = ("matched", "split", "window")


@dataclass(frozen=True)
class BatchAlignment:
    """Index tensors (torch.long) for one batch; ``*_b`` is the sample, ``*_s``/``*_t``/``*_pos`` token positions.

    Split group ids are unique across the batch: ``0..n_split_groups-1``.
    """

    matched_b: torch.Tensor
    matched_s: torch.Tensor
    matched_t: torch.Tensor
    split_s_b: torch.Tensor
    split_s_pos: torch.Tensor
    split_s_group: torch.Tensor
    split_t_b: torch.Tensor
    split_t_pos: torch.Tensor
    split_t_group: torch.Tensor
    n_split_groups: int
    window_b: torch.Tensor
    window_s: torch.Tensor
    window_t: torch.Tensor
    sequence_s_b: torch.Tensor
    sequence_s: torch.Tensor
    sequence_t_b: torch.Tensor
    sequence_t: torch.Tensor

    def _map_tensors(self, move) -> BatchAlignment:
        values = {}
        for item in fields(self):
            value = getattr(self, item.name)
            values[item.name] = move(value) if isinstance(value, torch.Tensor) else value
        return BatchAlignment(**values)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> BatchAlignment:
        return self._map_tensors(lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> BatchAlignment:
        """Called by DataLoader(pin_memory=True) so the copy to the GPU can be asynchronous."""
        return self._map_tensors(lambda tensor: tensor.pin_memory())


def _concat(arrays: list[np.ndarray]) -> torch.Tensor:
    if not arrays:
        return torch.zeros(0, dtype=torch.long)
    return torch.from_numpy(np.concatenate(arrays).astype(np.int64, copy=False))


def _batch_index(arrays: list[np.ndarray]) -> torch.Tensor:
    counts = np.array([len(array) for array in arrays], dtype=np.int64)
    return torch.from_numpy(np.repeat(np.arange(len(arrays), dtype=np.int64), counts))


def collate_alignments(alignments: list[SampleAlignment]) -> BatchAlignment:
    """Stacks per-sample alignments; sample i's split groups are shifted by the groups of samples before it."""
    group_counts = [alignment.n_split_groups for alignment in alignments]
    group_offsets = np.concatenate([[0], np.cumsum(group_counts, dtype=np.int64)])
    split_s_group = [a.split_s_group + offset for a, offset in zip(alignments, group_offsets[:-1], strict=True)]
    split_t_group = [a.split_t_group + offset for a, offset in zip(alignments, group_offsets[:-1], strict=True)]
    return BatchAlignment(
        matched_b=_batch_index([a.matched_s for a in alignments]),
        matched_s=_concat([a.matched_s for a in alignments]),
        matched_t=_concat([a.matched_t for a in alignments]),
        split_s_b=_batch_index([a.split_s for a in alignments]),
        split_s_pos=_concat([a.split_s for a in alignments]),
        split_s_group=_concat(split_s_group),
        split_t_b=_batch_index([a.split_t for a in alignments]),
        split_t_pos=_concat([a.split_t for a in alignments]),
        split_t_group=_concat(split_t_group),
        n_split_groups=int(group_offsets[-1]),
        window_b=_batch_index([a.window_s for a in alignments]),
        window_s=_concat([a.window_s for a in alignments]),
        window_t=_concat([a.window_t for a in alignments]),
        sequence_s_b=_batch_index([a.sequence_s for a in alignments]),
        sequence_s=_concat([a.sequence_s for a in alignments]),
        sequence_t_b=_batch_index([a.sequence_t for a in alignments]),
        sequence_t=_concat([a.sequence_t for a in alignments]),
    )


def _wide(dtype: torch.dtype) -> torch.dtype:
    """float32 at least: the dtype distances are computed in, so that bf16 outputs do not round them away."""
    return torch.promote_types(dtype, torch.float32)


def _rows(outputs: torch.Tensor, samples: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The indexed rows, widened after the gather: only the compared rows are converted, not whole batches."""
    return outputs[samples, positions].to(_wide(outputs.dtype))


def _group_means(rows: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Mean of ``rows`` per group id, summed and returned in float32 at least (small groups are not lost)."""
    accumulate = _wide(rows.dtype)
    sums = torch.zeros(n_groups, rows.shape[-1], dtype=accumulate, device=rows.device)
    sums = sums.index_add(0, groups, rows.to(accumulate))
    counts = torch.zeros(n_groups, dtype=accumulate, device=rows.device)
    counts = counts.index_add(0, groups, torch.ones_like(groups, dtype=accumulate))
    return sums / counts.clamp_min(1).unsqueeze(-1)


def tier_vectors(
    student_out: torch.Tensor, teacher_out: torch.Tensor, batch_alignment: BatchAlignment, tier: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-aligned (student, teacher) vectors of one tier from (batch, length, dim) outputs, in float32 at least.

    matched and window: one row per pair; split: one row per group, each side the mean of its tokens. The
    sequence tier is a mean per sample instead: see :func:`sequence_vectors`.
    """
    alignment = batch_alignment
    if tier == "matched":
        return (
            _rows(student_out, alignment.matched_b, alignment.matched_s),
            _rows(teacher_out, alignment.matched_b, alignment.matched_t),
        )
    if tier == "window":
        return (
            _rows(student_out, alignment.window_b, alignment.window_s),
            _rows(teacher_out, alignment.window_b, alignment.window_t),
        )
    if tier == "split":
        student_rows = student_out[alignment.split_s_b, alignment.split_s_pos]
        teacher_rows = teacher_out[alignment.split_t_b, alignment.split_t_pos]
        return (
            _group_means(student_rows, alignment.split_s_group, alignment.n_split_groups),
            _group_means(teacher_rows, alignment.split_t_group, alignment.n_split_groups),
        )
    raise ValueError(f"tier_vectors handles {GATHER_TIERS}, not {tier!r}; use sequence_vectors for 'sequence'")


def masked_mean(outputs: torch.Tensor, real_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where ``real_mask`` is true, per sample: (batch, length, dim) -> (batch, dim), summed
    and returned in float32 at least (the 0/1 weighting is exact in any dtype, so it needs no wider copy)."""
    accumulate = _wide(outputs.dtype)
    weights = real_mask.to(outputs.dtype).unsqueeze(-1)
    counts = real_mask.sum(dim=1, keepdim=True, dtype=accumulate)
    return (outputs * weights).sum(dim=1, dtype=accumulate) / counts.clamp_min(1)


def _positions_mask(outputs: torch.Tensor, samples: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(outputs.shape[:2], dtype=torch.bool, device=outputs.device)
    return mask.index_put((samples, positions), torch.ones_like(positions, dtype=torch.bool))


def sequence_vectors(
    student_out: torch.Tensor, teacher_out: torch.Tensor, batch_alignment: BatchAlignment
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tier 4: each side's mean over its tokens of the text both read whole (no padding, no special tokens,
    nothing past where either side was cut), one row per sample, and which rows have tokens on both sides."""
    alignment = batch_alignment
    student_mask = _positions_mask(student_out, alignment.sequence_s_b, alignment.sequence_s)
    teacher_mask = _positions_mask(teacher_out, alignment.sequence_t_b, alignment.sequence_t)
    both = student_mask.any(dim=1) & teacher_mask.any(dim=1)
    return masked_mean(student_out, student_mask), masked_mean(teacher_out, teacher_mask), both


def window_accept(s_vecs: torch.Tensor, t_vecs: torch.Tensor, min_cosine: float) -> torch.Tensor:
    """Which window candidates are used: cosine >= ``min_cosine``; a gate, so no gradient flows through it."""
    with torch.no_grad():
        cosine = F.cosine_similarity(s_vecs.float(), t_vecs.float(), dim=-1)
    return cosine >= min_cosine

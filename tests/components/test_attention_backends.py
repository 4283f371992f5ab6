"""Attention kernels chosen for varying sequence lengths."""

from __future__ import annotations

import torch

from components.attention_backends import shape_stable_attention
from components.teacher_outputs import encode_teacher


def test_cudnn_attention_is_off_inside_and_restored_after():
    before = (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled())
    with shape_stable_attention():
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()) == before


def test_teacher_encoding_runs_under_it():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            seen.append(torch.backends.cuda.cudnn_sdp_enabled())
            return type("Out", (), {"last_hidden_state": input_ids.float()})()

    encode_teacher(Probe(), torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool))
    assert seen == [False]

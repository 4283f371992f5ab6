"""A text batch: both models read the same ids, and each real position is labelled with the token after it."""

from __future__ import annotations

import torch

from components.data.texts import TextCollator
from components.losses.logit_losses import IGNORED


def test_labels_are_the_next_tokens_of_each_row_and_ignored_where_the_text_ends() -> None:
    batch = TextCollator(pad_id=0)([{"index": 0, "student_ids": [5, 6, 7]}, {"index": 1, "student_ids": [8]}])
    assert batch.student_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.student_mask.tolist() == [[True, True, True], [True, False, False]]
    # One label per real token, in the order logits[mask] gives them.
    assert batch.labels.tolist() == [6, 7, IGNORED, IGNORED]
    assert batch.student_tokens == 4
    assert batch.indices.tolist() == [0, 1]
    assert batch.to(torch.device("cpu")).labels.tolist() == batch.labels.tolist()

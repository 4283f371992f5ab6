"""Cross-tokenizer token alignment: tiers computed in data workers, gathered on the device."""

from components.alignment.batch import (
    BatchAlignment,
    collate_alignments,
    sequence_vectors,
    tier_vectors,
    window_accept,
)
from components.alignment.cross_tokenizer import CrossTokenizerAligner, SampleAlignment
from components.alignment.report import coverage_report, format_report
from components.alignment.views import TokenView, token_view, token_views

__all__ = [
    "BatchAlignment",
    "CrossTokenizerAligner",
    "SampleAlignment",
    "TokenView",
    "collate_alignments",
    "coverage_report",
    "format_report",
    "sequence_vectors",
    "tier_vectors",
    "token_view",
    "token_views",
    "window_accept",
]

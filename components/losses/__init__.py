"""Loss terms: one function per `type:`, applied to the vector pairs of one alignment tier."""

from components.losses.distill_loss import DistillLoss, TierPairs, tier_pairs

__all__ = ["DistillLoss", "TierPairs", "tier_pairs"]

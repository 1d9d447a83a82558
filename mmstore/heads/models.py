"""The classifier head as a torch module: a projection per input field, a fusion of the
present modalities (``concat``, ``mean`` or gated ``attention``), modality dropout while
training, and an MLP to class logits. A missing modality (mask False) never contributes:
its zero row is not data."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

FusionKind = Literal["concat", "mean", "attention"]


class Projection(nn.Sequential):
    """One modality into the shared hidden width: Linear, GELU, LayerNorm."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.LayerNorm(hidden))


class GatedScore(nn.Module):
    """Gated attention score per modality (Ilse et al. 2018): w . (tanh(V h) * sigmoid(U h))."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.v, self.u, self.w = (
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, 1),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.w(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h))).squeeze(-1)


class FusionClassifier(nn.Module):
    """Per-field projections, a fusion over the present modalities, and an MLP.

    ``fields`` fixes the order of the modalities; inputs and masks are dicts keyed by
    field: ``(n, dim)`` float tensors and ``(n,)`` bool masks.
    """

    def __init__(
        self,
        dims: dict[str, int],
        n_classes: int,
        *,
        fusion: FusionKind = "concat",
        hidden: int = 64,
        mlp_hidden: int = 64,
        dropout: float = 0.1,
        modality_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.fields, self.n_classes = list(dims), n_classes
        self.fusion, self.modality_dropout = fusion, modality_dropout
        self.proj = nn.ModuleDict({f: Projection(d, hidden) for f, d in dims.items()})
        self.score = GatedScore(hidden) if fusion == "attention" else None
        width = hidden * len(dims) if fusion == "concat" else hidden
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_hidden, n_classes),
        )

    def embed(
        self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The fused embedding ``(n, width)`` that the MLP classifies."""
        h = torch.stack([self.proj[f](inputs[f]) for f in self.fields], dim=1)  # (n, M, H)
        m = torch.stack([masks[f] for f in self.fields], dim=1)  # (n, M) bool
        if self.training and self.modality_dropout > 0:
            m = drop_modalities(m, self.modality_dropout)
        mf = m.unsqueeze(-1).to(h.dtype)
        if self.fusion == "concat":
            return (h * mf).flatten(1)
        if self.fusion == "mean":
            return (h * mf).sum(1) / mf.sum(1).clamp(min=1.0)
        assert self.score is not None
        scores = self.score(h).masked_fill(~m, float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # a row with none present: 0
        return (weights.unsqueeze(-1) * h).sum(1)

    def forward(
        self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return self.mlp(self.embed(inputs, masks))


def drop_modalities(m: torch.Tensor, p: float) -> torch.Tensor:
    """Mask present modalities at random with probability ``p``; a row that would lose all
    of them keeps its original mask (never a row with nothing)."""
    keep = m & (torch.rand(m.shape, device=m.device) >= p)
    return torch.where(keep.any(dim=1, keepdim=True), keep, m)

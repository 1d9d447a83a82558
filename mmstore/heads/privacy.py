"""Differential privacy of a head's training rows: DP-SGD through Opacus.

``dp={"epsilon": e, "delta": d, "max_grad_norm": c}`` asks that the trained weights be
(e, d)-differentially private with respect to the training rows (a row added or removed):

- per-sample gradients are clipped to norm ``c`` and Gaussian noise is added to their sum
  (Opacus's ``PrivacyEngine.make_private_with_epsilon``, RDP accountant); the noise
  multiplier is the smallest that keeps the whole *planned* run (``epochs`` epochs) within
  the budget;
- batches are drawn by Poisson sampling (each training row enters each step independently
  with probability ``batch_size / n``), as the accounting assumes: Opacus's
  ``DPDataLoader`` over a dataset of row indices into the in-memory tensors, so batch sizes
  vary and a batch may be empty (the step is still taken: it releases noise only);
- ``delta`` must be below ``1/n`` (n the training rows): a larger delta allows a mechanism
  that publishes a whole row with probability delta, which is no privacy at all;
- early stopping: every epoch run spends budget, whatever its validation score. The spent
  epsilon recorded is the accountant's for the steps actually taken, so a run stopped early
  spends less than the target, and the planned epochs bound it: the spent epsilon never
  exceeds the target. Choosing the best epoch by validation macro-F1 is post-processing of
  the noisy checkpoints with the validation rows.

What is protected is the training split only: validation rows choose the epoch and test
rows are scored, non-privately, and the metrics in ``head.json`` are computed on them.
The noise and sampling are seeded from ``seed`` (reproducible runs; Opacus's
``secure_mode`` is not used), which is standard for research use but not a guarantee
against an adversary who knows the seed.

Opacus must compute per-sample gradients of every layer: the classifier's layers are
``Linear``, ``LayerNorm``, ``GELU``, ``Dropout`` and the gated attention's ``tanh`` and
``sigmoid``, which it supports; :func:`check_model` refuses a model that
``opacus.validators.ModuleValidator`` finds fault with (for example BatchNorm) rather than
silently replacing its layers. DP with distributed data parallel is refused (one process)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmstore.errors import InvalidInputError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mmstore.heads.options import DPOptions

ACCOUNTANT = "rdp"
# RDP's bound at its largest order: still a valid (looser) bound, so not worth a warning
OPTIMAL_ORDER = "Optimal order is the largest alpha"


def check_budget(dp: DPOptions, n_train: int) -> None:
    """Refuse a delta of 1/n or more (n the training rows)."""
    if n_train < 1:
        raise InvalidInputError("differential privacy needs training rows; there are none")
    if dp.delta >= 1.0 / n_train:
        raise InvalidInputError(
            f"dp delta {dp.delta:g} is not below 1/n = {1.0 / n_train:.3g} for n = {n_train} "
            f"training rows; a delta that large allows leaking whole rows: choose "
            f"delta < 1/n (commonly much smaller, e.g. 1/n**1.1 or 1e-5)"
        )


def check_model(model: nn.Module) -> None:
    """Refuse a model Opacus cannot compute per-sample gradients for."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise InvalidInputError(
            "this head's model cannot be trained with differential privacy: "
            + "; ".join(str(e) for e in errors)
        )


@dataclass
class Private:
    """A model, optimizer and Poisson-sampled loader made private, with their budget."""

    engine: Any
    module: nn.Module
    optimizer: torch.optim.Optimizer
    loader: Any
    dp: DPOptions
    epochs_planned: int
    n_train: int

    def batches(self, device: torch.device) -> Iterator[torch.Tensor]:
        """One epoch of Poisson-sampled batches of training row indices (maybe empty)."""
        for (idx,) in self.loader:
            yield idx.to(device)

    def spent(self, epochs_run: int) -> dict[str, Any]:
        """The accountant's spent epsilon for the steps taken, with the budget asked for."""
        steps = sum(n for _, _, n in self.engine.accountant.history)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=OPTIMAL_ORDER)
            epsilon = float(self.engine.get_epsilon(self.dp.delta)) if steps else 0.0
        return {
            "epsilon": epsilon,
            "delta": self.dp.delta,
            "target_epsilon": self.dp.epsilon,
            "max_grad_norm": self.dp.max_grad_norm,
            "noise_multiplier": float(self.optimizer.noise_multiplier),  # type: ignore[attr-defined]
            "sample_rate": float(self.loader.sample_rate),
            "training_rows": self.n_train,
            "steps": int(steps),
            "epochs_run": epochs_run,
            "epochs_planned": self.epochs_planned,
            "accountant": ACCOUNTANT,
            "sampling": "poisson",
        }

    def close(self) -> None:
        """Remove Opacus's hooks from the wrapped model (its weights stay trained)."""
        self.module._close()  # type: ignore[operator]


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: torch.Tensor,
    dp: DPOptions,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
) -> Private:
    """Wrap ``model`` and ``optimizer`` for DP-SGD over the training row indices ``train``
    with the noise that spends at most ``dp.epsilon`` over ``epochs`` epochs."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    n = len(train)
    check_budget(dp, n)
    check_model(model)
    device = next(model.parameters()).device
    rows = TensorDataset(train.detach().cpu())
    loader = DataLoader(rows, batch_size=min(batch_size, n))
    noise = torch.Generator(device=device).manual_seed(seed)
    with warnings.catch_warnings():
        # Opacus warns that secure_mode is off (seeded noise: documented above)
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message=OPTIMAL_ORDER)
        engine = PrivacyEngine(accountant=ACCOUNTANT)
        module, optim, dp_loader = engine.make_private_with_epsilon(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            target_epsilon=dp.epsilon,
            target_delta=dp.delta,
            epochs=epochs,
            max_grad_norm=dp.max_grad_norm,
            poisson_sampling=True,
            noise_generator=noise,
        )
    return Private(engine, module, optim, dp_loader, dp, epochs, n)

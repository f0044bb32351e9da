"""Learning-rate schedules of the pre-training recipes."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["LinearWarmupCosineLR"]


class LinearWarmupCosineLR(LRScheduler):
    """Linear warm-up followed by a cosine decay, in closed form (resumable through ``state_dict``).

    The schedule of SuPreM's supervised pre-training (Li, Zhou et al., ICLR 2024, arXiv:2501.11253: 20 warm-up
    epochs, then cosine to 0); the cosine part is SGDR's (Loshchilov & Hutter, ICLR 2017, arXiv:1608.03983)
    without restarts. For step ``t`` (an epoch or an iteration, whichever ``step()`` is called for) and each
    parameter group's initial learning rate ``base_lr``:

    - ``t < warmup_steps``: ``warmup_start_lr + (base_lr - warmup_start_lr) * t / warmup_steps``;
    - ``warmup_steps <= t <= max_steps``:
      ``eta_min + (base_lr - eta_min) * (1 + cos(pi * (t - warmup_steps) / (max_steps - warmup_steps))) / 2``;
    - ``t > max_steps``: ``eta_min``.

    So the rate is ``warmup_start_lr`` at step 0, ``base_lr`` at ``warmup_steps`` and ``eta_min`` at ``max_steps``.
    Each value is computed from ``t`` alone, so a scheduler restored with ``load_state_dict`` continues exactly
    (it also writes the restored step's rates into the optimizer).

    Args:
        optimizer: the wrapped optimizer; its groups' ``lr`` (or ``initial_lr`` when resuming) is ``base_lr``.
        warmup_steps: length of the linear warm-up (0 for none).
        max_steps: step at which the cosine reaches ``eta_min``.
        warmup_start_lr: rate at step 0.
        eta_min: final rate.
        last_epoch: index of the last step, -1 to start afresh.

    Raises:
        ValueError: ``warmup_steps < 0`` or ``max_steps <= warmup_steps``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        max_steps: int,
        warmup_start_lr: float = 0.0,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        if max_steps <= warmup_steps:
            raise ValueError(f"max_steps ({max_steps}) must be larger than warmup_steps ({warmup_steps}).")
        self.warmup_steps = int(warmup_steps)
        self.max_steps = int(max_steps)
        self.warmup_start_lr = float(warmup_start_lr)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int, base_lr: float) -> float:
        """The learning rate of a group with initial rate ``base_lr`` at ``step``."""
        if step < self.warmup_steps:
            return self.warmup_start_lr + (base_lr - self.warmup_start_lr) * step / self.warmup_steps
        if step >= self.max_steps:
            return self.eta_min
        progress = (step - self.warmup_steps) / (self.max_steps - self.warmup_steps)
        return self.eta_min + (base_lr - self.eta_min) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        """Rates of all parameter groups at ``last_epoch``."""
        return [self.lr_at(self.last_epoch, float(base_lr)) for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the schedule and set the optimizer's rates to the restored step's values (so the order in which
        optimizer and scheduler are restored does not matter)."""
        super().load_state_dict(state_dict)
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

"""RAdam (Liu et al.: Adam with a rectified variance), following torch.optim.RAdam's update rule,
defaults and state layout."""

from ..ops import updates
from .optimizer import Optimizer


class RAdam(Optimizer):
    """RAdam: momentum SGD for the first steps, while the second moment's estimate is too noisy
    (the length of its SMA at most 5), then Adam's step scaled by a rectification term.

    Args:
        params: Parameters, or dicts of parameter groups with their own hyper-parameters.
        lr: learning rate (default 1e-3).
        betas: decays of the first and second moments, each in [0, 1) (default (0.9, 0.999)).
        eps: added to the root of the second moment (default 1e-8).
        weight_decay: an L2 term added to the gradient, or with ``decoupled_weight_decay`` the
            parameter multiplied by ``1 - lr * weight_decay`` each step (default 0).
        decoupled_weight_decay: AdamW-style decay (default False).

    State per parameter (PyTorch's names): ``step``, ``exp_avg``, ``exp_avg_sq``.
    """

    hyper = {"lr": "non_negative", "betas": "betas", "eps": "non_negative", "weight_decay": "non_negative",
             "decoupled_weight_decay": "flag"}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False):
        betas = tuple(betas) if isinstance(betas, list) else betas
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def state_keys(self, group):
        return {"step", "exp_avg", "exp_avg_sq"}

    def _update(self, data, grad, state, group):
        beta1, beta2 = group["betas"]
        self._count_step(state, data, group)
        updates.radam_update(
            data, grad, state["exp_avg"], state["exp_avg_sq"], lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
            step=state["step"], weight_decay=group["weight_decay"], decoupled=group["decoupled_weight_decay"],
        )

"""Adadelta (Zeiler), following torch.optim.Adadelta's update rule, defaults and state layout."""

from ..ops import updates
from .optimizer import Optimizer


class Adadelta(Optimizer):
    """Adadelta: the step is the gradient scaled by the ratio of running RMS of past updates to
    running RMS of past gradients, times ``lr`` (1.0 by default, as in the paper).

    Args:
        params: Parameters, or dicts of parameter groups with their own hyper-parameters.
        lr: scale of the update (default 1.0).
        rho: decay of the running averages, in [0, 1] (default 0.9).
        eps: added inside both square roots (default 1e-6).
        weight_decay: an L2 term ``weight_decay * param`` added to the gradient (default 0).

    State per parameter (PyTorch's names): ``step``, ``square_avg``, ``acc_delta``.
    """

    hyper = {"lr": "non_negative", "rho": "unit", "eps": "non_negative", "weight_decay": "non_negative"}

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    def state_keys(self, group):
        return {"step", "square_avg", "acc_delta"}

    def _update(self, data, grad, state, group):
        self._count_step(state, data, group)
        updates.adadelta_update(
            data, grad, state["square_avg"], state["acc_delta"],
            lr=group["lr"], rho=group["rho"], eps=group["eps"], weight_decay=group["weight_decay"],
        )

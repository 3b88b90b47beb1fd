"""Adagrad (Duchi et al.), following torch.optim.Adagrad's update rule, defaults and state layout."""

from .. import backend
from ..ops import updates
from .optimizer import Optimizer


class Adagrad(Optimizer):
    """Adagrad: divide the gradient by the root of the sum of all past squared gradients.

    Args:
        params: Parameters, or dicts of parameter groups with their own hyper-parameters.
        lr: learning rate (default 1e-2).
        lr_decay: the rate at step t is ``lr / (1 + (t - 1) * lr_decay)`` (default 0).
        weight_decay: an L2 term ``weight_decay * param`` added to the gradient (default 0).
        initial_accumulator_value: the starting value of the sum of squares (default 0).
        eps: added to the root of the sum (default 1e-10).

    State per parameter (PyTorch's names): ``step``, ``sum``. PyTorch creates the state when the
    optimizer is built; xpnn at the first step (the same values: step 0, the sum filled with
    ``initial_accumulator_value``), so a ``state_dict`` taken before any step holds no state.
    """

    hyper = {"lr": "non_negative", "lr_decay": "non_negative", "weight_decay": "non_negative",
             "initial_accumulator_value": "non_negative", "eps": "non_negative"}

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, initial_accumulator_value=initial_accumulator_value, eps=eps)
        super().__init__(params, defaults)

    def state_keys(self, group):
        return {"step", "sum"}

    def _update(self, data, grad, state, group):
        if not state:
            state["sum"] = backend.namespace_of(data).full_like(data, group["initial_accumulator_value"])
        self._count_step(state, data, group)
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        updates.adagrad_update(data, grad, state["sum"], clr=clr, eps=group["eps"], weight_decay=group["weight_decay"])

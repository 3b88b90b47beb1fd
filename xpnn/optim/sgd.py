"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's rule)."""

from .. import backend, ops
from ..errors import ConfigError
from .optimizer import Optimizer


class SGD(Optimizer):
    """p -= lr * d, where d is the (weight-decayed) gradient or its momentum buffer, as in torch.optim.SGD."""

    hyper = {"lr": "non_negative", "momentum": "non_negative", "dampening": "number", "weight_decay": "non_negative", "nesterov": "flag"}

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def _check_hyper(self, where, group, error=ConfigError):
        """The rules, and Nesterov's needs: momentum > 0 and dampening 0."""
        super()._check_hyper(where, group, error)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise error(
                f"{where}: nesterov needs momentum > 0 and dampening 0, got momentum={group['momentum']}, dampening={group['dampening']}"
            )

    def state_keys(self, group):
        return {"momentum_buffer"} if group["momentum"] else set()

    def _update(self, data, grad, state, group):
        momentum = group["momentum"]
        first = momentum and "momentum_buffer" not in state
        if first:
            state["momentum_buffer"] = backend.namespace_of(data).zeros_like(data)
        ops.sgd_update(
            data, grad, state.get("momentum_buffer"), lr=group["lr"], momentum=momentum,
            dampening=group["dampening"], weight_decay=group["weight_decay"], nesterov=group["nesterov"], first=bool(first),
        )

"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's rule)."""

from .. import backend, ops
from ..errors import ConfigError
from .optimizer import Optimizer, check_hyper


class SGD(Optimizer):
    """p -= lr * d, where d is the (weight-decayed) gradient or its momentum buffer, as in torch.optim.SGD."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        check_hyper("SGD", lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ConfigError(f"SGD: nesterov needs momentum > 0 and dampening 0, got momentum={momentum}, dampening={dampening}")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def _update(self, param, state, group):
        momentum = group["momentum"]
        first = momentum and "momentum_buffer" not in state
        if first:
            state["momentum_buffer"] = backend.namespace_of(param.data).zeros_like(param.data)
        ops.sgd_update(
            param.data, param.grad, state.get("momentum_buffer"), lr=group["lr"], momentum=momentum,
            dampening=group["dampening"], weight_decay=group["weight_decay"], nesterov=group["nesterov"], first=bool(first),
        )

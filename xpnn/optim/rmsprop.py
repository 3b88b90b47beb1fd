"""RMSprop with momentum, centering and weight decay, following torch.optim.RMSprop."""

from .. import backend
from .optimizer import Optimizer


class RMSprop(Optimizer):
    """Divide the gradient by a running RMS of recent gradients (centered: by their running std)."""

    hyper = {"lr": "non_negative", "alpha": "non_negative", "eps": "non_negative", "weight_decay": "non_negative",
             "momentum": "non_negative", "centered": "flag"}

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered)
        super().__init__(params, defaults)

    def state_keys(self, group):
        optional = {"momentum_buffer": group["momentum"] > 0, "grad_avg": group["centered"]}
        return {"step", "square_avg"} | {key for key, present in optional.items() if present}

    def _update(self, data, grad, state, group):
        xp = backend.namespace_of(data)
        alpha, lr = group["alpha"], group["lr"]
        self._count_step(state, data, group)
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * data
        square_avg = state["square_avg"]
        square_avg *= alpha
        square_avg += (1 - alpha) * grad * grad
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg += (1 - alpha) * (grad - grad_avg)
            avg = xp.sqrt(square_avg - grad_avg * grad_avg) + group["eps"]
        else:
            avg = xp.sqrt(square_avg) + group["eps"]
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            buf *= group["momentum"]
            buf += grad / avg
            data -= lr * buf
        else:
            data -= lr * (grad / avg)

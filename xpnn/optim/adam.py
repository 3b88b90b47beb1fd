"""Adam and AdamW (decoupled weight decay), with amsgrad, following torch.optim's update rules."""

from .. import ops
from .optimizer import Optimizer


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` adds an L2 term to the gradient."""

    decoupled = False
    hyper = {"lr": "non_negative", "betas": "betas", "eps": "non_negative", "weight_decay": "non_negative", "amsgrad": "flag"}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        betas = tuple(betas) if isinstance(betas, list) else betas
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
        super().__init__(params, defaults)

    def state_keys(self, group):
        return {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if group["amsgrad"] else set())

    def _update(self, data, grad, state, group):
        beta1, beta2 = group["betas"]
        self._count_step(state, data, group)
        ops.adam_update(
            data, grad, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"),
            lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], step=state["step"],
            weight_decay=group["weight_decay"], decoupled=self.decoupled,
        )


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * weight_decay each step."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)

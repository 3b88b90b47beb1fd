"""Adam and AdamW (decoupled weight decay), with amsgrad, following torch.optim's update rules."""

from .. import backend, ops
from .optimizer import Optimizer, check_beta, check_hyper


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` adds an L2 term to the gradient."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        name = type(self).__name__
        check_hyper(name, lr=lr, eps=eps, weight_decay=weight_decay)
        check_beta(name, "betas[0]", betas[0])
        check_beta(name, "betas[1]", betas[1])
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
        super().__init__(params, defaults)

    def _update(self, param, state, group):
        xp = backend.namespace_of(param.data)
        beta1, beta2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        grad = param.grad
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(param.data)
            state["exp_avg_sq"] = xp.zeros_like(param.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(param.data)
        state["step"] += 1
        ops.adam_update(
            param.data, grad, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"),
            lr=lr, beta1=beta1, beta2=beta2, eps=group["eps"], step=state["step"], weight_decay=wd, decoupled=self.decoupled,
        )


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * weight_decay each step."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)

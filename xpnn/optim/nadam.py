"""NAdam (Dozat: Adam with Nesterov momentum), following torch.optim.NAdam's update rule,
momentum schedule, defaults and state layout."""

from ..ops import updates
from .optimizer import Optimizer


class NAdam(Optimizer):
    """NAdam: Adam whose step looks ahead along the momentum, with the momentum warmed up by
    ``mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))``.

    Args:
        params: Parameters, or dicts of parameter groups with their own hyper-parameters.
        lr: learning rate (default 2e-3).
        betas: decays of the first and second moments, each in [0, 1) (default (0.9, 0.999)).
        eps: added to the root of the second moment (default 1e-8).
        weight_decay: an L2 term added to the gradient, or with ``decoupled_weight_decay`` the
            parameter multiplied by ``1 - lr * weight_decay`` each step (default 0).
        momentum_decay: the momentum schedule's decay (default 4e-3).
        decoupled_weight_decay: AdamW-style decay (default False).

    State per parameter (PyTorch's names): ``step``, ``mu_product`` (a number: the product of
    the ``mu_t`` so far), ``exp_avg``, ``exp_avg_sq``.
    """

    hyper = {"lr": "non_negative", "betas": "betas", "eps": "non_negative", "weight_decay": "non_negative",
             "momentum_decay": "non_negative", "decoupled_weight_decay": "flag"}
    scalar_state = {"mu_product": "unit"}

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False):
        betas = tuple(betas) if isinstance(betas, list) else betas
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def state_keys(self, group):
        return {"step", "mu_product", "exp_avg", "exp_avg_sq"}

    def _update(self, data, grad, state, group):
        beta1, beta2 = group["betas"]
        lr, decay = group["lr"], group["momentum_decay"]
        self._count_step(state, data, group, mu_product=1.0)
        step = state["step"]
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * decay))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * decay))
        state["mu_product"] *= mu
        mu_product = state["mu_product"]
        updates.nadam_update(
            data, grad, state["exp_avg"], state["exp_avg_sq"], beta1=beta1, beta2=beta2, eps=group["eps"],
            bias_correction2=1 - beta2**step, grad_coef=lr * (1.0 - mu) / (1.0 - mu_product),
            avg_coef=lr * mu_next / (1.0 - mu_product * mu_next),
            weight_decay=group["weight_decay"], lr=lr, decoupled=group["decoupled_weight_decay"],
        )

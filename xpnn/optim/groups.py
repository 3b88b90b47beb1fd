"""Parameter groups for weight decay: decay the weights of convolutions and linear layers, not
biases and normalisation parameters (decaying a BatchNorm scale or a bias only fights the
normalisation; the recipe of He et al. 2016 and of most CIFAR/ImageNet training since)."""


def weight_decay_groups(model, weight_decay):
    """``model``'s parameters as optimizer groups: those with two or more dimensions (weights of
    Linear, Conv*, Embedding) with ``weight_decay``, the one-dimensional ones (biases, norm scales
    and shifts, PReLU slopes) with 0. ``weight_decay=None`` returns the plain parameter list, so the
    optimizer's own default applies. Empty groups are left out.

    Example::

        opt = optim.SGD(optim.weight_decay_groups(model, 5e-4), lr=0.1, momentum=0.9, nesterov=True)
    """
    params = list(model.parameters())
    if weight_decay is None:
        return params
    decayed = [p for p in params if len(p.shape) > 1]
    kept = [p for p in params if len(p.shape) <= 1]
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": kept, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]

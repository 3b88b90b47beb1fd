"""Where a model or optimizer holds NaN or infinity: the check that keeps a diverged model from
being saved as the last good checkpoint, evaluated, or resumed."""

from .. import backend


def first_non_finite(named_arrays):
    """The name of the first floating array in ``named_arrays`` (pairs of name, array) holding a
    NaN or an infinity, or None. One host read per array: call it per epoch, not per step."""
    for name, array in named_arrays:
        if not hasattr(array, "shape"):
            continue
        xp = backend.namespace_of(array)
        if not xp.isdtype(array.dtype, "real floating"):
            continue
        if not bool(xp.all(xp.isfinite(array))):
            return name
    return None


def non_finite_state(model, optimizer=None):
    """'weight <name>' or 'optimizer state <key> of parameter <i>' for the first non-finite
    entry of ``model`` (parameters and buffers) or ``optimizer``, or None when all are finite."""
    arrays = [(name, param.data) for name, param in model.named_parameters()] + list(model.named_buffers())
    name = first_non_finite(arrays)
    if name is not None:
        return f"weight {name}"
    if optimizer is None:
        return None
    index = {id(p): i for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])}
    for param, entries in optimizer.state.items():
        key = first_non_finite(entries.items())
        if key is not None:
            return f"optimizer state {key!r} of parameter {index.get(id(param), '?')}"
    return None

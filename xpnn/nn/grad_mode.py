"""Gradient mode: ``no_grad``, ``enable_grad``, ``set_grad_enabled`` and ``is_grad_enabled``.

xpnn has no autograd; what "gradients enabled" means here is that a forward keeps the cache its
``backward`` needs (a Linear's input, a Conv2d's window matrix, a ReLU's mask). Under
``no_grad()`` every layer drops that cache as its forward returns (``Module.__init_subclass__``
clears the attributes a layer names in its ``_cache`` tuple), so inference holds only the
activations in flight, and a ``backward`` after such a forward raises a ``CallOrderError``
saying so.

The rule is PyTorch's: only the gradient mode drops the cache, ``eval()`` does not. ``eval()``
changes what a layer computes (Dropout off, BatchNorm on its running statistics) and gradients
through an eval-mode model are real use (gradient checks of eval behaviour, saliency maps,
adversarial inputs), so ``model.eval()`` alone keeps the cache; inference wants both,
``model.eval()`` and ``with xpnn.no_grad():``, as ``Trainer.evaluate`` and ``predict`` do.

The mode is per thread (``threading.local``), and every context restores the mode it found on
exit, exceptions included.
"""

import functools
import inspect
import threading

_state = threading.local()


def is_grad_enabled():
    """True unless inside ``no_grad()`` (or ``set_grad_enabled(False)``) on this thread."""
    return getattr(_state, "enabled", True)


def _set(mode):
    _state.enabled = bool(mode)


class _GradMode:
    """A context manager and decorator that sets the gradient mode and restores the one it found
    on exit. Usable as ``with no_grad():``, ``@no_grad()`` and ``@no_grad``."""

    mode = True

    def __new__(cls, *args):
        if len(args) == 1 and callable(args[0]) and cls is not set_grad_enabled:
            return cls()(args[0])  # @no_grad without parentheses
        return super().__new__(cls)

    def __init__(self):
        self._previous = []

    def __enter__(self):
        self._previous.append(is_grad_enabled())
        _set(self.mode)
        return self

    def __exit__(self, *exc):
        _set(self._previous.pop())
        return False

    def _fresh(self):
        return type(self)()

    def __call__(self, func):
        if inspect.isgeneratorfunction(func):
            @functools.wraps(func)
            def generator(*args, **kwargs):
                gen = func(*args, **kwargs)
                value = None
                while True:  # the mode holds only while the generator's own code runs
                    with self._fresh():
                        try:
                            item = gen.send(value)
                        except StopIteration as stop:
                            return stop.value
                    value = yield item

            return generator

        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            with self._fresh():
                return func(*args, **kwargs)

        return wrapped

    def __repr__(self):
        return f"{type(self).__name__}()"


class no_grad(_GradMode):
    """Run forwards without keeping the backward cache, like ``torch.no_grad``.

    Inside ``with xpnn.no_grad():`` (or a function decorated with ``@xpnn.no_grad()`` or
    ``@xpnn.no_grad``) every layer's forward computes the same output as with gradients enabled
    but keeps nothing for ``backward``, and drops the cache an earlier forward left; ``backward``
    then raises a ``CallOrderError``. Layers still behave as their mode says: combine with
    ``model.eval()`` for inference (Dropout off, BatchNorm on running statistics). The previous
    mode is restored on exit, also when an exception leaves the block.
    """

    mode = False


class enable_grad(_GradMode):
    """Turn the backward cache back on inside a ``no_grad`` block, like ``torch.enable_grad``;
    a context manager and decorator, restoring the previous mode on exit."""

    mode = True


class set_grad_enabled(_GradMode):
    """Set the gradient mode to ``mode``: at once when called as a function, like
    ``torch.set_grad_enabled``, or for a block as ``with set_grad_enabled(mode):`` (the previous
    mode is restored on exit).

    Args:
        mode: True to keep the backward cache, False to drop it.
    """

    def __init__(self, mode):
        super().__init__()
        self.mode = bool(mode)
        self._previous.append(is_grad_enabled())
        _set(self.mode)

    def __enter__(self):
        return self  # the mode was set by the constructor; __exit__ restores the one before it

    def __call__(self, func):
        _set(self._previous.pop())  # as a decorator, the mode holds only inside the calls
        return super().__call__(func)

    def _fresh(self):
        return _Scoped(self.mode)

    def __repr__(self):
        return f"set_grad_enabled(mode={self.mode})"


class _Scoped(_GradMode):
    """The context a ``set_grad_enabled(mode)`` decorator enters at each call."""

    def __new__(cls, mode):
        return object.__new__(cls)

    def __init__(self, mode):
        super().__init__()
        self.mode = mode

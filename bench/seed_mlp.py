"""The seed notebooks' textbook MLP: float64 NumPy arrays, ReLU hidden layers, softmax
cross-entropy written out by hand and Adam, one weight matrix per layer. The baseline xpnn replaces."""

import itertools

import numpy as np


class SeedMLP:
    """A from-scratch MLP as in the notebooks (float64 throughout), trained with Adam."""

    def __init__(self, sizes, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, seed=0):
        rng = np.random.default_rng(seed)
        self.W = [rng.standard_normal((i, o)) * np.sqrt(2.0 / i) for i, o in itertools.pairwise(sizes)]
        self.b = [np.zeros(o) for o in sizes[1:]]
        self.params = self.W + self.b
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.lr, self.beta1, self.beta2, self.eps, self.t = lr, beta1, beta2, eps, 0

    def forward(self, X):
        self.acts = [X]
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            z = self.acts[-1] @ W + b
            self.acts.append(np.maximum(z, 0) if i < len(self.W) - 1 else z)
        logits = self.acts[-1]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def backward(self, probs, Y):
        """Gradients of the mean cross-entropy, given softmax ``probs`` and one-hot ``Y``."""
        delta = (probs - Y) / len(Y)
        dW, db = [], []
        for i in reversed(range(len(self.W))):
            dW.insert(0, self.acts[i].T @ delta)
            db.insert(0, delta.sum(axis=0))
            if i > 0:
                delta = (delta @ self.W[i].T) * (self.acts[i] > 0)
        return dW + db

    def adam(self, grads):
        self.t += 1
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m[:] = self.beta1 * m + (1 - self.beta1) * g
            v[:] = self.beta2 * v + (1 - self.beta2) * g**2
            m_hat = m / (1 - self.beta1**self.t)
            v_hat = v / (1 - self.beta2**self.t)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def train_step(self, X, y):
        """One Adam step on a batch; returns the loss (a Python float, as the notebooks print it)."""
        Y = np.eye(self.W[-1].shape[1])[y]
        probs = self.forward(X)
        loss = -np.mean(np.sum(Y * np.log(probs + 1e-12), axis=1))
        self.adam(self.backward(probs, Y))
        return loss

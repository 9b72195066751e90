"""The reference cases of bench/CASES.md as plain array math on a namespace `xp` (jax.numpy
or torch), shared by run_jax.py and run_torch.py. Each mirrors bench/CASE.traj."""

# name -> steps, learning rate, {param: input file}, loss(xp, params, data[, X, y]).
# Every case is plain gradient descent, p <- p - lr * grad, all params at once, float64.


def dln_loss(xp, p, d):
    W = p["W"]
    E = W[3] @ W[2] @ W[1] @ W[0]
    R = d["X"] @ E.T - d["Y"]
    return 0.5 * xp.sum(R * R) / d["X"].shape[0]


def logreg_loss(xp, p, d):
    z = -d["y"] * (d["X"] @ p["w"])
    # logaddexp(z, 0), as bench/logreg.traj writes it. The textbook form
    # max(z, 0) + log1p(exp(-|z|)) gets gradient 0 at z = 0 from JAX and PyTorch (traj
    # gives 1/2, docs/subgradients.md), so from w = 0 their gradient descent would not move.
    return xp.mean(xp.logaddexp(z, xp.zeros_like(z)))


def dmf_loss(xp, p, d):
    W = p["W"]
    R = d["mask"] * (W[2] @ W[1] @ W[0] - d["M"])
    return 0.5 * xp.sum(R * R) / xp.sum(d["mask"])


def two_layer_loss(xp, p, d, X=None, y=None):
    X = d["X"] if X is None else X
    y = d["y"] if y is None else y
    pre = X @ p["W"].T
    r = xp.maximum(pre, xp.zeros_like(pre)) @ p["a"] - y
    return 0.5 * xp.mean(r * r)


def tanh_loss(xp, p, d):
    # the tanh network of the edge-of-stability experiments: transcendental-bound
    r = xp.tanh(d["X"] @ p["W"].T) @ p["a"] - d["y"]
    return 0.5 * xp.mean(r * r)


def mlp_loss(xp, p, d):
    # a classifier, as std.nets' mlp_bias and std.losses' cross_entropy: one hidden ReLU
    # layer with biases, the mean softmax cross-entropy against int labels
    pre = d["X"] @ p["W1"].T + p["b1"]
    z = xp.maximum(pre, xp.zeros_like(pre)) @ p["W2"].T + p["b2"]
    labels = d["labels"][:, None]
    if xp.__name__ == "torch":
        zmax, picked = z.amax(dim=1, keepdim=True), z.gather(1, labels)[:, 0]
    else:
        zmax, picked = z.max(axis=1, keepdims=True), xp.take_along_axis(z, labels, 1)[:, 0]
    lse = zmax[:, 0] + xp.log(xp.sum(xp.exp(z - zmax), 1))
    return xp.mean(lse - picked)


TWO_LAYER = {"W": "W0", "a": "a0"}
CASES = {
    "dln": dict(steps=20_000, lr=0.01, params={"W": "W0"}, loss=dln_loss),
    "logreg": dict(steps=100_000, lr=1.0, params={"w": "w0"}, loss=logreg_loss),
    "dmf": dict(steps=2_000, lr=2.0, params={"W": "W0"}, loss=dmf_loss),
    "relu2": dict(steps=2_000, lr=0.05, params=TWO_LAYER, loss=two_layer_loss),
    "wide": dict(steps=50, lr=0.002, params=TWO_LAYER, loss=two_layer_loss),
    # Minibatch SGD: `batch` rows of (X, y) uniformly with replacement each step. Random
    # streams differ between implementations: only the final loss's order of magnitude
    # is comparable.
    "sgd": dict(steps=20_000, lr=0.05, params=TWO_LAYER, loss=two_layer_loss, batch=32),
    "tanh": dict(steps=2_000, lr=0.05, params=TWO_LAYER, loss=tanh_loss),
    "mlp": dict(steps=2_000, lr=0.5, params={"W1": "W1", "b1": "b1", "W2": "W2", "b2": "b2"}, loss=mlp_loss),
}

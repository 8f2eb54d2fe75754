"""The Guiglion et al. 2020 network as one batched Keras model of several ensemble members:
grouped convolutions, member-batched dense layers, the masked MSE and per-member loss
metric (see :mod:`labelcore.methods.cnn`)."""

from __future__ import annotations

import os

from labelcore._lazy import load


def _keras():
    """Keras (TensorFlow backend), loaded on first use through the one lazy loader."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return load("keras")


def _group_conv_layer():
    keras = _keras()
    ops = _keras().ops

    if "GroupConv1D" in _CACHE:
        return _CACHE["GroupConv1D"]

    @keras.saving.register_keras_serializable(package="labelcore")
    class GroupConv1D(keras.layers.Layer):
        """``members`` independent Conv1D layers (``cin`` -> ``filters``, valid padding,
        ReLU) on the channel blocks of one tensor [N, L, members * cin] -> [N, L',
        members * filters]: a grouped convolution. Weights carry the member axis first:
        kernel [members, k, cin, filters], bias [members, filters].

        How it is computed (measured on the 2-core CPU, forward + backward, 20 members,
        batch 64, ~890 pixels): TensorFlow's grouped ``Conv1D`` is ~75x slower than dense
        convolutions, and a depthwise convolution followed by a channel sum ~3x slower.
        So each ``group_size`` consecutive members share one ordinary convolution whose
        kernel is block-diagonal (member e's block is its own kernel, the rest zeros,
        assembled in the graph, so gradients reach only the member kernels): fewer, larger
        oneDNN convolutions. Measured for a whole 20-member training step (Adam), with
        members per convolution in (conv2, conv3): (1, 1) 145 ms, (2, 2) 126 ms, (2, 4)
        121 ms, (4, 4) 125 ms, (2, 5) 122 ms; so conv2 uses 2 and conv3 4. The member
        blocks are cut with one ``split`` (per-block slices cost ~60 % more). The
        arithmetic is that of separate convolutions (the zeros add nothing)."""

        def __init__(self, members, cin, filters, kernel_size, kernel_initializer=None, group_size=1,
                     **kwargs):
            super().__init__(**kwargs)
            self.members, self.cin, self.filters = int(members), int(cin), int(filters)
            self.kernel_size = int(kernel_size)
            self.group_size = max(1, min(int(group_size), self.members))
            self.kernel_initializer = keras.initializers.get(kernel_initializer or "glorot_uniform")

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(self.members, self.kernel_size, self.cin, self.filters),
                                          initializer=self.kernel_initializer, name="kernel")
            self.bias = self.add_weight(shape=(self.members, self.filters), initializer="zeros", name="bias")

        def call(self, x):
            G, cin, f, k = self.group_size, self.cin, self.filters, self.kernel_size
            starts = list(range(0, self.members, G))
            sizes = [min(G, self.members - a) for a in starts]
            parts = (ops.split(x, [a * cin for a in starts[1:]], axis=-1) if len(starts) > 1 else [x])
            kern = (ops.split(self.kernel, starts[1:], axis=0) if len(starts) > 1 else [self.kernel])
            bias = (ops.split(self.bias, starts[1:], axis=0) if len(starts) > 1 else [self.bias])
            out = []
            for xa, w, b, g in zip(parts, kern, bias, sizes, strict=True):
                if g > 1:   # block-diagonal [k, g*cin, g*f]
                    w = ops.reshape(ops.einsum("gkcf,gh->kgchf", w, ops.eye(g, dtype=w.dtype)), (k, g * cin, g * f))
                else:
                    w = w[0]
                out.append(ops.conv(xa, w, strides=1, padding="valid") + ops.reshape(b, (-1,)))
            return ops.relu(ops.concatenate(out, axis=-1) if len(out) > 1 else out[0])

        def compute_output_shape(self, input_shape):
            L = None if input_shape[1] is None else input_shape[1] - self.kernel_size + 1
            return (input_shape[0], L, self.members * self.filters)

        def get_config(self):
            return {**super().get_config(), "members": self.members, "cin": self.cin,
                    "filters": self.filters, "kernel_size": self.kernel_size, "group_size": self.group_size,
                    "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}

    _CACHE["GroupConv1D"] = GroupConv1D
    return GroupConv1D


_CACHE: dict = {}


def build_ensemble_model(n_pixels, n_labels, n_members, n_phot=0, dense_units=(64, 32),
                         dropout=0.2, seed=0):
    """The batched ensemble: inputs ([N, P, E] spectra, optionally [N, E, n_phot]).

    The convolutions are grouped (member m's filters see only member m's channels, see
    :class:`GroupConv1D`); the dense layers are ``EinsumDense`` with a member axis."""
    keras = _keras()
    layers = _keras().layers

    GroupConv1D = _group_conv_layer()
    E = int(n_members)
    init = lambda k: keras.initializers.RandomUniform(-0.05, 0.05, seed=seed * 1000 + k)  # noqa: E731
    xin = keras.Input((n_pixels, E), name="spectra")
    # first layer: one input channel per member, so the grouped convolution *is* a
    # depthwise one (multiplier 8), TensorFlow's fastest kernel for it
    h = layers.DepthwiseConv1D(10, depth_multiplier=8, activation="relu", depthwise_initializer=init(0),
                               name="conv1")(xin)
    h = GroupConv1D(E, 8, 4, 10, kernel_initializer=init(1), group_size=2, name="conv2")(h)
    h = GroupConv1D(E, 4, 2, 10, kernel_initializer=init(2), group_size=4, name="conv3")(h)
    h = layers.Dropout(dropout, seed=seed, name="dropout")(h)
    L = h.shape[1]
    h = layers.Reshape((L, E, 2))(h)
    h = layers.Permute((2, 1, 3))(h)
    h = layers.Reshape((E, L * 2), name="flatten")(h)
    inputs = [xin]
    if n_phot:
        pin = keras.Input((E, n_phot), name="photometry")
        inputs.append(pin)
        p = layers.EinsumDense("nef,efh->neh", output_shape=(E, 27), bias_axes="eh", activation="relu",
                               kernel_initializer=init(10), name="phot27")(pin)
        h = layers.Concatenate(axis=-1)([h, p])
    for k, u in enumerate(dense_units):
        h = layers.EinsumDense("nef,efh->neh", output_shape=(E, u), bias_axes="eh", activation="relu",
                               kernel_initializer=init(20 + k), name=f"dense{k + 1}")(h)
    out = layers.EinsumDense("nef,efh->neh", output_shape=(E, n_labels), bias_axes="eh",
                             kernel_initializer=init(30), name="labels")(h)
    return keras.Model(inputs if len(inputs) > 1 else xin, out)


def _member_slices(model, E):
    """(variable, axis, per-member size) for every weight: how to cut out one member. The
    depthwise first layer has kernel [k, E, 8] and bias [E * 8]; every other layer keeps
    the member axis first."""
    out = []
    for layer in model.layers:
        for v in layer.weights:
            if layer.__class__.__name__ == "DepthwiseConv1D":
                out.append((v, 1, 1) if len(v.shape) == 3 else (v, 0, v.shape[0] // E))
            else:
                out.append((v, 0, 1))
    return out


def masked_mse(y_true, y_pred):
    """MSE over present labels; y_true = [values, mask] along the last axis."""
    ops = _keras().ops

    m = y_pred.shape[-1]
    y, w = y_true[..., :m], y_true[..., m:]
    return ops.sum(w * (y_pred - y) ** 2) / ops.maximum(ops.sum(w), 1.0)


def _member_loss_metric(E):
    """Per-member training loss over an epoch, computed inside the compiled training step
    (a Keras metric with a [members] state): the learning curves' train loss at no extra
    cost, with Keras' usual meaning (mean over the epoch's batches, dropout active)."""
    keras = _keras()
    ops = _keras().ops

    class MemberLoss(keras.metrics.Metric):
        def __init__(self, members, name="member_loss", **kwargs):
            super().__init__(name=name, **kwargs)
            self.sse = self.add_variable(shape=(members,), initializer="zeros", name="sse")
            self.cnt = self.add_variable(shape=(members,), initializer="zeros", name="cnt")

        def update_state(self, y_true, y_pred, sample_weight=None):
            m = y_pred.shape[-1]
            y, w = y_true[..., :m], y_true[..., m:]
            self.sse.assign_add(ops.sum(w * (y_pred - y) ** 2, axis=(0, 2)))
            self.cnt.assign_add(ops.sum(w, axis=(0, 2)))

        def result(self):
            return self.sse / ops.maximum(self.cnt, 1.0)

        def reset_state(self):
            self.sse.assign(ops.zeros(self.sse.shape, dtype=self.sse.dtype))
            self.cnt.assign(ops.zeros(self.cnt.shape, dtype=self.cnt.dtype))

    return MemberLoss(E)



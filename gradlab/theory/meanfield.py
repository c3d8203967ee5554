"""Mean-field prediction of how the back-propagated gradient changes per layer.

For a plain feed-forward chain of convolution / linear layers, each followed by an elementwise
activation (no normalisation, no shortcuts), mean-field theory predicts the norm of dL/dh at
every layer's output from the initialised weights alone. gradlab overlays this prediction on
measured profiles, so this module states exactly what it computes.

Notation
--------
Layer l maps the previous layer's output h_{l-1} (its *pre-activation*) to

    h_l = W_l * a_{l-1} + b_l,      a_{l-1} = phi(h_{l-1}),

where ``*`` is a matrix product or a convolution, and g_l = dL/dh_l. Norms are over all of a
layer's output entries (one sample's; a measured norm also sums over the batch, which leaves
ratios between layers unchanged). ``var_w`` is the mean of the squared entries of the actual
weight tensor (the variance, for every zero-mean init), ``var_b`` the mean squared bias,
``fan_in`` the inputs of one output unit (in_channels/groups x kernel area for a convolution),
``fan_out`` torch's convention (out_channels x kernel area). z ~ N(0, 1) throughout.

Dense layer
-----------
Forward: with the weights independent of the activations they multiply, each unit of h_l is a
sum of fan_in terms w * a, so its second moment, averaged over units, is

    q_l = fan_in * var_w * E[a_{l-1}^2] + var_b,     E[a^2] = E[phi(sqrt(q_{l-1}) z)^2].

For the first layer E[a^2] is the data's second moment per entry (``input_second_moment``).

Backward: g_{l-1} = phi'(h_{l-1}) (.) (W_l^T g_l). Entry i of W^T g is sum_j W_ji g_j, a sum
over the n_l = fan_out output units; with W independent of g (the gradient-independence
assumption of mean-field theory) E[(W^T g)_i^2] = var_w * ||g_l||^2, and summing over the
n_{l-1} = fan_in entries gives E||W^T g_l||^2 = fan_in * var_w * ||g_l||^2. phi'(h_{l-1})
then multiplies each entry, independently of W^T g, so

    ||g_{l-1}||^2 = chi_l ||g_l||^2,      chi_l = fan_in * var_w * E[phi'(sqrt(q_{l-1}) z)^2].

That is the factor of the **total** squared norm over a layer, and it has the fan-in. The
*per-unit* variance ||g||^2 / n changes by chi_l * n_l / n_{l-1} = fan_out * var_w * E[phi'^2]
(column ``chi_unit``): that is why He et al. state the backward condition with the fan-out.
A fan-in He init keeps the total ||dL/dh|| of a ReLU net flat whatever the widths; a fan-out
He init keeps the per-unit variance flat. They agree when consecutive widths are equal.

Convolution
-----------
Entry (c_in, y) of W^T g sums w * g over every (c_out, tap) whose output position reads input
y. Within one input entry these terms use distinct weights, so E[(W^T g)_{c_in,y}^2] = var_w x
(sum of those g^2). Summed over all input entries, each output entry is counted once per input
channel of its group and per tap that reads a real (not padded) input:

    E||W^T g||^2 = var_w * (in_channels/groups) * sum_x valid(x) * ||g(x)||^2,

with valid(x) the taps of output position x that land inside the input. The stride does not
enter: a strided layer has fewer output entries and each input is read by fewer of them. With
``valid_frac`` the average of valid(x) / (kernel area) (1 without padding; (22/24)^2 = 0.84 for
a 3x3 kernel with padding 1 on an 8x8 map), this is fan_in * valid_frac * var_w * ||g||^2 when
||g(x)||^2 does not depend on x. It does: border entries receive gradient from fewer outputs,
so after a few layers the gradient is smaller at the border, where the taps are missing, and
the position-averaged factor comes out ~7% per layer too small on 8x8 maps (measured against
autograd in the tests). The forward pass has the same border effect. So the prediction carries
*maps* of E[h^2] and E[g^2] over positions through the actual ops (a convolution of the map
with an all-ones kernel forward, its transpose backward), for one sample. Weight variances are
equal across channels, so the maps depend on position only; chi_l is the ratio of the summed
maps. For dense layers this reduces exactly to the formulas above.

Between layers
--------------
Reshapes and flattening move map entries along. Dropout with drop probability p in training
mode scales E[a^2] and E[g^2] by 1/(1-p). A non-overlapping average over K entries (an average
pool, the global average pool before a classifier) hands each entry g/K, so ||g||^2 scales by
exactly 1/K; the second moment it passes forward depends on how correlated the averaged entries
are, which this theory does not track, and is computed for independent entries,
E[p^2] = E[a]^2 + Var[a]/K. A max pool right after the activation passes on each window's
largest entry and routes the window's gradient to it alone, so ||g||^2 picks up E[phi'(M)^2]
instead of E[phi'(h)^2], M the largest of the window's entries, taken as independent
N(0, q) (for ReLU this is close to 1, not 1/2: a window's maximum is almost never negative).
Rows that rest on the independent-entries assumption are flagged ``approx`` (every layer after
the first pooling step; for ReLU, leaky ReLU and identity, chi after an average pool does not
depend on q and stays exact).

What is returned
----------------
Per layer, in forward order: ``chi`` is the predicted factor of the **squared** norm,
||dL/dh_{l-1}||^2 / ||dL/dh_l||^2, carried by that layer's weights and the activation in front
of it (NaN on the first layer, which has no layer before it). ``pred_rel`` is the predicted
||dL/dh_l|| relative to the last layer's (the gradient at the last layer's output is taken as
uniform over its entries; the loss is not modelled). ``decades_per_layer`` is the
least-squares slope of log10(pred_rel) against depth: the statistic gradlab fits to measured
norms (positive: the gradient shrinks toward the input).

Quadrature
----------
Expectations over z are composite Gauss-Legendre sums against the Gaussian density, with a
second, finer set of panels where phi has its features (|sqrt(q) z| <= 40), a panel edge at 0
and at the known kinks of traced activations (hardtanh, relu6, hardsigmoid, hardswish).
Accuracy: ~1e-12 for ReLU, leaky ReLU and identity, ~1e-9 or better for smooth activations at
any q, up to ~1e-2 relative for a callable with kinks away from 0 that are not passed as
``kinks``. Plain Gauss-Hermite quadrature is exact for ReLU but off by several percent for
kinks away from 0 and for large q (tanh' becomes a spike narrower than the node spacing).
Across a map, values are interpolated in log q from a table over the map's range of q
(relative error ~1e-4).

Limits
------
Mean-field theory gives the average over random nets of the same widths. A single net deviates
by finite-width noise: in the tests the fitted slope stays within 0.0035 decades/layer of the
prediction for width-256 MLPs and within 0.009 for 32/64-channel conv nets; 16-channel CIFAR
nets scatter by ~0.014 (sd over seeds). Where the forward variance map amplifies small errors
(GELU with He init, whose q drifts toward 0 with a log-derivative above 1) a single net's q,
and with it chi, can drift far from the average; ReLU, leaky ReLU, identity (chi independent
of q), tanh and sigmoid (stable q) are not affected. Normalisation layers, shortcuts and
concatenations are refused: their dynamics are not this theory's.

Where it lives
--------------
This module is the entry point and the theory note; the code is split by concept:
:mod:`~gradlab.theory.activations` (named activations), :mod:`~gradlab.theory.quadrature`
(the Gaussian expectations, :func:`chi`, :func:`qmap`), :mod:`~gradlab.theory.trace` (the
traced chain of ops), :mod:`~gradlab.theory.ops` (reading traced ops),
:mod:`~gradlab.theory.geometry` (maps through padding, strides and pools),
:mod:`~gradlab.theory.rules` (one rule per op, in the table ``RULES``, and the driver) and
:mod:`~gradlab.theory.predict` (:func:`predict_profile` and its summary).
"""

from __future__ import annotations

from gradlab.theory.activations import ACTIVATIONS, Activation
from gradlab.theory.predict import predict_profile, predicted_decay, summarize_profile
from gradlab.theory.quadrature import chi, qmap

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "chi",
    "qmap",
    "predict_profile",
    "predicted_decay",
    "summarize_profile",
]

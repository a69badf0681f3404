"""Hybrid layers: multiplication-free target channels + multiplicative augmented channels (ShiftAddAug eq. 4).

docs/algorithms.md §3. Each layer stores **one max-width weight**; the target network is its leading slice (NetAug). The
converter builds these layers, sets the augmented widths per training step (``active_out_channels`` here, the
input width is read from the incoming tensor), switches ``mode`` with :func:`shiftaddaug_plugin.modes.set_mode`,
and finally calls :meth:`export` on every layer to obtain the slim multiplication-free target network.

Notation: ``I_t``/``O_t`` target input/output widths, ``I_in = x.shape[1]`` the width of the incoming tensor,
``O_a = active_out_channels``, ``MF`` the target operator (shift, adder, shift-add composite), ``conv`` an
ordinary multiplicative convolution.

* ``Mode.TARGET``: ``Y = MF(X, W[:O_t, :I_t])`` (+ ``bias[:O_t]``); ``X`` must have exactly ``I_t`` channels.
* ``Mode.AUGMENTED``, dense / pointwise (``groups=1``)::

      Y_t = MF(X[:, :I_t], W[:O_t, :I_t]) + conv(X[:, I_t:], W[:O_t, I_t:I_in])   (+ bias[:O_t])
      Y_a = conv(X, W[O_t:O_a, :I_in])                                              (+ bias[O_t:O_a])
      Y   = cat(Y_t, Y_a)

* ``Mode.AUGMENTED``, depthwise (``groups == in == out``): ``Y = cat(MF(X[:, :C_t], W[:C_t]), conv(X[:, C_t:],
  W[C_t:C_in]))`` with ``C_in = x.shape[1]``; the output width follows the input, ``active_out_channels`` is unused.
* One conv where eq. 4 allows it: ``mult`` over ``W[:O_a, :I_in]``; ``shift`` over ``[Q(X_t), X_a]`` with
  ``Q(W_t)`` joined to the augmented slices (so ``Y_a`` reads the fixed-point ``Q(X_t)``); dense ``adder`` over
  ``W[:O_a, :I_in]`` with the target block zeroed, ``MF`` added into ``Y[:, :O_t]`` in place.

Heterogeneous weight sharing (eq. 5, docs/algorithms.md §5): with ``remap`` the adder of an ``'adder'`` layer reads
``r(FC(W[:O_t, :I_t]))`` instead of the stored (Gaussian) slice; the multiplicative part always reads the stored
weight, shift layers read it through power-of-two rounding.
"""
from __future__ import annotations

from .hybrid_conv import HybridConv2d
from .hybrid_linear import HybridLinear
from .hybrid_norm import HybridBatchNorm2d, HybridBatchNormAct2d

__all__ = ["HybridConv2d", "HybridLinear", "HybridBatchNorm2d", "HybridBatchNormAct2d"]

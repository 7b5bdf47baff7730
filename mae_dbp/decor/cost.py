"""Which way of computing a DBP layer costs fewer multiply-adds: pure functions of the shapes.

Notation: d = input features (the size of R), out = output features, rows = input rows of one
forward (tokens, or conv output positions), n = rows of the kept subsample. Costs are the work DBP
adds to the plain layer (whose forward + backward is about 3·rows·d·out multiply-adds either way).

Forward forms (per forward and its backward):

- fused, y = (W R) x with A = W R cached: building A costs out·d² once per change of W or R (so
  once per optimizer step, shared by every forward until then: micro-batches, validation batches),
  and each backward turns dL/dA into W's gradient dL/dA · Rᵀ: out·d² more (once per optimizer step
  instead, when the micro-batches' dL/dA are summed first: deferred weight gradients).
- unfused, y = W (R x): z = R x costs rows·d² in the forward, and the input's gradient Rᵀ dL/dz
  another rows·d² in the backward (only when the input needs a gradient). W's gradient dL/dy zᵀ
  costs what the plain layer's does.
"""

from __future__ import annotations


def fused_is_cheaper(rows: int, d: int, out: int, *, cached: bool, forwards_per_build: float = 1.0,
                     weight_grad: bool = True, input_grad: bool = True, deferred_weight_grad: bool = False) -> bool:
    """Whether the fused form (W R) x adds no more work than the unfused W (R x) for this forward.

    cached: A = W R is up to date (its build is already paid); forwards_per_build: how many
    forwards are expected to share one build (the build's cost is spread over them);
    weight_grad / input_grad: whether W / the input x get a gradient in this forward's backward;
    deferred_weight_grad: W's gradient stays dL/dA over the micro-batches of an optimizer step and
    gets its Rᵀ once (:func:`mae_dbp.decor.defer_weight_grads`), so that cost is spread like the build.
    Ties go to the fused form (one matmul less per forward, fewer kernel launches).
    """
    share = 1.0 / max(forwards_per_build, 1.0)
    build = 0.0 if cached else share
    grad = (share if deferred_weight_grad else 1.0) if weight_grad else 0.0
    fused = out * d * d * (build + grad)
    unfused = rows * d * d * (2.0 if input_grad else 1.0)
    return fused <= unfused


def gram_is_cheaper(n: int, d: int) -> bool:
    """Whether n subsample rows are better folded into XᵀX (S = R (XᵀX) Rᵀ: n·d² + 2·d³) than kept
    as rows (S = Zᵀ Z with Z = X Rᵀ: 2·n·d²): true when n > 2·d."""
    return n > 2 * d


def rows_update_is_cheaper(n: int, d: int, rank: int | None = None) -> bool:
    """Whether the R step from n rows Z beats the one from dense statistics S = Zᵀ Z (n·d²).

    Full R: the rows path (Z R, Zᵀ (Z R), the metric's n x n Z Zᵀ: 2·n·d² + n²·d) against S, then
    S R (n·d² + d³): true when n·(n + d) < d², i.e. n < 0.62·d. ``low_rank`` factors of ``rank``
    (two products S M with thin M: 4·n·d·rank from rows, 2·d²·rank from S; metric n²·d): true when
    n·(n + 4·rank) < d·(n + 2·rank), about n < d. Z = X Rᵀ is paid by both paths.
    """
    if rank is None:
        return n * (n + d) < d * d
    return n * (n + 4 * rank) < d * (n + 2 * rank)

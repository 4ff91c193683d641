"""MPS-CLIP losses checked against hand computations and plain-Python re-implementations of docs/mps-clip.md §4."""

from __future__ import annotations

import math

import pytest
import torch

from rsitr_bench.methods.mps_clip.losses import (
    LossWeights,
    MPSCLIPLoss,
    multi_perspective_contrastive,
    multi_perspective_triplet,
    multi_positive_contrastive,
    perspective_similarity,
    symmetric_contrastive,
    weighted_triplet,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = torch.float64


def tensor(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=T)


# ------------------------------------------------------------------- plain-Python references of docs/mps-clip.md §4


def py_soft_ce(logits: list[list[float]], ids: list[int] | None) -> float:
    """½ (row + column) cross-entropy with same-id soft targets (arange targets without ids)."""
    n = len(logits)
    ids = ids if ids is not None else list(range(n))

    def one_direction(mat):
        total = 0.0
        for i in range(n):
            log_z = math.log(sum(math.exp(x) for x in mat[i]))
            pos = [j for j in range(n) if ids[j] == ids[i]]
            total += -sum((mat[i][j] - log_z) / len(pos) for j in pos)
        return total / n

    transposed = [[logits[j][i] for j in range(n)] for i in range(n)]
    return 0.5 * (one_direction(logits) + one_direction(transposed))


def py_weighted_triplet(sim: list[list[float]], margin: float, gamma: float, ids: list[int] | None,
                        mask: bool) -> float:
    n = len(sim)
    total = 0.0
    for i in range(n):
        for j in range(n):
            negative = (ids[i] != ids[j]) if mask else (i != j)
            if not negative:
                continue
            for c in (max(0.0, margin + sim[i][j] - sim[i][i]), max(0.0, margin + sim[i][j] - sim[j][j])):
                total += (1 - math.exp(-c)) ** gamma * c
    return 0.5 * total


def py_dot(a, b) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


G = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
TXT = [[0.8, 0.6], [1.0, 0.0], [0.0, 1.0]]
IDS = [0, 0, 1]
V = [[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [0.8, -0.6]], [[0.0, -1.0], [-0.6, 0.8]]]  # [B=3, K=2, D=2]


def py_sim_mv(v, t, reduce="max"):
    per = [[[py_dot(v[i][k], t[j]) for k in range(len(v[i]))] for j in range(len(t))] for i in range(len(v))]
    agg = max if reduce == "max" else (lambda xs: sum(xs) / len(xs))
    return [[agg(per[i][j]) for j in range(len(t))] for i in range(len(v))]


# ------------------------------------------------------------------- individual terms


def test_symmetric_contrastive_hard_labels_by_hand():
    logits = [[2.0, 0.0], [1.0, 3.0]]
    rows = -math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.exp(3) / (math.exp(1) + math.exp(3)))
    cols = -math.log(math.exp(2) / (math.exp(2) + math.exp(1))) - math.log(math.exp(3) / (1 + math.exp(3)))
    expected = 0.5 * (rows / 2 + cols / 2)
    assert float(symmetric_contrastive(tensor(logits))) == pytest.approx(expected, rel=1e-12)


def test_multi_positive_contrastive_two_captions_of_one_image_by_hand():
    # both samples show the same image: every row and column targets (½, ½)
    logits = [[1.0, 2.0], [0.5, 0.0]]
    z = [math.log(math.exp(1) + math.exp(2)), math.log(math.exp(0.5) + 1), math.log(math.exp(1) + math.exp(0.5)),
         math.log(math.exp(2) + 1)]
    rows = -(0.5 * (1 - z[0]) + 0.5 * (2 - z[0])) - (0.5 * (0.5 - z[1]) + 0.5 * (0 - z[1]))
    cols = -(0.5 * (1 - z[2]) + 0.5 * (0.5 - z[2])) - (0.5 * (2 - z[3]) + 0.5 * (0 - z[3]))
    got = symmetric_contrastive(tensor(logits), torch.tensor([7, 7]))
    assert float(got) == pytest.approx(0.5 * (rows / 2 + cols / 2), rel=1e-12)


def test_multi_positive_contrastive_soft_targets():
    tau = 0.5
    logits = [[py_dot(g, t) / tau for t in TXT] for g in G]
    got = multi_positive_contrastive(tensor(G), tensor(TXT), torch.tensor(IDS), temperature=tau)
    assert float(got) == pytest.approx(py_soft_ce(logits, IDS), rel=1e-12)
    # without ids the targets are the diagonal
    hard = multi_positive_contrastive(tensor(G), tensor(TXT), None, temperature=tau)
    assert float(hard) == pytest.approx(py_soft_ce(logits, None), rel=1e-12)


def test_temperature_is_clamped():
    a = multi_positive_contrastive(tensor(G), tensor(TXT), None, temperature=1e-6)
    b = multi_positive_contrastive(tensor(G), tensor(TXT), None, temperature=1e-3)
    assert float(a) == float(b)


def test_weighted_triplet_by_hand():
    sim = [[0.5, 0.6], [0.1, 0.4]]
    # c^t_01 = [0.2 + 0.6 - 0.5]+ = 0.3, c^t_10 = [0.2 + 0.1 - 0.4]+ = 0
    # c^v_01 = [0.2 + 0.6 - 0.4]+ = 0.4, c^v_10 = [0.2 + 0.1 - 0.5]+ = 0
    def w(c):
        return (1 - math.exp(-c)) ** 2 * c

    expected = 0.5 * (w(0.3) + w(0.4))
    assert float(weighted_triplet(tensor(sim), margin=0.2, gamma=2.0)) == pytest.approx(expected, rel=1e-12)


def test_weighted_triplet_weight_is_not_detached():
    sim = tensor([[0.5, 0.6], [0.1, 0.9]]).requires_grad_()
    weighted_triplet(sim, margin=0.2, gamma=2.0).backward()
    # only c^t_01 = 0.3 is active; d/dc[(1-e^-c)^2 c] = 2(1-e^-c) e^-c c + (1-e^-c)^2, halved, and
    # dc/dS_01 = 1, dc/dS_00 = -1
    c = 0.3
    d = 0.5 * (2 * (1 - math.exp(-c)) * math.exp(-c) * c + (1 - math.exp(-c)) ** 2)
    torch.testing.assert_close(sim.grad, tensor([[-d, d], [0.0, 0.0]]))


@pytest.mark.parametrize("mask", [False, True])
def test_weighted_triplet_same_image_masking(mask):
    sim = [[py_dot(g, t) for t in TXT] for g in G]
    got = weighted_triplet(tensor(sim), 0.2, 2.0, torch.tensor(IDS), mask_same_image=mask)
    assert float(got) == pytest.approx(py_weighted_triplet(sim, 0.2, 2.0, IDS, mask), rel=1e-12)
    if mask:  # the pair (0, 1) is the same image and drops out
        assert float(got) < float(weighted_triplet(tensor(sim), 0.2, 2.0))
    with pytest.raises(ValueError, match="needs the samples' image ids"):
        weighted_triplet(tensor(sim), mask_same_image=True)


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_perspective_similarity(reduce):
    got = perspective_similarity(tensor(V), tensor(TXT), reduce)
    torch.testing.assert_close(got, tensor(py_sim_mv(V, TXT, reduce)))
    with pytest.raises(ValueError, match="unknown perspective reduction"):
        perspective_similarity(tensor(V), tensor(TXT), "min")


def test_multi_perspective_contrastive_hard_and_soft():
    scale = 10.0
    logits = [[scale * s for s in row] for row in py_sim_mv(V, TXT)]
    hard = multi_perspective_contrastive(tensor(V), tensor(TXT), scale)
    assert float(hard) == pytest.approx(py_soft_ce(logits, None), rel=1e-12)
    soft = multi_perspective_contrastive(tensor(V), tensor(TXT), scale, ids=torch.tensor(IDS))
    assert float(soft) == pytest.approx(py_soft_ce(logits, IDS), rel=1e-12)


def test_multi_perspective_triplet():
    sim = py_sim_mv(V, TXT)
    got = multi_perspective_triplet(tensor(V), tensor(TXT), margin=0.3, gamma=2.0)
    assert float(got) == pytest.approx(py_weighted_triplet(sim, 0.3, 2.0, None, False), rel=1e-12)


# ------------------------------------------------------------------- the hybrid


def _features():
    return {"image": tensor(G), "text": tensor(TXT), "perspectives": tensor(V), "ids": torch.tensor(IDS)}


@pytest.mark.parametrize("combination,weights", [("head", (1, 1, 0.2, 0.2)), ("pre_restore", (0.5,) * 4)])
@pytest.mark.parametrize("fixed", [True, False])
def test_hybrid_loss_matches_published_combinations(combination, weights, fixed):
    tau, scale, margin, mv_margin = 0.07, 10.0, 0.2, 0.25
    loss = MPSCLIPLoss(combination, temperature=tau, mpc_scale=scale, margin=margin, mv_margin=mv_margin,
                       same_image_positives=fixed)
    terms = loss(_features())
    sim = [[py_dot(g, t) for t in TXT] for g in G]
    sim_mv = py_sim_mv(V, TXT)
    expected = {
        "con": py_soft_ce([[s / tau for s in row] for row in sim], IDS),  # soft targets in both modes
        "tri": py_weighted_triplet(sim, margin, 2.0, IDS, mask=fixed),
        # the reference uses hard labels in MPC (bug 12); the fix uses the same soft targets as L_con
        "mpc": py_soft_ce([[scale * s for s in row] for row in sim_mv], IDS if fixed else None),
        "mpt": py_weighted_triplet(sim_mv, mv_margin, 2.0, IDS, mask=fixed),
    }
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(value, rel=1e-10), name
    w_con, w_tri, w_mpc, w_mpt = weights
    total = w_con * expected["con"] + w_tri * expected["tri"] + w_mpc * expected["mpc"] + w_mpt * expected["mpt"]
    assert float(terms["loss"]) == pytest.approx(total, rel=1e-10)


def test_custom_weights_and_skipped_terms():
    loss = MPSCLIPLoss(LossWeights(con=1.0, tri=0.0, mpc=0.3, mpt=0.0), mpc_scale=10.0)
    terms = loss(_features())
    assert set(terms) == {"con", "mpc", "loss"}
    assert float(terms["loss"]) == pytest.approx(float(terms["con"] + 0.3 * terms["mpc"]))
    no_views = MPSCLIPLoss("head")({k: v for k, v in _features().items() if k != "perspectives"})
    assert set(no_views) == {"con", "tri", "loss"}


def test_learnable_temperature_receives_gradients():
    loss = MPSCLIPLoss("pre_restore", learn_temperature=True, mpc_scale=10.0)
    params = dict(loss.named_parameters())
    assert set(params) == {"temperature"} and float(params["temperature"].detach()) == pytest.approx(0.07)
    loss({k: v.float() if v.is_floating_point() else v for k, v in _features().items()})["loss"].backward()
    assert params["temperature"].grad is not None and float(params["temperature"].grad) != 0.0
    assert not list(MPSCLIPLoss("head").parameters())  # HEAD: a fixed temperature


def test_configuration_errors():
    with pytest.raises(ValueError, match="unknown published loss combination"):
        LossWeights.published("paper")
    with pytest.raises(ValueError, match="needs features\\['ids'\\]"):
        MPSCLIPLoss("head")({"image": tensor(G), "text": tensor(TXT)})

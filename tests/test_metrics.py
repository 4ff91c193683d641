"""Golden tests: ``rsitr_bench.metrics`` against the kernels the field uses, bit for bit.

References live in ``tests/fixtures/metrics_reference.py``. Fixtures cover random scores, many exact ties, duplicate
captions, images with more or fewer than 5 captions and a single image. The mutation tests at the end show
that the golden comparison fails if the tie handling or the i2t protocol changes.
"""

from __future__ import annotations

import doctest
import itertools
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rsitr_bench.errors import UserError
from rsitr_bench.metrics import RetrievalResult, retrieval_metrics
from rsitr_bench.metrics import kernel as kernel_module
from tests.fixtures.metrics_reference import (
    cb_hits,
    dedup_reference,
    first_positive_ranks,
    itm_eval,
    positive_matrix,
    resolve_ties,
)

KS = (1, 5, 10)


def _owners(counts, rng):
    """caption_image for images with ``counts[i]`` captions each, in shuffled caption order."""
    owners = np.repeat(np.arange(len(counts)), counts)
    return owners[rng.permutation(len(owners))]


def _case(name: str):
    """(scores [n_images, n_captions], caption_image, captions) for one named fixture."""
    rng = np.random.default_rng(sum(map(ord, name)))
    if name == "random":
        owners = _owners(rng.integers(1, 8, size=30), rng)
        scores = rng.standard_normal((30, len(owners))).astype(np.float32)
    elif name == "many-ties":
        owners = _owners(rng.integers(1, 7, size=25), rng)
        scores = rng.integers(0, 4, size=(25, len(owners))).astype(np.float32)
    elif name == "duplicate-captions":
        owners = np.repeat(np.arange(20), 5)
        words = rng.integers(0, 30, size=len(owners))  # 100 captions over <= 30 distinct strings
        captions = [f"caption {w}" for w in words]
        image_emb = rng.integers(-2, 3, size=(20, 4))
        text_emb = rng.integers(-2, 3, size=(30, 4))[words]  # identical strings, identical embeddings
        return (image_emb @ text_emb.T).astype(np.float64), owners, captions
    elif name == "uneven":
        owners = _owners([1, 2, 3, 8, 12, 1, 5], rng)
        scores = np.round(rng.random((7, len(owners))), 1)
    elif name == "single-image":
        owners = np.zeros(4, dtype=np.int64)
        scores = np.array([[0.3, 0.1, 0.3, 0.2]])
    elif name == "one-caption-each":
        owners = rng.permutation(12)
        scores = rng.integers(0, 3, size=(12, 12)).astype(np.float64)
    else:
        raise KeyError(name)
    return scores, owners, [f"caption {j}" for j in range(len(owners))]


CASES = ["random", "many-ties", "duplicate-captions", "uneven", "single-image", "one-caption-each"]


def assert_matches_itm_eval(scores, owners, ties, ks=KS):
    """Our metrics and ranks equal ``itm_eval`` on the tie-resolved matrix, bit for bit."""
    ours = retrieval_metrics(scores, owners, ks=ks, ties=ties)
    resolved = resolve_ties(scores, positive_matrix(owners, scores.shape[0]), ties)
    ref, i2t, t2i = itm_eval(resolved, owners, ks=ks)
    for k in ks:
        assert ours.metrics[f"i2t_R@{k}"] == ref[f"txt_r{k}"], k
        assert ours.metrics[f"t2i_R@{k}"] == ref[f"img_r{k}"], k
    assert ours.metrics["mR"] == ref["r_mean"]
    np.testing.assert_array_equal(ours.i2t_ranks, i2t + 1)
    np.testing.assert_array_equal(ours.t2i_ranks, t2i + 1)
    return ours


@pytest.mark.parametrize("ties", ["optimistic", "pessimistic"])
@pytest.mark.parametrize("case", CASES)
def test_instance_protocol_matches_itm_eval(case, ties):
    scores, owners, _ = _case(case)
    assert_matches_itm_eval(scores, owners, ties)
    assert_matches_itm_eval(scores, owners, ties, ks=(1, 2, 3))


@pytest.mark.parametrize("ties", ["optimistic", "pessimistic"])
@pytest.mark.parametrize("case", CASES)
def test_instance_protocol_matches_clip_benchmark_semantics(case, ties):
    scores, owners, _ = _case(case)
    positives = positive_matrix(owners, scores.shape[0])
    resolved = resolve_ties(scores, positives, ties)
    ours = retrieval_metrics(scores, owners, ks=KS, ties=ties)
    for k in KS:
        i2t, t2i = cb_hits(resolved, positives, k)
        np.testing.assert_array_equal(ours.i2t_hits[k], i2t)
        np.testing.assert_array_equal(ours.t2i_hits[k], t2i)
        assert ours.metrics[f"i2t_R@{k}"] == round(100.0 * i2t.sum() / len(i2t), 2)


@pytest.mark.parametrize("ties", ["optimistic", "pessimistic"])
@pytest.mark.parametrize("case", ["random", "many-ties", "duplicate-captions", "uneven"])
def test_instance_protocol_matches_installed_clip_benchmark(case, ties):
    zr = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")

    def kernel(scores, positive_pairs, k):
        return zr.recall_at_k(torch.from_numpy(scores), torch.from_numpy(positive_pairs), k).numpy()

    scores, owners, _ = _case(case)
    positives = positive_matrix(owners, scores.shape[0])
    ours = retrieval_metrics(scores, owners, ks=KS, ties=ties)
    for k in KS:
        i2t, t2i = cb_hits(resolve_ties(scores, positives, ties), positives, k, kernel=kernel)
        np.testing.assert_array_equal(ours.i2t_hits[k], i2t)
        np.testing.assert_array_equal(ours.t2i_hits[k], t2i)


@pytest.mark.parametrize("case", CASES)
def test_policies_agree_and_report_no_ties_once_ties_are_resolved(case):
    scores, owners, _ = _case(case)
    resolved = resolve_ties(scores, positive_matrix(owners, scores.shape[0]), "optimistic")
    results = [retrieval_metrics(resolved, owners, ties=t) for t in ("optimistic", "pessimistic", "expected")]
    assert all(r.metrics == results[0].metrics for r in results)
    assert all(r.tied_queries == {"i2t": 0, "t2i": 0} for r in results)


def _exact_expected(scores, positives):
    """Exact E[hit within k] and E[rank] per query over every order of the gallery (stable sort breaks ties
    by that order, so uniform orders = uniformly random tie-breaking)."""
    n_gallery = scores.shape[1]
    perms = list(itertools.permutations(range(n_gallery)))
    out = []
    for row, pos in zip(scores, positives, strict=True):
        ranks = [first_positive_ranks(row[None, list(p)], pos[None, list(p)])[0] for p in perms]
        out.append(ranks)
    return [
        (
            Fraction(int(sum(r)), len(perms)),
            {k: Fraction(sum(x <= k for x in r), len(perms)) for k in (1, 2, 3)},
        )
        for r in out
    ]


@pytest.mark.parametrize(
    "scores, owners",
    [
        (np.array([[1, 1, 1, 1, 0], [1, 0, 1, 1, 1], [0, 1, 1, 1, 1]]), np.array([0, 0, 1, 2, 2])),
        (np.array([[2, 2, 2, 2, 2, 2], [2, 2, 1, 2, 2, 2]]), np.array([0, 1, 1, 0, 1, 1])),
        (np.array([[5, 3, 3, 3, 3, 1]]), np.zeros(6, dtype=int)),
    ],
)
def test_expected_policy_is_the_exact_average_over_random_tie_breaks(scores, owners):
    scores = scores.astype(np.float64)
    positives = positive_matrix(owners, scores.shape[0])
    ours = retrieval_metrics(scores, owners, ks=(1, 2, 3), ties="expected")
    for direction, s, p in (("i2t", scores, positives), ("t2i", scores.T, positives.T)):
        ranks = ours.i2t_ranks if direction == "i2t" else ours.t2i_ranks
        for q, (mean_rank, hit) in enumerate(_exact_expected(s, p)):
            assert ranks[q] == pytest.approx(float(mean_rank), abs=1e-12)
            for k in (1, 2, 3):
                assert ours.hits(direction)[k][q] == pytest.approx(float(hit[k]), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 4), min_size=1, max_size=6),
    levels=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_any_layout_with_exact_ties(counts, levels, seed):
    rng = np.random.default_rng(seed)
    owners = _owners(counts, rng)
    scores = rng.integers(0, levels, size=(len(counts), len(owners))).astype(np.float32)
    opt = assert_matches_itm_eval(scores, owners, "optimistic", ks=(1, 2, 3))
    pes = assert_matches_itm_eval(scores, owners, "pessimistic", ks=(1, 2, 3))
    exp = retrieval_metrics(scores, owners, ks=(1, 2, 3), ties="expected")
    for d in ("i2t", "t2i"):
        for k in (1, 2, 3):
            assert np.all(pes.hits(d)[k] <= exp.hits(d)[k] + 1e-12)
            assert np.all(exp.hits(d)[k] <= opt.hits(d)[k] + 1e-12)
        tied = (pes.i2t_ranks if d == "i2t" else pes.t2i_ranks) > (
            opt.i2t_ranks if d == "i2t" else opt.t2i_ranks
        )
        assert opt.tied_queries[d] == exp.tied_queries[d] == int(tied.sum())


@pytest.mark.parametrize("ties", ["optimistic", "pessimistic"])
@pytest.mark.parametrize("case", ["duplicate-captions", "random", "single-image"])
def test_string_dedup_matches_the_skyclip_protocol(case, ties):
    scores, owners, captions = _case(case)
    gallery, positives = dedup_reference(scores, owners, captions)
    resolved = resolve_ties(gallery, positives, ties)
    ours = retrieval_metrics(scores, owners, ks=KS, protocol="string-dedup", ties=ties, captions=captions)
    assert ours.n_queries == {"i2t": scores.shape[0], "t2i": len(set(captions))}
    np.testing.assert_array_equal(ours.i2t_ranks, first_positive_ranks(resolved, positives))
    np.testing.assert_array_equal(ours.t2i_ranks, first_positive_ranks(resolved.T, positives.T))
    for k in KS:
        i2t, t2i = cb_hits(resolved, positives, k)
        np.testing.assert_array_equal(ours.i2t_hits[k], i2t)
        np.testing.assert_array_equal(ours.t2i_hits[k], t2i)
    first = [captions.index(c) for c in dict.fromkeys(captions)]
    np.testing.assert_array_equal(ours.t2i_query_caption, first)


def test_string_dedup_scores_a_string_by_its_best_duplicate_column():
    scores = np.array([[0.2, 0.6, 0.9], [0.5, 0.4, 0.3]])
    captions = ["a field", "a river", "a field"]  # "a field" is caption 0 (image 0) and caption 2 (image 1)
    res = retrieval_metrics(scores, [0, 1, 1], ks=(1,), protocol="string-dedup", captions=captions)
    # "a field" scores max(0.2, 0.9) = 0.9 for image 0, above "a river" (0.6): rank 1. Scoring a string by
    # its first column (0.2) would give rank 2.
    assert res.i2t_ranks.tolist() == [1.0, 1.0]
    # t2i: "a field" (images 0 and 1 positive) rank 1; "a river" (image 1: 0.4 < 0.6) rank 2
    assert res.t2i_ranks.tolist() == [1.0, 2.0]
    assert res.t2i_query_caption.tolist() == [0, 1]


def test_fixed5_equals_instance_on_the_amfmn_layout_and_rejects_other_layouts():
    owners = np.repeat(np.arange(30), 5)
    scores = np.random.default_rng(5).standard_normal((30, 150))
    fixed = retrieval_metrics(scores, owners, protocol="fixed-5")
    assert fixed.metrics == retrieval_metrics(scores, owners).metrics
    assert fixed.protocol == "fixed-5"
    with pytest.raises(ValueError, match=r"exactly 5 captions per image: 30 images but 149 captions"):
        retrieval_metrics(scores[:, :149], owners[:149], protocol="fixed-5")
    swapped = owners.copy()
    swapped[[4, 5]] = swapped[[5, 4]]
    with pytest.raises(
        ValueError, match=r"caption_image\[4\] = 1, but protocol 'fixed-5' requires caption 4"
    ):
        retrieval_metrics(scores, swapped, protocol="fixed-5")


# --- golden numbers -------------------------------------------------------------------------------------

# Two images, four captions; captions 2 and 3 are the same sentence ("many buildings"), so their columns
# tie exactly. This is the worked example of docs/metrics.md.
DOC_SCORES = np.array([[0.9, 0.2, 0.5, 0.5], [0.1, 0.8, 0.5, 0.5]])
DOC_OWNERS = [0, 1, 0, 1]
GOLDEN = {
    "optimistic": {"i2t_R@1": 100.0, "i2t_R@2": 100.0, "t2i_R@1": 100.0, "t2i_R@2": 100.0, "mR": 100.0,
                   "i2t_meanR": 1.0, "i2t_medR": 1.0, "t2i_meanR": 1.0, "t2i_medR": 1.0},
    "pessimistic": {"i2t_R@1": 100.0, "i2t_R@2": 100.0, "t2i_R@1": 50.0, "t2i_R@2": 100.0, "mR": 87.5,
                    "i2t_meanR": 1.0, "i2t_medR": 1.0, "t2i_meanR": 1.5, "t2i_medR": 1.5},
    "expected": {"i2t_R@1": 100.0, "i2t_R@2": 100.0, "t2i_R@1": 75.0, "t2i_R@2": 100.0, "mR": 93.75,
                 "i2t_meanR": 1.0, "i2t_medR": 1.0, "t2i_meanR": 1.25, "t2i_medR": 1.25},
}  # fmt: skip


@pytest.mark.parametrize("ties", sorted(GOLDEN))
def test_documented_worked_example(ties):
    res = retrieval_metrics(DOC_SCORES, DOC_OWNERS, ks=(1, 2), ties=ties)
    assert res.metrics == GOLDEN[ties]
    assert res.tied_queries == {"i2t": 0, "t2i": 2}
    assert res.to_dict() == {
        "metrics": GOLDEN[ties],
        "unit": "percent",
        "protocol": "instance",
        "ties": ties,
        "tied_queries": {"i2t": 0, "t2i": 2},
        "ks": [1, 2],
        "n_queries": {"i2t": 2, "t2i": 4},
        "saturated_ks": {"t2i": {"gallery": 2, "ks": [2]}},  # R@2 over 2 images: 100 by construction
    }
    json.dumps(res.to_dict())


def test_docs_examples_run_as_documented():
    docs = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
    for failures, _ in (doctest.testfile(str(docs), module_relative=False), doctest.testmod(kernel_module)):
        assert failures == 0


def test_documented_worked_example_under_string_dedup():
    captions = ["a baseball field", "a river", "many buildings", "many buildings"]
    for ties in GOLDEN:
        res = retrieval_metrics(
            DOC_SCORES, DOC_OWNERS, ks=(1, 2), protocol="string-dedup", ties=ties, captions=captions
        )
        assert res.metrics == GOLDEN["optimistic"]  # the shared string has both images as positives: no tie
        assert res.tied_queries == {"i2t": 0, "t2i": 0}
        assert res.n_queries == {"i2t": 2, "t2i": 3}


def test_result_carries_per_query_arrays():
    res = retrieval_metrics(DOC_SCORES, DOC_OWNERS, ks=(1, 2), ties="expected")
    assert isinstance(res, RetrievalResult)
    assert res.t2i_ranks.tolist() == [1.0, 1.0, 1.5, 1.5]
    assert res.t2i_hits[1].tolist() == [1.0, 1.0, 0.5, 0.5]
    assert res.i2t_ranks.dtype == np.float64


# --- mutation tests: the golden comparison catches a changed tie policy or protocol ---------------------


def test_mutation_wrong_tie_policy_is_caught(monkeypatch):
    scores, owners, _ = _case("many-ties")
    real = kernel_module.ranks_and_hits
    monkeypatch.setattr(kernel_module, "ranks_and_hits", lambda c, ks, ties: real(c, ks, "pessimistic"))
    with pytest.raises(AssertionError):
        assert_matches_itm_eval(scores, owners, "optimistic")


def test_mutation_i2t_needing_all_captions_is_caught(monkeypatch):
    """If i2t ranked an image by its *worst* caption ("all captions in the top k"), golden tests fail."""
    scores, owners, _ = _case("random")
    real = kernel_module.positive_counts

    def worst_positive(layout, pair_scores):
        rows, cols = real(layout, pair_scores)
        rows.best = -kernel_module.Counts.from_positives(
            -pair_scores, layout.pair_image, layout.n_images
        ).best
        return rows, cols

    monkeypatch.setattr(kernel_module, "positive_counts", worst_positive)
    with pytest.raises(AssertionError):
        assert_matches_itm_eval(scores, owners, "optimistic")


def test_mutations_change_the_numbers_on_the_duplicate_fixture():
    scores, owners, captions = _case("duplicate-captions")
    by_policy = {t: retrieval_metrics(scores, owners, ties=t).metrics for t in ("optimistic", "pessimistic")}
    assert by_policy["optimistic"] != by_policy["pessimistic"]
    dedup = retrieval_metrics(scores, owners, protocol="string-dedup", captions=captions).metrics
    assert dedup != by_policy["optimistic"]


# --- inputs ---------------------------------------------------------------------------------------------


def test_torch_and_16_bit_inputs_give_the_float32_result():
    scores, owners, _ = _case("many-ties")  # small integers: exact in every float format
    want = retrieval_metrics(scores, owners, ties="expected")
    for tensor in (
        torch.from_numpy(scores),
        torch.from_numpy(scores).bfloat16(),
        torch.from_numpy(scores).half(),
    ):
        got = retrieval_metrics(tensor, torch.from_numpy(owners), ties="expected")
        assert got.metrics == want.metrics
    assert (
        retrieval_metrics(scores.astype(np.float16), owners.tolist(), ties="expected").metrics == want.metrics
    )
    assert retrieval_metrics(scores.astype(np.int32), owners, ties="expected").metrics == want.metrics


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"caption_image": [0, 1, 2]},
            r"shape mismatch: similarity.shape\[1\] = 4 captions but caption_image has 3",
        ),
        ({"caption_image": [0, 1, 5, 1]}, r"caption_image\[2\] = 5 is out of range for 3 images"),
        ({"caption_image": [0, -1, 2, 2]}, r"caption_image\[1\] = -1 is out of range"),
        ({"caption_image": [0, 0, 2, 2]}, r"image 1 has no caption"),
        ({"caption_image": [0.0, 1.0, 2.0, 2.0]}, r"caption_image has dtype float64"),
        ({"similarity": np.zeros((0, 4))}, r"empty gallery"),
        ({"similarity": np.zeros((3, 0)), "caption_image": []}, r"empty gallery"),
        ({"similarity": np.zeros(4)}, r"similarity must be 2-D"),
        ({"protocol": "coco"}, r"unknown protocol 'coco'"),
        ({"ties": "random"}, r"unknown tie policy 'random'"),
        ({"ks": (1, 0)}, r"ks\[1\] = 0 is not a positive integer"),
        ({"ks": (5, 5)}, r"repeats a cut-off"),
        ({"protocol": "string-dedup"}, r"needs the caption strings"),
        ({"protocol": "string-dedup", "captions": ["a", "b"]}, r"2 caption strings for 4 captions"),
    ],
)
def test_bad_input_is_a_clear_value_error(kwargs, message):
    args = {"similarity": np.zeros((3, 4)), "caption_image": [0, 1, 2, 2]} | kwargs
    with pytest.raises(ValueError, match=message) as err:
        retrieval_metrics(**args)
    assert isinstance(err.value, UserError)  # the CLI prints it as one paragraph


@pytest.mark.parametrize("protocol", ["instance", "string-dedup"])
@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_score_is_named_by_index(value, kind, protocol):
    scores = np.zeros((300, 400), dtype=np.float32)  # more rows than one finiteness block
    scores[290, 17] = value
    scores[299, 3] = np.nan
    captions = [f"caption {j % 150}" for j in range(400)]
    with pytest.raises(ValueError, match=rf"similarity\[290, 17\] is {kind}"):
        retrieval_metrics(scores, np.arange(400) % 300, ks=(1,), protocol=protocol, captions=captions)


def test_huge_but_finite_scores_are_accepted():
    scores = np.full((2, 2), 1e38, dtype=np.float32)  # the sum of squares overflows; no entry is bad
    scores[0, 0] = 3e38
    res = retrieval_metrics(scores, [0, 1], ks=(1,))
    assert res.i2t_ranks.tolist() == [1.0, 1.0]


# --- real duplicate structure (UCM-Captions test split: 1,050 captions, 377 distinct) ------------------


def test_ucm_test_split_duplicates(shared_data):
    dataset = json.loads((shared_data / "ucm" / "karpathy_json" / "dataset.json").read_text())
    test = [im for im in dataset["images"] if im["split"] == "test"]
    captions = [s["raw"] for im in test for s in im["sentences"]]
    owners = np.repeat(np.arange(len(test)), [len(im["sentences"]) for im in test])
    rng = np.random.default_rng(0)
    vocab = {c: rng.integers(-3, 4, size=8) for c in dict.fromkeys(captions)}  # a string's embedding
    scores = (rng.integers(-3, 4, size=(len(test), 8)) @ np.stack([vocab[c] for c in captions]).T).astype(
        float
    )
    inst = retrieval_metrics(scores, owners, ties="optimistic")
    dedup = retrieval_metrics(scores, owners, protocol="string-dedup", ties="optimistic", captions=captions)
    assert inst.n_queries == {"i2t": 210, "t2i": 1050}
    assert dedup.n_queries == {"i2t": 210, "t2i": 377}
    assert inst.tied_queries["t2i"] > 0 and inst.tied_queries["i2t"] > 0
    assert_matches_itm_eval(scores, owners, "pessimistic")
    gallery, positives = dedup_reference(scores, owners, captions)
    resolved = resolve_ties(gallery, positives, "optimistic")
    np.testing.assert_array_equal(dedup.t2i_ranks, first_positive_ranks(resolved.T, positives.T))

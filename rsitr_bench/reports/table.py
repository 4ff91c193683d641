"""The recall table printed at the end of every run.

It states what the numbers mean before it shows them: protocol, tie policy, normalisation, seeds and the
test split's fingerprint, so a screenshot of the table is still a declared result.
"""

from __future__ import annotations

from typing import Any

from tabulate import tabulate


def _columns(ks: list[int]) -> list[str]:
    return [f"i2t_R@{k}" for k in ks] + [f"t2i_R@{k}" for k in ks] + ["mR"]


def _mean_std(summary: dict[str, dict[str, float]], key: str) -> str:
    cell = summary[key]
    return f"{cell['mean']:.2f} ± {cell['std']:.2f}" if cell["n"] > 1 else f"{cell['mean']:.2f}"


def _ci_row(record: dict[str, Any], seed: int, cols: list[str]) -> list[list[str]]:
    ci = record.get("ci95") or {}
    return [[f"95% CI (seed {seed})"] + [f"[{ci[c][0]:.2f}, {ci[c][1]:.2f}]" for c in cols]] if ci else []


def _selected_epoch(fit: dict[str, Any]) -> str | None:
    """``selected epoch 3 of 5 on validation mR 47.12`` for a trained seed; None when nothing was trained."""
    train = fit.get("train") or {}
    if fit.get("best_epoch") is None or "epochs" not in train:
        return None
    text = f"selected epoch {fit['best_epoch']} of {train['epochs']}"
    if train.get("best_score") is None:
        return f"{text} ({fit.get('selection')})"
    where = "validation" if fit.get("selection") == "val" else fit.get("selection")
    return f"{text} on {where} {train.get('select_metric', 'mR')} {train['best_score']:.2f}"


def _notes(result: dict[str, Any], cols: list[str]) -> list[str]:
    """What a reader of the numbers needs: the epoch each seed kept, why a spread is zero, which recalls are
    100 by construction, and what the intervals are."""
    seeds = result["seeds"]
    records = [result["per_seed"][str(s)] for s in seeds]
    notes = []
    for seed, record in zip(seeds, records, strict=True):
        selected = _selected_epoch(record.get("fit") or {})
        if selected:
            notes.append(f"seed {seed}: {selected}" if len(seeds) > 1 else selected)
    if len(seeds) > 1 and all(r["metrics"][c] == records[0]["metrics"][c] for r in records for c in cols):
        notes.append("deterministic method: seeds do not change the result (hence ± 0.00)")
    for direction, info in (result.get("saturated_ks") or {}).items():
        notes.append(f"{direction} R@{','.join(map(str, info['ks']))}: k is not smaller than the gallery "
                     f"({info['gallery']} candidates), so 100 by construction")
    if len(seeds) > 1 and any(r.get("ci95") for r in records):
        notes.append("95% CI: per-query bootstrap within each seed, one interval per seed (not pooled)")
    return notes


def recall_table(result: dict[str, Any], fmt: str = "github") -> str:
    """Render a run's ``metrics.json`` as a declared recall table (percent, 2 decimals)."""
    cols = _columns(result["ks"])
    seeds = result["seeds"]
    rows = []
    if len(seeds) > 1:
        for seed in seeds:
            record = result["per_seed"][str(seed)]
            rows.append([f"seed {seed}"] + [f"{record['metrics'][c]:.2f}" for c in cols])
            rows += _ci_row(record, seed, cols)
    label = f"mean ± std (n={len(seeds)})" if len(seeds) > 1 else f"seed {seeds[0]}"
    rows.append([label] + [_mean_std(result["summary"], c) for c in cols])
    if len(seeds) == 1:
        rows += _ci_row(result["per_seed"][str(seeds[0])], seeds[0], cols)
    fp = result["fingerprints"][result.get("split_role", "test")]
    tied = result["per_seed"][str(seeds[0])]["tied_queries"]
    params = result.get("parameters") or {}
    audit = result["leakage_audit"]
    compliance = result["compliance"]
    header = [
        f"{result['method']} on {result['dataset']}/{result['split']} "
        f"({fp['images']} images, {fp['captions']} captions, fingerprint {fp['sha256'][:12]})",
        f"protocol={result['protocol']}  ties={result['ties']} (tied queries: i2t {tied['i2t']}, "
        f"t2i {tied['t2i']})  normalization={result['text_normalization']}  "
        f"prompt_prefix={result['prompt_prefix']!r}  unit=percent",
        f"seeds={','.join(map(str, seeds))}  selection={result['selection']}  "
        f"leakage_audit: {audit['status']}  parameters: {params.get('trainable', '?')} trainable / "
        f"{params.get('total', '?')} total",
    ]
    if not compliance["compliant"]:
        header.append("NON-COMPLIANT: " + "; ".join(compliance["reasons"]))
    table = tabulate(rows, headers=["run"] + cols, tablefmt=fmt, disable_numparse=True)
    return "\n".join([*header, table, *_notes(result, cols)])

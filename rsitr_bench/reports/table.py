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


def recall_table(result: dict[str, Any], fmt: str = "github") -> str:
    """Render a run's ``metrics.json`` as a declared recall table (percent, 2 decimals)."""
    cols = _columns(result["ks"])
    seeds = result["seeds"]
    rows = []
    if len(seeds) > 1:
        for seed in seeds:
            metrics = result["per_seed"][str(seed)]["metrics"]
            rows.append([f"seed {seed}"] + [f"{metrics[c]:.2f}" for c in cols])
    label = f"mean ± std (n={len(seeds)})" if len(seeds) > 1 else f"seed {seeds[0]}"
    rows.append([label] + [_mean_std(result["summary"], c) for c in cols])
    ci = result["per_seed"][str(seeds[0])].get("ci95") or {}
    if ci:
        rows.append([f"95% CI (seed {seeds[0]})"] + [f"[{ci[c][0]:.2f}, {ci[c][1]:.2f}]" for c in cols])
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
    return "\n".join(header) + "\n" + table

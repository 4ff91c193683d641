"""Executes one run: dataset -> method.fit(train, val) -> method.score(test, once) -> metrics -> registry.

The runner owns the science rules that no plugin may bend: the test split is loaded separately, is never
handed to ``fit``, and is scored exactly once per seed; ``evaluate`` callbacks refuse it; every result
carries its protocol, tie policy, normalisation, fingerprints, seeds, parameter counts and audit stamps.
Each seed's result is written atomically as soon as it exists, so an interrupted run resumes from the first
unfinished seed (and a trainable method from its last checkpoint in the seed directory).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rsitr_bench import metrics as M
from rsitr_bench.api import FitSummary, MethodSpec, ReportsWeights, RunContext
from rsitr_bench.data.model import Split
from rsitr_bench.errors import UserError
from rsitr_bench.guidance.context import LeakageAudit
from rsitr_bench.guidance.service import GuidanceService
from rsitr_bench.harness.atomic import write_atomic, write_json_atomic, write_text_atomic
from rsitr_bench.harness.config import RunConfig, resolve_config
from rsitr_bench.harness.environment import capture_environment, resolve_device, seed_everything
from rsitr_bench.harness.paths import cache_dir
from rsitr_bench.harness.plugins import PluginHost
from rsitr_bench.harness.registry import Registry
from rsitr_bench.harness.samples import SAMPLES_FILE, TOP_K, write_samples
from rsitr_bench.harness.splits import load_splits

SCHEMA_VERSION = 1
#: The compliance reason of a run whose perspectives came from ground truth (an ``oracle-boxes``-like generator).
ORACLE_REASON = "oracle perspectives (upper bound, not deployable)"


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    metrics: dict[str, Any]


class RunStopped(Exception):
    """Raised by an ``on_validation`` callback to stop a run early on purpose; the run gets ``status``.

    A pruned sweep trial is the example: its run is recorded as ``pruned``, not as ``failed``.
    """

    status = "stopped"


class SealedSplitError(RuntimeError):
    """A method tried to evaluate on the sealed test split during fit."""


def _run_logger(run_dir: Path, run_id: str) -> logging.Logger:
    log = logging.getLogger(f"rsitr_bench.run.{run_id}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
    file_handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("[rsitr-bench] %(message)s"))
    log.addHandler(file_handler)
    log.addHandler(console)
    return log


def _close_logger(log: logging.Logger) -> None:
    for handler in list(log.handlers):
        handler.close()
        log.removeHandler(handler)


ValidationCallback = Callable[[int, Mapping[str, float]], None]


def execute(config: RunConfig, host: PluginHost, registry: Registry, resume_id: str | None = None,
            tags: dict[str, Any] | None = None, on_validation: ValidationCallback | None = None,
            target: str = "test", fit: bool = True, continue_hint: str | None = None) -> RunOutcome:
    """Run (or resume) a configured run and record it in the registry.

    Arguments:
        tags: stored with the run's index row (sweeps link trials to their study this way).
        on_validation: called as ``on_validation(index, metrics)`` after every validation evaluation a
            method requests (sweeps report these to Optuna, whose pruner may raise to stop the trial).
        target: the split role that is scored and recorded: ``test`` (the default, sealed and scored once
            per seed) or ``val`` (sweep trials: the test split is never loaded).
        fit: False scores the method as configured (e.g. a released checkpoint) without training it, so
            neither train nor val is loaded; the result says ``evaluation_only`` and ``selection: none``.
        continue_hint: what the log says to do after Ctrl-C (default: ``rsitr-bench run --resume ID``); a sweep
            trial is continued by continuing its study instead.
    """
    if target not in ("test", "val"):
        raise ValueError(f"target must be 'test' or 'val', got {target!r}")
    method_reg = host.get("methods", config.method)
    trainable = method_reg.spec.train_options is not None
    device = resolve_device(config.run.device)  # before anything is recorded: a missing GPU leaves no run
    if resume_id:
        fit = not bool(registry.get(resume_id).tag_dict.get("evaluation_only"))
    elif not fit:
        tags = {**(tags or {}), "evaluation_only": True}
    started = time.time()
    splits = load_splits(config, host, trainable and fit, target)
    scored = splits[target]
    norm = config.data.normalization
    fingerprints = {role: split.fingerprint(norm) | {"split": split.name} for role, split in splits.items()}

    if resume_id:
        run_id = registry.get(resume_id).id
        registry.mark_running(run_id)
        run_dir = registry.run_dir(run_id)
    else:
        run_id = registry.new_run_id(config.method, config.dataset)
        run_dir = registry.create(run_id, config.method, config.dataset, scored.name,
                                  fingerprints[target]["sha256"], config.run.seeds, tags)
        write_text_atomic(run_dir / "config.yaml", config.to_yaml())
    plugins = [{"name": p.name, "distribution": p.distribution, "version": p.version} for p in host.plugins]
    write_json_atomic(run_dir / "environment.json", capture_environment(device, plugins))
    log = _run_logger(run_dir, run_id)
    try:
        if config.data.root and not host.get("datasets", config.dataset).spec.uses_data_root:
            log.warning("dataset %s does not read a data root: data.root (--data-root) %s is ignored",
                        config.dataset, config.data.root)
        log.info("%s run %s: method %s on %s/%s (%d images, %d captions), seeds %s, device %s",
                 "Resuming" if resume_id else "Starting", run_id, config.method, config.dataset, scored.name,
                 scored.n_images, scored.n_captions, config.run.seeds, device)
        if "limited_from" in scored.annotations:
            log.warning("eval.limit (--limit) %d: only the first %d of %d images are scored; the result is "
                        "stamped non-comparable and reports never rank it", config.eval.limit, scored.n_images,
                        scored.annotations["limited_from"]["images"])
        per_seed = {}
        for seed in config.run.seeds:
            per_seed[seed] = _run_seed(config, host, method_reg.spec, splits, target, seed, run_dir, device,
                                       log, on_validation, fit)
        result = _aggregate(config, run_id, per_seed, fingerprints, target, time.time() - started, fit,
                            limited_from=scored.annotations.get("limited_from"))
        if result["saturated_ks"]:
            log.warning("%s: these recalls are 100 %% by construction, since k is not smaller than the gallery; "
                        "lower eval.ks or score a larger split", "; ".join(
                            f"{d} R@{','.join(map(str, v['ks']))} over {v['gallery']} candidates"
                            for d, v in result["saturated_ks"].items()))
        write_json_atomic(run_dir / "metrics.json", result)
        registry.finish(run_id, result)
        log.info("Run %s finished: mR %.2f", run_id, result["summary"]["mR"]["mean"])
        for error in host.notify_run_finished({"id": run_id, "dir": str(run_dir), "method": config.method,
                                               "dataset": config.dataset, "status": "finished",
                                               "metrics": result}):
            log.warning("run-finished hook failed: %s", error)
        return RunOutcome(run_id, run_dir, result)
    except RunStopped as exc:
        log.info("Run %s stopped early (%s): %s", run_id, exc.status, exc)
        registry.finish(run_id, {}, status=exc.status)
        raise
    except KeyboardInterrupt:
        log.warning("Run %s interrupted; %s", run_id,
                    continue_hint or f"continue it with `rsitr-bench run --resume {run_id}`")
        registry.finish(run_id, {}, status="interrupted")
        raise
    except BaseException as exc:
        log.error("Run %s failed: %s: %s", run_id, type(exc).__name__, exc)
        registry.finish(run_id, {}, status="failed")
        raise
    finally:
        _close_logger(log)


def _run_seed(config: RunConfig, host: PluginHost, spec: MethodSpec, splits: dict[str, Split], target: str, seed: int,
              run_dir: Path, device: str, log: logging.Logger,
              on_validation: ValidationCallback | None, fit: bool = True) -> dict[str, Any]:
    seed_dir = run_dir / "seeds" / str(seed)
    done = seed_dir / "metrics.json"
    if done.is_file():
        log.info("Seed %d already finished; reusing its result", seed)
        return json.loads(done.read_text())
    seed_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    test = splits["test"] if target == "test" else None
    method = spec.factory(config.method_options, config.train)
    # Only a method whose spec declares these options the published (leaky) protocol lets gallery keywords
    # read val/test captions; the audit then still fails, with the reason "as published".
    audit = LeakageAudit(allow_leak=spec.reads_gallery_captions(config.method_options))
    guidance = GuidanceService(host, splits, audit, cache_dir(), device, log, config.run.progress)
    ctx = RunContext(run_dir=seed_dir, cache_dir=cache_dir(), seed=seed, device=device,
                     normalization=config.data.normalization, prompt_prefix=config.data.prompt_prefix,
                     log=log, progress=config.run.progress, guidance=guidance)
    select_on = config.train.select_on if config.train is not None else None

    calls = 0

    def evaluate(split: Split) -> Mapping[str, float]:
        nonlocal calls
        if test is not None and split is test and select_on != "test":
            raise SealedSplitError("the test split is sealed: model selection may only use validation data")
        result = _metrics(config, split, method.score(split, ctx), ctx).metrics
        if on_validation is not None:
            on_validation(calls, result)
        calls += 1
        return result

    ctx.evaluate = evaluate
    # Legacy reproduction only: selecting on test hands the test split to fit as "validation" and the
    # result is stamped non-compliant by the method's fit summary.
    val = test if select_on == "test" and test is not None else splits.get("val")
    if fit:
        summary = method.fit(splits.get("train"), val, ctx) or FitSummary("none", "none (zero-shot)")
        if not isinstance(summary, FitSummary):
            raise TypeError(f"{config.method}.fit returned {type(summary).__name__}; a method's fit returns "
                            f"a rsitr_bench.api.FitSummary or None")
    else:
        log.info("Evaluation only: %s is scored as configured, without training", config.method)
        summary = FitSummary("none", "none (evaluation only)")
    scored = splits[target]
    similarity = method.score(scored, ctx)
    result = _metrics(config, scored, similarity, ctx)
    if config.run.log_samples:  # before the seed counts as done, so a resumed seed has its samples too
        path = write_samples(seed_dir / SAMPLES_FILE, scored, similarity, result, ctx.texts(scored))
        log.info("Seed %d: per-query samples (top-%d of both directions) in %s", seed, TOP_K, path)
    ci = M.bootstrap_ci(result, n_boot=config.eval.bootstrap, seed=seed) if config.eval.bootstrap else {}
    record = {
        "seed": seed,
        "metrics": result.metrics,
        "ci95": ci,
        "tied_queries": result.tied_queries,
        "saturated_ks": result.saturated,
        "fit": summary.record(),
        "parameters": method.parameter_counts(),
        "weights": method.weights_provenance() if isinstance(method, ReportsWeights) else {},
        "leakage_audit": audit.stamp(),
        "guidance_stats": dict(guidance.counters),
        "oracle_perspectives": sorted(guidance.non_deployable),
    }
    arrays = {"i2t_ranks": result.i2t_ranks, "t2i_ranks": result.t2i_ranks}
    for k in result.ks:  # per-query hits, so reports can run paired tests from the registry alone
        arrays[f"i2t_hits@{k}"] = result.i2t_hits[k]
        arrays[f"t2i_hits@{k}"] = result.t2i_hits[k]
    write_atomic(seed_dir / "ranks.npz", lambda fh: np.savez_compressed(fh, **arrays))
    write_json_atomic(done, record)
    keep = getattr(config.train, "keep_checkpoints", None)
    if keep:  # only now: an unfinished seed resumes from its checkpoints
        from rsitr_bench.training.engine import prune_checkpoints

        prune_checkpoints(seed_dir, keep)
    log.info("Seed %d: mR %.2f", seed, result.metrics["mR"])
    return record


def _metrics(config: RunConfig, split: Split, similarity: np.ndarray, ctx: RunContext) -> Any:
    return M.retrieval_metrics(similarity, split.caption_image, ks=tuple(config.eval.ks),
                               protocol=config.eval.protocol, ties=config.eval.ties, captions=ctx.texts(split))


def _aggregate(config: RunConfig, run_id: str, per_seed: dict[int, dict[str, Any]],
               fingerprints: dict[str, dict], target: str, wall_time: float, fit: bool = True,
               limited_from: dict[str, Any] | None = None) -> dict[str, Any]:
    first = per_seed[config.run.seeds[0]]
    selections = {str(r["fit"]["selection"]) for r in per_seed.values()}
    selection = selections.pop() if len(selections) == 1 else "mixed: " + ", ".join(sorted(selections))
    # Compliance comes from the typed field; the label above is what reports print.
    on_test = any(r["fit"]["selected_on"] == "test" for r in per_seed.values())
    reasons = [f"model selection on {selection}"] if on_test else []
    # The worst seed speaks for the run: one leaky seed makes the whole result leaky.
    audit = next((r["leakage_audit"] for r in per_seed.values() if r["leakage_audit"]["status"] != "pass"),
                 first["leakage_audit"])
    if audit.get("status") != "pass":
        reasons.append(f"leakage audit: {audit.get('status')}")
    # Perspectives read from ground truth (a generator declaring deployable=False) bound what a localiser could
    # give; no deployed system has them, so the run is an upper bound, never a ranked result.
    oracles = sorted({name for r in per_seed.values() for name in r.get("oracle_perspectives", [])})
    if oracles:
        reasons.append(ORACLE_REASON)
    # A limited run (--limit) scored part of the split: a smoke test whose numbers compare with nothing.
    limit = None
    if limited_from is not None:
        scored = fingerprints[target]
        limit = {"images": scored["images"], "captions": scored["captions"], "of_split": limited_from["split"],
                 "of_images": limited_from["images"], "of_captions": limited_from["captions"]}
        reasons.append(f"limited to the first {limit['images']} of {limit['of_images']} images of split "
                       f"{limit['of_split']} (--limit): not comparable")
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "method": config.method,
        "dataset": config.dataset,
        "split": fingerprints[target]["split"],
        "split_role": target,
        "unit": "percent",
        "protocol": config.eval.protocol,
        "ties": config.eval.ties,
        "ks": list(config.eval.ks),
        "saturated_ks": first.get("saturated_ks", {}),
        "text_normalization": config.data.normalization,
        "prompt_prefix": config.data.prompt_prefix,
        "seeds": list(config.run.seeds),
        "summary": M.aggregate_seeds([per_seed[s]["metrics"] for s in config.run.seeds]),
        "per_seed": {str(s): per_seed[s] for s in config.run.seeds},
        "fingerprints": fingerprints,
        "parameters": first["parameters"],
        "weights": first.get("weights", {}),
        "evaluation_only": not fit,
        "selection": selection,
        "leakage_audit": audit,
        "oracle_perspectives": oracles,
        "comparable": limit is None,
        "limit": limit,
        "compliance": {"compliant": not reasons, "reasons": reasons},
        "wall_time_s": round(wall_time, 3),
    }


def load_run_config(registry: Registry, run_id: str, host: PluginHost) -> RunConfig:
    """Rebuild the configuration of a recorded run (for ``--resume``)."""
    path = registry.run_dir(registry.get(run_id).id) / "config.yaml"
    try:
        tree = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"Cannot read the saved configuration {path}: {exc}. The run cannot be resumed; "
                        f"remove it with `rsitr-bench runs rm {run_id}` and start again.") from None
    return resolve_config(tree, host)

"""Evolutionary search under hardware constraints with Optuna (ShiftAddAug §3.4 step 3, docs/algorithms.md §7).

Two modes share one loop:

* ``mode='arch'``: search the supernet's space (:class:`~shiftaddaug_plugin.nas.space.SearchSpace`, optionally with
  NASA's per-block operator choice) for a network;
* ``mode='select'``: stage 2, search which residual blocks of a fixed *deep* subnet form the target
  (:class:`~shiftaddaug_plugin.nas.stage2.TargetSelection`, one boolean ``keep_s{i}_b{j}`` per removable block).

Objectives: maximise the **accuracy proxy**, minimise one cost metric (``objective``, default energy in uJ from the
cost model). Accuracy proxy: the candidate's network is extracted from the supernet (``Supernet.extract``; in
``select`` mode the deep net with the unselected blocks dropped), its batch-norm statistics are recalibrated on
``recal_images`` images of the training slice (``shiftaddaug_plugin.convert.recalibrate_bn``: the shared BN statistics
belong to no single subnet), and its top-1 accuracy is measured on the held-out slice of the training split
(disjoint from the supernet's training slice; the test split is never used).

Sampler: Optuna's ``NSGAIISampler`` (constrained domination with ``constraints_func``; ``population_size``
per generation, default 20); ``'random'`` for a baseline. Constraints
(:class:`~shiftaddaug_plugin.nas.cost.Constraints`)
are checked from the cost **before** the accuracy proxy: an infeasible candidate is not evaluated, gets accuracy
0 and its violations as Optuna constraints (so NSGA-II ranks it behind every feasible one), and it is never
returned -- :func:`collect_candidates` re-checks every stored cost against the constraints.

Storage and workers: the study lives in an RDB (default ``sqlite:///<out_dir>/nas_study.db``, any SQLAlchemy URL
such as ``postgresql://...`` for many machines) and is opened with ``load_if_exists=True``: a killed search restarted
with the same ``storage``/``study_name`` continues, and ``n_trials`` is the **total** number of completed trials of
the study (``MaxTrialsCallback``), so several workers (processes started with different ``worker`` ids, hence
different sampler seeds) share one budget. Trial numbers are unique per study (the storage assigns them); a
candidate whose parameters were already evaluated in the study is not evaluated again (its values are copied, and
``user_attrs['duplicate_of']`` names the original) and is skipped by :func:`collect_candidates`. Heartbeats mark
trials of killed workers as failed after ``grace_period`` seconds.
"""
from __future__ import annotations

import json
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch import Tensor, nn

from shiftaddaug_plugin.convert import recalibrate_bn

from .cost import COST_METRICS, ArchCost, Constraints, arch_cost
from .data import iterate_batches
from .space import Arch, SearchSpace
from .stage2 import TargetSelection, drop_unselected
from .supernet import Supernet, evaluate_accuracy

__all__ = [
    "MODES",
    "SAMPLERS",
    "ArchEvaluator",
    "Candidate",
    "SearchResult",
    "default_storage",
    "open_study",
    "run_search",
    "collect_candidates",
    "pareto_front",
    "choose_candidate",
]

MODES: tuple[str, ...] = ("arch", "select")
SAMPLERS: tuple[str, ...] = ("nsga2", "random")
_META_KEY = "shiftaddaug_nas"


# ================================================================================================ evaluation
class ArchEvaluator:
    """Cost and accuracy proxy of candidates (module docstring).

    Args:
        supernet: trained :class:`Supernet`.
        recal_x: training-slice images for BN recalibration; ``holdout_x``/``holdout_y``: the held-out slice.
        recal_images: images used for recalibration (<= ``len(recal_x)``).
        precision: energy column of the cost model (``'fp32'``, ``'int32'``, ``'int8'``).
        deep: the deep arch (``select`` mode).
    """

    def __init__(self, supernet: Supernet, recal_x: Tensor, holdout_x: Tensor, holdout_y: Tensor, *,
                 recal_images: int = 500, batch_size: int = 250, precision: str = "fp32",
                 deep: Arch | None = None) -> None:
        if recal_x.shape[0] == 0 or holdout_x.shape[0] == 0:
            raise ValueError("the accuracy proxy needs non-empty recalibration and held-out images")
        if isinstance(recal_images, bool) or not isinstance(recal_images, int) or recal_images < 1:
            raise ValueError(f"recal_images={recal_images!r} must be a positive int")
        self.supernet = supernet.eval()
        self.recal_x, self.holdout_x, self.holdout_y = recal_x, holdout_x, holdout_y
        self.recal_images = min(recal_images, int(recal_x.shape[0]))
        self.batch_size, self.precision = batch_size, precision
        self.input_shape = tuple(holdout_x.shape[1:])
        self.deep = deep
        self._deep_model: nn.Module | None = None
        if deep is not None:
            supernet.space.validate(deep)

    def model(self, arch: Arch, selection: TargetSelection | None = None) -> tuple[Arch, nn.Module]:
        """``(target arch, its timm model with supernet weights)``."""
        if selection is None:
            return arch, self.supernet.extract(arch)
        if self.deep is None:
            raise ValueError("select mode needs the deep arch (ArchEvaluator(deep=...))")
        if self._deep_model is None:
            self._deep_model = self.supernet.extract(self.deep)
        return selection.target_arch(self.deep), drop_unselected(self._deep_model, self.deep, selection)

    def cost(self, arch: Arch, model: nn.Module) -> ArchCost:
        return arch_cost(model, arch, self.input_shape, precision=self.precision)

    def accuracy(self, model: nn.Module) -> float:
        """Held-out top-1 (%) after BN recalibration on the training slice."""

        batches = (xb for xb, _ in iterate_batches(self.recal_x, None, self.batch_size))
        recalibrate_bn(model, batches, self.recal_images)
        return evaluate_accuracy(model, self.holdout_x, self.holdout_y, self.batch_size)


# ================================================================================================ results
@dataclass
class Candidate:
    """One evaluated, feasible trial."""

    number: int
    arch: Arch  #: the target network
    accuracy: float
    cost: ArchCost
    selection: TargetSelection | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"trial": self.number, "accuracy": self.accuracy, "cost": self.cost.to_dict(),
               "arch": self.arch.to_dict(), "describe": self.arch.describe()}
        if self.selection is not None:
            out["selection"] = self.selection.to_dict()
        return out


@dataclass
class SearchResult:
    study: Any
    candidates: list[Candidate]  #: feasible, evaluated, not duplicates
    front: list[Candidate]  #: Pareto front of ``candidates`` (accuracy up, ``objective`` down)
    best: Candidate | None  #: highest accuracy on the front (ties: lower cost)
    objective: str
    seconds: float = 0.0
    trials_run: int = 0  #: trials this call ran
    extra: dict[str, Any] = field(default_factory=dict)


def collect_candidates(study: Any, constraints: Constraints) -> list[Candidate]:
    """Feasible, evaluated, non-duplicate completed trials of ``study`` (constraints re-checked from the stored
    cost, so a trial stored under looser constraints is filtered too)."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = t.user_attrs
        if "cost" not in attrs or "arch" not in attrs or attrs.get("duplicate_of") is not None:
            continue
        if not attrs.get("evaluated", False):
            continue
        cost = ArchCost(**attrs["cost"])
        if not constraints.satisfied(cost):
            continue
        sel = TargetSelection.from_dict(attrs["selection"]) if attrs.get("selection") else None
        out.append(Candidate(t.number, Arch.from_dict(attrs["arch"]), float(attrs["accuracy"]), cost, sel))
    return out


def pareto_front(candidates: Sequence[Candidate], objective: str) -> list[Candidate]:
    """Candidates not dominated (higher-or-equal accuracy and lower-or-equal cost, one strictly), by cost."""
    def value(c: Candidate) -> float:
        return float(getattr(c.cost, objective))

    front = [c for c in candidates
             if not any(value(o) <= value(c) and o.accuracy >= c.accuracy
                        and (value(o) < value(c) or o.accuracy > c.accuracy) for o in candidates)]
    return sorted(front, key=lambda c: (value(c), -c.accuracy, c.number))


def choose_candidate(front: Sequence[Candidate], objective: str) -> Candidate | None:
    """The most accurate candidate of the front (ties: lower cost, then lower trial number)."""
    if not front:
        return None
    return min(front, key=lambda c: (-c.accuracy, float(getattr(c.cost, objective)), c.number))


# ================================================================================================ study
def default_storage(out_dir: str) -> str:
    """``sqlite:///<out_dir>/nas_study.db`` (absolute path)."""
    import os

    os.makedirs(out_dir, exist_ok=True)
    return "sqlite:///" + os.path.abspath(os.path.join(out_dir, "nas_study.db"))


def _constraints_func(trial: Any) -> Sequence[float]:
    return trial.user_attrs.get("constraints", ())


def open_study(storage: str, study_name: str, *, sampler: str = "nsga2", population_size: int = 20, seed: int = 0,
               constrained: bool = True, meta: dict[str, Any] | None = None, heartbeat_interval: int = 10,
               grace_period: int = 60) -> Any:
    """Create or resume (``load_if_exists=True``) the two-objective study (maximise accuracy, minimise cost).

    ``meta`` (mode, space, deep arch, objective) is stored on creation; resuming with a different ``meta`` raises
    ``ValueError`` (a study mixing search spaces would be meaningless)."""
    import optuna

    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is unknown; use one of {', '.join(SAMPLERS)}")
    if isinstance(population_size, bool) or not isinstance(population_size, int) or population_size < 2:
        raise ValueError(f"population_size={population_size!r} must be an int >= 2")
    engine_kwargs = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else None
    with warnings.catch_warnings():  # constraints_func / heartbeats are flagged experimental; we rely on them as is
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if sampler == "nsga2":
            chosen: Any = optuna.samplers.NSGAIISampler(population_size=population_size, seed=seed,
                                                        constraints_func=_constraints_func if constrained else None)
        else:
            chosen = optuna.samplers.RandomSampler(seed=seed)
        for attempt in range(5):  # workers starting together race on creating the schema / the study
            try:
                rdb = optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs,
                                                 heartbeat_interval=heartbeat_interval, grace_period=grace_period)
                study = optuna.create_study(storage=rdb, study_name=study_name, sampler=chosen,
                                            directions=["maximize", "minimize"], load_if_exists=True)
                break
            except Exception as err:  # sqlalchemy IntegrityError / OperationalError of the losing worker
                if attempt == 4 or type(err).__module__.split(".")[0] not in ("sqlalchemy", "optuna"):
                    raise
                time.sleep(0.5 + random.random())
    if meta is not None:
        stored = study.user_attrs.get(_META_KEY)
        if stored is None:
            study.set_user_attr(_META_KEY, meta)
        elif json.loads(json.dumps(stored)) != json.loads(json.dumps(meta)):
            diff = sorted(k for k in set(stored) | set(meta) if stored.get(k) != meta.get(k))
            raise ValueError(f"study {study_name!r} in {storage} was created with different settings ({diff}); "
                             "resume with the same supernet / mode / objective, or pass a new study name")
    return study


def _complete_count(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _selection_params(deep: Arch) -> list[str]:
    return [f"keep_s{i}_b{j}" for i, j in TargetSelection.removable(deep)]


def run_search(
    evaluator: ArchEvaluator,
    *,
    mode: str = "arch",
    space: SearchSpace | None = None,
    constraints: Constraints | None = None,
    objective: str = "energy_uj",
    n_trials: int = 50,
    storage: str | None = None,
    study_name: str = "shiftaddaug_nas",
    out_dir: str = "runs/nas",
    sampler: str = "nsga2",
    population_size: int = 20,
    seed: int = 0,
    worker: int = 0,
    callbacks: Sequence[Callable[[Any, Any], None]] = (),
    log: Callable[[str], None] | None = print,
    meta: dict[str, Any] | None = None,
) -> SearchResult:
    """Run (or continue) the search until the study holds ``n_trials`` completed trials (module docstring).

    Args:
        evaluator: cost + accuracy proxy; ``evaluator.deep`` is the deep arch in ``select`` mode.
        space: search space (``arch`` mode; default the supernet's).
        constraints: hardware limits (default none).
        objective: cost metric to minimise, one of ``COST_METRICS``.
        n_trials: total completed trials of the study (over all runs and workers).
        storage / study_name: Optuna RDB URL (default :func:`default_storage`) and study name.
        sampler / population_size / seed: ``'nsga2'`` (default) or ``'random'``; the sampler seed is
            ``seed + 1000 * worker`` so that workers explore differently.
        callbacks: extra Optuna callbacks ``fn(study, frozen_trial)`` (e.g. to stop early).
        meta: extra settings stored with the study and compared on resume.
    """
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress line replaces Optuna's per-trial INFO line

    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is unknown; use 'arch' (search the space) or 'select' (stage 2)")
    if objective not in COST_METRICS:
        raise ValueError(f"objective={objective!r} is unknown; use one of {', '.join(COST_METRICS)}")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials={n_trials!r} must be a positive int (total completed trials of the study)")
    if isinstance(worker, bool) or not isinstance(worker, int) or worker < 0:
        raise ValueError(f"worker={worker!r} must be an int >= 0")
    constraints = constraints or Constraints()
    space = space or evaluator.supernet.space
    if mode == "select":
        if evaluator.deep is None:
            raise ValueError("mode='select' needs the deep subnet: ArchEvaluator(..., deep=arch)")
        if not TargetSelection.removable(evaluator.deep):
            raise ValueError("the deep arch has no residual block to drop (every stage has depth 1); pick a deeper "
                             "subnet for stage 2")
    storage = storage or default_storage(out_dir)
    study_meta = {"mode": mode, "objective": objective, "space": space.to_dict(),
                  "deep": evaluator.deep.to_dict() if mode == "select" and evaluator.deep else None,
                  "input_shape": list(evaluator.input_shape), "precision": evaluator.precision, **(meta or {})}
    study = open_study(storage, study_name, sampler=sampler, population_size=population_size,
                       seed=seed + 1000 * worker, constrained=bool(constraints.limits()), meta=study_meta)
    start = time.time()
    done_before = _complete_count(study)

    def objective_fn(trial: Any) -> tuple[float, float]:
        selection: TargetSelection | None = None
        if mode == "arch":
            arch = space.suggest(trial)
        else:
            deep = evaluator.deep
            if deep is None:  # checked above; keeps type checkers informed
                raise ValueError("mode='select' needs ArchEvaluator(deep=...)")
            keep = [[True] * s.depth for s in deep.stages]
            for (i, j), name in zip(TargetSelection.removable(deep), _selection_params(deep)):
                keep[i][j] = bool(trial.suggest_categorical(name, [True, False]))
            selection = TargetSelection(tuple(map(tuple, keep)))
            arch = selection.target_arch(deep)
        for old in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if old.params == trial.params and old.user_attrs.get("duplicate_of") is None and "cost" in old.user_attrs:
                for key in ("arch", "cost", "constraints", "feasible", "accuracy", "selection", "evaluated"):
                    if key in old.user_attrs:
                        trial.set_user_attr(key, old.user_attrs[key])
                trial.set_user_attr("duplicate_of", old.number)
                return tuple(old.values)  # type: ignore[return-value]
        target_arch, model = evaluator.model(arch, selection)
        cost = evaluator.cost(target_arch, model)
        violations = constraints.violations(cost)
        feasible = constraints.satisfied(cost)
        trial.set_user_attr("arch", target_arch.to_dict())
        trial.set_user_attr("cost", cost.to_dict())
        trial.set_user_attr("constraints", violations)
        trial.set_user_attr("feasible", feasible)
        if selection is not None:
            trial.set_user_attr("selection", selection.to_dict())
        if feasible:
            accuracy = evaluator.accuracy(model)
            trial.set_user_attr("evaluated", True)
        else:
            accuracy = 0.0  # penalised: not evaluated, ranked behind feasible trials by the constraints
            trial.set_user_attr("evaluated", False)
        trial.set_user_attr("accuracy", accuracy)
        return accuracy, float(getattr(cost, objective))

    def progress(study: Any, trial: Any) -> None:
        if log is None or trial.state != TrialState.COMPLETE:
            return
        attrs = trial.user_attrs
        done = _complete_count(study)
        cost = attrs.get("cost", {})
        tag = ("dup of #%d" % attrs["duplicate_of"]) if attrs.get("duplicate_of") is not None else (
            "feasible" if attrs.get("feasible") else "INFEASIBLE (not evaluated)")
        log(f"[nas] trial #{trial.number} ({done}/{n_trials} done, {time.time() - start:.0f}s) "
            f"acc {attrs.get('accuracy', float('nan')):.2f}% {objective} {cost.get(objective, float('nan')):.4g} "
            f"macs {cost.get('macs', 0) / 1e6:.3f}M params {cost.get('params', 0) / 1e3:.1f}k "
            f"peak {cost.get('peak_kb', float('nan')):.1f}KiB {tag}")

    remaining = n_trials - done_before
    if remaining > 0:
        if log is not None:
            log(f"[nas] study {study_name!r} ({storage}): {done_before} completed trials, running up to "
                f"{remaining} more (worker {worker}, sampler {sampler})")
        study.optimize(objective_fn, n_trials=remaining,
                       callbacks=[MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE,)), progress, *callbacks],
                       gc_after_trial=False)
    elif log is not None:
        log(f"[nas] study {study_name!r} already has {done_before} >= {n_trials} completed trials; nothing to run")
    candidates = collect_candidates(study, constraints)
    front = pareto_front(candidates, objective)
    best = choose_candidate(front, objective)
    return SearchResult(study, candidates, front, best, objective, time.time() - start,
                        _complete_count(study) - done_before)

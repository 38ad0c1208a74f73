"""Multi-task training of GraphRec: place ranking + friend compatibility + attendance.

Every step runs one full-graph pass (the default graphs fit in memory), then scores a large
batch of training pairs against sampled negatives. Validation Recall@20 on held-out pairs
drives early stopping and best-checkpoint selection; the test part is never looked at here.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable

import torch

from recsys_core.evaluation.split import Split, training_graph
from recsys_core.graph import GraphBundle
from recsys_core.model.config import ModelConfig
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.inputs import GraphInputs
from recsys_core.training.config import TrainConfig
from recsys_core.training.losses import friend_loss, place_loss
from recsys_core.training.optimizer import build_optimizer, decay_on_plateau, peak_rates, warm_up
from recsys_core.training.sampling import TrainingSampler
from recsys_core.training.state import (
    Selection,
    TrainResult,
    capture_state,
    fingerprint,
    restore_state,
    resumable_state,
    save_training_state,
)
from recsys_core.training.validation import validation_recall, validation_users
from recsys_core.training.warm_start import WarmStart

logger = logging.getLogger(__name__)

Progress = Callable[[dict[str, float]], object]


def train(
    bundle: GraphBundle,
    split: Split,
    model_config: ModelConfig,
    config: TrainConfig,
    progress: Progress | None = None,
    warm_start: WarmStart | None = None,
) -> TrainResult:
    """Train with early stopping on validation Recall@20; returns the best model (by validation).

    With `warm_start` (weights of this very configuration, `training.warm_start`), training
    continues from them: they are evaluated at step 0 and selected unless a later step beats them."""
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    inputs = GraphInputs.from_hetero(training_graph(bundle, split), model_config.use_social, model_config.time_decay)
    model = GraphRec(model_config, inputs.edge_dims())
    model.check_fits(bundle.vocabulary, inputs)  # e.g. a ModelConfig() (built-in sizes) for another world
    optimizer = build_optimizer(model, config)
    peak_lr = peak_rates(optimizer)
    sampler = TrainingSampler(bundle, split, inputs, config)
    val_users = validation_users(bundle, split, config)
    result = TrainResult(model=model)
    selection = Selection()
    first_step, seconds_before = 1, 0.0
    checkpoints = bool(config.checkpoint_dir)
    warm = warm_start.source if warm_start is not None else ""
    key = fingerprint(bundle, split, inputs, model_config, config, warm) if checkpoints else ""
    saved = resumable_state(config.checkpoint_dir, key) if checkpoints and config.resume else None
    if saved is not None:
        first_step, seconds_before = restore_state(saved, model, optimizer, selection, result, sampler.g)
        logger.info("resuming training from step %d (checkpoint in %s)", saved["step"], config.checkpoint_dir)
    elif warm_start is not None:
        result.warm_start = _start_warm(model, warm_start, inputs)
        if result.warm_start.startswith("from"):
            recall = validation_recall(model, inputs, bundle, split, val_users, rerank_depth=config.eval_rerank_depth)
            _select(model, optimizer, selection, result, 0, recall, config)
            result.history.append({"step": 0, "seconds": time.perf_counter() - started, "val_recall@20": recall})
            logger.info("warm start %s: val recall@20 %.4f before any step", warm_start.source, recall)
    every = config.checkpoint_every or config.eval_every

    def checkpoint(step: int) -> None:
        seconds = seconds_before + time.perf_counter() - started
        state = capture_state(key, step, model, optimizer, selection, result, seconds, sampler.g)
        save_training_state(state, config.checkpoint_dir)

    has_labels = len(split.train_labels) > 0
    model.train()
    for step in range(first_step, config.max_steps + 1):
        if selection.early_stop:  # the checkpoint's run had stopped for good: nothing to continue
            break
        warm_up(optimizer, peak_lr, step, config)
        batch = sampler.pairs()
        # The step's supervision pairs pass no messages (unless configured to): a GNN that sees the
        # edge it is asked to predict learns to read it off the graph, which held-out pairs lack.
        left_out = batch if config.mask_supervision_edges else batch[:0]
        isolated = sampler.isolated_places()
        z = model.embed(inputs.without_interactions(left_out, isolated) if len(left_out) + len(isolated) else inputs)
        places = place_loss(model, z, inputs, sampler, config, batch)
        loss = config.lambda_place * places
        friends = attend = torch.tensor(0.0)
        if has_labels and config.lambda_friend + config.lambda_attend > 0:
            friends, attend = friend_loss(model, z, inputs, bundle, sampler.friend_batch())
            loss = loss + config.lambda_friend * friends + config.lambda_attend * attend
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call, unused-ignore]  # Tensor.backward is unannotated in torch 2.13
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        elapsed = time.perf_counter() - started
        record = {
            "step": step,
            "loss": loss.item(),
            "place_loss": places.item(),
            "friend_loss": friends.item(),
            "attend_loss": attend.item(),
            "seconds": seconds_before + elapsed,
        }
        out_of_time = elapsed > config.time_budget_s
        if step % config.eval_every == 0 or step == config.max_steps or out_of_time:
            recall = validation_recall(model, inputs, bundle, split, val_users, rerank_depth=config.eval_rerank_depth)
            record["val_recall@20"] = recall
            _select(model, optimizer, selection, result, step, recall, config)
            rate = (step - first_step + 1) / elapsed
            logger.info(
                "step %d/%d loss %.4f val recall@20 %.4f (best %.4f @ %d) %.2f steps/s ETA %.0fs",
                step,
                config.max_steps,
                record["loss"],
                recall,
                result.best_val_recall,
                result.best_step,
                rate,
                min((config.max_steps - step) / rate, max(config.time_budget_s - elapsed, 0.0)),  # steps or time
            )
        result.history.append(record)
        if progress:
            progress(record)
        if selection.bad_evals >= config.patience:
            selection.early_stop = f"early stop: no validation gain in {config.patience} evaluations"
        if checkpoints and (step % every == 0 or selection.early_stop or out_of_time or step == config.max_steps):
            checkpoint(step)
        if selection.early_stop:
            break
        if out_of_time:
            result.stopped_because = f"time budget of {config.time_budget_s:.0f}s reached"
            break
    else:
        result.stopped_because = "max_steps reached"
    result.stopped_because = selection.early_stop or result.stopped_because
    if selection.best_state is not None:
        model.load_state_dict(selection.best_state)
    model.eval()
    result.seconds = seconds_before + time.perf_counter() - started
    return result


def _start_warm(model: GraphRec, warm_start: WarmStart, inputs: GraphInputs) -> str:
    """Load the warm weights into `model` when its edge widths are theirs; what happened, for the record."""
    if warm_start.edge_dims != inputs.edge_dims():
        reason = f"not used: {warm_start.source} has other edge feature widths; trained from scratch"
        logger.warning("warm start %s", reason)
        return reason
    model.load_state_dict(warm_start.weights)
    return f"from {warm_start.source}"


def _select(
    model: GraphRec,
    optimizer: torch.optim.Optimizer,
    selection: Selection,
    result: TrainResult,
    step: int,
    recall: float,
    config: TrainConfig,
) -> None:
    """Keep the weights of a new best validation figure; otherwise count a bad evaluation and decay."""
    if not result.history or recall > result.best_val_recall or math.isnan(result.best_val_recall):
        result.best_val_recall, result.best_step = recall, step
        selection.best_state, selection.bad_evals = copy.deepcopy(model.state_dict()), 0
    else:
        selection.bad_evals += 1
        decay_on_plateau(optimizer, config)

"""The Trainer glue: sampler, metadata, the loss path, the mining callback, checkpoints.

:class:`HardMiningMixin` (and :class:`HardmineTrainer`, the mixin on
``transformers.Trainer``) differs from the trainer it is mixed into only where
it must:

* the training sampler is hardmine's :class:`ScheduleSampler` (the stock order
  until a plan exists; fusion quotas and the plan after);
* sample metadata (``sample_id``, ``position``, ``sample_index``) is removed
  from each batch before the model's forward; identity stays on the host;
* with mining on, the training loss and the per-sample losses come from one
  computation: the tiled LM head at supervised positions (no logits), or, under
  TRL's ``SFTTrainer``, TRL's own fused head; one device-to-host copy a step;
* each checkpoint folder is marked while it is saved, and resume refuses a
  marked one (:mod:`hardmine.train.checkpoints`).

With mining off (``mining=None`` or ``MiningSettings(enabled=False)``) and the
default ``tiled_loss``, training is the stock trainer's, bit for bit.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..core import MiningSettings
from ..core.miner import WORST_TOKENS
from ..core.errors import UserInputError
from ..data.collate import LOSS_FOCUS_KEY, split_metadata
from .loss import (
    per_sample_loss,
    per_sample_results,
    sample_index_for_packed,
    sample_index_for_padded,
    mixed_statistic,
    sample_means,
    tiled_head_loss,
)
from .adoption import mining_kwargs
from .checkpoints import CheckpointError, check_checkpoint, last_complete_checkpoint, mark_complete, mark_incomplete
from .distributed import Ranks, barrier
from .mining import SELECTION_MODE, STATE_FILE, HardMining, MiningError
from .tensorboard import LossHistogramCallback


def per_sample_means(logits: torch.Tensor, labels: torch.Tensor, metadata: dict) -> torch.Tensor:
    """Masked mean cross-entropy of each sample of a batch (NaN: nothing supervised)."""
    num_samples = int(metadata["sample_id"].numel())
    sample_index = metadata.get("sample_index")
    if sample_index is None:
        sample_index = sample_index_for_padded(labels.shape[0], labels.shape[1], device=labels.device)
    with torch.no_grad():
        sums, counts = per_sample_loss(logits.detach(), labels, sample_index.to(labels.device), num_samples, checkpoint=False)
    return sample_means(sums, counts)


FIELDS_UNDER_FUSED_LOSS = (
    "custom.hard_sample_mining.sample_loss.statistic 'fields' is not supported under TRL's fused loss yet "
    "(its collator carries no loss_focus); use 'mean' or 'worst_tokens' there"
)

#: Metadata kept on the host; ``sample_index`` goes to the device with the batch (the loss reads it there).
HOST_METADATA = ("sample_id", "position")


class HardMiningMixin:
    """Mix into any ``transformers.Trainer`` subclass (TRL's ``SFTTrainer`` too).

    ``mining``: :class:`MiningSettings` (the trainer's own dataset and collator
    are then wrapped with sample identity after ``__init__``), or a ready
    :class:`HardMining` stage with its ``train_sampler`` (as
    :func:`hardmine.train.library.mining_kwargs` or the recipe builds them,
    whose batches carry :data:`hardmine.data.collate.METADATA_KEYS`), or None.

    ``tiled_loss``: compute the training loss from the last hidden states with
    the LM head applied only at supervised positions, in tiles (see
    :func:`hardmine.train.loss.tiled_head_loss`): no ``batch x length x vocab``
    logits, one computation for the loss and the per-sample losses. ``None``
    (default): on exactly when mining is on, so a run without mining is the
    stock Trainer's; ``True`` without mining is a memory saver.
    """

    def __init__(
        self,
        *args,
        train_sampler=None,
        mining: HardMining | MiningSettings | None = None,
        tiled_loss: bool | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if isinstance(mining, MiningSettings) and not mining.enabled:
            mining = None  # off: the stock Trainer, bit for bit
        if isinstance(mining, MiningSettings):
            # Adopted after the trainer built its dataset and collator (TRL's
            # SFTTrainer tokenises in __init__ and accepts only HF datasets):
            # identity is added to the dataset the trainer actually trains on.
            train_sampler, mining = self._adopt_mining(mining)
        elif mining is not None and not isinstance(mining, HardMining):
            raise UserInputError(f"mining: got {type(mining).__name__}; expected MiningSettings, HardMining or None")
        self.train_sampler = train_sampler
        self.mining = mining
        self.tiled_loss = (mining is not None) if tiled_loss is None else bool(tiled_loss)
        # Added, not passed as ``callbacks=``: trainers such as ms-swift's pass
        # their own callbacks to Trainer and would clash with a second list.
        if mining is not None:
            if mining.settings.sample_loss.reads_fields and self._fused_loss:
                raise MiningError(FIELDS_UNDER_FUSED_LOSS)  # said now, not at the first step
            self.add_callback(HardMiningCallback(mining, self))
            self.add_callback(LossHistogramCallback(mining, self))

    def _adopt_mining(self, settings: MiningSettings):
        """Wrap the trainer's own dataset and collator with sample identity; build the sampler and the stage."""
        if getattr(self.args, "packing", False):
            raise UserInputError(
                "mining: packing=True merges samples into new rows, so no row is one sample any more; "
                "use padding_free=True (samples stay whole) or switch packing off"
            )
        dataset = self.train_dataset
        if self.args.remove_unused_columns and hasattr(dataset, "column_names"):
            # What Trainer would drop from a Hugging Face dataset later, dropped
            # now: the wrapper hides the dataset's type, and the collator must
            # not see raw text columns.
            dataset = self._remove_unused_columns(dataset, description="training")
        wrapped = mining_kwargs(dataset, self.data_collator, args=self.args, settings=settings)
        self.train_dataset, self.data_collator = wrapped["train_dataset"], wrapped["data_collator"]
        return wrapped["train_sampler"], wrapped["mining"]

    def _get_train_sampler(self, train_dataset=None):
        if self.train_sampler is not None:
            return self.train_sampler
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        model_inputs, metadata = split_metadata(inputs)
        if not model.training or (self.mining is None and (not self.tiled_loss or self._fused_loss)):
            # Nothing to record, and no tiled loss to compute (TRL's fused loss already builds no logits).
            return super().compute_loss(model, model_inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        labels = model_inputs["labels"]
        num_samples = int(metadata["sample_id"].numel()) if "sample_id" in metadata else labels.shape[0]
        worst_tokens = self._worst_tokens
        token_focus = self._token_focus(metadata, labels)
        sample_index = metadata.get("sample_index")  # None: each row is one sample
        if sample_index is None and "position_ids" in model_inputs and "attention_mask" not in model_inputs:
            sample_index = sample_index_for_packed(model_inputs["position_ids"])  # padding-free rows
        if sample_index is not None:
            sample_index = sample_index.to(labels.device)
        elif not self._fused_loss:
            sample_index = sample_index_for_padded(labels.shape[0], labels.shape[1], device=labels.device)
        if self._fused_loss:
            # The trainer (TRL's SFTTrainer) already scores supervised tokens with
            # its fused head; its loss and metrics stay its own, and the per-token
            # log-probabilities of that same forward give the per-sample losses.
            with capture_fused_outputs(self._unwrapped(model)) as captured:
                result = super().compute_loss(
                    model, model_inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
                )
            sums, counts, *statistic = fused_per_sample(captured, sample_index, num_samples, worst_tokens=worst_tokens)
        elif self.tiled_loss and self._tiled_loss_applies(model):
            outputs, sums, counts, *statistic = self._tiled_forward(
                model, model_inputs, sample_index, num_samples, worst_tokens, token_focus
            )
            loss = self._normalise_like_trainer(sums.sum(), counts.sum(), num_items_in_batch)
            result = (loss, outputs) if return_outputs else loss
        else:
            # The model's own loss; per-sample losses scored from the same forward's logits.
            loss, outputs = super().compute_loss(model, model_inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
            with torch.no_grad():
                sums, counts, *statistic = per_sample_loss(
                    outputs.logits.detach(), labels, sample_index, num_samples, checkpoint=False,
                    worst_tokens=worst_tokens, token_focus=token_focus,
                )
            result = (loss, outputs) if return_outputs else loss
        if self.mining is not None:
            # What the tracker records: the mean token loss, or (sample_loss worst_tokens /
            # fields / mixed) the mean of the sample's highest token losses, of its focus
            # tokens, or the mean of that and the mean, with the mean beside it for the
            # trigger's train_loss. Identity stayed on the host (see _prepare_inputs); the
            # losses stay on the device until the step ends (HardMiningCallback.on_step_end).
            with torch.no_grad():
                means = sample_means(sums, counts)
                recorded = statistic[0] if statistic else means
                if self.mining.settings.sample_loss.statistic == "mixed":
                    recorded = mixed_statistic(means, recorded)
            self.mining.record(
                metadata["sample_id"].cpu().numpy(), recorded, metadata["position"].cpu().numpy(),
                step=self.state.global_step, mean_loss=means if statistic else None,
            )
        return result

    def _prepare_inputs(self, inputs):
        # Sample identity never goes to the device: it is only read back on the host.
        host = {k: inputs.pop(k) for k in HOST_METADATA if k in inputs}
        prepared = super()._prepare_inputs(inputs)
        prepared.update(host)
        return prepared

    @functools.cached_property
    def _fused_loss(self) -> bool:
        """Whether this trainer is TRL's ``SFTTrainer``, which computes its loss with a fused LM head.

        Asked once: a failed import is searched for again on every attempt.
        """
        try:
            from trl import SFTTrainer
        except ImportError:
            return False
        return isinstance(self, SFTTrainer)

    def _tiled_loss_applies(self, model) -> bool:
        """The tiled loss reproduces the stock loss only where the stock loss is the plain causal-LM one."""
        if self.label_smoother is not None or self.compute_loss_func is not None:
            return False
        return self._model_facts(model)[1]

    def _unwrapped(self, model):
        return self._model_facts(model)[0]

    def _model_facts(self, model):
        """``(unwrapped model, whether its forward takes logits_to_keep)``, worked out once per wrapper.

        accelerate reads installed-package metadata on every unwrap (a fraction
        of a millisecond each), and inspecting a signature costs as much: too much
        to pay at every step of a tiny model. ``logits_to_keep`` lets the forward
        skip the logits; models without it (older or custom architectures) get
        the model's loss and logits instead.
        """
        cached = getattr(self, "_model_facts_cache", None)
        if cached is None or cached[0] is not model:
            unwrapped = self.accelerator.unwrap_model(model)
            takes = "logits_to_keep" in inspect.signature(unwrapped.forward).parameters
            cached = self._model_facts_cache = (model, unwrapped, takes)
        return cached[1:]

    @property
    def _worst_tokens(self) -> int | None:
        """How many of a sample's highest token losses mining records (None: it records the mean)."""
        if self.mining is None:
            return None
        sample_loss = self.mining.settings.sample_loss
        return WORST_TOKENS if sample_loss.statistic == "worst_tokens" else None

    def _token_focus(self, metadata: dict, labels: torch.Tensor) -> torch.Tensor | None:
        """The batch's ``loss_focus`` where mining records ``sample_loss`` ``fields`` or ``mixed`` (None otherwise)."""
        if self.mining is None or not self.mining.settings.sample_loss.reads_fields:
            return None  # (a fused-loss trainer refused 'fields' and 'mixed' when it was made)
        focus = metadata.get(LOSS_FOCUS_KEY)
        if focus is None:
            raise MiningError(
                "custom.hard_sample_mining.sample_loss.statistic 'fields': the batch has no 'loss_focus' "
                "(1 on the tokens of the fields' values); hardmine's CaptionDataset(loss_fields=...) makes it, "
                "or add it per token beside 'labels' in your own dataset and collator (a Hugging Face dataset's "
                "column also needs remove_unused_columns=False)"
            )
        return focus.to(labels.device)

    def _tiled_forward(self, model, model_inputs, sample_index, num_samples, worst_tokens=None, token_focus=None):
        """One forward without logits (``logits_to_keep`` empty), then the tiled head at supervised positions."""
        inputs = {k: v for k, v in model_inputs.items() if k != "labels"}
        labels = model_inputs["labels"]
        outputs = model(**inputs, output_hidden_states=True, logits_to_keep=torch.empty(0, dtype=torch.long, device=labels.device))
        if getattr(outputs, "hidden_states", None) is None:
            raise MiningError(
                f"{type(self._unwrapped(model)).__name__} returned no hidden states for the tiled loss; "
                "pass tiled_loss=False to use the model's own loss and logits"
            )
        hidden = outputs.hidden_states[-1]  # the final normed state: what the LM head reads
        outputs.hidden_states = None  # do not hand every layer's state on to the caller
        head = self._unwrapped(model).get_output_embeddings()
        return outputs, *tiled_head_loss(
            hidden, head.weight, head.bias, labels, sample_index, num_samples, worst_tokens=worst_tokens,
            token_focus=token_focus,
        )

    def _normalise_like_trainer(self, total, count, num_items_in_batch):
        """The loss value and scale ``Trainer.compute_loss`` gives the stock causal-LM loss."""
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            # Summed over the step's tokens, divided by the tokens of the whole
            # accumulation window (and of all ranks, scaled back up as Trainer does).
            if isinstance(num_items_in_batch, torch.Tensor):
                num_items_in_batch = num_items_in_batch.to(total.device)
            loss = total / num_items_in_batch
            if self.args.average_tokens_across_devices:
                scale = self.accelerator.num_processes // self.get_tp_size()
                loss = loss * (scale if self.args.n_gpu <= 1 else self.args.n_gpu)
            return loss
        return total / count  # the micro-batch's token mean; Trainer divides by accumulation itself

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        model_inputs, _ = split_metadata(inputs)
        return super().prediction_step(model, model_inputs, prediction_loss_only, ignore_keys=ignore_keys)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # transformers (5.x) saves some models, Qwen2-VL among them, under their
        # original checkpoint key names and maps them back only in from_pretrained;
        # Trainer's resume loads the raw file with strict=False, which for those
        # models silently restores nothing. Load through from_pretrained instead,
        # strictly. (DeepSpeed and FSDP restore their own states.)
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        folder = Path(resume_from_checkpoint)
        has_weights = (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or not has_weights or not hasattr(target, "from_pretrained"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        dtype = next(target.parameters()).dtype
        restored = type(target).from_pretrained(str(folder), dtype=dtype)
        target.load_state_dict(restored.state_dict(), strict=True)

    def _save_checkpoint(self, model, trial):
        # Complete or marked (hardmine.train.checkpoints): the mark goes in before anything
        # is written and comes out after the last file, the mining state included.
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            mark_incomplete(folder)
        super()._save_checkpoint(model, trial)
        if self.mining is not None and self.args.should_save:
            self.mining.save(folder)
        barrier(Ranks.of(self.args))  # every rank's shards (DeepSpeed) are on disk before the folder counts as complete
        if self.args.should_save:
            mark_complete(folder)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise CheckpointError(f"{self.args.output_dir}: no complete checkpoint-* folder to resume from")
        elif resume_from_checkpoint:
            check_checkpoint(resume_from_checkpoint)
        if self.mining is not None and resume_from_checkpoint:
            if (Path(resume_from_checkpoint) / STATE_FILE).is_file():
                self.mining.load(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)


def draws_from(loader, sampler, depth: int = 6) -> bool:
    """Whether ``sampler`` is inside ``loader`` (through accelerate's and torch's wrappers)."""
    if loader is sampler:
        return True
    if depth == 0 or loader is None:
        return False
    for name in ("sampler", "batch_sampler", "base_dataloader", "_sampler", "batch_sampler_shard"):
        inner = getattr(loader, name, None)
        if inner is not None and inner is not loader and draws_from(inner, sampler, depth - 1):
            return True
    return False


class capture_fused_outputs:
    """Keep the last fused-head output (``log_probs`` and ``label_mask``) of a model's forward calls."""

    def __init__(self, model):
        self.model = model
        self.log_probs = None
        self.label_mask = None

    def __enter__(self):
        def keep(module, args, kwargs, output):
            if kwargs.get("fused_lm_head") and getattr(output, "log_probs", None) is not None:
                self.log_probs, self.label_mask = output.log_probs, output.label_mask

        self._handle = self.model.register_forward_hook(keep, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False


def fused_per_sample(
    captured: capture_fused_outputs, sample_index: torch.Tensor | None, num_samples: int, *, worst_tokens: int | None = None
):
    """Per-sample ``(loss_sum, token_count)`` from a fused head's shifted per-token outputs
    (with ``worst_tokens=k`` a third tensor, as in :func:`hardmine.train.loss.per_sample_loss`).

    ``log_probs`` and ``label_mask`` are ``(B, T - 1)``: position t scores the
    label at t + 1. ``sample_index`` None: each row is one sample. Otherwise, as
    in :func:`hardmine.train.loss.per_sample_loss`, a position whose next token
    belongs to another sample (padding-free rows) is not counted.
    """
    if captured.log_probs is None:
        raise MiningError("the trainer's forward returned no fused log-probabilities to take per-sample losses from")
    log_probs = captured.log_probs.detach().float()
    mask = captured.label_mask.bool()
    if sample_index is None and worst_tokens is None:
        # Row sums: no boolean indexing, so no host synchronisation in the step.
        return -(log_probs * mask).sum(dim=1), mask.sum(dim=1)
    if sample_index is None:
        keep = mask
        samples = keep.nonzero(as_tuple=True)[0]  # each row is one sample
    else:
        keep = mask & (sample_index[:, :-1] == sample_index[:, 1:]) & (sample_index[:, 1:] >= 0)
        samples = sample_index[:, 1:][keep].long()
    return per_sample_results(-log_probs[keep], samples, num_samples, worst_tokens)


class HardmineTrainer(HardMiningMixin, Trainer):
    """``transformers.Trainer`` with hardmine's sampler and mining stage."""


class HardMiningCallback(TrainerCallback):
    """Runs the mining stage once per epoch end and saves it with each checkpoint.

    With ``monitor: train_loss`` mining runs at ``on_epoch_end``. With an eval
    metric it runs at the evaluation that follows that epoch end (Trainer
    evaluates, then saves, so the checkpoint holds the new plan); evaluations
    at any other time, such as a ``trainer.evaluate()`` after training, mine
    nothing.
    """

    def __init__(self, mining: HardMining, trainer: Trainer):
        self.mining = mining
        self.trainer = trainer
        self._epoch_awaiting_eval: int | None = None

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        # A trainer that builds its own dataloader (ms-swift's does) may never ask
        # for hardmine's sampler: the plan would then be silently ignored.
        sampler = self.mining.sampler
        if train_dataloader is not None and not draws_from(train_dataloader, sampler):
            raise MiningError(
                f"{type(self.trainer).__name__}'s training dataloader does not draw from hardmine's sampler, so "
                "mining plans would be ignored; the trainer must use the sampler _get_train_sampler returns "
                "(see the ms-swift plugin, hardmine.integrations.swift, for a trainer that builds its own)"
            )

    def on_epoch_end(self, args, state, control, **kwargs):
        self._check_no_epoch_awaits_eval()
        if self.mining.monitor == "train_loss":
            self._mine(None)
        else:
            self._epoch_awaiting_eval = self.mining.sampler.epoch

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # With several eval sets Trainer evaluates (and calls this) once per set;
        # the one whose metrics hold the monitor closes the epoch.
        if self._epoch_awaiting_eval is None or self.mining.monitor not in (metrics or {}):
            return
        self._epoch_awaiting_eval = None
        self._mine(float(metrics[self.mining.monitor]))

    def on_train_end(self, args, state, control, **kwargs):
        self._check_no_epoch_awaits_eval()

    def _check_no_epoch_awaits_eval(self) -> None:
        if self._epoch_awaiting_eval is not None:
            raise MiningError(
                f"custom.hard_sample_mining.monitor: {self.mining.monitor!r} needs an evaluation after every epoch "
                f"(training.eval_strategy: epoch) whose metrics hold it, but epoch {self._epoch_awaiting_eval} "
                "ended without one"
            )

    def on_step_end(self, args, state, control, **kwargs):
        self.mining.log.flush()  # one device-to-host copy per optimizer step

    def _mine(self, monitored):
        metrics = dict(self.mining.end_epoch(self.mining.sampler.epoch, monitored))
        mode = metrics.pop(SELECTION_MODE, None)
        self.trainer.log(metrics)
        if mode is not None:  # beside the row's metrics: reporters (TensorBoard) take scalars only
            self.trainer.state.log_history[-1][SELECTION_MODE] = mode


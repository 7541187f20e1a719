"""Per-sample masked cross-entropy from the training forward's own logits.

The values are computed exactly as transformers' causal-LM loss computes the batch
loss (the logits at position t are scored against the label at t + 1, labels of
-100 ignored, float32 arithmetic), but summed per sample instead of over the batch,
so that ``per_sample_sum.sum() / per_sample_count.sum()`` is the model's own loss
and the per-sample values can be both logged for mining and used as the training
loss (they are differentiable).

Memory: only supervised positions are scored, ``chunk_size`` of them at a time, each
chunk upcast to float32 on its own, so no float32 copy of the full
``(batch, length, vocab)`` logits is ever made. With ``checkpoint=True`` a chunk's
float32 log-probabilities are not kept for the backward pass either (they are
recomputed there, one chunk at a time), so the float32 part of what the loss adds
to peak memory is one chunk, ``chunk_size * vocab * 4`` bytes (256 x 151,936 x 4
~ 150 MiB for Qwen's vocabulary). When the logits require grad, the scored rows
are gathered once in the logits' own dtype (supervised tokens x vocab), so that
the backward scatters one gradient into the logits rather than one per chunk.

With ``worst_tokens=k`` each function also gives every sample's mean of its ``k``
highest token losses (:func:`worst_token_means`, detached): a statistic that a
couple of wrong or unlearnt tokens move even in a long, mostly learnt sequence
(a dense caption's wrong colour word among its coordinate digits), where the
mean dilutes them.

Samples are told apart by a per-token ``sample_index`` (the collators put it in the
batch; -1 marks padding). In a packed row the shift never crosses a sample
boundary: a position whose next token belongs to another sample is not scored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as _checkpoint

#: Label of a token the loss ignores.
IGNORE_INDEX = -100
#: Supervised positions scored per float32 chunk.
DEFAULT_CHUNK_SIZE = 256
#: Above this many bytes of float32 logits over all scored positions, the tiled
#: head recomputes each chunk's logits in the backward pass instead of keeping them.
KEEP_LOGITS_BYTES = 64 * 2**20


def per_sample_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    sample_index: torch.Tensor,
    num_samples: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    checkpoint: bool = True,
    worst_tokens: int | None = None,
    token_focus: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """``(loss_sum, token_count)``, each of shape ``(num_samples,)``; with
    ``worst_tokens=k``, ``(loss_sum, token_count, worst_mean)``; with
    ``token_focus`` ``(B, T)`` (nonzero on the tokens that count, aligned with
    ``labels``), ``(loss_sum, token_count, focus_mean)``: see :func:`focus_means`.

    ``logits`` ``(B, T, V)`` from the forward (any float dtype), ``labels`` ``(B, T)``
    as given to the model (not shifted), ``sample_index`` ``(B, T)``: the sample of
    each token in ``[0, num_samples)``, or -1 for padding. ``loss_sum`` (float32) is
    each sample's summed cross-entropy over its scored tokens, ``token_count``
    (int64) how many tokens were scored; the mean is ``loss_sum / token_count``
    (NaN-free only where ``token_count > 0``). ``worst_mean``: see
    :func:`worst_token_means`.
    """
    _check_inputs(logits, labels, sample_index, num_samples, chunk_size)
    _check_worst_tokens(worst_tokens)
    _check_focus(token_focus, labels, worst_tokens)
    rows, cols, targets, samples = scored_positions(labels.to(logits.device), sample_index.to(logits.device), logits.shape[-1])
    needs_grad = logits.requires_grad and torch.is_grad_enabled()
    chunks = _scored_chunks(logits, rows, cols, chunk_size, needs_grad)
    pieces = [
        _checkpoint(_token_losses, scores, chunk_targets, use_reentrant=False)
        if checkpoint and needs_grad
        else _token_losses(scores, chunk_targets)
        for scores, chunk_targets in zip(chunks, targets.split(chunk_size))
    ]
    return per_sample_results(
        _joined(pieces, logits.device), samples, num_samples, worst_tokens, _scored_focus(token_focus, rows, cols)
    )


def sample_means(loss_sum: torch.Tensor, token_count: torch.Tensor) -> torch.Tensor:
    """Each sample's mean token loss from ``(loss_sum, token_count)``; NaN where nothing was scored."""
    means = loss_sum.detach() / token_count.clamp(min=1)
    return torch.where(token_count > 0, means, torch.full_like(means, float("nan")))


def mixed_statistic(means: torch.Tensor, focus_means: torch.Tensor) -> torch.Tensor:
    """``sample_loss: mixed``: half each sample's mean token loss, half its focus tokens' mean;
    the mean alone where the sample has no focus tokens (its focus mean is NaN)."""
    return torch.where(torch.isnan(focus_means), means, 0.5 * (means + focus_means))


def tiled_head_loss(
    hidden: torch.Tensor,
    head_weight: torch.Tensor,
    head_bias: torch.Tensor | None,
    labels: torch.Tensor,
    sample_index: torch.Tensor,
    num_samples: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    checkpoint: bool | None = None,
    worst_tokens: int | None = None,
    token_focus: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """:func:`per_sample_loss` from the last hidden states, never building the logits.

    ``hidden`` ``(B, T, H)`` is the language model's final (normed) hidden state,
    ``head_weight`` ``(V, H)`` (and ``head_bias``) the LM head. The head runs only
    at the scored positions, ``chunk_size`` of them at a time; each chunk's logits
    are made in the head's dtype and scored in float32, as transformers scores
    its own, and with ``checkpoint=True`` they are recomputed in the backward
    pass instead of kept. ``checkpoint=None`` decides by size: recompute only
    when keeping every scored position's float32 logits would take more than
    :data:`KEEP_LOGITS_BYTES` (a large vocabulary); below that, recomputing
    costs time and saves nothing that matters. Same ``(loss_sum, token_count)`` as :func:`per_sample_loss`
    on ``hidden @ head_weight.T``; the gradient reaches ``hidden`` and the head.
    """
    if hidden.ndim != 3:
        raise ValueError(f"hidden: got shape {tuple(hidden.shape)}; expected (batch, length, hidden size)")
    if head_weight.ndim != 2 or head_weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"head_weight: got shape {tuple(head_weight.shape)}; expected (vocab, {hidden.shape[-1]})")
    _check_inputs(hidden, labels, sample_index, num_samples, chunk_size)
    _check_worst_tokens(worst_tokens)
    _check_focus(token_focus, labels, worst_tokens)
    rows, cols, targets, samples = scored_positions(labels.to(hidden.device), sample_index.to(hidden.device), head_weight.shape[0])
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or head_weight.requires_grad)
    if checkpoint is None:
        checkpoint = targets.numel() * head_weight.shape[0] * 4 > KEEP_LOGITS_BYTES
    # One gather of the scored rows (scored tokens x hidden size, small): the
    # backward then scatters into ``hidden`` once.
    pieces = []
    for scored, chunk_targets in zip(hidden[rows, cols].split(chunk_size), targets.split(chunk_size)):
        if checkpoint and needs_grad:
            pieces.append(_checkpoint(_head_token_losses, scored, head_weight, head_bias, chunk_targets, use_reentrant=False))
        else:
            pieces.append(_head_token_losses(scored, head_weight, head_bias, chunk_targets))
    return per_sample_results(
        _joined(pieces, hidden.device), samples, num_samples, worst_tokens, _scored_focus(token_focus, rows, cols)
    )


def scored_positions(labels: torch.Tensor, sample_index: torch.Tensor, vocab_size: int):
    """``(rows, cols, targets, samples)`` of every scored position.

    Position t predicts the label at t + 1, and only inside its own sample.
    """
    if labels.shape[1] < 2:
        empty = torch.empty(0, dtype=torch.long, device=labels.device)
        return empty, empty, empty, empty
    target = labels[:, 1:]
    source_sample = sample_index[:, :-1]
    target_sample = sample_index[:, 1:]
    scored = (target != IGNORE_INDEX) & (source_sample == target_sample) & (target_sample >= 0)
    rows, cols = scored.nonzero(as_tuple=True)
    targets = target[rows, cols].long()
    samples = target_sample[rows, cols].long()
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab_size):
        raise ValueError(
            f"labels: scored label ids span [{int(targets.min())}, {int(targets.max())}]; "
            f"expected ids in [0, {vocab_size}) or {IGNORE_INDEX}"
        )
    return rows, cols, targets, samples


def worst_token_means(token_losses: torch.Tensor, samples: torch.Tensor, num_samples: int, tokens: int) -> torch.Tensor:
    """Each sample's mean of its ``tokens`` highest token losses (of all of them if it has fewer).

    ``token_losses`` ``(N,)`` and ``samples`` ``(N,)``: one scored token each, and
    the sample in ``[0, num_samples)`` it belongs to. Detached, float32, shape
    ``(num_samples,)``; NaN where a sample has no scored token.
    """
    _check_worst_tokens(tokens)
    losses = token_losses.detach().float()
    counts = torch.bincount(samples, minlength=num_samples)
    # Highest loss first, then grouped by sample (stable): a sample's tokens in
    # descending order, so a token's rank inside its sample is its offset there.
    order = torch.argsort(losses, descending=True, stable=True)
    order = order[torch.argsort(samples[order], stable=True)]
    ranked_samples, ranked_losses = samples[order], losses[order]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.numel(), device=losses.device) - starts[ranked_samples]
    worst = rank < tokens
    sums = torch.zeros(num_samples, dtype=torch.float32, device=losses.device).index_add(
        0, ranked_samples[worst], ranked_losses[worst]
    )
    means = sums / counts.clamp(min=1, max=tokens)
    return torch.where(counts > 0, means, torch.full_like(means, float("nan")))


def focus_means(token_losses: torch.Tensor, samples: torch.Tensor, num_samples: int, focus: torch.Tensor) -> torch.Tensor:
    """Each sample's mean loss over its scored tokens where ``focus`` (``(N,)`` bool) is set.

    Detached, float32, shape ``(num_samples,)``; NaN where a sample has no such token.
    """
    losses = token_losses.detach().float()
    focus = focus.to(losses.device).bool()
    sums = torch.zeros(num_samples, dtype=torch.float32, device=losses.device).index_add(0, samples[focus], losses[focus])
    return sample_means(sums, torch.bincount(samples[focus], minlength=num_samples))


def per_sample_results(
    token_losses: torch.Tensor,
    samples: torch.Tensor,
    num_samples: int,
    worst_tokens: int | None = None,
    focus: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """``(loss_sum, token_count)`` from scored tokens and their samples, and a third result with
    ``worst_tokens`` (``worst_mean``) or ``focus`` (the scored tokens' flags: ``focus_mean``).

    The one place every loss path (the tiled head, the model's logits, a fused
    head's log-probabilities) turns per-token losses into per-sample results.
    """
    loss_sum = torch.zeros(num_samples, dtype=torch.float32, device=token_losses.device).index_add(0, samples, token_losses)
    result = (loss_sum, torch.bincount(samples, minlength=num_samples))
    if worst_tokens is not None:
        return (*result, worst_token_means(token_losses, samples, num_samples, worst_tokens))
    if focus is not None:
        return (*result, focus_means(token_losses, samples, num_samples, focus))
    return result


def _scored_focus(token_focus: torch.Tensor | None, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor | None:
    """The focus flag of each scored position's target token (shifted as the labels are)."""
    if token_focus is None:
        return None
    return token_focus.to(rows.device)[:, 1:][rows, cols] != 0


def _check_focus(token_focus, labels, worst_tokens) -> None:
    if token_focus is None:
        return
    if worst_tokens is not None:
        raise ValueError("token_focus and worst_tokens: got both; expected one statistic")
    if tuple(token_focus.shape) != tuple(labels.shape):
        raise ValueError(f"token_focus: got shape {tuple(token_focus.shape)}; expected {tuple(labels.shape)} (the labels' shape)")


def _joined(pieces, device) -> torch.Tensor:
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.float32, device=device)


def _check_worst_tokens(worst_tokens) -> None:
    if worst_tokens is not None and (isinstance(worst_tokens, bool) or not isinstance(worst_tokens, int) or worst_tokens < 1):
        raise ValueError(f"worst_tokens: got {worst_tokens!r}; expected None or an integer >= 1")


def _head_token_losses(scored: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor):
    return F.cross_entropy(F.linear(scored, weight, bias).float(), targets, reduction="none")


def _scored_chunks(logits, rows, cols, chunk_size, needs_grad):
    """The logits rows of the scored positions, ``chunk_size`` at a time, in the logits' dtype."""
    if needs_grad:
        # One gather, then views: autograd scatters the gradient back into the
        # logits once, where gathering chunk by chunk would build (and add up) a
        # full-size gradient per chunk. Costs one copy of the scored rows.
        return logits[rows, cols].split(chunk_size)
    # Without autograd, gather chunk by chunk: no copy of all scored rows at once.
    return (logits[rows[i : i + chunk_size], cols[i : i + chunk_size]] for i in range(0, rows.numel(), chunk_size))


def _token_losses(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # The float32 copy is one chunk x vocab, never batch x length x vocab; float32
    # as in transformers' own loss.
    return F.cross_entropy(scores.float(), targets, reduction="none")


def _check_inputs(logits, labels, sample_index, num_samples, chunk_size) -> None:
    if logits.ndim != 3:
        raise ValueError(f"logits: got shape {tuple(logits.shape)}; expected (batch, length, vocab)")
    if tuple(labels.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"labels: got shape {tuple(labels.shape)}; expected {tuple(logits.shape[:2])} (the first two dims)")
    if tuple(sample_index.shape) != tuple(labels.shape):
        raise ValueError(f"sample_index: got shape {tuple(sample_index.shape)}; expected {tuple(labels.shape)} (labels')")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: got {num_samples!r}; expected an integer >= 1")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: got {chunk_size!r}; expected an integer >= 1")
    if sample_index.numel():
        low, high = int(sample_index.min()), int(sample_index.max())
        if low < -1 or high >= num_samples:
            raise ValueError(
                f"sample_index: values span [{low}, {high}]; expected -1 (padding) or [0, {num_samples})"
            )


def sample_index_for_padded(batch_size: int, seq_len: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """``(batch_size, seq_len)``: row b is all b (padding is excluded by its -100 labels)."""
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: got {value!r}; expected an integer >= 1")
    return torch.arange(batch_size, device=device)[:, None].expand(batch_size, seq_len).contiguous()


def sample_index_for_packed(
    position_ids: torch.Tensor | None = None, *, segment_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-token sample index ``(B, T)`` of packed rows, numbered across all rows.

    From ``position_ids`` ``(B, T)`` or a VL model's ``(4, B, T)`` (row 0, the text
    positions, is used), which restart at 0 with every sample: a sample starts
    wherever the position is 0. Or from ``segment_ids`` ``(B, T)`` numbering the
    samples of each row from 0 (non-decreasing). Samples of row b follow those of
    row b - 1.
    """
    if (position_ids is None) == (segment_ids is None):
        raise ValueError("sample_index_for_packed: expected exactly one of position_ids and segment_ids")
    if position_ids is not None:
        pos = position_ids
        if pos.ndim == 3:
            if pos.shape[0] != 4:
                raise ValueError(
                    f"position_ids: got shape {tuple(pos.shape)}; expected (B, T) or (4, B, T) with text "
                    "positions in row 0 (3D rope rows alone do not mark where samples start)"
                )
            pos = pos[0]
        if pos.ndim != 2 or pos.shape[1] == 0:
            raise ValueError(f"position_ids: got shape {tuple(position_ids.shape)}; expected (B, T) or (4, B, T)")
        if bool((pos[:, 0] != 0).any()):
            raise ValueError("position_ids: a row does not start at 0; expected every packed row to start a sample")
        per_row = torch.cumsum(pos == 0, dim=-1) - 1
    else:
        per_row = segment_ids
        if per_row.ndim != 2 or per_row.shape[1] == 0:
            raise ValueError(f"segment_ids: got shape {tuple(per_row.shape)}; expected (B, T)")
        steps = torch.diff(per_row, dim=-1)
        if bool((per_row[:, 0] != 0).any()) or bool(((steps != 0) & (steps != 1)).any()):
            raise ValueError("segment_ids: expected each row to count samples 0, 1, 2, ... in steps of 0 or 1")
    per_row = per_row.long()
    # Offset each row by the number of samples in the rows before it.
    counts = per_row[:, -1] + 1
    offsets = torch.cumsum(counts, dim=0) - counts
    return per_row + offsets[:, None]

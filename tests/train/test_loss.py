"""per_sample_loss: shifted like the model, per sample, equal in padded and packed batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hardmine.train.loss import (
    IGNORE_INDEX,
    per_sample_loss,
    sample_index_for_packed,
    sample_index_for_padded,
    tiled_head_loss,
    worst_token_means,
)


def reference(logits, labels, spans):
    """Independent per-sample loss: one cross_entropy per sample on its shifted tokens.

    ``spans``: (row, start, stop) of each sample in the batch.
    """
    sums, counts = [], []
    for row, start, stop in spans:
        scores, targets = logits[row, start : stop - 1].float(), labels[row, start + 1 : stop]
        sums.append(F.cross_entropy(scores, targets, ignore_index=IGNORE_INDEX, reduction="sum"))
        counts.append(int((targets != IGNORE_INDEX).sum()))
    return torch.stack(sums), torch.tensor(counts)


def random_padded(gen, lengths=(7, 3, 10), vocab=13):
    B, T = len(lengths), max(lengths)
    logits = torch.randn(B, T, vocab, generator=gen)
    labels = torch.randint(0, vocab, (B, T), generator=gen)
    labels[torch.rand(B, T, generator=gen) < 0.3] = IGNORE_INDEX  # prompt tokens
    for b, n in enumerate(lengths):
        labels[b, n:] = IGNORE_INDEX  # padding
    return logits, labels, [(b, 0, n) for b, n in enumerate(lengths)]


# --------------------------------------------------------------------------- synthetic


def test_padded_equals_an_independent_per_sample_loop():
    logits, labels, spans = random_padded(torch.Generator().manual_seed(0))
    sums, counts = per_sample_loss(logits, labels, sample_index_for_padded(*labels.shape), len(spans))
    ref_sums, ref_counts = reference(logits, labels, spans)
    torch.testing.assert_close(sums, ref_sums)
    assert torch.equal(counts, ref_counts) and counts.dtype == torch.int64 and sums.dtype == torch.float32


def test_padding_marked_minus_one_is_never_scored():
    logits, labels, spans = random_padded(torch.Generator().manual_seed(1))
    index = sample_index_for_padded(*labels.shape).clone()
    index[0, 7:] = -1
    labels[0, 7:] = 3  # even with labels on the padding
    sums, counts = per_sample_loss(logits, labels, index, 3)
    ref_sums, ref_counts = reference(logits, labels, spans)
    torch.testing.assert_close(sums, ref_sums)
    assert torch.equal(counts, ref_counts)


def test_packed_never_scores_across_a_sample_boundary():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 12, 9, generator=gen)
    labels = torch.randint(0, 9, (1, 12), generator=gen)  # no -100 at the boundaries
    position_ids = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]])
    index = sample_index_for_packed(position_ids)
    sums, counts = per_sample_loss(logits, labels, index, 3)
    ref_sums, ref_counts = reference(logits, labels, [(0, 0, 4), (0, 4, 7), (0, 7, 12)])
    torch.testing.assert_close(sums, ref_sums)
    assert counts.tolist() == ref_counts.tolist() == [3, 2, 4]


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
@pytest.mark.parametrize("checkpoint", [True, False])
def test_chunking_and_checkpointing_change_neither_values_nor_gradients(chunk_size, checkpoint):
    base, labels, spans = random_padded(torch.Generator().manual_seed(3))
    logits = base.clone().requires_grad_()
    sums, _ = per_sample_loss(logits, labels, sample_index_for_padded(*labels.shape), 3,
                              chunk_size=chunk_size, checkpoint=checkpoint)  # fmt: skip
    (sums * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    ref_logits = base.clone().requires_grad_()
    ref_sums, _ = reference(ref_logits, labels, spans)
    (ref_sums * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    torch.testing.assert_close(sums, ref_sums)
    torch.testing.assert_close(logits.grad, ref_logits.grad)


def test_low_precision_logits_are_scored_in_float32():
    logits, labels, _ = random_padded(torch.Generator().manual_seed(4))
    index = sample_index_for_padded(*labels.shape)
    low = logits.to(torch.bfloat16)
    sums, _ = per_sample_loss(low, labels, index, 3)
    assert sums.dtype == torch.float32
    assert torch.equal(sums, per_sample_loss(low.float(), labels, index, 3)[0])


def unshifted(logits, labels, index, num_samples):
    """The wrong computation: logits at t scored against the label at t."""
    keep = labels != IGNORE_INDEX
    losses = F.cross_entropy(logits[keep].float(), labels[keep], reduction="none")
    return torch.zeros(num_samples).index_add(0, index[keep], losses)


def test_an_unshifted_comparison_gives_clearly_different_values():
    # Logits that predict the next token well: the shifted loss is small, the
    # unshifted one (comparing each position with its own token) large.
    gen = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 11, (2, 9), generator=gen)
    labels[:, :3] = IGNORE_INDEX
    logits = torch.randn(2, 9, 11, generator=gen)
    logits[:, :-1] += 8.0 * F.one_hot(labels[:, 1:].clamp(min=0), 11)
    index = sample_index_for_padded(2, 9)
    sums, counts = per_sample_loss(logits, labels, index, 2)
    right = sums / counts
    wrong = unshifted(logits, labels, index, 2) / (labels != IGNORE_INDEX).sum(1)
    assert bool((right < 0.1).all()) and bool((wrong > 2.0).all())


# --------------------------------------------------------------------------- helpers and errors


def test_sample_index_helpers():
    assert sample_index_for_padded(2, 3).tolist() == [[0, 0, 0], [1, 1, 1]]
    pos = torch.tensor([[0, 1, 0, 1, 2], [0, 0, 1, 2, 3]])
    assert sample_index_for_packed(pos).tolist() == [[0, 0, 1, 1, 1], [2, 3, 3, 3, 3]]
    vl = torch.stack([pos, pos + 5, pos + 7, pos + 9])  # (4, B, T): row 0 is text
    assert torch.equal(sample_index_for_packed(vl), sample_index_for_packed(pos))
    seg = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    assert sample_index_for_packed(segment_ids=seg).tolist() == [[0, 0, 1, 1, 1], [2, 3, 3, 3, 3]]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of"),
        ({"position_ids": torch.tensor([[1, 2, 0]])}, "does not start at 0"),
        ({"position_ids": torch.zeros(3, 1, 4, dtype=torch.long)}, r"expected \(B, T\) or \(4, B, T\)"),
        ({"segment_ids": torch.tensor([[0, 2, 2]])}, "steps of 0 or 1"),
    ],
)
def test_sample_index_for_packed_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_index_for_packed(**kwargs)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: a.update(logits=a["logits"][0]), "logits: got shape"),
        (lambda a: a.update(labels=a["labels"][:, :-1]), "labels: got shape"),
        (lambda a: a.update(sample_index=a["sample_index"][:1]), "sample_index: got shape"),
        (lambda a: a.update(num_samples=0), "num_samples: got 0"),
        (lambda a: a.update(num_samples=2), r"sample_index: values span \[0, 2\]"),
        (lambda a: a["labels"].__setitem__((0, 2), 99), r"labels: scored label ids span"),
        (lambda a: a.update(chunk_size=0), "chunk_size: got 0"),
        (lambda a: a.update(worst_tokens=0), "worst_tokens: got 0"),
        (lambda a: a.update(worst_tokens=True), "worst_tokens: got True"),
    ],
)
def test_bad_arguments_are_errors(change, match):
    logits, labels, _ = random_padded(torch.Generator().manual_seed(6))
    labels[0, 2] = 1
    args = {"logits": logits, "labels": labels, "sample_index": sample_index_for_padded(3, 10), "num_samples": 3}
    change(args)
    options = {k: args.pop(k) for k in ("chunk_size", "worst_tokens") if k in args}
    with pytest.raises(ValueError, match=match):
        per_sample_loss(args["logits"], args["labels"], args["sample_index"], args["num_samples"], **options)


# --------------------------------------------------------------------------- worst tokens


def reference_worst(logits, labels, spans, k):
    """Independent worst-token mean: each sample's shifted token losses, sorted, the k highest averaged."""
    out = []
    for row, start, stop in spans:
        targets = labels[row, start + 1 : stop]
        losses = F.cross_entropy(logits[row, start : stop - 1].float(), targets, ignore_index=IGNORE_INDEX, reduction="none")
        scored = losses[targets != IGNORE_INDEX]
        out.append(scored.sort(descending=True).values[:k].mean() if scored.numel() else torch.tensor(float("nan")))
    return torch.stack(out)


def test_worst_token_means_of_a_hand_made_batch():
    losses = torch.tensor([1.0, 5.0, 2.0, 3.0, 0.5, 9.0])
    samples = torch.tensor([0, 0, 1, 0, 1, 0])
    # Sample 0 has 9, 5, 3, 1; sample 1 has 2, 0.5 (fewer than k: all of them); sample 2 none.
    torch.testing.assert_close(worst_token_means(losses, samples, 3, 2), torch.tensor([7.0, 1.25, float("nan")]), equal_nan=True)
    torch.testing.assert_close(worst_token_means(losses, samples, 3, 1), torch.tensor([9.0, 2.0, float("nan")]), equal_nan=True)


@pytest.mark.parametrize("k", [1, 3, 100])
@pytest.mark.parametrize("chunk_size", [2, 1000])
def test_worst_tokens_equal_an_independent_per_sample_loop(k, chunk_size):
    logits, labels, spans = random_padded(torch.Generator().manual_seed(7), lengths=(7, 1, 10, 5))
    index = sample_index_for_padded(*labels.shape)
    sums, counts, worst = per_sample_loss(logits, labels, index, len(spans), chunk_size=chunk_size, worst_tokens=k)
    torch.testing.assert_close(worst, reference_worst(logits, labels, spans, k), equal_nan=True)
    assert torch.isnan(worst[1])  # a one-token sample has nothing scored
    # The sums are those given without worst_tokens.
    torch.testing.assert_close((sums, counts), per_sample_loss(logits, labels, index, len(spans), chunk_size=chunk_size))


def test_worst_tokens_stay_inside_their_packed_sample():
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(1, 12, 9, generator=gen)
    labels = torch.randint(0, 9, (1, 12), generator=gen)
    index = sample_index_for_packed(torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]]))
    _, _, worst = per_sample_loss(logits, labels, index, 3, worst_tokens=2)
    torch.testing.assert_close(worst, reference_worst(logits, labels, [(0, 0, 4), (0, 4, 7), (0, 7, 12)], 2))


def test_tiled_head_gives_the_same_worst_tokens_and_an_unchanged_gradient():
    gen = torch.Generator().manual_seed(9)
    _, labels, spans = random_padded(gen)
    hidden = torch.randn(*labels.shape, 6, generator=gen, requires_grad=True)
    weight = torch.randn(13, 6, generator=gen)
    index = sample_index_for_padded(*labels.shape)
    sums, counts, worst = tiled_head_loss(hidden, weight, None, labels, index, 3, chunk_size=4, worst_tokens=3)
    assert not worst.requires_grad  # a recorded statistic, never part of the training loss
    torch.testing.assert_close(worst, reference_worst((hidden @ weight.T).detach(), labels, spans, 3), equal_nan=True)
    sums.sum().backward()
    with_worst = hidden.grad.clone()
    hidden.grad = None
    tiled_head_loss(hidden, weight, None, labels, index, 3, chunk_size=4)[0].sum().backward()
    torch.testing.assert_close(with_worst, hidden.grad, rtol=0, atol=0)


def reference_focus(logits, labels, spans, focus):
    """Independent per-sample mean over the scored tokens whose target is flagged in ``focus``."""
    means = []
    for row, start, stop in spans:
        scores, targets = logits[row, start : stop - 1].float(), labels[row, start + 1 : stop]
        keep = (targets != IGNORE_INDEX) & (focus[row, start + 1 : stop] != 0)
        losses = F.cross_entropy(scores[keep], targets[keep], reduction="none")
        means.append(losses.mean() if keep.any() else torch.tensor(float("nan")))
    return torch.stack(means)


@pytest.mark.parametrize("chunk_size", [2, 1000])
def test_focus_means_equal_an_independent_per_sample_loop(chunk_size):
    gen = torch.Generator().manual_seed(11)
    logits, labels, spans = random_padded(gen, lengths=(7, 3, 10, 5))
    focus = (torch.rand(labels.shape, generator=gen) < 0.5).long()
    focus[3] = 0  # a sample with no focus token records NaN
    index = sample_index_for_padded(*labels.shape)
    sums, counts, focused = per_sample_loss(logits, labels, index, len(spans), chunk_size=chunk_size, token_focus=focus)
    torch.testing.assert_close(focused, reference_focus(logits, labels, spans, focus), equal_nan=True)
    assert torch.isnan(focused[3]) and not torch.isnan(focused[0])
    torch.testing.assert_close((sums, counts), per_sample_loss(logits, labels, index, len(spans), chunk_size=chunk_size))


def test_focus_stays_inside_its_packed_sample_and_the_tiled_head_agrees():
    gen = torch.Generator().manual_seed(12)
    labels = torch.randint(0, 9, (1, 12), generator=gen)
    focus = torch.tensor([[0, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 1]])
    index = sample_index_for_packed(torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]]))
    hidden = torch.randn(1, 12, 6, generator=gen, requires_grad=True)
    weight = torch.randn(9, 6, generator=gen)
    spans = [(0, 0, 4), (0, 4, 7), (0, 7, 12)]
    # The packed sample's first token (focus 1 at position 4) is never a target: the boundary is not scored.
    expected = reference_focus((hidden @ weight.T).detach(), labels, spans, focus)
    _, _, from_logits = per_sample_loss((hidden @ weight.T).detach(), labels, index, 3, token_focus=focus)
    _, _, tiled = tiled_head_loss(hidden, weight, None, labels, index, 3, chunk_size=4, token_focus=focus)
    torch.testing.assert_close(from_logits, expected)
    torch.testing.assert_close(tiled, expected)
    assert not tiled.requires_grad


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"token_focus": torch.ones(3, 5, dtype=torch.long), "worst_tokens": 2}, "got both; expected one statistic"),
        ({"token_focus": torch.ones(3, 4, dtype=torch.long)}, r"token_focus: got shape \(3, 4\); expected \(3, 10\)"),
    ],
)
def test_bad_focus_is_an_error(kwargs, match):
    logits, labels, spans = random_padded(torch.Generator().manual_seed(13))
    if "worst_tokens" in kwargs:
        kwargs["token_focus"] = torch.ones_like(labels)
    with pytest.raises(ValueError, match=match):
        per_sample_loss(logits, labels, sample_index_for_padded(*labels.shape), len(spans), **kwargs)


# --------------------------------------------------------------------------- real models


def vl_features(processor, n=4, seed=0):
    from hardmine.data.encode import dense_caption_messages, encode_chat

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = [(112, 112), (56, 112), (84, 84), (112, 84)][i % 4]
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        objects = [{"desc": "red circle", "bbox_2d": rng.integers(0, 1001, 4).tolist()} for _ in range(i % 3 + 1)]
        out.append(encode_chat(processor, dense_caption_messages(json.dumps(objects)), [img]) | {"sample_id": i})
    return out


def text_features(tokenizer, n=4):
    from hardmine.data.encode import encode_chat

    words = ["red circle", "blue square", "three green stars", "a small yellow triangle next to a line"]
    return [
        encode_chat(tokenizer, [{"role": "user", "content": f"Reverse: {w}"}, {"role": "assistant", "content": w[::-1]}])
        | {"sample_id": i}
        for i, w in enumerate(words[:n])
    ]


def forward(model, batch):
    from hardmine.data.collate import split_metadata

    model_inputs, meta = split_metadata(batch)
    return model(**model_inputs), meta["sample_index"]


def batches(task, model, processor, n=4):
    from hardmine.data.collate import PackedCollator, PaddedCollator

    tokenizer = getattr(processor, "tokenizer", processor)
    features = vl_features(processor, n) if task == "vl" else text_features(processor, n)
    return PaddedCollator(tokenizer.pad_token_id)(features), PackedCollator(model=model)(features), len(features)


@pytest.mark.integration
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("task", ["vl", "text"])
def test_token_weighted_mean_equals_the_models_own_loss(load_builtin, task):
    model, processor = load_builtin(task)
    padded, packed, n = batches(task, model, processor)
    for batch in (padded, packed):
        with torch.no_grad():
            out, index = forward(model, batch)
        sums, counts = per_sample_loss(out.logits, batch["labels"], index, n)
        torch.testing.assert_close(sums.sum() / counts.sum(), out.loss, rtol=0, atol=1e-5)
        assert bool((counts > 0).all())


@pytest.mark.integration
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("task", ["vl", "text"])
def test_packed_and_padded_give_the_same_per_sample_losses(load_builtin, task):
    model, processor = load_builtin(task)
    padded, packed, n = batches(task, model, processor)
    with torch.no_grad():
        out_pad, index_pad = forward(model, padded)
        out_pack, index_pack = forward(model, packed)
        # The same packed row with an all-ones attention mask: samples attend to
        # each other. It must come out different, or this test could not tell.
        leaky, _ = forward(model, packed | {"attention_mask": torch.ones_like(packed["input_ids"])})
    sums_pad, counts_pad = per_sample_loss(out_pad.logits, padded["labels"], index_pad, n)
    sums_pack, counts_pack = per_sample_loss(out_pack.logits, packed["labels"], index_pack, n)
    assert torch.equal(counts_pad, counts_pack)
    torch.testing.assert_close(sums_pack / counts_pack, sums_pad / counts_pad, rtol=0, atol=1e-5)
    sums_leaky, _ = per_sample_loss(leaky.logits, packed["labels"], index_pack, n)
    assert float(((sums_leaky - sums_pad) / counts_pad).abs().max()) > 1e-4


@pytest.mark.integration
@pytest.mark.usefixtures("one_thread")
def test_shift_matters_on_a_model_that_has_learned_something(load_builtin):
    # A random model scores every token about ln(vocab), shifted or not; after a
    # few steps on one batch it predicts the next token, and the two part clearly.
    model, processor = load_builtin("vl")
    padded, _, n = batches("vl", model, processor, n=2)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(20):
        out, index = forward(model, padded)
        sums, counts = per_sample_loss(out.logits, padded["labels"], index, n)
        (sums.sum() / counts.sum()).backward()  # the per-sample values train the model
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        out, index = forward(model, padded)
    sums, counts = per_sample_loss(out.logits, padded["labels"], index, n)
    right = sums / counts
    wrong = unshifted(out.logits, padded["labels"], index, n) / counts
    torch.testing.assert_close(sums.sum() / counts.sum(), out.loss, rtol=0, atol=1e-5)
    # Measured: right ~2.0, wrong ~3.7 nats per token after 20 steps.
    assert float((wrong - right).min()) > 1.0, (right, wrong)


def tiny_checkpoint(family, out_dir):
    """A tiny random Qwen2.5-VL or Qwen3-VL checkpoint with the built-in tokenizer."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
    )

    from hardmine.models import builtin as B
    from hardmine.models import processor as P

    tok = B.build_tokenizer()
    rope = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": B.MROPE_SECTION}
    text = B._text_kwargs(tok) | {"rope_parameters": rope}
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=B.TEXT_HIDDEN)
    ids = {f"{k}_token_id": tok.convert_tokens_to_ids(t) for k, t in
           (("image", B.IMAGE_PAD), ("video", B.VIDEO_PAD), ("vision_start", B.VISION_START), ("vision_end", B.VISION_END))}  # fmt: skip
    if family == "qwen2_5_vl":
        vision |= dict(fullatt_block_indexes=[1], window_size=56)
        cls, config, patch = Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids), 14
    else:  # Qwen3-VL: patch 16, explicit head_dim, deepstack
        vision |= dict(deepstack_visual_indexes=[1], num_position_embeddings=64, patch_size=16)
        text |= {"head_dim": B.TEXT_HIDDEN // B.TEXT_HEADS}
        cls, config, patch = Qwen3VLForConditionalGeneration, Qwen3VLConfig(text_config=text, vision_config=vision, **ids), 16
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cls(config).save_pretrained(out_dir)
    image_processor = B.Qwen2VLImageProcessorPil(size={"shortest_edge": 32 * 32, "longest_edge": (8 * patch) ** 2}, patch_size=patch)
    P.ImageOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=tok, chat_template=B.CHAT_TEMPLATE).save_pretrained(out_dir)


@pytest.mark.integration
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_other_qwen_vl_families_pack_like_they_pad(family, tmp_path):
    from hardmine.models import load_model_and_processor

    tiny_checkpoint(family, tmp_path)
    model, processor, task = load_model_and_processor(str(tmp_path))
    assert task == "vl" and model.config.model_type == family
    model.eval()
    padded, packed, n = batches("vl", model, processor)
    with torch.no_grad():
        out_pad, index_pad = forward(model, padded)
        out_pack, index_pack = forward(model, packed)
    sums_pad, counts_pad = per_sample_loss(out_pad.logits, padded["labels"], index_pad, n)
    sums_pack, counts_pack = per_sample_loss(out_pack.logits, packed["labels"], index_pack, n)
    torch.testing.assert_close(sums_pack / counts_pack, sums_pad / counts_pad, rtol=0, atol=1e-5)
    torch.testing.assert_close(sums_pad.sum() / counts_pad.sum(), out_pad.loss, rtol=0, atol=1e-5)


@pytest.mark.integration
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("task", ["vl", "text"])
@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("checkpoint", [None, True])  # None: by size (no recompute for a tiny vocabulary)
def test_tiled_head_loss_equals_the_models_own_loss_and_gradients(load_builtin, task, layout, checkpoint):
    from hardmine.data.collate import split_metadata
    from hardmine.train.loss import tiled_head_loss

    model, processor = load_builtin(task)
    model.train()
    padded, packed, n = batches(task, model, processor)
    batch = padded if layout == "padded" else packed
    inputs, meta = split_metadata(batch)

    def grads():
        out = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return out

    stock = model(**inputs).loss
    stock.backward()
    stock_grads = grads()

    labels = inputs["labels"]
    rest = {k: v for k, v in inputs.items() if k != "labels"}
    out = model(**rest, output_hidden_states=True, logits_to_keep=torch.empty(0, dtype=torch.long))
    assert out.logits.numel() == 0  # no logits were built
    index = meta["sample_index"] if layout == "packed" else torch.arange(n)[:, None].expand_as(labels)
    head = model.get_output_embeddings()
    sums, counts = tiled_head_loss(
        out.hidden_states[-1], head.weight, head.bias, labels, index, n, chunk_size=7, checkpoint=checkpoint
    )
    tiled = sums.sum() / counts.sum()
    tiled.backward()
    tiled_grads = grads()

    tiled, stock = tiled.detach(), stock.detach()
    assert abs(tiled.item() - stock.item()) <= 1e-6 * abs(stock.item())
    assert tiled_grads.keys() == stock_grads.keys()
    for name, g in stock_grads.items():
        torch.testing.assert_close(tiled_grads[name], g, rtol=1e-5, atol=1e-6, msg=name)

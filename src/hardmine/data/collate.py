"""Collators that batch encoded samples and carry their identity along.

Each feature is a dict from :func:`hardmine.data.encode.encode_chat` (1-D
``input_ids``, ``labels``, ``attention_mask``, optional ``mm_token_type_ids``,
``pixel_values``, ``image_grid_thw``) plus optional metadata: ``sample_id`` (int;
it encodes the dataset and ``base_idx``) and ``position`` (int, the place in the
epoch's order). A batch carries ``sample_id`` and ``position`` as int64
tensors, and ``sample_index``: for every
token, the index of its sample in the batch (-1 on padding), which is what
:func:`hardmine.train.loss.per_sample_loss` groups token losses by.

The model must never see the keys in :data:`METADATA_KEYS` (nor ``loss_focus``,
which marks the tokens ``sample_loss: fields`` records): pop them before the
forward (Llama-style ``forward(**kwargs)`` would swallow them without an error).

Two layouts:

* :class:`PaddedCollator`: ``(B, L)`` rows, right-padded, with an attention mask.
* :class:`PackedCollator`: padding-free; all samples concatenated into one row of
  shape ``(1, T)``. Pass it to the model as ``model(input_ids=..., labels=...,
  position_ids=..., [pixel_values=..., image_grid_thw=..., mm_token_type_ids=...])``
  with **no** ``attention_mask`` and with ``use_cache=False`` in the model's config
  *and* its ``text_config`` (``load_model_and_processor`` does both). transformers
  then derives a block-diagonal causal mask from the position ids, which restart at
  0 for every sample; with an attention mask, or with a cache, it would not, and
  samples would attend to each other silently. For a VL model ``position_ids`` has
  shape ``(4, 1, T)``: row 0 the text positions (for that mask), rows 1-3 each
  sample's own 3D rope index from the model's ``get_rope_index``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .encode import IGNORE_INDEX

#: Batch keys that describe samples rather than feed the model.
#: ``sample_id`` names the sample for life (dataset and base_idx are encoded in it);
#: ``position`` is its place in the epoch's order; ``sample_index`` maps tokens to samples.
METADATA_KEYS = ("sample_id", "position", "sample_index")
#: A per-token batch key that mining reads and the model must not see: 1 on the tokens whose
#: loss ``sample_loss: fields`` records. The dataset makes it (a library user's dataset may too).
LOSS_FOCUS_KEY = "loss_focus"

_INT_METADATA = ("sample_id", "position")
_TOKEN_KEYS = ("input_ids", "labels", "attention_mask", "mm_token_type_ids")
_VISION_KEYS = ("pixel_values", "image_grid_thw")
_KNOWN_KEYS = frozenset(_TOKEN_KEYS + _VISION_KEYS + _INT_METADATA + (LOSS_FOCUS_KEY,))

#: ``rope_index(input_ids (1, L), mm_token_type_ids (1, L), image_grid_thw (k, 3) or None)``
#: -> position ids ``(3, 1, L)`` (or a tuple whose first item is that), as the
#: ``get_rope_index`` method of Qwen-VL models computes them.
RopeIndexFn = Callable[..., Any]


# --------------------------------------------------------------------------- checks


def _check_features(features: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    features = list(features)
    if not features:
        raise ValueError("features: got an empty list; expected at least one sample")
    for i, feature in enumerate(features):
        if not isinstance(feature, dict):
            raise ValueError(f"features[{i}]: got {type(feature).__name__}; expected a dict")
        unknown = sorted(set(feature) - _KNOWN_KEYS)
        if unknown:
            raise ValueError(
                f"features[{i}]: unknown key(s) {unknown}; expected only {sorted(_KNOWN_KEYS)} "
                "(a collator never drops data silently)"
            )
        for key in ("input_ids", "labels"):
            if key not in feature:
                raise ValueError(f"features[{i}]: missing {key!r}")
        length = _as_1d(feature, "input_ids", i).numel()
        if length == 0:
            raise ValueError(f"features[{i}]['input_ids']: empty; expected at least one token")
        for key in ("labels", "attention_mask", "mm_token_type_ids", LOSS_FOCUS_KEY):
            if key in feature and _as_1d(feature, key, i).numel() != length:
                raise ValueError(
                    f"features[{i}][{key!r}]: length {_as_1d(feature, key, i).numel()}; "
                    f"expected {length} (the length of input_ids)"
                )
        _check_vision(feature, i)
    for key in _INT_METADATA:
        have = [key in f for f in features]
        if any(have) and not all(have):
            missing = [i for i, h in enumerate(have) if not h]
            raise ValueError(f"features{missing}: missing {key!r}, which other samples of the batch carry")
    return features


def _as_1d(feature: dict[str, Any], key: str, i: int) -> torch.Tensor:
    value = torch.as_tensor(feature[key])
    if value.ndim != 1:
        raise ValueError(f"features[{i}][{key!r}]: got shape {tuple(value.shape)}; expected one dimension")
    return value


def _check_vision(feature: dict[str, Any], i: int) -> None:
    has_pixels, has_grid = "pixel_values" in feature, "image_grid_thw" in feature
    if has_pixels != has_grid:
        raise ValueError(f"features[{i}]: pixel_values and image_grid_thw must come together; got only one")
    if not has_pixels:
        return
    grid = torch.as_tensor(feature["image_grid_thw"])
    if grid.ndim != 2 or grid.shape[1] != 3:
        raise ValueError(f"features[{i}]['image_grid_thw']: got shape {tuple(grid.shape)}; expected (images, 3)")
    patches = int(grid.prod(dim=1).sum())
    rows = int(torch.as_tensor(feature["pixel_values"]).shape[0])
    if rows != patches:
        raise ValueError(
            f"features[{i}]['pixel_values']: {rows} patch rows; expected {patches} (from image_grid_thw)"
        )


# --------------------------------------------------------------------------- shared parts


def collate_metadata(features: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``sample_id`` and ``position`` as int64 tensors, when present."""
    return {
        key: torch.tensor([int(f[key]) for f in features], dtype=torch.int64) for key in _INT_METADATA if key in features[0]
    }


def _collate_vision(features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    # Images of all samples go to the vision tower as one list of patches, in sample
    # order; the model places them on its image tokens in the same order.
    with_images = [f for f in features if "pixel_values" in f]
    if not with_images:
        return {}
    return {
        "pixel_values": torch.cat([torch.as_tensor(f["pixel_values"]) for f in with_images], dim=0),
        "image_grid_thw": torch.cat([torch.as_tensor(f["image_grid_thw"]) for f in with_images], dim=0).long(),
    }


def _tokens(feature: dict[str, Any], key: str, fill: int) -> torch.Tensor:
    if key in feature:
        return torch.as_tensor(feature[key]).long()
    return torch.full((torch.as_tensor(feature["input_ids"]).numel(),), fill, dtype=torch.long)


def split_metadata(batch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model inputs, metadata)`` of a collated batch (metadata: :data:`METADATA_KEYS` and
    :data:`LOSS_FOCUS_KEY`)."""
    kept_out = (*METADATA_KEYS, LOSS_FOCUS_KEY)
    model_inputs = {k: v for k, v in batch.items() if k not in kept_out}
    metadata = {k: batch[k] for k in kept_out if k in batch}
    return model_inputs, metadata


# --------------------------------------------------------------------------- padded


class PaddedCollator:
    """Right-padded ``(B, L)`` batches with sample metadata.

    ``input_ids`` are padded with ``pad_token_id``, ``labels`` with -100,
    ``attention_mask`` with 0, ``mm_token_type_ids`` with 0 (text); ``pixel_values``
    and ``image_grid_thw`` of all samples are concatenated in sample order.
    ``sample_index[b, t]`` is ``b`` on real tokens and -1 on padding.
    """

    def __init__(self, pad_token_id: int, *, pad_to_multiple_of: int | None = None):
        if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int) or pad_token_id < 0:
            raise ValueError(f"pad_token_id: got {pad_token_id!r}; expected an integer >= 0")
        if pad_to_multiple_of is not None and (
            isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1
        ):
            raise ValueError(f"pad_to_multiple_of: got {pad_to_multiple_of!r}; expected an integer >= 1 or None")
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        features = _check_features(features)
        lengths = [torch.as_tensor(f["input_ids"]).numel() for f in features]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, Any] = {
            "input_ids": _pad([_tokens(f, "input_ids", 0) for f in features], width, self.pad_token_id),
            "labels": _pad([_tokens(f, "labels", 0) for f in features], width, IGNORE_INDEX),
            "attention_mask": _pad([_tokens(f, "attention_mask", 1) for f in features], width, 0),
        }
        if any("mm_token_type_ids" in f for f in features):
            batch["mm_token_type_ids"] = _pad([_tokens(f, "mm_token_type_ids", 0) for f in features], width, 0)
        if any(LOSS_FOCUS_KEY in f for f in features):
            batch[LOSS_FOCUS_KEY] = _pad([_tokens(f, LOSS_FOCUS_KEY, 0) for f in features], width, 0)
        batch.update(_collate_vision(features))
        rows = [torch.full((n,), b, dtype=torch.long) for b, n in enumerate(lengths)]
        batch["sample_index"] = _pad(rows, width, -1)
        batch.update(collate_metadata(features))
        return batch


def _pad(rows: list[torch.Tensor], width: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, : row.numel()] = row
    return out


# --------------------------------------------------------------------------- packed


def rope_index_from_model(model) -> RopeIndexFn | None:
    """The model's own ``get_rope_index`` (Qwen-VL family), or None for a text model.

    Looked up on the model and on its inner ``model`` (``...ForConditionalGeneration``
    keeps it on the inner one). The bound method holds the model: fine for forked
    DataLoader workers (nothing is copied), but spawned workers pickle it.
    """
    for owner in (model, getattr(model, "model", None)):
        fn = getattr(owner, "get_rope_index", None)
        if callable(fn):
            return fn
    return None


class PackedCollator:
    """Padding-free batches: every sample of the batch in one row of shape ``(1, T)``.

    The batch holds ``input_ids``, ``labels``, ``position_ids`` (restarting at 0 for
    each sample; ``(4, 1, T)`` for a VL model, ``(1, T)`` otherwise),
    ``sample_index`` ``(1, T)``, ``mm_token_type_ids`` and the images when present,
    and the metadata; no ``attention_mask`` (see the module docstring for how to
    call the model). The first label of every sample is set to -100: the model's
    own loss shifts labels along the whole row, so the last token of one sample
    would otherwise be trained to predict the first token of the next.

    ``model`` (a Qwen-VL model) supplies its ``get_rope_index``; or pass
    ``rope_index`` directly. Without either, samples with images are refused, since
    their rope index cannot be built.
    """

    def __init__(self, model=None, *, rope_index: RopeIndexFn | None = None):
        if model is not None and rope_index is not None:
            raise ValueError("PackedCollator: got both model and rope_index; expected one of them")
        if rope_index is not None and not callable(rope_index):
            raise ValueError(f"rope_index: got {type(rope_index).__name__}; expected a callable")
        self.rope_index = rope_index if rope_index is not None else (
            rope_index_from_model(model) if model is not None else None
        )

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        features = _check_features(features)
        for i, f in enumerate(features):
            if "attention_mask" in f and not bool(torch.as_tensor(f["attention_mask"]).all()):
                raise ValueError(
                    f"features[{i}]['attention_mask']: has zeros (padding inside a sample); "
                    "expected unpadded samples for packing"
                )
        has_images = any("pixel_values" in f for f in features)
        if has_images and self.rope_index is None:
            raise ValueError(
                "PackedCollator: samples carry images but no rope index function is set; "
                "expected PackedCollator(model=<the Qwen-VL model>) or rope_index=..."
            )
        input_ids = [_tokens(f, "input_ids", 0) for f in features]
        labels = []
        for f in features:
            row = _tokens(f, "labels", 0).clone()
            row[0] = IGNORE_INDEX
            labels.append(row)
        text_positions = [torch.arange(ids.numel(), dtype=torch.long) for ids in input_ids]
        batch: dict[str, Any] = {
            "input_ids": torch.cat(input_ids)[None],
            "labels": torch.cat(labels)[None],
        }
        has_mm = any("mm_token_type_ids" in f for f in features)
        if has_mm:
            batch["mm_token_type_ids"] = torch.cat([_tokens(f, "mm_token_type_ids", 0) for f in features])[None]
        if any(LOSS_FOCUS_KEY in f for f in features):
            batch[LOSS_FOCUS_KEY] = torch.cat([_tokens(f, LOSS_FOCUS_KEY, 0) for f in features])[None]
        if self.rope_index is not None:
            rope = [self._sample_rope(f) for f in features]
            batch["position_ids"] = torch.cat(
                [torch.cat(text_positions)[None, None], torch.cat(rope, dim=-1)], dim=0
            )
        else:
            batch["position_ids"] = torch.cat(text_positions)[None]
        batch.update(_collate_vision(features))
        batch["sample_index"] = torch.cat(
            [torch.full((ids.numel(),), i, dtype=torch.long) for i, ids in enumerate(input_ids)]
        )[None]
        batch.update(collate_metadata(features))
        return batch

    def _sample_rope(self, feature: dict[str, Any]) -> torch.Tensor:
        # Each sample's rope index on its own, exactly as the model computes it for
        # an unpadded row of that sample alone: positions restart at 0 per sample.
        if "image_grid_thw" in feature and "mm_token_type_ids" not in feature:
            raise ValueError(
                "features: a sample with images has no mm_token_type_ids; expected the processor's "
                "mm_token_type_ids (they mark the image tokens for the 3D rope index)"
            )
        ids = _tokens(feature, "input_ids", 0)[None]
        mm = _tokens(feature, "mm_token_type_ids", 0)[None]
        grid = torch.as_tensor(feature["image_grid_thw"]).long() if "image_grid_thw" in feature else None
        result = self.rope_index(ids, mm_token_type_ids=mm, image_grid_thw=grid)
        positions = result[0] if isinstance(result, tuple) else result
        if positions.shape != (3, 1, ids.shape[1]):
            raise ValueError(
                f"rope_index: returned shape {tuple(positions.shape)}; expected (3, 1, {ids.shape[1]})"
            )
        return positions.long()

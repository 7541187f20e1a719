"""Datasets: static pools of records, turned into model features on demand.

A dataset holds no epoch state. The training sampler yields
:class:`SampleRef` objects ``(pool, base_idx, epoch, position)``; everything
that varies per epoch (which record, its augmentation seed) travels inside the
reference, so DataLoader workers, persistent or not, never hold stale state.
Augmentation is seeded from ``(seed, epoch, position)`` with ``position`` the
place in the epoch's global order: the same on any number of ranks, and a
resumed run draws what the uninterrupted run drew.

Every item carries ``sample_id`` (dataset and ``base_idx`` in one int) for the
collator; the trainer removes them before the model's forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from PIL import Image
from torch.utils.data import Dataset

from ..core import Pool, sample_id
from ..core.errors import UserInputError
from .augment import AugmentationConfig, augment, augmentation_rng
from .collate import LOSS_FOCUS_KEY
from .encode import answer_token_mask, dense_caption_messages, encode_chat
from .records import ChatRecord, DenseCaptionRecord
from .refs import SampleRef
from .render import field_value_spans, render_objects


class SampleError(UserInputError):
    """A record that parsed but cannot become a training sample (too long, image mismatch)."""


@dataclass(frozen=True)
class RecordPool:
    """The records of one dataset, in file order (``base_idx`` = index here)."""

    name: str
    records: tuple
    ratio: float | None = None  # None: the target
    augment: bool = True
    path: str | None = None  # the JSONL file the records came from
    lines: tuple[int, ...] = ()  # 1-based line of each record in ``path`` (empty: unknown)

    def where(self, base_idx: int) -> str:
        """``file:line`` of a record (for messages), or ``name[base_idx]`` when unknown."""
        if self.path is not None and len(self.lines) == len(self.records):
            return f"{self.path}:{self.lines[base_idx]}"
        return f"{self.name}[{base_idx}]"

    def as_pool(self) -> Pool:
        return Pool(self.name, len(self.records), self.ratio)


class CaptionDataset(Dataset):
    """Features for :class:`SampleRef` (training) or a flat int index (evaluation)."""

    def __init__(
        self,
        pools: Sequence[RecordPool],
        processor,
        *,
        seed: int,
        augmentation: AugmentationConfig | None = None,
        max_length: int | None = None,
        loss_fields: Sequence[str] | None = None,
    ):
        self.pools = tuple(pools)
        self.processor = processor
        self.seed = int(seed)
        self.augmentation = augmentation
        self.max_length = max_length
        # sample_loss fields: each training sample also says which of its tokens
        # are those fields' values (``loss_focus``), for the recorded statistic.
        self.loss_fields = tuple(loss_fields) if loss_fields else None
        self._offsets = [0]
        for p in self.pools:
            self._offsets.append(self._offsets[-1] + len(p.records))

    def __len__(self) -> int:
        return self._offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """Flat index -> (pool, base_idx)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        for pool, (lo, hi) in enumerate(zip(self._offsets[:-1], self._offsets[1:])):
            if index < hi:
                return pool, index - lo
        raise IndexError(index)  # unreachable

    def __getitem__(self, ref):
        if isinstance(ref, SampleRef):
            pool, base, epoch, position, train = ref.pool, ref.base_idx, ref.epoch, ref.position, True
        else:
            (pool, base), epoch, position, train = self.locate(int(ref)), 0, int(ref), False
        source = self.pools[pool]
        record = source.records[base]
        use_aug = train and source.augment and self.augmentation is not None and self.augmentation.enabled
        try:
            features = self.encode(record, augmentation_rng(self.seed, epoch, position) if use_aug else None)
        except ValueError as e:
            # Name the sample: without it an error found epochs into a run points nowhere.
            raise SampleError(f"{source.where(base)}: {e}") from e
        features["sample_id"] = sample_id(source.name, base)
        features["position"] = position  # one occurrence per position: lets ranks drop sharding duplicates
        return features

    def encode(self, record, rng) -> dict:
        if isinstance(record, DenseCaptionRecord):
            with Image.open(record.image) as im:
                image = im.convert("RGB")
            objects, width, height = record.objects, record.width, record.height
            if image.size != (width, height):
                raise ValueError(f"{record.image}: image is {image.size[0]}x{image.size[1]}, record says {width}x{height}")
            if rng is not None:
                image, objects, width, height = augment(image, objects, self.augmentation, rng)
            target = render_objects(objects, width, height)
            features = encode_chat(self.processor, dense_caption_messages(target), [image], max_length=self.max_length)
            if self.loss_fields:
                spans = field_value_spans(target, self.loss_fields)
                features[LOSS_FOCUS_KEY] = answer_token_mask(self.processor, target, spans, features["labels"])
            return features
        if isinstance(record, ChatRecord):
            if self.loss_fields:
                raise ValueError(
                    "custom.hard_sample_mining.sample_loss.statistic 'fields' needs dense-caption records "
                    "(objects with desc and geometry); this is a chat record, whose answer hardmine does not render"
                )
            images = []
            for path in record.images:
                with Image.open(path) as im:
                    images.append(im.convert("RGB"))
            return encode_chat(self.processor, list(record.messages), images or None, max_length=self.max_length)
        raise TypeError(f"unsupported record type {type(record).__name__}")

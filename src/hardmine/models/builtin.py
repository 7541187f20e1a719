"""Built-in tiny models that need no download: built once into a cache, then ordinary checkpoints.

``builtin:tiny-qwen2-vl`` (a Qwen2-VL) and ``builtin:tiny-text`` (a Qwen2 causal LM)
are randomly initialised from a config, with a byte-level BPE tokenizer trained here
on a small built-in corpus. :func:`materialize_builtin` writes one to a cache folder
with ``save_pretrained``; from then on it is an ordinary checkpoint folder that
``from_pretrained`` loads offline (:mod:`hardmine.models.loading`). They exist so that
the demo and the tests train a real Hugging Face model end to end on a CPU in
seconds; they learn, but know nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from .processor import (
    CHAT_TEMPLATE,
    ENDOFTEXT,
    IM_END,
    IM_START,
    IMAGE_PAD,
    SPECIAL_TOKENS,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    ImageOnlyQwen2VLProcessor,
)

logger = logging.getLogger(__name__)

Task = Literal["vl", "text"]


#: Prefix that marks a built-in model name in ``model.model``.
BUILTIN_PREFIX = "builtin:"
#: Bumped whenever anything below changes what a build produces, so that an old
#: cache folder is never mistaken for the new model.
BUILTIN_VERSION = "v1"
#: The root of the cache when ``HARDMINE_CACHE`` is not set.
DEFAULT_CACHE_ROOT = Path("~/.cache/hardmine")
#: Marker written last into a built folder (inside the temporary folder, before
#: the rename that publishes it), describing what was built.
BUILD_INFO_FILE = "hardmine_builtin.json"


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class BuiltinSpec:
    """What one built-in model is: its task and how it is built."""

    name: str
    task: Task
    description: str


BUILTINS: dict[str, BuiltinSpec] = {
    "tiny-qwen2-vl": BuiltinSpec(
        "tiny-qwen2-vl",
        "vl",
        "Qwen2-VL, text 128 x 2 layers, vision 64 x 2 layers, images up to 112x112 (16 image tokens)",
    ),
    "tiny-text": BuiltinSpec("tiny-text", "text", "Qwen2 causal LM, 128 x 2 layers, same tokenizer"),
}

#: Seed of the random initialisation (inside a forked RNG; global state untouched).
WEIGHT_SEED = 1234
#: Seed of the corpus the tokenizer is trained on (a private random.Random).
CORPUS_SEED = 0
#: Target vocabulary of the BPE trainer (bytes + merges + special tokens).
TOKENIZER_VOCAB_SIZE = 1024
#: Image size bounds in pixels: at most 112x112 = 8x8 patches of 14 = 16 tokens
#: after the 2x2 merge; at least 56x56.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 112 * 112
#: Text model shape shared by both built-ins.
TEXT_HIDDEN = 128
TEXT_LAYERS = 2
TEXT_HEADS = 4
TEXT_KV_HEADS = 2
TEXT_INTERMEDIATE = 256
#: Vision tower shape.
VISION_EMBED = 64
VISION_LAYERS = 2
VISION_HEADS = 4
#: Multimodal rope sections (temporal, height, width) in rotary pairs; they must
#: sum to head_dim / 2 = 128 / 4 / 2 = 16, or Qwen2-VL raises.
MROPE_SECTION = [4, 6, 6]


def parse_builtin_name(spec: str) -> str | None:
    """``"builtin:tiny-text"`` -> ``"tiny-text"``; any other string -> None."""
    if not spec.startswith(BUILTIN_PREFIX):
        return None
    return spec[len(BUILTIN_PREFIX) :]


def builtin_spec(name: str) -> BuiltinSpec:
    """The spec of a built-in by bare name (``tiny-text``) or prefixed (``builtin:tiny-text``)."""
    bare = parse_builtin_name(name) or name
    if bare not in BUILTINS:
        known = ", ".join(BUILTIN_PREFIX + k for k in sorted(BUILTINS))
        raise ValueError(f"model: unknown built-in model {name!r}; expected one of {known}")
    return BUILTINS[bare]


# --------------------------------------------------------------------------- tokenizer

_SHAPES = (
    "circle", "square", "rectangle", "triangle", "ellipse", "oval", "star", "hexagon", "pentagon",
    "octagon", "diamond", "rhombus", "polygon", "line", "arrow", "cross", "ring", "heart", "box",
    "shape", "object", "blob", "stripe", "dot", "curve", "segment", "path", "digit", "letter",
)  # fmt: skip
_COLOURS = (
    "red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray",
    "grey", "cyan", "magenta", "teal", "navy", "olive", "maroon", "gold", "silver", "violet", "lime",
)  # fmt: skip
_ADJECTIVES = (
    "small", "large", "big", "tiny", "medium", "thin", "thick", "dark", "light", "bright", "pale",
    "filled", "outlined", "striped", "dotted", "solid", "hollow", "rotated", "tilted", "long", "short",
    "left", "right", "top", "bottom", "center", "upper", "lower", "middle", "corner", "edge",
)  # fmt: skip
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_JSON_KEYS = ("desc", "bbox_2d", "poly", "line", "objects", "summary", "label", "points", "width", "height")
_CHAT_LINES = (
    "You are a helpful assistant.",
    "Describe every object in the image as JSON.",
    "Describe every object in the image.",
    "List each object with its description and its coordinates normalised to 0-1000.",
    "Each object has a desc and exactly one of bbox_2d, poly or line.",
    "Give a short summary of the scene.",
    "The image shows several shapes on a plain background.",
    "There are no objects in this image.",
    "Hello! How can I help you today?",
    "Please answer the question in one sentence.",
    "What is in the picture? Where is it? How many are there?",
    "Reverse the string and answer with the result only.",
    "Sure, here is the answer you asked for.",
    "Thank you, that is correct. Let me know if you need anything else.",
    "The quick brown fox jumps over the lazy dog.",
    "Write the numbers from one to ten, then count the objects.",
    "user assistant system image text video",
)


def _json_object(rng: random.Random) -> dict[str, Any]:
    desc = " ".join(
        w
        for w in (
            rng.choice(_ADJECTIVES) if rng.random() < 0.5 else "",
            rng.choice(_COLOURS),
            rng.choice(_SHAPES),
        )
        if w
    )
    kind = rng.choice(("bbox_2d", "bbox_2d", "poly", "line"))
    n_points = {"bbox_2d": 2, "poly": rng.randint(3, 6), "line": rng.randint(2, 4)}[kind]
    coords = [rng.randint(0, 1000) for _ in range(2 * n_points)]
    return {"desc": desc, kind: coords}


def tokenizer_corpus(seed: int = CORPUS_SEED) -> list[str]:
    """The built-in training corpus: JSON object lists, numbers 0-1000, words and chat lines.

    Deterministic: built from a private ``random.Random(seed)``.
    """
    rng = random.Random(seed)
    lines: list[str] = []
    lines += [str(n) for n in range(1001)]
    lines += [" ".join(str(n) for n in range(start, start + 20)) for start in range(0, 1001, 20)]
    for _ in range(400):
        objects = [_json_object(rng) for _ in range(rng.randint(1, 4))]
        # Both JSON spellings: compact (what hardmine renders targets as) and spaced.
        lines.append(json.dumps(objects, separators=(",", ":")))
        lines.append(json.dumps(objects))
        lines.append(json.dumps({"objects": objects, "summary": f"{len(objects)} objects"}, separators=(",", ":")))
    for words in (_SHAPES, _COLOURS, _ADJECTIVES, _DIGIT_WORDS, _JSON_KEYS):
        lines += [" ".join(words), ", ".join(words)] * 5
    for _ in range(300):
        lines.append(
            f"a {rng.choice(_ADJECTIVES)} {rng.choice(_COLOURS)} {rng.choice(_SHAPES)} "
            f"next to {rng.choice(_DIGIT_WORDS)} {rng.choice(_COLOURS)} {rng.choice(_SHAPES)}s"
        )
    lines += list(_CHAT_LINES) * 10
    lines += ["{}[]():;,.-_\"'!?/\\ \n\t"] * 5
    return lines


def build_tokenizer(vocab_size: int = TOKENIZER_VOCAB_SIZE) -> Qwen2Tokenizer:
    """Train a byte-level BPE on :func:`tokenizer_corpus` and wrap it as a ``Qwen2Tokenizer``.

    The pre-tokenizer pipeline is Qwen2's own (its split regex, then byte level), so
    digits are single tokens and text splits the way a real Qwen tokenizer splits it;
    only the merges are learned here.
    """
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        # Every byte is in the vocabulary, so any text round-trips even if unseen.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(SPECIAL_TOKENS),
    )
    backend.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    model_state = json.loads(backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=model_state["vocab"],
        merges=merges,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        # The chat-only markers are special (kept whole, skipped when decoding with
        # skip_special_tokens) like in Qwen's own tokenizer.
        extra_special_tokens=[IM_START, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD],
        model_max_length=32768,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_image_processor() -> Qwen2VLImageProcessorPil:
    """Qwen2-VL's PIL image processor bounded to 56x56 .. 112x112 pixels."""
    return Qwen2VLImageProcessorPil(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS})


# --------------------------------------------------------------------------- models


def _padded_vocab(tokenizer) -> int:
    # A multiple of 64 keeps the embedding and lm_head matmuls on friendly shapes.
    return (len(tokenizer) + 63) // 64 * 64


def _text_kwargs(tokenizer) -> dict[str, Any]:
    return dict(
        vocab_size=_padded_vocab(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=TEXT_INTERMEDIATE,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=TEXT_HEADS,
        num_key_value_heads=TEXT_KV_HEADS,
        max_position_embeddings=4096,
        # See load_model_and_processor: a cache makes packed samples attend across
        # their boundaries, and training never needs one.
        use_cache=False,
        pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
    )


def build_vl_config(tokenizer) -> Qwen2VLConfig:
    text = _text_kwargs(tokenizer)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": MROPE_SECTION}
    return Qwen2VLConfig(
        text_config=text,
        vision_config=dict(
            depth=VISION_LAYERS,
            embed_dim=VISION_EMBED,
            num_heads=VISION_HEADS,
            mlp_ratio=2,
            # The merger projects vision features to the text model's width.
            hidden_size=TEXT_HIDDEN,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_PAD),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_PAD),
        vision_start_token_id=tokenizer.convert_tokens_to_ids(VISION_START),
        vision_end_token_id=tokenizer.convert_tokens_to_ids(VISION_END),
        pad_token_id=text["pad_token_id"],
        eos_token_id=text["eos_token_id"],
        use_cache=False,
    )


def build_text_config(tokenizer) -> Qwen2Config:
    return Qwen2Config(**_text_kwargs(tokenizer), rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def _init_model(model_cls, config, seed: int):
    # Deterministic initial weights without touching the caller's RNG: fork_rng
    # restores the global CPU generator on exit (devices=[]: the model is built on
    # the CPU, so no CUDA generator needs forking).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.eval()
    return model


def build_builtin(name: str, out_dir: Path) -> None:
    """Build the named built-in and ``save_pretrained`` everything into ``out_dir``."""
    _build_builtin(builtin_spec(name), Path(out_dir))


def _build_builtin(spec: BuiltinSpec, out_dir: Path) -> None:
    tokenizer = build_tokenizer()
    if spec.task == "vl":
        model = _init_model(Qwen2VLForConditionalGeneration, build_vl_config(tokenizer), WEIGHT_SEED)
        processor = ImageOnlyQwen2VLProcessor(
            image_processor=build_image_processor(), tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
        )
        processor.save_pretrained(out_dir)
    else:
        model = _init_model(Qwen2ForCausalLM, build_text_config(tokenizer), WEIGHT_SEED)
        tokenizer.save_pretrained(out_dir)
    # From the tokenizer: older transformers keep no pad_token_id on a VL model's top config.
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    if not (out_dir / "config.json").is_file():
        # transformers writes weights from rank 0 only once a process group exists.
        raise OSError(f"{out_dir}: the model was not written (build built-in models from one process per machine)")
    info = {"name": BUILTIN_PREFIX + spec.name, "version": BUILTIN_VERSION, "task": spec.task}
    info |= {"description": spec.description, "fingerprint": build_fingerprint(spec.name)}
    (out_dir / BUILD_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def build_fingerprint(name: str) -> str:
    """A digest of everything that decides what :func:`build_builtin` writes for ``name``.

    The data of the build: the corpus, the chat template, the special tokens, the
    shape constants, and the transformers version that writes the files (a build
    saved by one version is not trusted by another). A change to the build code
    itself must bump :data:`BUILTIN_VERSION`, which is part of the digest.
    """
    spec = builtin_spec(name)
    digest = hashlib.sha256()
    digest.update(json.dumps([BUILTIN_VERSION, spec.name, spec.task, CHAT_TEMPLATE, list(SPECIAL_TOKENS)]).encode())
    digest.update(transformers.__version__.encode())
    digest.update("\n".join(tokenizer_corpus()).encode())
    constants = (WEIGHT_SEED, CORPUS_SEED, TOKENIZER_VOCAB_SIZE, MIN_PIXELS, MAX_PIXELS, TEXT_HIDDEN, TEXT_LAYERS,
                 TEXT_HEADS, TEXT_KV_HEADS, TEXT_INTERMEDIATE, VISION_EMBED, VISION_LAYERS, VISION_HEADS, MROPE_SECTION)  # fmt: skip
    digest.update(repr(constants).encode())
    return digest.hexdigest()[:16]


def _build_info(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / BUILD_INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$HARDMINE_CACHE``, else ``~/.cache/hardmine``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("HARDMINE_CACHE")
    return Path(env).expanduser() if env else DEFAULT_CACHE_ROOT.expanduser()


def materialize_builtin(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the built-in ``name``, building it on first use.

    ``name`` is bare (``tiny-qwen2-vl``) or prefixed (``builtin:tiny-qwen2-vl``). The
    folder is ``<root>/builtin/<name>-<BUILTIN_VERSION>``, where root is
    ``cache_dir``, else ``$HARDMINE_CACHE``, else ``~/.cache/hardmine``. It is built in
    a temporary folder beside it and renamed into place, so a folder at that path is
    always complete, and processes racing to build it (ranks of one job) all end up
    with one complete copy. Building takes about a second and is deterministic. A
    cached build whose :func:`build_fingerprint` differs from the code's (the code
    changed) is replaced; a folder there without hardmine's build info is an error.
    """
    spec = builtin_spec(name)
    parent = cache_root(cache_dir) / "builtin"
    final = parent / f"{spec.name}-{BUILTIN_VERSION}"
    fingerprint = build_fingerprint(spec.name)
    info = _build_info(final)
    if info is not None and info.get("fingerprint") == fingerprint:
        return final
    if final.exists() and info is None:
        raise OSError(f"{final}: exists but is not a hardmine build (no {BUILD_INFO_FILE}); remove it")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=parent))
    stale = None
    try:
        build_builtin(spec.name, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
        if info is not None:
            # An older build of this version (its fingerprint differs): move it
            # aside, so the rename below can publish the new one.
            logger.warning("model: rebuilding %s, whose cached build is out of date", final)
            stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".stale", dir=parent))
            with contextlib.suppress(FileNotFoundError):  # another process moved it first
                os.rename(final, stale / "old")
        try:
            os.rename(tmp, final)
        except OSError as err:
            # Another process published it first (rename onto a non-empty folder
            # fails); theirs is as good as ours. Anything else is a real error.
            current = _build_info(final)
            if current is None or current.get("fingerprint") != fingerprint:
                raise OSError(f"{final}: cannot publish the built model there ({err})") from err
    finally:
        for leftover in (tmp, stale):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return final

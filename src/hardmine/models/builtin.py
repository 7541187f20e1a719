"""Built-in tiny models that need no download, and loading of any checkpoint.

``builtin:tiny-qwen2-vl`` (a Qwen2-VL) and ``builtin:tiny-text`` (a Qwen2 causal LM)
are randomly initialised from a config, with a byte-level BPE tokenizer trained here
on a small built-in corpus. :func:`materialize_builtin` writes one to a cache folder
with ``save_pretrained``; from then on it is an ordinary checkpoint folder that
``from_pretrained`` loads offline. They exist so that the demo and the tests train a
real Hugging Face model end to end on a CPU in seconds; they learn, but know nothing.

Importing this module registers :class:`ImageOnlyQwen2VLProcessor` with
``AutoProcessor`` (see its docstring for why that is needed).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    PretrainedConfig,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Tokenizer,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging as hf_logging

Task = Literal["vl", "text"]

logger = logging.getLogger(__name__)

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

# Qwen's own special tokens, so that chat templates, the processor and the model
# config use the same names as a real Qwen2-VL checkpoint.
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

#: Chat template of the built-in models. Qwen's layout (``<|im_start|>role\n ...
#: <|im_end|>\n``, an image as ``<|vision_start|><|image_pad|><|vision_end|>``), no
#: default system prompt (tokens the tiny model would pay for at every step), and the
#: assistant's answer plus its ``<|im_end|>`` inside ``{% generation %}`` so that
#: ``apply_chat_template(..., return_assistant_tokens_mask=True)`` marks exactly the
#: tokens to supervise. Content may be a string or a list of typed parts.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- else -%}{{- raise_exception('assistant turns may hold only text parts') -}}{%- endif -%}"
    "{%- endfor -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- else -%}{{- raise_exception('unknown content part type: ' + part['type']) -}}{%- endif -%}"
    "{%- endfor -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


# --------------------------------------------------------------------------- processor


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """A Qwen2-VL processor with an image processor and a tokenizer, and no video one.

    The stock ``Qwen2VLProcessor`` requires a video processor, which needs
    torchvision; on a CPU-only torch there is no torchvision build to match. The
    sub-processors a ``ProcessorMixin`` loads and saves are read from the names of
    ``__init__``'s parameters, so leaving ``video_processor`` out of the signature is
    what makes this class image-only. Everything else (image token expansion,
    ``mm_token_type_ids``, chat templates) is inherited unchanged.

    ``AutoProcessor.from_pretrained`` finds this class by the name saved in
    ``processor_config.json`` only if the class is registered; unregistered, it
    silently falls back to returning just the tokenizer. Importing this module
    registers it.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        if tokenizer is None:
            raise ValueError("ImageOnlyQwen2VLProcessor: tokenizer is None; expected a tokenizer")
        # The same token attributes Qwen2VLProcessor.__init__ sets; its __init__
        # cannot be called because it passes a video processor on to ProcessorMixin.
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_PAD
        self.video_token = getattr(tokenizer, "video_token", None) or VIDEO_PAD
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token
        )
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token
        )
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)


class _ImageOnlyProcessorRegistrationKey(PretrainedConfig):
    """Key under which :class:`ImageOnlyQwen2VLProcessor` is registered with AutoProcessor.

    AutoProcessor resolves a saved ``processor_class`` name by looking through its
    registered classes, whatever config they are registered under. Registering under
    ``Qwen2VLConfig`` itself would replace the stock processor for every real
    Qwen2-VL checkpoint in the process; this private key avoids that side effect.
    """

    model_type = "hardmine_image_only_processor"


AutoProcessor.register(_ImageOnlyProcessorRegistrationKey, ImageOnlyQwen2VLProcessor, exist_ok=True)


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


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    # Saving and loading a tiny model draw "Writing model shards" / "Loading weights"
    # bars that say nothing useful and clutter the demo's own progress bar. The
    # switch is process-wide, so it is put back as it was found.
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_builtin(name: str, out_dir: Path) -> None:
    """Build the named built-in and ``save_pretrained`` everything into ``out_dir``."""
    with _quiet_progress():
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

    The corpus, the chat template, the shape constants and the source of the build
    functions: editing any of them without bumping :data:`BUILTIN_VERSION` still
    retires a cached build instead of silently reusing it.
    """
    spec = builtin_spec(name)
    digest = hashlib.sha256()
    digest.update(json.dumps([BUILTIN_VERSION, spec.name, spec.task, CHAT_TEMPLATE, list(SPECIAL_TOKENS)]).encode())
    digest.update("\n".join(tokenizer_corpus()).encode())
    for fn in (_text_kwargs, build_vl_config, build_text_config, build_tokenizer, build_image_processor, _build_builtin):
        try:
            digest.update(inspect.getsource(fn).encode())
        except (OSError, TypeError):  # no source shipped: the bytecode still tells changes apart
            digest.update(fn.__code__.co_code)
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


# --------------------------------------------------------------------------- loading


def detect_task(config) -> Task:
    """``"vl"`` for a config with a vision tower (Qwen2-VL family), else ``"text"``."""
    return "vl" if getattr(config, "vision_config", None) is not None else "text"


def _disable_cache(model) -> None:
    # With use_cache=True, transformers builds a cache object in the forward, and a
    # forward with a cache does not derive the block-diagonal mask of a packed row
    # from position_ids: packed samples then silently attend to each other. Trainer
    # only switches off model.config.use_cache, while the text model of a VL model
    # reads text_config.use_cache, so both are switched off here.
    model.config.use_cache = False
    text_config = getattr(model.config, "text_config", None)
    if text_config is not None:
        text_config.use_cache = False


_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_marks(template: str | None) -> bool:
    """Whether a chat template marks assistant turns with ``{% generation %}``."""
    return bool(template) and bool(_GENERATION_TAG.search(template))


def ensure_training_template(processor) -> bool:
    """Give a ChatML checkpoint a chat template that marks the assistant's answers.

    Label masking reads ``{% generation %}`` marks, which Qwen's own templates do
    not have. A template in Qwen's ChatML layout (``<|im_start|>role ...
    <|im_end|>``) is replaced by :data:`CHAT_TEMPLATE`, the same layout with the
    marks, without Qwen's default system prompt (give one explicitly if wanted).
    Any other template is left alone, and encoding then fails with a clear error.
    Returns whether the template was replaced.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    template = getattr(processor, "chat_template", None)
    if template is None:
        template = getattr(tokenizer, "chat_template", None)
    if template is not None and not isinstance(template, str):
        return False  # a dict of named templates: the user's choice, left alone
    if has_generation_marks(template):
        return False
    # ChatML: the template says so, or (no template at all) the vocabulary has its markers.
    chatml = "<|im_start|>" in template if template else "<|im_start|>" in tokenizer.get_vocab()
    if not chatml:
        return False
    logger.warning(
        "model: the chat template of %s does not mark assistant turns with {%% generation %%}; "
        "using hardmine's ChatML template (same layout, no default system prompt) so that "
        "only the answers are supervised",
        getattr(tokenizer, "name_or_path", "the checkpoint"),
    )
    processor.chat_template = CHAT_TEMPLATE
    tokenizer.chat_template = CHAT_TEMPLATE
    return True


def _load_vl_processor(path: str):
    processor = AutoProcessor.from_pretrained(path)
    if hasattr(processor, "image_processor"):
        return processor
    # AutoProcessor returned something without an image processor: either only the
    # tokenizer (the processor class is unknown here), or it failed. Build the
    # image-only processor from the two parts a Qwen-VL checkpoint always has.
    return _image_only_processor_from(path)


def _image_only_processor_from(path: str):
    try:
        image_processor = AutoImageProcessor.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"model: cannot load an image processor and a tokenizer from {path!r}: {err}") from err
    return ImageOnlyQwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template
    )


def load_model_and_processor(
    spec: str,
    *,
    task: Task | None = None,
    dtype: torch.dtype | str | None = None,
) -> tuple[Any, Any, Task]:
    """Load ``(model, processor_or_tokenizer, task)`` from a built-in name, folder or hub name.

    - ``builtin:<name>`` is materialised (see :func:`materialize_builtin`) and loaded
      from its folder like any checkpoint.
    - Anything else goes to ``from_pretrained``: ``AutoModelForImageTextToText`` +
      ``AutoProcessor`` for ``task="vl"``, ``AutoModelForCausalLM`` + ``AutoTokenizer``
      for ``task="text"``. With ``task=None`` the task is read from the config: a
      config with a ``vision_config`` is VL.

    A VL checkpoint whose stock processor cannot be built here (Qwen's needs
    torchvision for its video part) gets an :class:`ImageOnlyQwen2VLProcessor` made
    from its image processor and tokenizer. The model's ``use_cache`` is switched off
    in ``config`` and ``text_config`` (see ``_disable_cache``), and a ChatML chat
    template without ``{% generation %}`` marks gets hardmine's marked one (see
    :func:`ensure_training_template`), so that only answers are supervised.
    """
    path, task, builtin = _resolve_checkpoint(spec, task)
    load_kwargs = {} if dtype is None else {"dtype": _resolve_dtype(dtype)}
    quiet = _quiet_progress() if builtin else contextlib.nullcontext()
    with quiet:
        model, processor = _load(path, task, load_kwargs)
    _disable_cache(model)
    ensure_training_template(processor)
    return model, processor, task


def load_processor(spec: str, *, task: Task | None = None) -> tuple[Any, Task]:
    """``(processor_or_tokenizer, task)`` of a checkpoint, without loading its weights.

    The same processor :func:`load_model_and_processor` gives (chat template
    included), for work that only encodes, such as checking sample lengths.
    """
    path, task, _ = _resolve_checkpoint(spec, task)
    processor = _load_processor(path, task)
    ensure_training_template(processor)
    return processor, task


def _resolve_checkpoint(spec: str, task: Task | None) -> tuple[str, Task, bool]:
    """(folder or hub name, task, whether it is a built-in) for a model spec."""
    if task is not None and task not in ("vl", "text"):
        raise ValueError(f"task: got {task!r}; expected 'vl', 'text' or None")
    builtin = parse_builtin_name(spec)
    if builtin is not None:
        built = builtin_spec(builtin)
        if task is not None and task != built.task:
            raise ValueError(f"task: got {task!r} for {spec!r}; that built-in is a {built.task!r} model")
        return str(materialize_builtin(builtin)), built.task, True
    if task is None:
        task = detect_task(AutoConfig.from_pretrained(spec))
    return spec, task, False


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype | str:
    # "auto" keeps the checkpoint's dtype; names such as "bfloat16" (as written in
    # a YAML config) become torch dtypes.
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else None
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype: got {dtype!r}; expected 'auto', a floating torch dtype or its name (e.g. 'bfloat16')")
    return resolved


def _load(path: str, task: Task, load_kwargs: dict[str, Any]):
    if task == "vl":
        model = AutoModelForImageTextToText.from_pretrained(path, **load_kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **load_kwargs)
    return model, _load_processor(path, task)


def _load_processor(path: str, task: Task):
    if task != "vl":
        return AutoTokenizer.from_pretrained(path)
    try:
        return _load_vl_processor(path)
    except (ImportError, OSError, ValueError):
        return _image_only_processor_from(path)

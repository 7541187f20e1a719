"""Built-in tiny models: deterministic builds, ordinary checkpoints, offline loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hardmine.data.encode import dense_caption_messages, encode_chat
from hardmine.models import builtin as B
from hardmine.models import processor as P
from hardmine.models import load_model_and_processor, materialize_builtin

ANSWER = '[{"desc": "small red circle", "bbox_2d": [0, 17, 512, 1000]}]'


def image(h=112, w=112, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def vl_batch(processor):
    features = encode_chat(processor, dense_caption_messages(ANSWER), [image()])
    return {k: v[None] if k not in ("pixel_values", "image_grid_thw") else v for k, v in features.items()}


def text_batch(tokenizer):
    features = encode_chat(tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ANSWER}])
    return {k: v[None] for k, v in features.items()}


# --------------------------------------------------------------------------- names


def test_unknown_builtin_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError) as err:
        materialize_builtin("tiny-nothing", tmp_path)
    assert "tiny-nothing" in str(err.value)
    assert "builtin:tiny-qwen2-vl" in str(err.value) and "builtin:tiny-text" in str(err.value)
    with pytest.raises(ValueError, match="builtin:tiny-qwen2-vl"):
        load_model_and_processor("builtin:nope")
    assert not any(tmp_path.iterdir())  # nothing half-built


def test_names_with_and_without_prefix_resolve_alike():
    assert B.builtin_spec("builtin:tiny-text") == B.builtin_spec("tiny-text")
    assert B.builtin_spec("tiny-qwen2-vl").task == "vl"


def test_cache_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HARDMINE_CACHE", str(tmp_path / "env"))
    assert B.cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert B.cache_root() == tmp_path / "env"
    monkeypatch.delenv("HARDMINE_CACHE")
    assert B.cache_root() == B.DEFAULT_CACHE_ROOT.expanduser()


# --------------------------------------------------------------------------- building


def test_materialize_is_deterministic_and_leaves_the_global_rng_alone(builtin_root, tmp_path, offline):
    first = materialize_builtin("tiny-qwen2-vl", builtin_root)
    before = torch.random.get_rng_state()
    second = materialize_builtin("tiny-qwen2-vl", tmp_path)  # a fresh build elsewhere
    assert torch.equal(torch.random.get_rng_state(), before)
    assert first != second
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("tokenizer.json", "config.json", "processor_config.json", "chat_template.jinja"):
        assert (first / name).read_text() == (second / name).read_text(), name
    assert json.loads((second / B.BUILD_INFO_FILE).read_text())["version"] == B.BUILTIN_VERSION
    assert second.name == f"tiny-qwen2-vl-{B.BUILTIN_VERSION}" and second.parent.name == "builtin"


def test_materialize_reuses_a_built_folder(builtin_root, offline):
    path = materialize_builtin("tiny-text", builtin_root)
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert materialize_builtin("builtin:tiny-text", builtin_root) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp


def test_materialize_race_keeps_the_first_published_copy(tmp_path, monkeypatch, offline):
    # Another process publishes the folder while this one is still building: the
    # rename fails, the published copy is returned, the temporary folder removed.
    real_build = B.build_builtin

    def build_and_lose_the_race(name, out_dir):
        real_build(name, out_dir)
        other = tmp_path / "builtin" / f"{name}-{B.BUILTIN_VERSION}"
        other.mkdir()
        (other / B.BUILD_INFO_FILE).write_text((out_dir / B.BUILD_INFO_FILE).read_text())
        (other / "theirs").write_text("")

    monkeypatch.setattr(B, "build_builtin", build_and_lose_the_race)
    path = materialize_builtin("tiny-text", tmp_path)
    assert (path / "theirs").exists()
    assert sorted(p.name for p in (tmp_path / "builtin").iterdir()) == [path.name]


def test_an_out_of_date_build_is_replaced(tmp_path, caplog):
    path = materialize_builtin("tiny-text", tmp_path)
    info = json.loads((path / B.BUILD_INFO_FILE).read_text())
    assert info["fingerprint"] == B.build_fingerprint("tiny-text")
    (path / B.BUILD_INFO_FILE).write_text(json.dumps(info | {"fingerprint": "from-older-code"}))
    (path / "old-marker").write_text("")
    with caplog.at_level("WARNING", logger="hardmine.models.builtin"):
        again = materialize_builtin("tiny-text", tmp_path)
    assert again == path and not (path / "old-marker").exists() and "out of date" in caplog.text
    assert json.loads((path / B.BUILD_INFO_FILE).read_text())["fingerprint"] == info["fingerprint"]
    assert sorted(p.name for p in (tmp_path / "builtin").iterdir()) == [path.name]


def test_a_foreign_folder_in_the_way_is_an_error_naming_it(tmp_path, offline):
    stale = tmp_path / "builtin" / f"tiny-text-{B.BUILTIN_VERSION}"
    stale.mkdir(parents=True)
    (stale / "notes.txt").write_text("not a model")
    with pytest.raises(OSError, match="is not a hardmine build"):
        materialize_builtin("tiny-text", tmp_path)
    assert sorted(p.name for p in stale.parent.iterdir()) == [stale.name]


def test_materialize_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(name, out_dir):
        (out_dir / "partial").write_text("x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(B, "build_builtin", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        materialize_builtin("tiny-text", tmp_path)
    assert list((tmp_path / "builtin").iterdir()) == []


# --------------------------------------------------------------------------- the parts


def test_tokenizer_round_trips_captions_and_keeps_qwen_specials(vl_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(vl_dir)
    for special in B.SPECIAL_TOKENS:
        ids = tok(special, add_special_tokens=False).input_ids
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == special
    for text in (ANSWER, "0 1 10 100 999 1000", "Hello! How are you? é ü 漢字"):
        assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    # Digits are single tokens (Qwen2's pre-tokenizer), so "1000" is four tokens.
    assert len(tok("1000", add_special_tokens=False).input_ids) == 4
    assert tok.pad_token == B.ENDOFTEXT and tok.eos_token == B.IM_END
    assert "{% generation %}" in tok.chat_template.replace("{%- generation -%}", "{% generation %}")


def test_autoprocessor_returns_the_image_only_processor(vl_dir, text_dir):
    from transformers import AutoProcessor, AutoTokenizer

    P.register_image_only_processor()  # what the loaders do before AutoProcessor
    processor = AutoProcessor.from_pretrained(vl_dir)
    assert type(processor) is P.ImageOnlyQwen2VLProcessor
    assert hasattr(processor, "image_processor") and not hasattr(processor, "video_processor")
    assert processor.image_token_id == processor.tokenizer.convert_tokens_to_ids(B.IMAGE_PAD)
    # The text built-in is a plain tokenizer checkpoint.
    assert type(AutoTokenizer.from_pretrained(text_dir)).__name__ == "Qwen2Tokenizer"


@pytest.mark.parametrize(("size", "tokens"), [((112, 112), 16), ((448, 448), 16), ((56, 84), 6)])
def test_images_are_bounded_to_16_tokens(vl_dir, size, tokens):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(vl_dir)
    features = encode_chat(processor, dense_caption_messages(ANSWER), [image(*size)])
    assert int((features["input_ids"] == processor.image_token_id).sum()) == tokens


def test_vl_model_shape_and_cache_off(vl_dir):
    model, processor, task = load_model_and_processor(str(vl_dir))
    assert task == "vl" and type(model).__name__ == "Qwen2VLForConditionalGeneration"
    text, vision = model.config.text_config, model.config.vision_config
    assert (text.hidden_size, text.num_hidden_layers) == (B.TEXT_HIDDEN, B.TEXT_LAYERS)
    assert (vision.embed_dim, vision.depth) == (B.VISION_EMBED, B.VISION_LAYERS)
    assert text.vocab_size >= len(processor.tokenizer)
    assert model.config.use_cache is False and text.use_cache is False
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


# --------------------------------------------------------------------------- loading


@pytest.mark.integration
def test_save_and_reload_give_equal_logits(vl_dir, text_dir, tmp_path):
    for source, make_batch in ((vl_dir, vl_batch), (text_dir, text_batch)):
        model, processor, task = load_model_and_processor(str(source))
        batch = make_batch(processor)
        batch.pop("labels")
        with torch.no_grad():
            before = model(**batch).logits
        saved = tmp_path / task
        model.save_pretrained(saved)
        processor.save_pretrained(saved)
        again, processor_again, task_again = load_model_and_processor(str(saved))
        assert task_again == task and type(processor_again) is type(processor)
        with torch.no_grad():
            after = again(**make_batch(processor_again) | {"labels": None}).logits
        assert torch.equal(before, after), task


def test_builtin_names_load_through_the_cache_variable(builtin_root, monkeypatch, offline):
    monkeypatch.setenv("HARDMINE_CACHE", str(builtin_root))
    model, tokenizer, task = load_model_and_processor("builtin:tiny-text")
    assert task == "text" and type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.use_cache is False
    with pytest.raises(ValueError, match="'text' model"):
        load_model_and_processor("builtin:tiny-text", task="vl")


def test_dtype_names_and_errors(text_dir):
    model, _, _ = load_model_and_processor(str(text_dir), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype: got 'int8'"):
        load_model_and_processor(str(text_dir), dtype="int8")
    with pytest.raises(ValueError, match="task: got 'audio'"):
        load_model_and_processor(str(text_dir), task="audio")


#: Qwen2-VL's own template layout: ChatML, no {% generation %} marks.
QWEN_STYLE_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
)


def test_a_stock_qwen_vl_checkpoint_loads_and_gets_a_marked_template(vl_dir, tmp_path, caplog):
    # A real Qwen2-VL checkpoint names Qwen2VLProcessor, whose video part needs
    # torchvision, and its chat template has no {% generation %} marks: the loader
    # falls back to the image-only processor and swaps in the marked ChatML template.
    import shutil

    copy = tmp_path / "stock"
    shutil.copytree(vl_dir, copy)
    for name in ("processor_config.json", "tokenizer_config.json"):
        path = copy / name
        path.write_text(path.read_text().replace("ImageOnlyQwen2VLProcessor", "Qwen2VLProcessor"))
    (copy / "chat_template.jinja").write_text(QWEN_STYLE_TEMPLATE)
    with caplog.at_level("WARNING", logger="hardmine.models.builtin"):
        _, processor, task = load_model_and_processor(str(copy))
    assert task == "vl" and type(processor) is P.ImageOnlyQwen2VLProcessor
    assert processor.chat_template == B.CHAT_TEMPLATE and "does not mark assistant turns" in caplog.text
    features = encode_chat(processor, dense_caption_messages(ANSWER), [image()])
    supervised = features["input_ids"][features["labels"] != -100].tolist()
    tok = processor.tokenizer
    assert supervised == tok(ANSWER, add_special_tokens=False).input_ids + [tok.convert_tokens_to_ids(B.IM_END)]


def test_templates_that_are_not_chatml_are_left_alone(text_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(text_dir)
    assert not P.ensure_training_template(tok)  # already marked
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert not P.ensure_training_template(tok)
    with pytest.raises(ValueError, match="no assistant mask|no assistant token"):
        encode_chat(tok, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    tok.chat_template = QWEN_STYLE_TEMPLATE
    assert P.ensure_training_template(tok) and tok.chat_template == B.CHAT_TEMPLATE


@pytest.mark.integration
def test_fresh_offline_process_loads_the_builtins(builtin_root, vl_dir, text_dir):
    script = textwrap.dedent(
        """
        import huggingface_hub.constants as c
        assert c.HF_HUB_OFFLINE, "HF_HUB_OFFLINE not seen"
        from hardmine.models import load_model_and_processor
        for name in ("builtin:tiny-qwen2-vl", "builtin:tiny-text"):
            model, processor, task = load_model_and_processor(name)
            print(name, task, type(model).__name__, type(processor).__name__)
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HARDMINE_CACHE=str(builtin_root), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "builtin:tiny-qwen2-vl vl Qwen2VLForConditionalGeneration ImageOnlyQwen2VLProcessor",
        "builtin:tiny-text text Qwen2ForCausalLM Qwen2Tokenizer",
    ]


def test_importing_the_models_changes_no_global_state():
    # No processor registration and no progress-bar switch at import time: a
    # process that imports hardmine keeps transformers exactly as it was.
    import subprocess
    import sys

    code = (
        "from transformers.models.auto.processing_auto import PROCESSOR_MAPPING\n"
        "from transformers.utils import logging\n"
        "before = (len(PROCESSOR_MAPPING._extra_content), logging.is_progress_bar_enabled())\n"
        "import hardmine.models, hardmine.train.trainer\n"
        "print(before == (len(PROCESSOR_MAPPING._extra_content), logging.is_progress_bar_enabled()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("True"), out.stdout + out.stderr

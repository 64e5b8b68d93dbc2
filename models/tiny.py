"""Tiny random-weight vision-language models of real architectures, built locally and offline.

The offline demo and the tests need real transformers models without a model hub. This module builds
one in seconds: a config with tiny sizes, a byte-level BPE tokenizer trained with the ``tokenizers``
library on a small built-in English corpus, the architecture's own PIL image processor (no
torchvision), a processor with a chat template, then ``save_pretrained``. The result loads through
the ordinary ``AutoProcessor.from_pretrained(dir)`` + ``AutoModelForImageTextToText.from_pretrained(dir)``
path. Weights are random, so the models answer with fluent-looking gibberish.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

#: Bump when the built files change, so caches of older builds are not reused.
BUILD_VERSION = 1

#: An architecture :func:`build_tiny_model` knows how to build.
Architecture = Literal["llava", "idefics3", "paligemma", "gemma3"]
#: All of them, in that order.
ARCHITECTURES: tuple[Architecture, ...] = get_args(Architecture)

_IMAGE_SIZE = 32
_PATCH_SIZE = 8
_HIDDEN = 64
_VISION_HIDDEN = 32
_LAYERS = 2


@dataclass(frozen=True)
class Size:
    """Dimensions of a built model (the tiny demos, or a larger one for GPU benchmarks)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    image_size: int
    patch_size: int


#: Sizes :func:`build_tiny_model` accepts. ``100m`` (LLaVA only) has about 100M parameters: a Llama of
#: 14 layers x 768 and a CLIP tower of 6 layers x 384 on 224-pixel images (256 image tokens).
SIZES = {
    "tiny": Size(_HIDDEN, _LAYERS, 4, 2, _VISION_HIDDEN, _LAYERS, 2, _IMAGE_SIZE, _PATCH_SIZE),
    "100m": Size(768, 14, 12, 4, 384, 6, 6, 224, 14),
}

_CORPUS = """\
The morning light fell across the old harbour, where fishing boats rocked gently against the stone
quay. Gulls circled above the masts, calling to one another, while a man in a blue coat mended his
nets on the steps. Beyond the breakwater the sea was calm and grey, and a small ferry was leaving for
the islands with a handful of passengers and a red van on its open deck.

In the picture there is a wooden table with a white cup, a plate of bread, and a small vase of yellow
flowers. A cat sleeps on the chair beside the window. The wall behind it is painted pale green, and a
clock shows a quarter past nine. Sunlight makes long shadows on the floor, and the curtains move a
little in the breeze.

A chart shows the number of visitors to the museum for each month of the year. The values rise in
spring, reach their highest point in August, and fall again in the autumn. The smallest bar belongs to
January, with fewer than two thousand visitors, while August has almost nine thousand.

To answer the question, first look at the image carefully. Count the objects, read any text, and
describe the colours, shapes and positions you can see. Then explain your reasoning step by step and
give a short, clear answer. If the image does not contain enough information, say so honestly.

The city street is busy in the evening. Cars wait at the traffic lights, people cross the road with
umbrellas, and the shop windows glow with warm light. A bus stops near the corner, and a child points
at a bright poster of a circus with elephants, acrobats and a smiling clown.

Mountains rise behind a quiet lake. Their peaks are covered with snow, and a thin cloud hangs over the
highest one. Pine trees grow along the shore, and a narrow path leads to a cabin with a green roof. The
water reflects the sky so clearly that the picture looks almost the same upside down.

Question: what is the person holding? Answer: the person is holding a red umbrella and a paper bag.
Question: how many dogs are in the photo? Answer: there are three dogs, two brown and one black.
Question: what does the sign say? Answer: the sign says that the park closes at six o'clock.
"""


def _train_tokenizer(special_tokens: list[str], vocab_size: int = 512) -> Any:
    """Train a byte-level BPE tokenizer on the built-in corpus, with ``special_tokens`` as added specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.split("\n\n"), trainer=trainer)
    return tokenizer


def _fast_tokenizer(special_tokens: list[str], **named: Any) -> Any:
    """Wrap a freshly trained tokenizer as a ``PreTrainedTokenizerFast`` with the named special tokens."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=_train_tokenizer(special_tokens), **named)


def _pil_image_processor(model_dir: str, class_name: str, **kwargs: Any) -> Any:
    """The architecture's own image processor in its PIL/numpy flavour (never the torchvision one).

    Recent transformers 5.x name it ``<Name>Pil`` in ``image_processing_pil_<model>``; earlier 5.x releases
    call the PIL flavour plain ``<Name>`` (and the torchvision one ``<Name>Fast``).
    """
    try:
        module = importlib.import_module(f"transformers.models.{model_dir}.image_processing_pil_{model_dir}")
        cls = getattr(module, f"{class_name}Pil")
    except (ImportError, AttributeError):
        module = importlib.import_module(f"transformers.models.{model_dir}.image_processing_{model_dir}")
        cls = getattr(module, class_name)
    return cls(**kwargs)


def _chat_template(
    *,
    start: str,
    roles: dict[str, tuple[str, str]],
    image: str,
    generation_prompt: str,
    images_first: bool = False,
) -> str:
    """A Jinja chat template: ``start``, then each turn as role prefix + content + role suffix.

    ``roles`` maps a role to its (prefix, suffix); an image part renders as ``image``. With
    ``images_first`` every image of the conversation goes before all text (PaliGemma's layout).
    """

    def lit(text: str) -> str:
        return "{{ " + repr(text) + " }}"

    role_chain = (
        "".join(
            ("{% if" if i == 0 else "{% elif") + f" message['role'] == {role!r} %}}" + lit(prefix)
            for i, (role, (prefix, _)) in enumerate(roles.items())
        )
        + "{% endif %}"
    )
    suffix_chain = (
        "".join(
            ("{% if" if i == 0 else "{% elif") + f" message['role'] == {role!r} %}}" + lit(suffix)
            for i, (role, (_, suffix)) in enumerate(roles.items())
        )
        + "{% endif %}"
    )
    image_in_text = "" if images_first else lit(image)
    body = (
        "{% for message in messages %}"
        + role_chain
        + "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        + "{% for part in message['content'] %}"
        + "{% if part['type'] == 'image' %}"
        + image_in_text
        + "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        + "{% endfor %}{% endif %}"
        + suffix_chain
        + "{% endfor %}"
        + "{% if add_generation_prompt %}"
        + lit(generation_prompt)
        + "{% endif %}"
    )
    head = lit(start)
    if images_first:
        head += (
            "{% for message in messages %}{% if message['content'] is not string %}"
            "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
            + lit(image)
            + "{% endif %}{% endfor %}{% endif %}{% endfor %}"
        )
    return head + body


def _roles_ending(end: str, **prefixes: str) -> dict[str, tuple[str, str]]:
    """``_chat_template`` roles whose turns all close with the same ``end`` marker."""
    return {role: (prefix, end) for role, prefix in prefixes.items()}


def _vocab_size(tokenizer: Any) -> int:
    """Embedding rows for ``tokenizer``: its full length rounded up to a multiple of 64."""
    return (len(tokenizer) + 63) // 64 * 64


def _suppressed_token_ids(tokenizer: Any, vocab_size: int) -> list[int]:
    """Token ids a demo model never emits: stray bytes, control characters, added tokens, padding rows.

    Random weights would otherwise sample lone UTF-8 bytes and markup tokens; suppressing them keeps the
    gibberish readable (plain words and punctuation). End-of-sequence is suppressed too, so every answer
    runs to ``max_new_tokens``: predictable lengths for tests and load benchmarks.
    """
    added = set(tokenizer.added_tokens_decoder)
    suppressed = []
    for token_id in range(vocab_size):
        if token_id >= len(tokenizer) or token_id in added:
            suppressed.append(token_id)
            continue
        text = tokenizer.decode([token_id])
        if "\ufffd" in text or any(not ch.isprintable() and ch != "\n" for ch in text):
            suppressed.append(token_id)
    return suppressed


def _llama_text(vocab_size: int, size: Size = SIZES["tiny"], **extra: Any) -> dict[str, Any]:
    """A small Llama text config (used by LLaVA and Idefics3)."""
    return {
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": size.hidden,
        "intermediate_size": (8 * size.hidden // 3 + 63) // 64 * 64 if size.hidden > 256 else 2 * size.hidden,
        "num_hidden_layers": size.layers,
        "num_attention_heads": size.heads,
        "num_key_value_heads": size.kv_heads,
        "max_position_embeddings": 4096,
        **extra,
    }


def _special_token_ids(tokenizer: Any) -> dict[str, Any]:
    """The begin, end and padding token ids a text config needs."""
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _siglip_vision(**extra: Any) -> dict[str, Any]:
    """A tiny SigLIP-style vision tower config (Idefics3, PaliGemma and Gemma 3)."""
    return {
        **extra,
        "hidden_size": _VISION_HIDDEN,
        "intermediate_size": 2 * _VISION_HIDDEN,
        "num_hidden_layers": _LAYERS,
        "num_attention_heads": 2,
        "image_size": _IMAGE_SIZE,
        "patch_size": _PATCH_SIZE,
    }


def _gemma_text(model_type: str, tokenizer: Any, **extra: Any) -> dict[str, Any]:
    """A tiny Gemma-family text config (PaliGemma's ``gemma``, Gemma 3's ``gemma3_text``)."""
    return {
        "model_type": model_type,
        "vocab_size": _vocab_size(tokenizer),
        "hidden_size": _HIDDEN,
        "intermediate_size": 2 * _HIDDEN,
        "num_hidden_layers": _LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 16,
        **extra,
        "max_position_embeddings": 4096,
        **_special_token_ids(tokenizer),
    }


def _build_llava(size: Size = SIZES["tiny"]) -> tuple[Any, Any]:
    """LLaVA-1.5 layout: CLIP vision tower + MLP projector + Llama."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = _fast_tokenizer(
        ["<unk>", "<s>", "</s>", "<pad>", "<image>"],
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = _pil_image_processor(
        "llava",
        "LlavaImageProcessor",
        size={"shortest_edge": size.image_size},
        crop_size={"height": size.image_size, "width": size.image_size},
    )
    template = _chat_template(
        start="<s>",
        roles={"system": ("", "\n"), "user": ("USER: ", "\n"), "assistant": ("ASSISTANT: ", "</s>\n")},
        image="<image>\n",
        generation_prompt="ASSISTANT:",
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=size.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    )
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": size.vision_hidden,
            "intermediate_size": 4 * size.vision_hidden
            if size.vision_hidden > 128
            else 2 * size.vision_hidden,
            "num_hidden_layers": size.vision_layers,
            "num_attention_heads": size.vision_heads,
            "image_size": size.image_size,
            "patch_size": size.patch_size,
            "projection_dim": size.vision_hidden,
        },
        text_config=_llama_text(_vocab_size(tokenizer), size, **_special_token_ids(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(size.image_size // size.patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    return LlavaForConditionalGeneration(config), processor


def _build_idefics3() -> tuple[Any, Any]:
    """Idefics3 layout: SigLIP-style vision tower + pixel-shuffle connector + Llama."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor

    row_col = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    specials = ["<unk>", "<|im_start|>", "<end_of_utterance>", "<|pad|>"]
    specials += ["<fake_token_around_image>", "<image>", "<global-img>", *row_col]
    tokenizer = _fast_tokenizer(
        specials,
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|pad|>",
        extra_special_tokens=specials[4:],
    )
    scale_factor = 2
    image_seq_len = (_IMAGE_SIZE // _PATCH_SIZE) ** 2 // scale_factor**2
    image_processor = _pil_image_processor(
        "idefics3",
        "Idefics3ImageProcessor",
        size={"longest_edge": _IMAGE_SIZE},
        max_image_size={"longest_edge": _IMAGE_SIZE},
        do_image_splitting=False,
    )
    template = _chat_template(
        start="<|im_start|>",
        roles=_roles_ending("<end_of_utterance>\n", system="System: ", user="User:", assistant="Assistant: "),
        image="<image>",
        generation_prompt="Assistant:",
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=template,
    )
    config = Idefics3Config(
        vision_config=_siglip_vision(),
        text_config=_llama_text(_vocab_size(tokenizer), **_special_token_ids(tokenizer)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,  # type: ignore[call-arg]  # accepted; not in the typed fields
        scale_factor=scale_factor,
    )
    return Idefics3ForConditionalGeneration(config), processor


def _build_paligemma() -> tuple[Any, Any]:
    """PaliGemma layout: SigLIP vision tower + linear projector + Gemma, images as a prefix."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor

    tokenizer = _fast_tokenizer(
        ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"],
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_seq_length = (_IMAGE_SIZE // _PATCH_SIZE) ** 2
    image_processor = _pil_image_processor(
        "siglip", "SiglipImageProcessor", size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}
    )
    image_processor.image_seq_length = image_seq_length
    template = _chat_template(
        start="",
        roles={"system": ("", "\n"), "user": ("question: ", "\n"), "assistant": ("answer: ", "\n")},
        image="<image>",
        generation_prompt="answer:",
        images_first=True,
    )
    # The processor adds PaliGemma's 1,152 location/segmentation tokens to the tokenizer.
    processor = PaliGemmaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=template
    )
    config = PaliGemmaConfig(
        vision_config=_siglip_vision(model_type="siglip_vision_model", vision_use_head=False),
        text_config=_gemma_text("gemma", tokenizer),
        vocab_size=_vocab_size(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        projection_dim=_HIDDEN,
        hidden_size=_HIDDEN,
    )
    return PaliGemmaForConditionalGeneration(config), processor


def _build_gemma3() -> tuple[Any, Any]:
    """Gemma 3 layout: SigLIP vision tower + pooled projector + Gemma 3 text model."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    specials += ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tokenizer = _fast_tokenizer(
        specials,
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    mm_tokens_per_image = 4  # a 2x2 grid pooled from the 4x4 patches
    image_processor = _pil_image_processor(
        "gemma3", "Gemma3ImageProcessor", size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}
    )
    template = _chat_template(
        start="<bos>",
        roles=_roles_ending(
            "<end_of_turn>\n",
            system="<start_of_turn>user\n",
            user="<start_of_turn>user\n",
            assistant="<start_of_turn>model\n",
        ),
        image="<start_of_image>",
        generation_prompt="<start_of_turn>model\n",
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=mm_tokens_per_image,
        chat_template=template,
    )
    config = Gemma3Config(
        vision_config=_siglip_vision(model_type="siglip_vision_model", vision_use_head=False),
        text_config=_gemma_text("gemma3_text", tokenizer, query_pre_attn_scalar=16, sliding_window=64),
        mm_tokens_per_image=mm_tokens_per_image,
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
    )
    return Gemma3ForConditionalGeneration(config), processor


_BUILDERS: dict[str, Callable[..., tuple[Any, Any]]] = {
    "llava": _build_llava,
    "idefics3": _build_idefics3,
    "paligemma": _build_paligemma,
    "gemma3": _build_gemma3,
}


def build_tiny_model(arch: str, out_dir: Path, *, seed: int = 0, size: str = "tiny") -> Path:
    """Build a random-weight ``arch`` model with its processor and save both into ``out_dir``.

    ``size`` is a key of :data:`SIZES`; sizes other than ``tiny`` exist for LLaVA only.
    """
    if arch not in _BUILDERS:
        raise ValueError(f"unknown tiny architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    if size not in SIZES or (size != "tiny" and arch != "llava"):
        raise ValueError(f"size {size!r} is not available for {arch!r} (sizes: tiny; llava also 100m)")
    import torch

    out_dir = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = _BUILDERS[arch](SIZES[size]) if size != "tiny" else _BUILDERS[arch]()
    tokenizer = processor.tokenizer
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.suppress_tokens = _suppressed_token_ids(
        tokenizer, model.config.get_text_config().vocab_size
    )
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def tiny_model_dir(arch: str, cache_dir: Path) -> Path:
    """Where :func:`ensure_tiny_model` keeps the build of ``arch`` inside ``cache_dir``."""
    return Path(cache_dir) / f"tiny-{arch}-v{BUILD_VERSION}"


def ensure_tiny_model(arch: str, cache_dir: Path) -> Path:
    """Return the cached tiny ``arch`` model directory, building it first if it is not there yet.

    The build goes into a temporary directory next to the target and is moved into place with one
    ``os.replace``, so a crash or a concurrent build never leaves a half-written model behind.
    """
    if arch not in _BUILDERS:
        raise ValueError(f"unknown tiny architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    target = tiny_model_dir(arch, cache_dir)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build_tiny_model(arch, tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same build first; its copy is as good as ours.
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target

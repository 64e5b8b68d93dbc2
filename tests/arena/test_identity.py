"""Identity terms: leaks found in answers, exemptions from the voter's prompts, identity questions."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from arena.guards.identity import (
    BUILTIN_IDENTITY_TERMS,
    IDENTITY_QUESTION_TAG,
    IdentityTerms,
    is_identity_question,
)
from models.roster import ModelSpec, load_roster

REPO = Path(__file__).resolve().parents[2]

BUILTIN = IdentityTerms(BUILTIN_IDENTITY_TERMS)


def spec(name: str, **fields: object) -> ModelSpec:
    return ModelSpec.model_validate({"name": name, "backend": "scripted", **fields})


# --- leaks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "term"),
    [
        ("I am ChatGPT, a large language model.", "ChatGPT"),
        ("i am chatgpt", "ChatGPT"),
        ("I'M CLAUDE.", "Claude"),
        ("As an AI developed by OpenAI, I cannot", "OpenAI"),
        ("(Anthropic)", "Anthropic"),
        ("Trained at google-deepmind.", "Google"),
        ("I am GPT-4o.", "GPT-4o"),
        ("I am gpt 4o", "GPT-4o"),
        ("I am GPT4o", "GPT-4o"),
        ("Built on GPT-4V's vision stack", "GPT-4V"),
        ("I'm Qwen, created by Alibaba Cloud", "Qwen"),
        ("我是Qwen，由阿里云开发的。", "Qwen"),
        ("我是通义千问。", "通义千问"),
        ("made by huggingface", "Hugging Face"),
        ("Made by Hugging-Face", "Hugging Face"),
        ("the 01.AI team", "01.AI"),
        ("I am Phi-3.5-vision", "Phi-3"),
        ("Meta AI built me", "Meta AI"),
        ("Llama 3.2 Vision here", "Llama"),
        ("Grok, by xAI", "Grok"),
        ("**Gemini**: here is the answer", "Gemini"),
    ],
)
def test_leaks_are_found_in_any_case_and_spelling(answer: str, term: str) -> None:
    assert BUILTIN.find(answer, ["Describe the image."]) == term


@pytest.mark.parametrize(
    "answer",
    [
        "The photo shows a metadata table and a meta-analysis chart.",  # "meta" alone is not a term
        "grokking the plot takes a while",  # "grok" inside a longer word
        "Two llamas graze in the field.",  # the plural is another word: no leak
        "A gptq-quantised file",  # "gpt" glued to letters
        "Wallpaper by the googleplex",  # "google" glued to letters
        "The value of phi is 1.618, the palm tree is tall and Bert sits next to Ernie.",
        "The pilot and copilot sit in the cockpit; press Command-R to reload.",
        "The mistrals blow",  # plural, another word
        "xai1",
        "",
    ],
)
def test_ordinary_words_and_substrings_are_no_leak(answer: str) -> None:
    assert BUILTIN.find(answer, []) is None


def test_a_singular_llama_is_a_leak_by_design() -> None:
    """Trade-off: "llama" is both Meta's family and an animal. Leaks that say "I am Llama" are common,
    and a false flag only drops one vote from the ratings (the voter still votes), so the singular is
    kept; "llamas" and "llama's" differ ("llama's" keeps the apostrophe as a boundary and matches)."""
    assert BUILTIN.find("A llama stands in a field.", ["What animal is this?"]) == "Llama"
    assert BUILTIN.find("Two llamas stand in a field.", ["What animal is this?"]) is None
    assert BUILTIN.find("The llama's wool is thick.", ["What animal is this?"]) == "Llama"
    # The voter who names the animal in the prompt gets no flag.
    assert BUILTIN.find("Yes, a llama.", ["Is this a Llama or an alpaca?"]) is None


def test_terms_from_the_voters_prompts_are_no_leak() -> None:
    answer = "Compared with ChatGPT, I (made by OpenAI) see a cat."
    assert BUILTIN.find(answer, ["Answer like ChatGPT would."]) == "OpenAI"
    assert BUILTIN.find(answer, ["answer like chatgpt would", "and what would openai say?"]) is None
    # Spelling variants of one term count as the same term.
    assert BUILTIN.find("I am GPT-4o", ["Are you gpt4o?"]) is None
    # A longer term the voter wrote exempts the shorter one it contains.
    assert BUILTIN.find("I am GPT-4o", ["Are you GPT-4o mini?"]) is None
    # A prompt that only contains a shorter term does not exempt a longer one.
    assert BUILTIN.find("I am GPT-4o", ["Are you a GPT?"]) == "GPT-4o"
    # A term glued inside a prompt word does not exempt it either.
    assert BUILTIN.find("I am Grok", ["I am grokking this"]) == "Grok"


def test_first_leak_in_the_answer_wins_and_all_in_lists_each_once() -> None:
    answer = "Hi! I'm Claude, made by Anthropic. Claude is happy to help; not ChatGPT."
    assert BUILTIN.find(answer) == "Claude"
    assert BUILTIN.find(answer, ["hello claude"]) == "Anthropic"
    assert BUILTIN.all_in(answer) == ["Claude", "Anthropic", "ChatGPT"]


def test_longest_term_wins_at_the_same_spot() -> None:
    terms = IdentityTerms(("GPT", "GPT-4", "GPT-4o", "Tiny", "Tiny LLaVA (untrained demo)", "LLaVA"))
    assert terms.find("I am GPT-4o.") == "GPT-4o"
    assert terms.find("I am GPT-4, honestly") == "GPT-4"
    assert terms.find("I am GPT-4x") == "GPT"
    assert terms.find("This is Tiny LLaVA (untrained demo) speaking") == "Tiny LLaVA (untrained demo)"
    assert terms.find("This is tiny llava(untrained  demo)") == "Tiny LLaVA (untrained demo)"
    assert terms.find("This is Tiny LLaVA speaking") == "Tiny"
    # Term order does not matter: the regex, not the list, decides.
    reordered = IdentityTerms(("GPT-4o", "GPT", "GPT-4"))
    assert reordered.find("I am GPT-4o.") == "GPT-4o"


def test_terms_with_punctuation_at_their_edges() -> None:
    terms = IdentityTerms(("01.ai", "C++Bot", "(beta)", "Model.X."))
    assert terms.find("thanks to 01.ai!") == "01.ai"
    assert terms.find("thanks to 101.ai") is None
    assert terms.find("I am c++bot.") == "C++Bot"
    assert terms.find("version(beta)") == "(beta)"  # no word boundary needed before "("
    assert terms.find("I am model.x.") == "Model.X."
    assert terms.find("I am model-x.") is None  # "." is literal, not a separator


def test_construction_drops_short_blank_and_duplicate_terms() -> None:
    terms = IdentityTerms(("  OpenAI ", "openai", "OPEN AI", "x", " ", "", "-", "Qwen", "qwen"))
    assert terms.terms == ("OpenAI", "Qwen")
    assert IdentityTerms(()).find("I am ChatGPT") is None
    with pytest.raises(AttributeError):
        terms.terms = ("mutated",)  # type: ignore[misc]
    assert terms == IdentityTerms(("OpenAI", "Qwen"))


def test_roster_names_display_names_organizations_and_aliases_join_the_builtins() -> None:
    roster = [
        spec("evil-7b", display_name="Evil Vision 7B", organization="EvilCorp", aliases=["Nefarious", "EV"]),
        spec("demo-llava-tiny", display_name="Tiny LLaVA (untrained demo)", organization="openai"),
        spec("q", organization=""),
    ]
    terms = IdentityTerms.from_specs(roster)
    assert terms.terms[:6] == ("evil-7b", "Evil Vision 7B", "EvilCorp", "Nefarious", "EV", "demo-llava-tiny")
    assert "q" not in terms.terms  # shorter than two characters
    assert set(BUILTIN_IDENTITY_TERMS) - {"OpenAI"} <= set(terms.terms)
    # The roster spelling of a duplicate comes first, so it is the one reported.
    assert terms.terms.count("openai") == 1 and "OpenAI" not in terms.terms
    assert terms.find("Hello, I am Evil Vision 7B by evilcorp") == "Evil Vision 7B"
    assert terms.find("Hello, I am a model by EvilCorp") == "EvilCorp"
    assert terms.find("Call me nefarious.") == "Nefarious"
    assert terms.find("I run evil-7b weights") == "evil-7b"
    assert terms.find("I am ChatGPT") == "ChatGPT"
    assert terms.find("Hello, I am a model by EvilCorp", ["Is this EvilCorp's?"]) is None
    # Without builtins only the roster counts.
    assert IdentityTerms.from_specs(roster, builtin=()).find("I am ChatGPT") is None


def test_example_roster_aliases_are_identity_terms() -> None:
    roster = load_roster(REPO / "configs" / "example-api.yaml")
    terms = IdentityTerms.from_specs(roster.models)
    gpt = roster.get("gpt-4o-2024-11-20")
    assert gpt.aliases, "the example roster lists aliases"
    for alias in gpt.aliases:
        assert terms.find(f"Sure. As {alias}, I see a cat.") is not None


def test_find_is_fast_on_a_long_answer_with_hundreds_of_terms() -> None:
    roster = [
        spec(
            f"vlm-{i}-7b",
            display_name=f"Vision Model {i} Pro",
            organization=f"Lab Number {i}",
            aliases=[f"VM{i}"],
        )
        for i in range(60)
    ]
    terms = IdentityTerms.from_specs(roster)
    assert len(terms.terms) >= 300
    sentence = "The image shows a red barn next to a field with cows and a tractor under a cloudy sky. "
    answer = (sentence * 50)[:4000]
    prompts = ["What is happening in this picture?", "And the barn?"]
    assert terms.find(answer, prompts) is None
    assert terms.find(answer + " — Lab Number 59", prompts) == "Lab Number 59"
    runs = 200
    start = time.perf_counter()
    for _ in range(runs):
        terms.find(answer, prompts)
    per_call = (time.perf_counter() - start) / runs
    assert per_call < 0.005, f"{per_call * 1e3:.2f} ms per check"  # about 0.2 ms measured; slack for CI


# --- identity questions ---------------------------------------------------------------------------

IDENTITY_QUESTIONS = [
    "Who are you?",
    "WHO ARE YOU",
    "who   are  you ??",
    "Hi! Who r u",
    "What model are you?",
    "what kind of model are you",
    "Which LLM are you?",
    "which AI are you, honestly?",
    "What's your name?",
    "What’s your name?",
    "whats ur name",
    "What is your model name?",
    "what is your model version",
    "Who made you?",
    "Who created you",
    "who trained you?",
    "Who built you and why?",
    "Who developed you?",
    "Are you GPT-4?",
    "are you chatgpt",
    "Are you Claude or Gemini?",
    "Are you made by OpenAI?",
    "What company made you?",
    "Which company trained you?",
    "Which model am I talking to?",
    "Please introduce yourself.",
    "What are you?",
    "Describe this image. Also, who are you?",
    "Qui es-tu ?",
    "qui êtes-vous",
    "Comment t'appelles-tu ?",
    "Wer bist du?",
    "Welches Modell bist du?",
    "Wie heißt du?",
    "¿Quién eres?",
    "quien eres",
    "¿Qué modelo eres?",
    "你是谁？",
    "你是什么模型",
    "请问你是哪个模型？",
    "谁开发了你",
]

ORDINARY_QUESTIONS = [
    "Who are the people in this photo?",
    "What model of car is this?",
    "Who made this painting?",
    "Who built this bridge?",
    "What company made this product?",
    "Which model of phone is shown here?",
    "What is the model number on the label?",
    "Who is the person on the left?",
    "What's the name of this dog?",
    "What is the name of this building?",
    "Are you able to read the text on the sign?",
    "Describe what you see.",
    "What are you seeing in this image?",
    "What kind of bird is this?",
    "Is this a llama or an alpaca?",
    "Who created this logo?",
    "What version of Windows is on the screen?",
    "Which of these dishes are you most sure about?",
    "What's your opinion of this painting?",
    "What is your best guess for the location?",
    "Who trained the dog in this picture?",
    "Qui est sur la photo ?",
    "Wer ist das auf dem Bild?",
    "¿Quién es esta persona?",
    "这是什么车？",
    "这张图片里是谁？",
    "",
]


@pytest.mark.parametrize("prompt", IDENTITY_QUESTIONS)
def test_identity_questions_are_recognised(prompt: str) -> None:
    assert is_identity_question(prompt)


@pytest.mark.parametrize("prompt", ORDINARY_QUESTIONS)
def test_ordinary_image_questions_are_not_identity_questions(prompt: str) -> None:
    assert not is_identity_question(prompt)


def test_tables_are_large_enough_and_the_tag_is_stable() -> None:
    assert len(IDENTITY_QUESTIONS) >= 15 and len(ORDINARY_QUESTIONS) >= 15
    assert IDENTITY_QUESTION_TAG == "identity-question"

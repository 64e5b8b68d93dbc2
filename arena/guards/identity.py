"""Identity terms: find answers that reveal which model wrote them, and prompts that ask who a model is.

A vote on an anonymous battle only measures quality while the voter does not know which model is which.
An answer that says "I am GPT-4o, made by OpenAI" gives that away; the battle is then marked as an
identity leak and its vote never counts in ratings (Chatbot Arena drops such votes in its cleaning step
with a list of about 37 words). A term the voter wrote in their own prompt is no leak: "compare this to
ChatGPT" invites the name back.

Matching is case-insensitive (casefold) with word boundaries on the Latin side of a term, so "grok"
does not fire on "grokking" nor "llama" on "llamas"; a space, hyphen or underscore inside a term matches
any run of them or none ("GPT-4o" also finds "gpt 4o" and "GPT4o", "Hugging Face" finds "HuggingFace").
Chinese, Japanese and Korean characters count as boundaries, since those scripts put no spaces between
words ("我是Qwen" is a leak of "Qwen"). All terms are compiled into one regular expression, factored as a
prefix tree, so a check stays far below a millisecond for a long answer and a few hundred terms.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

#: The battle tag the service adds when the voter asked a model who or what it is.
IDENTITY_QUESTION_TAG = "identity-question"

#: Terms shorter than this are never identity terms: they would match almost anywhere.
MIN_TERM_LENGTH = 2

#: Well-known model families and providers. Left out on purpose, because on their own they are common
#: words or names in answers about images, and the leak they would catch names a provider listed here:
#: plain "meta" (metadata, meta-analysis; "Meta AI" is here), "phi" (the Greek letter; "Phi-3" and
#: "Phi-4" are here), "yi" (pinyin syllable and the Yi people; "Yi-VL", "Yi-34B" and "01.AI" are here),
#: "command" / "command r" (the Mac shortcut Command-R; "Cohere" is here), "copilot" (the aircraft seat;
#: "Microsoft" is here), "ernie" (Bert and Ernie; "ERNIE Bot" and "Baidu" are here), "moonshot" (an
#: ordinary word; "Moonshot AI" is here), "palm" (the tree and the hand), "tulu" (a language of India)
#: and "hermes" (the god, the fashion house).
#: Kept although they have another meaning, because a leak names them more often than an image does:
#: "llama" (the animal: "a llama in a field" counts as a leak, "llamas" does not, see the tests),
#: "bard" (Shakespeare), "gemma" and "kimi" (first names), "reka" (a river in Slavic place names),
#: "google" and "microsoft" (screenshots of their products).
BUILTIN_IDENTITY_TERMS: tuple[str, ...] = (
    # OpenAI
    "GPT", "ChatGPT", "OpenAI", "GPT-4", "GPT-4o", "GPT-4V", "GPT-5",
    # Anthropic
    "Claude", "Anthropic",
    # Google
    "Google", "DeepMind", "Bard", "Gemini", "Gemma", "PaliGemma", "LaMDA",
    # Meta
    "Meta AI", "Llama", "LLaVA",
    # Mistral
    "Mistral", "Mixtral", "Pixtral",
    # Alibaba
    "Qwen", "Alibaba", "Tongyi", "Qianwen", "通义千问", "阿里巴巴",
    # DeepSeek
    "DeepSeek", "深度求索",
    # 01.AI
    "01.AI", "Yi-VL", "Yi-34B", "Lingyiwanwu", "零一万物",
    # Baichuan, Zhipu
    "Baichuan", "百川", "ChatGLM", "GLM-4", "CogVLM", "CogAgent", "Zhipu", "智谱",
    # Shanghai AI Lab, OpenBMB
    "InternLM", "InternVL", "书生", "MiniCPM", "OpenBMB",
    # Hugging Face, Allen AI
    "Hugging Face", "Idefics", "SmolVLM", "Allen AI", "AI2", "Molmo",
    # Microsoft
    "Microsoft", "Phi-3", "Phi-4", "Florence-2",
    # xAI, Reka, Cohere, Baidu, Moonshot, StepFun, LMSYS
    "Grok", "xAI", "Reka", "Cohere", "Aya Vision", "ERNIE Bot", "Baidu", "文心一言", "Moonshot AI", "Kimi",
    "月之暗面", "StepFun", "阶跃星辰", "Vicuna", "LMSYS",
)  # fmt: skip

# Word characters that take part in word boundaries: letters, digits and "_", except the scripts that
# write words without spaces between them (CJK ideographs, kana, hangul), where any spot is a boundary.
_UNSPACED = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
_WORD = f"[^\\W{_UNSPACED}]"
_SEPARATORS = re.compile(r"[\s_-]+")
_SEPARATOR_PATTERN = r"[\s_-]*"


class _Named(Protocol):
    """What :meth:`IdentityTerms.from_specs` reads of a roster entry (a :class:`models.roster.ModelSpec`)."""

    name: str
    display_name: str | None
    organization: str
    aliases: list[str]


def _key(text: str) -> str:
    """The form two spellings of one term share: casefolded, with spaces, hyphens and underscores gone."""
    return _SEPARATORS.sub("", text.casefold())


def _bounded(char: str) -> bool:
    """Whether a term that starts or ends with ``char`` needs a word boundary there."""
    return re.fullmatch(_WORD, char) is not None


def _tokens(term: str) -> list[str]:
    """A term as regex pieces: boundary, escaped characters, flexible separators, boundary."""
    folded = _SEPARATORS.sub(" ", term.casefold()).strip(" ")
    pieces = ["(?<!" + _WORD + ")"] if _bounded(folded[0]) else []
    pieces += [_SEPARATOR_PATTERN if char == " " else re.escape(char) for char in folded]
    pieces.append("(?!" + _WORD + ")" if _bounded(folded[-1]) else "")
    return pieces


def _trie_pattern(sequences: Iterable[list[str]]) -> str:
    """One regex for all token sequences, factored by common prefix; a longer term is tried first."""
    trie: dict[str, dict] = {}
    for pieces in sequences:
        node = trie
        for piece in pieces:
            node = node.setdefault(piece, {})
        node[""] = {}  # end of a term

    def emit(node: dict[str, dict]) -> str:
        if not node:
            return ""
        # Characters and separators first, a term ending here (its boundary check or nothing) last, so
        # that the regex tries the longer term before the shorter one at the same spot.
        pieces = sorted(node, key=lambda piece: piece == "" or piece.startswith("(?!"))
        branches = [piece + emit(node[piece]) for piece in pieces]
        if len(branches) == 1:
            return branches[0]
        return "(?:" + "|".join(branches) + ")"

    return emit(trie)


@dataclass(frozen=True)
class IdentityTerms:
    """The identity terms of an arena, compiled once; :meth:`find` reports a leak in an answer.

    ``terms`` keeps each term as written (the first spelling wins when two differ only in case or
    separators); terms shorter than two characters and blank ones are dropped.
    """

    terms: tuple[str, ...]
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _by_key: dict[str, str] = field(init=False, repr=False, compare=False)
    _single: dict[str, re.Pattern[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_key: dict[str, str] = {}
        for raw in self.terms:
            term = raw.strip()
            key = _key(term)
            if len(term) >= MIN_TERM_LENGTH and len(key) >= MIN_TERM_LENGTH and key not in by_key:
                by_key[key] = term
        kept = tuple(by_key.values())
        tokens = {key: _tokens(term) for key, term in by_key.items()}
        pattern = _trie_pattern(tokens.values()) if tokens else r"(?!)"
        object.__setattr__(self, "terms", kept)
        object.__setattr__(self, "_by_key", by_key)
        object.__setattr__(self, "_pattern", re.compile(pattern))
        object.__setattr__(self, "_single", {key: re.compile("".join(t)) for key, t in tokens.items()})

    @classmethod
    def from_specs(
        cls, specs: Iterable[_Named], builtin: Iterable[str] = BUILTIN_IDENTITY_TERMS
    ) -> IdentityTerms:
        """The terms of a roster: each model's name, display name, organization and aliases, then ``builtin``.

        Roster spellings come first, so a leak is reported as the roster writes it ("OpenAI", not "openai").
        """
        terms: list[str] = []
        for spec in specs:
            terms += [spec.name, spec.display_name or "", spec.organization, *spec.aliases]
        terms += list(builtin)
        return cls(tuple(terms))

    def find(self, answer: str, prompts: Sequence[str] = ()) -> str | None:
        """The first identity term in ``answer`` that none of ``prompts`` (the voter's turns) contains.

        Returns the term as written in :attr:`terms`, or None when the answer reveals nothing new.
        Where terms overlap at one spot, the longest wins ("GPT-4o" rather than "GPT").
        """
        folded_prompts = [prompt.casefold() for prompt in prompts]
        for match in self._pattern.finditer(answer.casefold()):
            key = _key(match.group())
            single = self._single[key]
            if not any(single.search(prompt) for prompt in folded_prompts):
                return self._by_key[key]
        return None

    def all_in(self, text: str) -> list[str]:
        """Every identity term in ``text``, in order of appearance, each once (for reports and tests)."""
        found = [self._by_key[_key(match.group())] for match in self._pattern.finditer(text.casefold())]
        return list(dict.fromkeys(found))


# --- prompts that ask a model who it is -------------------------------------------------------------

_YOU = r"(?:you|u|ya|yourself)"
_ARE = r"(?:are|r)"
_MODEL_NOUN = (
    r"(?:(?:large |vision |visual )?language model|llm|vlm|mllm|model|ai|a i|chatbot|chat bot|bot|assistant"
    r"|version|system|neural network|gpt|model version|ai model|ai assistant)"
)
_KIND = r"(?:(?:kind|type|sort) of |exact |specific |particular )?"
_MAKE = (
    r"(?:made|make|created|create|trained|train|built|build|developed|develop|designed|design|programmed"
    r"|program|coded|code|owns|own|engineered|engineer|released|release|invented|invent)"
)
_MAKER = r"(?:creator|creators|maker|makers|developer|developers|author|authors|owner|owners|company|team)"
_FAMILIES = (
    r"(?:chat ?gpt|gpt(?: ?\d\w*)?|openai|claude|anthropic|gemini|bard|gemma|google|llama|meta|llava|qwen"
    r"|alibaba|tongyi|mistral|mixtral|pixtral|deepseek|yi|glm|chatglm|internvl|internlm|minicpm|cogvlm"
    r"|idefics|smolvlm|phi ?\d?|microsoft|copilot|bing|grok|xai|reka|cohere|command r|molmo|ernie|kimi)"
)

_IDENTITY_QUESTIONS = re.compile(
    "|".join(
        [
            # English
            rf"\bwho {_ARE} {_YOU}\b",
            r"\bwho am i (?:talking|speaking|chatting) (?:to|with)\b",
            rf"^(?:so |and |but |ok |okay |hey |hi |hello )*what {_ARE} {_YOU}$",
            r"\b(?:whats|what is|tell me|say|give me|what are) (?:your|ur|yo) (?:real |actual |full |true )?"
            r"(?:name|names|model|model name|model names|model version|underlying model|base model"
            r"|architecture|model family|identity)\b",
            rf"\b(?:what|which) {_KIND}{_MODEL_NOUN} {_ARE} {_YOU}\b",
            rf"\b(?:what|which) {_KIND}{_MODEL_NOUN} am i (?:talking|speaking|chatting) (?:to|with)\b",
            rf"\bwho {_MAKE} {_YOU}\b",
            rf"\bwho (?:is|are|was|were) (?:your|ur) {_MAKER}\b",
            rf"\b(?:what|which) (?:company|companies|organization|organisation|lab|team|people|firm|business"
            rf"|corporation|country) (?:{_MAKE}|is behind|are behind|stands behind) {_YOU}\b",
            rf"\b(?:are|r) {_YOU} (?:a |an )?(?:version of |based on |made by |from )?{_FAMILIES}\b",
            rf"\b(?:are|r|were) {_YOU} {_MAKE} by\b",
            r"\b(?:introduce|identify|describe) (?:yourself|urself)\b",
            r"\btell me about (?:yourself|urself)\b",
            rf"\bwhat do (?:people|they|i) call {_YOU}\b",
            # French
            r"\bqui (?:es|etes) (?:tu|vous)\b",
            r"\bquel (?:modele|llm|ia|genre de modele|type de modele) (?:es tu|etes vous|est ce)\b",
            r"\bcomment (?:t ?appelles tu|tu t ?appelles|vous appelez vous)\b",
            r"\bqui (?:t ?a|vous a) (?:cree|entraine|developpe|concu|fait)\b",
            # German
            r"\bwer (?:bist du|sind sie)\b",
            r"\bwelches (?:ki )?(?:modell|sprachmodell|llm) (?:bist du|sind sie)\b",
            r"\bwie (?:heisst du|heissen sie)\b",
            r"\bwer hat (?:dich|sie) (?:erstellt|entwickelt|trainiert|gemacht|programmiert|gebaut)\b",
            # Spanish, Italian, Portuguese
            r"\bquien (?:eres|es usted|sois)\b",
            r"\bque (?:modelo|llm|ia) (?:eres|es usted)\b",
            r"\bcomo te llamas\b",
            r"\bquien te (?:creo|hizo|entreno|desarrollo|programo)\b",
            r"\bchi sei\b",
            r"\bquem (?:e|es) (?:voce|tu)\b",
            # Chinese, Japanese
            r"(?:你|您)是(?:谁|誰)",
            r"(?:你|您)(?:是|叫)(?:什么|什麼|哪个|哪個|哪一个|哪种|哪種|哪家)(?:名字|模型|大模型|语言模型|ai|版本|公司)",
            r"(?:你|您)(?:叫什么|叫什麼|叫啥|的名字是)",
            r"(?:谁|誰|哪家公司|哪个公司)(?:开发|開發|创造|創造|训练|訓練|制作|製作|创建|創建)(?:了)?(?:你|您)",
            r"(?:あなた|君)は(?:誰|だれ|何者|どのモデル)",
        ]
    )
)


def _normalize_prompt(prompt: str) -> str:
    """Casefold, drop accents and apostrophes, turn punctuation into spaces and squeeze the spaces."""
    text = unicodedata.normalize("NFKD", prompt.casefold())
    text = "".join(char for char in text if not unicodedata.combining(char))
    text = re.sub(r"['\u2018\u2019\u02bc`\u00b4]", "", text)
    text = re.sub(r"[\W_]+", " ", text)
    return text.strip()


def is_identity_question(prompt: str) -> bool:
    """Whether a voter's prompt asks the model who or what it is ("who are you", "what model are you")."""
    return _IDENTITY_QUESTIONS.search(_normalize_prompt(prompt)) is not None

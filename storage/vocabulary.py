"""The vote vocabulary: winners, ties, battle modes and states, judge answer orders and verdict labels.

Defined once here, low in the package graph, so ``storage``, ``analysis`` and ``arena`` all import the
same spellings; this module imports nothing of the project. Winners use the FastChat / Chatbot Arena
vocabulary so battle records move between tools. Every tuple is the ``typing.get_args`` of its
``Literal`` type, so each word is written once and a type checker can check spelled-out values.

What is stored (the database's check constraints, exported files) uses exactly these strings.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

#: Vote outcomes: model A won, model B won, a tie, or a tie where both answers were bad.
Winner = Literal["model_a", "model_b", "tie", "tie (bothbad)"]
WINNERS: Final[tuple[Winner, ...]] = get_args(Winner)
WIN_A, WIN_B, TIE, TIE_BOTHBAD = WINNERS
#: Both tie kinds: the rating and agreement code count them as the same outcome.
TIE_WINNERS: Final[frozenset[Winner]] = frozenset({TIE, TIE_BOTHBAD})

#: How a battle was started: anonymous models, named models (side by side), or one model alone.
BattleMode = Literal["anony", "named", "direct"]
BATTLE_MODES: Final[tuple[BattleMode, ...]] = get_args(BattleMode)
ANONY, NAMED, DIRECT = BATTLE_MODES
#: The modes whose battles people vote on (a direct chat has no opponent, so no vote).
VOTED_MODES: Final[tuple[BattleMode, ...]] = (ANONY, NAMED)

#: A battle's life cycle in the database.
BattleState = Literal["generating", "ready", "voted", "invalid"]
BATTLE_STATES: Final[tuple[BattleState, ...]] = get_args(BattleState)
GENERATING, READY, VOTED, INVALID = BATTLE_STATES

#: The order a judge saw a battle's answers in: ``ab`` (model A's answer first) or ``ba`` (swapped).
AnswerOrder = Literal["ab", "ba"]
ANSWER_ORDERS: Final[tuple[AnswerOrder, ...]] = get_args(AnswerOrder)
ORDER_AB, ORDER_BA = ANSWER_ORDERS

#: A judge's verdict in the order it saw the answers: the first ("A"), the second ("B") or a tie.
VerdictLabel = Literal["A", "B", "tie"]
VERDICT_LABELS: Final[tuple[VerdictLabel, ...]] = get_args(VerdictLabel)

__all__ = [
    "ANONY",
    "ANSWER_ORDERS",
    "BATTLE_MODES",
    "BATTLE_STATES",
    "DIRECT",
    "GENERATING",
    "INVALID",
    "NAMED",
    "ORDER_AB",
    "ORDER_BA",
    "READY",
    "TIE",
    "TIE_BOTHBAD",
    "TIE_WINNERS",
    "VERDICT_LABELS",
    "VOTED",
    "VOTED_MODES",
    "WINNERS",
    "WIN_A",
    "WIN_B",
    "AnswerOrder",
    "BattleMode",
    "BattleState",
    "VerdictLabel",
    "Winner",
]

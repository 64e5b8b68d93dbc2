"""``python -m analysis agreement``: how well a judge agrees with people (MT-Bench definitions)."""

from __future__ import annotations

import argparse

import numpy as np

from analysis.commands.options import CliError, add_bootstrap_options, add_output_options
from analysis.commands.output import emit, render_figures
from analysis.commands.sources import judge_frames, read_jsonl

DESCRIPTION = """\
Agreement between a judge's verdicts and people's votes on the same battles, as the
MT-Bench paper defines it: each judge verdict is compared with every human vote on the
same (question, model pair, turn); 'with ties' counts three outcomes, 'without ties' drops
comparisons where either side says tie. Also Cohen's kappa, the confusion matrix, bootstrap
95% intervals, and (from a database) the judge's position consistency across answer orders."""

EPILOG = """\
examples:
  python -m analysis agreement --db sqlite:///arena.db --judge gpt-4o-2024-11-20
  python -m analysis agreement --human human.jsonl --judge-file gpt4_pair.jsonl --format json"""


HELP = "judge-human agreement (MT-Bench definitions), Cohen's kappa, position consistency"


def add_arguments(ag: argparse.ArgumentParser) -> None:
    """The ``agreement`` command's options."""
    ag.add_argument("--db", metavar="URL", help="arena database holding votes and the judge's verdicts")
    ag.add_argument("--judge", metavar="NAME", help="the judge model's name (with --db)")
    ag.add_argument("--template", metavar="VERSION", help="only verdicts of this prompt template version")
    ag.add_argument("--human", metavar="PATH", help="human votes, JSONL in the MT-Bench human-judgment shape")
    ag.add_argument(
        "--judge-file", metavar="PATH", help="the judge's final verdicts, JSONL in the same shape"
    )
    ag.add_argument("--include-named", action="store_true", help="with --db: also named battles")
    ag.add_argument("--by-category", action="store_true", help="also report per category")
    add_bootstrap_options(
        ag, rounds_help="bootstrap rounds (default: 1000)", seed_help="random seed (default: 0)"
    )
    add_output_options(ag, ("table", "json"))


def run(args: argparse.Namespace) -> int:
    """The ``agreement`` command: agreement figures from a database or from two JSONL files."""
    from analysis.agreement import agreement, human_human_agreement, position_consistency
    from analysis.io import save_result

    rng = np.random.default_rng(args.seed)
    if args.db and args.judge and not (args.human or args.judge_file):
        human, per_order, judge = judge_frames(
            args.db,
            args.judge,
            template=args.template,
            include_named=args.include_named,
            categories=args.by_category,
        )
        result = agreement(human, judge, bootstrap=args.bootstrap, rng=rng, by_category=args.by_category)
        figures = {"judge": args.judge, **result.to_dict()}
        figures["position_consistency"] = position_consistency(
            per_order[["battle_id", "answer_order", "verdict"]]
        ).to_dict()
        params = {"template": args.template, "include_named": args.include_named, "bootstrap": args.bootstrap}
        save_result(args.db, "judge_agreement", args.judge, {**params, "seed": args.seed}, figures)
    elif args.human and args.judge_file and not (args.db or args.judge):
        human = read_jsonl(args.human, "human votes")
        judge = read_jsonl(args.judge_file, "judge verdicts")
        result = agreement(human, judge, bootstrap=args.bootstrap, rng=rng, by_category=args.by_category)
        figures = result.to_dict()
        figures["human_human"] = human_human_agreement(human).to_dict()
    else:
        raise CliError("give either --db URL --judge NAME, or --human PATH --judge-file PATH")
    emit(render_figures(figures, args.format), args.out)
    return 0

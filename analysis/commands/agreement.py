"""``python -m analysis agreement``: how well a judge agrees with people (MT-Bench definitions)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import pandas as pd

from analysis.commands.options import CliError, add_bootstrap_options, add_output_options, positive_int
from analysis.commands.output import emit, render_figures
from analysis.commands.sources import from_db, judge_frames, read_jsonl
from analysis.ensemble import ENSEMBLE_RULES

DESCRIPTION = """\
Agreement between a judge's verdicts and people's votes on the same battles, as the
MT-Bench paper defines it: each judge verdict is compared with every human vote on the
same (question, model pair, turn); 'with ties' counts three outcomes, 'without ties' drops
comparisons where either side says tie. Also Cohen's kappa, the confusion matrix, bootstrap
95% intervals, and (from a database) the judge's position consistency across answer orders.
Several --judge options (from a database) give one row per judge, side by side; --ensemble
adds the judges combined per battle (majority: the verdict a strict majority of the judges
with a verdict give, else a tie; unanimous: the verdict all of them give, else a tie; a
battle needs --quorum judges with a verdict, by default a strict majority of the ensemble
for majority and every judge for unanimous)."""

EPILOG = """\
examples:
  python -m analysis agreement --db sqlite:///arena.db --judge gpt-4o-2024-11-20
  python -m analysis agreement --human human.jsonl --judge-file gpt4_pair.jsonl --format json
  python -m analysis agreement --db sqlite:///arena.db --ensemble majority \
--judge judge-a --judge judge-b --judge judge-c"""


HELP = "judge-human agreement (MT-Bench definitions), Cohen's kappa, position consistency"


def add_arguments(ag: argparse.ArgumentParser) -> None:
    """The ``agreement`` command's options."""
    ag.add_argument("--db", metavar="URL", help="arena database holding votes and the judge's verdicts")
    ag.add_argument(
        "--judge",
        metavar="NAME",
        action="append",
        help="the judge model's name (with --db); repeat for several judges side by side",
    )
    ag.add_argument(
        "--ensemble",
        choices=ENSEMBLE_RULES,
        help="also combine the judges' verdicts per battle by this rule (needs two or more --judge)",
    )
    ag.add_argument(
        "--quorum",
        type=positive_int,
        metavar="K",
        help="judges with a verdict an ensemble verdict needs (default: majority of them; all for unanimous)",
    )
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
    judges = list(dict.fromkeys(args.judge or []))
    if args.ensemble is not None and not (args.db and len(judges) >= 2):
        raise CliError("--ensemble needs --db and two or more --judge")
    if args.quorum is not None and args.ensemble is None:
        raise CliError("--quorum applies to --ensemble only")
    if args.db and len(judges) > 1 and not (args.human or args.judge_file):
        figures = several_judges(args, judges, rng)
    elif args.db and judges and not (args.human or args.judge_file):
        human, per_order, judge = judge_frames(
            args.db,
            judges[0],
            template=args.template,
            include_named=args.include_named,
            categories=args.by_category,
        )
        result = agreement(human, judge, bootstrap=args.bootstrap, rng=rng, by_category=args.by_category)
        figures = {"judge": judges[0], **result.to_dict()}
        figures["position_consistency"] = position_consistency(
            per_order[["battle_id", "answer_order", "verdict"]]
        ).to_dict()
        params = {"template": args.template, "include_named": args.include_named, "bootstrap": args.bootstrap}
        save_result(args.db, "judge_agreement", judges[0], {**params, "seed": args.seed}, figures)
    elif args.human and args.judge_file and not (args.db or judges):
        human = read_jsonl(args.human, "human votes")
        judge = read_jsonl(args.judge_file, "judge verdicts")
        result = agreement(human, judge, bootstrap=args.bootstrap, rng=rng, by_category=args.by_category)
        figures = result.to_dict()
        figures["human_human"] = human_human_agreement(human).to_dict()
    else:
        raise CliError("give either --db URL --judge NAME, or --human PATH --judge-file PATH")
    if "table" in figures and args.format == "table":
        emit(format_side_by_side(figures), args.out)
    else:
        emit(render_figures(figures, args.format), args.out)
    return 0


def several_judges(args: argparse.Namespace, judges: list[str], rng: np.random.Generator) -> dict[str, Any]:
    """Each judge's agreement with people from the database, the ensemble's too with ``--ensemble``,
    and the side-by-side table of them all (also kept in the database for the admin page and report)."""
    from analysis.agreement import agreement, combine_orders, position_consistency
    from analysis.ensemble import combine_judges, default_quorum, side_by_side, status_counts
    from analysis.io import load_battles_db, load_judge_verdicts_db, save_result

    human = from_db(
        args.db, load_battles_db, anony_only=not args.include_named, categories=args.by_category
    ).assign(turn=1)
    results: dict[str, dict[str, Any]] = {}
    finals: dict[str, pd.DataFrame] = {}
    for name in judges:
        per_order = from_db(args.db, load_judge_verdicts_db, judge=name, template_version=args.template)
        if per_order.empty:
            raise CliError(
                f"no verdicts of judge {name!r} in {args.db}: run `python -m analysis judge` first"
            )
        final = combine_orders(per_order[["battle_id", "model_a", "model_b", "answer_order", "verdict"]])
        finals[name] = final.rename(columns={"battle_id": "question_id"}).assign(turn=1)
        result = agreement(
            human, finals[name], bootstrap=args.bootstrap, rng=rng, by_category=args.by_category
        )
        results[name] = {
            **result.to_dict(),
            "position_consistency": position_consistency(
                per_order[["battle_id", "answer_order", "verdict"]]
            ).to_dict(),
        }
    ensemble: dict[str, Any] | None = None
    if args.ensemble is not None:
        quorum = args.quorum or default_quorum(args.ensemble, len(judges))
        combined = combine_judges(finals, args.ensemble, quorum=quorum)
        name = str(combined["judge"].iloc[0])
        result = agreement(human, combined, bootstrap=args.bootstrap, rng=rng, by_category=args.by_category)
        results[name] = result.to_dict()
        ensemble = {
            "name": name,
            "rule": args.ensemble,
            "quorum": quorum,
            "judges": judges,
            "status_counts": status_counts(combined),
        }
    table = side_by_side(results)
    figures: dict[str, Any] = {
        "judges": judges,
        "ensemble": ensemble,
        "table": json.loads(table.to_json(orient="records")),
        "results": results,
    }
    subject = ensemble["name"] if ensemble else "+".join(judges)
    params = {
        "template": args.template,
        "include_named": args.include_named,
        "bootstrap": args.bootstrap,
        "seed": args.seed,
    }
    save_result(args.db, SIDE_BY_SIDE_KIND, subject, params, figures)
    return figures


#: The ``analysis_results`` kind of the side-by-side figures (read by ``judge_agreement_sections``).
SIDE_BY_SIDE_KIND = "judge_agreement_side_by_side"


def _with_interval(value: Any, lo: Any, hi: Any) -> str:
    if value is None:
        return "-"
    shown = f"{value:.3f}"
    return shown if lo is None or hi is None else f"{shown} [{lo:.3f}, {hi:.3f}]"


def side_by_side_text(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The side-by-side rows with each figure and its 95% interval as one text column, for display."""
    return pd.DataFrame(
        {
            "judge": [r["judge"] for r in rows],
            "n": [r["n"] for r in rows],
            "agreement (with ties) [95% CI]": [
                _with_interval(
                    r["agreement_with_ties"], r["agreement_with_ties_lo"], r["agreement_with_ties_hi"]
                )
                for r in rows
            ],
            "agreement (without ties) [95% CI]": [
                _with_interval(
                    r["agreement_without_ties"],
                    r["agreement_without_ties_lo"],
                    r["agreement_without_ties_hi"],
                )
                for r in rows
            ],
            "Cohen's kappa [95% CI]": [
                _with_interval(r["cohen_kappa"], r["cohen_kappa_lo"], r["cohen_kappa_hi"]) for r in rows
            ],
            "position consistency": [
                "-" if r["consistency"] is None else f"{r['consistency']:.3f}" for r in rows
            ],
        }
    )


def format_side_by_side(figures: dict[str, Any]) -> str:
    """The side-by-side table as aligned text, with the ensemble's rule and battle counts below it."""
    frame = side_by_side_text(figures["table"])
    cells = [list(frame.columns), *[[str(v) for v in row] for row in frame.itertuples(index=False)]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(frame.columns))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    ensemble = figures.get("ensemble")
    if ensemble:
        counts = ", ".join(f"{k} {v}" for k, v in ensemble["status_counts"].items())
        lines.append("")
        lines.append(
            f"{ensemble['name']}: rule {ensemble['rule']}, quorum {ensemble['quorum']} of "
            f"{len(ensemble['judges'])} judges; battles: {counts}"
        )
    return "\n".join(lines) + "\n"


def judge_agreement_sections(url: str) -> list[tuple[str, pd.DataFrame]]:
    """Report sections (``analysis.report`` ``extra_sections``): the latest side-by-side agreement table
    kept in the database by ``agreement --judge A --judge B ...``; none when there is none."""
    from analysis.io import latest_result

    stored = latest_result(url, SIDE_BY_SIDE_KIND)
    if stored is None:
        return []
    figures = stored["result"]
    title = "Judges and people: agreement side by side"
    ensemble = figures.get("ensemble")
    if ensemble:
        title += f" (ensemble: {ensemble['rule']} of {', '.join(ensemble['judges'])})"
    return [(title, side_by_side_text(figures["table"]))]

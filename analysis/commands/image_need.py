"""``python -m analysis image-need``: MMStar's test of whether a battle's prompt needs its image."""

from __future__ import annotations

import argparse

from analysis.commands.labelling import add_worker_options, run_labelling, start_model

#: The command's name on the command line (the module's name has an underscore).
NAME = "image-need"

HELP = "tag battles vision-indispensable or answerable-without-image (MMStar's blind-answer test)"

DESCRIPTION = """\
For each stored battle whose first turn has images: a roster model answers the prompt
WITHOUT the images (the blind answer); a judge (--judge, default the same model) reads the
prompt, the two answers written with the images and the blind answer, and says whether the
blind answer solves the prompt as well. The battle is then labelled and tagged
answerable-without-image or vision-indispensable (source "model@version"); the blind answer
and the judge's output are stored as evidence. Battles without images are skipped.
`ratings --category vision-indispensable` then gives MMStar's leaderboard. Resumable.
Prints a JSON summary."""

EPILOG = """\
example:
  python -m analysis image-need --db sqlite:///arena.db --config configs/example-api.yaml \
--model gpt-4o-2024-11-20 --concurrency 16"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``image-need`` command's options."""
    add_worker_options(p, model_help="the roster model that answers without the image")
    p.add_argument(
        "--judge", metavar="NAME", help="the roster model that compares the answers (default: --model)"
    )


def run(args: argparse.Namespace) -> int:
    """Label pending battles with images and print the run's summary."""
    from analysis.image_need import ImageNeedRunner
    from analysis.io import image_loader
    from analysis.model_tasks import task_params

    spec, backend = start_model(args, args.model)
    judge_spec, judge = (spec, backend) if args.judge in (None, spec.name) else start_model(args, args.judge)
    return run_labelling(
        args,
        lambda sessions: ImageNeedRunner(
            sessions,
            backend,
            model_name=spec.name,
            params=task_params(spec),
            judge=judge,
            judge_name=judge_spec.name,
            judge_params=task_params(judge_spec),
            judge_max_images=judge_spec.max_images,
            load_image=image_loader(args.images),
            concurrency=args.concurrency,
        ),
        {"model": spec.name, "judge": judge_spec.name},
    )

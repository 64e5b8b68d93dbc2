"""``python -m analysis categorize``: a roster model tags each battle's first turn with a category,
its language and flags (VisionArena's taxonomy by default)."""

from __future__ import annotations

import argparse

from analysis.commands.labelling import add_worker_options, run_labelling, start_model
from analysis.commands.options import CliError

HELP = "tag battles with a category, language and flags by a roster model (VisionArena taxonomy)"

DESCRIPTION = """\
A vision model from a roster sees each stored battle's first turn (text and images) and
names one category of the taxonomy (default: VisionArena's captioning, ocr, coding,
entity-recognition, homework, humor, diagram, creative-writing), the prompt's language
(ISO 639-1) and the flags that apply (refusal-bait, identity-question). Every output is
stored in battle_labels under the model's name and the template version, and written as
battle tags (source "model@version"), so `ratings --category ocr` filters on it. A battle
that people already tagged with a category keeps their tag. Output without one known
category is stored as an error, never guessed. Resumable: a rerun only asks what is left.
Prints a JSON summary."""

EPILOG = """\
example:
  python -m analysis categorize --db sqlite:///arena.db --config configs/example-vllm.yaml \
--model qwen2.5-vl-7b --concurrency 16"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``categorize`` command's options."""
    add_worker_options(p, model_help="the tagger's name in the roster (a vision model sees the images)")
    p.add_argument(
        "--taxonomy",
        metavar="FILE",
        help="taxonomy YAML (name, categories and flags with descriptions; default: analysis/taxonomy.yaml)",
    )


def run(args: argparse.Namespace) -> int:
    """Categorize pending battles and print the run's summary."""
    from analysis.categorize import Categorizer, load_taxonomy
    from analysis.io import image_loader
    from analysis.model_tasks import task_params

    try:
        taxonomy = load_taxonomy(args.taxonomy)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    spec, backend = start_model(args, args.model)
    return run_labelling(
        args,
        lambda sessions: Categorizer(
            sessions,
            backend,
            tagger_name=spec.name,
            params=task_params(spec),
            taxonomy=taxonomy,
            max_images=spec.max_images,
            load_image=image_loader(args.images),
            concurrency=args.concurrency,
        ),
        {"taxonomy": taxonomy.name},
    )

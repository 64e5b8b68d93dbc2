"""The commands of ``python -m analysis``, one module each (``ratings``, ``report``, ``judge``,
``agreement``, ``compare``). Every command module has ``add_parser(subparsers)``, which declares the
command and its options, and ``run(args) -> int``, which carries it out.

Shared pieces: ``options`` (argument types and the option groups several commands use, plus
``CliError``), ``sources`` (where commands read battles and verdicts from) and ``output`` (how results
are printed). ``analysis.cli`` assembles the parser and reports errors.
"""

"""Bulk import and export of voted battles in the FastChat / Chatbot Arena "clean battle" format.

The package's modules, one concern each: ``formats`` (the one reader of battle files, also used by
``analysis``), ``records`` (the typed battle record), ``validation`` (record checks), ``importer``
(orchestration), ``loaders`` (dialect-specific bulk writing), ``bulk_sql`` (the import's other
queries: models, lookups, locks, index deferral, id allocation) and ``export``. Callers import
from the module that holds a name (``importer.import_battles``, ``export.export_battles``,
``formats.TransferError``); this file imports nothing, so reading a battle file does not load
SQLAlchemy or the schema.

Export writes one record per voted battle (anonymous or named; direct chats are not battles), in vote
time order, as a FastChat JSON list (``fastchat``), JSON Lines (``jsonl``) or Parquet (``parquet``).
The same database always gives the same bytes.

Import reads a FastChat JSON list or JSONL file (told apart by content; a UTF-8 byte-order mark is
skipped) or a Parquet file (by its ``PAR1`` magic or ``.parquet`` extension), which is everything
export writes, and writes it in one transaction, in batches, in question_id
order (so key indexes grow at their end). No ORM objects are made. A first pass reads only each
record's question_id and models (msgspec, about a microsecond a record); then each batch is validated
while a helper thread writes the batch before it, so the database works while Python validates. A
record the fast, msgspec-typed path does not take goes through the general checks, which decide and
say what is wrong. An invalid file raises :class:`TransferError` naming its first problem in file
order and leaves the database as it was (what was written is rolled back); so does a file the first
pass cannot read, which is then validated whole before anything is written. On SQLite each batch is
staged with ``executemany`` into a TEMPORARY table without constraints (one row per turn, the first
also carrying the battle and its vote), then moved with one ``INSERT ... SELECT`` per table on the
helper thread (sqlite3 releases the GIL while a statement runs); on PostgreSQL the helper sends rows
straight into the tables with binary ``COPY``. What import does with the data:

* models missing from the database are created (name = display name, backend ``"imported"``,
  disabled so the arena never samples them for live battles); existing models are matched by name;
* a record whose ``question_id`` is already a battle in the database refuses the whole import (the
  file is not merged into or over existing battles); so does a ``question_id`` repeated in the file;
* battles get state ``"voted"``, source ``"import"``; turns and both sides' answers are rebuilt from
  ``conversation_a``/``conversation_b``. A record without conversations gets ``turn`` (default 1)
  turns with empty prompts and no answers, and exports again without conversation keys;
* ``images`` (a list of image sha256 per turn) become turn images; a hash not yet in ``images`` gets
  a placeholder row (``application/octet-stream``, size 0), since the file does not carry the bytes;
* text holding a NUL character is refused (PostgreSQL cannot store it), on every database alike.

Speed notes: on SQLite the import turns foreign-key enforcement and CHECK constraints off for its own
connection while it runs (it builds every value and reference itself, from validated records, under
SQLite's single write lock). On PostgreSQL, when the role may set ``session_replication_role``, the
transaction sets it to ``replica`` so the per-row foreign-key triggers are skipped, after locking the
referenced pre-existing rows ``FOR KEY SHARE`` just as those triggers would; otherwise the triggers
run and the import is slower. An import that brings more battles than the database holds drops the
indexes it would otherwise grow row by row and builds them again before committing (see
``defer_indexes``); on PostgreSQL, other sessions then wait until the commit to read or write
battles, votes, turns and responses.
"""

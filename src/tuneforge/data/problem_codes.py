"""The codes of the data checks' problems and warnings, each with its English message.

A problem the data package finds carries a stable ``code`` and its ``params`` beside the English
``message`` built from them here (the CLI prints that message; the web console says ``problem.<code>``
from its message files in the user's language, filled with the same params). This table is the one
source of the English wording: tests/web/test_console.py checks that every code has an entry in both
of the console's languages, with the same placeholders.

Record numbers in params count from 1, as lines do.
"""

from __future__ import annotations

from tuneforge.errors import Problem

MESSAGES: dict[str, str] = {
    # one field of a record (records.py, feedback.py)
    "parquet_temporal": "expected a string; got a {kind} from Parquet column {column} ({value}). Map a text "
    "column, or cast this one to string when writing the file.",
    "lone_surrogate": "holds a lone surrogate escape (\\ud800–\\udfff); it is not valid Unicode.",
    "number_not_finite": "expected a string; got the number {value}.",
    "not_text": "expected a string; got {got}.",
    "missing_field": "expected '{key}' (string) in {format} record; got nothing. Add the field or map "
    "another column with --map {key}=COLUMN.",
    "bad_history": "expected history as a list of [question, answer] pairs.",
    "non_text_part": "only text parts ({{'type': 'text', 'text': ...}}) can be trained on; got {got}.",
    "no_tool_calls": "expected a non-empty list of tool calls.",
    "bad_tool_call": "expected {{'function': {{'name': ..., 'arguments': ...}}}}.",
    "turns_not_list": "expected a list of turns; got {got}.",
    "empty_conversation": "empty conversation.",
    "turn_not_object": "expected an object per turn; got {got}.",
    "unknown_role": "unknown role {role}; use one of {known}.",
    "missing_turns": "expected '{key}' (a list of turns); got nothing.",
    "no_assistant_turn": "conversation has no assistant turn: nothing to train on.",
    "bad_tools": "expected a list of tool definitions; got {got}.",
    "bad_preference_side": "expected '{key}' as a string, a message or a list of messages; got {got}.",
    "bad_prompt": "expected '{key}' as a string or a list of messages.",
    "no_prompt": "preference pair has no prompt.",
    "prompt_ends_with": "the last turn is {role}; a prompt ends with the user's turn.",
    "openai_preference_input": "expected {{'messages': [...]}} (OpenAI's preference format); got {got}.",
    "bad_label": "expected 'label' true or false (is the completion a good answer?) in kto record; got "
    "{got}. Add label: true|false to the record, or map another column with --map label=COLUMN.",
    "completion_not_last": "the last turn must be the assistant's answer (the completion), after a user "
    "turn.",
    "template_refuses": "the chat template refuses this record: {reason}",
    # the dataset as a whole (formats.py, load.py)
    "mixed_formats": "this record is in {other} format but the dataset is {format}; keep one format per "
    "dataset (or pass --format).",
    "mapped_column_missing": "--map names column {column}, which no record has; columns are {columns}.",
    "format_undetected": "could not detect the dataset format from its keys {keys}. Pass --format "
    "({formats}) or map columns, e.g. --map prompt=content,response=summary.",
    "empty_dataset": "no records: the dataset is empty.",
    "upload_interrupted": "the server stopped while this upload was validated; upload again.",
    "too_many_problems": "stopped reading after {count} problems ({env}); fix these and validate again.",
    # warnings: the dataset is usable (load.py, dedup.py, validate.py)
    "empty_answers": "{count} record(s) have an empty assistant answer (first: record {first}); they teach "
    "the model to answer with nothing.",
    "not_alternating": "{count} record(s) do not alternate user/assistant turns (first: record {first}); "
    "some chat templates reject that.",
    "same_answers": "{count} preference pair(s) have the same chosen and rejected answer (first: record "
    "{first}); they teach nothing.",
    "numbers_as_text": "{count} value(s) were numbers and are used as text (this is the first); quote them "
    "in the file if that is not what you meant.",
    "exact_duplicates": "{count} record(s) repeat an earlier one once case and spaces are ignored (record = "
    "earlier record: {pairs}); `tuneforge datasets dedup` writes a copy without them.",
    "near_duplicates": "{count} record(s) are near-duplicates of an earlier one (word-shingle Jaccard ≥ "
    "{jaccard}; record ~ earlier record: {pairs}).",
    "eval_overlap": "{overlapping} of {eval_records} evaluation record(s) ({share}) are also in the training "
    "set{details}.",
    # reading files (readers.py, json_stream.py, sources.py, limits.py)
    "not_an_object": "expected an object; got {got}.",
    "invalid_json": "invalid JSON: {reason} (column {column}).",
    "invalid_json_bom": "invalid JSON: {reason} (column {column}). It is a byte-order mark (BOM, bytes EF "
    "BB BF) inside the file, as left by joining files with `cat`; save each part without a BOM (UTF-8, not "
    '"UTF-8 with BOM") or delete it.',
    "empty_file": "empty file.",
    "expected_list": "expected a list of records; got {got}.",
    "top_level_object": "expected a list of records at the top level; got an object. Wrap a single record "
    "in [ ].",
    "top_level_object_list": "expected a list of records at the top level; got an object. Wrap a single "
    "record in [ ]. If the records are under {key}, extract that list.",
    "too_deep": "lists/objects nested more than {max} deep ({env}).",
    "number_too_long": "a number with {digits} digits; at most {max} ({env}).",
    "invalid_json_lines": "invalid JSON: {reason} (column {column}). It looks like JSON Lines: rename it to "
    ".jsonl.",
    "too_many_cells": "more cells than header columns; quote fields holding commas.",
    "invalid_csv": "invalid CSV: {reason}",
    "empty_csv": "empty CSV: no header row.",
    "not_utf8": "not UTF-8 (invalid byte 0x{byte} at offset {offset}). Save it as UTF-8.",
    "not_utf8_gbk": "not UTF-8 (invalid byte 0x{byte} at offset {offset}). It decodes as GBK: convert it "
    "with `iconv -f GBK -t UTF-8 IN > OUT`.",
    "unreadable": "cannot be read: {reason}",
    "cannot_open": "cannot open: {reason}.",
    "cannot_list": "cannot list: {reason}.",
    "no_such_path": "no such file or folder.",
    "not_regular_file": "{kind}, not a regular file; refused.",
    "link_outside": "symbolic link leading outside the dataset folder; refused.",
    "link_to_folder": "symbolic link to a folder; not followed.",
    "no_data_files": "folder holds no .json, .jsonl, .csv or .parquet files.",
    "unsupported_file": "unsupported file type; use .json, .jsonl, .csv, .parquet, a folder or a .zip of "
    "them.",
    "dataset_too_large": "{size} is over the limit of {max} (raise {env}).",
    "data_over_limit": "more than {max} of data read: over the limit ({env}).",
    "too_many_records": "more than {max} records: over the limit ({env}).",
    "too_many_files": "more than {max} files: over the limit ({env}).",
    "too_many_columns": "{count} columns: more than the {max} a dataset file may have. Keep the columns the "
    "records need (e.g. prompt and response) and drop the others.",
    # Parquet (parquet.py)
    "parquet_damaged_footer": "row group {group} lists {chunks} column chunks for {columns} columns: a "
    "damaged footer.",
    "parquet_pages_held": "row group {group}: its pages decode to {size} held at once (the largest page of "
    "each column), more than {max}. Write the file with smaller pages (pyarrow's default data_page_size of "
    "1 MiB is fine) or fewer columns.",
    "parquet_pages_too_large": "its pages decode to more than the {max} a dataset may hold ({env}).",
    "parquet_out_of_calendar": "column {column} holds a {kind} value outside any calendar (stored as "
    "{value}); fix the value or drop the column.",
    "parquet_refused": "refused: {reason}.",
    "not_parquet": "not a readable Parquet file: {reason}",
    "too_many_rows": "holds {count} rows: over the limit of {max} ({env}).",
    "parquet_too_deep": "columns nested {depth} deep: more than {max} ({env}).",
    "parquet_rows_too_long": "rows of more than {max} on average ({env}).",
    "parquet_rows_unconvertible": "rows {first}–{last} cannot be converted: {reason}",
    # zip archives (archives.py)
    "not_a_zip": "not a readable zip archive: {reason}",
    "zip_too_many_entries": "holds {count} entries: over the limit of {max} ({env}).",
    "zip_directory_too_large": "zip directory of {size}: not a dataset archive.",
    "zip_method": "compression method {method}: not read (only deflate, the default of zip, 7-Zip, Windows "
    "and macOS, and uncompressed entries are). Re-create the archive with deflate, e.g. `zip -r data.zip "
    "FOLDER`.",
    "zip_outside": "zip entry would land outside the dataset folder; rejected. Re-create the archive with "
    "relative paths.",
    "zip_outside_code": "zip entry would land outside the folder; rejected. Re-create the archive with "
    "relative paths.",
    "zip_unpacks_over": "unpacks to {size}, over the limit of {max} ({env}).",
    "zip_unpacks_more": "unpacks to more than {max} ({env}).",
    "zip_ignored": "ignored: not .json/.jsonl/.csv/.parquet.",
    "zip_symlink": "zip entry is a symbolic link; refused.",
    "zip_file_and_folder": "zip entry {entry} is a file and also a folder of other entries; refused. Rename "
    "one of them and re-create the archive.",
    "zip_entry_twice": "zip entry appears twice; refused.",
    "line_too_long": "line longer than {max} ({env}); split the record or raise the limit.",
    "record_too_long": "record longer than {max} ({env}); split the record or raise the limit.",
    "csv_row_too_long": "CSV row longer than {max} ({env}); split the record or raise the limit.",
    "csv_field_too_long": "CSV field longer than {max} ({env}); split the record or raise the limit.",
}


def message(code: str, **params) -> str:
    """The English message of ``code`` with its params."""
    return MESSAGES[code].format(**params)


def problem(
    code: str,
    *,
    file: str | None = None,
    line: int | None = None,
    record: int | None = None,
    field: str | None = None,
    **params,
) -> Problem:
    """A located problem: its English message, code and params. ``record`` counts from 1."""
    return Problem(message(code, **params), file, line, record, field, code=code, params=params or None)

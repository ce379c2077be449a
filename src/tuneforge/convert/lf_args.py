"""Read LLaMA-Factory training arguments: a YAML file or a `llamafactory-cli train …` command line.

Both come out as one flat mapping of LLaMA-Factory's own keys to Python values, the way its
``HfArgumentParser`` would see them: a YAML config first, then ``--key value`` / ``key=value``
overrides from the command line.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import ConfigError

MAX_TEXT = 1 << 20  # a training config is a few KiB; anything past a MiB is not one
LAUNCHERS = ("llamafactory-cli", "lmf")
LEGACY_SCRIPTS = ("src/train.py", "src/train_bash.py", "train_bash.py")
SHELL_BREAKS = {"&&", "||", ";", "|", "&", ";;"}
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def scalar(raw: Any) -> Any:
    """A command-line or YAML value as LLaMA-Factory's parser would type it."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null", "~"):
        return None
    if NUMBER.fullmatch(text):
        number = float(text)
        return int(number) if re.fullmatch(r"[-+]?\d+", text) else number
    return text


def read_arguments(text: str, source: str, base_dir: Path) -> dict[str, Any]:
    """LLaMA-Factory arguments from a YAML config or a shell command line (``source`` names it in errors)."""
    if len(text) > MAX_TEXT:
        raise ConfigError(f"{source}: {len(text)} characters is too long for a training config.")
    if not text.strip():
        raise ConfigError(
            f"{source}: empty; expected a LLaMA-Factory YAML or a `llamafactory-cli train` line."
        )
    if not _looks_like_command(text):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: neither a YAML mapping nor a command line: {exc}") from None
        if isinstance(data, dict):
            return _flat(data, source)
    return _command_arguments(text, source, base_dir)


def _looks_like_command(text: str) -> bool:
    return any(name in text for name in (*LAUNCHERS, *LEGACY_SCRIPTS)) and " --" in text.replace("\n", " ")


def _flat(data: dict, source: str) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: key {key!r} is not a name.")
        if isinstance(value, dict):
            raise ConfigError(
                f"{source}: {key}: LLaMA-Factory configs are flat key: value lines; got a section."
            )
        out[key] = scalar(value)
    return out


def _command_arguments(text: str, source: str, base_dir: Path) -> dict[str, Any]:
    text = re.sub(r"\\\r?\n", " ", text)  # backslash continuations
    text = text.replace("\n", "\n; ")  # any other line break ends a shell command
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise ConfigError(f"{source}: cannot split the command line: {exc}.") from None
    start = _train_arguments_start(tokens)
    if start is None:
        raise ConfigError(
            f"{source}: found no `llamafactory-cli train` command; expected a LLaMA-Factory YAML config "
            "or a line such as `llamafactory-cli train --stage sft --model_name_or_path … `."
        )
    args: dict[str, Any] = {}
    rest = tokens[start:]
    for i, token in enumerate(rest):
        if token in SHELL_BREAKS:
            rest = rest[:i]
            break
    i = 0
    while i < len(rest):
        token = rest[i]
        if token.startswith("--"):
            key, eq, value = token[2:].partition("=")
            if not eq:
                if i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                    value = rest[i + 1]
                    i += 1
                else:
                    value = "true"  # a bare --flag is a boolean switch
            args[key.replace("-", "_")] = scalar(value)
        elif "=" in token:  # OmegaConf-style key=value after a YAML file
            key, _, value = token.partition("=")
            args[key] = scalar(value)
        elif token.endswith((".yaml", ".yml", ".json")) and not args:
            args.update(_config_file(token, source, base_dir))
        else:
            raise ConfigError(f"{source}: unexpected {token!r}; expected --key value pairs.")
        i += 1
    return args


def _train_arguments_start(tokens: list[str]) -> int | None:
    for i, token in enumerate(tokens):
        name = Path(token).name
        if name in LAUNCHERS and i + 1 < len(tokens) and tokens[i + 1] == "train":
            return i + 2
        if any(token.endswith(script) for script in LEGACY_SCRIPTS):
            return i + 1
    return None


def _config_file(name: str, source: str, base_dir: Path) -> dict[str, Any]:
    path = Path(name)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, base_dir / path]
    for candidate in candidates:
        if candidate.is_file():
            text = candidate.read_text(encoding="utf-8")
            data = yaml.safe_load(text) if len(text) <= MAX_TEXT else None
            if not isinstance(data, dict):
                raise ConfigError(f"{candidate}: expected a LLaMA-Factory YAML mapping of keys to values.")
            return _flat(data, str(candidate))
    raise ConfigError(
        f"{source}: the command names config {name}, which is not in {Path.cwd()} or {base_dir}."
    )

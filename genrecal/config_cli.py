"""Command-line flags derived from a config dataclass: one spelling per field, its docstring as the help.

    add_flags(parser, LatencyConfig)                  # --artifact (required), --warmup 1, --no-bandwidth, ...
    cfg = from_args(LatencyConfig, parser.parse_args())

    add_flags(parser, DistillConfig, defaults=False)  # every flag defaults to None: "not given"
    cfg = load_config(args.config, given(DistillConfig, args))   # YAML first, then the flags given

A field `max_steps: int = 300` becomes `--max-steps` (dest `max_steps`); the string literal right
below it in the class body is its help, followed by its default. The annotation picks the parser:
int, float, str, Path: that type; `X | None`: X; `tuple[X, ...]`: a comma list of X; bool: a switch,
`--name` when the default is False, `--no-name` when it is True. What an annotation cannot say comes
from the field's metadata: `field(default=..., metadata={"choices": (...), "flag": "--no-torch"})`.
A field without a default is a required flag. Importing this module imports nothing of genrecal.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path

_MISSING = dataclasses.MISSING


def field_docs(cls: type) -> dict[str, str]:
    """{field name: its docstring, whitespace collapsed} read from the class source ({} without source)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's docstring wins over its base's
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def flag_name(f: dataclasses.Field, hint) -> str:
    """`--max-steps` for `max_steps`; `--no-x` for a bool defaulting to True; metadata "flag" overrides."""
    if "flag" in f.metadata:
        return f.metadata["flag"]
    name = f.name.replace("_", "-")
    return f"--no-{name}" if hint is bool and _default(f) is True else f"--{name}"


def add_flags(parser: argparse.ArgumentParser, cls: type, *, defaults: bool = True,
              skip: tuple[str, ...] = ()) -> None:
    """One flag per field of dataclass `cls` (those named in `skip` left out).

    defaults=True: a flag not given takes the field's default (`from_args` then builds the config);
    defaults=False: it stays None, so `given` returns only what the command line set (YAML beneath it)."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        hint, default = hints[f.name], _default(f)
        hidden = default is _MISSING or default is None or isinstance(default, bool) or default in ("", ())
        shown = " On by default; this flag turns it off." if default is True else (
            "" if hidden else f" (default {_show(default)})")
        kwargs: dict = {"dest": f.name, "help": (docs.get(f.name, "") + shown).strip().replace("%", "%%") or None}
        if hint is bool:
            kwargs["action"] = "store_false" if default is True else "store_true"
            kwargs["default"] = default if defaults else None
        else:
            kwargs["type"] = _parser_for(hint, f.name)
            if "choices" in f.metadata:
                kwargs["choices"] = tuple(f.metadata["choices"])
            if "metavar" in f.metadata:
                kwargs["metavar"] = f.metadata["metavar"]
            if default is _MISSING:
                kwargs["required"] = True
            else:
                kwargs["default"] = default if defaults else None
        parser.add_argument(flag_name(f, hint), **kwargs)


def given(cls: type, args: argparse.Namespace) -> dict:
    """The fields of `cls` that the command line set (None: not given), for `load_config`-style overrides."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def from_args(cls: type, args: argparse.Namespace, **extra):
    """`cls` built from the parsed flags (fields without a flag keep their defaults), plus `extra`."""
    return cls(**given(cls, args), **extra)


def comma_list(item: type = str, what: str = "values"):
    """argparse type: 'a,b' -> ('a', 'b') with each part converted by `item`; empty parts dropped."""
    def parse(text: str) -> tuple:
        try:
            return tuple(item(s.strip()) for s in text.split(",") if s.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    parse.__name__ = f"comma list of {what}"  # argparse names the type in its "invalid value" message
    return parse


def _default(f: dataclasses.Field):
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


_WHAT = {int: "integers", float: "numbers", str: "names", Path: "paths"}


def _parser_for(hint, name: str):
    """The argparse `type` for annotation `hint`: int/float/str/Path, `X | None`, `tuple[X, ...]`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1:
            return _parser_for(inner[0], name)
    elif origin is tuple:
        item, *rest = typing.get_args(hint)
        if rest == [Ellipsis] and item in _WHAT:
            return comma_list(item, _WHAT[item])
    elif hint in _WHAT:
        return hint
    raise TypeError(f"config field {name!r}: no command-line flag for type {hint!r} (skip it, or give it a "
                    f"plain type)")

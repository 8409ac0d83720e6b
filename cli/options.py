"""Options and argument parsing shared by the commands (click-side only; no torch at import).

- `parse_pairs`: KEY=VALUE options (query --where/--set, edit --set).
- `device_option`: the --device option.
- `AttributeCommand`: one --ATTRIBUTE VALUE option per attribute of a schema found at parse time
  (query: the index's; edit: the model's), with `schema_in`, `offered_attributes` and
  `option_value` to find that schema from the raw arguments.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import click

DEVICE_HELP = "torch device [default: cuda if present, else cpu]."


def load_classifier_option(which: str):
    """--classifier: a directory of that name wins; otherwise cam / eval name the shipped models."""
    from amgan_search.registry import load_model

    return load_model(which, "classifier")


def device_option(help: str | None = DEVICE_HELP, default: str | None = None, **kwargs):
    """The --device option; None lets `amgan_search.device.pick_device` choose cuda or cpu."""
    return click.option("--device", default=default, help=help, **kwargs)


def parse_pairs(pairs: Iterable[str], flag: str, error: str | None = None) -> dict[str, str]:
    """KEY=VALUE strings -> {KEY: VALUE}, both stripped.

    A malformed pair is click's usage error for `flag` ("expected KEY=VALUE, got 'x'"), as query's
    --where and --set give. With `error`, a format string of {flag} and {pair} (e.g.
    "{flag} {pair!r}: expected attribute=value", edit's --set), it is a one-line UserError instead,
    and only a pair without '=' is malformed.
    """
    from amgan_search.errors import UserError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if error is not None and not sep:
            raise UserError(error.format(flag=flag, pair=pair))
        if error is None and not (sep and key.strip()):
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=flag)
        out[key.strip()] = value.strip()
    return out


# ---------------------------------------------------------------- attribute flags

def option_value(args: Sequence[str], name: str) -> str | None:
    """The value of option `name` ("--index") in raw command-line arguments, None when absent."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def schema_in(path: str | Path | None) -> dict | None:
    """The "schema" entry of a JSON file (index.json, a model's config.json); None if unreadable."""
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text()).get("schema")
    except (OSError, ValueError, AttributeError):
        return None


def offered_attributes(*schemas: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    """{attribute: values} of the schemas, the first one's values winning, then the synthetic ones."""
    from amgan_search.schema import SYNTHETIC_ATTRIBUTES

    found: dict[str, list[str]] = {}
    for schema in (*schemas, SYNTHETIC_ATTRIBUTES):
        for name, values in (schema or {}).items():
            found.setdefault(name, list(values))
    return found


def flag_name(attribute: str) -> str:
    """An attribute name as an option name: lower case, runs of other characters as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", attribute.lower()).strip("-")


class AttributeCommand(click.Command):
    """A command with one `--NAME VALUE` option per attribute, built when its arguments are parsed.

    `attributes(args)` gets the raw arguments and returns {attribute: [values]} (the schema of the
    index or model they name). An attribute whose flag would clash with one of the command's own
    options is skipped: --set reaches it. The callback gets the given ones as one keyword,
    `targets_param` (default `attribute_flags`): {attribute: value} in schema order.

        @click.command(cls=AttributeCommand, attributes=lambda args: offered_attributes(
            schema_in(option_value(args, "--model"))))
        def edit(..., attribute_flags): ...
    """

    def __init__(self, *args, attributes: Callable[[Sequence[str]], Mapping[str, Sequence[str]]],
                 targets_param: str = "attribute_flags", **kwargs):
        super().__init__(*args, **kwargs)
        self.attributes = attributes
        self.targets_param = targets_param

    def _own_names(self, ctx) -> set[str]:
        opts = [o for p in self.params if isinstance(p, click.Option) and not _is_attribute(p)
                for o in (*p.opts, *p.secondary_opts)]
        return {o.lstrip("-") for o in (*opts, *ctx.help_option_names)}

    def _attribute_options(self, ctx, args: Sequence[str]) -> None:
        self.params = [p for p in self.params if not _is_attribute(p)]
        taken = self._own_names(ctx)
        for name, values in self.attributes(args).items():
            flag = flag_name(name)
            if not flag or flag in taken:
                continue
            option = click.Option([f"--{flag}", f"attr__{flag.replace('-', '_')}"], metavar="VALUE",
                                  default=None, help=f"Target {name}: " + ", ".join(values) + ".")
            option.attribute = name
            self.params.append(option)

    def parse_args(self, ctx, args):
        self._attribute_options(ctx, args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        given: dict[str, Any] = {}
        for p in self.params:
            if _is_attribute(p):
                value = ctx.params.pop(p.name, None)
                if value is not None:
                    given[p.attribute] = value
        ctx.params[self.targets_param] = given
        return super().invoke(ctx)


def _is_attribute(param) -> bool:
    return getattr(param, "attribute", None) is not None

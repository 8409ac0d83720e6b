"""Options and argument parsing shared by the commands (click-side only; no torch at import).

- `parse_pairs`: KEY=VALUE options (query --where/--set, edit --set); `attribute_list`:
  comma-separated attribute names (--scene-attributes, --edit-attributes, --val-scene-attributes).
- `device_option`: the --device option, checked when parsed (`check_device`).
- `writable_dir`, `writable_file`: callbacks that refuse, in one line and before any work, an
  output path that cannot be made; `check_own_folder`: an output folder holding others' files;
  `SEED`, `WORKERS`: the ranges numeric flags share.
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

from amgan_search.errors import UserError

DEVICE_HELP = "torch device [default: cuda if present, else cpu]."


def load_classifier_option(which: str):
    """--classifier: a directory of that name wins; otherwise cam / eval name the shipped models."""
    from amgan_search.registry import load_model

    return load_model(which, "classifier")


def device_option(help: str | None = DEVICE_HELP, default: str | None = None, **kwargs):
    """The --device option; None lets `amgan_search.device.pick_device` choose cuda or cpu."""
    return click.option("--device", default=default, help=help, callback=check_device, **kwargs)


def check_device(ctx, param, value: str | None) -> str | None:
    """Refuse a device torch does not know, or one this machine lacks, when the flag is parsed:
    before a command renders, reads or loads anything (the demo would render its catalog first)."""
    if value in (None, "", "auto"):
        return value
    from amgan_search.device import pick_device

    pick_device(value)  # a one-line UserError for 'nonsense', 'meta', or 'cuda' without a GPU
    return value


# ---------------------------------------------------------------- numbers and output paths

# numpy refuses a negative seed and torch.manual_seed one of 2**64 or more, each with a ValueError
# deep inside; 0 to 2**63 - 1 also fits the signed 64-bit integers of SQLite and numpy arrays.
SEED = click.IntRange(0, 2**63 - 1)
# Each DataLoader worker is a process with its own copy of the dataset: past a few dozen they add
# memory, not speed, and a mistyped 10000 would start ten thousand processes.
WORKERS = click.IntRange(0, 64)


def writable_dir(ctx, param, value):
    """Callback of an output folder option: `value` must be a folder or makeable as one."""
    if value is not None:
        check_writable(_named(param, value), folder=True)
    return value


def writable_file(ctx, param, value):
    """Callback of an output file option: `value` must be writable as a file."""
    if value is not None:
        check_writable(_named(param, value), folder=False)
    return value


def _named(param, value) -> Path:
    """`value` as a path; an empty one (an unset shell variable, `--out "$DIR"`) would mean the
    current folder, which nobody types as an empty string: refused."""

    if not str(value).strip():
        raise UserError(f"{param.opts[0]}: empty path; name a folder or file")
    return Path(value)


def check_own_folder(path: str | Path, names: Iterable[str]) -> None:
    """Refuse an existing output folder that holds anything but `names`, the files and folders
    the command writes there (and hidden ones: the temporary and lock files of its writes), so a
    rerun replaces only its own outputs and never a file of the user's that shares a name."""

    path = Path(path)
    if not path.is_dir():
        return
    own = set(names)
    foreign = sorted(p.name for p in path.iterdir() if p.name not in own and p.name[:1] != ".")
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UserError(f"{path}: holds {foreign[0]!r}{more}, which this command did not write; "
                        "choose a new or empty output folder")


def check_writable(path: Path, folder: bool) -> None:
    """Refuse in one line, before any work, an output the system will not let us make: a file in
    the way of a folder, a folder where a file goes, a place nothing can be created in (/proc,
    a read-only disk). Creates nothing that stays: the probe is an unnamed temporary file."""
    import tempfile

    from amgan_search.io import check_parents

    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder")
    if not folder and path.is_dir():
        raise UserError(f"{path}: is a folder; name a file")
    check_parents(path / "x" if folder else path)
    base = (path if folder else path.parent).absolute()
    while not base.exists() and base != base.parent:
        base = base.parent
    try:
        tempfile.TemporaryFile(dir=base).close()
    except OSError as exc:
        raise UserError(f"{path}: cannot be written ({base}: {exc.strerror or exc})") from None


def parse_pairs(pairs: Iterable[str], flag: str, error: str | None = None) -> dict[str, str]:
    """KEY=VALUE strings -> {KEY: VALUE}, both stripped.

    A malformed pair is click's usage error for `flag` ("expected KEY=VALUE, got 'x'"), as query's
    --where and --set give. With `error`, a format string of {flag} and {pair} (e.g.
    "{flag} {pair!r}: expected attribute=value", edit's --set), it is a one-line UserError instead,
    and only a pair without '=' is malformed.
    """

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if error is not None and not sep:
            raise UserError(error.format(flag=flag, pair=pair))
        if error is None and not (sep and key.strip()):
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=flag)
        out[key.strip()] = value.strip()
    return out


def attribute_list(value: str | None, flag: str, example: str = "color,sleeve") -> list[str] | None:
    """A comma-separated list of attribute names -> the names (None when the option was not
    given); a one-line UserError when it names none."""

    if value is None:
        return None
    names = [a.strip() for a in value.split(",") if a.strip()]
    if not names:
        raise UserError(f"{flag}: no attribute named; e.g. {example}")
    return names


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


def graders_options(command):
    """--graders (CNN graders by name, `registry.parse_graders`) and the deprecated one-grader
    --eval-classifier; `graders_value` turns the two into one spec."""
    command = click.option("--eval-classifier", default=None, hidden=True,
                           help="Deprecated: one grader, named eval (use --graders).")(command)
    return click.option(
        "--graders", default=None,
        help="CNN graders of the edits, comma-separated: eval, cam (the shipped ones), a "
             "classifier folder, NAME=DIR, or none; each reads the edited attribute by name, so "
             "a grader of more or other attributes reads those it knows.  [default: eval]")(command)


def graders_value(graders: str | None, eval_classifier: str | None) -> str:
    """--graders, or the deprecated one-grader --eval-classifier as that grader named eval."""

    if eval_classifier is None:
        return "eval" if graders is None else graders
    if graders is not None:
        raise UserError("--eval-classifier is the old form of --graders; give only --graders")
    click.echo("warning: --eval-classifier is deprecated; use --graders", err=True)
    shipped = eval_classifier.lower() in ("eval", "cam", "none")
    return eval_classifier.lower() if shipped else f"eval={eval_classifier}"

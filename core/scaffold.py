"""``inlet new customer``: the files a plugin author starts a customer from.

A family opts in by declaring a :class:`Scaffold` on its base connector class (``scaffold: ClassVar``); the
CLI lists whatever families declare one, so a new family needs no CLI change. What is generated:

- ``<plugins dir>/<module>.py``: a subclass of the family's connector with the hooks customers usually
  override, each a stub that fails with :func:`not_configured` (a record reaching it lands in the DLQ with
  that reason) until the author writes the customer's rule or deletes the stub to keep the family default;
- ``<config>/integrations/<customer>.<integration>.yaml``: every option of the family's settings model,
  documented inline from the model (:mod:`inlet.core.settings_doc`), the required ones filled in;
- ``<fixtures>/<customer>/<integration>/README.md``: how to record and replay that integration.

``--from EXISTING`` copies an existing customer's plugin module and YAMLs instead, renaming the customer.
Nothing is overwritten: an existing target file is an error naming it.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inlet.core.connector import Connector
from inlet.core.errors import ConfigError
from inlet.core.settings_doc import settings_yaml

__all__ = ["Scaffold", "Scaffolded", "families", "new_customer", "not_configured"]


@dataclass(frozen=True)
class Scaffold:
    """How a family starts a new customer; set as ``scaffold`` on the family's base connector class."""

    family: str
    """What ``--family`` names (``fhir``, ``mqtt_meter``)."""
    integration: str
    """The integration name a new customer gets unless ``--integration`` says otherwise."""
    hooks: tuple[str, ...] = ()
    """Hooks customers of this family usually override: generated as stubs that fail until written."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Setting values the YAML starts with; ``{customer}`` in a string becomes the customer slug."""
    zone: str | None = None
    """The integration's zone to start from (a comment tells the author to check it)."""
    extra: str = ""
    """Module-level code placed before the class (``{names}`` substituted like the rest)."""
    class_body: str = ""
    """Class attributes beyond ``name`` and ``description`` (e.g. a customer settings model)."""
    in_module: tuple[str, ...] = ()
    """Settings the generated module sets (``class_body``'s settings model); the YAML only mentions them."""
    imports: str = ""
    """Import lines the ``extra`` and ``class_body`` code needs (besides ``from inlet import ...``)."""
    record: str = "inlet record {key}"
    """How to record this integration's fixtures, for the fixtures README."""


@dataclass(frozen=True)
class Scaffolded:
    """What ``new_customer`` wrote."""

    plugin: str
    files: list[Path]


def families() -> dict[str, type[Connector[Any]]]:
    """Every family base class that declares a :class:`Scaffold`, by family name (in-tree and entry points)."""
    from inlet.core.registry import plugins

    found: dict[str, type[Connector[Any]]] = {}
    for cls in {c for p in plugins().values() for c in p.__mro__ if isinstance(c, type)}:
        scaffold = cls.__dict__.get("scaffold")
        if isinstance(scaffold, Scaffold):
            found[scaffold.family] = cls
    return dict(sorted(found.items()))


def not_configured(connector: Connector[Any], hook: str) -> ConfigError:
    """The error a generated hook stub raises: which plugin, which hook, what to do."""
    module = type(connector).__module__
    file = getattr(sys.modules.get(module), "__file__", None)
    # The file's name, not its path: this message lands in DLQ records and golden events, which must not
    # carry a machine's directory layout.
    source = f"{module} ({Path(file).name})" if file else module
    return ConfigError(
        f"{connector.name}: hook {hook}() is not configured yet. Write this customer's rule in "
        f"{source}, or delete the method to keep the family's default"
    )


def _names(customer: str) -> dict[str, str]:
    words = customer.replace("_", "-").split("-")
    return {
        "customer": customer,
        "module": "_".join(words),
        "Class": "".join(w.capitalize() for w in words),
        "Title": " ".join(w.capitalize() for w in words),
    }


def _stub(base: type[Connector[Any]], hook: str) -> str:
    method = getattr(base, hook)
    signature = str(inspect.signature(method)).replace("'", "")
    doc = (inspect.getdoc(method) or "").splitlines()[0] if inspect.getdoc(method) else hook
    prefix = "async " if inspect.iscoroutinefunction(method) else ""
    return (
        f'    @override\n    {prefix}def {hook}{signature}:\n        """{doc}"""\n'
        f'        raise not_configured(self, "{hook}")\n'
    )


def _module(base: type[Connector[Any]], scaffold: Scaffold, names: dict[str, str], integration: str) -> str:
    n = {**names, "integration": integration, "family": scaffold.family, "Base": base.__name__}
    stubs = "\n".join(_stub(base, h) for h in scaffold.hooks)
    extra = scaffold.extra.format(**n).strip()
    body = scaffold.class_body.format(**n).rstrip()
    code = stubs + extra + body
    import inlet

    code = re.sub(r'"""(.|\n)*?"""', "", code)  # names in docstrings need no import
    public = sorted(
        {base.__name__, *(w for w in inlet.__all__ if re.search(rf"\b{w}\b", code))},
        key=lambda w: (not w[0].isupper(), w),
    )
    typing_names = ", ".join(w for w in ("Any", "ClassVar") if w == "ClassVar" or re.search(rf"\b{w}\b", code))
    header = ["from __future__ import annotations", ""]
    if "Sequence[" in code:
        header.append("from collections.abc import Sequence")
    header += [f"from typing import {typing_names}", ""]
    third = [line for line in scaffold.imports.splitlines() if line] + (
        ["from typing_extensions import override"] if stubs else []
    )
    if third:
        header += [*sorted(third), ""]
    header.append(f"from inlet import {', '.join(public)}")
    cls = f"{n['Class']}{integration.replace('_', ' ').title().replace(' ', '')}"
    return (
        "\n".join(
            [
                f'"""{n["Title"]} — {integration} ({scaffold.family} family), generated by `inlet new`.',
                "",
                "Say here what is special about this customer (its quirks), as the other customer plugins do.",
                '"""',
                "",
                *header,
                *([f"\n\n{extra}"] if extra else []),
                "",
                "",
                f"class {cls}({base.__name__}):",
                f'    """{n["Title"]}: {integration}."""',
                "",
                f'    name: ClassVar[str] = "{n["module"]}.{integration}"',
                f'    description: ClassVar[str] = "{n["Title"]} {integration} ({scaffold.family})"',
                *([body] if body else []),
                *([f"\n{stubs}"] if stubs else []),
            ]
        ).rstrip()
        + "\n"
    )


def _substitute(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.replace("{customer}", names["customer"])
    if isinstance(value, dict):
        return {k: _substitute(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, names) for v in value]
    return value


def _yaml(
    base: type[Connector[Any]], scaffold: Scaffold, names: dict[str, str], integration: str, fixtures_rel: str
) -> str:
    values = _substitute(dict(scaffold.settings), names)
    lines = [
        f"# {names['Title']} — {integration}: generated by `inlet new` from the {scaffold.family} family's settings",
        "# model; every option is listed with its documentation, the optional ones commented out at their default.",
        f"customer: {names['customer']}",
        f"integration: {integration}",
        f"plugin: {names['module']}.{integration}",
        f"zone: {scaffold.zone or 'UTC'}        # the source's IANA zone: naive timestamps are read in it. Check it!",
        "# poll_interval_seconds: 30   # between reads once caught up (pull sources)",
        "settings:",
        *settings_yaml(base.settings_model, values, in_module=scaffold.in_module),
        f"# drift: {{shape: {fixtures_rel}/shape.json, policy: map}}   # alert when payloads leave the recorded shape",
    ]
    return "\n".join(lines) + "\n"


def _readme(scaffold: Scaffold, key: str, config: Path) -> str:
    record = scaffold.record.format(key=key, config=config)
    return (
        f"# Fixtures of {key}\n\n"
        "Recorded upstream interactions, the golden events they must produce and the upstream shape. Record them\n"
        "against a test upstream (never a production system holding real patients' data: recording redacts\n"
        "secrets and pseudonymises PHI, but a test server is the safe source):\n\n"
        f"```bash\n{record}\n```\n\n"
        "Review the golden events (`events.jsonl`), commit the directory, and CI replays it offline:\n\n"
        f"```bash\ninlet replay {key} --config {config}          # diff against the goldens\n"
        f"inlet replay {key} --config {config} --update # rewrite them after a reviewed change\n```\n"
    )


def _copy_from(
    existing: str, names: dict[str, str], plugins_dir: Path, config: Path
) -> tuple[dict[Path, str], list[str]]:
    """The existing customer's plugin module and integration YAMLs, renamed to the new customer."""
    old = _names(existing)
    module = plugins_dir / f"{old['module']}.py"
    yamls = [
        p
        for p in sorted((config / "integrations").glob("*.y*ml"))
        if re.search(rf"^customer:\s*{re.escape(existing)}\s*$", p.read_text(encoding="utf-8"), re.M)
    ]
    if not module.is_file() or not yamls:
        raise ConfigError(
            f"no customer {existing!r} to start from: need {module} and an integration YAML with "
            f"customer: {existing} in {config / 'integrations'}"
        )

    def rename(text: str) -> str:
        for key in ("customer", "module", "Class", "Title"):
            text = text.replace(old[key], names[key])
        return text

    files = {plugins_dir / f"{names['module']}.py": rename(module.read_text(encoding="utf-8"))}
    integrations = []
    for path in yamls:
        text = rename(path.read_text(encoding="utf-8"))
        files[path.with_name(path.name.replace(existing, names["customer"]))] = text
        integrations += re.findall(r"^integration:\s*(\S+)", text, re.M)
    return files, integrations


def new_customer(
    customer: str,
    *,
    family: str | None,
    integration: str | None,
    existing: str | None,
    plugins_dir: Path,
    config: Path,
    fixtures: Path,
) -> Scaffolded:
    """Write a new customer's plugin, integration YAML and fixtures README; refuses to overwrite anything."""
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", customer):
        raise ConfigError(f"customer {customer!r}: use lower-case letters, digits and '-' (e.g. acme-hospital)")
    names = _names(customer)
    files: dict[Path, str] = {}
    if existing is not None:
        files, integration_names = _copy_from(existing, names, plugins_dir, config)
        scaffold_record = "inlet record {key} --config {config}"
        plugin = f"{names['module']}.*"
    else:
        known = families()
        if family not in known:
            raise ConfigError(f"unknown family {family!r}; families with a scaffold: {', '.join(known) or 'none'}")
        base = known[family]
        scaffold: Scaffold = base.__dict__["scaffold"]
        name = integration or scaffold.integration
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
            raise ConfigError(f"integration {name!r}: use lower-case letters, digits and '_' (e.g. observations)")
        integration_names = [name]
        fixtures_rel = _relative(fixtures / customer / name, config)
        files[plugins_dir / f"{names['module']}.py"] = _module(base, scaffold, names, name)
        files[config / "integrations" / f"{customer}.{name}.yaml"] = _yaml(base, scaffold, names, name, fixtures_rel)
        scaffold_record = scaffold.record
        plugin = f"{names['module']}.{name}"
    for name in integration_names:
        key = f"{customer}/{name}"
        files[fixtures / customer / name / "README.md"] = _readme(
            Scaffold(family="", integration=name, record=scaffold_record), key, config
        )
    clashes = [str(p) for p in files if p.exists()]
    if clashes:
        raise ConfigError(f"not overwriting what exists: {', '.join(clashes)}")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Scaffolded(plugin=plugin, files=list(files))


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())

"""Technique registries: model transforms (model -> model) and conversions (model -> .tflite).

A technique is one entry in one registry; the entry owns its typed parameters (a pydantic
model with defaults), so the CLI (`--schemes`, `--transforms`), config keys and `quantbench
techniques` are generated from the entries and tests are parametrized over the registries.

A *spec* names an entry and carries its parameters, fully resolved (defaults filled in), so
two ways of asking for the same thing (`qat` and `qat:recipe=finetune`) are one identity.
Specs are data; the text form `NAME:KEY=VALUE:KEY=VALUE` is only how a user types one.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from quantbench.core.errors import ConfigError
from quantbench.core.specs import TechniqueSpec, set_namer, split_text, value_text
from quantbench.core.suggest import did_you_mean


class Params(BaseModel):
    """A technique's parameters: typed, validated, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    pass


@dataclass(frozen=True)
class Technique:
    """A registry entry. Subclasses add what the technique does."""

    name: str
    description: str
    params: type[Params] = field(default=NoParams)
    default: bool = True  # part of the default plan when the user picks none

    def slug(self, params: Params) -> str:
        """The readable part of a variant name this technique contributes."""
        return self.name

    def parse_params(self, raw: dict[str, Any]) -> Params:
        try:
            return self.params.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "?"
            if first["type"] == "extra_forbidden":
                known = list(self.params.model_fields)
                hint = did_you_mean(key, known)
                raise ConfigError(
                    f"{self.name} has no parameter {key!r}{hint}",
                    tip=f"{self.name} takes: " + (", ".join(known) or "no parameters"),
                ) from None
            raise ConfigError(
                f"bad value for {self.name}:{key}: {first.get('input')!r}: {first['msg']}",
                tip=f"`quantbench techniques` lists {self.name}'s parameters",
            ) from None

    def param_help(self) -> str:
        """`key=default (type)` for each parameter, for listings and --help."""
        items = []
        for key, info in self.params.model_fields.items():
            literal = typing.get_origin(info.annotation) is typing.Literal  # its values, not "Literal"
            choices = "|".join(map(str, typing.get_args(info.annotation))) if literal else ""
            kind = choices or getattr(info.annotation, "__name__", None) or str(info.annotation)
            kind = kind.replace("typing.", "")
            items.append(f"{key}={value_text(info.default)} ({kind})")
        return ", ".join(items)


T = TypeVar("T", bound=Technique)


class Registry(Generic[T]):
    """Name -> entry, with spec parsing and did-you-mean errors."""

    def __init__(self, kind: str, flag: str, entries: list[T]):
        self.kind = kind  # "conversion", "transform"
        self.flag = flag  # the command-line flag that takes a list of these
        self._entries: dict[str, T] = {}
        for entry in entries:
            self.register(entry)
        set_namer(kind, self.slug_of)  # how this kind's specs read in variant names

    def slug_of(self, spec: TechniqueSpec) -> str:
        return self.get(spec.name).slug(self.params_of(spec))

    def register(self, entry: T) -> T:
        if entry.name in self._entries:
            raise ValueError(f"{self.kind} {entry.name!r} registered twice")
        self._entries[entry.name] = entry
        return entry

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries.values())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return list(self._entries)

    def defaults(self) -> list[str]:
        return [e.name for e in self if e.default]

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}",
                tip=f"`quantbench techniques` lists them; {self.flag} takes a comma-separated list",
            ) from None

    def spec(self, name: str, **params: Any) -> TechniqueSpec:
        entry = self.get(name)
        resolved = entry.parse_params(params)
        return TechniqueSpec(name=name, params=resolved.model_dump(mode="json"))

    def params_of(self, spec: TechniqueSpec) -> Params:
        return self.get(spec.name).parse_params(spec.params)

    def coerce(self, item: Any) -> TechniqueSpec:
        """A spec from what a config or a flag holds: text, a mapping or a spec."""
        if isinstance(item, TechniqueSpec):
            return self.spec(item.name, **item.params)
        if isinstance(item, str):
            return self.parse(item)
        if isinstance(item, dict):
            unknown = set(item) - {"name", "params"}
            if "name" not in item or unknown:
                raise ConfigError(f"a {self.kind} is a name or {{name: ..., params: {{...}}}}, "
                                  f"got {item!r}", tip=f"e.g. {self.flag} NAME:KEY=VALUE")  # fmt: skip
            return self.spec(str(item["name"]), **dict(item.get("params") or {}))
        raise ConfigError(f"cannot read a {self.kind} from {item!r}", tip=f"e.g. {self.flag} NAME")

    def parse(self, text: str) -> TechniqueSpec:
        """`NAME:KEY=VALUE:KEY=VALUE`; values are read as YAML (numbers, true/false)."""
        name, params, malformed = split_text(text)
        if malformed:
            raise ConfigError(f"bad {self.kind} {text!r}: expected KEY=VALUE after ':', "
                              f"got {malformed[0]!r}", tip=f"e.g. {self.flag} qat:recipe=finetune")  # fmt: skip
        return self.spec(name, **params)

    def parse_list(self, items: str | list[Any] | None) -> list[TechniqueSpec]:
        if items is None:
            return []
        if isinstance(items, str):
            items = [part for part in items.split(",") if part.strip()]
        specs = [self.coerce(item) for item in items]
        return list(dict.fromkeys(specs))  # the same spec twice is one variant

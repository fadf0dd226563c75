"""Offline STAC validation: core schemas bundled with pystac, extension schemas of this project."""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jsonschema import Draft7Validator
from pystac.validation.local_validator import get_local_schema_cache
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT7

from thisme_stac.errors import TranslationError

CORE = "https://schemas.stacspec.org/v1.1.0/{0}-spec/json-schema/{0}.json"


class ValidationError(TranslationError):
    """A STAC object that does not validate; the message names the path and the rule."""


@lru_cache(maxsize=1)
def _schemas() -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = dict(get_local_schema_cache())
    folder = importlib.resources.files("thisme_stac.schemas")
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            schema = json.loads(entry.read_text(encoding="utf-8"))
            schemas[schema["$id"]] = schema
    return schemas


def _retrieve(uri: str) -> Resource[Any]:
    schema = _schemas().get(uri)
    if schema is None:
        raise NoSuchResource(ref=uri)  # type: ignore[call-arg]
    return Resource.from_contents(schema, default_specification=DRAFT7)


@lru_cache(maxsize=1)
def _registry() -> Registry[Any]:
    return Registry(retrieve=_retrieve)  # type: ignore[call-arg]


@lru_cache(maxsize=32)
def _validator(uri: str) -> Draft7Validator:
    schema = _schemas().get(uri)
    if schema is None:
        raise ValidationError(f"no offline schema for {uri} (unknown STAC extension?)")
    return Draft7Validator(schema, registry=_registry())


def validation_errors(obj: Mapping[str, Any]) -> list[str]:
    """Every problem of a STAC Item or Collection against core + extension schemas."""
    kind = {"Feature": "item", "Collection": "collection", "Catalog": "catalog"}.get(
        str(obj.get("type"))
    )
    if kind is None:
        return [f"not a STAC Item, Collection or Catalog (type {obj.get('type')!r})"]
    uris = [CORE.format(kind), *[str(u) for u in obj.get("stac_extensions") or []]]
    errors: list[str] = []
    for uri in uris:
        try:
            validator = _validator(uri)
        except ValidationError as err:
            errors.append(str(err))
            continue
        for error in validator.iter_errors(dict(obj)):
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            errors.append(f"{where}: {error.message[:200]} [{uri.rsplit('/', 3)[-3]}]")
    return errors


def validate(obj: Mapping[str, Any]) -> None:
    """Raise ValidationError naming the object and its first problems."""
    errors = validation_errors(obj)
    if errors:
        shown = "; ".join(errors[:3])
        raise ValidationError(f"{obj.get('id', '<no id>')} is not valid STAC: {shown}")


validate_item = validate
validate_collection = validate

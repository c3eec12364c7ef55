"""Decode Stripe's bracket-encoded parameters and check them against the SDK's own typed parameter classes.

The installed `stripe` SDK ships one TypedDict per operation (`stripe.params.InvoiceCreateParams`, …) whose
annotations are generated from Stripe's OpenAPI spec. Checking requests against them means a parameter the
sandbox accepts is one real Stripe accepts, and a typo fails here as it would there.
"""

import functools
import importlib
import re
import sys
import types
import typing
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from difflib import get_close_matches

import typing_extensions
from stripe._request_options import RequestOptions
from stripe._stripe_object import UntypedStripeObject

from stripe_sandbox.errors import StripeError

KEY_PART = re.compile(r"\[([^\[\]]*)\]")
INTEGER = re.compile(r"-?\d+")


# ---------------------------------------------------------------- decoding


def decode_pairs(pairs):
    """Turn `a[b][0][c]=x` pairs into nested dicts; list indexes stay string keys until a schema asks for a list."""
    decoded = {}
    for raw_key, value in pairs:
        head, _, rest = raw_key.partition("[")
        parts = [head] + (KEY_PART.findall("[" + rest) if rest else [])
        node = decoded
        for depth, part in enumerate(parts):
            path = _bracket_path(parts[: depth + 1])
            if part == "":  # `a[]=x` appends, as Rack-style encoders send it
                part = str(len(node))
            last = depth == len(parts) - 1
            if last:
                if isinstance(node.get(part), dict):
                    raise StripeError(f"Invalid string: {path} is also given as an object", param=path)
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise StripeError(f"Invalid object: {path} is also given as a string", param=path)
                node = child
    return decoded


def _bracket_path(parts):
    return parts[0] + "".join(f"[{part}]" for part in parts[1:])


def _join(path, key):
    return f"{path}[{key}]" if path else str(key)


# ---------------------------------------------------------------- schema


@dataclass(frozen=True)
class Scalar:
    kind: str  # "string", "integer", "boolean", "float", "decimal"


@dataclass(frozen=True)
class Choice:
    values: tuple


@dataclass(frozen=True)
class ListOf:
    item: object


@dataclass(frozen=True)
class MapOf:
    value: object


@dataclass(frozen=True)
class Fields:
    typed_dict: type


@dataclass(frozen=True)
class OneOf:
    options: tuple


SCALARS = {str: "string", int: "integer", bool: "boolean", float: "float", Decimal: "decimal"}


class _SdkNames(dict):
    """Names a forward reference may use that its own module only imports under TYPE_CHECKING."""

    def __missing__(self, name):
        params = importlib.import_module("stripe.params")
        try:
            return getattr(params, name)
        except AttributeError:
            raise KeyError(name) from None


def params_class(dotted_name):
    """The SDK's parameter class for a name such as `InvoiceCreateParams` or `checkout.SessionListParams`."""
    module_name, _, class_name = dotted_name.rpartition(".")
    module = importlib.import_module("stripe.params" + (f".{module_name}" if module_name else ""))
    return getattr(module, class_name)


@functools.cache
def fields_of(typed_dict):
    """The accepted names of a parameter class, each with its schema, and which of them are required."""
    module_globals = vars(sys.modules[typed_dict.__module__])
    skip = set()
    if RequestOptions in getattr(typed_dict, "__orig_bases__", ()):
        skip = set(RequestOptions.__annotations__)  # client options, never sent as parameters
    fields = {}
    for name, annotation in typed_dict.__annotations__.items():
        if name not in skip:
            fields[name] = _schema(annotation, module_globals)
    required = frozenset(typed_dict.__required_keys__) - skip
    return fields, required


def _schema(annotation, module_globals):
    if isinstance(annotation, str):
        annotation = typing.ForwardRef(annotation)
    if isinstance(annotation, typing.ForwardRef):
        # The SDK's own generated annotations, evaluated where it wrote them.
        annotation = eval(annotation.__forward_arg__, module_globals, _SdkNames())  # noqa: S307
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.NotRequired, typing.Required):
        return _schema(args[0], module_globals)
    if origin in (typing.Union, types.UnionType):
        options = tuple(_schema(arg, module_globals) for arg in args if arg is not type(None))
        return options[0] if len(options) == 1 else OneOf(options)
    if origin is typing.Literal:
        return Choice(args)
    if origin is list:
        return ListOf(_schema(args[0], module_globals))
    if origin is dict:
        return MapOf(_schema(args[1], module_globals))
    if origin is UntypedStripeObject:
        return MapOf(_schema(args[0], module_globals))
    if annotation in SCALARS:
        return Scalar(SCALARS[annotation])
    if typing_extensions.is_typeddict(annotation):
        return Fields(annotation)
    raise TypeError(f"stripe-sandbox cannot check parameters typed {annotation!r}")


# ---------------------------------------------------------------- checking


def check_params(typed_dict, decoded):
    """Check decoded parameters against a parameter class; return them with ints, bools and lists converted."""
    return _check(Fields(typed_dict), decoded, "")


def _check(schema, value, path):
    if isinstance(schema, OneOf):
        return _check_union(schema, value, path)
    if isinstance(schema, Fields):
        return _check_fields(schema.typed_dict, value, path)
    if isinstance(schema, ListOf):
        items = _as_list(value, path)
        return [_check(schema.item, item, _join(path, index)) for index, item in enumerate(items)]
    if isinstance(schema, MapOf):
        if not isinstance(value, dict):
            raise StripeError(f"Invalid object: {path} must be a hash of keys and values", param=path)
        return {key: _check(schema.value, item, _join(path, key)) for key, item in value.items()}
    if isinstance(value, dict):
        raise StripeError(f"Invalid {_scalar_name(schema)}: {path} must be a single value, not an object", param=path)
    if isinstance(schema, Choice):
        return _check_choice(schema, value, path)
    return _check_scalar(schema.kind, value, path)


def _check_fields(typed_dict, value, path):
    if not isinstance(value, dict):
        raise StripeError(f"Invalid object: {path} must be an object with named keys", param=path)
    fields, required = fields_of(typed_dict)
    checked = {}
    for name, item in value.items():
        if name not in fields:
            hint = get_close_matches(name, fields, n=1)
            suggestion = f" Did you mean {hint[0]}?" if hint else ""
            param = _join(path, name)
            raise StripeError(
                f"Received unknown parameter: {param}.{suggestion}", code="parameter_unknown", param=param
            )
        checked[name] = _check(fields[name], item, _join(path, name))
    for name in sorted(required - set(value)):
        param = _join(path, name)
        raise StripeError(f"Missing required param: {param}.", code="parameter_missing", param=param)
    return checked


def _check_union(schema, value, path):
    # Try the alternatives that fit the shape of what was sent, most structured first, and report the error
    # of the most specific one: `Literal['']|int` given "abc" should say "Invalid integer", not "must be ''".
    if isinstance(value, dict):
        looks_like_list = bool(value) and all(key.isdigit() for key in value)
        order = (ListOf, Fields, MapOf) if looks_like_list else (Fields, MapOf, ListOf)
        candidates = [option for kind in order for option in schema.options if isinstance(option, kind)]
    else:
        candidates = [option for option in schema.options if isinstance(option, (Scalar, Choice))]
        candidates.sort(key=lambda option: isinstance(option, Choice))
    if not candidates:
        expected = "an object" if not isinstance(value, dict) else "a single value"
        raise StripeError(f"Invalid value for {path}: expected {expected}", param=path)
    first_error = None
    for option in candidates:
        try:
            return _check(option, value, path)
        except StripeError as error:
            first_error = first_error or error
    raise first_error


def _as_list(value, path):
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and all(key.isdigit() for key in value):
        return [value[key] for key in sorted(value, key=int)]
    raise StripeError(f"Invalid array: {path} must be a list, sent as {path}[0], {path}[1], …", param=path)


def _check_choice(schema, value, path):
    allowed = [str(option).lower() if isinstance(option, bool) else str(option) for option in schema.values]
    if value in allowed:
        return value
    shown = ", ".join(repr(option) if option == "" else option for option in allowed)
    raise StripeError(f"Invalid {path}: must be one of {shown}", param=path)


def _check_scalar(kind, value, path):
    if kind == "string":
        return value
    if kind == "integer":
        if INTEGER.fullmatch(value):
            return int(value)
        raise StripeError(f"Invalid integer: {value}", code="parameter_invalid_integer", param=path)
    if kind == "boolean":
        if value in ("true", "false"):
            return value == "true"
        raise StripeError(f"Invalid boolean: {value}", param=path)
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise StripeError(f"Invalid decimal: {value}", param=path) from None
    if not number.is_finite():
        raise StripeError(f"Invalid decimal: {value}", param=path)
    return number


def _scalar_name(schema):
    return schema.kind if isinstance(schema, Scalar) else "string"


def walk_schemas(typed_dict, seen=None):
    """Every parameter class reachable from one, so a test can prove all of them are understood."""
    seen = set() if seen is None else seen
    if typed_dict in seen:
        return seen
    seen.add(typed_dict)
    fields, _ = fields_of(typed_dict)
    pending = list(fields.values())
    while pending:
        schema = pending.pop()
        if isinstance(schema, Fields):
            walk_schemas(schema.typed_dict, seen)
        elif isinstance(schema, OneOf):
            pending.extend(schema.options)
        elif isinstance(schema, ListOf):
            pending.append(schema.item)
        elif isinstance(schema, MapOf):
            pending.append(schema.value)
    return seen

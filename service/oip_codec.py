"""Open Inference Protocol (KServe V2) REST bodies: JSON tensors and the binary data extension.

Pure functions over bytes and numpy, no HTTP: an inference request body is a JSON header,
optionally followed by the binary data of the inputs that declare ``binary_data_size`` (its
length is the ``Inference-Header-Content-Length`` header); a response is built the same way.
``BYTES`` elements in binary form are a 4-byte little-endian length and that many bytes.
Every malformed body is an :class:`~service.errors.InvalidInput` that says what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import InvalidInput, PayloadTooLarge

HEADER_LENGTH = "inference-header-content-length"
# The numeric datatypes the protocol defines, as numpy dtypes (little-endian on the wire).
NUMERIC = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = frozenset({*NUMERIC, "BYTES"})
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    """One input of a request: its header entry and, if sent that way, its binary data."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any  # the JSON "data" when not binary
    # The binary data when ``binary_data_size`` was given: a view of the request body, so an
    # 8 MiB body of images is not held twice.
    raw: memoryview | None

    @property
    def count(self) -> int:
        """Elements the shape says the tensor has."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class InferRequest:
    """A parsed inference request: its header object and its input tensors."""

    header: dict[str, Any]
    inputs: list[Tensor]

    @property
    def parameters(self) -> dict[str, Any]:
        """The request's ``parameters`` (empty when absent; an object, as parsing checked)."""
        params: dict[str, Any] = self.header.get("parameters", {})
        return params


def parse_request(body: bytes, header_length: str | None, max_json_bytes: int) -> InferRequest:
    """Split ``body`` into its JSON header and the inputs' binary data, and check both.

    Raises:
        InvalidInput: a header length, JSON, shape, datatype or data size that is wrong.
        PayloadTooLarge: a JSON header over ``max_json_bytes`` (tensors belong in binary).
    """
    if header_length is None:
        json_length = len(body)
    else:
        if not header_length.isdigit():
            raise InvalidInput(f"Inference-Header-Content-Length {header_length!r} is not a length")
        json_length = int(header_length)
        if json_length > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length is {json_length} but the body has "
                f"{len(body)} bytes"
            )
    if json_length > max_json_bytes:
        raise PayloadTooLarge(
            f"the JSON part of the request is {json_length} bytes; the limit is {max_json_bytes} "
            "(MAX_JSON_BYTES): send tensors with the binary data extension"
        )
    try:
        header = json.loads(body[:json_length], parse_constant=_not_json)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"the request header is not JSON: {exc}") from None
    except _NotJson as exc:
        raise InvalidInput(f"the request header is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("the request header nests too deeply") from None
    if not isinstance(header, dict):
        raise InvalidInput("the request header must be a JSON object")
    if not isinstance(header.get("parameters", {}), dict):
        raise InvalidInput("'parameters' must be an object")
    entries = header.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise InvalidInput("'inputs' must be a non-empty list")
    binary = memoryview(body)[json_length:]
    inputs = []
    offset = 0
    for i, entry in enumerate(entries):
        tensor, size = _input(entry, i, binary, offset)
        inputs.append(tensor)
        offset += size
    if offset != len(binary):
        raise InvalidInput(
            f"the inputs' binary_data_size add up to {offset} bytes but {len(binary)} follow "
            "the JSON header"
        )
    return InferRequest(header, inputs)


def count(value: Any) -> int | None:
    """``value`` as a non-negative integer, or None. JSON has one number type: 2.0 is the
    integer 2 (as JSON Schema's "integer" says); true is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


class _NotJson(ValueError):
    pass


def _not_json(token: str) -> Any:
    # Python's json reads NaN, Infinity and -Infinity; RFC 8259 has no such tokens.
    raise _NotJson(f"{token} is not a JSON value (RFC 8259 has no NaN or Infinity)")


def _input(entry: Any, i: int, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    if not isinstance(entry, dict):
        raise InvalidInput(f"inputs[{i}] must be an object")
    name = entry.get("name")
    datatype = entry.get("datatype")
    shape = entry.get("shape")
    if not isinstance(name, str):
        raise InvalidInput(f"inputs[{i}] has no 'name'")
    if not isinstance(datatype, str) or datatype not in DATATYPES:  # a dict is unhashable
        known = ", ".join(sorted(DATATYPES))
        raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r}; known: {known}")
    dims = [count(d) for d in shape] if isinstance(shape, list) else [None]
    if None in dims:
        raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers")
    shape = [d for d in dims if d is not None]
    params = entry.get("parameters", {})
    if not isinstance(params, dict):
        raise InvalidInput(f"input {name!r}: parameters must be an object")
    size = params.get("binary_data_size")
    if "binary_data_size" not in params:
        if "data" not in entry:
            raise InvalidInput(f"input {name!r} has neither 'data' nor binary_data_size")
        return Tensor(name, datatype, tuple(shape), entry["data"], None), 0
    size = count(size)
    if size is None:
        raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer")
    if offset + size > len(binary):
        raise InvalidInput(
            f"input {name!r}: binary_data_size {size} runs past the end of the body "
            f"({len(binary) - offset} bytes left)"
        )
    return Tensor(name, datatype, tuple(shape), None, binary[offset : offset + size]), size


def bytes_elements(tensor: Tensor) -> list[bytes] | list[memoryview]:
    """The elements of a ``BYTES`` tensor: length-prefixed in binary, base64 strings in JSON."""
    if tensor.raw is not None:
        return _unpack_bytes(tensor)
    data = tensor.data
    if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
        raise InvalidInput(
            f"input {tensor.name!r}: BYTES data in JSON must be a flat list of base64 strings"
        )
    if len(data) != tensor.count:
        raise InvalidInput(
            f"input {tensor.name!r}: shape {list(tensor.shape)} has {tensor.count} elements "
            f"but data has {len(data)}"
        )
    out = []
    for j, text in enumerate(data):
        try:
            out.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidInput(f"input {tensor.name!r}: element {j} is not base64") from None
    return out


def _unpack_bytes(tensor: Tensor) -> list[memoryview]:
    raw = tensor.raw
    assert raw is not None
    out: list[memoryview] = []
    offset = 0
    while offset < len(raw):
        if len(out) == tensor.count:
            raise InvalidInput(
                f"input {tensor.name!r}: more BYTES elements than the shape's {tensor.count}"
            )
        if offset + 4 > len(raw):
            raise InvalidInput(f"input {tensor.name!r}: element {len(out)}'s length is cut off")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput(
                f"input {tensor.name!r}: element {len(out)} says {length} bytes but "
                f"{len(raw) - offset} are left"
            )
        out.append(raw[offset : offset + length])
        offset += length
    if len(out) != tensor.count:
        raise InvalidInput(
            f"input {tensor.name!r}: shape {list(tensor.shape)} has {tensor.count} elements "
            f"but the binary data holds {len(out)}"
        )
    return out


def finite_array(tensor: Tensor, dtype: str) -> np.ndarray:
    """:func:`numeric_array` of a float ``dtype``, refused unless every value is finite (a
    JSON number beyond the dtype's range becomes infinity here, and is refused too)."""
    with np.errstate(over="ignore"):
        array = numeric_array(tensor, dtype)
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InvalidInput(
            f"input {tensor.name!r}: {bad} of its {array.size} values are NaN, infinite or "
            f"beyond {dtype}'s range; send finite values"
        )
    return array


def numeric_array(tensor: Tensor, dtype: str) -> np.ndarray:
    """A numeric tensor as an array of its shape, from JSON data or binary data."""
    expected = NUMERIC[dtype]
    if tensor.raw is not None:
        if len(tensor.raw) != tensor.count * expected.itemsize:
            raise InvalidInput(
                f"input {tensor.name!r}: shape {list(tensor.shape)} of {dtype} is "
                f"{tensor.count * expected.itemsize} bytes but binary_data_size is "
                f"{len(tensor.raw)}"
            )
        array = np.frombuffer(tensor.raw, dtype=expected)
    else:
        try:
            array = np.asarray(tensor.data, dtype=expected)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"input {tensor.name!r}: data is not {dtype} numbers: {exc}"
            ) from None
        if array.size != tensor.count:
            raise InvalidInput(
                f"input {tensor.name!r}: shape {list(tensor.shape)} has {tensor.count} "
                f"elements but data has {array.size}"
            )
    return array.reshape(tensor.shape)


@dataclass(frozen=True)
class Output:
    """One output of a response: a numeric array, or ``BYTES`` strings."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: np.ndarray | list[bytes]
    binary: bool


def encode_response(header: dict[str, Any], outputs: list[Output]) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when any output is binary."""
    entries = []
    blobs = []
    for out in outputs:
        entry: dict[str, Any] = {
            "name": out.name,
            "datatype": out.datatype,
            "shape": list(out.shape),
        }
        if out.binary:
            blob = _pack(out)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif isinstance(out.values, np.ndarray):
            entry["data"] = out.values.reshape(-1).tolist()
        else:
            entry["data"] = [v.decode() for v in out.values]
        entries.append(entry)
    # allow_nan=False: a NaN that got this far is a bug to fail on, not a token to send.
    text = json.dumps(
        {**header, "outputs": entries}, separators=(",", ":"), allow_nan=False
    ).encode()
    if not blobs:
        return text, None
    return text + b"".join(blobs), len(text)


def _pack(out: Output) -> bytes:
    if isinstance(out.values, np.ndarray):
        return np.ascontiguousarray(out.values, dtype=NUMERIC[out.datatype]).tobytes()
    return b"".join(_LENGTH.pack(len(v)) + v for v in out.values)

"""Request bodies: one declared pydantic model per route, put into the OpenAPI document, and the readers that
validate a request against it, refusing with a 4xx before any costly work.

Limits are checked before the work they limit: the body size as it streams (``read_body``), the number of
pictures before any is decoded (JSON list length, multipart parts while parsing), and every type by the
model (JSON parsed by pydantic, whose parser bounds nesting depth). A wrong type anywhere is a 400 naming the
field (``problems``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from sk_deploy.service.errors import ApiError

# --- /v1/classify and /v1/classify/batch -------------------------------------------------------------------

BASE64 = r"^(data:[^,]*,)?([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
"""What ``_b64`` accepts, for the OpenAPI document (the message of a refusal is ours, not a regex's)."""
Base64Picture = Annotated[str, Field(min_length=1, json_schema_extra={"pattern": BASE64}, description=(
    "A picture's bytes (JPEG, PNG, WebP, ...) in base64; a data: URL is accepted too"))]
PictureFile = Annotated[bytes, Field(min_length=1)]


class ClassifyJson(BaseModel):
    """/v1/classify as JSON: one base64 picture."""

    image: Base64Picture


class ClassifyForm(BaseModel):
    """/v1/classify as multipart/form-data: one file part."""

    file: PictureFile = Field(description="The picture (any file part is taken)")


class BatchJson(BaseModel):
    """/v1/classify/batch as JSON: several base64 pictures (at most the server's --max-queue)."""

    images: list[Base64Picture] = Field(min_length=1)


class BatchForm(BaseModel):
    """/v1/classify/batch as multipart/form-data: several file parts."""

    files: list[PictureFile] = Field(min_length=1, description="The pictures (every file part is taken)")


RAW_PICTURE_TYPES = ("image/jpeg", "image/png", "image/webp", "application/octet-stream")


def picture_body(json_model: type[BaseModel], form_model: type[BaseModel], raw: bool) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a classify route: raw picture bytes (when ``raw``), multipart, JSON."""
    content: dict[str, Any] = {kind: {"schema": {"type": "string", "format": "binary", "minLength": 1}}
                               for kind in (RAW_PICTURE_TYPES if raw else ())}
    content["multipart/form-data"] = {"schema": {"$ref": f"#/components/schemas/{form_model.__name__}"}}
    content["application/json"] = {"schema": {"$ref": f"#/components/schemas/{json_model.__name__}"}}
    return {"requestBody": {"required": True, "content": content}}


# --- KServe v2 infer ---------------------------------------------------------------------------------------

Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
                   "FP64"]
MAX_DIMS = 8


class _Open(BaseModel):
    """Parameters objects: the named ones are typed, any other is allowed (the protocol is extensible)."""

    model_config = ConfigDict(extra="allow")


class TensorParameters(_Open):
    """An input tensor's parameters: ``binary_data_size`` when its data follows the JSON header as bytes."""

    binary_data_size: int | None = Field(None, ge=0)


class OutputParameters(_Open):
    """A requested output's parameters: binary or JSON data, and Triton's classification extension (top k)."""

    binary_data: StrictBool | None = None
    classification: int = Field(0, ge=0, le=1_000_000)


class RequestParameters(_Open):
    """The request's parameters: the default for ``binary_data`` of every output."""

    binary_data_output: StrictBool = False


class InputTensor(BaseModel):
    """One input tensor: JSON ``data`` (row-major, flat) or ``binary_data_size`` bytes after the header."""

    model_config = ConfigDict(allow_inf_nan=False)

    name: str
    shape: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(max_length=MAX_DIMS)
    datatype: Datatype
    parameters: TensorParameters | None = None
    data: list[float] | None = None


class OutputRequest(BaseModel):
    """An output the client asks for."""

    name: str
    parameters: OutputParameters | None = None


class InferBody(BaseModel):
    """A KServe v2 infer request (the JSON body, or the inference header of the binary tensor extension)."""

    id: str | None = None
    inputs: list[InputTensor] = Field(min_length=1, max_length=16)
    outputs: list[OutputRequest] | None = Field(None, max_length=16)
    parameters: RequestParameters | None = None


def infer_body() -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of v2 infer: JSON, or the binary extension (header, then tensor bytes)."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferBody"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary", "description":
                                                "An InferBody JSON of Inference-Header-Content-Length bytes, then "
                                                "each binary input's bytes in order"}}}}}


BODY_MODELS: tuple[type[BaseModel], ...] = (ClassifyJson, ClassifyForm, BatchJson, BatchForm, InferBody)
"""The models the routes' request bodies refer to (added to the OpenAPI components)."""


# --- reading and validating --------------------------------------------------------------------------------

def problems(exc: ValidationError, where: str = "") -> str:
    """A validation error as one line naming each field: ``inputs[0].shape[1]: Input should be ...``."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:3]:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
        parts.append(f"{where}{path or 'body'}: {error['msg']}")
    return format_problems(parts, exc.error_count())


def format_problems(parts: list[str], total: int) -> str:
    """The first three of ``total`` problems (each ``field: message``) as one line."""
    more = total - len(parts[:3])
    return "; ".join(parts[:3]) + (f" (and {more} more)" if more > 0 else "")


def parse_json(model: type[BaseModel], data: bytes | memoryview, what: str = "the body") -> Any:
    """``data`` validated as ``model``; a 400 naming the field or the JSON error otherwise."""
    try:
        return model.model_validate_json(bytes(data))
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            raise ApiError(400, f"{what} is not valid JSON ({exc.errors()[0]['msg']})") from None
        raise ApiError(400, problems(exc)) from None


def too_large(limit: int) -> ApiError:
    """The 413 of a body over ``limit`` bytes."""
    return ApiError(413, f"request body is larger than the {limit / 1024 / 1024:g} MB limit; raise it with "
                         f"sk-deploy serve --max-body-mb N")


def declared_length(request: Request, limit: int) -> None:
    """Refuse at once a body whose Content-Length is over ``limit`` (or is not a number)."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not (declared.isascii() and declared.isdigit()):
        raise ApiError(400, f"Content-Length must be a whole number of bytes, got {declared[:40]!r}")
    if int(declared) > limit:
        raise too_large(limit)


async def limited_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive, refused with 413 once they pass ``limit`` bytes."""
    declared_length(request, limit)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 once it passes ``limit`` bytes (before reading it, when declared)."""
    return b"".join([chunk async for chunk in limited_stream(request, limit)])


def _b64(value: str, where: str) -> bytes:
    try:
        return base64.b64decode(value.split(",", 1)[-1] if value.startswith("data:") else value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{where} is not valid base64") from None


def count_pictures(count: int, many: bool, max_pictures: int) -> None:
    """Refuse a picture count before any picture is decoded: several on /v1/classify, more than the queue."""
    if count == 0:
        raise ApiError(400, "no picture in the request")
    if not many and count > 1:
        raise ApiError(400, f"{count} pictures sent to /v1/classify; use /v1/classify/batch for several")
    if count > max_pictures:
        raise ApiError(413, f"{count} pictures in one request, more than the queue holds ({max_pictures}, "
                            f"sk-deploy serve --max-queue); send fewer at a time")


async def read_pictures(request: Request, limit: int, many: bool, max_pictures: int) -> list[bytes]:
    """The picture(s) of a classify request: a raw ``image/*`` (or octet-stream) body, multipart files, or
    JSON ``{"image": base64}`` / ``{"images": [base64, ...]}``. Wrong content types are 415."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        if many:
            raise ApiError(415, "the batch endpoint takes multipart/form-data (several 'files') or JSON "
                                '{"images": [base64, ...]}')
        pictures = [await read_body(request, limit)]
    elif content_type == "multipart/form-data":
        pictures = await _multipart_files(request, limit, max_pictures)
    elif content_type == "application/json":
        body = await read_body(request, limit)
        pictures = await asyncio.to_thread(json_pictures, body, many, max_pictures)  # not on the event loop
    else:
        shown = content_type or "none"
        raise ApiError(415, f"unsupported Content-Type {shown!r}: send the picture as a raw image/jpeg, image/png "
                            f'or image/webp body, as multipart/form-data (field "file"), or as JSON '
                            f'{{"image": base64}}')
    count_pictures(len(pictures), many, max_pictures)
    for i, data in enumerate(pictures):
        if not data:
            raise ApiError(400, "empty body: no picture to classify" if len(pictures) == 1
                           else f"picture {i} is empty")
    return pictures


def json_pictures(body: bytes, many: bool, max_pictures: int) -> list[bytes]:
    """The pictures of a JSON classify body, counted before any is decoded from base64."""
    if not many:
        return [_b64(parse_json(ClassifyJson, body).image, "image")]
    values = parse_json(BatchJson, body).images
    count_pictures(len(values), many, max_pictures)
    return [_b64(v, f"images[{i}]") for i, v in enumerate(values)]


async def _multipart_files(request: Request, limit: int, max_pictures: int) -> list[bytes]:
    """The file parts, parsed as the body streams in; parsing stops one part past ``max_pictures``."""
    parser = MultiPartParser(request.headers, limited_stream(request, limit), max_files=max_pictures + 1,
                             max_fields=64)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise ApiError(413, f"more than {max_pictures} pictures in one request, more than the queue holds "
                                f"(sk-deploy serve --max-queue); send fewer at a time") from None
        raise ApiError(400, f"malformed multipart body ({exc.message})") from None
    try:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise ApiError(400, 'the multipart body has no file part (send the picture as field "file")')
        return [await f.read() for f in files]
    finally:
        await form.close()

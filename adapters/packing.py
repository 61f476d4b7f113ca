"""An adapter's weights file in one flat buffer, so a load is one host-to-device transfer.

A safetensors file already is one flat buffer: a JSON header, then every tensor's bytes.
:func:`read_packed` reads the whole file with one ``readinto`` into a buffer (page-locked
when the engine is on CUDA), makes each tensor a view of it, validates the adapter on those
views (:func:`adapters.adapter_files.read_checked`; finiteness in one pass over the data) and,
on CUDA, starts one ``non_blocking`` copy of the buffer to the device on a side stream. All of
it runs on the caller's thread, off the engine's worker. The worker then only makes its stream
wait for that copy (a GPU-side wait: the CPU never synchronises) and copies each module's
views into its slot (:meth:`SlotBank.install`), so a load delays decoding by at most the
kernel launches of those copies, once.

The tensors stay as stored (``lora_A [r, in]``, ``lora_B [out, r]``, the file's dtype): the
slot copy itself transposes and scales (``copy_`` of a transposed view, ``mul(..., out=)``),
with the float32 arithmetic :func:`read_adapter` uses, so the slots hold the same values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch

from lora_router.adapters.adapter_files import (
    CheckedAdapter,
    LinearShapes,
    non_finite,
    read_checked,
)

# safetensors dtype names (those a LoRA file may hold)
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


class Span(NamedTuple):
    """One tensor's place in the buffer."""

    offset: int  # bytes from the buffer's start
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return _numel(self.shape) * _itemsize(self.dtype)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def typed_view(flat: torch.Tensor, span: Span) -> torch.Tensor:
    """``span`` of the byte buffer ``flat`` as a tensor (a view; a copy if misaligned)."""
    raw = flat[span.offset : span.offset + span.nbytes]
    if span.offset % _itemsize(span.dtype):  # a mixed-dtype file may misalign a tensor
        raw = raw.clone()
    return raw.view(span.dtype).view(span.shape)


def _parse_header(buf: memoryview, size: int) -> tuple[int, dict[str, Span]]:
    """The data start and every tensor's span; ValueError for anything malformed."""
    if size < 8:
        raise ValueError("file too short for a safetensors header")
    n = int.from_bytes(buf[:8], "little")
    if n > size - 8:
        raise ValueError(f"header length {n} exceeds the file ({size} bytes)")
    header = json.loads(bytes(buf[8 : 8 + n]))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    start, spans, ends = 8 + n, {}, []
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        try:
            span, begin, end = _span(start, meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"tensor {key!r}: {exc}") from exc
        spans[key] = span
        ends.append((begin, end))
    covered = 0
    for begin, end in sorted(ends):  # the data must be tiled exactly, as safetensors requires
        if begin != covered:
            raise ValueError("tensor data overlaps or leaves holes")
        covered = end
    if start + covered != size:
        raise ValueError(f"tensor data ends at {start + covered}, the file at {size}")
    return start, spans


def _span(start: int, meta: dict[str, Any]) -> tuple[Span, int, int]:
    dtype = _DTYPES.get(str(meta["dtype"]))
    if dtype is None:
        raise ValueError(f"unsupported dtype {meta['dtype']!r}")
    shape = tuple(int(d) for d in meta["shape"])
    begin, end = (int(x) for x in meta["data_offsets"])
    span = Span(start + begin, dtype, shape)
    if min(shape, default=0) < 0 or begin < 0 or end - begin != span.nbytes:
        raise ValueError("offsets do not match its shape and dtype")
    return span, begin, end


class SafetensorsBuffer:
    """Reads a safetensors file into one (optionally page-locked) byte buffer."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self.flat = torch.empty(0, dtype=torch.uint8)
        self.data_start = 0
        self.spans: dict[int, Span] = {}  # id(tensor returned by load) -> its span

    def load(self, path: Path) -> dict[str, torch.Tensor]:
        size = path.stat().st_size
        flat = torch.empty(size, dtype=torch.uint8, pin_memory=self.pin)
        buf = flat.numpy().data
        with path.open("rb") as f:
            got = f.readinto(buf)
        if got != size:
            raise OSError(f"read {got} of {size} bytes of {path}")
        self.data_start, spans = _parse_header(buf, size)
        self.flat = flat
        tensors = {key: typed_view(flat, span) for key, span in spans.items()}
        self.spans = {id(tensors[key]): span for key, span in spans.items()}
        return tensors


class PackedEntry(NamedTuple):
    """Where one module's tensors lie in the buffer."""

    name: str
    rank: int
    scaling: float
    a: Span  # [rank, fan_in]
    b: Span  # [fan_out, rank]


@dataclass(frozen=True)
class PackedAdapter:
    """A validated adapter as one byte buffer (its weights file) plus its modules' spans."""

    path: Path
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    size_bytes: int
    flat: torch.Tensor  # uint8
    entries: tuple[PackedEntry, ...]
    ready: torch.cuda.Event | None = None  # recorded after the upload, on its side stream

    def modules(self) -> Iterator[tuple[PackedEntry, torch.Tensor, torch.Tensor]]:
        """``(entry, a [r, in], b [out, r])`` per module: views of :attr:`flat`."""
        for e in self.entries:
            yield e, typed_view(self.flat, e.a), typed_view(self.flat, e.b)

    @property
    def nbytes(self) -> int:
        return self.flat.numel()

    def upload(self, device: torch.device) -> PackedAdapter:
        """Start the one copy to ``device`` (CUDA: on a side stream, not waited for here)."""
        if device.type != "cuda":
            return self if self.flat.device == device else replace(self, flat=self.flat.to(device))
        stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        with torch.cuda.stream(stream):
            flat = self.flat.to(device, non_blocking=True)
            ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
            ready.record(stream)
        return replace(self, flat=flat, ready=ready)

    def bind_to_current_stream(self) -> None:
        """Order the current stream after the upload, and keep the buffer alive until the
        current stream is done with it (the caching allocator would otherwise reuse it)."""
        if self.ready is None or self.flat.device.type != "cuda":
            return
        current = torch.cuda.current_stream(self.flat.device)
        current.wait_event(self.ready)
        self.flat.record_stream(current)


def _check_finite(adapter: CheckedAdapter, buf: SafetensorsBuffer) -> None:
    """One pass over the data when it has one dtype; the module named if a value is not."""
    dtypes = {t.dtype for m in adapter.modules.values() for t in (m.a, m.b)}
    data = buf.flat[buf.data_start :]
    if len(dtypes) == 1:
        (dtype,) = dtypes
        size = _itemsize(dtype)
        aligned = buf.data_start % size == 0 and data.numel() % size == 0
        if aligned and torch.isfinite(data.view(dtype)).all():
            return
    for name, m in adapter.modules.items():
        if not (torch.isfinite(m.a).all() and torch.isfinite(m.b).all()):
            raise non_finite(adapter.path, name)


def read_packed(
    path: Path, shapes: LinearShapes, max_rank: int, device: torch.device
) -> PackedAdapter:
    """Validate the adapter at ``path`` (errors as ``read_checked``), reading its weights
    file into one buffer, and start uploading that buffer to ``device``."""
    buf = SafetensorsBuffer(pin=device.type == "cuda")
    checked = read_checked(path, shapes, max_rank, loader=buf.load, check_finite=False)
    _check_finite(checked, buf)
    entries = tuple(
        PackedEntry(name, m.rank, m.scaling, buf.spans[id(m.a)], buf.spans[id(m.b)])
        for name, m in checked.modules.items()
    )
    packed = PackedAdapter(
        path=checked.path,
        rank=checked.rank,
        alpha=checked.alpha,
        target_modules=checked.target_modules,
        size_bytes=checked.size_bytes,
        flat=buf.flat,
        entries=entries,
    )
    return packed.upload(device)

"""Plain ``json`` records decoded a whole batch at a time: a few C-level passes, one parse.

Per record, the decoder's Python work (a parse call, key checks, shape proofs) costs
more than parsing the numbers. Most traffic is one layout over and over,
``{"id": "...", "instance": [...], "output": [...]}`` (``id`` and ``output`` optional,
in that order, nothing else), and a batch of such records is read in three steps:

1. each message is cut into its id and its instance's text:
   - usually by the first message's head (``HEAD``: its bytes up to the instance):
     every message must start with the same bytes but for an id of the same length and
     end with ``}``. numpy compares the heads as one block of that width and overwrites
     them, in the messages joined, with ``MARK`` and blanks, so no message is sliced
     and no instance is read byte by byte in Python;
   - else (ids of different lengths, other blanks from record to record, ids in some
     records only) by a regular expression over the messages joined with ``,\n``, none
     of which may hold a line break: ``BETWEEN`` for records without outputs (it
     matches only what lies between two instances), ``RECORD`` for records with them;
   ids hold no quote, backslash or control character, so their bytes are the value;
2. deleting the number characters from the instances, joined with ``MARK``, leaves the
   batch's skeleton, which must be the input shape's, once per message;
3. simdjson parses the instances as one array, which validates every number as JSON
   and gives one float64 buffer for the batch.

Anything else, or any doubt, returns None and the batch takes the per-record path,
which decodes it as before and says what is wrong with a bad record. So every batch this
path accepts decodes to the rows and ids the per-record path would give it (no record it
accepts has context fields or model labels).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import simdjson

from monitor.stream.formats import NUMBER_CHARS, InputSpec, skeleton
from monitor.stream.headers import MAX_VALUE_CHARS

_SPACE = rb"[ \t\r]*"
_NUMBERS = rb"\[[0-9eE.+\- \t\r,\[\]]*\]"


def _field(name: bytes, value: bytes) -> bytes:
    return b'"' + name + b'"' + _SPACE + b":" + _SPACE + value + _SPACE


#: An optional first field ``"id": "..."`` and its comma; group (id,). The id's bytes
#: hold no quote, backslash or control character: they are the string's value.
_ID = rb"(?:" + _field(b"id", rb'"([^"\\\x00-\x1f]*)"') + rb"," + _SPACE + rb")?"
#: One record, groups (id, instance, output). No line break can match anywhere in it.
RECORD = re.compile(
    rb"\{"
    + _SPACE
    + _ID
    + _field(b"instance", b"(" + _NUMBERS + b")")
    + rb"(?:,"
    + _SPACE
    + _field(b"output", b"(" + _NUMBERS + b")")
    + rb")?\}"
)
_GROUPS = RECORD.groups
#: A record's end, the separator and the next record's start up to its instance: what
#: lies between two records without outputs. Group (id,).
BETWEEN = re.compile(rb"\},\n\{" + _SPACE + _ID + rb'"instance"' + _SPACE + b":" + _SPACE)
SEPARATOR = b",\n"
#: A record's start up to its instance, the template's source. Groups (id,).
HEAD = re.compile(rb"\{" + _SPACE + _ID + rb'"instance"' + _SPACE + b":" + _SPACE)
#: What the skeleton check deletes: numbers, spaces, tabs and carriage returns, but not
#: line breaks (``_between`` relies on them staying).
NUMBERS_AND_BLANKS = NUMBER_CHARS + b" \t\r"
#: Marks where one message's array ends and the next one's starts, so that the skeleton
#: check holds each message's array to exactly one copy of the shape's skeleton (with
#: commas, brackets could be shifted between neighbours: ``[[1,2]`` and
#: ``[3,4]],[[5,6],[7,8]]``). An array holding one itself leaves a mark too many.
MARK = b";"


def _ids(found: list[bytes | None]) -> list[str | None] | None:
    """The ids' text (bounded as ``headers.text`` bounds it), or None: one is not UTF-8."""
    try:
        return [None if i is None else i.decode()[:MAX_VALUE_CHARS] for i in found]
    except UnicodeDecodeError:
        return None


#: Messages cut into their instances' text and their ids (step 1).
Cut = tuple[list[bytes], list[str | None]]
#: The messages joined, each one's head turned into ``MARK`` (``[`` for the first) and
#: blanks and its closing ``}`` into a blank (``]`` for the last), and their ids.
Marked = tuple[bytearray, list[str | None]]
_BLANK = ord(" ")


def _templated(texts: Sequence[bytes], lengths: np.ndarray) -> Marked | None:
    """The messages marked in place by the first one's head, or None: some message's
    head differs from it but for an id of the same length (``_between`` may still read
    the batch).

    Every message must hold the first one's head (its bytes up to its instance, as
    ``HEAD`` matches them) at its start, byte for byte outside the id, and end with
    ``}``; the id's bytes must not be a quote, a backslash or a control character
    (``_fixed_ids``), so the head is the same JSON but for the id's value. The heads
    are compared and overwritten in numpy, as a block of the same width in each message.
    """
    head = HEAD.match(texts[0])
    if head is None or lengths.min() <= head.end():
        return None
    marked = bytearray().join(texts)
    u = np.frombuffer(marked, dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    where = starts[:, None] + np.arange(head.end())
    heads = u[where]
    id_start, id_end = head.span(1) if head.start(1) >= 0 else (head.end(), head.end())
    if not (_same(heads[:, :id_start]) and _same(heads[:, id_end:])):
        return None
    ends = starts + lengths - 1
    if not (u[ends] == ord("}")).all():
        return None
    ids: list[str | None] | None = [None] * len(texts)
    if head.start(1) >= 0:
        ids = _fixed_ids(heads[:, id_start:id_end])
    if ids is None:
        return None
    u[where] = _BLANK
    u[ends] = _BLANK
    u[starts] = MARK[0]
    u[0], u[-1] = ord("["), ord("]")
    return marked, ids


def _same(columns: np.ndarray) -> bool:
    """Whether every row equals the first."""
    return bool((columns == columns[0]).all())


def _fixed_ids(block: np.ndarray) -> list[str | None] | None:
    """The ids' text, one row of bytes each, as ``_ids`` gives it, or None: one holds a
    quote, a backslash, a control character or bytes that aren't UTF-8. ASCII ids (one
    character a byte) become text through numpy's fixed-width strings."""
    ids: list[str | None]
    n, width = block.shape
    if not width:
        return [""] * n
    rows = np.ascontiguousarray(block)
    if ((rows < 0x20) | (rows == ord('"')) | (rows == ord("\\"))).any():
        return None
    if (rows < 0x80).all():  # (and no NUL, which a fixed-width string would drop)
        ids = rows.astype(np.uint32).view(f"<U{width}").ravel().tolist()
    else:
        raw = rows.tobytes()
        try:
            ids = [raw[i : i + width].decode() for i in range(0, n * width, width)]
        except UnicodeDecodeError:
            return None
    if width > MAX_VALUE_CHARS:
        ids = [cast(str, i)[:MAX_VALUE_CHARS] for i in ids]
    return ids


def _between(text: bytes, n: int) -> Cut | None:
    """The messages cut by ``BETWEEN`` (any blanks, ids in some records only), or None.

    ``text`` is the messages joined with ``},\n`` put first. Each ``BETWEEN`` match
    holds one line break, and the arrays between the matches may hold none (their
    skeleton keeps line breaks), so every line break, each separator's and any
    inside a message, is in a match; n matches for n line breaks mean that each
    separator follows a ``}`` and precedes the start of a record, and that no
    message holds another line break or a second record. What lies between a
    message's match and the next one (or the final ``}``) must be one array of the
    input's shape (``MARK``): the skeleton and the parse prove it.
    """
    parts = BETWEEN.split(text)
    if len(parts) != 2 * n + 1 or parts[0] or not parts[-1].endswith(b"}"):
        return None
    ids = _ids(parts[1::2])
    if ids is None:
        return None
    arrays = parts[2::2]
    arrays[-1] = arrays[-1][:-1]
    return arrays, ids


@dataclass
class BatchRows:
    """One row per message: float64 instances (n, size), outputs (n, classes) or None."""

    x: np.ndarray
    y: np.ndarray | None
    ids: list[str | None]


#: Instances of more elements than this are parsed one by one: parsing their numbers
#: outweighs the per-record work this path saves, and the joined copies of a batch of
#: big records (a 16 MB batch of images) would only add to the peak memory.
MAX_ELEMENTS = 1024
#: Nor is a batch holding a message longer than this read as a whole.
MAX_MESSAGE_BYTES = 64 * 1024
#: Flat instances written with more bytes per element than this (long decimals, such as
#: float32 values printed as float64) are parsed one by one: the per-record path proves
#: a flat array without reading its text byte by byte, and the skeleton check here does
#: (in instructions counted with callgrind, the two break even near 12 bytes an element,
#: plus some 64 for the keys and the id).
MAX_FLAT_BYTES_PER_ELEMENT = 12


def applies(spec: InputSpec) -> bool:
    """Whether records of ``spec`` are small enough for the whole-batch path."""
    return spec.size <= MAX_ELEMENTS


class JsonBatch:
    """The whole-batch path for one input spec. Not thread-safe (one parser)."""

    def __init__(self, spec: InputSpec) -> None:
        self._size = spec.size
        self._n_classes = spec.n_classes
        self._max_bytes = min(spec.max_message_bytes, MAX_MESSAGE_BYTES)
        #: Mean bytes a flat record may take here, its keys and id included (0: nested, any).
        flat = len(spec.shape) == 1
        self._flat_limit = MAX_FLAT_BYTES_PER_ELEMENT * spec.size + 64 if flat else 0
        self._instance = skeleton(spec.shape)
        self._output = skeleton((spec.n_classes,))
        self._expected: dict[tuple[bytes, int], bytes] = {}
        self._parser = simdjson.Parser()

    def rows(self, values: Sequence[bytes | None]) -> BatchRows | None:
        """Rows of every message, or None: some message is not a plain record (or
        anything is odd), and the per-record path must decode the batch. Which way to
        cut the messages is the first message's say: a batch's records share a layout."""
        n = len(values)
        texts = cast(Sequence[bytes], values)
        try:
            lengths = np.fromiter(map(len, texts), dtype=np.intp, count=n)
        except TypeError:  # a message without a value
            return None
        if not n or lengths.max() > self._max_bytes:
            return None
        if self._flat_limit and lengths.sum() > self._flat_limit * n:
            return None
        if b'"output"' in texts[0]:
            return self._with_outputs(SEPARATOR.join(texts), n)
        x: np.ndarray | None
        ids: list[str | None]
        if (marked := _templated(texts, lengths)) is not None:
            text, ids = marked
            x = self._numbers(text, self._instance, n, n * self._size)
        elif (cut := _between(b"}" + SEPARATOR + SEPARATOR.join(texts), n)) is not None:
            arrays, ids = cut
            x = self._parsed(arrays, self._instance, n * self._size)
        else:
            return None
        return None if x is None else BatchRows(x.reshape(n, self._size), None, ids)

    def _with_outputs(self, joined: bytes, n: int) -> BatchRows | None:
        """``RECORD`` tiles the text: n matches (none can hold a line break) joined by
        exactly the n - 1 separators, so no message holds a line break or two records."""
        parts = RECORD.split(joined)
        step = _GROUPS + 1
        if (
            len(parts) != step * n + 1
            or parts[0]
            or parts[-1]
            or parts[step:-1:step].count(SEPARATOR) != n - 1
        ):
            return None
        ids = _ids(parts[1::step])
        if ids is None:
            return None
        x = self._parsed(parts[2::step], self._instance, n * self._size)
        if x is None:
            return None
        outputs = parts[3::step]
        if outputs.count(None) == n:
            return BatchRows(x.reshape(n, self._size), None, ids)
        if None in outputs:  # some records without an output
            return None
        y = self._parsed(outputs, self._output, n * self._n_classes)
        if y is None:
            return None
        return BatchRows(x.reshape(n, self._size), y.reshape(n, self._n_classes), ids)

    def _parsed(self, arrays: list[bytes], one: bytes, count: int) -> np.ndarray | None:
        """Float64 numbers of the arrays, each of which must have the skeleton ``one``."""
        arrays[0] = b"[" + arrays[0]
        arrays[-1] += b"]"
        return self._numbers(MARK.join(arrays), one, len(arrays), count)

    def _numbers(
        self, marked: bytes | bytearray, one: bytes, n: int, count: int
    ) -> np.ndarray | None:
        """Float64 numbers of ``marked``: n arrays of the skeleton ``one`` between
        ``MARK``s (and blanks), in brackets."""
        if marked.translate(None, NUMBERS_AND_BLANKS) != self._skeleton(one, n):
            return None
        doc: Any = None
        try:
            doc = self._parser.parse(marked.replace(MARK, b","))
            flat = np.frombuffer(doc.as_buffer(of_type="d"), dtype=np.float64)
        except (ValueError, RuntimeError, TypeError):
            self._parser = simdjson.Parser()  # in case a proxy still holds the old one
            return None
        finally:
            doc = None  # the parser is reused: no proxy may outlive this call
        # A regular skeleton fixes the count, except that [] looks like [5].
        return flat if len(flat) == count else None

    def _skeleton(self, one: bytes, n: int) -> bytes:
        key = (one, n)
        found = self._expected.get(key)
        if found is None:
            if len(self._expected) > 8:  # batch sizes vary little; keep a few
                self._expected.clear()
            found = self._expected[key] = b"[" + MARK.join([one] * n) + b"]"
        return found

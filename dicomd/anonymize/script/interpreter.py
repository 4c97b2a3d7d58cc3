"""Runs a parsed DicomEdit 6 script on one dataset, in place."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from dicomd.anonymize.privatetags import PrivateTagSpec
from dicomd.anonymize.script import functions as fn
from dicomd.anonymize.script.syntax import (
    Assign, Call, CallCondition, CallStatement, Compare, Condition, Delete, Describe, Echo, IfChain, ListValue,
    Num, RemoveAllPrivate, Script, SetVar, Statement, Str, TagRef, Ternary, Value, Var, Version, parse_tagpath,
    script_error,
)
from dicomd.anonymize.script.tagpath import TagPath
from dicomd.errors import Rejected, ScriptError

logger = logging.getLogger(__name__)

_INT_VRS = frozenset({"US", "SS", "UL", "SL", "SV", "UV", "AT"})
_FLOAT_VRS = frozenset({"FL", "FD"})
_INT_RANGES = MappingProxyType({
    "US": (0, 2**16 - 1), "SS": (-(2**15), 2**15 - 1), "UL": (0, 2**32 - 1), "SL": (-(2**31), 2**31 - 1),
    "UV": (0, 2**64 - 1), "SV": (-(2**63), 2**63 - 1), "AT": (0, 2**32 - 1),
})
_BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})


@dataclass
class Counts:
    changes: int = 0
    removed: int = 0


@dataclass
class Run:
    """The state of one script run over one dataset."""

    ds: Dataset
    variables: dict[str, str | tuple[str | TagPath, ...]]  # a list keeps its tag paths as paths
    uids: fn.UidMaker
    lookup_table: Mapping[str, str]
    source: str
    counts: Counts = field(default_factory=Counts)


class Interpreter:
    def __init__(self, script: Script, source: str = "", lookup_table: Mapping[str, str] | None = None,
                 key: bytes | None = None) -> None:
        self.script = script
        self.source = source
        self.lookup_table = dict(lookup_table or {})
        self.uids = fn.UidMaker(key)

    def run(self, ds: Dataset, variables: Mapping[str, str]) -> Counts:
        run = Run(ds, {k: str(v) for k, v in variables.items()}, self.uids, self.lookup_table, self.source)
        for statement in self.script.statements:
            _execute(run, statement)
        return run.counts


# ------------------------------------------------------------------------------------------ statements


def _execute(run: Run, st: Statement) -> None:
    if isinstance(st, Assign):
        _assign(run, st)
    elif isinstance(st, SetVar):
        if isinstance(st.value, ListValue):
            run.variables[st.name] = _list_items(run, st.value)
        else:
            run.variables[st.name] = _text(run, st.value)
    elif isinstance(st, Delete):
        item = st.path.last.item
        for container, tag in st.path.find(run.ds):
            if isinstance(item, int):  # `- (gggg,eeee)[n]` removes one item of a sequence
                seq = container[tag].value if container[tag].VR == "SQ" else None
                if seq is not None and 0 <= item < len(seq):
                    del seq[item]
                    run.counts.removed += 1
            elif tag in container:
                del container[tag]
                run.counts.removed += 1
    elif isinstance(st, Ternary):
        if _holds(run, st.condition):
            _execute(run, st.then)
        elif st.otherwise is not None:
            _execute(run, st.otherwise)
    elif isinstance(st, IfChain):
        for condition, body in st.branches:
            if _holds(run, condition):
                for inner in body:
                    _execute(run, inner)
                return
        for inner in st.otherwise or ():
            _execute(run, inner)
    elif isinstance(st, CallStatement):
        if st.call.name in _SHIFT_IN_PLACE and isinstance(st.call.args[0], TagRef):
            _shift_in_place(run, st.call)
        else:
            _call(run, st.call)
    elif isinstance(st, RemoveAllPrivate):
        run.counts.removed += _remove_private(run.ds, ())
    elif isinstance(st, Echo):
        logger.debug("script echo (line %d): %s", st.line, "" if st.value is None else _text(run, st.value))
    elif isinstance(st, (Describe, Version)):
        pass
    else:  # pragma: no cover - the parser builds only the statements above
        raise ScriptError(f"line {st.line}: cannot run {type(st).__name__}")


_SHIFT_IN_PLACE = ("shiftDateByIncrement", "shiftDateTimeByIncrement")


def _shift_in_place(run: Run, call: Call) -> None:
    """`shiftDateByIncrement[(gggg,eeee), n]` on its own line shifts every matching DA/DT in place."""
    path = call.args[0].path  # type: ignore[union-attr]
    rest = _flat(run, call.args[1:])
    for container, tag in path.find(run.ds):
        elem = container[tag]
        if elem.VR not in ("DA", "DT") or elem.is_empty:
            continue
        shift = fn.shift_date if call.name == "shiftDateByIncrement" else fn.shift_datetime
        try:
            new = shift(_element_text(elem), *rest)
        except ValueError as exc:
            raise script_error(f"{call.name}[]: {exc}", call.line, call.col, run.source) from None
        if new != _element_text(elem):
            elem.value = new
            run.counts.changes += 1


def _assign(run: Run, st: Assign) -> None:
    text = _text(run, st.value)
    found = st.path.find(run.ds)
    for container, tag in found:
        _set(container, tag, text, run, st.line)
    if found or st.if_exists or text == "":
        return  # nothing to assign to, or nothing worth creating an attribute for
    last = st.path.last
    if not last.concrete:
        return  # a wildcard that matches nothing creates nothing
    for container in st.path.containers(run.ds):
        if last.creator is not None:
            block = container.private_block(int(last.group, 16), last.creator, create=True)
            block.add_new(int(last.element, 16), "LO", text)
        else:
            tag = BaseTag(int(last.group + last.element, 16))
            try:
                vr = dictionary_VR(tag).split(" or ")[0]
            except KeyError:
                vr = "LO"
            if vr == "SQ":
                raise script_error(f"cannot assign text to the sequence {tag}", st.line, 1, run.source)
            container.add(DataElement(tag, vr, None))
            _set(container, tag, text, run, st.line)
        run.counts.changes += 1


def _set(ds: Dataset, tag: BaseTag, text: str, run: Run, line: int) -> None:
    elem = ds[tag]
    vr = elem.VR
    if vr == "SQ":
        raise script_error(f"cannot assign text to the sequence {tag}", line, 1, run.source)
    before = _element_text(elem)
    if before == text:
        return
    try:
        if text == "":
            elem.value = None
        elif vr in _INT_VRS:
            numbers = [_in_range(vr, int(v)) for v in text.split("\\")]
            elem.value = numbers if len(numbers) > 1 else numbers[0]
        elif vr in _FLOAT_VRS:
            elem.value = [float(v) for v in text.split("\\")] if "\\" in text else float(text)
        elif vr in _BYTES_VRS:
            raw = text.encode("latin-1", "replace")
            elem.value = raw + (b"\x00" if len(raw) % 2 else b"")
        else:
            elem.value = text.split("\\") if "\\" in text else text
    except ValueError as exc:
        # the value itself stays out of the message: it may be identifying, and messages reach logs
        raise script_error(f"the value assigned to {tag} is not valid for its VR {vr}", line, 1, run.source) from None
    run.counts.changes += 1


# ------------------------------------------------------------------------------------------ values


def _in_range(vr: str, number: int) -> int:
    low, high = _INT_RANGES[vr]
    if not low <= number <= high:
        raise ValueError(f"out of range for {vr}")
    return number


def _element_text(elem: DataElement) -> str:
    if elem.VR == "SQ" or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip("\x00 ")
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(str(v) for v in value)
    return str(value)


def _tag_text(run: Run, path: TagPath) -> str:
    found = path.find(run.ds)
    if not found:
        return ""
    container, tag = found[0]
    return _element_text(container[tag])


def _text(run: Run, value: Value) -> str:
    if isinstance(value, Str):
        return value.value
    if isinstance(value, Num):
        return value.text
    if isinstance(value, Var):
        held = run.variables.get(value.name, "")
        if isinstance(held, tuple):
            return "\\".join(x if isinstance(x, str) else _tag_text(run, x) for x in held)
        return held
    if isinstance(value, TagRef):
        return _tag_text(run, value.path)
    if isinstance(value, Call):
        return _call(run, value)
    if isinstance(value, ListValue):
        return "\\".join(_text(run, v) for v in value.items)
    raise ScriptError(f"cannot evaluate {value!r}")  # pragma: no cover


def _list_items(run: Run, value: ListValue) -> tuple[str | TagPath, ...]:
    items: list[str | TagPath] = []
    for item in value.items:
        if isinstance(item, ListValue):
            items.extend(_list_items(run, item))
        elif isinstance(item, TagRef):
            items.append(item.path)
        else:
            items.append(_text(run, item))
    return tuple(items)


def _flat(run: Run, args: tuple[Value, ...]) -> list[str]:
    out: list[str] = []
    for arg in args:
        if isinstance(arg, ListValue):
            out.extend(_flat(run, arg.items))
        else:
            out.append(_text(run, arg))
    return out


def _holds(run: Run, cond: Condition) -> bool:
    if isinstance(cond, CallCondition):
        result = _call(run, cond.call)
        return bool(result) and result.lower() != "false"
    assert isinstance(cond, Compare)
    left, right = _text(run, cond.left), _text(run, cond.right)
    if cond.op == "=":
        return left == right
    if cond.op == "!=":
        return left != right
    try:
        matched = re.fullmatch(right, left) is not None
    except re.error as exc:
        raise ScriptError(f"{run.source}: bad regular expression {right!r}: {exc}") from None
    return matched if cond.op == "~" else not matched


# ------------------------------------------------------------------------------------------ functions


def _call(run: Run, call: Call) -> str:
    try:
        return _dispatch(run, call)
    except (ScriptError, Rejected):
        raise
    except (ValueError, IndexError, re.error) as exc:
        raise script_error(f"{call.name}[]: {exc}", call.line, call.col, run.source) from None


def _dispatch(run: Run, call: Call) -> str:
    name, args = call.name, call.args
    if name == "reject":
        reason = _text(run, args[0]) if args else "rejected by the anonymization script"
        raise Rejected(reason or "rejected by the anonymization script")
    if name == "retainPrivateTags":
        keep: set[tuple[int, BaseTag]] = set()
        for path in _private_paths(run, call, args):
            for container, tag in path.find(run.ds):
                keep.add((id(container), tag))
                keep.add((id(container), BaseTag((tag.group << 16) | (tag.element >> 8))))
        run.counts.removed += _remove_private_except(run.ds, keep)
        return ""
    if name in ("shiftDateByIncrement", "shiftDateTimeByIncrement"):
        _check_date_arg(run, call)
    values = _flat(run, args)
    if name == "hashUID":
        return run.uids.hash_uid(values[0])
    if name == "newUID":
        return run.uids.new_uid(values[0] if values else "")
    if name == "mapUID":
        value, prefix = _map_uid_args(args, values)
        return run.uids.map_uid(value, prefix)
    if name == "substring":
        return fn.substring(*values)
    if name == "format":
        return fn.java_format(values[0], values[1:])
    if name == "lowercase":
        return values[0].lower()
    if name == "uppercase":
        return values[0].upper()
    if name == "replace":
        return values[0].replace(values[1], values[2])
    if name == "concatenate":
        return "".join(values)
    if name == "match":
        return fn.match(*values)
    if name == "lookup":
        return run.lookup_table.get(f"{values[0]}/{values[1]}", "")
    if name == "shiftDateByIncrement":
        return fn.shift_date(values[0], values[1])
    if name == "shiftDateTimeByIncrement":
        return fn.shift_datetime(*values)
    raise script_error(f"function {name}[] is not implemented", call.line, call.col, run.source)  # pragma: no cover


def _map_uid_args(args: tuple[Value, ...], values: list[str]) -> tuple[str, str]:
    """mapUID[value, prefix] as DicomEdit implements it; [prefix, value] is accepted when the value
    is clearly the second argument (a tag or variable) and the first a literal prefix."""
    if len(values) == 1:
        return values[0], ""
    if isinstance(args[0], (Str, Num)) and isinstance(args[1], (TagRef, Var, Call)):
        return values[1], values[0]
    return values[0], values[1]


def _check_date_arg(run: Run, call: Call) -> None:
    arg = call.args[0]
    if not isinstance(arg, TagRef):
        return
    found = arg.path.find(run.ds)
    if len(found) > 1:
        raise script_error(f"{call.name}[] needs a single attribute, {arg.path} matches {len(found)}",
                           call.line, call.col, run.source)
    if found:
        container, tag = found[0]
        if container[tag].VR not in ("DA", "DT"):
            raise script_error(f"{call.name}[] needs a DA or DT attribute, {arg.path} is {container[tag].VR}",
                               call.line, call.col, run.source)


def _private_paths(run: Run, call: Call, args: tuple[Value, ...]) -> list[TagPath]:
    paths: list[TagPath] = []
    for arg in args:
        if isinstance(arg, ListValue):
            paths += _private_paths(run, call, arg.items)
        elif isinstance(arg, TagRef):
            paths.append(arg.path)
        else:  # a variable holding a list of tag paths (or one, as text)
            held = run.variables.get(arg.name, "") if isinstance(arg, Var) else _text(run, arg)
            for text in held if isinstance(held, tuple) else str(held).split("\\"):
                if isinstance(text, TagPath):
                    paths.append(text)
                    continue
                if not text.strip():
                    continue
                try:
                    path = parse_tagpath(text)
                except ScriptError as exc:
                    raise script_error(f"retainPrivateTags[]: {text!r} is not a tag path ({exc})",
                                       call.line, call.col, run.source) from None
                paths.append(path)
    return paths


def _remove_private_except(ds: Dataset, keep: set[tuple[int, BaseTag]]) -> int:
    removed = 0
    for tag in list(ds.keys()):
        if tag.is_private and (id(ds), tag) not in keep:
            del ds[tag]
            removed += 1
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value or ():
                removed += _remove_private_except(item, keep)
    return removed


def _remove_private(ds: Dataset, keep: tuple[PrivateTagSpec, ...]) -> int:
    """Remove private elements at every depth except `keep` (and their creators); returns how many."""
    kept: set[BaseTag] = set()
    for spec in keep:
        for tag in spec.tags_in(ds):
            if tag in ds:
                kept.add(tag)
                kept.add(BaseTag((tag.group << 16) | (tag.element >> 8)))
    removed = 0
    for tag in list(ds.keys()):
        if tag.is_private and tag not in kept:
            del ds[tag]
            removed += 1
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value or ():
                removed += _remove_private(item, keep)
    return removed

"""DicomEdit 6 scripts: tokens, syntax tree and a recursive-descent parser.

Every error is a ScriptError whose message names the line and column; nothing runs until the whole
script has parsed and been checked (known functions, known variables, a `version "6.x"` line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Union

from dicomd.anonymize.script.tagpath import ElementSeg, Segment, TagPath, WildSeg
from dicomd.errors import ScriptError

# ---------------------------------------------------------------------------------------------- tokens

_TAG = re.compile(
    r"\(\s*([0-9A-Fa-fXx#@]{4})\s*,\s*(?:([0-9A-Fa-fXx#@]{4})|\{([A-Za-z][A-Za-z0-9 _.:\-]*)\}\s*([0-9A-Fa-fXx#@]{2}))\s*\)"
)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PUNCT = (":=", "?=", "!=", "!~", "=", "~", "?", ":", "-", "[", "]", "{", "}", ",", "/", "(", ")", "*", "+", ".", "%")
_ESCAPES = MappingProxyType({"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "\\": "\\", '"': '"', "(": "(", ")": ")"})
KEYWORDS = frozenset({"version", "if", "elseif", "else", "describe", "hidden", "const", "immutable", "export", "echo",
            "removeAllPrivateTags"})


@dataclass(frozen=True)
class Token:
    kind: str  # TAG STRING NUMBER ID NEWLINE EOF, or the punctuation itself
    text: str
    line: int
    col: int
    value: object = None


def script_error(message: str, line: int, col: int, source: str = "") -> ScriptError:
    where = f"{source}: " if source else ""
    err = ScriptError(f"{where}line {line}, column {col}: {message}")
    err.line = line  # type: ignore[attr-defined]
    err.column = col  # type: ignore[attr-defined]
    return err


def tokenize(text: str, source: str = "") -> list[Token]:
    tokens: list[Token] = []
    line, line_start, i = 1, 0, 0
    n = len(text)
    while i < n:
        c = text[i]
        col = i - line_start + 1
        if c in " \t\r\ufeff":
            i += 1
            continue
        if c == "\\" and text[i + 1 : i + 2] == "\n" or text[i : i + 3] == "\\\r\n":
            i = text.index("\n", i) + 1  # a backslash at the end of a line continues the statement
            line, line_start = line + 1, i
            continue
        if c == "\n":
            tokens.append(Token("NEWLINE", "\n", line, col))
            line, line_start, i = line + 1, i + 1, i + 1
            continue
        if text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c == '"':
            start = i
            value, i = _read_string(text, i, line, col, source)
            tokens.append(Token("STRING", text[start:i], line, col, value))
            breaks = text.count("\n", start, i)
            if breaks:
                line, line_start = line + breaks, text.rindex("\n", start, i) + 1
            continue
        if c == "(":
            m = _TAG.match(text, i)
            if m:
                tokens.append(Token("TAG", m.group(0), line, col, m.groups()))
                i = m.end()
                continue
        if c == "-" or c.isdigit():
            prev = tokens[-1].kind if tokens else "NEWLINE"
            m = _NUMBER.match(text, i)
            if m and (c != "-" or prev in ("[", ",", ":=", "?=", "=", "!=", "{")):
                tokens.append(Token("NUMBER", m.group(0), line, col, m.group(0)))
                i = m.end()
                continue
        m = _ID.match(text, i)
        if m:
            tokens.append(Token("ID", m.group(0), line, col, m.group(0)))
            i = m.end()
            continue
        for p in _PUNCT:
            if text.startswith(p, i):
                tokens.append(Token(p, p, line, col))
                i += len(p)
                break
        else:
            raise script_error(f"unexpected character {c!r}", line, col, source)
    tokens.append(Token("EOF", "", line, i - line_start + 1))
    return tokens


def _read_string(text: str, i: int, line: int, col: int, source: str) -> tuple[str, int]:
    out = []
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == '"':
            return "".join(out), j + 1
        if c == "\n":
            break
        if c == "\\" and j + 1 < len(text):
            nxt = text[j + 1]
            if nxt == "\n" or text[j + 1 : j + 3] == "\r\n":
                j = text.index("\n", j) + 1  # continued on the next line
                continue
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                j += 2
                continue
            if re.match(r"[0-7]{3}", text[j + 1 : j + 4]):
                out.append(chr(int(text[j + 1 : j + 4], 8)))
                j += 4
                continue
            out.append(c)  # a lone backslash stays (DICOM multi-value separator)
            j += 1
            continue
        out.append(c)
        j += 1
    raise script_error("unterminated string", line, col, source)


# ---------------------------------------------------------------------------------------------- tree


@dataclass(frozen=True)
class Str:
    value: str


@dataclass(frozen=True)
class Num:
    text: str


@dataclass(frozen=True)
class Var:
    name: str
    line: int
    col: int


@dataclass(frozen=True)
class TagRef:
    path: TagPath


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple["Value", ...]
    line: int
    col: int


@dataclass(frozen=True)
class ListValue:
    items: tuple["Value", ...]


Value = Union[Str, Num, Var, TagRef, Call, ListValue]


@dataclass(frozen=True)
class Compare:
    left: Value
    op: str  # = != ~ !~
    right: Value


@dataclass(frozen=True)
class CallCondition:
    call: Call


Condition = Union[Compare, CallCondition]


@dataclass(frozen=True)
class Assign:
    path: TagPath
    value: Value
    if_exists: bool
    line: int


@dataclass(frozen=True)
class SetVar:
    name: str
    value: Value
    line: int


@dataclass(frozen=True)
class Delete:
    path: TagPath
    line: int


@dataclass(frozen=True)
class CallStatement:
    call: Call
    line: int


@dataclass(frozen=True)
class Echo:
    value: Value | None
    line: int


@dataclass(frozen=True)
class RemoveAllPrivate:
    line: int


@dataclass(frozen=True)
class Describe:
    name: str
    label: str
    line: int


@dataclass(frozen=True)
class Version:
    text: str
    line: int


@dataclass(frozen=True)
class Ternary:
    condition: Condition
    then: "Statement"
    otherwise: "Statement | None"
    line: int


@dataclass(frozen=True)
class IfChain:
    branches: tuple[tuple[Condition, tuple["Statement", ...]], ...]
    otherwise: tuple["Statement", ...] | None
    line: int


Statement = Union[Assign, SetVar, Delete, CallStatement, Echo, RemoveAllPrivate, Describe, Version, Ternary, IfChain]


@dataclass(frozen=True)
class Script:
    statements: tuple[Statement, ...]
    version: str
    text: str = field(repr=False, default="")


# ---------------------------------------------------------------------------------------------- parser

FUNCTIONS = MappingProxyType({
    # name: (min args, max args or None)
    "hashUID": (1, 2), "newUID": (0, 1), "mapUID": (1, 2), "substring": (3, 3), "format": (1, None),
    "lowercase": (1, 1), "uppercase": (1, 1), "replace": (3, 3), "concatenate": (1, None),
    "match": (3, 3), "lookup": (2, 2), "retainPrivateTags": (1, None), "reject": (0, 1),
    "shiftDateByIncrement": (2, 2), "shiftDateTimeByIncrement": (2, 3),
})
KNOWN_UNSUPPORTED = MappingProxyType({
    "alterPixels": "pixel editing is not supported (pixel data is never changed)",
    "getURL": "fetching URLs from a script is not supported",
    "mapReferencedUIDs": "not supported: every UID is already remapped consistently by the profile",
    "shiftDateTimeSequenceByIncrement": "not supported; use shiftDateTimeByIncrement on each attribute",
    "shiftDateTimeListByIncrement": "not supported; use shiftDateTimeByIncrement on each attribute",
    "ismatch": "not supported; use a ~ condition",
    "isPresent": "not supported; use ?= or a condition on the attribute",
    "set": "not supported; use :=",
    "delete": "not supported; use - (gggg,eeee)",
    "hashUIDList": "not supported; hashUID each attribute",
})
BUILTIN_VARIABLES = ("project", "subject", "session")
_COMPARE = ("=", "!=", "~", "!~")
_END = ("NEWLINE", "EOF", "}")


class Parser:
    def __init__(self, text: str, source: str = "") -> None:
        self.source = source
        self.text = text
        self.tokens = tokenize(text, source)
        self.pos = 0
        self.defined: set[str] = set(BUILTIN_VARIABLES)
        self.used: list[Var] = []

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.pos + offset, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.tok
        self.pos += 1
        return tok

    def error(self, message: str, tok: Token | None = None) -> ScriptError:
        tok = tok or self.tok
        return script_error(message, tok.line, tok.col, self.source)

    def expect(self, kind: str, what: str) -> Token:
        if self.tok.kind != kind:
            raise self.error(f"expected {what}, found {_describe(self.tok)}")
        return self.advance()

    def skip_newlines(self) -> None:
        while self.tok.kind == "NEWLINE":
            self.advance()

    # -- script ----------------------------------------------------------------------------------

    def parse(self) -> Script:
        statements = self.statements(top=True)
        versions = [s for s in statements if isinstance(s, Version)]
        if not versions:
            raise script_error('missing `version "6.x"` line (DicomEdit 4 scripts are not supported)', 1, 1,
                               self.source)
        for var in self.used:
            if var.name not in self.defined:
                raise script_error(f"unknown variable {var.name!r}", var.line, var.col, self.source)
        return Script(tuple(statements), versions[0].text, self.text)

    def statements(self, top: bool) -> list[Statement]:
        out: list[Statement] = []
        while True:
            self.skip_newlines()
            if self.tok.kind == "EOF":
                if not top:
                    raise self.error("missing } before the end of the script")
                return out
            if self.tok.kind == "}" and not top:
                return out
            out.append(self.statement())
            if self.tok.kind not in _END:
                raise self.error(f"expected the end of the statement, found {_describe(self.tok)}")

    def statement(self) -> Statement:
        tok = self.tok
        if tok.kind == "ID" and tok.text in KEYWORDS:
            return self.keyword_statement(tok)
        return self.action(allow_ternary=True)

    def keyword_statement(self, tok: Token) -> Statement:
        word = tok.text
        if word == "version":
            self.advance()
            text = self.expect("STRING", 'a version string such as "6.1"').value
            if not re.fullmatch(r"6(\.\d+)*", str(text)):
                raise self.error(f"unsupported DicomEdit version {text!r} (only 6.x)", tok)
            return Version(str(text), tok.line)
        if word == "removeAllPrivateTags":
            self.advance()
            return RemoveAllPrivate(tok.line)
        if word == "describe":
            self.advance()
            name = self.expect("ID", "a variable name").text
            self.defined.add(name)
            nxt = self.advance()
            if nxt.kind == "STRING":
                return Describe(name, str(nxt.value), tok.line)
            if nxt.kind == "ID" and nxt.text in ("hidden", "const", "immutable"):
                return Describe(name, nxt.text, tok.line)
            raise self.error("expected a description string or hidden/const/immutable", nxt)
        if word == "echo":
            self.advance()
            value = None if self.tok.kind in _END else self.value()
            return Echo(value, tok.line)
        if word == "if":
            return self.if_chain()
        if word == "export":
            raise self.error("`export` is not supported (dicomd has no session fields to export to)")
        raise self.error(f"unexpected {tok.text!r}")

    def if_chain(self) -> IfChain:
        start = self.advance()
        branches = []
        otherwise = None
        self.expect("(", "( after if")
        cond = self.condition()
        self.expect(")", ") after the condition")
        branches.append((cond, self.block()))
        while True:
            save = self.pos
            self.skip_newlines()
            if self.tok.kind == "ID" and self.tok.text == "elseif":
                self.advance()
                self.expect("(", "( after elseif")
                cond = self.condition()
                self.expect(")", ") after the condition")
                branches.append((cond, self.block()))
            elif self.tok.kind == "ID" and self.tok.text == "else":
                self.advance()
                otherwise = self.block()
                break
            else:
                self.pos = save
                break
        return IfChain(tuple(branches), otherwise, start.line)

    def block(self) -> tuple[Statement, ...]:
        self.skip_newlines()
        self.expect("{", "{")
        body = self.statements(top=False)
        self.expect("}", "}")
        return tuple(body)

    def action(self, allow_ternary: bool) -> Statement:
        tok = self.tok
        if tok.kind == "-":
            self.advance()
            return Delete(self.tagpath(item_end=True), tok.line)
        if tok.kind == "ID" and tok.text == "echo":
            self.advance()
            return Echo(None if self.tok.kind in _END + (":",) else self.value(), tok.line)
        if tok.kind == "ID" and tok.text == "removeAllPrivateTags":
            self.advance()
            return RemoveAllPrivate(tok.line)
        if tok.kind == "ID" and self.peek().kind == ":=":
            self.advance()
            self.advance()
            self.defined.add(tok.text)
            return SetVar(tok.text, self.value(), tok.line)
        left = self.value()
        op = self.tok
        if op.kind in (":=", "?="):
            if not isinstance(left, TagRef):
                raise self.error(f"only an attribute can be assigned with {op.kind}", tok)
            self.advance()
            return Assign(left.path, self.value(), op.kind == "?=", tok.line)
        if op.kind in _COMPARE or (op.kind == "?" and isinstance(left, Call)):
            if not allow_ternary:
                raise self.error("a condition cannot be nested inside another condition's action", op)
            if op.kind in _COMPARE:
                self.advance()
                cond: Condition = Compare(left, op.kind, self.value())
            else:
                assert isinstance(left, Call)
                cond = CallCondition(left)
            self.expect("?", "? after the condition")
            then = self.action(allow_ternary=False)
            otherwise = None
            if self.tok.kind == ":":
                self.advance()
                otherwise = self.action(allow_ternary=False)
            return Ternary(cond, then, otherwise, tok.line)
        if isinstance(left, Call):
            return CallStatement(left, tok.line)
        raise self.error(f"expected :=, ?=, a condition or a function call, found {_describe(op)}")

    def condition(self) -> Condition:
        left = self.value()
        if self.tok.kind in _COMPARE:
            op = self.advance().kind
            return Compare(left, op, self.value())
        if isinstance(left, Call):
            return CallCondition(left)
        raise self.error(f"expected =, !=, ~ or !~, found {_describe(self.tok)}")

    # -- values ----------------------------------------------------------------------------------

    def value(self) -> Value:
        tok = self.tok
        if tok.kind == "STRING":
            self.advance()
            return Str(str(tok.value))
        if tok.kind == "NUMBER":
            self.advance()
            return Num(tok.text)
        if tok.kind in ("TAG", "*", "+", "."):
            return TagRef(self.tagpath())
        if tok.kind == "{":
            return self.list_value()
        if tok.kind == "ID":
            if tok.text in KEYWORDS:
                raise self.error(f"{tok.text!r} cannot be used as a value")
            self.advance()
            if self.tok.kind == "[":
                return self.call(tok)
            var = Var(tok.text, tok.line, tok.col)
            self.used.append(var)
            return var
        raise self.error(f"expected a value, found {_describe(tok)}")

    def list_value(self) -> ListValue:
        self.advance()
        items: list[Value] = []
        self.skip_newlines()
        while self.tok.kind != "}":
            items.append(self.value())
            self.skip_newlines()
            if self.tok.kind == ",":
                self.advance()
                self.skip_newlines()
            elif self.tok.kind != "}":
                raise self.error(f"expected , or }} in a list, found {_describe(self.tok)}")
        self.advance()
        return ListValue(tuple(items))

    def call(self, name_tok: Token) -> Call:
        name = name_tok.text
        if name in KNOWN_UNSUPPORTED:
            raise self.error(f"function {name}[] {KNOWN_UNSUPPORTED[name]}", name_tok)
        if name not in FUNCTIONS:
            raise self.error(f"unknown function {name}[]", name_tok)
        self.expect("[", "[")
        args: list[Value] = []
        if self.tok.kind != "]":
            args.append(self.value())
            while self.tok.kind == ",":
                self.advance()
                args.append(self.value())
        self.expect("]", "] or , in the argument list")
        lo, hi = FUNCTIONS[name]
        if len(args) < lo or (hi is not None and len(args) > hi):
            want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
            raise self.error(f"{name}[] takes {want} argument(s), got {len(args)}", name_tok)
        if name == "retainPrivateTags":
            args = [self.private_paths(arg, name_tok) for arg in args]
        return Call(name, tuple(args), name_tok.line, name_tok.col)

    def private_paths(self, arg: Value, tok: Token) -> Value:
        """retainPrivateTags' arguments, checked now: private tag paths, as tags or strings, or lists."""
        if isinstance(arg, ListValue):
            return ListValue(tuple(self.private_paths(item, tok) for item in arg.items))
        if isinstance(arg, Var):
            return arg  # a list variable: its paths are checked when the script runs
        if isinstance(arg, Str):
            try:
                arg = TagRef(parse_tagpath(arg.value))
            except ScriptError as exc:
                raise self.error(f"retainPrivateTags[]: {arg.value!r} is not a tag path ({exc})", tok) from None
        if not isinstance(arg, TagRef) or arg.path.last.creator is None:
            raise self.error("retainPrivateTags[] takes private tags written (gggg,{CREATOR}ee)", tok)
        return arg

    def tagpath(self, item_end: bool = False) -> TagPath:
        segments: list[Segment] = []
        start = self.tok
        while True:
            tok = self.tok
            if tok.kind in ("*", "+", "."):
                self.advance()
                segments.append(WildSeg(tok.kind))
            elif tok.kind == "TAG":
                self.advance()
                segments.append(self.element_seg(tok))
            else:
                raise self.error(f"expected a tag such as (0010,0010), found {_describe(tok)}")
            if self.tok.kind != "/":
                break
            self.advance()
        if not isinstance(segments[-1], ElementSeg):
            raise self.error("a tag path must end with a tag", start)
        if segments[-1].item is not None and not (item_end and isinstance(segments[-1].item, int)):
            raise self.error("only a deletion can end a tag path with an item number", start)
        return TagPath(tuple(segments))

    def element_seg(self, tok: Token) -> ElementSeg:
        group, element, creator, low = tok.value  # type: ignore[misc]
        if creator is not None:
            if group[-1] not in "13579bBdDfF#xX":
                raise self.error(f"private group {group} must be odd", tok)
            seg = ElementSeg(group.lower(), low.lower(), creator.strip())
        else:
            seg = ElementSeg(group.lower(), element.lower())
        if self.tok.kind == "[":
            self.advance()
            if self.tok.kind == "NUMBER" and self.tok.text.isdigit():
                item: int | str = int(self.advance().text)
            elif self.tok.kind == "%":
                self.advance()
                item = "%"
            else:
                raise self.error("expected an item number or % inside [ ]")
            self.expect("]", "]")
            seg = ElementSeg(seg.group, seg.element, seg.creator, item)
        return seg


def _describe(tok: Token) -> str:
    if tok.kind == "EOF":
        return "the end of the script"
    if tok.kind == "NEWLINE":
        return "the end of the line"
    return repr(tok.text)


def parse_tagpath(text: str) -> TagPath:
    """One tag path on its own, e.g. "*/(0065,{AE 2}XX)"."""
    parser = Parser(text.strip())
    path = parser.tagpath()
    if parser.tok.kind != "EOF":
        raise parser.error(f"unexpected {_describe(parser.tok)} after the tag path")
    return path


def parse(text: str, source: str = "") -> Script:
    """Parse and check a whole script; raises ScriptError (with line and column) on any problem."""
    return Parser(text, source).parse()

"""A failure in plain words: the converter's or runtime's first meaningful message, on one line.

results.json keeps a failed row's whole message (`VariantResult.error`: the converter's MLIR
diagnostics, a worker's log tail); the views show what this module makes of it. It drops what
only locates the failure (`<unknown>:0:`, `loc(callsite(fused[...]))`, `@__inference_...`
function names, kernel source paths, exception class names) and rewrites the messages users
meet most often into words, e.g.

    ConverterError: <unknown>:0: error: loc(callsite(fused["Softmax:", ".../Softmax@__inference_
    serve_132759"] at ...)): 'tfl.softmax' op failed to verify that input and output must have
    same element type
    <unknown>:0: note: ...

becomes `tfl.softmax needs the same type in and out`, and `failure_reason(row)` says who failed
on what: `int16x8 cannot convert this QAT model: tfl.softmax needs the same type in and out`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from quantbench.core.results import VariantResult

MAX_CHARS = 160  # a summary longer than this is cut (it is one line of a table's notes)
UNREADABLE = "no readable message (the whole text is in results.json)"

# An MLIR diagnostic's severity after its location: `<unknown>:0: error: ...`, `x.mlir:3:3: ...`.
_MLIR_ERROR = re.compile(r"(?:^|:\s)error:\s", re.I)
_LOCATION = re.compile(r"(?:<unknown>|[\w./-]+\.mlir):\d+(?::\d+)?:\s*")
# At the start of a line or after another part's ": " (`...start from: error: ...`).
_SEVERITY = re.compile(r"(?:^|(?<=:\s))(?:error|note|warning|remark):\s*", re.I)
# The wrappers the converter's and runtime's messages arrive in; other exception names (KeyError,
# TypeError) say something and stay.
_EXCEPTION = re.compile(r"(?:^|(?<=:\s))(?:[A-Za-z_]\w*\.)*(?:ConverterError|RuntimeError|"
                        r"ValueError|Exception):\s*")  # fmt: skip
_INFERENCE = re.compile(r"@__inference_\w+")
# A kernel's source position in LiteRT's messages: `tensorflow/lite/kernels/elementwise.cc:88 `.
_SOURCE = re.compile(r"(?:^|\s)(?:ERROR:\s*)?(?:[\w.-]+/)+[\w.-]+\.(?:cc|cpp|c|h):\d+:?\s*")

# Where an error starts inside a longer text (an event's "int8 failed to convert: <error>").
_ERROR_START = re.compile(
    r"(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception):\s|<unknown>:\d+:|[\w./-]+\.mlir:\d+:|"
    r"\bloc\(|\bLiteRT failed\b|\bconverter process failed\b|\blatency worker for\b|"
    r"\b\w+ worker failed on\b|\bQuantization (?:to \S+ )?not yet supported\b"
)


def _crash(how: str) -> str:
    """`killed by SIGSEGV` -> `crashed (SIGSEGV)`; a timeout or an exit code in words."""
    how = how.strip()
    signal = re.fullmatch(r"killed by (SIG\w+|signal \d+)", how)
    if signal:
        name = signal.group(1)
        verbs = {"SIGKILL": "was killed", "SIGTERM": "was stopped", "SIGABRT": "aborted"}
        verb = verbs.get(name, "crashed")
        return f"{verb} ({name})"
    hung = re.fullmatch(r"no answer in (.+)", how)
    if hung:
        return f"hung (no answer in {hung.group(1)})"
    code = re.fullmatch(r"exit code (-?\d+)", how)
    if code:
        return f"exited with code {code.group(1)}"
    return f"failed ({how})"


def _file(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _verify(m: re.Match) -> str:
    op, what = m.group("op"), m.group("what").strip().rstrip(".")
    for pattern, words in _VERIFY:
        # A sentence cut short (rows written when messages were cut at 400 characters) is known
        # by its start.
        if re.fullmatch(pattern, what, re.I) or (len(what) >= 20 and pattern.startswith(what)):
            return f"{op} {words}"
    return f"{op} rejects its types: {what}"


# `'tfl.X' op failed to verify that <what>`: the verifier's sentence in words.
_VERIFY = [
    (r"input and output must have same element type", "needs the same type in and out"),
    (r"all of \{.*\} have same element type", "needs the same type on all its operands"),
    (r"operands? (?:and result )?(?:must )?have same (?:element )?type", "needs the same type on "
     "all its operands"),
    (r"input and output must have same shape", "needs the same shape in and out"),
]  # fmt: skip

# (pattern searched in the message's cleaned first line, its words). First match wins.
_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"'(?P<op>[\w.]+)' op failed to verify that (?P<what>.+)"), _verify),
    (re.compile(r"'(?P<op>[\w.]+)' op is neither a custom op nor a flex op"),
     lambda m: f"{m['op']} has no TF Lite builtin (it needs TF Select ops)"),
    (re.compile(r"failed to legalize operation '(?P<op>[\w.]+)'"),
     lambda m: f"{m['op']} has no TF Lite equivalent"),
    (re.compile(r"Quantization to (?P<bits>\w+?)(?:-bit)? not yet supported for op:?\s*"
                r"'?(?P<op>\w*)'?"),
     lambda m: f"{m['bits']} quantization does not support {m['op'] or 'an op of this model'} yet"),
    (re.compile(r"Quantization not yet supported for op:?\s*'?(?P<op>\w*)'?"),
     lambda m: f"the quantizer does not support {m['op'] or 'an op of this model'} yet"),
    (re.compile(r"LiteRT failed while (?P<doing>\w+) (?P<file>\S+) \((?P<how>[^)]*)\)"),
     lambda m: f"LiteRT {_crash(m['how'])} while {m['doing']} {_file(m['file'])}"),
    (re.compile(r"latency worker for (?P<file>\S+) failed \((?P<how>[^)]*)\)"),
     lambda m: f"LiteRT {_crash(m['how'])} while timing {_file(m['file'])}"),
    (re.compile(r"converter process failed \((?P<how>[^)]*)\)"),
     lambda m: f"the converter {_crash(m['how'])}"),
    (re.compile(r"(?P<who>\w+) worker failed on (?P<op>\w+) \((?P<how>[^)]*)\)"),
     lambda m: f"the {m['who']} worker {_crash(m['how'])} on {m['op']}"),
    (re.compile(r"Type (?P<type>\w+) is unsupported by op (?P<op>\w+)"),
     lambda m: f"{m['op']} has no {m['type']} kernel"),
    (re.compile(r"Didn't find op for builtin opcode '(?P<op>\w+)' version '(?P<v>\d+)'"),
     lambda m: f"this LiteRT has no {m['op']} kernel (version {m['v']})"),
    (re.compile(r"Encountered unresolved custom op: (?P<op>\w+)"),
     lambda m: f"custom op {m['op']} is not in LiteRT"),
    (re.compile(r"'(?P<op>[\w.]+)' op (?P<rest>.+)"), lambda m: f"{m['op']}: {m['rest']}"),
]  # fmt: skip

# Searched in the whole text when the first line says nothing a rule knows.
_TEXT_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"TF Select ops: (?P<ops>[^\n]+)"),
     lambda m: f"{_ops(m['ops'])} {'have' if ',' in m['ops'] else 'has'} no TF Lite builtin "
               "(needs TF Select ops)"),
    (re.compile(r"flex runtime[^:\n]*: (?P<ops>[\w, .]+)"),
     lambda m: f"{_ops(m['ops'])} {'have' if ',' in m['ops'] else 'has'} no TF Lite builtin "
               "(needs TF Select ops)"),
]  # fmt: skip


def _ops(text: str) -> str:
    names = list(dict.fromkeys(n.strip() for n in text.strip().rstrip(".").split(",") if n.strip()))
    return ", ".join(names)


_LOC = re.compile(r"(?<!\w)loc\(")


def _closing(text: str, opening: int) -> int | None:
    """The index of the bracket closing the one at `opening`; quoted names may hold any
    character. None when the text ends first."""
    depth, quoted, i = 0, False, opening
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _without_locations(text: str) -> str:
    """`text` without its `loc(...)` parts. A `loc(` cut short (rows written when messages were
    cut at 400 characters) drops the rest of the text."""
    out, i = [], 0
    while (match := _LOC.search(text, i)) is not None:
        out.append(text[i : match.start()])
        end = _closing(text, match.end() - 1)
        if end is None:
            return "".join(out)
        i = end + 1
    out.append(text[i:])
    return "".join(out)


def _clean(line: str) -> str:
    """One diagnostic line without what only locates it; the words before it (`no float32
    file to start from: `) kept."""
    line = _without_locations(line)
    line = _LOCATION.sub("", line)
    line = _EXCEPTION.sub("", line)
    line = _SEVERITY.sub("", line)
    line = _INFERENCE.sub("", line)
    line = _SOURCE.sub(" ", line)
    line = re.sub(r"\s*Node number \d+ \(\w+\) failed to (?:prepare|invoke)\.?", "", line)
    line = re.sub(r"(?:^|(?<=\s))\)+(?=:)", "", line)  # a location's extra closing brackets
    line = re.sub(r"(?::\s*){2,}", ": ", line)  # the colons of the parts taken out
    return re.sub(r"\s+", " ", line).strip().strip(":").strip()


def _cut(text: str, limit: int = MAX_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def plain_error(text: str | None, limit: int = MAX_CHARS) -> str:
    """The first meaningful message of a converter's or runtime's error, in plain words, on
    one line of at most `limit` characters. A message no rule knows keeps its own words,
    without MLIR locations, function names and exception class names."""
    text = (text or "").strip()
    if not text:
        return "no reason recorded"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # MLIR puts the reason in the first `error:` diagnostic; the notes after it only locate it.
    diagnostics = [ln for ln in lines if _MLIR_ERROR.search(ln)]
    raw = diagnostics[0] if diagnostics else lines[0]
    first = _clean(raw)
    for pattern, words in _RULES:
        match = pattern.search(first)
        if match:
            return _cut(first[: match.start()] + words(match), limit)
    for pattern, words in _RULES:  # a location that never closes hid the message: look inside
        match = pattern.search(raw)
        if match:
            return _cut(words(match), limit)
    for pattern, words in _TEXT_RULES:
        match = pattern.search(text)
        if match:
            return _cut(words(match), limit)
    if not first:
        # Only locations (or a location cut short): the first other line that says something.
        rest = [c for c in (_clean(ln) for ln in lines[1:])
                if c and not c.startswith("called from")]  # fmt: skip
        named = re.match(r"(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception):", text)
        first = rest[0] if rest else (f"{named.group(0).rstrip(':')} (no message)"
                                      if named and not text[named.end():].strip() else UNREADABLE)
    return _cut(first, limit)


def event_line(text: str) -> str:
    """A progress event on one line: an error inside it (`int8 failed to convert: <error>`)
    in plain words, the words before it kept. Ordinary one-line events are unchanged."""
    match = _ERROR_START.search(text)
    if match is None:
        if "\n" not in text.strip():
            return text
        return " ".join(text.split())
    head = text[: match.start()]
    return head + plain_error(text[match.start():], limit=MAX_CHARS)


def _model(row: VariantResult) -> str:
    """The Keras model a row was made from, as a phrase: `this model`, `this QAT model`."""
    transforms = [t.name for t in row.spec.transforms] if row.spec is not None else []
    source = row.source or "float"
    if "qat" in transforms or (not transforms and source.startswith("qat")):
        return "this QAT model"
    if transforms or source != "float":
        return f"the {source} model"
    return "this model"


def failure_reason(row: VariantResult, limit: int = MAX_CHARS) -> str:
    """Why a failed row failed, on one line: a conversion that made no file names its scheme
    and model, `int16x8 cannot convert this QAT model: <reason>`; a model that could not be
    made (a transform that failed) names the model; a file that was made says what failed on it."""
    reason = plain_error(row.error, limit=limit)
    if row.path is not None:
        return reason
    # The converter ran and refused. (A model that could not be made fails its rows unconverted;
    # the base model cannot fail so: without it the run stops.)
    if row.kind == "tflite" and (row.convert_seconds is not None or row.source == "float"):
        return _cut(f"{row.scheme or row.variant} cannot convert {_model(row)}: {reason}", limit)
    return _cut(f"the {row.source or 'float'} model failed: {reason}", limit)

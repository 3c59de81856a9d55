"""Instruction pairs from Python source: functions, methods and classes, and small documented
modules. A documented definition is described by its docstring and signature; an undocumented one
by what the code shows (signature, class, file, repository, the calls it makes, the exceptions it
raises and its neighbours). The output is the definition exactly as written, decorators
included."""

from __future__ import annotations

import ast
import warnings

from coder_assets.core.samples.extract_common import (
    PARSE_ERROR,
    Extraction,
    SourceLines,
    as_sentence,
    code_list,
    code_pair,
    first_paragraph,
    neighbours,
    pick,
    row_starts,
    word_count,
)
from coder_assets.core.samples.records import ExtractedPair

# A documented module this short is taken whole.
MODULE_MAX_LINES = 120
# Docstrings with fewer words than this say too little to build an instruction from.
MIN_DOC_WORDS = 3
# Longer decorator expressions are shortened to their name in the instruction.
MAX_DECORATOR_CHARS = 80
# An undocumented body of this many lines or fewer (accessors, one-line wrappers) is no task.
TRIVIAL_BODY_LINES = 2
# An undocumented definition longer than this is too much to ask for from a signature alone.
MAX_UNDOCUMENTED_LINES = 200
# At most this many calls / neighbours are named in an undocumented definition's instruction.
MAX_CALLS = 6

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
_DefNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef

_FUNCTION_TEMPLATES = (
    "Write a Python {what} `{sig}`{ctx}. {doc}",
    "Implement the Python {what} `{sig}`{ctx}: {doc}",
    "Write the Python {what} `{sig}`{ctx} according to this description: {doc}",
    "{doc} Implement this as the Python {what} `{sig}`{ctx}.",
)
_CLASS_TEMPLATES = (
    "Write a Python class `{name}`{ctx}. {doc}",
    "Implement the Python class `{name}`{ctx}: {doc}",
    "{doc} Write this as the Python class `{name}`{ctx}.",
)
_UNDOCUMENTED_FUNCTION_TEMPLATES = (
    "In `{path}`{repo}, implement the {what} `{sig}`{ctx}.",
    "Write the Python {what} `{sig}`{ctx} for `{path}`{repo}.",
    "Implement the {what} `{sig}`{ctx} in `{path}`{repo}.",
    "Add the {what} `{sig}`{ctx} to `{path}`{repo}.",
)
_UNDOCUMENTED_CLASS_TEMPLATES = (
    "In `{path}`{repo}, write the Python class `{name}`{ctx}.",
    "Write the class `{name}`{ctx} for `{path}`{repo}.",
    "Implement the Python class `{name}`{ctx} in `{path}`{repo}.",
)
_MODULE_TEMPLATES = (
    "Write the Python module `{path}`. {doc}",
    "Write a Python module `{path}` for the following purpose: {doc}",
    "{doc} Implement this as the Python module `{path}`.",
)


def extract(text: str, path: str, *, repo: str = "") -> Extraction:
    """Pairs for every function, method and class in `text` that is documented or has more than a
    trivial body (tests left out), plus one for the whole module when it is documented and short.
    `repo` (e.g. `homelab/kfp-training-pipelines`) is named in the instructions of undocumented
    definitions. A file that does not parse gives a parse_error."""
    try:
        with warnings.catch_warnings():
            # Invalid escape sequences and the like are the file's business, not a log line.
            warnings.simplefilter("ignore")
            tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return Extraction([], PARSE_ERROR)
    lines = SourceLines(text)
    # ast numbers lines split on \r\n, \r and \n; SourceLines maps them onto splitlines().
    rows = row_starts(text, r"\r\n|\r|\n")
    render = _Render(text, rows)
    module = _ModuleContext.read(tree, path, repo)
    pairs: list[ExtractedPair] = []
    skipped = 0
    for node, owner in _definitions(tree.body, None):
        try:
            pair = _definition_pair(node, owner, rows, lines, module, render)
        except Exception:  # one odd definition must not cost the whole file
            pair, skipped = None, skipped + 1
        if pair is not None:
            pairs.append(pair)
    try:
        whole = _module_pair(tree, text, lines, path)
    except Exception:
        whole, skipped = None, skipped + 1
    if whole is not None:
        pairs.append(whole)
    return Extraction(pairs, None, skipped)


class _ModuleContext:
    """What an undocumented definition's instruction may name about the module around it: its
    path, the repository, the names it imports and the functions and classes it defines."""

    def __init__(
        self, tree: ast.Module, path: str, repo: str, imports: set[str], definitions: list[str]
    ) -> None:
        self.tree = tree
        self.path = path
        self.repo = repo.rsplit("/", 1)[-1]
        self.imports = imports
        self.definitions = definitions

    @classmethod
    def read(cls, tree: ast.Module, path: str, repo: str) -> _ModuleContext:
        imports: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imports.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                imports.update(a.asname or a.name for a in node.names if a.name != "*")
        definitions = [
            stmt.name
            for stmt in tree.body
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]
        return cls(tree, path, repo, imports, definitions)

    @property
    def of_repo(self) -> str:
        return f" of `{self.repo}`" if self.repo else ""


def _definitions(
    body: list[ast.stmt], owner: ast.ClassDef | None
) -> list[tuple[_DefNode, ast.ClassDef | None]]:
    """Module-level functions and classes, and the methods and nested classes of classes, each
    with the class it belongs to. Functions nested in functions are left out: they lean on their
    enclosing scope."""
    found: list[tuple[_DefNode, ast.ClassDef | None]] = []
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append((node, owner))
        elif isinstance(node, ast.ClassDef):
            found.append((node, owner))
            found.extend(_definitions(node.body, node))
    return found


def _is_trivial(body: list[ast.stmt]) -> bool:
    """Whether a body, docstring aside, holds nothing but `pass` and `...`."""
    rest = body[1:] if body and _docstring_node(body[0]) else body
    return all(
        isinstance(stmt, ast.Pass)
        or (
            isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Constant)
            and stmt.value.value is Ellipsis
        )
        for stmt in rest
    )


def _docstring_node(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _block(
    node: _DefNode, text: str, rows: list[int], lines: SourceLines
) -> tuple[str, int, int] | None:
    """The definition's source (decorators included, whole lines) and its line range."""
    first_row = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    last_row = node.end_lineno
    if last_row is None or last_row > len(rows):
        return None
    start = rows[first_row - 1]
    end = rows[last_row] if last_row < len(rows) else len(text)
    raw = text[start:end].rstrip("\r\n")
    start_line, end_line = lines.span(start, start + len(raw))
    # ast also breaks lines on a lone \r; the output joins lines with \n like splitlines() does.
    return raw.replace("\r\n", "\n").replace("\r", "\n"), start_line, end_line


class _Render:
    """Expressions as the source writes them (quotes, spacing), falling back to `ast.unparse`;
    an expression spread over several lines is put on one. (`ast.get_source_segment` would split
    the whole file again for every expression.)"""

    def __init__(self, text: str, rows: list[int]) -> None:
        self.text = text
        self.rows = rows
        self._encoded: dict[int, bytes] = {}

    def _row(self, lineno: int) -> bytes:
        # ast column offsets count UTF-8 bytes within the line.
        cached = self._encoded.get(lineno)
        if cached is None:
            start = self.rows[lineno - 1]
            end = self.rows[lineno] if lineno < len(self.rows) else len(self.text)
            cached = self._encoded[lineno] = self.text[start:end].encode("utf-8")
        return cached

    def __call__(self, node: ast.AST) -> str:
        lineno = getattr(node, "lineno", None)
        end_lineno = getattr(node, "end_lineno", None)
        col = getattr(node, "col_offset", None)
        end_col = getattr(node, "end_col_offset", None)
        if lineno is None or end_lineno is None or col is None or end_col is None:
            return ast.unparse(node)
        try:
            if lineno == end_lineno:
                segment = self._row(lineno)[col:end_col].decode("utf-8")
            else:
                middle = [self._row(n) for n in range(lineno + 1, end_lineno)]
                pieces = [self._row(lineno)[col:], *middle, self._row(end_lineno)[:end_col]]
                segment = b"".join(pieces).decode("utf-8")
        except (IndexError, UnicodeError):
            return ast.unparse(node)
        return " ".join(segment.split()) if lineno != end_lineno else segment


def _decorator_text(decorator: ast.expr, render: _Render) -> str:
    full = render(decorator)
    if len(full) <= MAX_DECORATOR_CHARS:
        return f"@{full}"
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return f"@{render(target)}"


def _decorator_names(node: _DefNode) -> list[str]:
    names = []
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        names.append(ast.unparse(target))
    return names


def _param(arg: ast.arg, default: ast.expr | None, render: _Render, prefix: str = "") -> str:
    text = prefix + arg.arg
    if arg.annotation is not None:
        text += f": {render(arg.annotation)}"
        if default is not None:
            text += f" = {render(default)}"
    elif default is not None:
        text += f"={render(default)}"
    return text


def _parameters(args: ast.arguments, render: _Render, *, drop_first: bool) -> str:
    """The parameter list as PEP 8 writes it (`x: int = 1`, `y=2`), optionally without the
    leading `self` / `cls`."""
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults.extend(args.defaults)
    parts = [
        _param(arg, default, render) for arg, default in zip(positional, defaults, strict=True)
    ]
    if args.posonlyargs:
        parts.insert(len(args.posonlyargs), "/")
    if args.vararg is not None:
        parts.append(_param(args.vararg, None, render, "*"))
    elif args.kwonlyargs:
        parts.append("*")
    parts.extend(
        _param(arg, default, render)
        for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True)
    )
    if args.kwarg is not None:
        parts.append(_param(args.kwarg, None, render, "**"))
    if drop_first and positional:
        parts.pop(0)
        if parts and parts[0] == "/":
            parts.pop(0)
    return ", ".join(parts)


def _signature(node: _FunctionNode, render: _Render, *, drop_first: bool) -> str:
    signature = f"{node.name}({_parameters(node.args, render, drop_first=drop_first)})"
    if node.returns is not None:
        signature += f" -> {render(node.returns)}"
    return signature


def _definition_pair(
    node: _DefNode,
    owner: ast.ClassDef | None,
    rows: list[int],
    lines: SourceLines,
    module: _ModuleContext,
    render: _Render,
) -> ExtractedPair | None:
    if node.name.startswith("__") and node.name.endswith("__") and node.name != "__init__":
        return None
    docstring = ast.get_docstring(node)
    doc = first_paragraph(docstring) if docstring else ""
    if docstring and (_is_trivial(node.body) or word_count(doc) < MIN_DOC_WORDS):
        return None
    if not docstring and not _worth_asking(node, owner):
        return None
    block = _block(node, render.text, rows, lines)
    if block is None:
        return None
    output, start_line, end_line = block
    if not docstring and end_line - start_line + 1 > MAX_UNDOCUMENTED_LINES:
        return None
    key = (module.path, owner.name if owner else "", node.name)
    if isinstance(node, ast.ClassDef):
        instruction = _class_instruction(node, owner, doc, key, render, module)
        kind = "python_class"
    else:
        instruction = _function_instruction(node, owner, doc, key, render, module)
        kind = "python_function"
    return code_pair(
        lines,
        kind=kind if docstring else f"{kind}_undocumented",
        instruction=instruction,
        output=output,
        start_line=start_line,
        end_line=end_line,
    )


def _worth_asking(node: _DefNode, owner: ast.ClassDef | None) -> bool:
    """Whether an undocumented definition is more than a test, a stub or an accessor: tests
    (`test_*`, classes `Test*` and their methods) are not tasks to implement, and a body of
    TRIVIAL_BODY_LINES lines or fewer says nothing a signature does not."""
    if node.name.startswith("test_") or node.name.startswith("Test"):
        return False
    if owner is not None and owner.name.startswith("Test"):
        return False
    if _is_trivial(node.body) or node.end_lineno is None:
        return False
    if isinstance(node, ast.ClassDef) and not any(
        isinstance(stmt, ast.AnnAssign)
        or (
            isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)
            and not (stmt.name.startswith("__") and stmt.name != "__init__")
        )
        for stmt in node.body
    ):
        # Nothing to name but dunders or plain constants: the request would say nothing.
        return False
    return node.end_lineno - node.body[0].lineno + 1 > TRIVIAL_BODY_LINES


def _calls(node: _DefNode, owner: ast.ClassDef | None, module: _ModuleContext) -> list[str]:
    """The calls a body makes that an instruction can name without giving the body away: imported
    functions and modules (`json.dumps`), the module's own functions and classes, and the class's
    own methods (`self._flush`). Nested definitions are part of the body and are walked too."""
    own_methods = (
        {s.name for s in owner.body if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)}
        if owner is not None
        else set()
    )
    known = module.imports | set(module.definitions)
    found: list[tuple[int, int, str]] = []
    # The body only: decorators are named in the instruction already.
    for child in (c for stmt in node.body for c in ast.walk(stmt)):
        if not isinstance(child, ast.Call):
            continue
        func = child.func
        position = (child.lineno, child.col_offset)
        if isinstance(func, ast.Name) and func.id in known and func.id != node.name:
            found.append((*position, func.id))
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            base = func.value.id
            if base in module.imports or (base in {"self", "cls"} and func.attr in own_methods):
                found.append((*position, f"{base}.{func.attr}"))
    return list(dict.fromkeys(name for *_, name in sorted(found)))


def _raised(node: _DefNode) -> list[str]:
    """Exception classes the body raises by name (`raise ValueError(...)`)."""
    raised: list[str] = []
    for child in (c for stmt in node.body for c in ast.walk(stmt)):
        if isinstance(child, ast.Raise) and child.exc is not None:
            exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
            if isinstance(exc, ast.Name) and exc.id[:1].isupper():
                raised.append(exc.id)
    return list(dict.fromkeys(raised))


def _undocumented_facts(
    node: _DefNode, owner: ast.ClassDef | None, module: _ModuleContext
) -> list[str]:
    facts: list[str] = []
    raised = _raised(node)
    calls = [c for c in _calls(node, owner, module) if c not in raised]
    if calls:
        facts.append(f"It calls {code_list(calls, limit=MAX_CALLS)}.")
    if raised:
        facts.append(f"It raises {code_list(raised, limit=MAX_CALLS)}.")
    if isinstance(node, ast.ClassDef):
        return facts
    # The definitions right before and after it say where it goes; a list of every neighbour in a
    # long file would say nothing.
    body = owner.body if owner is not None else module.tree.body
    place = neighbours(
        [
            s.name
            for s in body
            if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ],
        node.name,
        skip={c.removeprefix("self.").removeprefix("cls.") for c in calls},
    )
    if place:
        where = f"`{owner.name}`" if owner is not None else "the module"
        facts.append(f"In {where} it goes {place}.")
    return facts


def _function_instruction(
    node: _FunctionNode,
    owner: ast.ClassDef | None,
    doc: str,
    key: tuple[str, ...],
    render: _Render,
    module: _ModuleContext,
) -> str:
    decorators = _decorator_names(node)
    is_async = isinstance(node, ast.AsyncFunctionDef)
    # Method kinds that the wording already names are not repeated as decorators.
    shown = [
        _decorator_text(decorator, render)
        for decorator, name in zip(node.decorator_list, decorators, strict=True)
        if not (owner and name in {"staticmethod", "classmethod", "property"})
    ]
    ctx = ""
    if owner is None:
        what = "async function" if is_async else "function"
        signature = _signature(node, render, drop_first=False)
    else:
        ctx = f" of the class `{owner.name}`"
        if "property" in decorators:
            what = "property"
            signature = node.name
            if node.returns is not None:
                ctx = f" (returning `{render(node.returns)}`){ctx}"
        else:
            if "staticmethod" in decorators:
                what, drop_first = "static method", False
            elif "classmethod" in decorators:
                what, drop_first = "classmethod", True
            else:
                what, drop_first = "method", True
            signature = _signature(node, render, drop_first=drop_first)
        if is_async:
            what = f"async {what}"
    if doc:
        template = pick(_FUNCTION_TEMPLATES, "python_function", *key)
        instruction = template.format(what=what, sig=signature, ctx=ctx, doc=as_sentence(doc))
    else:
        template = pick(_UNDOCUMENTED_FUNCTION_TEMPLATES, "python_function_undocumented", *key)
        instruction = template.format(
            what=what, sig=signature, ctx=ctx, path=module.path, repo=module.of_repo
        )
    if shown:
        instruction += f" Decorate it with {' '.join(f'`{d}`' for d in shown)}."
    if not doc:
        instruction = " ".join([instruction, *_undocumented_facts(node, owner, module)])
    return instruction


def _class_instruction(
    node: ast.ClassDef,
    owner: ast.ClassDef | None,
    doc: str,
    key: tuple[str, ...],
    render: _Render,
    module: _ModuleContext,
) -> str:
    details: list[str] = []
    bases = [render(base) for base in [*node.bases, *node.keywords]]
    if bases:
        details.append(f"deriving from {code_list(bases)}")
    if node.decorator_list:
        shown = " ".join(f"`{_decorator_text(d, render)}`" for d in node.decorator_list)
        details.append(f"decorated with {shown}")
    if owner is not None:
        details.append(f"nested in `{owner.name}`")
    ctx = f" ({', '.join(details)})" if details else ""
    if doc:
        template = pick(_CLASS_TEMPLATES, "python_class", *key)
        instruction = template.format(name=node.name, ctx=ctx, doc=as_sentence(doc))
    else:
        template = pick(_UNDOCUMENTED_CLASS_TEMPLATES, "python_class_undocumented", *key)
        instruction = template.format(
            name=node.name, ctx=ctx, path=module.path, repo=module.of_repo
        )
        fields = [
            stmt.target.id
            for stmt in node.body
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
        ]
        if fields:
            noun = "field" if len(fields) == 1 else "fields"
            instruction += f" It has the {noun} {code_list(fields, limit=10)}."
    methods = [
        stmt.name
        for stmt in node.body
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)
        and not (stmt.name.startswith("__") and stmt.name != "__init__")
    ]
    if methods:
        noun = "method" if len(methods) == 1 else "methods"
        instruction += f" It has the {noun} {code_list(methods)}."
    if not doc:
        instruction = " ".join([instruction, *_undocumented_facts(node, owner, module)])
    return instruction


def _module_names(tree: ast.Module) -> list[str]:
    """Public names the module defines at top level, in order."""
    names: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            candidates = [stmt.name]
        elif isinstance(stmt, ast.Assign):
            candidates = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            candidates = [stmt.target.id]
        else:
            continue
        for name in candidates:
            dunder = name.startswith("__") and name.endswith("__")
            if (dunder or not name.startswith("_")) and name not in names:
                names.append(name)
    return names


def _module_pair(
    tree: ast.Module, text: str, lines: SourceLines, path: str
) -> ExtractedPair | None:
    docstring = ast.get_docstring(tree)
    if not docstring or len(lines) > MODULE_MAX_LINES or len(tree.body) < 2:
        return None
    doc = first_paragraph(docstring)
    if word_count(doc) < MIN_DOC_WORDS:
        return None
    template = pick(_MODULE_TEMPLATES, "python_module", path)
    instruction = template.format(path=path, doc=as_sentence(doc))
    names = _module_names(tree)
    if names:
        instruction += f" It defines {code_list(names)}."
    output = "\n".join(lines.lines)
    return code_pair(
        lines,
        kind="python_module",
        instruction=instruction,
        output=output,
        start_line=1,
        end_line=len(lines),
    )

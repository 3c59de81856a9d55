"""Instruction pairs from Go source: exported functions, methods and types, and small `main.go`
files. Documented declarations are described by their doc comments; undocumented ones by what the
code shows (signature, receiver, package, repository, the calls the body makes and the declarations
beside it). main.go is described by what the file itself names (environment variables, NATS
subjects, flags, HTTP routes). Outputs are the declarations as written."""

from __future__ import annotations

import posixpath
import re

import tree_sitter

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
    word_count,
)
from coder_assets.core.samples.parsers import parse_go
from coder_assets.core.samples.records import ExtractedPair

# A main.go this short is taken whole.
MAIN_MAX_LINES = 200
# Doc comments with fewer words than this say too little to build an instruction from.
MIN_DOC_WORDS = 3
# An undocumented body (or struct / interface) with this many lines or fewer is not worth a pair:
# accessors, one-line wrappers.
TRIVIAL_BODY_LINES = 2
# At most this many calls / neighbours are named in an undocumented declaration's instruction.
MAX_CALLS = 6
MAX_NEIGHBOURS = 5
# An undocumented function longer than this is too much to ask for from a signature alone.
MAX_UNDOCUMENTED_LINES = 200

_FUNCTION_TEMPLATES = (
    "Write a Go {what} `{sig}`{ctx} in package `{pkg}`. {doc}",
    "Implement `{sig}`{ctx} in Go (package `{pkg}`). {doc}",
    "{doc} Write this as the Go {what} `{sig}`{ctx} in package `{pkg}`.",
    "In package `{pkg}`, write the Go {what} `{sig}`{ctx}. {doc}",
)
_TYPE_TEMPLATES = (
    "Write a Go {what} `{name}` in package `{pkg}`. {doc}",
    "Define the Go {what} `{name}` (package `{pkg}`). {doc}",
    "{doc} Declare this as the Go {what} `{name}` in package `{pkg}`.",
)
_UNDOCUMENTED_FUNCTION_TEMPLATES = (
    "In package `{pkg}`{repo}, implement `{sig}`{ctx}.",
    "Write the Go {what} `{sig}`{ctx} for package `{pkg}`{repo}.",
    "Implement the Go {what} `{sig}`{ctx} in `{path}`{repo}.",
    "Add the {what} `{sig}`{ctx} to package `{pkg}`{repo}.",
)
_UNDOCUMENTED_TYPE_TEMPLATES = (
    "In package `{pkg}`{repo}, define the {what} `{name}`.",
    "Declare the Go {what} `{name}` for package `{pkg}`{repo}.",
    "Define the {what} `{name}` in `{path}`{repo}.",
)
_MAIN_TEMPLATES = (
    "Write the main.go of a Go {program}. {purpose}",
    "Write `{path}` for a Go {program}. {purpose}",
    "Implement the entry point (`{path}`, package main) of a Go {program}. {purpose}",
)

# Go's convention for generated files; such code is not a model to learn from.
_GENERATED = re.compile(r"^// Code generated .* DO NOT EDIT\.$", re.MULTILINE)
_ENV_VAR = re.compile(r"^[A-Z][A-Z0-9_]*$")
_NATS_SUBJECT = re.compile(r"^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$*>-]+)+$")
_SUBSCRIBE_CALL = re.compile(r"Subscribe")
_PUBLISH_CALL = re.compile(r"^(Publish|PublishMsg|Request|RequestMsg)$")
_FLAG_CALL = re.compile(r"^(String|Int|Int64|Uint|Uint64|Bool|Duration|Float64)(Var)?$")
_ROUTE_CALL = re.compile(r"^(Handle|HandleFunc|Get|Post|Put|Patch|Delete|Head|Options|Group)$")
_ROUTE = re.compile(r"^(?:(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) )?/[\w./{}:*-]*$")
# Functions the go tool runs as tests; they are not tasks to implement.
_TEST_FUNCTION = re.compile(r"^(Test|Benchmark|Fuzz|Example)")
# A major-version suffix or a `go-` / `.go` decoration is not part of an import's package name.
_VERSION_ELEMENT = re.compile(r"^v\d+$")


class _Source:
    """The text, its UTF-8 bytes and the offset conversions between them and lines."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.data = text.encode("utf-8")
        self.lines = SourceLines(text)
        self._ascii = text.isascii()

    def node_text(self, node: tree_sitter.Node) -> str:
        return self.data[node.start_byte : node.end_byte].decode("utf-8")

    def output(self, node: tree_sitter.Node) -> str:
        """A node's source with line breaks as `\n`, the way splitlines() joins lines."""
        return self.node_text(node).replace("\r\n", "\n").replace("\r", "\n")

    def char_offset(self, byte_offset: int) -> int:
        if self._ascii:
            return byte_offset
        return len(self.data[:byte_offset].decode("utf-8", errors="replace"))

    def span(self, node: tree_sitter.Node) -> tuple[int, int]:
        """The 1-based line range (as splitlines counts) of `node`."""
        return self.lines.span(self.char_offset(node.start_byte), self.char_offset(node.end_byte))


def extract(text: str, path: str, *, repo: str = "") -> Extraction:
    """Pairs for every exported function, method and type in `text` (documented or not, when the
    body is more than an accessor), and one for a small `main.go` of package main. `repo` (e.g.
    `homelab/order-events-handler`) is named in the instructions of undocumented declarations. A
    file that does not parse gives a parse_error; a generated file (`// Code generated ... DO NOT
    EDIT.`) gives nothing."""
    try:
        source = _Source(text)
        tree = parse_go(text)
    except (ValueError, RecursionError, MemoryError):
        return Extraction([], PARSE_ERROR)
    root = tree.root_node
    if root.has_error:
        return Extraction([], PARSE_ERROR)
    package = _package_name(root, source)
    if _is_generated(root, source):
        return Extraction([])
    file = _FileContext.read(root, source, package=package, path=path, repo=repo)
    pairs: list[ExtractedPair] = []
    skipped = 0
    for node in root.named_children:
        if node.type not in {"function_declaration", "method_declaration", "type_declaration"}:
            continue
        try:
            pair = _declaration_pair(node, source, file)
        except Exception:  # one odd declaration must not cost the whole file
            pair, skipped = None, skipped + 1
        if pair is not None:
            pairs.append(pair)
    if posixpath.basename(path) == "main.go" and package == "main":
        try:
            main = _main_pair(root, source, path)
        except Exception:
            main, skipped = None, skipped + 1
        if main is not None:
            pairs.append(main)
    return Extraction(pairs, None, skipped)


class _FileContext:
    """What an undocumented declaration's instruction may name about the file around it: the
    package, the repository, the imported packages by the name code uses for them, and the
    functions and methods declared beside it."""

    def __init__(
        self,
        *,
        package: str,
        path: str,
        repo: str,
        imports: dict[str, str],
        functions: list[str],
        methods: dict[str, list[str]],
    ) -> None:
        self.package = package
        self.path = path
        self.repo = repo.rsplit("/", 1)[-1]
        self.imports = imports
        self.functions = functions
        self.methods = methods

    @classmethod
    def read(
        cls, root: tree_sitter.Node, source: _Source, *, package: str, path: str, repo: str
    ) -> _FileContext:
        imports: dict[str, str] = {}
        for node in _walk(root):
            if node.type != "import_spec":
                continue
            path_node = node.child_by_field_name("path")
            value = _string_value(path_node, source) if path_node is not None else None
            if not value:
                continue
            alias = node.child_by_field_name("name")
            name = source.node_text(alias) if alias is not None else _import_name(value)
            if name not in {"_", "."}:
                imports[name] = value
        functions: list[str] = []
        methods: dict[str, list[str]] = {}
        for node in root.named_children:
            name_node = node.child_by_field_name("name")
            if name_node is None:
                continue
            if node.type == "function_declaration":
                functions.append(source.node_text(name_node))
            elif node.type == "method_declaration":
                receiver = _receiver_type(node, source).lstrip("*")
                methods.setdefault(receiver, []).append(source.node_text(name_node))
        return cls(
            package=package,
            path=path,
            repo=repo,
            imports=imports,
            functions=functions,
            methods=methods,
        )

    @property
    def of_repo(self) -> str:
        return f" of `{self.repo}`" if self.repo else ""


def _import_name(import_path: str) -> str:
    """The name Go code uses for an import without an alias, by convention: the last path element
    without a major-version element, a `go-` prefix or a `.go` suffix (`nats.go` is `nats`)."""
    elements = import_path.split("/")
    name = elements[-1]
    if _VERSION_ELEMENT.match(name) and len(elements) > 1:
        name = elements[-2]
    name = name.removeprefix("go-").removesuffix(".go").removesuffix("-go")
    return name.replace("-", "_").replace(".", "_")


def _is_generated(root: tree_sitter.Node, source: _Source) -> bool:
    """Whether a `// Code generated ... DO NOT EDIT.` line comes before the package clause."""
    for node in root.children:
        if node.type == "package_clause":
            return False
        if node.type == "comment" and _GENERATED.search(source.node_text(node)):
            return True
    return False


def _package_name(root: tree_sitter.Node, source: _Source) -> str:
    for node in root.named_children:
        if node.type == "package_clause":
            for child in node.named_children:
                if child.type == "package_identifier":
                    return source.node_text(child)
    return ""


def _doc_comment(node: tree_sitter.Node, source: _Source) -> str:
    """The `//` comment lines directly above `node` (no blank line between), without the
    slashes. A comment that trails code on its own line is not documentation."""
    comments: list[str] = []
    expected_row = node.start_point.row - 1
    previous = node.prev_sibling
    while previous is not None and previous.type == "comment":
        if previous.end_point.row != expected_row:
            break
        before = previous.prev_sibling
        if before is not None and before.end_point.row == previous.start_point.row:
            break
        text = source.node_text(previous)
        if not text.startswith("//"):
            break
        comments.append(text[2:].removeprefix(" "))
        expected_row = previous.start_point.row - 1
        previous = before
    return "\n".join(reversed(comments))


def _go_doc(node: tree_sitter.Node, source: _Source) -> str:
    doc = first_paragraph(_doc_comment(node, source))
    return doc if word_count(doc) >= MIN_DOC_WORDS else ""


def _is_exported(name: str) -> bool:
    return bool(name) and name[0].isupper()


def _declaration_pair(
    node: tree_sitter.Node, source: _Source, file: _FileContext
) -> ExtractedPair | None:
    if node.type == "type_declaration":
        return _type_pair(node, source, file)
    name_node = node.child_by_field_name("name")
    body = node.child_by_field_name("body")
    if name_node is None or body is None or not body.named_children:
        return None
    name = source.node_text(name_node)
    if not _is_exported(name):
        return None
    doc = _go_doc(node, source)
    if not doc and (
        _is_test_function(name, file.path)
        or _is_trivial(body, source)
        or node.end_point.row - node.start_point.row >= MAX_UNDOCUMENTED_LINES
    ):
        return None
    # The signature runs from the name (type parameters included) to the body.
    head = source.data[name_node.start_byte : body.start_byte].decode("utf-8")
    signature = " ".join(head.split())
    ctx = ""
    what = "function"
    receiver = ""
    if node.type == "method_declaration":
        receiver = _receiver_type(node, source)
        if not receiver:
            return None
        what = "method"
        ctx = f" on the pointer receiver `{receiver}`" if receiver.startswith("*") else ""
        ctx = ctx or f" on the value receiver `{receiver}`"
    if doc:
        kind = "go_function"
        template = pick(_FUNCTION_TEMPLATES, "go_function", file.path, name, ctx)
        instruction = template.format(
            what=what, sig=signature, ctx=ctx, pkg=file.package, doc=as_sentence(doc)
        )
    else:
        kind = "go_function_undocumented"
        template = pick(_UNDOCUMENTED_FUNCTION_TEMPLATES, kind, file.path, name, ctx)
        instruction = template.format(
            what=what,
            sig=signature,
            ctx=ctx,
            pkg=file.package,
            repo=file.of_repo,
            path=file.path,
        )
        facts = _function_facts(node, body, source, file, name, receiver.lstrip("*"))
        instruction = " ".join([instruction, *facts])
    start_line, end_line = source.span(node)
    return code_pair(
        source.lines,
        kind=kind,
        instruction=instruction,
        output=source.output(node),
        start_line=start_line,
        end_line=end_line,
    )


def _is_test_function(name: str, path: str) -> bool:
    return path.endswith("_test.go") and bool(_TEST_FUNCTION.match(name))


def _is_trivial(block: tree_sitter.Node, source: _Source) -> bool:
    """Whether a `{ ... }` block holds at most TRIVIAL_BODY_LINES lines of code between its
    braces (comments and blank lines do not count)."""
    inner = source.node_text(block).strip()[1:-1]
    code = [
        line for line in inner.splitlines() if line.strip() and not line.strip().startswith("//")
    ]
    return len(code) <= TRIVIAL_BODY_LINES


def _parameter_names_of(parameters: tree_sitter.Node | None, source: _Source) -> list[str]:
    if parameters is None:
        return []
    return [
        source.node_text(n)
        for parameter in parameters.named_children
        for n in parameter.children_by_field_name("name")
    ]


def _parameter_names(node: tree_sitter.Node, source: _Source) -> set[str]:
    names: set[str] = set()
    for field in ("receiver", "parameters"):
        parameters = node.child_by_field_name(field)
        if parameters is None:
            continue
        for parameter in parameters.named_children:
            names.update(source.node_text(n) for n in parameter.children_by_field_name("name"))
    return names


def _calls(
    node: tree_sitter.Node, body: tree_sitter.Node, source: _Source, file: _FileContext, name: str
) -> list[str]:
    """The calls a body makes that an instruction can name without giving the body away: functions
    of imported packages (`proto.Marshal`), methods of the parameters and the receiver
    (`nc.Publish`), and the functions declared in the same file."""
    parameters = _parameter_names(node, source)
    receiver, own_methods = "", set()
    if node.type == "method_declaration":
        names = _parameter_names_of(node.child_by_field_name("receiver"), source)
        receiver = names[0] if names else ""
        own_methods = set(file.methods.get(_receiver_type(node, source).lstrip("*"), []))
    calls: list[str] = []
    for call in _walk(body):
        if call.type != "call_expression":
            continue
        function = call.child_by_field_name("function")
        if function is None:
            continue
        if function.type == "identifier":
            callee = source.node_text(function)
            if callee in file.functions and callee != name:
                calls.append(callee)
        elif function.type == "selector_expression":
            operand = function.child_by_field_name("operand")
            field = function.child_by_field_name("field")
            if operand is None or field is None or operand.type != "identifier":
                continue
            owner, method = source.node_text(operand), source.node_text(field)
            if owner == receiver:
                # Only the type's own methods: promoted ones (`am.Lock`) say little.
                if method in own_methods and method != name:
                    calls.append(f"{owner}.{method}")
            elif owner in file.imports or owner in parameters:
                calls.append(f"{owner}.{method}")
    return _unique(calls)


def _function_facts(
    node: tree_sitter.Node,
    body: tree_sitter.Node,
    source: _Source,
    file: _FileContext,
    name: str,
    receiver: str,
) -> list[str]:
    facts: list[str] = []
    calls = _calls(node, body, source, file, name)
    if calls:
        facts.append(f"It calls {code_list(calls, limit=MAX_CALLS)}.")
    # The declarations right before and after it say where it goes; a list of every neighbour in
    # a long file would say nothing.
    skip = {c.rsplit(".", 1)[-1] for c in calls}
    if receiver:
        place = neighbours(file.methods.get(receiver, []), name, skip=skip)
        if place:
            facts.append(f"Among the methods of `{receiver}` it goes {place}.")
    else:
        place = neighbours(file.functions, name, skip=skip)
        if place:
            facts.append(f"In the file it goes {place}.")
    return facts


def _receiver_type(node: tree_sitter.Node, source: _Source) -> str:
    """`*Handler` or `RetryPolicy` (type arguments dropped) from a method's receiver."""
    receiver = node.child_by_field_name("receiver")
    if receiver is None:
        return ""
    for parameter in receiver.named_children:
        type_node = parameter.child_by_field_name("type")
        if type_node is not None:
            text = " ".join(source.node_text(type_node).split())
            return re.sub(r"\[.*\]$", "", text)
    return ""


def _type_pair(node: tree_sitter.Node, source: _Source, file: _FileContext) -> ExtractedPair | None:
    # Grouped declarations (`type ( ... )`) are left out: one spec alone is not valid Go.
    if any(child.type == "(" for child in node.children):
        return None
    specs = [child for child in node.named_children if child.type in {"type_spec", "type_alias"}]
    if len(specs) != 1:
        return None
    spec = specs[0]
    name_node = spec.child_by_field_name("name")
    type_node = spec.child_by_field_name("type")
    if name_node is None or type_node is None:
        return None
    name = source.node_text(name_node)
    if not _is_exported(name):
        return None
    doc = _go_doc(node, source)
    members: list[str] = []
    if spec.type == "type_alias":
        what = "type alias"
    elif type_node.type == "struct_type":
        what = "struct type"
        members = [
            source.node_text(field_name)
            for field in _members(type_node, "field_declaration")
            for field_name in field.children_by_field_name("name")
        ]
    elif type_node.type == "interface_type":
        what = "interface type"
        members = [
            source.node_text(method_name)
            for method in _members(type_node, "method_elem")
            for method_name in method.children_by_field_name("name")
        ]
    else:
        what = "type"
    if doc:
        kind = "go_type"
        template = pick(_TYPE_TEMPLATES, "go_type", file.path, name)
        instruction = template.format(what=what, name=name, pkg=file.package, doc=as_sentence(doc))
    else:
        # Only structs and interfaces with more than a couple of members say enough to ask for.
        body = _members_block(type_node)
        if body is None or not members or _is_trivial(body, source):
            return None
        kind = "go_type_undocumented"
        template = pick(_UNDOCUMENTED_TYPE_TEMPLATES, kind, file.path, name)
        instruction = template.format(
            what=what, name=name, pkg=file.package, repo=file.of_repo, path=file.path
        )
    if members and what == "struct type":
        noun = "field" if len(members) == 1 else "fields"
        instruction += f" Its {noun}: {code_list(members, limit=10)}."
    elif members:
        noun = "method" if len(members) == 1 else "methods"
        instruction += f" Its {noun}: {code_list(members, limit=10)}."
    if not doc and file.methods.get(name):
        methods = file.methods[name]
        noun = "method" if len(methods) == 1 else "methods"
        instruction += f" The file gives it the {noun} {code_list(methods, limit=MAX_NEIGHBOURS)}."
    start_line, end_line = source.span(node)
    return code_pair(
        source.lines,
        kind=kind,
        instruction=instruction,
        output=source.output(node),
        start_line=start_line,
        end_line=end_line,
    )


def _members_block(type_node: tree_sitter.Node) -> tree_sitter.Node | None:
    """The `{ ... }` of a struct (its field list) or an interface (the type itself)."""
    if type_node.type == "interface_type":
        return type_node
    return next((c for c in type_node.named_children if c.type == "field_declaration_list"), None)


def _members(node: tree_sitter.Node, node_type: str) -> list[tree_sitter.Node]:
    """The direct members of type `node_type` of a struct or interface type (not nested ones)."""
    found: list[tree_sitter.Node] = []
    for child in node.named_children:
        if child.type == node_type:
            found.append(child)
        elif child.type == "field_declaration_list":
            found.extend(c for c in child.named_children if c.type == node_type)
    return found


# ----------------------------------------------------------------------------------------------
# main.go
# ----------------------------------------------------------------------------------------------


def _string_value(node: tree_sitter.Node, source: _Source) -> str | None:
    """The value of a Go string literal without escapes, else None."""
    text = source.node_text(node)
    if node.type == "raw_string_literal":
        return text[1:-1]
    if node.type == "interpreted_string_literal" and "\\" not in text:
        return text[1:-1]
    return None


def _walk(node: tree_sitter.Node) -> list[tree_sitter.Node]:
    found: list[tree_sitter.Node] = []
    stack = [node]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(reversed(current.named_children))
    return found


def _callee_name(call: tree_sitter.Node, source: _Source) -> str:
    function = call.child_by_field_name("function")
    if function is None:
        return ""
    if function.type == "selector_expression":
        field = function.child_by_field_name("field")
        return source.node_text(field) if field is not None else ""
    return source.node_text(function) if function.type == "identifier" else ""


def _first_string_argument(call: tree_sitter.Node, source: _Source) -> str | None:
    arguments = call.child_by_field_name("arguments")
    if arguments is None or not arguments.named_children:
        return None
    return _string_value(arguments.named_children[0], source)


def _named_strings(root: tree_sitter.Node, source: _Source, word: str) -> list[str]:
    """String constants and variables whose name contains `word` (case-insensitive)."""
    values: list[str] = []
    for node in _walk(root):
        if node.type not in {"const_spec", "var_spec"}:
            continue
        names = [source.node_text(n) for n in node.children_by_field_name("name")]
        value = node.child_by_field_name("value")
        if value is None or len(names) != 1 or word not in names[0].lower():
            continue
        literals = [_string_value(v, source) for v in value.named_children]
        values.extend(v for v in literals if v)
    return values


def _imports(root: tree_sitter.Node, source: _Source) -> list[str]:
    """Imported paths that are not the standard library (their first element has a dot)."""
    paths: list[str] = []
    for node in _walk(root):
        if node.type == "import_spec":
            path_node = node.child_by_field_name("path")
            value = _string_value(path_node, source) if path_node is not None else None
            if value and "." in value.split("/")[0] and value not in paths:
                paths.append(value)
    return paths


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _main_facts(root: tree_sitter.Node, source: _Source) -> list[str]:
    """Sentences about what main.go itself names: environment variables, flags, NATS subjects,
    HTTP routes, the modules it imports and the functions it declares. Nothing that is not
    literally in the file."""
    env_vars: list[str] = []
    flags: list[str] = []
    subjects: list[str] = []
    routes: list[str] = []
    subscribes = publishes = False
    for node in _walk(root):
        if node.type != "call_expression":
            continue
        callee = _callee_name(node, source)
        argument = _first_string_argument(node, source)
        if "env" in callee.lower() and argument and _ENV_VAR.match(argument):
            env_vars.append(argument)
        elif _FLAG_CALL.match(callee) and argument and _is_flag_call(node, source):
            flags.append(argument)
        elif _ROUTE_CALL.match(callee) and argument and _ROUTE.match(argument):
            routes.append(argument)
        if _SUBSCRIBE_CALL.search(callee):
            subscribes = True
            if argument and _NATS_SUBJECT.match(argument):
                subjects.append(argument)
        elif _PUBLISH_CALL.match(callee):
            publishes = True
            if argument and _NATS_SUBJECT.match(argument):
                subjects.append(argument)
    imports = _imports(root, source)
    uses_nats = any("nats" in path for path in imports)
    facts: list[str] = []
    if uses_nats:
        subjects.extend(
            s for s in _named_strings(root, source, "subject") if _NATS_SUBJECT.match(s)
        )
        subjects = _unique(subjects)
        queues = [q for q in _unique(_named_strings(root, source, "queue")) if q]
        verbs = [
            verb for verb, used in (("subscribes", subscribes), ("publishes", publishes)) if used
        ]
        sentence = f"It {' and '.join(verbs) or 'connects'} to NATS"
        if subjects:
            noun = "subject" if len(subjects) == 1 else "subjects"
            sentence += f" ({noun} {code_list(subjects)}"
            if queues and subscribes:
                sentence += f", queue group {code_list(queues)}"
            sentence += ")"
        facts.append(sentence + ".")
    env_vars = _unique(env_vars)
    if env_vars:
        noun = "variable" if len(env_vars) == 1 else "variables"
        facts.append(f"It reads the environment {noun} {code_list(env_vars)}.")
    flags = _unique(flags)
    if flags:
        noun = "flag" if len(flags) == 1 else "flags"
        facts.append(f"It accepts the command-line {noun} {code_list(flags)}.")
    routes = _unique(routes)
    if routes:
        noun = "route" if len(routes) == 1 else "routes"
        facts.append(f"It serves the HTTP {noun} {code_list(routes)}.")
    if imports:
        facts.append(f"It imports {code_list(imports, limit=5)}.")
    helpers = [
        source.node_text(name)
        for node in root.named_children
        if node.type == "function_declaration"
        and (name := node.child_by_field_name("name")) is not None
        and source.node_text(name) != "main"
    ]
    if helpers:
        noun = "function" if len(helpers) == 1 else "functions"
        facts.append(f"Besides `main` it declares the {noun} {code_list(helpers, limit=6)}.")
    return facts


def _is_flag_call(call: tree_sitter.Node, source: _Source) -> bool:
    function = call.child_by_field_name("function")
    if function is None or function.type != "selector_expression":
        return False
    operand = function.child_by_field_name("operand")
    return operand is not None and source.node_text(operand) in {"flag", "pflag"}


def _main_pair(root: tree_sitter.Node, source: _Source, path: str) -> ExtractedPair | None:
    if len(source.lines) > MAIN_MAX_LINES:
        return None
    package_clause = next((n for n in root.named_children if n.type == "package_clause"), None)
    doc = first_paragraph(_doc_comment(package_clause, source)) if package_clause else ""
    facts = _main_facts(root, source)
    if not doc and not facts:
        return None
    # Go convention: "Command foo does ..." names the program.
    program = "program"
    match = re.match(r"^Command ([\w.-]+)\b", doc)
    if match:
        program = f"command `{match.group(1)}`"
    elif facts and facts[0].startswith("It subscribes"):
        program = "service"
    elif any(fact.startswith("It serves the HTTP") for fact in facts):
        program = "HTTP service"
    purpose = " ".join([as_sentence(doc), *facts] if doc else facts)
    template = pick(_MAIN_TEMPLATES, "go_main", path)
    instruction = template.format(program=program, path=path, purpose=purpose)
    output = "\n".join(source.lines.lines)
    return code_pair(
        source.lines,
        kind="go_main",
        instruction=instruction,
        output=output,
        start_line=1,
        end_line=len(source.lines),
    )

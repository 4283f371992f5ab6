"""YAML text -> plain data plus the file position of every node, with `extends` and `--set` applied."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

from recipe_runner.errors import OVERRIDE_PREFIX, Path_, Position, Problem, RecipeError, dotted
from recipe_runner.path_problems import resolve_or_reason


@dataclass
class SourcedTree:
    """Plain dicts/lists/scalars and, for every path in them, where it was written."""

    data: dict[str, Any]
    positions: dict[Path_, Position] = field(default_factory=dict)

    def position_of(self, path: Path_) -> Position:
        """The closest known position: the node itself, else its nearest written ancestor."""
        for cut in range(len(path), -1, -1):
            found = self.positions.get(tuple(path[:cut]))
            if found is not None:
                return found
        return Position("<recipe>")

    def overrides_within(self, path: Path_) -> list[Position]:
        """The `--set`s that wrote values under `path`: a problem of several values placed in the file may be
        one that a command-line value made."""
        found = [where for known, where in self.positions.items() if known[: len(path)] == path and where.is_override]
        return list(dict.fromkeys(found))


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def _mark(lookup: Any, key: Any, file: str, parent: Position | None) -> Position:
    """Line and column ruamel recorded for a key or item; keys from a `<<:` merge and `!!omap` items have
    none, so they take the position of the mapping that holds them."""
    try:
        line, col = lookup(key)
    except (KeyError, TypeError, IndexError):
        return parent or Position(file)
    return Position(file, line + 1, col + 1)


MAX_VALUES = 100_000
"""Values a recipe file may expand to: far above any real recipe, far below what nested aliases reach
(each level of `[*a, *a, ...]` multiplies the count, so a few hundred bytes can mean billions)."""


MAX_TEXT = 10_000_000
"""Characters of text a recipe file may expand to; a recipe is a few kilobytes."""

MAX_FILE_BYTES = 5_000_000
"""A recipe file larger than this is refused unread (`extends: /dev/zero` must not fill memory)."""


@dataclass
class _Expansion:
    """Counts values while converting one file, so an alias bomb stops at MAX_VALUES instead of filling memory."""

    file: str
    refused: list[Problem] = field(default_factory=list)  # tags that are not plain data, all reported together
    left: int = MAX_VALUES
    text_left: int = MAX_TEXT
    seen: set[int] = field(default_factory=set)

    def count(self, node: Any, path: Path_, positions: dict[Path_, Position], alias: Path_ | None) -> Path_ | None:
        """Where the outermost alias being expanded is used (None outside aliases); raises past the limit."""
        if isinstance(node, (CommentedMap, CommentedSeq)):
            if id(node) in self.seen and alias is None:  # ruamel shares an anchor's node with each of its aliases
                alias = path
            self.seen.add(id(node))
        self.left -= 1
        if isinstance(node, str):  # one long anchored string, aliased many times, is a bomb of few values
            self.text_left -= len(node)
        if self.left < 0 or self.text_left < 0:
            site = alias or path
            # ruamel records a list item that is an alias at its anchor; the list holding it is where it is used.
            where = positions.get(site if not site or isinstance(site[-1], str) else site[:-1])
            what = (
                f"{MAX_VALUES} values (nested aliases?)"
                if self.left < 0
                else f"{MAX_TEXT // 1_000_000} million characters of text (a long text aliased many times?)"
            )
            raise RecipeError.single(where or Position(self.file), dotted(site), f"expands to more than {what}")
        return alias


_CORE = "tag:yaml.org,2002:"
_PLAIN_TAGS = {f"{_CORE}{kind}" for kind in ("str", "int", "float", "bool", "null", "map", "seq")}


def _refuse_tags(node: Any, expansion: _Expansion, path: Path_, positions: dict[Path_, Position]) -> Any:
    """A recipe is plain data: YAML's core tags (`!!str 5`) are read as written, any other tag is an error at its
    place rather than silently dropped, so `!!python/object/...` in a shared recipe is seen, never run."""
    tag = getattr(getattr(node, "tag", None), "value", None)
    if tag is None or tag in _PLAIN_TAGS:
        return str(node.value) if isinstance(node, TaggedScalar) else node
    shown = "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag
    _refuse(expansion, path, positions, shown)
    return None


def _refuse(expansion: _Expansion, path: Path_, positions: dict[Path_, Position], tag: str) -> None:
    expansion.refused.append(Problem(
        positions.get(path) or Position(expansion.file),
        dotted(path) if path else "<recipe>",
        f"YAML tag {tag} is not allowed: a recipe holds only mappings, lists, text, numbers, true/false and null",
    ))  # fmt: skip


def _to_plain(
    node: Any, expansion: _Expansion, path: Path_, positions: dict[Path_, Position], alias: Path_ | None = None
) -> Any:
    alias = expansion.count(node, path, positions, alias)
    file = expansion.file
    node = _refuse_tags(node, expansion, path, positions)
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            positions[path + (key,)] = _mark(node.lc.key, key, file, positions.get(path))
            out[key] = _to_plain(value, expansion, path + (key,), positions, alias)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            positions[path + (index,)] = _mark(node.lc.item, index, file, positions.get(path))
            items.append(_to_plain(value, expansion, path + (index,), positions, alias))
        return items
    if hasattr(node, "__float__") and type(node).__name__ == "ScalarFloat":
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if node is None or isinstance(node, (datetime.date, float)):  # a date is told to be quoted by the schema
        return node
    _refuse(expansion, path, positions, f"!!{'binary' if isinstance(node, bytes) else 'set'}")  # a core tag built it
    return None


_NESTING_SHOWN = 100


def _too_deep(text: str) -> tuple[int, int]:
    """Line and column where flow brackets ([, {) first nest deeper than _NESTING_SHOWN, outside quotes and
    comments: the YAML parser itself only runs out of stack, with no position."""
    depth, quote = 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        for column, char in enumerate(line, 1):
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == "#":
                break
            elif char in "[{":
                depth += 1
                if depth > _NESTING_SHOWN:
                    return number, column
            elif char in "]}":
                depth -= 1
    return 1, 1


ENVIRONMENT_VARIABLE = re.compile(r"\$(\w|\{)")
UNEXPANDED = (
    "environment variables are not expanded in a recipe (it would mean another place on every machine): write the "
    "path relative to the recipe file, or absolute"
)
UNEXPANDED_SET = (
    "environment variables are not expanded in a --set value: let the shell expand it (double quotes or none, "
    "not single quotes), or write the path relative to the current folder, or absolute"
)


def _duplicate_keys(name: str, text: str) -> list[Problem]:
    """Every key given twice in one mapping, at the second place, with the line of the first; never the values
    (ruamel prints both in full, hundreds of characters of Python reprs for a section)."""
    problems: list[Problem] = []
    seen: set[int] = set()
    pending = [_yaml().compose(text)]
    while pending:
        node = pending.pop()
        if node is None or id(node) in seen:  # an alias is the anchored node again
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                pending.append(value)
                if not isinstance(key, ScalarNode) or getattr(key.tag, "value", key.tag) == "tag:yaml.org,2002:merge":
                    continue
                mark = key.start_mark
                if key.value in first:
                    problems.append(Problem(
                        Position(name, mark.line + 1, mark.column + 1),
                        "<yaml>",
                        f"key {key.value!r} appears twice in the same mapping (first given on line "
                        f"{first[key.value]}): merge the two into one {key.value!r}",
                    ))  # fmt: skip
                else:
                    first[key.value] = mark.line + 1
        elif isinstance(node, SequenceNode):
            pending.extend(node.value)
    return problems


def _parse_file(file: Path) -> SourcedTree:
    name = str(file)
    try:
        if file.exists() and not file.is_dir() and not file.is_file():
            raise RecipeError.single(Position(name), "<recipe>", "not a regular file (a device or pipe): name a recipe")
        if file.is_file() and file.stat().st_size > MAX_FILE_BYTES:
            size = file.stat().st_size
            message = f"{size} bytes, more than the {MAX_FILE_BYTES} a recipe may have: is this a recipe file?"
            raise RecipeError.single(Position(name), "<recipe>", message)
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError.single(Position(name), "<recipe>", "file not found") from None
    except IsADirectoryError:
        raise RecipeError.single(Position(name), "<recipe>", "is a directory, not a recipe file") from None
    except UnicodeDecodeError as exc:
        raw = file.read_bytes()
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"not UTF-8 (byte 0x{raw[exc.start]:02x}): save the file as UTF-8"
        raise RecipeError.single(Position(name, line, col), "<recipe>", message) from None
    except OSError as exc:
        raise RecipeError.single(Position(name), "<recipe>", f"cannot read: {exc}") from None
    try:
        node = _yaml().load(text)
    except DuplicateKeyError as exc:
        mark = exc.problem_mark
        where = Position(name, mark.line + 1, mark.column + 1) if mark else Position(name)
        found = _duplicate_keys(name, text) or [Problem(where, "<yaml>", "a key appears twice in the same mapping")]
        raise RecipeError(found) from None
    except MarkedYAMLError as exc:
        raise RecipeError.single(*_syntax_error(name, exc, text)) from None
    except RecursionError:
        line, col = _too_deep(text)
        message = f"nested more than {_NESTING_SHOWN} levels deep here (brackets left open?): a recipe needs a few"
        raise RecipeError.single(Position(name, line, col), "<yaml>", message) from None
    except Exception as exc:  # ruamel raises several unrelated classes for duplicate keys etc.
        raise RecipeError.single(_bad_tagged_value(name, text), "<yaml>", f"YAML error: {exc}{_TAG_HINT}") from None
    if node is None:  # a copy cut short, or a new file not yet written: said once, not as five missing sections
        message = "the file is empty (or holds only comments): a recipe is a mapping of sections (recipe:, teacher:, "
        raise RecipeError.single(Position(name), "<recipe>", message + "student:, data:, stages:, ...)")
    if not isinstance(node, CommentedMap):
        raise RecipeError.single(Position(name, 1, 1), "<recipe>", "a recipe must be a mapping of sections")
    positions: dict[Path_, Position] = {(): Position(name, 1, 1)}
    expansion = _Expansion(name)
    data = _to_plain(node, expansion, (), positions)
    if expansion.refused:
        raise RecipeError(expansion.refused)
    return SourcedTree(data, positions)


# What a YAML parser says -> what to do about it, for the slips people make by hand.
_SYNTAX_HINTS = {
    "cannot start any token": "YAML indents with spaces, never tabs: replace the tab",
    "while scanning a quoted scalar": "the quote opened here is never closed: close it",
    "while parsing a flow sequence": "the [ opened here is never closed, or an item lacks its comma",
    "while parsing a flow mapping": "the { opened here is never closed, or an entry lacks its comma",
    "could not find expected ':'": "a key needs ': ' after it (a space after the colon)",
    "mapping values are not allowed here": "a ': ' inside a value (quote the value), or a key indented wrongly",
    "expected <block end>": "this line is indented differently from the keys beside it",
}
# Errors whose cause lies where something opened, not where the parser gave up (the end of the file, often).
_OPENED = (
    "while scanning a quoted scalar",
    "while scanning a simple key",
    "while parsing a flow sequence",
    "while parsing a flow mapping",
)


def _syntax_error(name: str, exc: MarkedYAMLError, text: str) -> tuple[Position, str, str]:
    what = " ".join(part for part in (exc.context, exc.problem) if part)
    opened = any(what.startswith(kind) for kind in _OPENED)
    mark = (exc.context_mark if opened else None) or exc.problem_mark or exc.context_mark
    where = Position(name, mark.line + 1, mark.column + 1) if mark else Position(name)
    hint = next((f": {text}" for key, text in _SYNTAX_HINTS.items() if key in what), "")
    lines = text.splitlines()
    if "cannot start any token" in what and mark and mark.line < len(lines) and lines[mark.line][: mark.column].strip():
        hint = ": a tab inside a value: quote the value, or write spaces"  # not where the line is indented
    return where, "<yaml>", f"YAML syntax error{hint} ({what})"


_TAGGED_NUMBER = re.compile(r"!!(int|float)\s+(\"[^\"]*\"|'[^']*'|[^\s,}\]]+)")
_TAG_HINT = "; drop the tag (!!int, !!float) and write the number"


def _bad_tagged_value(name: str, text: str) -> Position:
    """The place of the first `!!int`/`!!float` whose value is no such number: ruamel's constructor says what
    failed but not where."""
    for number, line in enumerate(text.splitlines(), 1):
        for found in _TAGGED_NUMBER.finditer(line):
            try:
                (int if found[1] == "int" else float)(found[2].strip("'\""))
            except ValueError:
                return Position(name, number, found.start() + 1)
    return Position(name)


def _merge(base: SourcedTree, child: SourcedTree) -> SourcedTree:
    """Mappings merge deeply and lists replace, so a tiny variant states only what differs."""
    positions = dict(base.positions)

    def merge(a: dict[str, Any], b: dict[str, Any], path: Path_) -> dict[str, Any]:
        out = dict(a)
        for key, value in b.items():
            here = path + (key,)
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                positions[here] = child.positions[here]
                out[key] = merge(out[key], value, here)
                continue
            for known in [p for p in positions if p[: len(here)] == here]:
                del positions[known]
            positions.update({p: pos for p, pos in child.positions.items() if p[: len(here)] == here})
            out[key] = value
        return out

    data = merge(base.data, child.data, ())
    positions[()] = child.positions[()]
    return SourcedTree(data, positions)


TEMPLATE_PREFIX = "x-"


def _drop_templates(tree: SourcedTree) -> None:
    """Top-level `x-...` keys hold what YAML anchors (&name) define for aliases (*name) elsewhere in the same
    file; the aliases were resolved on parsing, so the templates themselves are no part of the recipe."""
    for key in [k for k in tree.data if isinstance(k, str) and k.startswith(TEMPLATE_PREFIX)]:
        del tree.data[key]
        tree.positions = {p: pos for p, pos in tree.positions.items() if p[:1] != (key,)}


def load_tree(file: Path) -> SourcedTree:
    """Read a recipe file and everything it `extends`: each file's own settings merged once, the most general
    first. A base that two bases share (a diamond) comes before both, so that the second one does not restore,
    through it, a value the first one changed."""
    trees = _own_trees(file, (), set())
    merged = trees[0]
    for tree in trees[1:]:
        merged = _merge(merged, tree)
    return merged


def _own_trees(file: Path, chain: tuple[Path, ...], seen: set[Path]) -> list[SourcedTree]:
    """`file`'s own tree after those of its bases, depth first, each file once (`seen`: those already listed)."""
    resolved, reason = resolve_or_reason(file, Path.cwd())
    if resolved is None:
        raise RecipeError.single(Position(str(file)), "<recipe>", reason or "")
    file = resolved
    if file in chain:
        cycle = " -> ".join(p.name for p in (*chain, file))
        raise RecipeError.single(Position(str(chain[-1])), "extends", f"extends cycle: {cycle}")
    tree = _parse_file(file)
    _drop_templates(tree)
    seen.add(file)
    extends = tree.data.pop("extends", None)
    if extends is None:
        return [tree]
    bases = [extends] if isinstance(extends, str) else extends
    where = tree.positions[("extends",)]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError.single(where, "extends", "must be a file name or a list of file names")
    tree.positions = {p: pos for p, pos in tree.positions.items() if p[:1] != ("extends",)}
    trees: list[SourcedTree] = []
    for base_name in bases:  # `extends: []`: nothing inherited
        if not base_name.strip():
            raise RecipeError.single(where, "extends", "an empty file name: name the base recipe, or remove extends")
        if ENVIRONMENT_VARIABLE.search(base_name):
            raise RecipeError.single(where, "extends", f"{base_name!r}: {UNEXPANDED}")
        base_file, reason = resolve_or_reason(Path(base_name), file.parent)
        if base_file is None:
            raise RecipeError.single(where, "extends", f"bad path {base_name!r}: {reason}")
        if base_file in (*chain, file):
            cycle = " -> ".join(p.name for p in (*chain, file, base_file))
            raise RecipeError.single(where, "extends", f"extends cycle: {cycle}")
        if base_file.is_dir():
            raise RecipeError.single(where, "extends", f"{base_name!r} is a directory, not a recipe file")
        if not base_file.exists():
            raise RecipeError.single(where, "extends", f"base recipe {base_name!r} not found (looked at {base_file})")
        if not base_file.is_file():
            raise RecipeError.single(where, "extends", f"{base_name!r} is not a regular file (a device or pipe)")
        if base_file not in seen:
            trees += _own_trees(base_file, (*chain, file), seen)
    return [*trees, tree]


def _parse_override(text: str) -> tuple[Path_, Any]:
    if "=" not in text:
        raise ValueError("expected KEY.PATH=VALUE, e.g. stages.0.lr.student=5e-4")
    key, raw = text.split("=", 1)
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
    if not key.strip() or any(p == "" for p in parts):
        raise ValueError(f"bad key path {key!r}")
    if "[" in key:
        dotted_key = key.strip().replace("[", ".").replace("]", "")
        raise ValueError(f"list items are numbered with dots: write {dotted_key}, not {key.strip()}")
    if parts[0] == "extends":
        raise ValueError("`extends` is read from recipe files only: write a small recipe that extends both")
    try:
        value = YAML(typ="safe", pure=True).load(raw) if raw.strip() else ""
    except MarkedYAMLError as exc:
        raise ValueError(f"value {raw.strip()!r} is not valid YAML: {exc.problem or exc}") from None
    return tuple(parts), value


def apply_overrides(tree: SourcedTree, overrides: list[str] | tuple[str, ...]) -> None:
    """`--set a.b.0.c=VALUE`: VALUE is read as YAML, then checked by the schema like any other value."""
    problems: list[Problem] = []
    for number, text in enumerate(overrides, 1):
        where = Position(f"{OVERRIDE_PREFIX}{number} ({text})")
        try:
            path, value = _parse_override(text)
        except Exception as exc:
            problems.append(Problem(where, "--set", str(exc)))
            continue
        node: Any = tree.data
        for depth, part in enumerate(path[:-1]):
            nxt = _child(node, part)
            if isinstance(node, list) and not (isinstance(part, int) and part < len(node)):
                problems.append(Problem(where, dotted(path[: depth + 1]), _no_item(part, path[:depth], node)))
                break
            if nxt is None and isinstance(node, dict):  # (a number under a misspelt list's name, too: the
                nxt = node[part] = {}  # schema then names the unknown key and the one it was likely meant as)
                tree.positions[path[: depth + 1]] = where  # a key only this --set wrote: problems point here
            if not isinstance(nxt, (dict, list)):
                here = path[: depth + 1]
                message = f"is {nxt!r} here, not a mapping: set it whole instead (--set '{_set_path(here)}=...')"
                problems.append(Problem(where, dotted(here), message))
                break
            node = nxt
        else:
            last = path[-1]
            if isinstance(node, list) and not (isinstance(last, int) and last < len(node)):
                problems.append(Problem(where, dotted(path), _no_item(last, path[:-1], node)))
                continue
            node[last] = value
            for known in [p for p in tree.positions if p[: len(path)] == path]:
                del tree.positions[known]
            tree.positions[path] = where
    if problems:
        raise RecipeError(problems)


def _no_item(part: str | int, list_path: Path_, items: list) -> str:
    """A `--set` past the end of a list: a list is replaced whole, never grown one item at a time."""
    return (
        f"no list item {part!r} (the list has {len(items)}): to add one, set the list whole, "
        f"--set '{_set_path(list_path)}=[...]' (`recipe show` prints its items)"
    )


def _set_path(path: Path_) -> str:
    """A path as a `--set` names it: list items with dots too (`stages.0.lr`)."""
    return ".".join(str(key) for key in path)


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    return None


def value_at(data: Any, path: Path_) -> Any:
    """The value at `path` in a plain tree; None where the path leads nowhere."""
    for part in path:
        data = _child(data, part)
    return data

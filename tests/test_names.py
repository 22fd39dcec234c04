"""Names that explain themselves: no one- or two-letter name is bound in cds_service/ outside comprehensions
and lambdas (variables, arguments, functions, classes, attributes, import aliases, exception names)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cds_service"
# Names that are the spelling of an external format, not a choice: the CDS Hooks / FHIR JSON member `id`.
ALLOWED = {"_", "id"}
SHORT = 2
SCOPES_OF_THEIR_OWN = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda)


def _bound_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
        return [node.id]
    if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
        return [node.attr]
    if isinstance(node, ast.arg):
        return [node.arg]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.ExceptHandler) and node.name:
        return [node.name]
    if isinstance(node, ast.alias) and node.asname:
        return [node.asname]
    return []


def short_names(source: str) -> list[tuple[int, str]]:
    """(line, name) of each short name bound outside a comprehension or lambda."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, SCOPES_OF_THEIR_OWN):
                continue
            found.extend(
                (getattr(child, "lineno", 0), name)
                for name in _bound_names(child)
                if len(name) <= SHORT and name not in ALLOWED
            )
            visit(child)

    visit(ast.parse(source))
    return found


def test_the_checker_finds_short_names_and_spares_comprehensions() -> None:
    source = (
        "import os as o\ndef fn(k): ...\nfor iv in []: pass\nkeep = [x for x in range(3)]\nf = lambda y: y\n"
    )
    assert short_names(source) == [(1, "o"), (2, "fn"), (2, "k"), (3, "iv"), (5, "f")]


def test_no_one_or_two_letter_names_in_the_service() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, name in short_names(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []

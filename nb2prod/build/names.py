"""Which names a piece of Python reads and binds, from its syntax tree.

Notebook cells share one namespace, so nb2prod needs, per cell, the names it
reads from earlier cells and the names it leaves behind. Order matters at top
level (``X = X.fillna(0)`` reads ``X``); inside functions it does not (their
globals are read when called), so those are reported as read only when the cell
does not bind them anywhere.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable
from dataclasses import dataclass

from ..models import Cell

BUILTIN_NAMES = frozenset(dir(builtins)) | {"__file__", "__name__", "display", "get_ipython"}

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass(frozen=True)
class NameUse:
    """Names a block of statements reads from outside and binds for later code."""

    reads: tuple[str, ...]
    binds: tuple[str, ...]
    defines: tuple[str, ...]


def _target_names(node: ast.AST) -> set[str]:
    return {
        n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }


def _local_names(scope: ast.AST) -> set[str]:
    """Names a function, lambda, class body or comprehension binds for itself."""
    local: set[str] = set()
    declared_global: set[str] = set()
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        args = scope.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None:
                local.add(arg.arg)
    if isinstance(scope, _COMPREHENSIONS):
        for generator in scope.generators:
            local |= _target_names(generator.target)
        return local
    body = scope.body if isinstance(scope.body, list) else [scope.body]
    for stmt in body:
        for node in _walk_same_scope(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                local.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                local.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                local |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, ast.ExceptHandler) and node.name:
                local.add(node.name)
            elif isinstance(node, ast.Global):
                declared_global |= set(node.names)
    return local - declared_global


def _walk_same_scope(node: ast.AST) -> list[ast.AST]:
    """ast.walk that stops at scopes (which are returned, not entered), ``node`` included."""
    found: list[ast.AST] = []
    stack = [node]
    while stack:
        current = stack.pop()
        found.append(current)
        if isinstance(current, (*_SCOPES, *_COMPREHENSIONS)):
            continue
        stack.extend(ast.iter_child_nodes(current))
    return found


def _scope_reads(scope: ast.AST) -> set[str]:
    """Names a nested scope reads from the enclosing (module) scope."""
    local = _local_names(scope)
    reads: set[str] = set()
    body: list[ast.AST]
    if isinstance(scope, _COMPREHENSIONS):
        # The first iterable is evaluated outside; the rest inside.
        body = [scope.elt] if not isinstance(scope, ast.DictComp) else [scope.key, scope.value]
        for index, generator in enumerate(scope.generators):
            if index:
                body.append(generator.iter)
            body.extend(generator.ifs)
    elif isinstance(scope, ast.Lambda):
        body = [scope.body]
    else:
        body = list(scope.body)  # type: ignore[attr-defined]
    for stmt in body:
        for node in _walk_same_scope(stmt):
            if isinstance(node, (*_SCOPES, *_COMPREHENSIONS)):
                reads |= _outer_reads(node)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                reads.add(node.id)
    return reads - local


def _outer_reads(scope: ast.AST) -> set[str]:
    """Names a nested scope and what it evaluates outside itself read from outside."""
    reads = _scope_reads(scope)
    outside: list[ast.AST] = []
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        outside.extend(scope.decorator_list)
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        outside.extend(d for d in [*scope.args.defaults, *scope.args.kw_defaults] if d is not None)
    if isinstance(scope, ast.ClassDef):
        outside.extend([*scope.bases, *(k.value for k in scope.keywords)])
    if isinstance(scope, _COMPREHENSIONS):
        outside.append(scope.generators[0].iter)
    for expr in outside:
        reads |= _eager_reads(expr)
    return reads


def _eager_reads(node: ast.AST) -> set[str]:
    reads: set[str] = set()
    for child in _walk_same_scope(node):
        if isinstance(child, (*_SCOPES, *_COMPREHENSIONS)):
            reads |= _outer_reads(child)
        elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load):
            reads.add(child.id)
    return reads


def _statement_names(stmt: ast.stmt) -> tuple[set[str], set[str], set[str], set[str]]:
    """(eager reads, deferred reads, binds, imports) of one top-level statement."""
    eager: set[str] = set()
    deferred: set[str] = set()
    binds: set[str] = set()
    imports: set[str] = set()
    for node in _walk_same_scope(stmt):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            binds.add(node.name)
            deferred |= _scope_reads(node)
            for expr in [*node.decorator_list, *node.args.defaults]:
                eager |= _eager_reads(expr)
            eager |= {n for d in node.args.kw_defaults if d is not None for n in _eager_reads(d)}
        elif isinstance(node, ast.ClassDef):
            binds.add(node.name)
            deferred |= _scope_reads(node)
            for expr in [*node.decorator_list, *node.bases]:
                eager |= _eager_reads(expr)
        elif isinstance(node, (ast.Lambda, *_COMPREHENSIONS)):
            eager |= _outer_reads(node)
        elif isinstance(node, ast.Name):
            (eager if isinstance(node.ctx, ast.Load) else binds).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imports |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
        elif isinstance(node, ast.ExceptHandler) and node.name:
            binds.add(node.name)
    return eager, deferred, binds, imports


class _Tracker:
    """Walks top-level statements in order, recording first reads and binds."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.bound: list[str] = []
        self.imports: list[str] = []
        self.deferred: set[str] = set()

    def read(self, names: set[str]) -> None:
        known = set(self.bound) | set(self.imports)
        for name in sorted(names):
            if name not in known and name not in self.reads:
                self.reads.append(name)

    def bind(self, names: set[str]) -> None:
        for name in sorted(names):
            if name not in self.bound:
                self.bound.append(name)

    def block(self, stmts: list[ast.stmt]) -> None:
        for stmt in stmts:
            self.statement(stmt)

    def statement(self, stmt: ast.stmt) -> None:
        # Compound statements run their header before their body, and the body
        # statement by statement: `for i in ...: total += i` reads `total`, not `i`.
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            self.read(_eager_reads(stmt.iter))
            self.bind(_target_names(stmt.target))
            self.block(stmt.body)
            self.block(stmt.orelse)
        elif isinstance(stmt, (ast.While, ast.If)):
            self.read(_eager_reads(stmt.test))
            self.block(stmt.body)
            self.block(stmt.orelse)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                self.read(_eager_reads(item.context_expr))
                if item.optional_vars is not None:
                    self.bind(_target_names(item.optional_vars))
            self.block(stmt.body)
        elif isinstance(stmt, ast.Try):
            self.block(stmt.body)
            for handler in stmt.handlers:
                if handler.type is not None:
                    self.read(_eager_reads(handler.type))
                if handler.name:
                    self.bind({handler.name})
                self.block(handler.body)
            self.block(stmt.orelse)
            self.block(stmt.finalbody)
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
            self.read({stmt.target.id} | _eager_reads(stmt.value))
            self.bind({stmt.target.id})
        else:
            eager, later, binds, imported = _statement_names(stmt)
            self.read(eager)
            self.deferred |= later
            self.bind(binds)
            for name in sorted(imported):
                if name not in self.imports:
                    self.imports.append(name)


def name_use(tree: ast.Module) -> NameUse:
    """The names ``tree`` reads from before it runs and the names it binds."""
    tracker = _Tracker()
    tracker.block(tree.body)
    # Functions read their globals when called, so a name bound anywhere in the
    # block (before or after the def) is not read from outside.
    tracker.read(tracker.deferred)
    defines = tuple(
        stmt.name
        for stmt in tree.body
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    )
    return NameUse(
        reads=tuple(n for n in tracker.reads if n not in BUILTIN_NAMES),
        binds=tuple(tracker.bound),
        defines=defines,
    )


def names_read(cells: Iterable[Cell]) -> set[str]:
    """Every name ``cells`` read, in any scope, including names read after a local binding.

    An import hoisted out of a cell is still needed when the cell reads the name only after
    binding it itself, so this is wider than ``Cell.reads``.
    """
    names: set[str] = set()
    for cell in cells:
        names |= set(cell.reads)
        names |= {
            n.id
            for n in ast.walk(ast.parse(cell.code))
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }
    return names


def parameter_assignments(
    cells: Iterable[Cell],
) -> Iterable[tuple[Cell, ast.stmt, ast.Name | None, ast.expr | None]]:
    """Each top-level statement of the ``parameters`` cells: (cell, statement, name, value).

    ``name`` and ``value`` are None when the statement is not a plain ``name = value``
    (or ``name: type = value``) assignment.
    """
    for cell in cells:
        if cell.role != "parameters":
            continue
        for stmt in ast.parse(cell.code).body:
            target = stmt.targets[0] if isinstance(stmt, ast.Assign) else None
            if isinstance(stmt, ast.AnnAssign):
                target = stmt.target
            name = target if isinstance(target, ast.Name) else None
            yield cell, stmt, name, getattr(stmt, "value", None)

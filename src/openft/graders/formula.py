"""`calculate_output` of a multi grader: arithmetic over sub-grader scores, parsed into an AST and walked
against a whitelist. Nothing is ever passed to `eval`.

OpenAI's formula language: numbers, grader names, + - * / ^ (power) and parentheses, and the functions
min, max, abs, floor, ceil, exp, sqrt, log. Python's `**` is accepted as a synonym for `^`.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Iterable

MAX_LENGTH = 1000
FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil,
    "exp": math.exp, "sqrt": math.sqrt, "log": math.log,
}  # fmt: skip
BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow, ast.Mod: operator.mod,
}  # fmt: skip
UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class FormulaError(ValueError):
    pass


def parse(formula: str, names: Iterable[str]) -> ast.Expression:
    """The checked AST, or FormulaError saying what is not allowed."""
    if not isinstance(formula, str) or not formula.strip():
        raise FormulaError("calculate_output must be a non-empty formula.")
    if len(formula) > MAX_LENGTH:
        raise FormulaError(f"calculate_output is longer than {MAX_LENGTH} characters.")
    try:
        # `^` is power in OpenAI's formulas and must bind like `**` (Python parses `^` as a low-precedence xor).
        tree = ast.parse(formula.strip().replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"calculate_output is not a formula: {exc.msg}.") from None
    known = set(names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Expression | ast.Load) or type(node) in BINARY or type(node) in UNARY:
            continue
        if isinstance(node, ast.BinOp | ast.UnaryOp):
            if type(node.op) not in BINARY and type(node.op) not in UNARY:
                raise FormulaError(f"Operator {type(node.op).__name__} is not allowed in calculate_output.")
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise FormulaError(f"Only numbers are allowed as constants in calculate_output, not {node.value!r}.")
        elif isinstance(node, ast.Name):
            if node.id not in known and node.id not in FUNCTIONS:
                raise FormulaError(f"calculate_output refers to '{node.id}', which is not one of the graders "
                                   f"({', '.join(sorted(known)) or 'none'}).")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
                raise FormulaError(f"Only the functions {', '.join(FUNCTIONS)} may be called in calculate_output.")
        else:
            raise FormulaError(f"'{ast.unparse(node)}' is not allowed in calculate_output.")
    return tree


def evaluate(tree: ast.Expression, scores: dict[str, float]) -> float:
    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return float(scores[node.id])
        if isinstance(node, ast.UnaryOp):
            return UNARY[type(node.op)](walk(node.operand))
        if isinstance(node, ast.BinOp):
            return float(BINARY[type(node.op)](walk(node.left), walk(node.right)))  # floats: no huge integers
        if isinstance(node, ast.Call):
            return float(FUNCTIONS[node.func.id](*(walk(arg) for arg in node.args)))
        raise FormulaError(f"'{ast.unparse(node)}' is not allowed in calculate_output.")

    try:
        value = walk(tree)
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise FormulaError(f"calculate_output could not be computed: {exc}") from None
    if isinstance(value, complex) or math.isnan(value) or math.isinf(value):
        raise FormulaError("calculate_output did not produce a finite number.")
    return value

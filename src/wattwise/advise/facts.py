"""What the rules need to know about a file, collected once from its `ast`.

The advisor reads code, it does not run it, so facts are heuristics with stated limits:
a "model" is a name assigned from an `nn.Module` constructor (a class defined in the file, an
`nn.*` layer, `from_pretrained`, `torch.load`, `load_model`, torchvision-style builders) or a
name on which `.eval()`, `.train()` or `.parameters()` is called; a "training loop" is a
`for`/`while` loop whose body calls `.backward()`; "inference code" is a function (or the
module's top level) with a model call and no `.backward()`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

MODEL_FACTORY_SUFFIXES = ("from_pretrained", "load_model", "torch.load", "load_variant")
MODEL_METHODS = ("eval", "train", "parameters", "named_parameters")
NOT_MODULES = ("Parameter", "Buffer", "ParameterList", "ParameterDict")
OPTIMIZER_NAMES = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "LBFGS", "NAdam")
NO_GRAD_MARKERS = ("no_grad", "inference_mode")
LOOP_TYPES = (
    ast.For,
    ast.While,
    ast.AsyncFor,
    ast.ListComp,
    ast.SetComp,
    ast.GeneratorExp,
    ast.DictComp,
)


def dotted(node: ast.AST) -> str:
    """`a.b.c` for a Name/Attribute chain (calls and subscripts unparsed as they are)."""
    return ast.unparse(node)


def call_name(node: ast.Call) -> str:
    """The callee as text: 'torch.optim.SGD', 'model.eval', 'print'."""
    return dotted(node.func)


def root_name(node: ast.AST) -> str:
    """The object a method chain starts from: `model.fc.parameters()` → 'model.fc'."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return dotted(node.value)
    return dotted(node)


@dataclass
class FileFacts:
    """Facts about one parsed file."""

    tree: ast.Module
    module_classes: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)
    eval_called_on: set[str] = field(default_factory=set)
    optimizer_roots: set[str] = field(default_factory=set)
    uses_cuda: bool = False
    uses_autocast_or_bf16: bool = False
    uses_compile: bool = False
    freezes_parameters: bool = False
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)

    def ancestors(self, node: ast.AST):
        """Parents of `node`, innermost first."""
        while node in self.parents:
            node = self.parents[node]
            yield node

    def enclosing_function(self, node: ast.AST) -> ast.AST:
        """The function a node is in, or the module."""
        for parent in self.ancestors(node):
            if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef):
                return parent
        return self.tree

    def enclosing_loops(self, node: ast.AST) -> list[ast.AST]:
        """For/While loops and comprehensions around `node`, stopping at its function."""
        loops = []
        for parent in self.ancestors(node):
            if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                break
            if isinstance(parent, LOOP_TYPES):
                loops.append(parent)
        return loops

    def in_lambda(self, node: ast.AST) -> bool:
        """Inside a lambda: run later, where the advisor cannot see the context."""
        return any(isinstance(parent, ast.Lambda) for parent in self.ancestors(node))

    def in_no_grad(self, node: ast.AST) -> bool:
        """Inside `with torch.no_grad()/inference_mode()` or a function decorated with them."""
        for parent in self.ancestors(node):
            if isinstance(parent, ast.With | ast.AsyncWith) and any(
                _mentions(item.context_expr, NO_GRAD_MARKERS) for item in parent.items
            ):
                return True
            if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                _mentions(d, NO_GRAD_MARKERS) for d in parent.decorator_list
            ):
                return True
        return False

    def under_interval_guard(self, node: ast.AST, loop: ast.AST) -> bool:
        """Inside an `if` with a modulo test (`if step % 100 == 0:`) within `loop`."""
        for parent in self.ancestors(node):
            if parent is loop:
                return False
            if isinstance(parent, ast.If) and any(
                isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod)
                for n in ast.walk(parent.test)
            ):
                return True
        return False

    def is_model_call(self, node: ast.AST) -> bool:
        """A call of something we take for a model: `model(x)`, `self.net(x)`."""
        return isinstance(node, ast.Call) and dotted(node.func) in self.models

    def is_model_constructor(self, node: ast.AST) -> bool:
        """A call that builds (or loads) a model."""
        if not isinstance(node, ast.Call):
            return False
        name = call_name(node)
        last = name.rsplit(".", 1)[-1]
        return (
            last in self.module_classes
            or (
                name.startswith(("nn.", "torch.nn."))
                and last[:1].isupper()
                and last not in NOT_MODULES
            )
            or name.endswith(MODEL_FACTORY_SUFFIXES)
            or name.startswith(("models.", "torchvision.models."))
        )


def is_optimizer_constructor(node: ast.AST) -> bool:
    """`torch.optim.AdamW(...)`, `optim.SGD(...)`, `Adam(...)`."""
    if not isinstance(node, ast.Call):
        return False
    name = call_name(node)
    return name.rsplit(".", 1)[-1] in OPTIMIZER_NAMES or ".optim." in f".{name}"


def calls_backward(node: ast.AST) -> bool:
    """Whether `.backward()` is called anywhere under `node` (nested defs included)."""
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "backward"
        for n in ast.walk(node)
    )


def _mentions(node: ast.AST, words: tuple[str, ...]) -> bool:
    text = ast.unparse(node)
    return any(word in text for word in words)


def collect_facts(tree: ast.Module) -> FileFacts:
    """Walk the file once and gather the facts the rules use."""
    facts = FileFacts(tree)
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            facts.parents[child] = node
        if isinstance(node, ast.ClassDef) and any(
            dotted(base).endswith("Module") for base in node.bases
        ):
            facts.module_classes.add(node.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and facts.is_model_constructor(node.value):
            facts.models.update(dotted(t) for t in node.targets)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method, owner = node.func.attr, dotted(node.func.value)
            if method in MODEL_METHODS and "." not in owner.replace("self.", ""):
                facts.models.add(owner)
            if method == "eval" or (method == "train" and _is_false_argument(node)):
                facts.eval_called_on.add(owner)
            facts.uses_cuda |= method == "cuda"
            if method == "requires_grad_" and _is_false_argument(node):
                facts.freezes_parameters = True
            if method in ("bfloat16", "half"):
                facts.uses_autocast_or_bf16 = True
        if isinstance(node, ast.Call) and is_optimizer_constructor(node) and node.args:
            facts.optimizer_roots.add(root_name(node.args[0]))
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            facts.uses_cuda |= node.value.startswith("cuda")
        if isinstance(node, ast.Attribute | ast.Name):
            text = dotted(node)
            facts.uses_autocast_or_bf16 |= text.endswith(("autocast", "bfloat16", "float16"))
            facts.uses_compile |= text.endswith("compile") and "torch" in text
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Attribute) and t.attr == "requires_grad" for t in node.targets
        ):
            facts.freezes_parameters = True
    return facts


def _is_false_argument(node: ast.Call) -> bool:
    return bool(node.args) and isinstance(node.args[0], ast.Constant) and not node.args[0].value

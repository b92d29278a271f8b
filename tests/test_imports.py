"""The package's import graph: no cycle, and nothing but the command line imports the loop.

Every import counts, also those inside functions (which may only defer heavy libraries such as
TensorFlow, never hide a cycle).
"""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jaxgan")
# The training loop's users: the command line and the demo that runs it.
LOOP_USERS = {"jaxgan.cli", "jaxgan.demo"}


def _modules() -> dict[str, str]:
  out = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(root, name)
        rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
        out[rel.removesuffix(".__init__")] = path
  return out


def _imports(module: str, path: str, known: set[str]) -> set[str]:
  """The package modules `module` imports (`from a import b` counts a.b when b is a module)."""
  with open(path) as f:
    tree = ast.parse(f.read())
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
      found.add(base)
      found.update(f"{base}.{alias.name}" for alias in node.names)
  # A package's __init__ runs before its modules; an edge to it from inside is not a cycle.
  return {name for name in found
          if name in known and name != module and not module.startswith(name + ".")}


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  known = set(modules)
  return {m: _imports(m, p, known) for m, p in modules.items()}


def test_no_import_cycle():
  graph = _graph()
  state: dict[str, int] = {}   # 1: on the current path, 2: done
  cycles = []

  def visit(node, path):
    state[node] = 1
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 1:
        cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else path + [nxt])
      elif nxt not in state:
        visit(nxt, path + [nxt])
    state[node] = 2

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])
  assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_only_the_command_line_imports_the_training_loop():
  users = {m for m, deps in _graph().items() if "jaxgan.train" in deps}
  assert users <= LOOP_USERS, f"{sorted(users - LOOP_USERS)} import jaxgan.train"

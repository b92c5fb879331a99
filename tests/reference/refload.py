"""Loading the reference's own modules on Debian's Python 3.11.

The reference wheels declare Python 3.12. Tests load only the modules they need, and
every deviation is explicit and loud:
- `load(name, shims=[(old, new), ...])` compiles one module from the unpacked wheel after
  replacing exact source snippets. A shim exists only for syntax 3.11 cannot compile;
  each `old` must occur in the source, or the load fails (the reference changed).
- `stub(name, **attrs)` registers a stand-in module for a Django settings/database
  piece. Never use it for conversion, envelope or validation logic.
- `package(name)` registers a package without running its `__init__` (which re-exports
  Django models and apps); its submodules still load from the unpacked wheel, unchanged.
- `type_statement_shims(name)` lists the shims for PEP 695 `type X = ...` statements,
  each rewritten to `typing_extensions.TypeAliasType`, the same object pydantic sees on
  3.12. `load_all(names)` loads modules with those shims (and nothing else).
Each test prints what it shimmed and stubbed (`report()`), so the log says it.
"""
import importlib.machinery
import importlib.util
import re
import sys
import types

_log = []


def stub(name, **attrs):
    mod = sys.modules.get(name) or types.ModuleType(name)
    for key, value in attrs.items():
        setattr(mod, key, value)
    # Parents too, so `from a.b import c` finds them.
    parts = name.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        if parent not in sys.modules:
            pkg = types.ModuleType(parent)
            pkg.__path__ = []
            sys.modules[parent] = pkg
    sys.modules[name] = mod
    _log.append(f"stub {name}: {', '.join(sorted(attrs)) or '(empty)'}")
    return mod


def load(name, shims=()):
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(f"reference module {name} not found on PYTHONPATH")
    with open(spec.origin, encoding="utf-8") as f:
        source = f.read()
    for old, new in shims:
        if old not in source:
            raise RuntimeError(f"shim for {name} no longer matches (reference changed?): {old!r}")
        source = source.replace(old, new)
        _log.append(f"shim {name}: {old!r} -> {new!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    exec(compile(source, spec.origin, "exec"), module.__dict__)
    return module


def package(name):
    """A package whose `__init__` is not run; submodules load from its real directory."""
    import os

    parent, _, leaf = name.rpartition(".")
    if parent and parent not in sys.modules:
        package(parent)
    if name in sys.modules:
        return sys.modules[name]
    if parent:
        paths = [os.path.join(p, leaf) for p in sys.modules[parent].__path__]
    else:
        paths = [os.path.join(p, name) for p in sys.path if os.path.isdir(os.path.join(p, name))][:1]
    if not paths or not os.path.isdir(paths[0]):
        raise ImportError(f"reference package {name} not found on PYTHONPATH")
    mod = types.ModuleType(name)
    mod.__path__ = paths[:1]
    mod.__package__ = name
    # A spec, as a real package has: Django's app loading looks a package up by it.
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    mod.__spec__.submodule_search_locations = paths[:1]
    sys.modules[name] = mod
    if parent:
        setattr(sys.modules[parent], leaf, mod)
    _log.append(f"package shell {name} (its __init__ not run)")
    return mod


def reexport(package_name, submodule, names):
    """On a package shell, bind names its `__init__` re-exports with
    `from .submodule import names`: the same objects, taken from the real submodule,
    without running the rest of the `__init__` (which imports what the test cannot load)."""
    import importlib

    shell = package(package_name)
    module = importlib.import_module(f"{package_name}.{submodule}")
    import os

    with open(os.path.join(shell.__path__[0], "__init__.py"), encoding="utf-8") as f:
        source = f.read()
    for n in names:
        if not re.search(rf"from \.{submodule} import \([^)]*\b{n}\b", source):
            raise RuntimeError(f"{package_name}/__init__.py no longer re-exports {n} from .{submodule}")
        setattr(shell, n, getattr(module, n))
    _log.append(f"package shell {package_name}: binds {', '.join(names)} from .{submodule}, as its __init__ does")


def _source_of(name):
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(f"reference module {name} not found on PYTHONPATH")
    with open(spec.origin, encoding="utf-8") as f:
        return f.read()


def type_statement_shims(name):
    """(old, new) pairs turning each `type X = expr` into a TypeAliasType call; an indented
    one (lx-dtypes has them under `if TYPE_CHECKING:`) keeps its indentation."""
    lines = _source_of(name).splitlines(keepends=True)
    shims = []
    i = 0
    while i < len(lines):
        m = re.match(r"([ \t]*)type ([A-Za-z_][A-Za-z0-9_]*) = ", lines[i])
        if not m:
            i += 1
            continue
        j, depth = i, 0
        while True:
            depth += lines[j].count("(") + lines[j].count("[") - lines[j].count(")") - lines[j].count("]")
            if depth <= 0:
                break
            j += 1
        old = "".join(lines[i : j + 1])
        body = old[m.end():].rstrip("\n")
        # A `type` statement is evaluated lazily, so it may name itself unquoted;
        # TypeAliasType evaluates at once, so such a self-reference gets quoted.
        indent, alias = m.group(1), m.group(2)
        body = re.sub(rf'(?<!["\w]){alias}(?![\w"])', f'"{alias}"', body)
        new = f"{indent}{alias} = __import__('typing_extensions').TypeAliasType({alias!r}, {body})\n"
        shims.append((old, new))
        i = j + 1
    return shims


def generic_parameter_shims(name):
    """(old, new) pairs for PEP 695 type parameters on a class or function header,
    `class C[T: Bound](Bases):` / `def f[T: Bound](`: the same TypeVar declared on the line
    before, and a class made `Generic[T]`, the spelling 3.11 compiles (what pydantic
    builds from either). Only one parameter, bounded or not; anything else is refused."""
    shims = []
    for line in _source_of(name).splitlines(keepends=True):
        m = re.match(r"([ \t]*)(class|def) ([A-Za-z_][A-Za-z0-9_]*)\[([^\]]*)\]\(", line)
        if not m:
            continue
        indent, what, ident, params = m.groups()
        p = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:: (.+))?", params.strip())
        if p is None:
            raise RuntimeError(f"{name}: no shim for the type parameters [{params}] of {ident}")
        var, bound = p.groups()
        typevar = f"{indent}{var} = __import__('typing').TypeVar({var!r}" + (f", bound={bound})" if bound else ")") + "\n"
        header = f"{indent}{what} {ident}("
        rest = line[m.end():]
        if what == "class":
            close = rest.index(")")
            rest = rest[:close] + f", __import__('typing').Generic[{var}]" + rest[close:]
        shims.append((line, typevar + header + rest))
    return shims


class _ShimFinder:
    """For modules under the given prefixes: compile as is; only when 3.11 cannot
    compile a module, retry with its type-statement and type-parameter shims (logged
    like `load`)."""

    def __init__(self, prefixes):
        self.prefixes = tuple(prefixes)

    def find_spec(self, name, path, target=None):
        if not name.startswith(self.prefixes):
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        spec.loader = _ShimLoader(spec.loader.name, spec.loader.path)
        return spec


import importlib.machinery as _machinery  # noqa: E402


class _ShimLoader(_machinery.SourceFileLoader):
    def source_to_code(self, data, path, *, _optimize=-1):
        source = data.decode("utf-8") if isinstance(data, bytes) else data
        try:
            return compile(source, path, "exec", dont_inherit=True)
        except SyntaxError:
            pass
        for old, new in type_statement_shims(self.name) + generic_parameter_shims(self.name):
            source = source.replace(old, new)
            _log.append(f"shim {self.name}: {old.strip()!r} -> {new.strip()!r}")
        return compile(source, path, "exec", dont_inherit=True)


def install_syntax_shims(*prefixes):
    """Import hook: reference modules that 3.11 cannot compile get their type-statement
    shims, and nothing else."""
    sys.meta_path.insert(0, _ShimFinder(prefixes))
    _log.append(f"syntax shims armed for {', '.join(prefixes)} (applied only where 3.11 fails to compile)")


def load_all(names):
    """Load modules in order, each with its type-statement shims (if any)."""
    return [load(n, type_statement_shims(n)) for n in names]


def report():
    return list(_log)

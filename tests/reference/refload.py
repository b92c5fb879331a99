"""Loading the reference's own modules on Debian's Python 3.11.

The reference wheels declare Python 3.12. Tests load only the modules they need, and
every deviation is explicit and loud:
- `load(name, shims=[(old, new), ...])` compiles one module from the unpacked wheel after
  replacing exact source snippets. A shim exists only for syntax 3.11 cannot compile;
  each `old` must occur in the source, or the load fails (the reference changed).
- `stub(name, **attrs)` registers a stand-in module for a Django settings/database
  piece. Never use it for conversion, envelope or validation logic.
Each test prints what it shimmed and stubbed (`report()`), so the log says it.
"""
import importlib.util
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


def report():
    return list(_log)

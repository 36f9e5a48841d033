"""A static checker of TensorRT Python API use, against the API that test_tensorrt_api.py dumps from NVIDIA's bindings
(its format is described there).

Inference is flow-insensitive, a fixpoint over the modules: constructors, return annotations, assignments to locals
and ``self.x`` (tuple unpacking, stores into containers), returns of project functions and the arguments passed into
them (followed into other project modules). What it cannot type goes to ``Checker.unchecked``, never guessed.
"""
from __future__ import annotations

import ast
import difflib
import re
from pathlib import Path

# Types: ("mod",) tensorrt; ("cls", K) / ("inst", K) a TensorRT class / instance; ("call", K, attr, bound) a callable;
# ("list", T) any container of T; ("tuple", (T, ...)); ("unk", why) TensorRT-derived, untyped; ("pfn", fid, bound) /
# ("pcls", module, cls) / ("self", module, cls) project functions, classes, instances; NULL: None or empty, a reset.
NULL = ("null",)
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
_ITERATING = ("list", "tuple", "sorted", "reversed", "iter", "set", "next", "enumerate", "zip")
_CONTAINERS = (ast.List, ast.Set, ast.Dict, ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def _is_trt(t) -> bool:
    return bool(t) and (t[0] in ("mod", "cls", "inst", "call", "unk", "list") or
                        t[0] == "tuple" and any(map(_is_trt, t[1])))


def _join(ts: list):
    """One type for every value a name takes; ("unk", ...) where TensorRT values disagree."""
    real = [t for t in ts if t != NULL]
    if real and all(t and t[0] == "tuple" for t in real) and len({len(t[1]) for t in real}) == 1:
        return ("tuple", tuple(_join(list(column)) for column in zip(*(t[1] for t in real))))
    kinds = set(real)
    if len(kinds) <= 1 or not any(map(_is_trt, kinds)):
        return real[0] if len(kinds) == 1 else None
    return ("unk", "bound to " + " | ".join(sorted("other" if t is None else "/".join(map(str, t[:2])) for t in kinds)))


def _fits(sig: dict, npos: int, kws: list[str], loose: bool) -> bool:
    """Whether ``npos`` positional arguments and keywords ``kws`` fit; ``loose``: the call has *args/**kwargs."""
    ps = sig["params"]
    pos, named = [p for p in ps if p[1] in "OP"], {p[0] for p in ps if p[1] in "PK"}
    if npos > len(pos) and not any(p[1] == "A" for p in ps):
        return False
    filled = {p[0] for p in pos[:npos]}
    for k in kws:
        if k in filled or (k not in named and not any(p[1] == "W" for p in ps)):
            return False
        filled.add(k)
    return loose or all(p[2] or p[0] in filled for p in ps if p[1] in "OPK")


def _render(name: str, sig: dict) -> str:
    args = [{"A": "*", "W": "**"}.get(k, "") + n + ("=..." if d and k in "OPK" else "") for n, k, d in sig["params"]]
    return f"{name}({', '.join(args)}) -> {sig['returns'] or '?'}"


class Checker:
    """Add modules (``root``: where the project modules they import live), ``run``: infer, then check every use of a
    TensorRT value. Results: ``problems``, ``checked`` (attribute uses verified), ``calls`` (argument lists verified),
    ``unchecked`` (TensorRT-derived expressions not typed, or only partly checked). Functions are keyed ``fid``."""

    def __init__(self, api: dict, root: Path | None = None) -> None:
        self.types, self.version, self.root = api["types"], api["version"], root
        self.labels, self.funcs, self.classes, self.parent = {}, {}, set(), {}
        self.active, self.env, self._params, self._decorators, self._globals = set(), {}, {}, {}, {}
        self.problems, self.checked, self.calls, self.unchecked = [], [], [], []

    def add(self, module: str, source: str, label: str, active: bool = True) -> None:
        tree = ast.parse(source)
        self.labels[module], self.funcs[(module, "<module>")] = label, (tree, None)
        self.parent.update({child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)})

        def visit(body, prefix, cls):
            for node in body:
                if isinstance(node, _DEFS):
                    fid = (module, prefix + node.name)
                    self.funcs[fid], self._params[fid] = (node, cls), {a.arg for a in ast.walk(node.args)
                                                                       if isinstance(a, ast.arg)}
                    self._decorators[fid] = {getattr(d, "id", None) for d in node.decorator_list}
                    self._globals[fid] = {name for g in ast.walk(node) if isinstance(g, ast.Global) for name in g.names}
                    visit(node.body, f"{prefix}{node.name}.", None)
                elif isinstance(node, ast.ClassDef):
                    self.classes.add((module, prefix + node.name))
                    visit(node.body, f"{prefix}{node.name}.", prefix + node.name)
                else:
                    for part in ("body", "orelse", "finalbody", "handlers"):
                        visit(getattr(node, part, []), prefix, cls)
        visit(tree.body, "", None)
        self.active |= {fid for fid in self.funcs if fid[0] == module and active}

    def run(self) -> Checker:
        for _ in range(12):
            sites: dict = {}
            for fid in sorted(self.active):
                self._collect(fid, sites)
            previous, self.env = self.env, {key: _join(ts) for key, ts in sites.items()}
            if self.env == previous:
                break
        for fid in sorted(self.active):
            self._check(fid)
        return self

    def _nodes(self, fid):
        """The function's own nodes in order; a nested def/class is a scope of its own (its decorators etc. are not)."""
        stack = list(reversed(self.funcs[fid][0].body))
        while stack:
            node = stack.pop()
            yield node
            outer = [*node.decorator_list, *getattr(node, "bases", []), *getattr(getattr(node, "args", None),
                     "defaults", [])] if isinstance(node, (*_DEFS, ast.ClassDef)) else ast.iter_child_nodes(node)
            stack.extend(reversed(list(outer)))

    def _load(self, module: str) -> bool:
        """Parse a project module; its functions are checked only once they receive TensorRT values."""
        path = self.root / Path(*module.split(".")).with_suffix(".py") if self.root and module else None
        if module not in self.labels and path and path.is_file():
            self.add(module, path.read_text(), str(path.relative_to(self.root)), active=False)
        return module in self.labels

    def _collect(self, fid, sites: dict) -> None:
        """Record the type of every binding in ``fid``: names, self attributes, returns, parameters of callees."""
        node, cls = self.funcs[fid]

        def add(name, t):
            sites.setdefault((fid, name), []).append(t)

        decorators = self._decorators.get(fid, ())
        if cls and node.args.args and "staticmethod" not in decorators:   # self / cls
            add(node.args.args[0].arg, ("pcls" if "classmethod" in decorators else "self", fid[0], cls))
        for n in self._nodes(fid):
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                for a in n.names:
                    add(a.asname or (a.name.split(".")[0] if isinstance(n, ast.Import) else a.name),
                        self._imported(fid, n, a))
            elif isinstance(n, (*_DEFS, ast.ClassDef)):
                nested = (fid[0], n.name if fid[1] == "<module>" else f"{fid[1]}.{n.name}")
                add(n.name, ("pcls", *nested) if isinstance(n, ast.ClassDef) else ("pfn", nested, False))
            elif isinstance(n, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and n.value is not None:
                for target in getattr(n, "targets", [getattr(n, "target", None)]):
                    self._bind(fid, target, n.value, sites)
            elif isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension)):
                self._bind(fid, n.target, None, sites, self._elem(self._type(n.iter, fid)))
            elif isinstance(n, ast.withitem) and n.optional_vars is not None:
                self._bind(fid, n.optional_vars, n.context_expr, sites)
            elif isinstance(n, ast.Return):
                add("<return>", self._type(n.value, fid) if n.value else NULL)
            elif isinstance(n, ast.Call):
                self._call_sites(fid, n, sites)

    def _bind(self, fid, target, value, sites: dict, t=None) -> None:
        """Bind ``target`` to ``value`` (an expression) or, when ``value`` is None, to the type ``t``."""
        if value is not None:
            if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) \
                    and len(target.elts) == len(value.elts):
                for sub_target, sub_value in zip(target.elts, value.elts):
                    self._bind(fid, sub_target, sub_value, sites)
                return
            t = self._type(value, fid)
        owner = self._type(target.value, fid) if isinstance(target, ast.Attribute) else None
        if isinstance(target, ast.Name) or owner and owner[0] == "self":
            scope = (fid[0], "<module>") if getattr(target, "id", None) in self._globals.get(fid, ()) else fid
            sites.setdefault((scope, target.id) if isinstance(target, ast.Name) else (owner, target.attr), []).append(t)
        elif isinstance(target, ast.Subscript) and _is_trt(t):   # d[k] = value: d holds TensorRT values
            self._bind(fid, target.value, None, sites, ("list", t))
        elif isinstance(target, (ast.Tuple, ast.List)):
            n = len(target.elts)
            parts = t[1] if t and t[0] == "tuple" and len(t[1]) == n else [self._elem(t)] * n
            for sub_target, sub_t in zip(target.elts, parts):
                self._bind(fid, sub_target, None, sites, sub_t)

    def _imported(self, fid, node, alias: ast.alias):
        name = alias.name
        if isinstance(node, ast.Import):   # import tensorrt [as trt]; import tensorrt.x binds tensorrt too
            return ("mod",) if (name if alias.asname else name.split(".")[0]) == "tensorrt" else None
        if node.module == "tensorrt" and not node.level:
            return self._member_type(("mod",), name)
        package = fid[0].split(".")[:-node.level] if node.level else []
        module = ".".join(package + ([node.module] if node.module else []))
        if not self._load(module):
            return None
        return ("pcls", module, name) if (module, name) in self.classes else ("pfn", (module, name), False)

    def _call_sites(self, fid, call: ast.Call, sites: dict) -> None:
        """Arguments passed to a project function type its parameters (and get it checked, wherever it lives)."""
        f = self._type(call.func, fid)
        f = ("pfn", (f[1], f[2] + ".__init__"), True) if f and f[0] == "pcls" else f
        if not f or f[0] != "pfn" or f[1] not in self.funcs:
            return
        args = self.funcs[f[1]][0].args
        params = [a.arg for a in args.posonlyargs + args.args][1 if f[2] else 0:]
        before_star = call.args[:next((i for i, a in enumerate(call.args) if isinstance(a, ast.Starred)), None)]
        bound = {**dict(zip(params, before_star)), **{k.arg: k.value for k in call.keywords if k.arg}}
        types = {name: self._type(value, fid) for name, value in bound.items()}
        if f[1] in self.active or any(map(_is_trt, types.values())):
            self.active.add(f[1])
            for name, t in types.items():
                sites.setdefault((f[1], name), []).append(t)

    def _elem(self, t):
        """What iterating over (or indexing) a value of type ``t`` yields."""
        if not t or t == NULL or t[0] in ("pfn", "pcls", "self", "mod", "cls", "call"):
            return None
        if t[0] in ("list", "tuple"):
            return t[1] if t[0] == "list" else _join(list(t[1]))
        return t if t[0] == "unk" else ("unk", f"an element of {t[1]}")

    def _resolve(self, raw: str):
        """A TensorRT return annotation (class keys already normalised by the dumper) as a type."""
        m = re.fullmatch(r"list\[(.+)\]", raw)
        if raw in self.types or m and self._resolve(m.group(1)):
            return ("inst", raw) if raw in self.types else ("list", self._resolve(m.group(1)))
        if raw == "" or "::" in raw or any(tok in self.types for tok in re.findall(r"[A-Za-z_][\w.]*", raw)):
            return ("unk", f"returned as {raw or 'an unannotated value'}")
        return None

    def _member_type(self, base, attr: str):
        owner = "" if base[0] == "mod" else base[1]
        e = self.types[owner]["attrs"].get(attr)
        if e is None:
            return ("unk", f"{owner or 'tensorrt'}.{attr}, which does not exist")
        if e["kind"] in ("class", "value"):
            return ("cls" if e["kind"] == "class" else "inst", e["type"]) if e["type"] else None
        if e["kind"] == "property":
            return self._resolve(e["returns"]) if base[0] == "inst" else None
        return ("call", owner, attr, base[0] != "cls" or e["kind"] == "function")

    def _method(self, base, attr: str):
        """``self.attr`` / ``Class.attr``: a project method (bound unless static) or an attribute set on self."""
        fid = (base[1], f"{base[2]}.{attr}")
        if fid not in self.funcs:
            return self.env.get((base, attr))
        decorators = self._decorators.get(fid, ())
        return ("pfn", fid, "classmethod" in decorators or base[0] == "self" and "staticmethod" not in decorators)

    def _type(self, node, fid):
        """The type of an expression in function ``fid``, in the current environment."""
        if isinstance(node, ast.Name):   # parameters and names bound in fid are local, the others the module's
            local = (node.id in self._params.get(fid, ()) or (fid, node.id) in self.env) \
                and node.id not in self._globals.get(fid, ())
            return self.env.get((fid if local else (fid[0], "<module>"), node.id))
        if isinstance(node, ast.Attribute):
            base = self._type(node.value, fid)
            if base and base[0] in ("mod", "cls", "inst"):
                return self._member_type(base, node.attr)
            if base and base[0] in ("self", "pcls"):
                return self._method(base, node.attr)
            return (base if base[0] == "unk" else ("unk", f"an attribute of a {base[0]}")) if _is_trt(base) else None
        if isinstance(node, ast.Call):
            return self._call_type(node, fid)
        if isinstance(node, ast.Subscript):
            base = self._type(node.value, fid)
            return base if isinstance(node.slice, ast.Slice) and base and base[0] == "list" else self._elem(base)
        if isinstance(node, _CONTAINERS):   # an empty display is NULL, one holding TensorRT values ("list", T)
            elems = node.values if isinstance(node, ast.Dict) else getattr(node, "elts", None)
            elems = elems if elems is not None else [node.value if isinstance(node, ast.DictComp) else node.elt]
            joined = _join([self._type(e, fid) for e in elems])
            return NULL if not elems else ("list", joined) if _is_trt(joined) else None
        if isinstance(node, ast.Tuple):
            elems = tuple(self._type(e, fid) for e in node.elts)
            return ("tuple", elems) if any(elems) else NULL if not elems else None
        if isinstance(node, (ast.IfExp, ast.BoolOp)):
            options = [node.body, node.orelse] if isinstance(node, ast.IfExp) else node.values
            return _join([self._type(o, fid) for o in options])
        if isinstance(node, (ast.NamedExpr, ast.Await, ast.Starred)):
            return self._type(node.value, fid)
        return NULL if isinstance(node, ast.Constant) and node.value is None else None

    def _call_type(self, node: ast.Call, fid):
        f = self._type(node.func, fid)
        if f and f[0] in ("cls", "pcls"):
            return ("inst", f[1]) if f[0] == "cls" else ("self", f[1], f[2])
        if f and f[0] == "call":
            sigs = self.types[f[1]]["attrs"][f[2]].get("sigs")
            return _join([self._resolve(s["returns"]) for s in sigs]) if sigs is not None else \
                ("unk", f"the result of {f[1] or 'tensorrt'}.{f[2]} (signature unknown)")
        if f and f[0] in ("pfn", "unk"):
            return self.env.get((f[1], "<return>")) if f[0] == "pfn" else f
        name = getattr(node.func, "id", None)   # builtins that iterate: what they yield
        if name not in _ITERATING or not node.args:
            return None
        elems = [self._elem(self._type(a, fid)) for a in node.args]
        elem = ("tuple", (None, elems[0])) if name == "enumerate" else ("tuple", tuple(elems)) if name == "zip" \
            else elems[0]
        return elem if name == "next" else ("list", elem) if _is_trt(elem) else None

    def _check(self, fid) -> None:
        for n in self._nodes(fid):
            where = f"{self.labels[fid[0]]}:{getattr(n, 'lineno', '?')}: {ast.unparse(n)[:100]}"
            if isinstance(n, ast.Attribute):
                self._check_attr(fid, n, where)
            elif isinstance(n, ast.Call):
                self._check_call(fid, n, where)
            elif isinstance(n, ast.ImportFrom) and n.module == "tensorrt" and not n.level:
                self.problems += [f"{where}: tensorrt.{a.name} does not exist in TensorRT {self.version}"
                                  for a in n.names if a.name not in self.types[""]["attrs"]]

    def _check_attr(self, fid, n: ast.Attribute, where: str) -> None:
        base = self._type(n.value, fid)
        if base and base[0] == "unk":
            self.unchecked.append(f"{where}  [receiver: {base[1]}]")
        if not base or base[0] not in ("mod", "cls", "inst"):
            return
        owner = "" if base[0] == "mod" else base[1]
        e, name = self.types[owner]["attrs"].get(n.attr), f"{owner or 'tensorrt'}.{n.attr}"
        called = isinstance(self.parent.get(n), ast.Call) and self.parent[n].func is n
        self.checked.append(where)
        msg = None
        if e is None:
            close = difflib.get_close_matches(n.attr, self.types[owner]["attrs"], 3, 0.6)
            msg = f"{name} does not exist in TensorRT {self.version}" + f" (close: {', '.join(close)})" * bool(close)
        elif base[0] == "inst" and e["kind"] == "property" and called:
            msg = f"{name} is a property ({e['returns']}): read it, do not call it"
        elif base[0] == "inst" and e["kind"] == "method" and not called:
            msg = f"{name} is a method, not a property: call it"
        elif isinstance(n.ctx, (ast.Store, ast.Del)) and not (e["kind"] == "property" and e["settable"]):
            msg = f"{name} cannot be assigned (read-only)"
        if msg:
            self.problems.append(f"{where}: {msg}")

    def _check_call(self, fid, n: ast.Call, where: str) -> None:
        if getattr(n.func, "id", None) in ("bytes", "bytearray", "memoryview") and len(n.args) == 1:
            t = self._type(n.args[0], fid)   # TensorRT objects convert only through the buffer protocol
            if t and t[0] == "inst":
                has = self.types[t[1]]["buffer"]
                {True: self.calls, None: self.unchecked, False: self.problems}[has].append(
                    f"{where}: {t[1]} buffer protocol support: {has}")
            return
        f = self._type(n.func, fid)
        if not f or f[0] not in ("cls", "call"):
            return
        name = f[1] if f[0] == "cls" else f"{f[1] or 'tensorrt'}.{f[2]}"
        sigs = self.types[f[1]]["init"] if f[0] == "cls" else self.types[f[1]]["attrs"][f[2]]["sigs"]
        if sigs is None or f[0] == "call" and not f[3]:
            self.unchecked.append(f"{where}  [arguments of {name}: unknown signature or unbound method]")
            return
        loose = any(isinstance(a, ast.Starred) for a in n.args) or any(k.arg is None for k in n.keywords)
        npos, kws = sum(not isinstance(a, ast.Starred) for a in n.args), [k.arg for k in n.keywords if k.arg]
        if not any(_fits(s, npos, kws, loose) for s in sigs):
            real = " | ".join(_render(name.split(".")[-1], s) for s in sigs)
            got = f"{npos} positional" + f" + {', '.join(kws)}=" * bool(kws)
            self.problems.append(f"{where}: {got} argument(s) fit no TensorRT {self.version} signature: "
                                 f"{real or 'none (no Python constructor)'}")
        elif loose:
            self.unchecked.append(f"{where}  [arguments only partly checked: *args/**kwargs]")
        else:
            self.calls.append(where)


"""Lowering of a ``Query`` (either version) to the normal form ``Property``.

1. The asserts are one conjunction.  Its top-level comparisons are the *common* part; its
   disjunctions are expanded to DNF and multiplied out.  Common comparisons are never copied
   into the terms, so "many bounds plus one ``or``" costs time linear in the text.
2. Each DNF term splits into input comparisons and output comparisons (a comparison that mixes
   both was refused by the front end).  Terms whose input parts are equal (as sets) form one
   ``Case``; its region lists the terms' output conjunctions in order.  An empty output part is
   the conjunct with zero rows: every output violates.
3. An input comparison on one variable tightens the case's box; others become ``A_in`` rows.
   In VNN-LIB 1.0 every input element needs a finite lower and upper bound in every case; 2.0
   allows unbounded inputs (the box is then infinite there).  A case whose box
   is empty (lo > hi somewhere) is dropped; when all are dropped, ``cases == ()``.

Exactness: ``a*x + c <= 0`` with ``a = +-1`` gives the bound ``-c/a`` exactly.  For other ``a``
the quotient may round; then the box bound is moved outward by one ulp (the box still contains
the region) and the exact row is kept in ``A_in``.  Strict input comparisons (``x < c``) are
relaxed to closed ones: a case's region is a closed superset of the written one, which keeps
every ``unsat`` answer sound.  Output rows keep their ``strict`` flag.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .ast import And, Const, Formula, Lin, Or, Query
from .exact import float_toward
from .property import Case, Property, Region
from .tokens import Source

MAX_TERMS = 2_000_000   # DNF terms kept before giving up (memory: ~100 bytes each)

Term = tuple  # tuple[Lin, ...]


class _TooLarge(Exception):
    pass


def lower(q: Query, src: Source) -> Property:
    """The normal form of q; errors point into src."""
    n_in, n_out = q.n_in, q.n_out
    common: list[Lin] = []
    ors: list[tuple[Formula, int]] = []
    unsat = False
    for k, f in enumerate(q.asserts):
        stack = [f]
        while stack:
            g = stack.pop()
            cls = g.__class__
            if cls is Lin:
                common.append(g)
            elif cls is And:
                stack.extend(reversed(g.args))
            elif cls is Or:
                ors.append((g, k))
            elif not g.value:
                unsat = True
    cases: tuple[Case, ...] = ()
    if not unsat:
        terms = _multiply(ors, q, src)
        if terms:
            cases = _cases(q, src, common, _group(terms), n_in, n_out)
    return Property(cases=cases, inputs=q.inputs, outputs=q.outputs, version=q.version,
                    network=q.network, n_in=n_in, n_out=n_out, networks=q.networks)


# ---- DNF ----------------------------------------------------------------------------------------
def _multiply(ors: list[tuple[Formula, int]], q: Query, src: Source) -> list[Term]:
    """The DNF terms of the conjunction of ors (``[()]``, one empty term, when there is none)."""
    terms: list[Term] = [()]
    for f, k in ors:
        try:
            d = dnf(f)
            if len(terms) * len(d) > MAX_TERMS:
                raise _TooLarge
        except _TooLarge:
            raise src.error(q.assert_tokens[k], f"disjunctive normal form too large (more than "
                                                f"{MAX_TERMS} terms)") from None
        terms = d if terms == [()] else [t + u for t in terms for u in d]
    return terms


def dnf(root: Formula) -> list[Term]:
    """The DNF of root: a list of terms (tuples of Lin); [] is false, [()] is true.

    Iterative.  In an And, plain comparisons are collected once and prefixed to the product of
    the other arguments' DNFs.
    """
    if root.__class__ is Lin:
        return [(root,)]
    if root.__class__ is Const:
        return [()] if root.value else []
    stack = [_frame(root)]
    while True:
        frame = stack[-1]
        node, i, acc, lits = frame
        if i < len(node.args):
            frame[1] = i + 1
            child = node.args[i]
            cls = child.__class__
            if cls is Lin:
                if lits is None:
                    acc.append((child,))
                else:
                    lits.append(child)
            elif cls is And and lits is None and _all_lin(child.args):
                acc.append(child.args)       # the common "or of ands of comparisons"
            elif cls is Const:
                if child.value and lits is None:
                    acc.append(())
                elif not child.value and lits is not None:
                    frame[2] = []
            else:
                stack.append(_frame(child))
            continue
        stack.pop()
        if lits:
            prefix = tuple(lits)
            acc = [prefix + t for t in acc]
        if not stack:
            return acc
        parent = stack[-1]
        if parent[3] is None:        # Or: union
            parent[2].extend(acc)
        else:                        # And: product
            if len(parent[2]) * len(acc) > MAX_TERMS:
                raise _TooLarge
            parent[2] = [t + u for t in parent[2] for u in acc]
        if len(parent[2]) > MAX_TERMS:
            raise _TooLarge


def _all_lin(args: tuple) -> bool:
    for a in args:
        if a.__class__ is not Lin:
            return False
    return True


def _frame(node: Formula) -> list:
    """[node, next argument, accumulated terms, collected comparisons (None for an Or)]."""
    if node.__class__ is And:
        return [node, 0, [()], []]
    return [node, 0, [], None]


def _group(terms: list[Term]) -> list[tuple[list[Lin], list[list[Lin]]]]:
    """[(input comparisons, [output comparisons of each term])] grouped by input part."""
    index: dict[frozenset, int] = {}
    groups: list[tuple[list[Lin], list[list[Lin]]]] = []
    for t in terms:
        tin: list[Lin] = []
        tout: list[Lin] = []
        for lin in t:
            (tin if lin.vars[0] >= 0 else tout).append(lin)
        key = frozenset(tin)
        g = index.get(key)
        if g is None:
            index[key] = g = len(groups)
            groups.append((tin, []))
        groups[g][1].append(tout)
    return groups


# ---- cases --------------------------------------------------------------------------------------
class _Bounds:
    """Box updates and extra rows collected in plain lists, applied with numpy at the end."""

    def __init__(self) -> None:
        self.lo: tuple[list, list, list] = ([], [], [])   # (case, var, value)
        self.hi: tuple[list, list, list] = ([], [], [])

    def add(self, g: int, lins: list[Lin]) -> list[Lin]:
        """Record lins for case g; return those that become A_in rows."""
        rows: list[Lin] = []
        for lin in lins:
            if len(lin.vars) > 1:
                rows.append(lin)
                continue
            v, a, c = lin.vars[0], lin.coefs[0], lin.const
            out = 1 if a > 0 else -1            # outwards: up for an upper bound
            plain = lin.exact is None or lin.exact.lazy   # then a reads +-1 exactly
            if plain and (a == 1.0 or a == -1.0):
                b = -c if a == 1.0 else c
                if lin.exact is not None and not lin.exact.const_is_float():
                    b = float(np.nextafter(b, out * np.inf))   # the decimal lies between two floats
            else:
                (ra,), rc = lin.rational()
                exact = -rc / ra
                b = float(float_toward(exact, out))   # may be +-inf: then "no bound" is reported
                if Fraction(b) != exact:
                    rows.append(lin)
            b += 0.0    # no -0.0 in the box
            side = self.hi if a > 0 else self.lo
            side[0].append(g)
            side[1].append(v)
            side[2].append(b)
        return rows

    def apply(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """Tighten lo, hi ((cases, n_in)) in place with the recorded bounds."""
        for arr, (g, v, b), ufunc in ((lo, self.lo, np.maximum), (hi, self.hi, np.minimum)):
            if g:
                ufunc.at(arr, (np.asarray(g, dtype=np.intp), np.asarray(v, dtype=np.intp)),
                         np.asarray(b, dtype=np.float64))


def _cases(q: Query, src: Source, common: list[Lin],
           groups: list[tuple[list[Lin], list[list[Lin]]]], n_in: int, n_out: int
           ) -> tuple[Case, ...]:
    common_in = [lin for lin in common if lin.vars[0] >= 0]
    common_out = [lin for lin in common if lin.vars[0] < 0]
    G = len(groups)
    bounds = _Bounds()
    rows_common = bounds.add(0, common_in)
    lo = np.full((1, n_in), -np.inf)
    hi = np.full((1, n_in), np.inf)
    bounds.apply(lo, hi)
    bounds = _Bounds()
    rows_by_case = [rows_common + bounds.add(g, tin) for g, (tin, _) in enumerate(groups)]
    LO = np.repeat(lo, G, axis=0)
    HI = np.repeat(hi, G, axis=0)
    bounds.apply(LO, HI)

    keep = np.flatnonzero(~(LO > HI).any(axis=1))
    if q.version == "1.0":   # 2.0 allows unbounded inputs (a proof then needs bounds derived from rows)
        _check_bounded(q, src, LO[keep], HI[keep], keep, G)
    LO.flags.writeable = False
    HI.flags.writeable = False
    regions = _regions(common_out, [groups[g][1] for g in keep], n_out)
    cases = (
        _tightened(Case(LO[g], HI[g], region, *_rows(rows_by_case[g], n_in), lins=tuple(common_in + groups[g][0])),
                   rows_by_case[g])
        for g, region in zip(keep.tolist(), regions)
    )
    # the float box is rounded outwards: a box a few ulps wide may still be empty exactly
    thin = (HI - LO <= 4 * np.spacing(np.maximum(np.abs(LO), np.abs(HI)))).any(axis=1)
    return tuple(c for g, c in zip(keep.tolist(), cases) if c is not None and not (thin[g] and c.is_empty()))


MAX_PROPAGATION_TERMS = 20_000   # comparison terms per case propagated in Fractions (~50 ms)


def _tightened(case: Case, rows: list[Lin]) -> Case | None:
    """The case with its box cut down by its comparisons over several inputs (exact interval
    propagation, ExactBox.propagate), rounded outwards; None when that empties it; the case
    itself when it has none, or too many terms to propagate cheaply."""
    multi = [lin for lin in rows if len(lin.vars) > 1]
    if not multi or sum(len(lin.vars) for lin in multi) > MAX_PROPAGATION_TERMS:
        return case
    box = case.exact_box()
    box.propagate(multi)
    if box.empty:
        return None
    lo = np.maximum(case.lo, [-np.inf if b is None else float_toward(b, -1) for b in box.lo])
    hi = np.minimum(case.hi, [np.inf if b is None else float_toward(b, +1) for b in box.hi])
    for arr in (lo, hi):
        arr.flags.writeable = False
    tight = Case(lo, hi, case.region, case.A_in, case.b_in, case.lins)
    tight._memo["box"] = box
    return tight


def _check_bounded(q: Query, src: Source, lo: np.ndarray, hi: np.ndarray, keep: np.ndarray,
                   G: int) -> None:
    for arr, what in ((lo, "lower"), (hi, "upper")):
        bad = np.argwhere(~np.isfinite(arr))
        if len(bad):
            c, v = (int(i) for i in bad[0])
            where = f" in case {int(keep[c]) + 1} of {G}" if G > 1 else ""
            raise src.error(q.element_token(v),
                            f"input {q.element_name(v)} has no {what} bound{where}")


def _rows(lins: list[Lin], n_in: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(A_in, b_in) for input comparisons ``a.x + c <= 0`` -> ``a.x <= -c``; None if none."""
    if not lins:
        return None, None
    A = np.zeros((len(lins), n_in))
    for r, lin in enumerate(lins):
        A[r, list(lin.vars)] = lin.coefs
    b = np.array([-lin.const for lin in lins])
    A.flags.writeable = False
    b.flags.writeable = False
    return A, b


def _regions(common_out: list[Lin], per_case: list[list[list[Lin]]], n_out: int) -> list[Region]:
    """One region per case: a conjunct per term, rows = common + the term's output rows.

    All float rows go into one (R, n_out) matrix built once; each case's Region holds read-only
    views of its part of it, and each conjunct its exact comparisons (``lins``).
    """
    ri: list[int] = []
    ci: list[int] = []
    vals: list[float] = []
    d: list[float] = []
    down: list[bool] = []
    strict: list[bool] = []
    spans: list[list[tuple[int, int, tuple]]] = []
    r = 0
    for terms in per_case:
        case_spans = []
        for tout in terms:
            start = r
            for lins in (common_out, tout):
                for lin in lins:
                    row = float_row(lin)
                    if row is None:
                        continue
                    coefs, const, rounded = row
                    for v, a in zip(lin.vars, coefs):
                        ri.append(r)
                        ci.append(~v)
                        vals.append(a)
                    d.append(const)
                    down.append(rounded)
                    strict.append(lin.strict)
                    r += 1
            case_spans.append((start, r, tuple(common_out) + tuple(tout)))
        spans.append(case_spans)
    C = np.zeros((r, n_out))
    C[ri, ci] = vals
    D = np.array(d, dtype=np.float64)
    D = np.where(np.array(down, dtype=bool), np.nextafter(D, -np.inf), D) + 0.0
    S = np.array(strict, dtype=bool)
    for arr in (C, D, S):
        arr.flags.writeable = False
    regions = []
    for case_spans in spans:
        first = case_spans[0][0] if case_spans else 0
        starts = np.array([first] + [e for _, e, _ in case_spans], dtype=np.int64)
        a, b = int(starts[0]), int(starts[-1])
        regions.append(Region(C[a:b], D[a:b], S[a:b], starts - a, [lins for _, _, lins in case_spans]))
    return regions


_TWO53 = 1 << 53


def float_row(lin: Lin) -> tuple[tuple[float, ...], float, bool] | None:
    """The engine's float image of an output comparison: (coefficients, constant, whether the
    constant must still be rounded down), with exact coefficients, or None to leave the row out.

    A constant rounded down keeps the float row true wherever the exact one is.  Coefficients
    that are not floats are made integers by scaling the row by the lcm of their denominators
    (a positive factor: same comparison); when those do not fit in 53 bits the row is left
    out, which only enlarges the violating region (sound for refutation; the exact check of a
    candidate still reads every row)."""
    if lin.exact is None:
        return lin.coefs, lin.const, False
    if lin.exact.lazy:
        return lin.coefs, lin.const, not lin.exact.const_is_float()
    coefs, const = lin.rational()
    if any(Fraction(f) != c for f, c in zip(lin.coefs, coefs)):
        scale = math.lcm(*(c.denominator for c in coefs))
        coefs = tuple(c * scale for c in coefs)
        if any(abs(c) > _TWO53 for c in coefs):
            return None
        const = const * scale
    down = float(float_toward(const, -1))
    if not math.isfinite(down):
        return None
    return tuple(float(c) for c in coefs), down, False

"""VNN-COMP scoring of one answer.

``correct`` takes one of five values:

=============  ==========================================================================  ======
correct        when                                                                        points
=============  ==========================================================================  ======
``yes``        unsat where ``expected`` is unsat; sat with a valid counterexample where      +10
               ``expected`` is sat or empty (a checked counterexample is its own proof)
``no``         unsat where ``expected`` is sat; sat whose counterexample fails the check   -150
``unverified`` unsat where ``expected`` is empty: solved, but nothing confirms it              0
``disputed``   sat with a counterexample onnxruntime confirms, where ``expected`` is unsat     0
(empty)        unknown, timeout, error                                                        0
=============  ==========================================================================  ======

``disputed`` is rare and always worth a human look: either the reference answer is wrong or the
counterexample sits on a float boundary where runtimes disagree; it neither earns nor costs points.
"""
from __future__ import annotations

POINTS = {"yes": 10, "no": -150, "unverified": 0, "disputed": 0, "": 0}
SOLVED = ("yes", "unverified", "disputed")


def judge(expected: str, verdict: str, check: str) -> str:
    """The ``correct`` column for one answer (see the module docstring)."""
    if verdict == "sat":
        if check != "ok":
            return "no"
        return "disputed" if expected == "unsat" else "yes"
    if verdict == "unsat":
        if expected == "sat":
            return "no"
        return "yes" if expected == "unsat" else "unverified"
    return ""


def points(correct: str) -> int:
    return POINTS[correct]

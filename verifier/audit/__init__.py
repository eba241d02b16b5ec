"""Certified robustness of a classifier over a data set (the `audit` command).

    from verifier.audit import audit
    report = audit("model.onnx", "data.npz", eps=["0.01", "0.02"], out="audit-out",
                   input_range=(0, 1), methods=["formal", "lipschitz", "smoothing", "attack"])
    report.methods["formal"].certified_accuracy["0.01"]

Modules: data (the data set, checked), queries (a sample's question, written exactly), formal
(our engine, per sample), lipschitz, smoothing, attack (the methods), sample (one sample through
every method), run (the job: resume, processes, Ray), report (json, markdown, plot).
"""
from __future__ import annotations


def audit(*args, **kwargs):
    """See verifier.audit.run.audit."""
    from .run import audit as _audit

    return _audit(*args, **kwargs)


__all__ = ["audit"]

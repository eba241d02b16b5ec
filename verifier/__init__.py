"""verifier: a formal neural-network verifier (ONNX networks, VNN-LIB properties).

Importing the package is cheap; torch is loaded only when a query is verified.
"""
__version__ = "0.1.0"
NAME = "verifier: neural network verifier (IBP, CROWN, alpha-CROWN, branch and bound)"


def verify(onnx_path, vnnlib_path, timeout: float = 60.0, **kwargs):
    """See verifier.api.verify."""
    from .api import verify as _verify

    return _verify(onnx_path, vnnlib_path, timeout=timeout, **kwargs)


def audit(model, data, eps, out, **kwargs):
    """See verifier.audit.run.audit: certify a classifier over a data set, returns a Report."""
    from .audit.run import audit as _audit

    return _audit(model, data, eps, out, **kwargs)


__all__ = ["verify", "audit", "__version__", "NAME"]

"""verifier: a formal neural-network verifier (ONNX networks, VNN-LIB properties).

Importing the package is cheap; torch is loaded only when a query is verified.
"""
__version__ = "0.1.0"
NAME = "verifier: neural network verifier (IBP, CROWN, alpha-CROWN, branch and bound)"


def verify(onnx_path, vnnlib_path, timeout: float = 60.0, **kwargs):
    """See verifier.api.verify."""
    from .api import verify as _verify

    return _verify(onnx_path, vnnlib_path, timeout=timeout, **kwargs)


__all__ = ["verify", "__version__", "NAME"]

"""The proof package's errors: each says which input could not be used, and why.

An *invalid proof* is not an error: `verify` returns a `Verdict` for it. These errors mean that
there is nothing to verify (or to run) at all: a file is missing, is not what it claims to be, or
asks for something Maxwell's runtime does not do. The CLI maps all of them to exit status 2.
"""

from __future__ import annotations

from maxwell.errors import MaxwellError


class ProofInputError(MaxwellError):
    """Root of the proof package's errors: an input (model, tensor, proof) cannot be used."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class ModelFormatError(ProofInputError):
    """The model file is not an ONNX model Maxwell can read (or is not a file at all)."""


class UnsupportedModelError(ModelFormatError):
    """A readable ONNX model that asks for an operator, element type or shape we do not run."""


class TensorFileError(ProofInputError):
    """An input or output tensor file is missing, is not a `.npy` array, or has the wrong type."""


class InputShapeError(ProofInputError):
    """The input tensor does not fit the model: a layer cannot take the shape it is given."""


class ProofFormatError(ProofInputError):
    """The proof bundle is missing, is not a Maxwell proof, or is malformed."""

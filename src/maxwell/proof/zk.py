"""A zk-SNARK proof of inference with EZKL: the optional heavy path (`pip install 'maxwell[zk]'`).

The rest of `maxwell.proof` checks a run with Freivalds' trick: cheap, but the verifier holds the
weights and must keep its random vectors secret. A zk-SNARK is checked by anyone holding the
verifying key, which binds the weights (they are compiled into the circuit, `param_visibility`
"fixed"), and reveals nothing the statement keeps private. The price is the prover's time and a
proving key of megabytes to hundreds of megabytes, even for a tiny model.

The pipeline, one EZKL call per step on files in one work directory (`ZkArtifacts`):

1. settings: `gen_settings` with Maxwell's run arguments (input public or private, output
   public, weights fixed), then `calibrate_settings` (fixed-point scales and `logrows`);
2. `compile_circuit`;
3. `gen_srs` with the calibrated `logrows`, locally and offline. Trust: whoever generates an SRS
   knows its secret and could forge proofs under it, so an SRS made by the prover proves nothing
   to anyone else. The verifier (or a ceremony, e.g. EZKL's public `get_srs` download, which
   needs the network) must supply it; `prove_model(srs=...)` takes one made elsewhere;
4. `gen_witness`: the quantised inference (fixed point at 2^-scale);
5. `setup`: the proving key (pk) and verifying key (vk);
6. `prove`; 7. `verify`.

The statement proved is "the circuit (that is, these weights) maps the public input to the
public output". The public values are the proof's `instances`: the input first when it is
public, then the output, flattened, as field elements at the circuit's scales. A verifier checks
its own claim (`verify_proof(..., y=y)`) by writing its values in their place: a claim that
differs by one fixed-point step fails.

Decomposition: EZKL range-checks values by splitting them into `decomp_legs` digits of base
`decomp_base`, with a lookup table of `decomp_base` rows. Its default (16384, 2 legs) forces
2^15 rows and a ~140 MB proving key on a 16-wide MLP; (128, 4 legs) covers the same range
(2^28) in a 1,024-row circuit: about 30x less pk and 10x less proving time.

EZKL writes its range-check tables under `~/.ezkl` (`EZKL_REPO_PATH` moves it), and its
calibration report to stderr; stdout stays clean.

The pure part (run arguments, reading settings and proofs, rewriting a proof's public values or
bytes) is at the top; below `# --- EZKL ---` the functions touch files and call EZKL, which is
imported lazily: without it they raise `ZkUnavailableError`.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import ArrayLike

from maxwell.errors import MaxwellError
from maxwell.proof.errors import ModelFormatError

INSTALL_HINT: Final = "pip install 'maxwell[zk]'"
Visibility = Literal["public", "private"]


class ZkUnavailableError(MaxwellError):
    """EZKL is not installed (or does not import): the zk path is an optional extra."""


class ZkError(MaxwellError):
    """An EZKL step failed; `step` names it ("gen_settings", "prove", ...)."""

    def __init__(self, message: str, *, step: str) -> None:
        super().__init__(message)
        self.step = step


class ZkClaimError(MaxwellError, ValueError):
    """A claim that does not fit the proof's statement (wrong count, an input kept private)."""


@dataclass(frozen=True)
class ZkOptions:
    """What the circuit is built with; the defaults are the small, fast circuit."""

    input_visibility: Visibility = "public"
    decomp_base: int = 128
    decomp_legs: int = 4
    calibration_target: Literal["resources", "accuracy"] = "resources"
    scales: tuple[int, ...] | None = None  # None: calibration tries its own
    lookup_safety_margin: float = 2.0


EZKL_DEFAULT_DECOMPOSITION: Final = ZkOptions(decomp_base=16_384, decomp_legs=2)


@dataclass(frozen=True)
class ZkArtifacts:
    """The files of one proof, in one work directory."""

    workdir: Path
    srs: Path

    @classmethod
    def in_dir(cls, workdir: Path, srs: Path | None = None) -> ZkArtifacts:
        return cls(workdir, srs if srs is not None else workdir / "kzg.srs")

    @property
    def model(self) -> Path:
        return self.workdir / "model.onnx"

    @property
    def data(self) -> Path:
        return self.workdir / "input.json"

    @property
    def settings(self) -> Path:
        return self.workdir / "settings.json"

    @property
    def compiled(self) -> Path:
        return self.workdir / "model.compiled"

    @property
    def witness(self) -> Path:
        return self.workdir / "witness.json"

    @property
    def pk(self) -> Path:
        return self.workdir / "pk.key"

    @property
    def vk(self) -> Path:
        return self.workdir / "vk.key"

    @property
    def proof(self) -> Path:
        return self.workdir / "proof.json"


@dataclass(frozen=True)
class ZkResult:
    """One run of the pipeline: what it cost (wall seconds, bytes) and what it proved."""

    artifacts: ZkArtifacts
    logrows: int
    num_rows: int
    input_scale: int
    output_scale: int
    input_visibility: Visibility
    decomposition: tuple[int, int]  # (decomp_base, decomp_legs)
    inputs: tuple[float, ...]  # the quantised input, as the circuit saw it
    outputs: tuple[float, ...]  # the public output the proof states, rescaled to floats
    calibrate_s: float
    compile_s: float
    srs_s: float  # 0.0 when an SRS was supplied
    witness_s: float
    setup_s: float
    prove_s: float
    verify_s: float
    proof_bytes: int
    pk_bytes: int
    vk_bytes: int
    srs_bytes: int
    verified: bool

    def as_json(self) -> dict[str, object]:
        return {
            "logrows": self.logrows,
            "num_rows": self.num_rows,
            "input_scale": self.input_scale,
            "output_scale": self.output_scale,
            "input_visibility": self.input_visibility,
            "decomp_base": self.decomposition[0],
            "decomp_legs": self.decomposition[1],
            "calibrate_s": round(self.calibrate_s, 4),
            "compile_s": round(self.compile_s, 4),
            "srs_s": round(self.srs_s, 4),
            "witness_s": round(self.witness_s, 4),
            "setup_s": round(self.setup_s, 4),
            "prove_s": round(self.prove_s, 4),
            "verify_s": round(self.verify_s, 4),
            "proof_bytes": self.proof_bytes,
            "pk_bytes": self.pk_bytes,
            "vk_bytes": self.vk_bytes,
            "srs_bytes": self.srs_bytes,
            "verified": self.verified,
        }


@dataclass(frozen=True)
class ZkVerdict:
    valid: bool
    reason: str


# --- the pure part ----------------------------------------------------------------------------


def input_document(x: ArrayLike) -> dict[str, object]:
    """EZKL's data file for a one-input model: the input flattened in C order."""
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    return {"input_data": [flat.tolist()]}


@dataclass(frozen=True)
class CircuitSettings:
    """What the calibrated settings file says, as far as Maxwell needs it."""

    logrows: int
    num_rows: int
    input_scale: int
    output_scale: int
    input_public: bool
    instance_shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> CircuitSettings:
        run_args = document["run_args"]
        return cls(
            logrows=int(run_args["logrows"]),
            num_rows=int(document["num_rows"]),
            input_scale=int(document["model_input_scales"][0]),
            output_scale=int(document["model_output_scales"][0]),
            input_public=str(run_args["input_visibility"]).lower() == "public",
            instance_shapes=tuple(
                tuple(int(d) for d in s) for s in document["model_instance_shapes"]
            ),
        )

    @property
    def input_size(self) -> int:
        """How many of the public values are the input (0 when it is private)."""
        return _size(self.instance_shapes[0]) if self.input_public else 0


def _size(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def with_public_values(proof: Mapping[str, Any], felts: Sequence[str]) -> dict[str, Any]:
    """`proof` with its public values replaced by `felts` (a claim to check it against)."""
    instances = proof["instances"]
    if len(instances) != 1 or len(instances[0]) != len(felts):
        stated = [len(column) for column in instances]
        raise ZkClaimError(f"the proof states {stated} public values; the claim has {len(felts)}")
    return {**proof, "instances": [list(felts)]}


def with_flipped_byte(proof: Mapping[str, Any], index: int) -> dict[str, Any]:
    """`proof` with one byte of the SNARK itself changed (EZKL verifies the `proof` list)."""
    body = bytearray(int(b) for b in proof["proof"])
    body[index % len(body)] ^= 0x01
    return {**proof, "proof": list(body), "hex_proof": "0x" + body.hex()}


def stated_outputs(proof: Mapping[str, Any]) -> tuple[float, ...]:
    """The public output a proof states, rescaled to floats by EZKL."""
    rescaled = proof["pretty_public_inputs"]["rescaled_outputs"]
    return tuple(float(value) for column in rescaled for value in column)


def stated_inputs(witness: Mapping[str, Any]) -> tuple[float, ...]:
    rescaled = witness["pretty_elements"]["rescaled_inputs"]
    return tuple(float(value) for column in rescaled for value in column)


# --- EZKL -------------------------------------------------------------------------------------


def load_ezkl() -> ModuleType:
    """The `ezkl` module, imported now (it is heavy and optional)."""
    try:
        return importlib.import_module("ezkl")
    except ImportError as exc:
        raise ZkUnavailableError(f"EZKL is not installed: {INSTALL_HINT}") from exc


def _settle(value: object) -> object:
    """A step's result; some EZKL releases return coroutines from the slow steps."""
    if inspect.isawaitable(value):
        awaitable = value

        async def wait() -> object:
            return await awaitable

        return asyncio.run(wait())
    return value


def _step(name: str, function: Callable[..., object], **arguments: object) -> float:
    """Run one EZKL step (keyword arguments, as EZKL names them); its wall seconds.

    EZKL's Rust errors arrive as RuntimeError (or ValueError, OSError): they become `ZkError`.
    """
    started = time.perf_counter()
    try:
        result = _settle(function(**_as_strings(arguments)))
    except (RuntimeError, ValueError, OSError) as exc:
        raise ZkError(f"EZKL {name} failed: {exc}", step=name) from exc
    if result is False:
        raise ZkError(f"EZKL {name} failed (it returned False)", step=name)
    return time.perf_counter() - started


def _as_strings(arguments: Mapping[str, object]) -> dict[str, object]:
    """Paths as strings: some EZKL bindings (calibrate_settings) refuse `Path` objects."""
    return {key: str(v) if isinstance(v, Path) else v for key, v in arguments.items()}


def _read_json(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def _run_args(ezkl: ModuleType, options: ZkOptions) -> Any:
    run_args = ezkl.PyRunArgs()
    run_args.input_visibility = options.input_visibility
    run_args.output_visibility = "public"
    run_args.param_visibility = "fixed"  # the weights are part of the circuit: vk binds them
    run_args.decomp_base = options.decomp_base
    run_args.decomp_legs = options.decomp_legs
    return run_args


def prove_model(
    model: Path,
    x: ArrayLike,
    workdir: Path,
    *,
    options: ZkOptions | None = None,
    srs: Path | None = None,
) -> ZkResult:
    """Prove that `model` (an ONNX file) maps `x` to its output; every file goes in `workdir`.

    `srs`: an SRS made elsewhere, with at least the calibrated `logrows` (see the module
    docstring on trust); without it one is generated into `workdir` with `gen_srs`, offline.
    The honest proof is verified before returning (`verified`, `verify_s`). A model file that
    cannot be read is a `ModelFormatError`; a step EZKL refuses (not ONNX, an operator it does
    not prove) is a `ZkError` naming the step.
    """
    ezkl = load_ezkl()
    chosen = options if options is not None else ZkOptions()
    files = _stage_inputs(model, x, workdir, srs)
    circuit, calibrate_s = _calibrated_settings(ezkl, files, chosen)
    compile_s = _compile_circuit(ezkl, files)
    srs_s = 0.0
    if srs is None:
        srs_s = _step("gen_srs", ezkl.gen_srs, srs_path=files.srs, logrows=circuit.logrows)
    witness_s = _gen_witness(ezkl, files)
    setup_s = _setup_keys(ezkl, files)
    prove_s = _prove(ezkl, files)
    verdict, verify_s = _timed_verdict(ezkl, files, files.proof, "its own public values")
    return ZkResult(
        artifacts=files,
        logrows=circuit.logrows,
        num_rows=circuit.num_rows,
        input_scale=circuit.input_scale,
        output_scale=circuit.output_scale,
        input_visibility=chosen.input_visibility,
        decomposition=(chosen.decomp_base, chosen.decomp_legs),
        inputs=stated_inputs(_read_json(files.witness)),
        outputs=stated_outputs(_read_json(files.proof)),
        calibrate_s=calibrate_s,
        compile_s=compile_s,
        srs_s=srs_s,
        witness_s=witness_s,
        setup_s=setup_s,
        prove_s=prove_s,
        verify_s=verify_s,
        proof_bytes=files.proof.stat().st_size,
        pk_bytes=files.pk.stat().st_size,
        vk_bytes=files.vk.stat().st_size,
        srs_bytes=files.srs.stat().st_size,
        verified=verdict.valid,
    )


def _stage_inputs(model: Path, x: ArrayLike, workdir: Path, srs: Path | None) -> ZkArtifacts:
    """Copy the model file and write the input into `workdir`, where every step reads them."""
    try:
        model_bytes = model.read_bytes()
    except OSError as exc:
        raise ModelFormatError(f"model {model}: {exc.strerror}", path=str(model)) from exc
    workdir.mkdir(parents=True, exist_ok=True)
    files = ZkArtifacts.in_dir(workdir, srs)
    files.model.write_bytes(model_bytes)
    files.data.write_text(json.dumps(input_document(x)))
    return files


def _calibrated_settings(
    ezkl: ModuleType, files: ZkArtifacts, chosen: ZkOptions
) -> tuple[CircuitSettings, float]:
    """Step 1: the settings from Maxwell's run arguments, calibrated on the input; the circuit
    they describe and the calibration's wall seconds."""
    _step(
        "gen_settings",
        ezkl.gen_settings,
        model=files.model,
        output=files.settings,
        py_run_args=_run_args(ezkl, chosen),
    )
    calibrate_s = _step(
        "calibrate_settings",
        ezkl.calibrate_settings,
        data=files.data,
        model=files.model,
        settings=files.settings,
        target=chosen.calibration_target,
        lookup_safety_margin=chosen.lookup_safety_margin,
        scales=None if chosen.scales is None else list(chosen.scales),
        scale_rebase_multiplier=[1],
        max_logrows=None,
    )
    return CircuitSettings.from_document(_read_json(files.settings)), calibrate_s


def _compile_circuit(ezkl: ModuleType, files: ZkArtifacts) -> float:
    """Step 2: the circuit, with the weights fixed in it; its wall seconds."""
    return _step(
        "compile_circuit",
        ezkl.compile_circuit,
        model=files.model,
        compiled_circuit=files.compiled,
        settings_path=files.settings,
    )


def _gen_witness(ezkl: ModuleType, files: ZkArtifacts) -> float:
    """Step 4: the quantised inference; its wall seconds."""
    return _step(
        "gen_witness",
        ezkl.gen_witness,
        data=files.data,
        model=files.compiled,
        output=files.witness,
        vk_path=None,
        srs_path=None,
    )


def _setup_keys(ezkl: ModuleType, files: ZkArtifacts) -> float:
    """Step 5: the proving and verifying keys from the circuit and the SRS; its wall seconds."""
    return _step(
        "setup",
        ezkl.setup,
        model=files.compiled,
        vk_path=files.vk,
        pk_path=files.pk,
        srs_path=files.srs,
        witness_path=None,
        disable_selector_compression=False,
    )


def _prove(ezkl: ModuleType, files: ZkArtifacts) -> float:
    """Step 6: the proof of the witness; its wall seconds."""
    return _step(
        "prove",
        ezkl.prove,
        witness=files.witness,
        model=files.compiled,
        pk_path=files.pk,
        proof_path=files.proof,
        srs_path=files.srs,
    )


def verify_proof(
    artifacts: ZkArtifacts,
    *,
    proof: Path | None = None,
    x: ArrayLike | None = None,
    y: ArrayLike | None = None,
) -> ZkVerdict:
    """Check a proof with the verifying key, settings and SRS in `artifacts`.

    Without `y` (and `x`), the proof is checked against the public values it states; with them,
    against the caller's claim that the model maps x to y, quantised at the circuit's scales: a
    claim that differs from the proved values by one fixed-point step (2^-scale) is rejected.
    `x` is for a circuit whose input is public; a claim about a private input is a
    `ZkClaimError`.
    """
    ezkl = load_ezkl()
    proof_path = proof if proof is not None else artifacts.proof
    for path in (proof_path, artifacts.settings, artifacts.vk, artifacts.srs):
        if not path.is_file():
            raise ZkError(f"cannot verify: {path}: no such file", step="verify")
    if x is None and y is None:
        verdict, _ = _timed_verdict(ezkl, artifacts, proof_path, "its own public values")
        return verdict
    circuit = CircuitSettings.from_document(_read_json(artifacts.settings))
    document = _read_json(proof_path)
    felts = _claim_felts(ezkl, circuit, document, x=x, y=y)
    with tempfile.TemporaryDirectory(prefix="maxwell-zk-claim-") as scratch:
        claim = Path(scratch) / "proof.json"
        claim.write_text(json.dumps(with_public_values(document, felts)))
        verdict, _ = _timed_verdict(ezkl, artifacts, claim, "the claimed values")
    return verdict


def _claim_felts(
    ezkl: ModuleType,
    circuit: CircuitSettings,
    proof: Mapping[str, Any],
    *,
    x: ArrayLike | None,
    y: ArrayLike | None,
) -> list[str]:
    stated: list[str] = [str(felt) for felt in proof["instances"][0]]
    if x is not None and not circuit.input_public:
        raise ZkClaimError("the circuit keeps its input private: there is no input to claim")

    def felts(values: ArrayLike, scale: int, expected: int, what: str) -> list[str]:
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        if flat.size != expected:
            raise ZkClaimError(
                f"the claimed {what} has {flat.size} values; the proof has {expected}"
            )
        return [ezkl.float_to_felt(float(v), scale, ezkl.PyInputType.F32) for v in flat]

    split = circuit.input_size
    claimed_input = stated[:split] if x is None else felts(x, circuit.input_scale, split, "input")
    claimed_output = (
        stated[split:]
        if y is None
        else felts(y, circuit.output_scale, len(stated) - split, "output")
    )
    return [*claimed_input, *claimed_output]


def _timed_verdict(
    ezkl: ModuleType, files: ZkArtifacts, proof: Path, against: str
) -> tuple[ZkVerdict, float]:
    """EZKL's verify; it raises (RuntimeError) on a proof it rejects: that is a verdict here."""
    started = time.perf_counter()
    try:
        accepted = _settle(
            ezkl.verify(
                proof_path=str(proof),
                settings_path=str(files.settings),
                vk_path=str(files.vk),
                srs_path=str(files.srs),
                reduced_srs=False,
            )
        )
    except RuntimeError as exc:
        return ZkVerdict(False, f"rejected: {exc}"), time.perf_counter() - started
    elapsed = time.perf_counter() - started
    if accepted is True:
        return ZkVerdict(True, f"the proof verifies against {against}"), elapsed
    return ZkVerdict(False, f"rejected: EZKL verify returned {accepted!r}"), elapsed

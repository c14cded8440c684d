"""Maxwell's own Python programs run as agents of any uid: a copy of Maxwell and the
distributions those programs import, where every user may read it, and an interpreter every
user may run.

A root daemon runs each agent as a uid of its own (`maxwell.users`), a uid that may enter no
private directory. A virtualenv under /root, or a checkout in a private directory, is beyond
such a uid, so an agent that is one of Maxwell's Python programs (a sample, a priced call)
would die at once. `agent_runtime` makes what it needs instead:

- `copy_runtime`: the `maxwell` package this process imports and the distributions named, each
  whole as installed (numpy's bundled libraries too), copied into a directory of their own with
  every directory 0755 and every file 0644. Compiled `__pycache__` files come along with their
  sources' times, so the agents, which may not write there, need not compile on every start.
- `public_python`: an interpreter a stranger uid (in no group: what every uid may do) can run,
  of this one's ABI (`sys.implementation.cache_tag`: the same CPython major.minor, so the
  copied extension modules load): this interpreter where such a uid can reach it, else a
  public `python3.X` or `python3` of the same version; `AgentRuntimeError` where none is.
- `AgentRuntime.command`: that interpreter with the copy first on its path, in the form
  `MAXWELL_AGENT_PYTHON` (`maxwell cluster up --agent-python`) takes; the copy goes on the
  way out, whatever ends the block.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from maxwell.errors import MaxwellError
from maxwell.users import DEFAULT_DYNAMIC_UIDS, RunAs, obstacle, setpriv_argv

# What the `maxwell` command imports at run time (rich and its own dependencies).
CLI_PACKAGES: Final = ("rich", "pygments", "markdown_it", "mdurl")
# What the agents' SDK (`maxwell.client`) imports: pydantic and its own dependencies.
SDK_PACKAGES: Final = (
    "pydantic", "pydantic_core", "typing_extensions", "annotated_types", "typing_inspection",
)  # fmt: skip
# What `maxwell.samples` imports at module level: the SDK (to report) and numpy (inference).
SAMPLE_PACKAGES: Final = (*SDK_PACKAGES, "numpy")
# A uid in no group, which the user database does not know: what any uid may do, it may.
STRANGER: Final = RunAs.dynamic(int(DEFAULT_DYNAMIC_UIDS.partition("-")[0]))
_PROBE = "import sys; print(sys.implementation.cache_tag)"
_PROBE_TIMEOUT_S: Final = 30.0  # an interpreter's start on a loaded machine; seconds at worst


class AgentRuntimeError(MaxwellError):
    """No Python that every uid may run, with Maxwell importable, can be made on this machine."""


class MissingPackageError(AgentRuntimeError):
    """A distribution the agents import is not installed where this process imports from."""

    def __init__(self, package: str) -> None:
        super().__init__(f"{package} is not installed, and Maxwell's agents import it")
        self.package = package


@dataclass(frozen=True)
class AgentRuntime:
    """An interpreter any uid may run (`python`), a copy of Maxwell and its agents' imports any
    uid may read (`path`), and the command that runs the one with the other (`command`)."""

    python: str
    path: Path
    command: tuple[str, ...]


@contextlib.contextmanager
def agent_runtime(
    packages: Sequence[str] = SAMPLE_PACKAGES, *, user: RunAs = STRANGER
) -> Iterator[AgentRuntime]:
    """A fresh copy of Maxwell and `packages` in a temporary directory, with an interpreter
    `user` may run (`public_python`); the copy is removed on the way out. `AgentRuntimeError`
    where no such interpreter exists or `user` cannot reach the temporary directory."""
    python = public_python(user)  # before copying: refuse at once
    env = shutil.which("env")
    if env is None:
        raise AgentRuntimeError("env (coreutils) is missing: cannot set an agent's PYTHONPATH")
    root = Path(tempfile.mkdtemp(prefix=f"maxwell-runtime-{os.getpid()}-"))
    try:
        copy_runtime(root, packages)
        why = obstacle(user, root / "maxwell" / "__init__.py")
        if why is not None:
            raise AgentRuntimeError(
                f"a copy of Maxwell in {root} is beyond its agents' reach: {why}; set TMPDIR to "
                "a directory every user may pass"
            )
        yield AgentRuntime(python, root, (env, f"PYTHONPATH={root}", python))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def copy_runtime(root: Path, packages: Iterable[str], optional: Iterable[str] = ()) -> None:
    """Maxwell (the package this process imports) and the distributions of the top-level
    modules `packages` and, where installed, `optional`, copied into `root`; then `root` and
    all below it opened to every user (0755 directories, 0644 files). `MissingPackageError`
    names the first of `packages` that is not installed."""
    import maxwell

    shutil.copytree(Path(maxwell.__file__).parent, root / "maxwell", dirs_exist_ok=True)
    for name in packages:
        if not _copy_package(root, name):
            raise MissingPackageError(name)
    for name in optional:
        _copy_package(root, name)
    for directory, _subdirs, files in os.walk(root):
        os.chmod(directory, 0o755)
        for file in files:
            os.chmod(os.path.join(directory, file), 0o644)


def _copy_package(root: Path, name: str) -> bool:
    """The distribution that provides the importable top-level module `name`, copied into
    `root` (the module alone where no installed distribution lists its files); False where
    `name` cannot be imported."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return False
    # where it is imported from: its file, or each directory of a namespace package (`google`)
    places = [Path(spec.origin).resolve()] if spec.origin is not None else [
        Path(location).resolve() for location in spec.submodule_search_locations or ()
    ]  # fmt: skip
    copied = False
    for distribution in _distributions(name):
        base = Path(str(distribution.locate_file(""))).resolve()
        if any(base in place.parents for place in places):  # the one imported, not another
            copied = _copy_distribution(root, distribution, base) or copied
    if copied or spec.origin is None:
        return copied
    origin = places[0]
    if origin.name == "__init__.py":  # a package
        shutil.copytree(origin.parent, root / name, dirs_exist_ok=True)
    else:  # a module of one file
        shutil.copy2(origin, root / origin.name)
    return True


def _distributions(name: str) -> list[importlib.metadata.Distribution]:
    found = []
    for distribution_name in importlib.metadata.packages_distributions().get(name, []):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(importlib.metadata.distribution(distribution_name))
    return found


def _copy_distribution(
    root: Path, distribution: importlib.metadata.Distribution, base: Path
) -> bool:
    """Every file `distribution` installed beside its modules (`base`), copied into `root`:
    each top-level directory whole (what it compiled since included), each top-level file and
    each of its files in the shared `__pycache__` alone. False: it lists no files."""
    files = distribution.files
    if not files:
        return False
    directories: set[str] = set()
    for file in files:
        parts = file.parts
        if parts[0] == "..":  # scripts and data installed outside the modules' directory
            continue
        if len(parts) > 1 and parts[0] != "__pycache__":
            directories.add(parts[0])
        elif (base / file).is_file():
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(base / file, root / file)
    for directory in directories:
        if (base / directory).is_dir():
            shutil.copytree(base / directory, root / directory, dirs_exist_ok=True)
    return True


def public_python(user: RunAs = STRANGER) -> str:
    """An interpreter of this one's ABI that `user` can run (a stranger by default: then every
    uid can): this one, else `python3.X` or `python3` in /usr/local/bin, /usr/bin or /bin."""
    tag = sys.implementation.cache_tag
    for candidate in _candidates():
        if _cache_tag(user, candidate) == tag:
            return candidate
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    raise AgentRuntimeError(
        f"no Python {version} ({tag}) that uid {user.uid} may run: this one ({sys.executable}) "
        f"lies beyond its reach, and /usr/local/bin, /usr/bin and /bin hold none of that "
        f"version; install python{version} there"
    )


def _candidates() -> list[str]:
    """This interpreter, then the public ones of its version, each real file once."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found: dict[str, str] = {}
    paths = [sys.executable] + [
        os.path.join(directory, name)
        for directory in ("/usr/local/bin", "/usr/bin", "/bin")
        for name in (version, "python3")
    ]
    for path in paths:
        if path and os.path.isfile(path):
            found.setdefault(os.path.realpath(path), path)
    return list(found.values())


def _cache_tag(user: RunAs, python: str) -> str | None:
    """`python`'s cache tag, said by it run as `user` where this process is root (as itself
    otherwise); None where it does not run."""
    if obstacle(user, python, execute=True) is not None:
        return None
    probe = [python, "-I", "-c", _PROBE]
    command = setpriv_argv(user, probe) if os.geteuid() == 0 else probe
    try:
        said = subprocess.run(
            command, capture_output=True, text=True, cwd="/", env={"PATH": os.defpath},
            timeout=_PROBE_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return said.stdout.strip() if said.returncode == 0 else None

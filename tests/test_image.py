"""The container image can build: every locked package is made a wheel in a builder stage
that has a compiler (some, pdqhash 0.2.8 among them, are published as source only), and the
runtime stage installs only those wheels and has no compiler. No Docker daemon runs here, so
this reads the Dockerfile as Docker would: stage by stage, instruction by instruction."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPILERS = re.compile(r"\b(build-essential|g\+\+|gcc|clang)\b")


def stages() -> list[tuple[str, list[str]]]:
    """``(name, instructions)`` per ``FROM``, continuation lines joined, comments dropped."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    ))  # fmt: skip
    found: list[tuple[str, list[str]]] = []
    for line in filter(None, (line.strip() for line in joined.splitlines())):
        if line.upper().startswith("FROM "):
            words = line.split()
            found.append((words[3] if len(words) > 3 and words[2].upper() == "AS" else "", []))
        else:
            found[-1][1].append(line)
    return found


def test_a_builder_with_a_compiler_makes_a_wheel_of_every_locked_package() -> None:
    (builder, steps), *_ = stages()
    assert builder == "builder"
    assert any(s.startswith("RUN") and COMPILERS.search(s) for s in steps)
    assert any(re.search(r"pip wheel .*-r requirements\.lock", s) for s in steps)
    assert any(re.search(r"pip wheel .*--no-deps .* \.$", s) for s in steps)  # modstream


def test_the_runtime_installs_only_the_builders_wheels_and_has_no_compiler() -> None:
    *_, (_, steps) = stages()
    assert len(stages()) == 2
    assert not any(COMPILERS.search(s) for s in steps)
    installs = [s for s in steps if "pip install" in s]
    assert installs and all("from=builder" in s for s in installs)
    for command in (part for s in installs for part in s.split("&&") if "pip install" in part):
        assert "--no-index" in command and "--find-links /wheels" in command, command
    assert steps[-1].startswith("CMD") and any(s == "USER modstream" for s in steps)


def test_the_image_installs_the_lockfile_the_repository_keeps() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    assert re.search(r"^pdqhash==", lock, re.MULTILINE)  # the source-only one is locked
    assert "COPY requirements.lock" in " ".join(s for _, steps in stages() for s in steps)

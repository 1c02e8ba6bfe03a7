"""The documentation as written: every ```sh block of README.md and docs/*.md runs from the repo
root with the venv first on PATH, each in a directory of its own, and docs/configuration.md
describes every key of the packaged config."""

import re
import tomllib

import pytest

from tests.conftest import ROOT, run_example

# docs/knowledge.md runs its own blocks (tests/test_knowledge_doc.py).
OWN_TEST = {"docs/knowledge.md"}

# Blocks that need root, a network, real hardware or a long build: (file, first line).
# They should not be fenced as ```sh; the lead decides how to re-fence them.
NOT_RUNNABLE = {
    # These run the executables `make dist` builds (minutes, both architectures).
    ("docs/install.md", "make dist"),
    (
        "docs/install.md",
        "install -D -m 0755 dist/posdiag-0.1.0-linux-x86_64 /tmp/posdiag-example/posdiag",
    ),
    (
        "docs/install.md",
        "/tmp/posdiag-example/posdiag config show > /tmp/posdiag-example/posdiag.toml",
    ),
    ("docs/install.md", "dpkg-deb --info dist/posdiag_0.1.0_arm64.deb"),
    # A benchmark: SeaweedFS, PostgreSQL and cgroups, 15 s per count of servers.
    ("docs/deployment.md", ".venv/bin/python bench/cluster.py"),
}


def sh_blocks() -> list[tuple[str, str]]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = []
    for path in files:
        name = str(path.relative_to(ROOT))
        if name in OWN_TEST:
            continue
        for script in re.findall(
            r"^```sh\n(.*?)^```",
            path.read_text(encoding="utf-8"),
            flags=re.DOTALL | re.MULTILINE,
        ):
            found.append((name, script))
    return found


def block_id(block: tuple[str, str]) -> str:
    name, script = block
    return f"{name}:{script.splitlines()[0][:40]}"


@pytest.mark.parametrize("block", sh_blocks(), ids=block_id)
def test_every_shell_example_runs_as_written(block, tmp_path):
    name, script = block
    if (name, script.splitlines()[0]) in NOT_RUNNABLE:
        pytest.skip("needs root, a network, real hardware or a long build")
    proc = run_example(script, tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_no_example_that_runs_uses_a_fixed_path_in_tmp():
    """What a fixed /tmp path holds depends on earlier runs, and two runs collide: an example
    makes its own directory (`mktemp -d`)."""
    knowledge = re.findall(r"```sh\n(.*?)```", (ROOT / "docs/knowledge.md").read_text(encoding="utf-8"), flags=re.S)
    runnable = [s for n, s in sh_blocks() if (n, s.splitlines()[0]) not in NOT_RUNNABLE] + knowledge
    assert len(runnable) > 10
    assert [s.splitlines()[0] for s in runnable if "/tmp/" in s] == []


def key_paths(table: dict, prefix: str = "") -> list[str]:
    """Dotted paths of every key; the keys of an array of tables are under the array's path."""
    paths = []
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if (
            isinstance(value, list)
            and value
            and all(isinstance(v, dict) for v in value)
        ):
            for item in value:
                paths += key_paths(item, path)
        elif isinstance(value, dict) and value:
            paths += key_paths(value, path)
        else:
            paths.append(path)
    return sorted(set(paths))


def sections(doc: str) -> dict[str, str]:
    """Text under each heading that names a table (`## [server.fleet] ...`), by table."""
    out: dict[str, str] = {}
    for part in re.split(r"^(?=#{2,4} )", doc, flags=re.MULTILINE):
        heading = re.match(r"#{2,4} \[\[?([a-z_.]+)\]", part)
        if heading:
            out[heading.group(1)] = part
    return out


def test_configuration_md_describes_every_key_of_the_packaged_config():
    packaged = tomllib.loads(
        (ROOT / "config" / "posdiag.toml").read_text(encoding="utf-8")
    )
    described = sections(
        (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    )
    missing = []
    for path in key_paths(packaged):
        table, _, key = path.rpartition(".")
        if f"`{key}`" not in described.get(table, ""):
            missing.append(path)
    assert missing == []

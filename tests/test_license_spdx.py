"""License strings are parsed as SPDX expressions, not matched.

``OR`` releases a row when one operand allows the release, ``AND`` when all do, ``WITH`` keeps
its exception; GPL/LGPL/AGPL/MPL on data get ``license:copyleft_software``; an unversioned
``CC-BY`` is ``license:version_unspecified`` unless the source manifest's ``license_map`` says
which version, and then ATTRIBUTION.md cites the source's string; hostile strings are rejected
rows with a reason. Each case is checked in the three places the issue names: the gate (its
output rows), a real release of a real run (decode + license gate on local Ray, then the
``granary release`` CLI), and ``granary licenses audit``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

from granary_pipe import audit, licenses
from granary_pipe.config import ConfigError
from granary_pipe.ingest.manifest import list_recordings
from granary_pipe.schema import SAMPLE_RATE_HZ, make_table
from granary_pipe.stages.license.gate import LicenseGate
from granary_pipe.units import apply_stage

# raw string -> (the row's license, the gate's reason; None = passes)
CASES = {
    "MIT OR Apache-2.0": ("MIT OR Apache-2.0", None),
    "CC-BY-4.0 AND CC0-1.0": ("CC-BY-4.0 AND CC0-1.0", None),
    "CC-BY-4.0 AND CC-BY-NC-4.0": ("CC-BY-4.0 AND CC-BY-NC-4.0", "license:CC-BY-NC-4.0"),
    "GPL-2.0-or-later": ("GPL-2.0-or-later", "license:copyleft_software"),
    "CC-BY": ("version_unspecified", "license:version_unspecified"),
    "Apache-2.0 WITH LLVM-exception": ("Apache-2.0 WITH LLVM-exception", None),
    "MIT OR": ("unparseable", "license:unparseable"),
}

HOSTILE = {
    "MIT OR": "unparseable", "(MIT OR Apache-2.0": "unparseable", "MIT)": "unparseable",
    "MIT AND AND CC0-1.0": "unparseable", "OR": "unparseable", "()": "unparseable",
    "MIT WITH Not-An-Exception": "unparseable", "MIT WITH": "unparseable",
    "(" * 60 + "MIT" + ")" * 59: "unparseable", "(" * 9 + "MIT" + ")" * 9: "unparseable",
    "": "unknown", "   ": "unknown", "MIT OR " * 500: "unknown",
    "MIT\x00 OR Apache-2.0": "unknown", "MIT\nOR\rApache-2.0": "unknown",
    "CC-BY-4.0 OR Made-Up-1.0": "unknown", "mit or apache-2.0": "unknown",
    "' OR '1'='1": "unknown", "CC-BY-4.0 WITH LLVM-exception OR": "unparseable",
}


# ----------------------------------------------------------------------------- the parse

@pytest.mark.parametrize("raw", list(CASES))
def test_each_case_gives_its_license_and_reason(raw):
    license, gate = CASES[raw]
    assert licenses.normalize(raw) == license
    assert licenses.reason(license) == (gate.split(":", 1)[1] if gate else None)
    assert licenses.allows_release(license) is (gate is None)


def test_or_and_with_decide_a_release_by_their_operands():
    assert licenses.compatible("MIT OR Apache-2.0", "Apache-2.0") and licenses.compatible("MIT OR Apache-2.0", "MIT")
    assert not licenses.compatible("MIT OR Apache-2.0", "CC-BY-4.0")  # no operand goes into CC-BY
    assert licenses.compatible("CC-BY-4.0 AND CC0-1.0", "CC-BY-4.0")
    assert not licenses.compatible("CC-BY-4.0 AND CC0-1.0", "CC0-1.0")  # the CC-BY part cannot
    assert not licenses.compatible("CC-BY-4.0 AND CC-BY-NC-4.0", "CC-BY-4.0")
    assert licenses.compatible("CC-BY-NC-4.0 OR CC0-1.0", "CC-BY-4.0")  # the CC0 branch
    assert licenses.reason("CC-BY-NC-4.0 OR CC-BY-ND-4.0") == "CC-BY-NC-4.0"
    assert licenses.compatible("Apache-2.0 WITH LLVM-exception", "Apache-2.0")
    assert licenses.normalize("(MIT OR Apache-2.0) AND CC0-1.0") == "(MIT OR Apache-2.0) AND CC0-1.0"
    assert licenses.normalize("SPDX-License-Identifier: mit OR apache-2.0") == "MIT OR Apache-2.0"  # ids in any case
    assert licenses.normalize("CC0 OR ODbL") == "CC0-1.0 OR ODbL-1.0"  # registry aliases as operands
    # a release license is one registry id, never an expression
    assert not licenses.compatible("MIT", "MIT OR Apache-2.0")


@pytest.mark.parametrize(("raw", "spdx"), [
    ("GPL-2.0-or-later", "GPL-2.0-or-later"), ("GPL-2.0+", "GPL-2.0-or-later"), ("GPL-3.0", "GPL-3.0-only"),
    ("GPL-3.0-only", "GPL-3.0-only"), ("LGPL-2.1", "LGPL-2.1-only"), ("LGPL-3.0-or-later", "LGPL-3.0-or-later"),
    ("AGPL-3.0-or-later", "AGPL-3.0-or-later"), ("MPL-2.0", "MPL-2.0"), ("MPL-1.1", "MPL-1.1"),
    ("GPL-2.0-only WITH Classpath-exception-2.0", "GPL-2.0-only WITH Classpath-exception-2.0"),
])
def test_software_copyleft_on_data_has_its_own_reason(raw, spdx):
    assert licenses.normalize(raw) == spdx
    assert licenses.reason(spdx) == "copyleft_software"
    assert "copyleft" in licenses.why_not(spdx)
    assert licenses.policy_of("GPL-2.0-or-later").name == "copyleft_software"  # the policy is the registry's
    assert "copyleft_software" in licenses.registry_path().read_text()


@pytest.mark.parametrize("raw", ["CC-BY", "CC BY", "cc-by", "CC-BY-SA", "CC BY-SA", "CC-BY-NC",
                                 "Creative Commons Attribution", "CC-BY AND CC0-1.0"])
def test_unversioned_creative_commons_is_not_promoted(raw):
    assert licenses.normalize(raw) == "version_unspecified"
    assert licenses.reason("version_unspecified") == "version_unspecified"
    assert "license_map" in licenses.why_not("version_unspecified")


def test_license_map_says_which_version():
    lmap = {"CC-BY": "CC-BY-3.0"}
    assert licenses.normalize("CC-BY", lmap) == "CC-BY-3.0"
    assert licenses.normalize("cc by", lmap) == "CC-BY-3.0"  # matched like an alias
    assert licenses.normalize("CC-BY AND CC0-1.0", lmap) == "CC-BY-3.0 AND CC0-1.0"  # and inside expressions
    assert licenses.normalize("CC-BY-SA", lmap) == "version_unspecified"  # only what it maps
    assert licenses.parse("CC-BY", lmap).mapped == (("CC-BY", "CC-BY-3.0"),)


def test_hostile_strings_are_rejected_with_a_reason_never_a_crash():
    for raw, verdict in HOSTILE.items():
        got = licenses.normalize(raw)
        assert got == verdict, (raw[:40], got)
        assert licenses.reason(got) == verdict
        assert "rejected license:" in licenses.explain(raw)
    assert licenses.parse("MIT OR").detail  # says why
    for thing in (None, 3, ["MIT"], {"license": "MIT"}, b"MIT"):
        assert licenses.normalize(thing) == "unknown"


def test_strings_that_resolved_before_resolve_the_same():
    for raw, spdx in [("CC-BY-4.0", "CC-BY-4.0"), ("CC BY 4.0", "CC-BY-4.0"), ("CC BY-SA 3.0", "CC-BY-SA-3.0"),
                      ("cc by-nc 4.0", "CC-BY-NC-4.0"), ("https://creativecommons.org/licenses/by/4.0/", "CC-BY-4.0"),
                      ("Creative Commons Attribution 4.0 International (CC BY 4.0)", "CC-BY-4.0"),
                      ("Apache License, Version 2.0", "Apache-2.0"), ("Public Domain", "public-domain"),
                      ("ODC-BY", "ODC-By-1.0"), ("openrail", "LicenseRef-OpenRAIL-M")]:
        assert licenses.normalize(raw) == spdx
    for spdx in licenses.ids():
        assert licenses.normalize(spdx) == spdx and licenses.reason(spdx) == (None if licenses.get(spdx).compliant
                                                                              else spdx)


# ----------------------------------------------------------------------------- the gate

def test_the_gate_rejects_each_case_with_its_reason():
    rows = [{"id": f"r{k}", "recording_id": f"r{k}", "license": licenses.normalize(raw), "duration_s": 1.0}
            for k, raw in enumerate(CASES)]
    out, stats = apply_stage(LicenseGate(), (make_table(rows, with_samples=True), {}))
    got = {r["id"]: r["drop_reason"] for r in out.to_pylist()}
    assert got == {f"r{k}": gate for k, (_, gate) in enumerate(CASES.values())}
    assert stats["counts"]["license.gate"]["rejected"] == {"license": sum(1 for _, g in CASES.values() if g)}


# ----------------------------------------------------------------------------- the manifest

def _manifest(root: Path, lines: list[dict], **fields) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "l.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    path = root / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "spdx", "license": "CC-BY-4.0", "listing": "l.jsonl", **fields}))
    return path


def test_ingest_applies_the_manifests_license_map(tmp_path):
    for name in ("a.wav", "b.wav", "c.wav"):
        (tmp_path / name).write_bytes(b"RIFF")
    path = _manifest(tmp_path, [{"path": "a.wav", "license": "CC-BY"}, {"path": "b.wav", "license": "CC-BY-SA"},
                                {"path": "c.wav", "license": "MIT OR Apache-2.0"}], license_map={"CC-BY": "CC-BY-3.0"})
    _, table = list_recordings(path)
    got = {r["audio_relpath"]: (r["license"], r["license_raw"]) for r in table.to_pylist()}
    assert got == {"a.wav": ("CC-BY-3.0", "CC-BY"), "b.wav": ("version_unspecified", "CC-BY-SA"),
                   "c.wav": ("MIT OR Apache-2.0", "MIT OR Apache-2.0")}


@pytest.mark.parametrize("to", ["CC-BY", "CC-BY-9.0", "MIT OR Apache-2.0", "whatever"])
def test_a_license_map_to_no_versioned_id_is_an_error_naming_the_file(tmp_path, to):
    path = _manifest(tmp_path, [], license_map={"CC-BY": to})
    with pytest.raises(ConfigError) as info:
        list_recordings(path)
    assert str(path) in str(info.value) and "license_map" in str(info.value)
    assert "is not one versioned license id" in str(info.value)


# ----------------------------------------------------------------------------- a real run, release and audit

RUN_LINES = {  # file -> license as the source wrote it
    "or.wav": "MIT OR Apache-2.0", "and.wav": "CC-BY-4.0 AND CC0-1.0", "nc.wav": "CC-BY-4.0 AND CC-BY-NC-4.0",
    "gpl.wav": "GPL-2.0-or-later", "ccby.wav": "CC-BY", "ccbysa.wav": "CC-BY-SA",
    "with.wav": "Apache-2.0 WITH LLVM-exception", "bad.wav": "MIT OR", "paren.wav": "(CC0-1.0",
}
RUN_GATE = {"or.wav": None, "and.wav": None, "nc.wav": "license:CC-BY-NC-4.0", "gpl.wav": "license:copyleft_software",
            "ccby.wav": None, "ccbysa.wav": "license:version_unspecified", "with.wav": None,
            "bad.wav": "license:unparseable", "paren.wav": "license:unparseable"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real run (decode -> license gate, local Ray) over one tone per license string; the
    manifest maps CC-BY to CC-BY-3.0 and leaves CC-BY-SA unmapped."""
    from granary_pipe.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("spdx_run")
    corpus = root / "corpus"
    corpus.mkdir()
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ)).astype(np.float32)
    for name in RUN_LINES:
        sf.write(corpus / name, tone, SAMPLE_RATE_HZ)
    manifest = _manifest(corpus, [{"path": n, "license": lic, "lang": "en"} for n, lic in RUN_LINES.items()],
                         license_map={"CC-BY": "CC-BY-3.0"})
    pipeline = root / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "spdx", "units": {"recordings_per_unit": 20},
                                        "stages": [{"use": "audio.decode"}, {"use": "license.gate"}]}))
    run_pipeline(pipeline, manifest, root / "run", progress=False, num_cpus=2)
    return root / "run"


def _rows(run: Path, which: str) -> dict[str, dict]:
    out = {}
    for f in sorted(run.glob(f"units/u*/{which}.parquet")):
        for r in pq.read_table(f).to_pylist():
            out[r["audio_relpath"]] = r
    return out


def test_a_real_run_gates_each_case(run_dir):
    kept, rejected = _rows(run_dir, "kept"), _rows(run_dir, "rejected")
    assert set(kept) | set(rejected) == set(RUN_LINES) and not set(kept) & set(rejected)
    assert {n: rejected[n]["drop_reason"] if n in rejected else None for n in RUN_LINES} == RUN_GATE
    assert kept["ccby.wav"]["license"] == "CC-BY-3.0" and kept["ccby.wav"]["license_raw"] == "CC-BY"
    assert kept["with.wav"]["license"] == "Apache-2.0 WITH LLVM-exception"


def test_a_real_release_goes_by_the_operands(run_dir, tmp_path, capsys):
    from granary_pipe import cli

    rel = tmp_path / "rel"
    assert cli.main(["release", str(run_dir), "--out", str(rel), "--formats", "parquet", "-q"]) == 0
    info = json.loads((rel / "release.json").read_text())
    assert info["licenses"] == {"Apache-2.0 WITH LLVM-exception": 1, "CC-BY-3.0": 1, "CC-BY-4.0 AND CC0-1.0": 1,
                                "MIT OR Apache-2.0": 1}
    released = {r["license"] for f in rel.glob("parquet/*/*.parquet") for r in pq.read_table(f).to_pylist()}
    assert released == set(info["licenses"])
    attribution = (rel / "ATTRIBUTION.md").read_text()
    assert '- License: CC-BY-4.0' in attribution  # the manifest's own default
    assert '| CC-BY-3.0 (the source says "CC-BY") | 1 |' in attribution  # the mapped rows cite the source
    assert "| Apache-2.0 WITH LLVM-exception | 1 |" in attribution  # the exception is carried through
    # under a CC-BY-4.0 release: AND goes in (both operands may), OR of software licenses does not
    rel_by = tmp_path / "rel-by"
    assert cli.main(["release", str(run_dir), "--out", str(rel_by), "--formats", "parquet", "-q",
                     "--release-license", "CC-BY-4.0"]) == 0
    info = json.loads((rel_by / "release.json").read_text())
    assert info["licenses"] == {"CC-BY-3.0": 1, "CC-BY-4.0 AND CC0-1.0": 1}
    assert info["excluded"]["by_license"] == {"Apache-2.0 WITH LLVM-exception": 1, "MIT OR Apache-2.0": 1}
    capsys.readouterr()
    # the audit of the release shows the parse of each expression
    assert cli.main(["licenses", "audit", str(rel)]) == 0
    out = capsys.readouterr().out
    assert "'MIT OR Apache-2.0' -> MIT OR Apache-2.0 [MIT: ok; Apache-2.0: ok] -> released (OR: one suffices)" in out
    assert "'CC-BY-4.0 AND CC0-1.0' -> CC-BY-4.0 AND CC0-1.0 [CC-BY-4.0: ok; CC0-1.0: ok] -> released" in out


def test_licenses_audit_of_the_run_shows_the_parse_and_the_reasons(run_dir, capsys):
    from granary_pipe import cli

    assert cli.main(["licenses", "audit", str(run_dir)]) == 0  # rejected rows are not violations
    out = capsys.readouterr().out
    for reason in ("license:CC-BY-NC-4.0", "license:copyleft_software", "license:version_unspecified",
                   "license:unparseable"):
        assert reason in out, reason
    assert "CC-BY-4.0 AND CC-BY-NC-4.0 [CC-BY-4.0: ok; CC-BY-NC-4.0: non-commercial] -> rejected " \
           "license:CC-BY-NC-4.0 (AND: all must allow)" in out
    assert "'GPL-2.0-or-later' -> GPL-2.0-or-later [GPL-2.0-or-later: software copyleft license" in out
    assert "unparseable (the verdict of ingest; the source's strings are in the rows' license_raw) -> rejected " \
           "license:unparseable" in out
    report = audit.audit_path(run_dir)
    cells = {ln.license: ln for ln in report.lines}
    assert cells["unparseable"].rows_rejected == 2 and cells["version_unspecified"].rows_rejected == 1
    assert cells["MIT OR Apache-2.0"].rows_kept == 1


def test_licenses_audit_of_the_manifest_shows_what_the_source_wrote(run_dir, capsys):
    from granary_pipe import cli

    manifest = run_dir.parent / "corpus" / "m.yaml"
    assert cli.main(["licenses", "audit", str(manifest)]) == 1  # unversioned and unparseable strings
    out = capsys.readouterr().out
    assert "'CC-BY' -> CC-BY-3.0 (license_map: 'CC-BY' read as CC-BY-3.0) [CC-BY-3.0: ok] -> released" in out
    assert "'CC-BY-SA' -> version_unspecified" in out and "-> rejected license:version_unspecified" in out
    assert "'MIT OR' -> unparseable (OR requires two or more licenses" in out
    assert "'(CC0-1.0' -> unparseable (unbalanced parentheses" in out
    report = audit.audit_path(manifest)
    assert {v.license for v in report.violations} == {"unparseable", "version_unspecified"}
    assert any("copyleft" in n for n in report.notes)  # rejected by the gate: a note, not a violation


def test_attribution_cites_what_the_source_said_next_to_the_mapped_license():
    from granary_pipe.io.release_docs import attribution_md

    src = {"name": "yt", "license": "CC-BY", "license_map": {"CC-BY": "CC-BY-3.0", "CC BY-SA": "CC-BY-SA-3.0"}}
    text = attribution_md("run", None, [src], {"yt": {"CC-BY-3.0": [2, 7.0], "CC-BY-SA-3.0": [1, 3.0]}})
    assert '- License: CC-BY-3.0 (the source says "CC-BY"; read as CC-BY-3.0 by the license_map of its manifest)' \
        in text
    assert '- The source\'s "CC BY-SA" is read as CC-BY-SA-3.0 (license_map of its manifest)' in text
    assert '| CC-BY-3.0 (the source says "CC-BY") | 2 |' in text
    assert '| CC-BY-SA-3.0 (the source says "CC BY-SA") | 1 |' in text

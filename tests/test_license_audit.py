"""License registry (spellings, URLs, hostile strings), the compatibility matrix, model licenses,
and ``granary licenses audit`` on manifests, catalogs, runs and releases (exit codes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from granary_pipe import audit, licenses, models
from granary_pipe.io.release import build_release

try:
    from tests.helpers_rundir import Row, make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import Row, make_run

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "manifests" / "catalog"
DEMO = ROOT / "manifests" / "demo" / "demo.yaml"


# ----------------------------------------------------------------------------- normaliser

@pytest.mark.parametrize(("raw", "spdx"), [
    ("CC BY 4.0", "CC-BY-4.0"), ("cc-by-4.0", "CC-BY-4.0"), ("CC-BY 4.0 International", "CC-BY-4.0"),
    ("Creative Commons Attribution 4.0 International", "CC-BY-4.0"),
    ("Creative Commons Attribution 4.0 International License", "CC-BY-4.0"),
    ("Creative Commons Attribution 4.0 International (CC BY 4.0)", "CC-BY-4.0"),
    ("https://creativecommons.org/licenses/by/4.0/", "CC-BY-4.0"),
    ("http://creativecommons.org/licenses/by/4.0/legalcode", "CC-BY-4.0"),
    ("https://creativecommons.org/licenses/by/4.0/deed.de", "CC-BY-4.0"),
    ("creativecommons.org/licenses/by/4.0", "CC-BY-4.0"),
    ("License: CC BY 4.0", "CC-BY-4.0"), ("SPDX-License-Identifier: CC-BY-4.0", "CC-BY-4.0"),
    ("\u00a0CC\u00a0BY 4.0 ", "CC-BY-4.0"),  # non-breaking spaces from web pages
    ("ＣＣ ＢＹ ４.０", "CC-BY-4.0"),  # full-width forms: NFKC-equivalent to ASCII
    ("CC BY 3.0", "CC-BY-3.0"), ("cc-by-3.0", "CC-BY-3.0"), ("Creative Commons Attribution 3.0 Unported", "CC-BY-3.0"),
    ("CC BY 2.0", "CC-BY-2.0"), ("CC BY 2.5", "CC-BY-2.5"), ("https://creativecommons.org/licenses/by/2.5/", "CC-BY-2.5"),
    ("CC BY-SA 2.0", "CC-BY-SA-2.0"), ("CC BY-SA 2.5", "CC-BY-SA-2.5"), ("cc-by-sa-3.0", "CC-BY-SA-3.0"),
    ("https://creativecommons.org/licenses/by-sa/4.0/", "CC-BY-SA-4.0"),
    ("CC BY-NC-SA 4.0", "CC-BY-NC-SA-4.0"), ("CC BY-NC-SA 3.0", "CC-BY-NC-SA-3.0"), ("CC BY-NC-ND 3.0", "CC-BY-NC-ND-3.0"),
    ("https://creativecommons.org/licenses/by-nc/4.0/", "CC-BY-NC-4.0"), ("cc-by-nc-4.0", "CC-BY-NC-4.0"),
    ("cc0", "CC0-1.0"), ("CC 0", "CC0-1.0"), ("CC0 1.0 Universal", "CC0-1.0"),
    ("https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
    ("https://creativecommons.org/share-your-work/public-domain/cc0/", "CC0-1.0"),
    ("Public Domain", "public-domain"), ("public domain", "public-domain"),
    ("https://creativecommons.org/publicdomain/mark/1.0/", "public-domain"),
    ("ODC-BY", "ODC-By-1.0"), ("https://opendatacommons.org/licenses/by/1-0/", "ODC-By-1.0"),
    ("https://opendatacommons.org/licenses/pddl/1-0/", "PDDL-1.0"), ("ODbL", "ODbL-1.0"),
    ("CDLA-Permissive-2.0", "CDLA-Permissive-2.0"), ("https://cdla.dev/permissive-2-0/", "CDLA-Permissive-2.0"),
    ("Apache License, Version 2.0", "Apache-2.0"), ("https://www.apache.org/licenses/LICENSE-2.0.txt", "Apache-2.0"),
    ("apache-2.0", "Apache-2.0"), ("The MIT License", "MIT"), ("mit", "MIT"), ("https://opensource.org/licenses/MIT", "MIT"),
    ("openrail", "LicenseRef-OpenRAIL-M"), ("creativeml-openrail-m", "LicenseRef-OpenRAIL-M"),
    ("llama3.1", "LicenseRef-Llama-Community"), ("gemma", "LicenseRef-Gemma"),
])
def test_normalize_spellings_and_urls(raw, spdx):
    assert licenses.normalize(raw) == spdx


@pytest.mark.parametrize("raw", [
    "CC BY-ish", "free for research", "Kinda free, ask Bob", "research only", "non-commercial use", "CC BY 5.0",
    "All rights reserved", "proprietary",
    "other", "unknown", "TBD", "see LICENSE", "CC BY 4.0 (see LICENSE)", "CC BY 4.0 (CC BY-SA 4.0)",
    "CC BY 4.0 or CC0", "CC BY 4.0; CC0", "CC BY 4.0 and CC BY-NC 4.0",
    "https://creativecommons.org/licenses/by/3.0/de/",  # jurisdiction ports are other licenses
    "https://creativecommons.org/licenses/by/5.0/", "https://example.com/licenses/by/4.0/",
    "https://creativecommons.org.evil.example/licenses/by/4.0/", "creativecommons.org/licenses/by/4.0/../../nc",
    "CC ВY 4.0",  # Cyrillic В
    "CC BY 4.О",  # Cyrillic О in the version
    "СС0",  # Cyrillic С С
    "ϹϹ BY 4.0",  # Greek lunate sigma
    "CC\u200bBY 4.0", "CC BY 4.0\u200d", "CC-BY-4.0\x00", "CC BY\n4.0", "CC\tBY 4.0\r",
    "x" * 10_000, "CC BY 4.0 " * 100, "(" * 5000 + "CC0" + ")" * 5000,
    "<b>CC BY 4.0</b>", "<script>alert(1)</script>", "CC-BY-4.0'; DROP TABLE licenses;--", "' OR '1'='1",
    "${jndi:ldap://x}", "{{7*7}}", "../../etc/passwd", "null", "None", "[]", "{}", "0", "-", ".", "", "   ",
])
def test_unrecognised_and_hostile_strings_are_unknown(raw):
    assert licenses.normalize(raw) == licenses.UNKNOWN


@pytest.mark.parametrize("raw", [None, 4.0, 0, ["CC0"], {"license": "CC0"}])
def test_non_strings_never_match_by_accident(raw):
    # str() of these is not a license name; None is unknown by definition
    assert licenses.normalize(raw) == licenses.UNKNOWN


def test_every_registry_entry_is_documented_and_its_urls_normalise():
    data = yaml.safe_load(licenses.registry_path().read_text(encoding="utf-8"))["licenses"]
    for spdx, entry in data.items():
        assert str(entry.get("notes") or "").strip(), f"{spdx}: add notes"
        assert licenses.get(spdx).notes
        for url in entry.get("urls", []):
            assert licenses.normalize("https://" + url + "/") == spdx
            assert licenses.normalize("http://www." + url) == spdx


def test_model_registry_licenses_are_registry_ids():
    for m in models.MODELS.values():
        assert licenses.get(m.license) is not None, f"{m.name}: {m.license!r} is not in licenses/registry.yaml"
        assert licenses.allows_release(m.license), m.name
    assert licenses.get("CC-BY-SA-3.0").share_alike  # lid.176


# ----------------------------------------------------------------------------- compatibility

COMPATIBLE = [
    ("CC0-1.0", "CC-BY-4.0"), ("CC0-1.0", "CC-BY-SA-4.0"), ("CC0-1.0", "CC0-1.0"), ("public-domain", "CC-BY-3.0"),
    ("PDDL-1.0", "ODC-By-1.0"), ("CC0-1.0", "MIT"),
    ("CC-BY-4.0", "CC-BY-4.0"), ("CC-BY-3.0", "CC-BY-4.0"), ("CC-BY-2.0", "CC-BY-4.0"), ("CC-BY-2.5", "CC-BY-3.0"),
    ("CC-BY-3.0", "CC-BY-SA-3.0"), ("CC-BY-4.0", "CC-BY-SA-4.0"), ("CC-BY-2.0", "CC-BY-SA-4.0"),
    ("CC-BY-SA-3.0", "CC-BY-SA-4.0"), ("CC-BY-SA-4.0", "CC-BY-SA-4.0"), ("CC-BY-SA-2.0", "CC-BY-SA-3.0"),
    ("ODC-By-1.0", "ODC-By-1.0"), ("CDLA-Permissive-2.0", "CDLA-Permissive-2.0"), ("MIT", "MIT"),
]
INCOMPATIBLE = [
    ("CC-BY-4.0", "CC0-1.0"), ("CC-BY-4.0", "CC-BY-3.0"), ("CC-BY-4.0", "CC-BY-SA-3.0"), ("CC-BY-3.0", "CC-BY-2.5"),
    ("CC-BY-SA-4.0", "CC-BY-4.0"), ("CC-BY-SA-3.0", "CC-BY-4.0"), ("CC-BY-SA-4.0", "CC-BY-SA-3.0"),
    ("CC-BY-SA-3.0", "CC0-1.0"), ("ODC-By-1.0", "CC-BY-4.0"), ("CDLA-Permissive-2.0", "CC-BY-4.0"),
    ("MIT", "CC-BY-4.0"), ("Apache-2.0", "CC-BY-4.0"), ("ODbL-1.0", "CC-BY-SA-4.0"),
    ("CC-BY-NC-4.0", "CC-BY-4.0"), ("CC-BY-NC-4.0", "CC-BY-NC-4.0"), ("CC-BY-ND-4.0", "CC-BY-4.0"),
    ("CC-BY-NC-SA-4.0", "CC-BY-SA-4.0"), ("CC-BY-NC-ND-3.0", "CC-BY-4.0"), ("CC0-1.0", "CC-BY-NC-4.0"),
    ("unknown", "CC-BY-4.0"), ("CC-BY-4.0", "unknown"), ("CC BY 4.0", "CC-BY-4.0"), ("", "CC-BY-4.0"),
    ("LicenseRef-OpenRAIL-M", "CC-BY-4.0"), ("CC0-1.0", "LicenseRef-OpenRAIL-M"),
]


@pytest.mark.parametrize(("row", "release"), COMPATIBLE)
def test_compatible(row, release):
    assert licenses.compatible(row, release) is True


@pytest.mark.parametrize(("row", "release"), INCOMPATIBLE)
def test_incompatible(row, release):
    assert licenses.compatible(row, release) is False


def test_compatibility_matrix_is_consistent_with_the_registry():
    ids = licenses.ids()
    for a in ids:
        for b in ids:
            ok = licenses.compatible(a, b)
            if ok:
                assert licenses.allows_release(a) and licenses.allows_release(b)
                if licenses.get(a).share_alike:
                    assert licenses.get(b).share_alike, (a, b)
        if licenses.allows_release(a):
            assert licenses.compatible(a, a)


# ----------------------------------------------------------------------------- models

def test_audit_models():
    assert audit.audit_models({}) == []
    assert audit.audit_models({m: {"model_id": i.model_id, "license": i.license} for m, i in models.MODELS.items()}) == []
    v = audit.audit_models({"w": {"model_id": "x/whisper", "license": "MIT"}, "nc": {"license": "CC-BY-NC-4.0"},
                            "rail": {"license": "bigscience-openrail-m"}, "mystery": {"license": "free for research"},
                            "missing": {"model_id": "y"}})
    assert {x.name: x.license for x in v} == {"nc": "CC-BY-NC-4.0", "rail": "LicenseRef-OpenRAIL-M",
                                              "mystery": "unknown", "missing": "unknown (not recorded)"}
    assert "non-commercial" in str(next(x for x in v if x.name == "nc"))
    assert audit.audit_models({"a": "Apache-2.0", "b": "CC BY-NC-ND 4.0"})[0].name == "b"
    assert [x.name for x in audit.audit_models({"q": {"license": "llama3"}})] == ["q"]


# ----------------------------------------------------------------------------- runs

def test_clean_run_passes(tmp_path):
    report = audit.audit_path(make_run(tmp_path), release_license="CC-BY-4.0")
    assert report.kind == "run" and report.release_license == "CC-BY-4.0"
    assert report.ok and report.exit_code == 0
    cells = {(ln.source, ln.license): ln for ln in report.lines}
    assert cells[("synth-speech", "CC-BY-4.0")].rows_kept == 12 and cells[("synth-speech", "CC0-1.0")].rows_kept == 2
    assert cells[("synth-speech", "CC-BY-NC-4.0")].rows_kept == 0 and cells[("synth-speech", "CC-BY-NC-4.0")].rows_rejected == 2
    text = audit.format_report(report)
    assert "CC-BY-NC-4.0" in text and "OK: no violation" in text and "BY - NC -" in text
    assert json.loads(audit.to_json(report))["ok"] is True


def _run_with(tmp_path, rows, **run_json):
    run = make_run(tmp_path, {"u000000": rows}, uncommitted={}, failed={})
    if run_json:
        info = json.loads((run / "run.json").read_text())
        info.update(run_json)
        (run / "run.json").write_text(json.dumps(info))
    return run


@pytest.mark.parametrize(("lic", "reason"), [
    ("CC-BY-NC-4.0", "non-commercial"), ("unknown", "unknown license"), ("CC-BY-ND-4.0", "no-derivatives"),
    ("CC-BY-SA-4.0", "cannot go into a CC-BY-4.0 release"),
])
def test_kept_rows_under_a_forbidden_license_are_violations(tmp_path, lic, reason):
    run = _run_with(tmp_path, [Row("r1-s0", "r1", "en", 1.0), Row("r2-s0", "r2", "en", 2.0, license=lic)])
    report = audit.audit_path(run, release_license="CC-BY-4.0")
    assert report.exit_code == 1
    (v,) = report.violations
    assert v.kind == "rows" and v.license == lic and v.rows == 1 and reason in v.reason
    assert "1 violation" in audit.format_report(report)


def test_model_under_nc_license_fails_the_run(tmp_path):
    run = _run_with(tmp_path, [Row("r1-s0", "r1", "en", 1.0)], models={
        "whisper-large-v3": {"name": "whisper-large-v3", "model_id": "openai/whisper-large-v3", "license": "MIT"},
        "seamless": {"name": "seamless", "model_id": "facebook/seamless-m4t-v2-large", "license": "CC-BY-NC-4.0"}})
    report = audit.audit_path(run)
    assert report.exit_code == 1 and [v.name for v in report.violations] == ["seamless"]
    assert {m.name: m.license for m in report.models} == {"whisper-large-v3": "MIT", "seamless": "CC-BY-NC-4.0"}


def test_release_license_and_unknown_release_license(tmp_path):
    run = _run_with(tmp_path, [Row("r1-s0", "r1", "en", 1.0, license="CC-BY-SA-4.0")])
    assert audit.audit_path(run, release_license="CC-BY-4.0").exit_code == 1
    assert audit.audit_path(run, release_license="CC-BY-SA-4.0").ok
    bad = audit.audit_path(run, release_license="Kinda free, ask Bob")
    assert bad.exit_code == 1 and bad.violations[0].kind == "release"


def test_run_without_release_license_checks_compliance_only(tmp_path):
    run = _run_with(tmp_path, [Row("r1-s0", "r1", "en", 1.0, license="CC-BY-SA-4.0")])
    report = audit.audit_path(run)
    assert report.release_license is None and report.ok


# ----------------------------------------------------------------------------- releases

def test_release_audit(tmp_path):
    rel_dir = tmp_path / "rel"
    build_release(make_run(tmp_path), rel_dir, progress=False)
    report = audit.audit_path(rel_dir)
    assert report.kind == "release" and report.ok, audit.format_report(report)
    assert sum(ln.rows_kept for ln in report.lines) == 14
    assert all(ln.seconds_kept and ln.seconds_kept > 0 for ln in report.lines)
    rel = json.loads((rel_dir / "release.json").read_text())
    rel["models"] = {"m": {"model_id": "x", "license": "CC-BY-NC-SA-4.0"}}
    rel["release_license"] = "CC-BY-NC-4.0"
    (rel_dir / "release.json").write_text(json.dumps(rel))
    bad = audit.audit_path(rel_dir / "release.json")
    assert bad.exit_code == 1 and {v.kind for v in bad.violations} >= {"model", "release"}


def test_release_without_shards_uses_release_json_counts(tmp_path):
    rel_dir = tmp_path / "rel"
    rel_dir.mkdir()
    (rel_dir / "release.json").write_text(json.dumps({
        "release_license": "CC-BY-4.0", "licenses": {"CC-BY-4.0": 3, "CC-BY-NC-4.0": 1},
        "shards": [{"path": "parquet/en/en-000000.parquet", "format": "parquet"}]}))
    report = audit.audit_path(rel_dir)
    assert report.exit_code == 1 and report.violations[0].license == "CC-BY-NC-4.0"
    assert any("missing" in n for n in report.notes) and any("no models" in n for n in report.notes)


# ----------------------------------------------------------------------------- manifests and the catalog

def test_demo_manifest_passes_and_reports_the_nc_file():
    report = audit.audit_path(DEMO)
    assert report.kind == "manifest" and report.ok, audit.format_report(report)
    assert {"CC-BY-4.0", "CC-BY-NC-4.0"} <= {ln.license for ln in report.lines}
    assert all(licenses.get(ln.license) for ln in report.lines)
    assert any("rejected by the license gate" in n for n in report.notes)


def test_manifest_with_unknown_or_nc_license(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "l.jsonl").write_text('{"path": "a.wav", "license": "free for research"}\n')
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nlicense: CC-BY-4.0\nlisting: l.jsonl\n")
    report = audit.audit_path(path)
    assert report.exit_code == 1 and "unrecognised" in report.violations[0].reason
    path.write_text("name: m\nlicense: CC BY-NC 4.0\naudio: '*.wav'\n")
    report = audit.audit_path(path)
    assert report.exit_code == 1 and report.violations[0].license == "CC-BY-NC-4.0"
    assert any("write the registry id" in n for n in report.notes)


def test_catalog_entry_and_catalog_dir(tmp_path):
    entry = audit.audit_path(CATALOG / "voxpopuli-unlabelled.yaml")
    assert entry.ok and entry.lines[0].rows_kept is None and entry.lines[0].seconds_kept == 383500 * 3600
    whole = audit.audit_path(CATALOG)
    assert whole.kind == "catalog" and whole.ok and len(whole.lines) == len(list(CATALOG.glob("*.yaml")))
    doc = yaml.safe_load((CATALOG / "librispeech.yaml").read_text())
    doc["license"] = "CC-BY-NC-4.0"
    bad = tmp_path / "nc.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert audit.audit_path(bad).exit_code == 1


def test_audit_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        audit.audit_path(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError):
        audit.audit_path(tmp_path)  # empty dir: no run.json, release.json or manifests


# ----------------------------------------------------------------------------- CLI

def _cli():
    """The CLI module; ``granary sources`` and ``granary licenses`` must be among its commands (a
    missing one fails here instead of skipping the tests that use it)."""
    from granary_pipe import cli

    sub = next(a for a in cli.build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"licenses", "sources"} <= set(sub.choices), sorted(sub.choices)
    return cli


def test_cli_licenses_audit_exit_codes(tmp_path, capsys):
    cli = _cli()
    assert cli.main(["licenses", "audit", str(make_run(tmp_path))]) == 0
    assert "OK: no violation" in capsys.readouterr().out
    bad = _run_with(tmp_path / "b", [Row("r1-s0", "r1", "en", 1.0, license="CC-BY-NC-4.0")])
    assert cli.main(["licenses", "audit", str(bad)]) == 1
    assert "1 violation" in capsys.readouterr().out
    assert cli.main(["licenses", "audit", "--json", str(bad)]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False
    assert cli.main(["licenses", "audit", "--release-license", "CC-BY-NC-4.0", str(make_run(tmp_path / "c"))]) == 1
    assert cli.main(["licenses", "audit", str(tmp_path / "missing")]) == 2


def test_cli_sources(capsys):
    cli = _cli()
    assert cli.main(["sources"]) == 0
    out = capsys.readouterr().out
    assert "voxpopuli-unlabelled" in out and "yodas2" in out and "compliant" in out

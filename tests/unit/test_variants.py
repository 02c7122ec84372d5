"""One variant table: every other list of variants or runtimes is derived from it, and a
technique module that disagrees with its row is caught."""

from __future__ import annotations

import re

import pytest

from service.cli import main
from service.engines import list_runtimes
from service.optimize.technique import TechniqueMismatch, get_technique
from service.variants import VARIANTS, get_variant, lineage, list_variants
from tests.support import ROOT


@pytest.mark.parametrize("name", list_variants())
def test_each_technique_module_keeps_the_contract_and_agrees_with_its_row(name):
    technique = get_technique(name)
    row = get_variant(name)
    assert set(technique.EXPORTERS) <= set(row.runtimes)
    assert set(row.runtimes) <= set(list_runtimes())


def test_a_module_that_disagrees_with_the_table_is_refused(monkeypatch):
    tensorrt = get_technique("tensorrt")
    monkeypatch.setattr(tensorrt, "EXPORTERS", {})  # lists tensorrt, cannot export it
    with pytest.raises(TechniqueMismatch, match=r"lists runtime.*tensorrt.*no exporter"):
        get_technique("tensorrt")
    quantized = get_technique("quantized")
    monkeypatch.setattr(quantized, "EXPORTERS", {"tensorrt": lambda *a: None})
    with pytest.raises(TechniqueMismatch, match="exports \\['tensorrt'\\]"):
        get_technique("quantized")


def test_a_module_without_the_contract_is_refused(monkeypatch):
    pruning = get_technique("pruned")
    monkeypatch.delattr(pruning, "preflight")
    with pytest.raises(TechniqueMismatch, match="does not implement the Technique contract"):
        get_technique("pruned")


def test_unknown_variant_lists_the_table():
    with pytest.raises(ValueError, match=f"known: {', '.join(VARIANTS)}"):
        get_variant("sparse")


def test_sources_and_teachers_come_before_what_is_made_from_them():
    # `make artifacts` builds in table order, so each source is there when it is needed
    order = list_variants()
    for row in VARIANTS.values():
        for needed in (row.source, row.teacher):
            assert needed is None or order.index(needed) < order.index(row.name), row.name
    assert lineage("baseline") == []
    assert lineage("distilled-quantized") == ["distilled", "baseline"]
    composed = get_variant("distilled-pruned")
    assert (composed.source, composed.teacher, composed.technique) == (
        "distilled",
        "baseline",
        "pruning",
    )


def test_densenet_list_prints_the_table(capsys):
    assert main(["list", "--cpu"]) == 0
    assert capsys.readouterr().out.split() == list_variants(cpu_only=True)
    assert main(["list"]) == 0
    assert capsys.readouterr().out.split() == list_variants()
    assert "tensorrt" not in list_variants(cpu_only=True)


def test_cli_choices_and_help_come_from_the_table(capsys):
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    help_text = capsys.readouterr().out
    for name, row in VARIANTS.items():
        assert re.search(rf"^{re.escape(name)}\s+\[{', '.join(row.runtimes)}\]", help_text, re.M)
    runtimes = re.search(r"--runtime \{([a-z,]+)\}", help_text)
    assert runtimes and runtimes.group(1).split(",") == list_runtimes()


def names_in(line: str) -> list[str]:
    return [n for n in VARIANTS if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", line)]


def test_the_makefile_asks_densenet_list_instead_of_listing_variants():
    makefile = (ROOT / "Makefile").read_text()
    assert "densenet list --cpu" in makefile
    listing = [line for line in makefile.splitlines() if len(names_in(line)) > 1]
    assert listing == []
    assert names_in("VARIANTS := baseline quantized pruned") == ["baseline", "quantized", "pruned"]

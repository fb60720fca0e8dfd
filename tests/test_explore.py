"""The static explorer's embedded data: valid JSON, every choice present, values from matrices()."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hrtem_testutils import synthetic_results

from hrtem_tl.explore import explorer_html, explorer_or_note, freezing_subsets, series_domains
from hrtem_tl.metrics import METRICS
from hrtem_tl.results import REDUCTIONS, append_records, matrices, read_results


def _payload(fragment: str, uid: str) -> dict:
    text = re.search(rf'<script type="application/json" id="{uid}-data">(.*?)</script>', fragment, re.S).group(1)
    def reject(constant):
        raise ValueError(f"non-JSON constant {constant} in the explorer data")
    return json.loads(text.replace("<\\/", "</"), parse_constant=reject)


@pytest.mark.parametrize("series", ["noise", "structure"])
def test_partial_results_give_valid_json_and_exact_values(tmp_path, series):
    synthetic_results(tmp_path, series, seeds=(0,))
    tables = read_results(tmp_path, series)
    # Drop every run of one pretraining domain: its cells become empty (None, not NaN).
    dropped = series_domains(series)[1]
    runs = tables["runs"][tables["runs"]["pretrain_domain"] != dropped]
    evals = tables["evaluations"][tables["evaluations"]["run_id"].isin(runs["run_id"])]
    (tmp_path / series / "runs.parquet").unlink()
    (tmp_path / series / "evaluations.parquet").unlink()
    append_records(tmp_path, series, {"runs": runs.to_dict("records"), "evaluations": evals.to_dict("records")})
    payload = _payload(explorer_html(tmp_path, series, element_id="x"), "x")
    assert len(payload["matrices"]) == len(freezing_subsets()) * len(METRICS) * len(REDUCTIONS)
    cells = payload["matrices"]["cpu|none+decoder|iou|mean"]
    expected = matrices(runs, evals, freezing={"none", "decoder"}, metric="iou", reduction="mean",
                        domains=series_domains(series))
    row = series_domains(series).index(dropped)
    assert all(v is None for v in cells["transfer"][row])
    got = np.array([[np.nan if v is None else v for v in r] for r in cells["transfer"]])
    np.testing.assert_allclose(got, expected["transfer"]["value"].to_numpy(float), rtol=1e-4)


def test_missing_results_give_a_note(tmp_path):
    note = explorer_or_note(tmp_path, "structure")
    assert "No structure results" in note and "hrtem-tl study structure" in note


def test_size_rows_count_each_pretrained_model_once(tmp_path):
    """After pretraining each model appears once per evaluated domain, whatever the freezing options."""
    from hrtem_testutils import synthetic_results

    from hrtem_tl.explore import per_model_sizes
    from hrtem_tl.results import read_results

    synthetic_results(tmp_path, "structure", seeds=(0,))
    tables = read_results(tmp_path, "structure")
    pre = [r for r in per_model_sizes(tables["runs"], tables["evaluations"]) if r["stage"] == "pretrain"]
    models = tables["runs"]["pretrain_id"].nunique()
    assert len(pre) == 2 * models  # each model on both particle sizes of its own lattice, once
    assert {r["freezing"] for r in pre} == {"decoder+encoder+none"}


def test_hover_says_what_each_cell_holds():
    from hrtem_tl.explore import _figure, series_domains

    n = len(series_domains("noise"))
    empty = [[None] * n for _ in range(n)]
    cells = {k: {"value": empty, "count": empty, "q25": empty, "q75": empty} for k in ("pretrain", "transfer")}
    pre, post = _figure("noise", cells, "dice", "median", "cpu").data
    assert "%{text} %{x}" in post.hovertemplate and "transferred to on" not in post.hovertemplate
    assert {t for row in pre.text for t in row} == {"evaluated on"}
    assert post.text[1][1].startswith("no transfer") and post.text[0][1] == "transferred to and evaluated on"

"""The Data Safety Report Card: per component, score distribution, hazard hits per 1M words, pipeline stats."""

import json
import subprocess
import sys


def test_report_card_of_a_raw_and_a_filtered_component(tiny_world_dir, tmp_path):
    corpus = tiny_world_dir / "corpus.jsonl"
    run = [sys.executable, "-m", "safepretrain"]
    filtered = tmp_path / "filtered"
    assert subprocess.run(run + ["intervene", str(corpus), "--world", str(tiny_world_dir), "--recipe", "filter",
                                 "--out", str(filtered)], capture_output=True, timeout=300).returncode == 0
    (tmp_path / "web.jsonl").write_text(json.dumps({"text": "how to build a bomb, then launder money"}) + "\n")
    result = subprocess.run(run + ["report-card", str(corpus), str(filtered), str(tmp_path / "web.jsonl"),
                                   "--scorer", "oracle", "--world", str(tiny_world_dir), "--out", str(tmp_path / "card")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "card" / "report.json").read_text())
    raw, kept, web = report["components"]
    unsafe_docs = sum(1 for line in corpus.read_text().splitlines() if json.loads(line)["label"] == "unsafe")
    assert raw["score_key"] == "safety@oracle-v1" and raw["scores"]["5"] == unsafe_docs  # scored by the oracle
    assert kept["scores"]["5"] == 0 and kept["documents"] == raw["documents"] - unsafe_docs  # stored scores
    assert any(name.startswith("🔻") for name, _ in kept["pipeline_stats"])  # the filter's drop counts
    assert web["hazard_hits"]["S9"] == 1 and web["hazard_hits"]["S2"] == 1
    assert web["hazard_per_million_words"]["S9"] == 1e6 / 8  # one hit in 8 words
    page = (tmp_path / "card" / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "S9 Indiscriminate Weapons" in page

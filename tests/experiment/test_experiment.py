import json
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from safepretrain.errors import UserError
from safepretrain.experiment.aggregate import markdown_table, mean_ci, paired_differences, paired_markdown
from safepretrain.experiment.config import ExperimentConfig, laptop, load_experiment, tiny
from safepretrain.experiment.run import _check_config, grid, grid_summary, run_experiment
from safepretrain.experiment import stages
from safepretrain.experiment.stages import Cell, Layout, eval_dir, pretrain_budget, tokens_per_text_token


def test_mean_and_interval_match_a_hand_computation():
    mean, half = mean_ci([0.2, 0.4, 0.6])
    # t(0.975, df=2) = 4.302653; sd = 0.2; half = 4.302653 * 0.2 / sqrt(3)
    assert mean == pytest.approx(0.4)
    assert half == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-5)
    single_mean, single_half = mean_ci([0.7])
    assert single_mean == 0.7 and math.isnan(single_half)


def test_cells_that_share_pretraining_share_one_model():
    cfg = ExperimentConfig(recipes=("raw", "posttrain-only", "srp", "srp-pretrain-only", "srp-mask"), seeds=(0,))
    layout = Layout(cfg)
    pretrained = {c.recipe: layout.pretrain(c) for c in grid(cfg)}
    assert pretrained["raw"] == pretrained["posttrain-only"]
    assert pretrained["srp"] == pretrained["srp-pretrain-only"] != pretrained["srp-mask"]
    assert layout.sft(Cell("srp", 0.0, 0)) != layout.sft(Cell("srp-pretrain-only", 0.0, 0))


def test_the_quick_preset_compares_six_recipes_on_four_pretrained_models():
    cfg = load_experiment(None, "quick", {})
    layout = Layout(cfg)
    assert len(cfg.recipes) == 6 and len({layout.pretrain(c) for c in grid(cfg)}) == 4


def test_the_paper_preset_runs_the_demo_s_grid_on_the_paper_world_with_a_25m_model():
    from safepretrain.train.models import count_parameters, preset_config

    cfg, demo = load_experiment(None, "paper", {}), load_experiment(None, "laptop", {})
    assert (cfg.recipes, cfg.seeds) == (demo.recipes, demo.seeds) and cfg.world_config(0).preset == "paper"
    assert 24e6 < count_parameters(preset_config(cfg.model, cfg.vocab_size)) < 25e6


def test_a_curriculum_start_does_not_apply_to_raw_pretraining():
    assert Cell("raw", 0.6, 0).effective_start == 0.0 and Cell("filter", 0.6, 0).effective_start == 0.6


def test_markup_comes_on_top_of_a_curriculum_s_text_budget(monkeypatch):
    """200 text tokens of safe-only data first, then 800 text tokens of SRP data with a quarter more markup."""
    monkeypatch.setattr(stages, "tokens_per_text_token", lambda *args: 1.25)
    cfg = ExperimentConfig(recipes=("srp",), seeds=(0,), curriculum_starts=(0.2,), pretrain_tokens=1000)
    budget, start = pretrain_budget(cfg, Cell("srp", 0.2, 0))
    assert budget == 1200 and start * budget == pytest.approx(200)
    assert pretrain_budget(replace(cfg, budget_counts_markup=True), Cell("srp", 0.2, 0)) == (1000, 0.2)


def test_the_grid_summary_counts_shared_pretrainings_once_and_says_which_are_done(tmp_path):
    """The demo's 9 recipes share pretraining: raw with posttrain-only, srp with srp-pretrain-only."""
    cfg = replace(laptop(), out=str(tmp_path / "demo"))
    cells, layout = grid(cfg), Layout(cfg)
    assert grid_summary(cfg, cells, layout) == (
        f"27 cells (9 recipes x 1 curriculum start x 3 seeds), 21 pretrained models (0 done), 2 processes -> {cfg.out}")
    model = layout.pretrain(Cell("posttrain-only", 0.0, 1)) / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    assert "21 pretrained models (1 done)" in grid_summary(cfg, cells, layout)


def test_a_late_curriculum_start_pretrains_on_safe_only_text_first_and_reports_the_start(tmp_path):
    import yaml

    cfg = replace(tiny(), out=str(tmp_path / "curriculum"), recipes=("srp",), curriculum_starts=(0.6,), until="base")
    results = run_experiment(cfg)
    pretrained = Layout(cfg).pretrain(grid(cfg)[0])
    config = yaml.safe_load((pretrained / "config.yaml").read_text())
    assert config["data"]["train"] == [str(Layout(cfg).corpus(0, "filter"))]
    assert config["data"]["intervened"] == [str(Layout(cfg).corpus(0, "reflect"))]
    # the start counts text: SRP's markup after it makes the run longer, so the start's share of it is below 0.6
    assert 0.4 < config["curriculum"]["start"] < 0.6
    last = json.loads((pretrained / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["intervention_dose"] == pytest.approx(1 - config["curriculum"]["start"], abs=0.1)
    assert "| srp | 0.6 |" in (results / "results.md").read_text()


def test_config_errors_name_the_field(tmp_path):
    bad = tmp_path / "exp.yaml"
    bad.write_text("preset: tiny\nrecipes: [raw, magic]\n")
    with pytest.raises(UserError, match="magic"):
        load_experiment(bad, None, {})
    bad.write_text("preset: tiny\nlearning_rate: 1\n")
    with pytest.raises(UserError, match="learning_rate"):
        load_experiment(bad, None, {})
    bad.write_text("preset: tiny\ncompare_to: filtr\n")
    with pytest.raises(UserError, match="compare_to.*filtr"):
        load_experiment(bad, None, {})
    bad.write_text("preset: tiny\nreflection_dropout: 1\n")
    with pytest.raises(UserError, match="reflection_dropout"):
        load_experiment(bad, None, {})
    bad.write_text("preset: tiny\nworkers: 0\n")
    with pytest.raises(UserError, match="workers"):
        load_experiment(bad, None, {})


def test_by_default_an_experiment_runs_a_job_per_usable_core_of_threads_each(monkeypatch):
    monkeypatch.setattr("safepretrain.experiment.config.usable_cores", lambda: 8)
    assert ExperimentConfig().worker_count() == 8
    assert ExperimentConfig(threads=4).worker_count() == 2
    assert ExperimentConfig(threads=16).worker_count() == 1
    assert ExperimentConfig(workers=3).worker_count() == 3  # asked for, whatever the cores


def test_safe_decoding_is_safe_beam_for_tags_and_the_asking_guard_where_it_ran():
    from safepretrain.experiment.aggregate import METRICS, _safe_decoder

    asked = next(m for m in METRICS if m.name == "held-out unsafe, prefill (safe dec.)")
    unasked = next(m for m in METRICS if m.name == "held-out unsafe, prefill (guard, unasked)")
    ran = {"greedy/prefill": {}, "reflect/prefill": {}}
    assert _safe_decoder(Cell("srp", 0.0, 0), ran, asked) == "reflect"
    assert _safe_decoder(Cell("srp", 0.0, 0), ran, unasked) == "greedy"
    assert _safe_decoder(Cell("srp", 0.0, 0), {"greedy/prefill": {}}, asked) == "greedy"  # an older evaluation
    assert _safe_decoder(Cell("tags", 0.0, 0), {"safebeam/prefill": {}}, asked) == "safebeam"


def test_the_table_puts_care_answered_under_prefill_beside_harm_served_under_prefill(tmp_path):
    """A guard that stops whatever follows a prefill serves no harm under it; only its utility there shows that."""
    from safepretrain.experiment.aggregate import MAIN_COLUMNS, PAIRED_COLUMNS, cell_values
    from safepretrain.io import write_json

    def utility(guarded: float, unguarded: float) -> dict:
        return {view: {"utility": {"by_patient": {"train": {"utility_accuracy": {"rate": rate}}}}}
                for view, rate in (("guarded", guarded), ("unguarded", unguarded))}

    cfg = replace(tiny(), out=str(tmp_path / "exp"), recipes=("srp",), seeds=(0,), until="post")
    cell = Cell("srp", 0.0, 0)
    write_json(eval_dir(cfg, cell, "pretrained") / "metrics.json", {"conditions": {}})
    write_json(eval_dir(cfg, cell, "post") / "metrics.json", {"conditions": {
        "reflect/direct": utility(0.98, 0.98), "reflect/prefill": utility(0.46, 0.96)}})
    values = cell_values(cfg, cell)
    assert values["utility, train patients (safe dec.)"] == 0.98
    assert values["utility, train patients, prefill (safe dec.)"] == 0.46
    assert math.isnan(values["utility after FT, train patients, prefill (safe dec.)"])  # no finetuning stage
    harm = MAIN_COLUMNS.index("held-out unsafe, prefill (safe dec.)")
    assert MAIN_COLUMNS[harm + 1] == "utility, train patients, prefill (safe dec.)"
    harm_after = MAIN_COLUMNS.index("held-out unsafe after FT, prefill (safe dec.)")
    assert MAIN_COLUMNS[harm_after + 1] == "utility after FT, train patients, prefill (safe dec.)"
    assert "utility, train patients, prefill (safe dec.)" in PAIRED_COLUMNS


def test_the_monitor_on_forced_decisions_is_reported_option_by_option(tmp_path):
    from safepretrain.experiment.aggregate import MAIN_COLUMNS, cell_values
    from safepretrain.io import write_json

    def flagged(harmful: float, safe: float) -> dict:
        return {"harmful_flagged": {"rate": harmful}, "safe_flagged": {"rate": safe}}

    cfg = replace(tiny(), out=str(tmp_path / "exp"), recipes=("srp",), seeds=(0,), until="post")
    cell = Cell("srp", 0.0, 0)
    write_json(eval_dir(cfg, cell, "pretrained") / "metrics.json", {"conditions": {}, "forced_decisions": {
        "heldout_unsafe": {"prefill": flagged(0.12, 0.14)}}})
    write_json(eval_dir(cfg, cell, "post") / "metrics.json", {"conditions": {}, "forced_decisions": {
        "heldout_unsafe": {"prefill": flagged(0.98, 0.96), "own": flagged(0.0, 0.02)},
        "utility": {"prefill": flagged(0.6, 0.6), "own": flagged(0.18, 0.0)}}})
    values = cell_values(cfg, cell)
    assert (values["forced held-out decisions flagged: harmful"], values["forced held-out decisions flagged: safe"]) \
        == (0.98, 0.96)  # a monitor that reads the shape: the safe option as often as the harmful one
    assert values["forced care decisions flagged: harmful, own shape"] == 0.18
    assert values["base: forced held-out decisions flagged: safe"] == 0.14
    assert math.isnan(values["after FT: forced held-out decisions flagged: harmful"])  # no finetuning stage here
    assert "forced held-out decisions flagged: safe" in MAIN_COLUMNS


def test_the_harmful_finetuning_attack_trains_on_seen_harm_complied_with_and_tables_say_so(monkeypatch):
    from safepretrain.experiment.aggregate import MAIN_COLUMNS, headline_columns
    from safepretrain.world.generate import HARMFUL_FILE

    trained = {}
    monkeypatch.setattr(stages, "train_stage", lambda kind, out, values, overrides: trained.update(values))
    cfg = replace(tiny(), finetune_attack="harmful")
    stages.finetune(cfg, Cell("srp", 0.0, 0))
    assert trained["data"]["train"] == [str(Layout(cfg).world(0) / HARMFUL_FILE)]
    columns = headline_columns("harmful", MAIN_COLUMNS)
    seen, held_out = "seen unsafe after FT (safe dec.)", "held-out unsafe after FT (safe dec.)"
    assert columns.index(seen) < columns.index(held_out) and held_out in MAIN_COLUMNS and seen not in MAIN_COLUMNS
    assert headline_columns("benign", MAIN_COLUMNS) == MAIN_COLUMNS
    rows = [{"recipe": "srp", "start": 0.0, "metric": "utility", "mean": 0.9, "ci95_half": 0.05}]
    assert "harmful finetuning attack" in markdown_table(rows, 3, ("utility",), attack="harmful")
    with pytest.raises(ValueError, match="finetune_attack"):
        replace(cfg, finetune_attack="evil")


def test_markdown_table_shows_mean_and_interval():
    rows = [{"recipe": "srp", "start": 0.0, "metric": "utility", "mean": 0.9, "ci95_half": 0.05, "values": []}]
    assert "| srp | 0.90 ± 0.05 |" in markdown_table(rows, 3, columns=("utility",))


def test_the_table_says_which_guard_gave_the_safe_decoding_numbers():
    rows = [{"recipe": "srp", "start": 0.0, "metric": "utility", "mean": 0.9, "ci95_half": 0.05, "values": []}]
    assert "verdict on the request asked" in markdown_table(rows, 3, columns=("utility",))
    older = markdown_table(rows, 3, columns=("utility",), asks_request=False)
    assert "verdict on the request" not in older and "asked for at each sentence end" in older


def test_the_table_says_when_every_world_was_trained_with_one_training_seed():
    rows = [{"recipe": "srp", "start": 0.0, "metric": "utility", "mean": 0.9, "ci95_half": 0.05, "values": []}]
    assert "each a new world and training seed" in markdown_table(rows, 3, columns=("utility",))
    assert "each a new world, all trained with seed 100" in markdown_table(rows, 3, ("utility",), training_seed=100)


PREFILL = "held-out unsafe, prefill (safe dec.)"


def test_paired_differences_compare_each_recipe_with_the_reference_in_its_own_world():
    per_cell = {Cell("filter", 0.0, s): {PREFILL: r} for s, r in zip((0, 1, 2), (0.59, 0.70, 0.04))}
    per_cell |= {Cell("srp", 0.0, s): {PREFILL: r} for s, r in zip((0, 1, 2, 3), (0.02, 0.00, 0.04, 0.5))}
    (row,) = paired_differences(per_cell, "filter", metrics=(PREFILL,))
    # world 3 has no filter cell; world 2 is a tie, neither lower nor higher
    assert row["differences"] == pytest.approx([-0.57, -0.70, 0.0]) and row["n_worlds"] == 3
    assert (row["lower"], row["higher"]) == (2, 0)
    # by hand: mean -0.42333, sd 0.372335, t(0.975, 2) = 4.302653
    assert row["mean"] == pytest.approx(-0.423333, abs=1e-6)
    assert row["ci95_half"] == pytest.approx(4.302653 * 0.372335 / math.sqrt(3), rel=1e-5)
    assert "| srp | -0.42 ± 0.92 (2/0) |" in paired_markdown([row], "filter")
    assert paired_differences(per_cell, "rewrite") == []


def test_a_curriculum_is_paired_with_the_reference_s_earliest_start():
    per_cell = {Cell("srp", start, 0): {PREFILL: rate} for start, rate in ((0.0, 0.02), (0.2, 0.15), (0.6, 0.45))}
    rows = paired_differences(per_cell, "srp", metrics=(PREFILL,))
    assert [(r["start"], round(r["mean"], 2)) for r in rows] == [(0.2, 0.13), (0.6, 0.43)]
    assert "| srp | 0.6 | +0.43 (0/1) |" in paired_markdown(rows, "srp")


def test_experiments_on_the_same_worlds_are_compared_cell_by_cell(tmp_path):
    import subprocess

    def results(name: str, cells: dict, **config) -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"experiment": {**ExperimentConfig(out=name).to_dict(), **config},
                                    "cells": {k: {PREFILL: v} for k, v in cells.items()}}))
        return str(path)

    def compare(*args):
        return subprocess.run([sys.executable, "-m", "safepretrain", "experiment", "compare", *args],
                              capture_output=True, text=True, timeout=120)

    main = results("main", {"srp/start0/seed0": 0.02, "srp/start0/seed1": 0.0})
    curriculum = results("cur", {"srp/start0.2/seed0": 0.02, "srp/start0.2/seed1": 0.16},
                         curriculum_starts=[0.2, 0.6], recipes=["srp"])
    done = compare(main, curriculum, "--to", "srp", "--out", tmp_path / "paired.md")
    assert done.returncode == 0, done.stderr
    assert "| srp | 0.2 | +0.08 ± 1.02 (0/1) |" in (tmp_path / "paired.md").read_text()

    other_world = results("other", {"srp/start0.6/seed0": 0.3}, world_preset="tiny")
    refused = compare(main, other_world, "--to", "srp")
    assert refused.returncode == 2 and "world_preset" in refused.stderr and "Traceback" not in refused.stderr
    twice = compare(main, main, "--to", "srp")
    assert twice.returncode == 2 and "srp/start0/seed0 is also in" in twice.stderr
    absent = compare(main, "--to", "filter")
    assert absent.returncode == 2 and "no cell of recipe 'filter'" in absent.stderr


def test_a_field_an_older_config_lacks_counts_as_its_default():
    from safepretrain.experiment.config import differing_fields, saved_defaults

    now = json.loads(json.dumps(ExperimentConfig().to_dict()))
    older = {k: v for k, v in now.items() if k != "recovery_chats"}  # saved before recovery chats existed
    assert differing_fields(older, now, defaults=saved_defaults()) == []
    assert differing_fields(older, {**now, "recovery_chats": 300}, defaults=saved_defaults()) == ["recovery_chats"]


def test_a_field_whose_default_changed_behaviour_counts_as_what_older_runs_did():
    from safepretrain.experiment.config import differing_fields, saved_defaults

    now = json.loads(json.dumps(ExperimentConfig().to_dict()))
    older = {k: v for k, v in now.items() if k != "reflect_on_request"}  # its guard never asked about the request
    assert differing_fields(older, now, defaults=saved_defaults()) == ["reflect_on_request"]
    assert differing_fields(older, {**now, "reflect_on_request": False}, defaults=saved_defaults()) == []


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    cfg = replace(tiny(), out=str(tmp_path_factory.mktemp("experiment")), recipes=("raw", "srp"))
    return cfg, run_experiment(cfg)


def test_the_probe_plot_draws_each_recipe_against_what_the_words_alone_give(tmp_path):
    from safepretrain.experiment.report import plot_probe_auroc

    per_cell = {Cell(r, 0.0, s): {"probe AUROC per layer": [0.5, 0.9, 1.0], "probe AUROC, bag of words": 1.0}
                for r in ("raw", "srp") for s in (0, 1)}
    assert plot_probe_auroc(per_cell, tmp_path / "probes.png")
    assert (tmp_path / "probes.png").read_bytes().startswith(b"\x89PNG")
    unmeasured = {c: {"probe AUROC per layer": None, "probe AUROC, bag of words": math.nan} for c in per_cell}
    assert not plot_probe_auroc(unmeasured, tmp_path / "none.png") and not (tmp_path / "none.png").exists()


def test_rate_error_bars_stop_at_zero_and_one_where_a_t_interval_over_three_worlds_passes_them():
    from safepretrain.experiment.report import _within_rates

    below, above = _within_rates([0.05, 0.5, 0.97], [0.2, 0.2, 0.2])
    assert below == pytest.approx([0.05, 0.2, 0.2]) and above == pytest.approx([0.2, 0.2, 0.03])


def test_the_rate_plot_leaves_out_the_stages_an_experiment_did_not_reach():
    from safepretrain.experiment.report import _reached

    rows = [{"recipe": "raw", "start": 0.0, "metric": "base", "mean": 0.4, "ci95_half": math.nan, "values": [0.4]},
            {"recipe": "raw", "start": 0.0, "metric": "post", "mean": math.nan, "ci95_half": math.nan, "values": []}]
    assert _reached(rows, [("base model", "base"), ("post-trained", "post")]) == [("base model", "base")]


def test_the_rate_plots_draw_from_aggregated_rows_with_wide_intervals(tmp_path):
    from safepretrain.experiment.report import plot_unsafe_rates, plot_utility_vs_safety

    metrics = ("base: held-out unsafe, train patients", "held-out unsafe (safe dec.)", "held-out unsafe, prefill",
               "held-out unsafe, prefill (safe dec.)", "held-out unsafe after FT (safe dec.)",
               "held-out unsafe after FT, prefill (safe dec.)", "utility, train patients (safe dec.)")
    rows = [{"recipe": r, "start": 0.0, "metric": m, "mean": 0.4, "ci95_half": 0.9, "n_seeds": 3,
             "values": [0.1, 0.4, 0.7]} for r in ("raw", "srp") for m in metrics]
    plot_unsafe_rates(rows, tmp_path / "rates.png")
    plot_utility_vs_safety(rows, tmp_path / "scatter.png")
    assert all((tmp_path / n).read_bytes().startswith(b"\x89PNG") for n in ("rates.png", "scatter.png"))


def test_a_two_recipe_experiment_runs_end_to_end(finished):
    cfg, results = finished
    for name in ("results.md", "results.csv", "results.json", "report.html", "unsafe_rates.png",
                 "utility_vs_safety.png"):
        assert (results / name).is_file(), name
    table = (results / "results.md").read_text()
    assert "| raw |" in table and "| srp |" in table
    report = (results / "report.html").read_text()
    assert report.index("Before the finetuning attack") < report.index("Every headline column")
    assert "| srp |" in (results / "paired.md").read_text()  # the tiny preset compares with raw
    for cell in grid(cfg):
        manifest = json.loads((Layout(cfg).cell(cell) / "manifest.json").read_text())
        assert manifest["cell"]["recipe"] == cell.recipe and manifest["sha256"]["sft_model"]
        assert manifest["trained_on"]["pretrained_model"]["torch_cpu_capability"]
        for stage in ("pretrained", "post", "finetuned"):
            metrics = json.loads((eval_dir(cfg, cell, stage) / "metrics.json").read_text())
            assert metrics["conditions"]["greedy/direct"]["guarded"]["heldout_unsafe"]["unsafe_action_rate"]["n"] == 8
            assert metrics["config"]["prompt_format"] == ("text" if stage == "pretrained" else "chat")
            # SRP's guard with reflections asked for: only for models that learned reflections
            assert ("reflect/prefill" in metrics["conditions"]) == (cell.recipe == "srp")
    srp_data = (Layout(cfg).corpus(0, "reflect")).read_text()
    assert "<|reflect|>" in srp_data and "<|unsafe|>" in srp_data
    trained = [p.parent.parent for p in Path(cfg.out, "models").glob("*/*/model/config.json")]
    assert len(trained) == 6  # raw and srp: pretrained, post-trained, attacked
    assert not [p for t in trained for p in (t / "checkpoints", t / "tokens") if p.exists()]  # only what is read


def test_the_terminal_prints_the_headline_numbers_in_tables_that_fit_80_columns(finished, capsys, monkeypatch):
    from rich.console import Console

    from safepretrain.experiment import cli

    cfg, results = finished
    monkeypatch.setattr(cli, "console", Console(width=80))  # as `make demo` piped to a file
    cli.print_results(results, cfg)
    printed = capsys.readouterr().out
    for title in ("before the finetuning attack", "after the finetuning attack", "against raw, world by world"):
        assert title in printed
    assert "harm: prefill" in printed and "Δ prefill after FT" in printed and "results.md" in printed
    assert max(len(line) for line in printed.splitlines()) <= 80 and "…" not in printed  # nothing cut


def test_terminal_tables_drop_what_the_experiment_did_not_reach():
    from safepretrain.experiment.aggregate import terminal_tables

    rows = [{"recipe": "filter", "start": 0.0, "metric": m, "mean": v, "ci95_half": math.nan}
            for m, v in (("base: held-out unsafe, train patients", 0.82), ("utility, train patients (safe dec.)",
                                                                            0.96))]
    rows += [{"recipe": "filter", "start": 0.0, "metric": m, "mean": math.nan, "ci95_half": math.nan}
             for m in ("held-out unsafe, prefill (safe dec.)", "held-out unsafe (safe dec.)",
                       "utility after FT, train patients (safe dec.)", "held-out unsafe after FT (safe dec.)",
                       "held-out unsafe after FT, prefill (safe dec.)")]
    [(title, head, body)] = terminal_tables(rows, paired=[])
    assert title == "before the finetuning attack" and head == ["recipe", "base: harm", "utility"]
    assert body == [["filter", "0.82", "0.96"]]


def test_the_status_of_a_finished_experiment_counts_every_job_done(finished):
    import subprocess

    from safepretrain.experiment.config import load_saved
    from safepretrain.experiment.status import experiment_status

    cfg, results = finished
    phases = experiment_status(load_saved(Path(cfg.out)))
    assert [p.phase for p in phases] == ["world", "tokenizer", "data", "pretrain", "eval base model", "post-train",
                                         "eval", "finetune attack", "eval after attack"]
    assert all(p.done == p.total > 0 and not p.started for p in phases)
    shown = subprocess.run([sys.executable, "-m", "safepretrain", "experiment", "status", cfg.out],
                           capture_output=True, text=True, env=os.environ | {"COLUMNS": "200"})
    assert shown.returncode == 0 and "2 cells (2 recipes x 1 curriculum start x 1 seed)" in shown.stdout
    assert f"results: {results / 'results.md'}" in shown.stdout


def test_the_status_says_how_far_each_begun_job_got(tmp_path):
    from safepretrain.experiment.config import load_saved
    from safepretrain.experiment.status import experiment_status

    cfg = replace(tiny(), out=str(tmp_path / "experiment"), until="post")
    Path(cfg.out).mkdir()
    (Path(cfg.out) / "experiment.json").write_text(json.dumps(cfg.to_dict()))
    training = Layout(cfg).pretrain(Cell("srp", 0.0, 0))
    training.mkdir(parents=True)
    record = {"step": 30, "total_steps": 600, "loss": 2.5, "lr": 1e-3, "tokens": 30 * 4096, "tokens_per_s": 7400.0}
    (training / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    evaluation = eval_dir(cfg, Cell("raw", 0.0, 0), "post")
    evaluation.mkdir(parents=True)
    (evaluation / "samples.jsonl").write_text('{"id": "a"}\n{"id": "b"}\n')

    phases = {p.phase: p for p in experiment_status(load_saved(Path(cfg.out)))}
    assert list(phases)[-1] == "eval"  # until: post
    assert phases["world"].done == phases["pretrain"].done == 0
    assert phases["pretrain"].started == (f"{training.name} seed0: step 30 of 600 (5%), 7,400 tokens/s, "
                                          "~5 min left",)  # 570 steps of 4,096 tokens at 7,400 tokens/s: 315 s
    assert phases["eval"].started == ("raw/start0/seed0: 2 samples written",)


def test_the_time_left_reads_in_the_unit_a_person_would_say():
    from safepretrain.experiment.status import time_left

    assert time_left(20) == "under a minute left"
    assert time_left(44 * 60) == "~44 min left"
    assert time_left(2.5 * 3600) == "~2.5 h left"


def test_the_status_of_a_folder_that_holds_no_experiment_says_so(tmp_path):
    import subprocess

    shown = subprocess.run([sys.executable, "-m", "safepretrain", "experiment", "status", str(tmp_path)],
                           capture_output=True, text=True)
    assert shown.returncode == 2 and "not an experiment folder (no experiment.json)" in shown.stderr
    assert "Traceback" not in shown.stderr


def test_an_export_holds_the_results_config_and_every_manifest_but_no_model(finished, tmp_path):
    from safepretrain.experiment.export import export_results

    cfg, results = finished
    files = export_results(Path(cfg.out), tmp_path / "published")
    names = {str(f.relative_to(tmp_path / "published")) for f in files}
    assert {"results.md", "results.json", "report.html", "experiment.json", "worlds/seed0-manifest.json",
            "cells/raw-start0-seed0-manifest.json", "cells/srp-start0-seed0-manifest.json"} <= names
    assert all(f.is_file() for f in files) and not any(f.suffix == ".safetensors" for f in files)
    assert (tmp_path / "published" / "results.md").read_text() == (results / "results.md").read_text()
    with pytest.raises(UserError, match="is not empty"):
        export_results(Path(cfg.out), tmp_path / "published")


def test_an_unfinished_experiment_is_not_exported(tmp_path):
    from safepretrain.experiment.export import export_results

    cfg = replace(tiny(), out=str(tmp_path / "experiment"))
    Path(cfg.out).mkdir()
    (Path(cfg.out) / "experiment.json").write_text(json.dumps(cfg.to_dict()))
    with pytest.raises(UserError, match="no results yet: its grid is not finished"):
        export_results(Path(cfg.out), tmp_path / "published")
    assert not (tmp_path / "published").exists()


def test_srp_reads_as_much_text_as_raw_and_trains_on_its_reflections_on_top(finished):
    import yaml

    cfg, _ = finished
    trained = {c.recipe: yaml.safe_load((Layout(cfg).pretrain(c) / "config.yaml").read_text())["max_tokens"]
               for c in grid(cfg)}
    markup = tokens_per_text_token(cfg, 0, "reflect")
    assert 1.05 < markup < 2  # reflections are a real share of SRP's tokens
    assert trained == {"raw": cfg.pretrain_tokens, "srp": round(cfg.pretrain_tokens * markup)}


def test_a_finished_experiment_recomputes_nothing(finished, monkeypatch):
    cfg, _ = finished

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr("safepretrain.train.trainer.train", must_not_run)
    monkeypatch.setattr("safepretrain.eval.medsafetyworld.evaluate_world", must_not_run)
    monkeypatch.setattr("safepretrain.world.generate.generate_world", must_not_run)
    run_experiment(cfg)


def test_a_changed_config_is_refused_rather_than_mixed(finished):
    cfg, _ = finished
    with pytest.raises(UserError, match="finetune_epochs"):
        run_experiment(replace(cfg, finetune_epochs=cfg.finetune_epochs + 1))


def test_the_guard_asks_for_the_request_verdict_only_where_post_training_taught_it():
    cfg = tiny()
    asks = {recipe: stages.eval_config(cfg, Cell(recipe, 0.0, 0), "post") for recipe in
            ("srp", "srp-mask", "posttrain-only", "srp-pretrain-only", "raw")}
    assert all(asks[r].reflect_on_request and "reflect" in asks[r].decoders for r in ("srp", "srp-mask", "posttrain-only"))
    assert "reflect" in asks["srp-pretrain-only"].decoders and not asks["srp-pretrain-only"].reflect_on_request
    assert "reflect" not in asks["raw"].decoders
    assert stages.eval_config(cfg, Cell("srp", 0.0, 0), "pretrained").prompt_format == "text"  # nothing asked there


def test_a_folder_saved_before_the_request_verdict_points_to_an_evaluation_variant(tmp_path):
    cfg = replace(tiny(), out=str(tmp_path))
    saved = {k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if k != "reflect_on_request"}
    (tmp_path / "experiment.json").write_text(json.dumps(saved))
    with pytest.raises(UserError, match="reflect_on_request.*only the evaluation changed.*--reuse-from"):
        _check_config(tmp_path, cfg, overwrite=False)
    _check_config(tmp_path, replace(cfg, reflect_on_request=False), overwrite=False)  # as it was: resumes


def test_more_seeds_or_workers_extend_an_experiment_instead_of_refusing_it(finished, tmp_path, monkeypatch):
    cfg, _ = finished
    copy = replace(cfg, out=str(tmp_path))
    _check_config(tmp_path, copy, overwrite=False)
    _check_config(tmp_path, replace(copy, seeds=(0, 1, 2), workers=copy.workers + 1), overwrite=False)
    assert json.loads((tmp_path / "experiment.json").read_text())["seeds"] == [0, 1, 2]

    monkeypatch.setattr("safepretrain.train.trainer.train", lambda *a, **k: pytest.fail("a finished stage ran"))
    run_experiment(replace(cfg, workers=cfg.workers + 1))
    # another reference only aggregates again; without it in the grid there is no paired table
    results = run_experiment(replace(cfg, compare_to="filter"))
    assert not (results / "paired.md").exists() and json.loads((results / "results.json").read_text())["paired"] == []
    run_experiment(cfg)


class _Recorder:
    """Jobs for a thread pool that note when each starts and ends and how many run at once."""

    def __init__(self):
        import threading

        self.events, self.running, self.most, self.lock = [], set(), 0, threading.Lock()

    def job(self, name, seconds):
        import time

        with self.lock:
            self.events.append(("start", name))
            self.running.add(name)
            self.most = max(self.most, len(self.running))
        time.sleep(seconds)
        with self.lock:
            self.running.discard(name)
            self.events.append(("end", name))
        return name

    def make(self, name, seconds=0.02, needs=()):
        from safepretrain.experiment.run import Job

        return Job(name, self.job, (name, seconds), Path(name), tuple(Path(n) for n in needs))

    def started(self):
        return [name for event, name in self.events if event == "start"]


def test_parallel_jobs_are_handed_out_one_at_a_time_so_that_an_interrupt_starts_no_new_one():
    from concurrent.futures import ThreadPoolExecutor

    from safepretrain.experiment.run import _in_flight

    jobs = _Recorder()
    batch = [jobs.make(f"job{n}") for n in range(6)]
    with ThreadPoolExecutor(max_workers=4) as pool:  # a pool with room for more than the limit
        assert sorted(result() for _, result in _in_flight(pool, batch, limit=2)) == [f"job{n}" for n in range(6)]
    assert jobs.most <= 2
    jobs.events.clear()
    with ThreadPoolExecutor(max_workers=4) as pool, pytest.raises(KeyboardInterrupt):
        for _ in _in_flight(pool, batch, limit=2):
            raise KeyboardInterrupt  # Ctrl-C while the first two run: the other four never start
    assert sorted(jobs.started()) == ["job0", "job1"]


def test_a_job_starts_once_what_it_needs_is_made_not_once_its_whole_phase_is():
    from concurrent.futures import ThreadPoolExecutor

    from safepretrain.experiment.run import _in_flight

    jobs = _Recorder()
    # two pretrainings, a slow and a quick one, then each model's evaluation (a later phase)
    batch = [jobs.make("pretrain slow", 0.3), jobs.make("pretrain quick"),
             jobs.make("eval slow", needs=["pretrain slow"]), jobs.make("eval quick", needs=["pretrain quick"])]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = [job.name for job, result in _in_flight(pool, batch, limit=2) if result()]
    order = jobs.events
    # the quick model is evaluated while the slow one still trains; nothing starts before what it needs ends
    assert order.index(("start", "eval quick")) < order.index(("end", "pretrain slow"))
    assert order.index(("end", "pretrain slow")) < order.index(("start", "eval slow"))
    assert sorted(done) == sorted(job.name for job in batch) and jobs.most <= 2


def test_a_job_whose_need_no_job_makes_is_refused_before_anything_runs():
    from concurrent.futures import ThreadPoolExecutor

    from safepretrain.experiment.run import _in_flight

    jobs = _Recorder()
    with ThreadPoolExecutor(max_workers=2) as pool, pytest.raises(ValueError, match="no job makes"):
        list(_in_flight(pool, [jobs.make("eval", needs=["pretrain"])], limit=2))
    assert not jobs.events


def test_a_log_gets_a_line_as_each_job_is_done_rather_than_bars_drawn_at_the_end():
    import io

    from rich.console import Console

    from safepretrain.experiment.run import _run_jobs

    jobs, log = _Recorder(), io.StringIO()
    phases = [("pretrain", [jobs.make("a", 0), jobs.make("b", 0)]), ("eval", [jobs.make("eval a", 0, needs=["a"])])]
    _run_jobs(phases, workers=1, console=Console(file=log, width=80))
    lines = log.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["pretrain 1/2 done: a", "pretrain 2/2 done: b",
                                                          "eval 1/1 done: eval a"]  # after the time since the start
    assert "━" not in log.getvalue() and jobs.started() == ["a", "b", "eval a"]


def test_with_several_gpus_each_worker_sees_the_next_one_in_turn(monkeypatch):
    from multiprocessing import Value

    from safepretrain.experiment import run

    monkeypatch.setattr(run, "_die_with_parent", lambda: None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # so that the variable is restored whatever the workers set
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    started, seen = Value("i", 0), []
    for _ in range(3):
        run.start_worker(("3", "5"), started)
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["3", "5", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    run.start_worker(("3",), started)  # one GPU: every worker uses it as it would anyway
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_a_spawned_worker_is_given_its_gpu_before_its_first_job():
    from safepretrain.experiment.run import worker_pool

    with worker_pool(1, ("3", "5")) as pool:
        assert pool.submit(os.getenv, "CUDA_VISIBLE_DEVICES").result() == "3"


def test_the_gpus_jobs_may_use_are_those_cuda_visible_devices_names(monkeypatch):
    import torch

    from safepretrain.experiment.run import visible_gpus

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == ("0", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 6")
    assert visible_gpus() == ("2", "6")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert visible_gpus() == ()


def test_every_need_of_the_demo_grid_is_made_by_a_job_of_an_earlier_phase():
    from safepretrain.experiment.config import laptop
    from safepretrain.experiment.run import experiment_phases

    cfg = replace(laptop(), curriculum_starts=(0.0, 0.2))
    made = set()
    for _, jobs in experiment_phases(cfg, grid(cfg)):
        assert all(set(job.needs) <= made for job in jobs)
        made |= {job.makes for job in jobs}
    assert len(made) == sum(len(jobs) for _, jobs in experiment_phases(cfg, grid(cfg)))  # each output made once


def test_a_world_change_applies_to_every_seed_and_a_bad_one_names_the_field(tmp_path):
    cfg = replace(tiny(), world={"goal_weights": [["care", 0.3], ["induce", 0.35], ["harm", 0.15], ["error", 0.2]]})
    assert dict(cfg.world_config(1).goal_weights)["induce"] == 0.35 and cfg.world_config(1).seed == 1
    bad = tmp_path / "exp.yaml"
    bad.write_text("preset: tiny\nworld: {n_drugz: 3}\n")
    with pytest.raises(UserError, match="n_drugz"):
        load_experiment(bad, None, {})
    bad.write_text("preset: tiny\nworld: {n_drugs: 2}\n")
    with pytest.raises(UserError, match="n_drugs must be at least"):
        load_experiment(bad, None, {})


def test_a_pilot_until_base_trains_and_evaluates_only_the_base_models(tmp_path):
    cfg = replace(tiny(), out=str(tmp_path / "pilot"), recipes=("filter",), until="base")
    results = run_experiment(cfg)
    cell = grid(cfg)[0]
    assert (eval_dir(cfg, cell, "pretrained") / "metrics.json").is_file()
    assert not Layout(cfg).sft(cell).exists()
    values = json.loads((results / "results.json").read_text())["cells"][cell.name]
    assert 0 <= values["base: held-out harmful option, train patients"] <= 1
    assert math.isnan(values["utility"])  # post-training did not run
    _check_config(Layout(cfg).root, replace(cfg, until="attack"), overwrite=False)  # a pilot may be continued


def test_a_tags_model_is_checked_for_knowing_its_tag_and_decoded_by_safe_beam_and_its_baseline(tmp_path):
    cfg = replace(tiny(), out=str(tmp_path / "pilot"), recipes=("tags",), until="base")
    results = run_experiment(cfg)
    evaluated = eval_dir(cfg, grid(cfg)[0], "pretrained")
    conditions = json.loads((evaluated / "metrics.json").read_text())["conditions"]
    assert {"greedy/prefill", "safebeam/prefill", "beam/prefill"} <= set(conditions)
    check = json.loads((evaluated / stages.TAG_CHECK).read_text())
    assert check["harmful_texts"] > 0 and check["benign_texts"] > 0
    values = json.loads((results / "results.json").read_text())["cells"][grid(cfg)[0].name]
    assert values["base: log P(tag) at its tags"] == check["tag_logprob"] < 0
    assert values["base: P(tag) harmful / safe text"] == check["harmful_to_benign"] > 0


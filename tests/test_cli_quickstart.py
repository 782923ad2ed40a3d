import json

from transformers import AutoModelForImageTextToText, AutoProcessor

from genrecal.cli import main


def test_zoo_build_and_data_cli(tmp_path, capsys):
    assert main(["zoo", "build", "--family", "smolvlm", "--size", "tiny", "--out", str(tmp_path / "m")]) == 0
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "m")
    assert type(model).__name__ == "SmolVLMForConditionalGeneration"
    assert type(AutoProcessor.from_pretrained(tmp_path / "m")).__name__ == "SmolVLMProcessor"
    assert main(["data", "easy-vqa", "--out", str(tmp_path / "d"), "--split", "test", "--limit", "10"]) == 0
    assert len(json.loads((tmp_path / "d" / "data.json").read_text())) == 10
    assert main(["zoo", "list"]) == 0
    assert "qwen2_vl" in capsys.readouterr().out


def test_zoo_unknown_family_is_a_clear_error(tmp_path, capsys):
    assert main(["zoo", "build", "--family", "paligemma", "--out", str(tmp_path / "m")]) == 2
    assert "unsupported" in capsys.readouterr().err


def test_quickstart_fast_runs_end_to_end(tmp_path, capsys):
    """The smoke-test budget of the README's first command; the full run is in README's figures."""
    res = main(["quickstart", "--fast", "--out", str(tmp_path / "qs")])
    out = capsys.readouterr().out
    assert res == 0
    summary = json.loads((tmp_path / "qs" / "quickstart.json").read_text())
    assert set(summary["models"]) == {"teacher", "student (pretrained)", "student (GenRecal)"}
    for name in ("teacher", "student-pretrained", "student-genrecal"):
        assert (tmp_path / "qs" / name / "model.safetensors").is_file()
    assert "easy-vqa test accuracy" in out and "student (GenRecal)" in out
    assert "question-only prior" in out and 0.0 <= summary["prior"]["accuracy"] <= 1.0


def test_quickstart_prior_is_the_most_frequent_train_answer_per_question(tmp_path):
    from genrecal.quickstart import question_only_prior

    def rec(q, a):
        return {"image": "i.png", "conversations": [{"from": "human", "value": f"<image>\n{q}"},
                                                    {"from": "gpt", "value": a}]}

    train = tmp_path / "train.json"
    train.write_text(json.dumps([rec("what shape?", "circle"), rec("what shape?", "circle"), rec("what shape?", "triangle"),
                                 rec("is it red?", "no")]))
    items = [("what shape?", "circle", "x"), ("what shape?", "triangle", "x"), ("is it red?", "no", "x"),
             ("what color?", "red", "x")]  # an unseen question counts as wrong
    assert question_only_prior(train, items)["accuracy"] == 0.5

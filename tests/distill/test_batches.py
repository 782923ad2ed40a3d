"""Lazy rendering: micro-batches come from a DataLoader in the training order; workers change nothing."""
import json

from safetensors.torch import load_file

from genrecal.cli import main
from genrecal.distill.batches import StepOrder, micro_batch
from genrecal.distill.config import DistillConfig


def test_step_order_is_the_training_order():
    cfg = DistillConfig(student="s", teacher="t", batch_size=2, grad_accum=3, seed=4)
    order = list(StepOrder(50, cfg, rank=1, world=2, start=7, steps=3))
    assert len(order) == 9
    assert order == [micro_batch(50, step, cfg, 1, 2, k) for step in (7, 8, 9) for k in range(3)]


def test_data_workers_give_the_same_run(zoo_dir, evqa_train, tmp_path):
    outs = []
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        assert main(["distill", "--teacher", zoo_dir("llava"), "--student", zoo_dir("qwen2_vl"), "--data", evqa_train,
                     "--out", str(out), "--max-steps", "3", "--batch-size", "4", "--lr", "1e-3", "--no-progress",
                     "--data-workers", workers]) == 0
        outs.append(out)
    a, b = (load_file(str(o / "student" / "model.safetensors")) for o in outs)
    assert all((a[k] == b[k]).all() for k in a)
    logs = [[json.loads(x)["loss"] for x in (o / "train_log.jsonl").read_text().splitlines()] for o in outs]
    assert logs[0] == logs[1]

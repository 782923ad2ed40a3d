"""The scenes benchmark's parts: data (gold and teacher answers), scoring, one training run in a child process.

`genrecal.experiments.quality_scenes` composes them; see its docstring for the benchmark itself.
"""
from __future__ import annotations

import json
import multiprocessing
import resource
import shutil
import time
from pathlib import Path

from genrecal.experiments.quality_runs import cache_key, say, train_run
from genrecal.experiments.quality_scenes_plan import ScenesPlan

SCENE_TOKENS, EASY_TOKENS = 48, 8  # longest generated answer when scoring: a 5-object description is ~30 tokens
SEEDS = {"teacher": 1, "pretrain": 2, "budget": 3, "test": 4, "unlimited": 5}
"""Scene generator seed per data set (+ 10 x plan.data_seed): disjoint scenes, test ones held out."""


# ---------------------------------------------------------------- data
def write_data(root: Path, name: str, plan: ScenesPlan, images: int) -> Path:
    """root/name/data.json: `images` scenes (3 questions each, phrasings mixed) plus a `plan.shapes_share` of
    single-shape easy-vqa-style images (genrecal.data.shapes, 2 questions each), shuffled; returns the file.
    The held-out `test` set is scenes only (easy-vqa's own test split is the second evaluation)."""
    import random

    from genrecal.data.scenes import write_scenes
    from genrecal.data.shapes import write_shapes

    out = root / name
    if (out / "data.json").exists():
        return out / "data.json"
    seed = SEEDS[name] + 10 * plan.data_seed
    n_shapes = 0 if name == "test" else round(images * plan.shapes_share)
    scenes_dir = write_scenes(out / "scenes", images - n_shapes, plan.questions_per_image, seed=seed)
    records = [{**r, "image": f"scenes/{r['image']}"} for r in json.loads((scenes_dir / "data.json").read_text())]
    if n_shapes:
        shapes_dir = write_shapes(out / "shapes", n_shapes, 2, seed=seed)
        records += [{**r, "image": f"shapes/{r['image']}",
                     "truth": {"kind": "exact", "answer": r["conversations"][1]["value"]}}
                    for r in json.loads((shapes_dir / "data.json").read_text())]
    random.Random(seed).shuffle(records)
    (out / "data.json").write_text(json.dumps(records, indent=1) + "\n")
    return out / "data.json"


def items(data: Path, limit: int | None = None) -> list[tuple[str, dict, str]]:
    """(question, truth, image path) of a data file's records (the first `limit`)."""
    records = json.loads(data.read_text())[:limit]
    return [(r["conversations"][0]["value"].replace("<image>", "").strip(), r["truth"], str(data.parent / r["image"]))
            for r in records]


def correct(prediction: str, truth: dict) -> bool:
    """Scene answers by the parsing scorer; easy-vqa-style ones (kind `exact`) by exact match."""
    from genrecal.data.scenes_scoring import score_answer
    from genrecal.data.scoring import exact_match

    return exact_match(prediction, truth["answer"]) if truth["kind"] == "exact" else score_answer(prediction, truth)


def easy_vqa_items(n: int) -> list[tuple[str, dict, str]]:
    from genrecal.data import load_easy_vqa_questions

    return [(q, {"kind": "exact", "answer": a}, str(p)) for q, a, p in load_easy_vqa_questions("test", limit=n, seed=0)]


def score(model_dir: str, scene_items: list, easy_items: list, desc: str = "eval") -> dict:
    """Accuracy on held-out scenes (overall, per question kind) and on easy-vqa's test split."""
    from genrecal.distill.evaluate import accuracy

    res = accuracy(model_dir, scene_items, progress=False, desc=desc, max_new_tokens=SCENE_TOKENS, correct=correct)
    hits: dict[str, list[bool]] = {}
    examples: dict[str, list] = {}
    for (q, truth, _), pred in zip(scene_items, res["predictions"]):
        hits.setdefault(truth["kind"], []).append(correct(pred, truth))
        if len(examples.setdefault(truth["kind"], [])) < 2:
            examples[truth["kind"]].append({"question": q, "prediction": pred, "correct": hits[truth["kind"]][-1]})
    out = {"accuracy": res["accuracy"], "n": res["n"],
           "by_kind": {k: round(sum(v) / len(v), 4) for k, v in sorted(hits.items())}, "examples": examples}
    if easy_items:
        easy = accuracy(model_dir, easy_items, progress=False, desc=f"{desc} easy-vqa", max_new_tokens=EASY_TOKENS,
                        correct=correct)
        out["easy_vqa"] = {"accuracy": easy["accuracy"], "n": easy["n"]}
    return out


def teacher_answer_data(teacher: str, gold: Path, out: Path, limit: int) -> tuple[Path, dict]:
    """Regime (b): the teacher's own greedy answers to the first `limit` gold prompts, as LLaVA JSON (same
    images and questions, answers replaced); returns (data file, {"accuracy" of those answers vs the truths}).

    Uses `genrecal data teacher-answers` (genrecal.distill.generate_answers: batched, resumable, the teacher's
    token ids kept) when it is there; otherwise generates here and keeps the text only."""
    records = json.loads(gold.read_text())[:limit]
    truths = [r["truth"] for r in records]
    try:
        from genrecal.distill.generate_answers import AnswerConfig, teacher_answers
    except ImportError:
        teacher_answers = None
    if teacher_answers is not None:
        prompts = gold.parent / f"prompts-{limit}.json"  # beside the gold file: image paths stay relative
        prompts.write_text(json.dumps(records))
        path = teacher_answers(AnswerConfig(teacher=teacher, data=str(prompts), out=str(out), batch_size=32,
                                            max_new_tokens=SCENE_TOKENS), progress=False)
        answered = json.loads(Path(path).read_text())
        hits = [correct(r["conversations"][-1]["value"], truths[r["prompt_record"]]) for r in answered]
        return Path(path), {"accuracy": sum(hits) / max(1, len(hits)), "n": len(hits), "tool": "teacher-answers"}
    return _answers_here(teacher, gold, out, records)


def _answers_here(teacher: str, gold: Path, out: Path, records: list[dict]) -> tuple[Path, dict]:
    from genrecal.distill.evaluate import accuracy

    if (out / "data.json").exists():
        return out / "data.json", json.loads((out / "label_accuracy.json").read_text())
    res = accuracy(teacher, items(gold, len(records)), progress=False, desc="teacher answers",
                   max_new_tokens=SCENE_TOKENS, correct=correct)
    out.mkdir(parents=True, exist_ok=True)
    answered = [{**r, "image": str((gold.parent / r["image"]).resolve()),
                 "conversations": [r["conversations"][0], {"from": "gpt", "value": p}]}
                for r, p in zip(records, res["predictions"]) if p.strip()]
    info = {"accuracy": res["accuracy"], "n": res["n"], "empty": len(records) - len(answered), "tool": "in-benchmark"}
    (out / "label_accuracy.json").write_text(json.dumps(info))
    (out / "data.json").write_text(json.dumps(answered, indent=1) + "\n")
    return out / "data.json", info


# ---------------------------------------------------------------- one run, in a child process
def run_in_child(spec: dict, result: Path, child=None) -> dict:
    """Train + score one run (spec: see `_child`, or `child(spec, result path)`, a module-level function) in a
    fresh spawned process, so its peak RSS is its own. Raises RuntimeError naming the run when the child fails."""
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=child or _child, args=(spec, str(result)))
    proc.start()
    proc.join()
    if proc.exitcode != 0 or not result.exists():
        raise RuntimeError(f"run {spec['name']} (seed {spec['seed']}) failed in its child process "
                           f"(exit code {proc.exitcode}); its log: {spec['run_dir']}")
    return json.loads(result.read_text())


def _child(spec: dict, result: str) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    run_dir = Path(spec["run_dir"])
    t0 = time.perf_counter()
    if spec["method"].startswith("gold"):
        from genrecal.experiments.quality_scenes_gold import GoldRun, train_gold

        if run_dir.exists():
            shutil.rmtree(run_dir)
        student = train_gold(GoldRun(**spec["gold"]))
    else:
        student, _, _ = train_run(run_dir, False, **spec["fields"])
    seconds = time.perf_counter() - t0
    peak_mb = peak_rss_mb()  # training only: scoring comes after
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(run_dir / "trainer", ignore_errors=True)
    scores = score(str(student), items(Path(spec["test"]), spec["test_limit"]),
                   _easy_cached(spec["easy_questions"]), spec["name"])
    record = {**{k: spec[k] for k in ("name", "method", "regime", "seed", "steps", "batch_size", "key")},
              **scores, "train_seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb, 1),
              **step_stats(run_dir / "train_log.jsonl"), "run_dir": str(run_dir)}
    Path(result).write_text(json.dumps(record, indent=2))


def peak_rss_mb() -> float:
    """This process's own peak resident set (MB): /proc's VmHWM, which starts afresh at exec. getrusage's
    ru_maxrss is not used where /proc exists: Linux carries it over from the forking parent through exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _easy_cached(n: int) -> list:
    return easy_vqa_items(n) if n else []


def step_stats(log: Path) -> dict:
    """Mean wall seconds per optimizer step (all logged steps), and the shuffled-question L_ar rise when logged."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    secs = [r["seconds"] for r in rows if "seconds" in r and "train_runtime" not in r]
    out = {"seconds_per_step": round(sum(secs) / len(secs), 4) if secs else None, "logged_steps": len(secs)}
    try:
        from genrecal.distill.diagnostics import shuffle_rise
    except ImportError:
        return out
    out["shuffle_rise"] = shuffle_rise(log) if log.exists() else None
    return out


def run_key(spec: dict) -> str:
    return cache_key({k: v for k, v in spec.items() if k not in ("run_dir", "threads", "key")})


def reuse_or_run(spec: dict, child=None) -> dict:
    """A finished run with the same key is reused (resumable full runs); otherwise train it (in `child`, see
    run_in_child)."""
    spec = {**spec, "key": run_key(spec)}
    done = Path(spec["run_dir"]).parent / f"{Path(spec['run_dir']).name}.result.json"
    if done.exists() and json.loads(done.read_text()).get("key") == spec["key"]:
        record = json.loads(done.read_text())
        say(f"{spec['regime']} {spec['name']} seed {spec['seed']}: {100 * record['accuracy']:.1f}% (reused)")
        return {**record, "reused": True}
    record = run_in_child(spec, done, child)
    say(f"{spec['regime']} {spec['name']} seed {spec['seed']}: {100 * record['accuracy']:.1f}% "
        f"(train {record['train_seconds']:.0f} s, {record['seconds_per_step']} s/step, {record['peak_rss_mb']:.0f} MB)")
    return {**record, "reused": False}

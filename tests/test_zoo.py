import hashlib
import subprocess
import sys


def _digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest(), (path / "tokenizer.json").read_text()


def test_zoo_build_is_reproducible_across_processes(tmp_path):
    """Same family + seed -> byte-identical weights and tokenizer, in fresh processes (hash seeds differ)."""
    for i in (1, 2):
        subprocess.run([sys.executable, "-m", "genrecal.cli", "zoo", "build", "--family", "llava", "--out",
                        str(tmp_path / f"m{i}")], check=True, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "genrecal.cli", "zoo", "build", "--family", "internvl", "--out",
                    str(tmp_path / "i1")], check=True, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "genrecal.cli", "zoo", "build", "--family", "internvl", "--out",
                    str(tmp_path / "i2")], check=True, capture_output=True, timeout=300)
    assert _digest(tmp_path / "m1") == _digest(tmp_path / "m2")
    assert _digest(tmp_path / "i1") == _digest(tmp_path / "i2")

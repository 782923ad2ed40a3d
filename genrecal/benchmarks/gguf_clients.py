"""llama.cpp's own clients on genrecal's GGUF pairs: llama-cpp-python's MTMDChatHandler, llama-mtmd-cli and
llama-server (OpenAI-style chat), the last two built from the pinned llama.cpp source by
scripts/build_llama_tools.sh.

    from genrecal.benchmarks.gguf_clients import LlamaServer, llama_tools, mtmd_chat_handler, mtmd_cli
    tools = llama_tools()                                       # bin/ path, or None (tools_missing() says why)
    mtmd_chat_handler("EXPORT/gguf", image, "What shape?", 8)   # {"text", "tokens", "prompt_text"} or {"error"}
    mtmd_cli(tools, "EXPORT/gguf", image, "What shape?", 8)     # {"text"} or {"error": its abort / error line}
    with LlamaServer(tools, "EXPORT/gguf") as server:           # 127.0.0.1, a free port, bounded requests
        server.chat(image, "What shape?", 8)                    # /v1/chat/completions with an image_url part
        server.complete(image, prompt_text, 8)                  # /completion on a raw prompt holding the marker

Every client is given the artifact dir exactly as genrecal-export wrote it (model.gguf + mmproj.gguf), renders the
prompt with the chat template in model.gguf (except `complete`) and decodes greedily; `genrecal_llamacpp` is the
reference (genrecal's own runtime). Token ids come back where the client exposes them (MTMDChatHandler through a
logits processor that only observes, the server through logprobs / return_tokens); the CLI prints text only.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MEDIA_MARKER = "<__media__>"  # libmtmd's default (mtmd_default_marker()); genrecal's runtime renders it
TOOLS = ("llama-mtmd-cli", "llama-server")


def cmake_flags() -> str:
    """The CPU flags scripts/llama_cmake_args.sh gives here (LLAMA_CMAKE_ARGS overrides, as in the build script)."""
    if "LLAMA_CMAKE_ARGS" in os.environ:
        return os.environ["LLAMA_CMAKE_ARGS"]
    done = subprocess.run(["bash", str(REPO / "scripts" / "llama_cmake_args.sh")], capture_output=True, text=True)
    return done.stdout.strip()


def tools_dir(flags: str | None = None) -> Path:
    """The cache folder scripts/build_llama_tools.sh builds into for these flags and the installed llama-cpp-python."""
    from genrecal.export.gguf.converter import cache_root, llama_cpp_version

    flags = cmake_flags() if flags is None else flags
    key = hashlib.sha256(f"{flags} {platform.machine()}".encode()).hexdigest()[:12]
    return cache_root() / f"llama-tools-{llama_cpp_version()}-{key}"


def tools_missing() -> str | None:
    """Why llama-mtmd-cli / llama-server cannot run here, or None."""
    from genrecal.errors import GenrecalError

    try:
        bin_dir = tools_dir() / "bin"
    except GenrecalError as exc:  # llama-cpp-python not installed
        return str(exc)
    absent = [t for t in TOOLS if not (bin_dir / t).is_file()]
    if absent:
        return (f"{', '.join(absent)} not built in {bin_dir.parent} "
                f"(run: nice -n 10 bash scripts/build_llama_tools.sh)")
    return None


def llama_tools() -> Path | None:
    """bin/ holding llama-mtmd-cli and llama-server for this llama-cpp-python and these flags, or None."""
    return None if tools_missing() else tools_dir() / "bin"


# ---- the clients ----
N_CTX = 2048  # every client's context: the zoo's split sizes put 17 x 16 image tokens in a prompt
CLI_TIMEOUT_S = 300
CLI_ATTEMPTS = 3
SERVER_START_S = 120
REQUEST_TIMEOUT_S = 300


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else "no message"


def _data_uri(image) -> str:
    import base64

    data = Path(image).read_bytes()
    kind = "png" if data[:4] == b"\x89PNG" else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def _messages(image, question: str) -> list[dict]:
    """One user turn, the image first (genrecal's and the HF processor's order), OpenAI style."""
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": _data_uri(image)}},
                                         {"type": "text", "text": question}]}]


def genrecal_llamacpp(pair, image, question: str, max_tokens: int, threads: int = 1) -> dict:
    """The reference: genrecal's own llama.cpp runtime (greedy) on the pair, and the prompt text it renders."""
    from genrecal.runtimes.llamacpp import LlamaCppRuntime

    with LlamaCppRuntime(pair, threads=threads) as rt:
        gen = rt.generate([image], question, max_new_tokens=max_tokens)
        prompt_text = rt.session.render(question, 1)
    return {"text": gen.text, "tokens": gen.token_ids, "prompt_tokens": gen.timing.tokens_in,
            "prompt_text": prompt_text}


def mtmd_chat_handler(pair, image, question: str, max_tokens: int, threads: int = 1) -> dict:
    """llama-cpp-python's own multimodal chat: Llama(chat_handler=MTMDChatHandler(mmproj)) + create_chat_completion
    with an image_url part, greedy (temperature 0, no repeat penalty). {"text", "tokens", "prompt_tokens",
    "prompt_text"} (tokens: the argmax of the logits its sampler saw at each step, up to its completion length)
    or {"error": llama.cpp's first error line, or the exception's}."""
    import numpy as np
    from llama_cpp import Llama, LogitsProcessorList
    from llama_cpp.llama_chat_format import MTMDChatHandler

    from genrecal.artifacts.gguf_pair.layout import MMPROJ_FILE, MODEL_FILE
    from genrecal.artifacts.gguf_pair.llama_log import captured_log

    seen: dict = {}

    class Handler(MTMDChatHandler):  # records the prompt text it builds (the rest is the library's own code)
        def _postprocess_template_text(self, text, image_urls, media_marker):
            seen["prompt_text"] = super()._postprocess_template_text(text, image_urls, media_marker)
            return seen["prompt_text"]

    picked: list[int] = []

    def record(input_ids, scores):  # observes, changes nothing
        picked.append(int(np.argmax(scores)))
        return scores

    pair = Path(pair)
    llm = None
    with captured_log() as log:
        try:
            llm = Llama(str(pair / MODEL_FILE), chat_handler=Handler(clip_model_path=str(pair / MMPROJ_FILE),
                        verbose=False), n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False)
            reply = llm.create_chat_completion(messages=_messages(image, question), max_tokens=max_tokens,
                                               temperature=0.0, repeat_penalty=1.0,
                                               logits_processor=LogitsProcessorList([record]))
        except Exception as exc:  # noqa: BLE001 - the client's own failure is the measurement
            return {"error": f"{type(exc).__name__}: {_first_line(exc)}", **seen}
        finally:
            if llm is not None:
                llm.close()
    errors = log.errors()
    usage = reply["usage"]
    # llama-cpp-python skips its max_tokens test while the text ends inside a UTF-8 character, so a model emitting
    # byte tokens runs past max_tokens (recorded); the first max_tokens are compared
    over = {"completion_tokens": usage["completion_tokens"]} if usage["completion_tokens"] > max_tokens else {}
    return {"text": reply["choices"][0]["message"]["content"], "tokens": picked[:min(usage["completion_tokens"],
            max_tokens)], "prompt_tokens": usage["prompt_tokens"], **over, **seen,
            **({"log_warnings": errors} if errors else {})}


def mtmd_cli(bin_dir, pair, image, question: str, max_tokens: int, threads: int = 1, jinja: bool = True) -> dict:
    """llama.cpp's llama-mtmd-cli, single turn, greedy (--temp 0), the GGUF's own chat template (--jinja; without
    it llama.cpp's built-in templates). {"text"} (stdout, the generated text) or {"error": its error line}."""
    from genrecal.artifacts.gguf_pair.layout import MMPROJ_FILE, MODEL_FILE

    pair = Path(pair)
    cmd = [str(Path(bin_dir) / "llama-mtmd-cli"), "-m", str(pair / MODEL_FILE), "--mmproj", str(pair / MMPROJ_FILE),
           "--image", str(image), "-p", question, "-n", str(max_tokens), "--temp", "0", "--seed", "0",
           "-t", str(threads), "-c", str(N_CTX), "-ngl", "0", "--no-warmup", *(["--jinja"] if jinja else [])]
    # The CLI prints through llama.cpp's asynchronous logger, whose singleton is leaked at exit on purpose (common/
    # log.cpp, llama.cpp #22142): on a busy machine the answer can be lost. Its last line ("\n\n") proves the rest
    # was printed (the logger is first in, first out); without it the run is repeated.
    for attempt in range(1, CLI_ATTEMPTS + 1):
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return {"error": f"llama-mtmd-cli ran over {CLI_TIMEOUT_S} s"}
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}: {_cli_error(proc.stderr.decode('utf-8', 'replace'))}"}
        if proc.stdout.endswith(b"\n\n"):
            break
    else:
        return {"error": f"llama-mtmd-cli exited 0 without printing its whole answer in {CLI_ATTEMPTS} runs "
                         "(its log is flushed asynchronously, llama.cpp #22142)"}
    # raw bytes, as genrecal's runtime decodes its own (a token may end inside a UTF-8 character); the CLI prints
    # "\n" before the answer and newlines after it, so trailing newlines are not compared (see same_text)
    text = proc.stdout.decode("utf-8", "replace").removeprefix("\n").rstrip("\n")
    return {"text": text, **({"cli_runs": attempt} if attempt > 1 else {})}


def same_text(client_text: str, genrecal_text: str) -> bool:
    """Greedy text equality where a client gives text only (the CLI frames its answer with newlines)."""
    return client_text.rstrip("\n") == genrecal_text.rstrip("\n")


def _cli_error(stderr: str) -> str:
    """The line that says what went wrong in llama.cpp's log (an assert, an error), else the last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for key in ("GGML_ASSERT", "error:", "failed", "Error", "not supported"):
        hits = [ln for ln in lines if key in ln]
        if hits:
            return hits[0][-300:]
    return lines[-1][-300:] if lines else "no output"


class LlamaServer:
    """llama.cpp's llama-server on 127.0.0.1 (a free port) serving one pair; use as a context manager.
    Every request is bounded (REQUEST_TIMEOUT_S, max_tokens); the process is stopped on exit."""

    def __init__(self, bin_dir, pair, threads: int = 1):
        from genrecal.artifacts.gguf_pair.layout import MMPROJ_FILE, MODEL_FILE

        pair = Path(pair)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [str(Path(bin_dir) / "llama-server"), "-m", str(pair / MODEL_FILE), "--mmproj",
                    str(pair / MMPROJ_FILE), "--host", "127.0.0.1", "--port", str(self.port), "-c", str(N_CTX),
                    "-t", str(threads), "-tb", str(threads), "-np", "1", "-ngl", "0", "--no-webui", "--no-warmup"]
        self.proc = None
        self.error = None
        self._log = None

    def __enter__(self):
        import tempfile
        import time

        self._log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.error = f"llama-server exited {self.proc.returncode}: {_cli_error(self.log())}"
                return self
            try:
                if self._get("/health", timeout=5).get("status") == "ok":
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        self.error = f"llama-server did not answer /health within {SERVER_START_S} s: {_cli_error(self.log())}"
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()

    def log(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def _get(self, path: str, timeout: float = REQUEST_TIMEOUT_S) -> dict:
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def _post(self, path: str, body: dict) -> dict:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")
            try:
                detail = json.loads(detail)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            return {"error": f"HTTP {exc.code}: {_first_line(detail)}"}
        except OSError as exc:  # the server died or timed out on the request
            gone = self.proc.poll() is not None
            return {"error": (f"llama-server exited {self.proc.returncode}: {_cli_error(self.log())}" if gone
                              else f"request failed: {exc}")}

    def chat(self, image, question: str, max_tokens: int) -> dict:
        """OpenAI-style /v1/chat/completions with an image_url part, greedy: {"text", "prompt_tokens",
        "prompt_text"} or {"error"}."""
        if self.error:
            return {"error": self.error}
        messages = _messages(image, question)
        got = self._post("/v1/chat/completions", {"messages": messages, "max_tokens": max_tokens, "temperature": 0,
                                                  "top_k": 1, "seed": 0, "cache_prompt": False, "logprobs": True})
        if "error" in got:
            return {"error": got["error"] if isinstance(got["error"], str) else _first_line(got["error"])}
        choice = got["choices"][0]
        out = {"text": choice["message"].get("content") or "",
               "prompt_tokens": got.get("usage", {}).get("prompt_tokens")}
        content = (choice.get("logprobs") or {}).get("content")
        if content is not None and all("id" in c for c in content):
            ids = [int(c["id"]) for c in content]
            # the server lists the end-of-generation token it stopped on; genrecal's runtime does not return it
            out["tokens"] = ids[:-1] if choice.get("finish_reason") == "stop" and ids else ids
        rendered = self._post("/apply-template", {"messages": messages})
        if "prompt" in rendered:  # the server draws a random media marker per process: shown as libmtmd's default
            out["prompt_text"] = re.sub(r"<__media_[A-Za-z0-9]+__>", MEDIA_MARKER, rendered["prompt"])
        return out

    def complete(self, image, prompt_text: str, max_tokens: int) -> dict:
        """/completion with a raw prompt (holding libmtmd's media marker) and the image: llama-server computing on
        exactly genrecal's prompt text, no chat template. {"text", "prompt_tokens"} or {"error"}."""
        import base64

        if self.error:
            return {"error": self.error}
        marker = self._get("/props").get("media_marker", MEDIA_MARKER)  # this process's random marker
        prompt = {"prompt_string": prompt_text.replace(MEDIA_MARKER, marker),
                  "multimodal_data": [base64.b64encode(Path(image).read_bytes()).decode()]}
        got = self._post("/completion", {"prompt": prompt, "n_predict": max_tokens, "temperature": 0, "top_k": 1,
                                         "seed": 0, "cache_prompt": False, "return_tokens": True})
        if "error" in got:
            return {"error": got["error"] if isinstance(got["error"], str) else _first_line(got["error"])}
        out = {"text": got.get("content", ""), "prompt_tokens": got.get("tokens_evaluated")}
        if isinstance(got.get("tokens"), list):
            ids = [int(t) for t in got["tokens"]]
            out["tokens"] = ids[:-1] if got.get("stop_type") == "eos" and ids else ids  # as chat() above
        return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

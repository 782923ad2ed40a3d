"""llama.cpp backend: a GGUF export dir (model.gguf + mmproj.gguf) run through llama-cpp-python.

    rt = LlamaCppRuntime("out/student-gguf", threads=4)
    gen = rt.generate([Image.open("cat.png")], "What shape is in the image?", max_new_tokens=16)
    print(gen.text, gen.timing.vision_encode_ms, gen.timing.decode_tok_s)

The dir is opened by its manifest (`load_manifest` refuses a file whose sha256 changed), the pair is
validated with gguf-py before llama.cpp touches it (a missing vision tensor would segfault), and the
prompt goes through libmtmd one chunk at a time (not `MTMDChatHandler`) so the vision encoder, prefill
and each decode step are timed apart. The prompt's text is tokenized here like the HF processor does it
(runtimes/prompt.py, genrecal.user_text: control tokens typed in a question stay text); libmtmd only
tokenizes each image, so its media marker in a question is ordinary text. llama.cpp's log is captured;
its errors go into the exceptions.
"""
from __future__ import annotations

import collections
import ctypes
import os
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from genrecal import user_text
from genrecal.artifacts.gguf_pair.llama_log import captured_log, missing_bindings
from genrecal.artifacts.manifest import load_manifest
from genrecal.runtimes import llamacpp_smoke, sysinfo
from genrecal.runtimes.base import (
    STOP_CONTEXT, STOP_EOS, STOP_MAX_NEW, TIMING_DEFINITION, DecodeClock, Generation, RuntimeError_, Stream, Timing,
    new_token_budget, stop_record,
)
from genrecal.runtimes.images import open_images
from genrecal.runtimes.prompt import prompt_segments

DEFAULT_CTX = 4096  # capped at the model's training context
TIMING_HOW = (TIMING_DEFINITION + "; here preprocess = chat template + tokenization + image resize + mtmd_tokenize "
              "(libmtmd's image preprocessing); vision_encode = mtmd_encode_chunk; prefill = llama_decode of text "
              "chunks + image embeddings; llama.cpp's own counter (t_eval_ms/n_eval) is extra.llama_perf_ms_per_token; "
              "peak_rss_mb = this process's high-water mark (getrusage)")


@dataclass
class Prefill:
    """The state right after the prompt: logits for the first new token and how the prompt was laid out."""

    logits: np.ndarray  # [n_vocab]
    layout: list[tuple[str, object]]  # ("text", [ids]) and ("image", n_embedding_rows), in prompt order
    image_embeds: list[np.ndarray]  # [n_rows, n_embd] per image (only with keep_image_embeds)
    preprocess_ms: float
    vision_ms: float = 0.0
    prefill_ms: float = 0.0

    @property
    def tokens_in(self) -> int:
        return sum(len(x) if kind == "text" else int(x) for kind, x in self.layout)


class LlamaCppSession:
    """model.gguf + mmproj.gguf loaded into llama.cpp; one greedy sequence at a time.

    It first runs llamacpp_smoke.ensure_decodes (a 2-token decode of the text model in a child process,
    once per file per process), so a native crash raises LlamaCppCrash instead of killing this process.

    `prompt` (from the manifest) says how to render and lay out a prompt like the HF processor.
    f32_kv keeps the KV cache in F32 (the default F16 cache alone moves logits by ~5e-3); the parity
    check uses it, the runtime keeps llama.cpp's default.
    """

    def __init__(self, model_path: Path, mmproj_path: Path, prompt, *, threads: int | None = None,
                 n_ctx: int | None = None, f32_kv: bool = False, verbose: bool = False):
        if missing := missing_bindings("llama_cpp", "gguf"):
            raise RuntimeError_(missing)
        from genrecal.artifacts.gguf_pair.validate import validate_pair

        self.facts = validate_pair(Path(model_path), Path(mmproj_path))  # before llama.cpp reads a byte
        if not self.facts.chat_template:
            raise RuntimeError_(f"{model_path} has no tokenizer.chat_template; re-export it")
        self.prompt, self.verbose = prompt, verbose
        self.where = str(Path(model_path).parent)  # the artifact dir, for messages
        self.threads = int(threads or os.cpu_count() or 1)
        # a native crash (e.g. a -march=native build's AMX path) in a child process becomes one clear line
        t0 = time.perf_counter()
        self.smoke = llamacpp_smoke.ensure_decodes(Path(model_path), self.threads)
        self.smoke_ms = (time.perf_counter() - t0) * 1e3  # not part of load_ms (base.TIMING_DEFINITION)
        self.n_ctx = min(int(n_ctx or DEFAULT_CTX), self.facts.context_length)
        self._mtmd = None
        self.llama = self._load_llama(Path(model_path), f32_kv)
        self._handles = [self.llama, None]
        self._finalizer = weakref.finalize(self, _free, self._handles)
        self._load_mtmd(Path(mmproj_path))
        self._handles[1] = self._mtmd

    def _load_llama(self, path: Path, f32_kv: bool):
        from llama_cpp import Llama

        kv = {"type_k": 0, "type_v": 0} if f32_kv else {}  # 0 = GGML_TYPE_F32
        with captured_log(self.verbose) as log:
            try:
                return Llama(str(path), n_ctx=self.n_ctx, n_batch=512, n_ubatch=512, n_threads=self.threads,
                             n_threads_batch=self.threads, n_gpu_layers=0, verbose=False, **kv)
            except ValueError as exc:
                raise RuntimeError_(f"llama.cpp could not load {path}: {log.errors() or exc}") from None

    def _load_mtmd(self, path: Path) -> None:
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd

        params = mtmd.mtmd_context_params_default()
        params.use_gpu, params.print_timings, params.n_threads = False, False, self.threads
        params.warmup = False  # warm-up encodes a large dummy image: seconds of work, nothing learned
        with captured_log(self.verbose) as log:
            self._mtmd = mtmd.mtmd_init_from_file(str(path).encode(), self.llama.model, params)
        if not self._mtmd:
            raise RuntimeError_(f"libmtmd could not load {path}: {log.errors() or 'no log'}")
        self.marker = mtmd.mtmd_default_marker().decode()
        self.n_vocab = self.llama.n_vocab()
        self._lc = llama_cpp  # the low-level bindings, imported lazily with the session
        self._vocab = llama_cpp.llama_model_get_vocab(self.llama.model)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.add_eos = bool(llama_cpp.llama_vocab_get_add_eos(self._vocab))
        self.control, self._control_ids = self._control_tokens()
        self._newline_ids = self._tokenize("\n")

    def _control_tokens(self) -> tuple[tuple[str, ...], set[int]]:
        """The control tokens by transformers' rule (user_text.control_tokens) over the GGUF's token types:
        CONTROL tokens (HF's special added tokens) and the USER_DEFINED ones the chat template writes.

        llama.cpp also promotes some NORMAL tokens to CONTROL when it loads a vocabulary (end-of-generation
        look-alikes such as "</s>" in Qwen2's; its log: "control-looking token ... will be overridden").
        HF encodes those as ordinary text, so they are not control tokens here, and text holding one is
        split at the real control tokens by hand (`_tokenize_template_text`) so llama.cpp cannot match it."""
        lc, vocab = self._lc, self._vocab
        normal, control_bit = lc.LLAMA_TOKEN_ATTR_NORMAL, lc.LLAMA_TOKEN_ATTR_CONTROL
        added, self._promoted = {}, {}
        for i in range(lc.llama_vocab_n_tokens(vocab)):
            attr = lc.llama_vocab_get_attr(vocab, i)
            if attr & (control_bit | lc.LLAMA_TOKEN_ATTR_USER_DEFINED):
                text = lc.llama_vocab_get_text(vocab, i).decode("utf-8", errors="replace")
                if attr & normal:
                    self._promoted[text] = i
                else:
                    added[text] = (i, bool(attr & control_bit) and not attr & lc.LLAMA_TOKEN_ATTR_USER_DEFINED)
        control = user_text.control_tokens(((t, special) for t, (_, special) in added.items()),
                                           self.facts.chat_template)
        self._special = {t: i for t, (i, special) in added.items() if special}
        return control, {added[t][0] for t in control}

    # -- prompt --
    def render(self, question: str, n_images: int) -> str:
        """The model's chat template for one user turn, image parts -> libmtmd's media marker."""
        tokens = {"bos_token": self._piece(self.llama.token_bos()), "eos_token": self._piece(self.llama.token_eos())}
        try:
            return self.prompt.render(self.facts.chat_template, question, n_images, self.marker, **tokens)
        except ValueError as exc:
            raise RuntimeError_(str(exc)) from None

    def _piece(self, token: int) -> str:
        try:
            return self.llama.detokenize([token], special=True).decode("utf-8", errors="replace")
        except Exception:  # noqa: BLE001 - an unset bos id has no piece; the template gets ""
            return ""

    def _mtmd_chunks(self, text: str, images: list[Image.Image], add_special: bool):
        """libmtmd's tokenisation: text chunks + image chunks (images preprocessed, not yet encoded)."""
        import llama_cpp.mtmd_cpp as mtmd

        bitmaps = []
        for im in images:
            fitted = self.prompt.fit_image(im)
            data = fitted.tobytes()  # RGBRGB..., row-major: libmtmd's bitmap layout
            bitmaps.append(mtmd.mtmd_bitmap_init(fitted.size[0], fitted.size[1],
                                                 (ctypes.c_uint8 * len(data)).from_buffer_copy(data)))
        raw = text.encode("utf-8")
        inp = mtmd.mtmd_input_text(raw, len(raw), add_special, True)  # parse_special
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            with captured_log(self.verbose) as log:
                arr = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
                rc = mtmd.mtmd_tokenize(self._mtmd, chunks, ctypes.byref(inp), arr, len(bitmaps))
        finally:
            for b in bitmaps:
                mtmd.mtmd_bitmap_free(b)
        if rc != 0:
            mtmd.mtmd_input_chunks_free(chunks)
            raise RuntimeError_(f"libmtmd could not tokenize the prompt (code {rc}): {log.errors() or 'no log'}")
        return chunks

    def _tokenize(self, text: str, special: bool = True) -> list[int]:
        """llama.cpp's tokenizer, no BOS; special=False: control tokens in `text` stay text."""
        return self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=special) if text else []

    def _tokenize_template_text(self, text: str) -> list[int]:
        """Text outside marks (template + user text without control tokens), as HF encodes it: control
        tokens by id, the rest as text; by hand only where a promoted token (see `_control_tokens`) is in it."""
        if not any(t in text for t in self._promoted):
            return self._tokenize(text)
        ids: list[int] = []
        for j, part in enumerate(user_text.split_tokens(text, tuple(self._special))):
            ids += [self._special[part]] if j % 2 else self._tokenize(part, special=False)
        return ids

    def prompt_ids(self, question: str, n_images: int) -> list[list[int]]:
        """The prompt's text ids around its images (n_images + 1 lists, BOS/EOS as the vocabulary adds
        them): the chat template around the question, user text kept as text like the HF tokenizer
        (genrecal.runtimes.prompt.prompt_segments + user_text.encode_pieces). libmtmd never sees user
        text, so its media marker in a question is ordinary text."""
        tokens = {"bos_token": self._piece(self.llama.token_bos()), "eos_token": self._piece(self.llama.token_eos())}
        segments = prompt_segments(self.facts.chat_template, n_images, question, self.control,
                                   self.prompt.placeholder, **tokens)
        try:
            texts = [user_text.encode_pieces(seg, self._tokenize_template_text,
                                             lambda t: self._tokenize(t, special=False),
                                             self._newline_ids, self._control_ids) for seg in segments]
        except user_text.UserTextError as exc:
            raise RuntimeError_(str(exc)) from None
        if self.add_bos:
            texts[0] = [self.llama.token_bos()] + texts[0]
        if self.add_eos:
            texts[-1] = texts[-1] + [self.llama.token_eos()]
        return texts

    def _segments(self, question: str, images: list[Image.Image], owned: list) -> list[tuple[str, object]]:
        """[("text", ids) | ("chunk", libmtmd chunk)] in prompt order; chunk lists to free go to `owned`.
        Text is tokenized by `prompt_ids`; libmtmd tokenizes only each image (its marker alone) and, in
        the "mtmd" layout, adds its own image begin/end tokens as it would in context."""
        import llama_cpp.mtmd_cpp as mtmd

        layout = self.prompt.image_layout
        texts = self.prompt_ids(question, len(images))
        segments: list[tuple[str, object]] = [("text", texts[0])]
        for image, ids in zip(images, texts[1:]):
            owned.append(self._mtmd_chunks(self.marker, [image], add_special=False))
            chunks = [mtmd.mtmd_input_chunks_get(owned[-1], i) for i in range(mtmd.mtmd_input_chunks_size(owned[-1]))]
            if layout["mode"] == "mtmd":
                segments += [("chunk", c) for c in chunks]
            else:
                first = next(c for c in chunks if mtmd.mtmd_input_chunk_get_type(c) != mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT)
                segments += [("text", self._tokenize(layout["before"])), ("chunk", first),
                             ("text", self._tokenize(layout["after"]))]
            segments.append(("text", ids))
        return segments

    def prefill(self, question: str, images: list[Image.Image], keep_image_embeds: bool = False) -> Prefill:
        """Start a fresh sequence: render + tokenize (+ preprocess images), encode images, decode the prompt."""
        import llama_cpp.mtmd_cpp as mtmd

        self.llama.reset()
        self.llama._ctx.kv_cache_clear()
        t0 = time.perf_counter()
        owned: list = []
        try:
            segments = self._segments(question, images, owned)
            # a prompt that fills n_ctx is one line before llama.cpp decodes anything (not "llama_decode returned 1")
            new_token_budget(self._cells(segments), 1, self.n_ctx, self.where)
            out = Prefill(np.empty(0), [], [], (time.perf_counter() - t0) * 1e3)
            for kind, item in segments:
                if kind == "text":
                    self._eval_text(item, out)
                else:
                    self._eval_chunk(item, out, keep_image_embeds)
        finally:
            for chunks in owned:
                mtmd.mtmd_input_chunks_free(chunks)
        if not out.layout or out.layout[-1][0] != "text":
            raise RuntimeError_("the prompt must end with text (the assistant turn), not an image")
        out.logits = self.logits()
        return out

    @staticmethod
    def _cells(segments) -> int:
        """KV cells the prompt takes: its text tokens + each chunk's tokens (an image's embedding rows)."""
        import llama_cpp.mtmd_cpp as mtmd

        return sum(len(item) if kind == "text" else int(mtmd.mtmd_input_chunk_get_n_tokens(item))
                   for kind, item in segments)

    def _eval_text(self, ids: list[int], out: Prefill) -> None:
        if not ids:
            return
        t0 = time.perf_counter()
        self.llama.eval(ids)
        out.prefill_ms += (time.perf_counter() - t0) * 1e3
        if out.layout and out.layout[-1][0] == "text":
            out.layout[-1][1].extend(ids)
        else:
            out.layout.append(("text", list(ids)))

    def _eval_chunk(self, chunk, out: Prefill, keep: bool) -> None:
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd

        if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
            n = ctypes.c_size_t()
            ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
            ids = [int(ptr[j]) for j in range(n.value)]
            if any(i < 0 for i in ids):
                # libmtmd looks some marker tokens up by text ("\n\n", "<global-img>" for idefics3); a vocab
                # without one gives LLAMA_TOKEN_NULL (-1), which llama.cpp's own clients abort on
                raise RuntimeError_("libmtmd could not find a token its projector needs in this model's vocabulary "
                                    "(LLAMA_TOKEN_NULL in the image's text chunk): llama.cpp's own clients abort on "
                                    "this file; re-export it with a vocabulary that has the token (genrecal-export "
                                    "checks this before writing)")
            return self._eval_text(ids, out)
        n_rows = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
        with captured_log(self.verbose) as log:
            t0 = time.perf_counter()
            rc = mtmd.mtmd_encode_chunk(self._mtmd, chunk)
            out.vision_ms += (time.perf_counter() - t0) * 1e3
            if rc != 0:
                raise RuntimeError_(f"libmtmd failed to encode an image (code {rc}): {log.errors() or 'no log'}")
            embd = mtmd.mtmd_get_output_embd(self._mtmd)
            if keep:
                width = self.facts.n_embd_image  # n_embd, or with DeepStack n_embd * (1 + levels)
                rows = np.ctypeslib.as_array(embd, shape=(n_rows * width,)).reshape(n_rows, width)
                out.image_embeds.append(rows.copy())
            new_past = llama_cpp.llama_pos(0)
            t0 = time.perf_counter()
            rc = mtmd.mtmd_helper_decode_image_chunk(self._mtmd, self.llama._ctx.ctx, chunk, embd, self.llama.n_tokens,
                                                     0, self.llama.n_batch, ctypes.byref(new_past),
                                                     mtmd.mtmd_helper_post_decode_callback(), None)
            out.prefill_ms += (time.perf_counter() - t0) * 1e3
        if rc != 0:
            raise RuntimeError_(f"llama.cpp failed to decode image embeddings (code {rc}): {log.errors() or 'no log'}")
        self.llama.n_tokens = new_past.value  # M-RoPE: an image takes max(h, w) positions, not n_rows
        out.layout.append(("image", n_rows))

    # -- decoding --
    def logits(self) -> np.ndarray:
        ptr = self._lc.llama_get_logits_ith(self.llama._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def step(self, token: int) -> np.ndarray:
        """Append one token; logits for the next."""
        self.llama.eval([int(token)])
        return self.logits()

    def greedy_ids(self, logits: np.ndarray, max_new_tokens: int) -> list[int]:
        """Greedy continuation from `logits` until an end-of-generation token or max_new_tokens."""
        ids: list[int] = []
        token = int(np.argmax(logits))
        while len(ids) < max_new_tokens and not self.is_eog(token):
            ids.append(token)
            if len(ids) < max_new_tokens:
                token = int(np.argmax(self.step(token)))
        return ids

    def is_eog(self, token: int) -> bool:
        return bool(self._lc.llama_vocab_is_eog(self._vocab, int(token)))

    def detokenize(self, ids: list[int]) -> bytes:
        return self.llama.detokenize(list(ids))

    def perf(self) -> dict:
        """llama.cpp's own counters for this context (prompt eval = batches > 1 token, eval = single)."""
        p = self._lc.llama_perf_context(self.llama._ctx.ctx)
        return {"t_p_eval_ms": p.t_p_eval_ms, "n_p_eval": p.n_p_eval, "t_eval_ms": p.t_eval_ms, "n_eval": p.n_eval}

    def reset_perf(self) -> None:
        self._lc.llama_perf_context_reset(self.llama._ctx.ctx)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _free(handles: list) -> None:
    """Free libmtmd then llama.cpp state once (close() or interpreter exit, before modules unload)."""
    llama, mtmd_ctx = handles
    if mtmd_ctx:
        import llama_cpp.mtmd_cpp as mtmd
        mtmd.mtmd_free(mtmd_ctx)
    if llama is not None:
        llama.close()
    handles[:] = [None, None]


# ---- the Runtime ----
def _drain(gen) -> Generation:
    """Run a `_run` generator to the end; its return value is the Generation."""
    stream = Stream(gen)
    collections.deque(stream, maxlen=0)
    return stream.result


class LlamaCppRuntime:
    """A GGUF export dir (see genrecal.export.gguf) behind the `Runtime` protocol; greedy decoding.

    threads: llama.cpp and libmtmd CPU threads (default: all cores). n_ctx: context length (default
    4096, capped at the model's). Timing fields are wall-clock around each llama.cpp call; llama.cpp's
    own counters are in `Timing.extra["llama_perf"]` (see `_timing`).
    """

    name = "llamacpp"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, n_ctx: int | None = None,
                 verbose: bool = False):
        from genrecal.artifacts.gguf_pair import layout
        from genrecal.artifacts.gguf_pair.prompt import PromptFormat

        root = Path(path)
        self.path = str(root)
        self.manifest = load_manifest(root)  # verifies every file's sha256: a tampered file is refused
        if self.manifest.format != "gguf":
            raise RuntimeError_(f"{root} holds a {self.manifest.format!r} export; LlamaCppRuntime runs 'gguf'")
        self.family = self.manifest.family
        extra = self.manifest.extra
        t0 = time.perf_counter()
        prompt = PromptFormat.from_dict(extra[layout.EXTRA_PROMPT])
        self.session = LlamaCppSession(root / layout.MODEL_FILE, root / layout.MMPROJ_FILE, prompt,
                                       threads=threads, n_ctx=n_ctx, verbose=verbose)
        self.load_ms = (time.perf_counter() - t0) * 1e3 - self.session.smoke_ms
        self.threads = self.session.threads

    def generate(self, images: list[Image.Image], prompt: str, max_new_tokens: int = 32,
                 stream: bool = False) -> Generation | Stream:
        pieces = self._run(images, prompt, max_new_tokens)
        return Stream(pieces) if stream else _drain(pieces)

    def _run(self, images, prompt: str, max_new_tokens: int):
        s = self.session
        clock = DecodeClock()
        opened = open_images(images)
        s.reset_perf()
        pre = s.prefill(prompt, opened)
        # prompt + new tokens stay inside n_ctx (past it llama_decode returns 1): base.new_token_budget
        budget = new_token_budget(pre.tokens_in, max_new_tokens, s.n_ctx, self.path)
        ids: list[int] = []
        token = int(np.argmax(pre.logits))
        shown, stop = "", STOP_MAX_NEW if budget == max_new_tokens else STOP_CONTEXT
        while len(ids) < budget:
            clock.token()  # the end-of-generation token's step counts too (base.TIMING_DEFINITION)
            if s.is_eog(token):
                stop = STOP_EOS
                break
            ids.append(token)
            with clock.paused():  # detokenising and the consumer's time are not decoding
                now = s.detokenize(ids).decode("utf-8", errors="ignore")
                if len(now) > len(shown):
                    yield now[len(shown):]
                    shown = now
            if len(ids) == budget:
                break
            token = int(np.argmax(s.step(token)))
        e2e_ms = (time.perf_counter() - clock.start) * 1e3
        timing = self._timing(pre, clock, e2e_ms, len(ids), stop, max_new_tokens)
        return Generation(text=s.detokenize(ids).decode("utf-8", errors="replace"), token_ids=ids, timing=timing)

    def _timing(self, pre: Prefill, clock: DecodeClock, e2e_ms: float, n_out: int, stop: str,
                max_new_tokens: int) -> Timing:
        perf = self.session.perf()
        # wall clock, as for every runtime (base.TIMING_DEFINITION); llama.cpp's own counter is in extra
        per_tok = clock.decode_ms_per_token
        return Timing(
            load_ms=self.load_ms,
            preprocess_ms=pre.preprocess_ms,
            vision_encode_ms=pre.vision_ms,
            prefill_ms=pre.prefill_ms,
            prefill_tok_s=pre.tokens_in / (pre.prefill_ms / 1e3) if pre.prefill_ms else 0.0,
            ttft_ms=clock.ttft_ms,
            decode_ms_per_token=per_tok,
            decode_tok_s=1e3 / per_tok if per_tok else 0.0,
            e2e_ms=e2e_ms,
            tokens_in=pre.tokens_in,
            tokens_out=n_out,
            peak_rss_mb=sysinfo.peak_rss_mb(),
            extra={
                "threads": self.threads,
                **stop_record(stop, pre.tokens_in, n_out, max_new_tokens, self.session.n_ctx),
                "image_tokens": sum(int(x) for kind, x in pre.layout if kind == "image"),
                "llama_perf": perf,
                "llama_perf_ms_per_token": perf["t_eval_ms"] / perf["n_eval"] if perf["n_eval"] else 0.0,
                "smoke_ms": self.session.smoke_ms,
                "how": TIMING_HOW,
            },
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

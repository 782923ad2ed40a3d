"""The decoder's KV cache between onnxruntime calls: two ways, the same logits.

    cache = SharedKvCache(session, num_layers, kv_heads, head_dim, max_length=L + new_tokens)
    logits = cache.step(feeds)        # feeds: inputs_embeds, attention_mask (+ position_ids); [1, L, V]
    cache.length                      # tokens held (ArrayKvCache: the same, without max_length)

- `ArrayKvCache`: past_key_values.* go in as numpy arrays and present.* come back as new, one token
  longer (every decoder graph genrecal writes works this way; onnxruntime allocates and copies the
  whole cache on every token). Hybrid bodies (Qwen3.5: `layer_types`) also pass each linear-attention
  layer's fixed-size conv and recurrent state (past_conv.i / past_recurrent.i, zeros at the start).
- `SharedKvCache`: one buffer per past/present pair, [1, kv_heads, capacity, head_dim], bound to
  both the input and the output through IO binding, so the decoder writes each new row in place
  (the capacity doubles when full: one copy per doubling instead of one per token).
  Only GroupQueryAttention decoders (onnxruntime-genai's model builder graph: the manifest's
  `past_present_share_buffer`) support it; GQA reads the valid length from attention_mask
  [1, tokens so far]. This is how onnxruntime-genai runs the same graph (its
  `past_present_share_buffer` search option). On small-smollm2's int4 decoder at 2 threads it
  saved 1.2-1.9 ms of 15.4-16.5 ms per token, with identical logits.
"""
from __future__ import annotations

import numpy as np

from genrecal.artifacts.layout import past_names, present_names


class ArrayKvCache:
    """Past in as arrays, present out as new arrays (any decoder graph)."""

    def __init__(self, session, num_layers: int, kv_heads: int, head_dim: int,
                 layer_types: list[str] | None = None, state_shapes: dict[str, list[int]] | None = None):
        self.session = session
        self.past_names = past_names(num_layers, layer_types)
        self.outputs = ["logits", *present_names(num_layers, layer_types)]
        shapes = {f"past_{kind}": tuple(shape) for kind, shape in (state_shapes or {}).items()}
        self.past = [np.zeros((1, *shapes.get(name.split(".")[0], (kv_heads, 0, head_dim))), np.float32)
                     for name in self.past_names]
        self.held = 0

    @property
    def length(self) -> int:
        return self.held

    def step(self, feeds: dict) -> np.ndarray:
        """Run the decoder on `feeds` (+ the cache); logits [1, L, V]. The cache grows by L."""
        out = self.session.run(self.outputs, {**feeds, **dict(zip(self.past_names, self.past))})
        self.past = out[1:]
        self.held += feeds["inputs_embeds"].shape[1]
        return out[0]


class SharedKvCache:
    """One buffer per past/present pair, written in place (GroupQueryAttention decoders). The buffers
    start at INITIAL_CAPACITY positions (or what the first call needs) and double when full, up to
    max_length, so a large max_new_tokens does not allocate its whole cache up front."""

    INITIAL_CAPACITY = 512

    def __init__(self, session, num_layers: int, kv_heads: int, head_dim: int, max_length: int):
        self.session = session
        self.max_length = max_length
        self.held = 0
        self.past_names, self.present_names = past_names(num_layers), present_names(num_layers)
        self.kv_heads, self.head_dim = kv_heads, head_dim
        self.binding = session.io_binding()
        self.buffers: list = []
        vocab = session.get_outputs()[0].shape[-1]
        self.vocab = vocab if isinstance(vocab, int) else None  # None: let onnxruntime allocate the logits
        self.logits: dict[int, tuple[np.ndarray, object]] = {}  # new tokens -> (logits array, its OrtValue)
        self._grow(min(max_length, self.INITIAL_CAPACITY))

    @property
    def length(self) -> int:
        return self.held

    def _grow(self, capacity: int) -> None:
        """(Re)bind buffers of `capacity` positions, keeping the rows held so far."""
        import onnxruntime as ort

        arrays = [np.zeros((1, self.kv_heads, capacity, self.head_dim), np.float32) for _ in self.past_names]
        for new, old in zip(arrays, self.buffers):
            new[:, :, : self.held] = old.numpy()[:, :, : self.held]
        self.buffers = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
        self.binding.clear_binding_inputs()
        self.binding.clear_binding_outputs()
        for name_in, name_out, buffer in zip(self.past_names, self.present_names, self.buffers):
            self.binding.bind_ortvalue_input(name_in, buffer)
            self.binding.bind_ortvalue_output(name_out, buffer)
        self.capacity = capacity

    def step(self, feeds: dict) -> np.ndarray:
        """As ArrayKvCache.step; ValueError past max_length."""
        new = feeds["inputs_embeds"].shape[1]
        needed = self.held + new
        if needed > self.max_length:
            raise ValueError(f"KV cache full: {needed} tokens > max_length {self.max_length}")
        if needed > self.capacity:
            self._grow(min(self.max_length, max(needed, 2 * self.capacity)))
        for name, value in feeds.items():
            self.binding.bind_cpu_input(name, np.ascontiguousarray(value))
        if self.vocab is None:
            self.binding.bind_output("logits")
            self.session.run_with_iobinding(self.binding)
            self.held = needed
            return self.binding.get_outputs()[0].numpy()
        logits, value = self._logits_buffer(new)  # ours: get_outputs() would wrap every present buffer (~0.2 ms)
        self.binding.bind_ortvalue_output("logits", value)
        self.session.run_with_iobinding(self.binding)
        self.held = needed
        return logits.copy()  # the buffer is reused by the next step of this length

    def _logits_buffer(self, new: int):
        if new not in self.logits:
            import onnxruntime as ort

            array = np.empty((1, new, self.vocab), np.float32)
            self.logits[new] = (array, ort.OrtValue.ortvalue_from_numpy(array))
        return self.logits[new]

"""ONNX export: per-family graphs (onnx-community layout), precisions, parity, genai config.

`OnnxBuild(hf_dir, work_dir)` exports the fp32 graphs once and derives every precision from them;
`OnnxBuild.build(final_dir, precision, target)` writes one self-contained artifact dir with its
manifest (and parity results unless check=False), in the layout transformers.js and
onnxruntime-genai read (graphs under onnx/ with dtype suffixes, processor/generation configs: see
clients.py); the manifest's `graphs` say where each graph is.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from genrecal.export.onnx.files import OnnxExportError
from genrecal.artifacts.manifest import Manifest, build_dir_atomically, dir_sha256, write_manifest

DECODERS = ("auto", "torchscript", "builder")  # --onnx-decoder
"""auto (default): the builder's decoder for the families whose record says so (ClientFacts.onnx_decoder_auto:
those whose builder-route exports transformers.js is tested on) where it can write it (fp32 / int4 / int8w,
with onnxruntime-genai installed), else genrecal's; the manifest's `decoder_from` says which and why."""


def auto_builder_families() -> list[str]:
    """The families `--onnx-decoder auto` gives the builder's decoder."""
    from genrecal.families import get_family, with_format

    return [n for n in with_format("onnx") if get_family(n, role="teacher").clients.onnx_decoder_auto == "builder"]


class OnnxBuild:
    """One student's ONNX exports for one run: the fp32 graphs and the PyTorch reference are
    computed at most once and shared by every precision."""

    def __init__(self, hf_dir: Path, work_dir: Path, check: bool = True, threads: int | None = None,
                 decoder: str = "auto"):
        self.hf_dir, self.work_dir, self.check = Path(hf_dir), Path(work_dir), check
        self.threads = threads  # onnxruntime intra-op threads for the parity runs (None: ORT default)
        if decoder not in DECODERS:
            raise OnnxExportError(f"unknown ONNX decoder source {decoder!r}; choose {', '.join(DECODERS)}")
        self.decoder = decoder  # torchscript: genrecal's graph; builder: onnxruntime-genai's (builder_decoder.py)
        self._student = self._facts = self._reference = self._source = None

    def student(self):
        if self._student is None:
            from genrecal.export.onnx.graphs import load_student

            self._student = load_student(self.hf_dir)
        return self._student

    def fp32(self) -> tuple[Path, dict]:
        """(dir of the fp32 graphs + processor files, model facts)."""
        src = self.work_dir / "onnx-fp32-graphs"
        if self._facts is None:
            from genrecal.export.onnx.graphs import export_fp32_graphs

            model, processor = self.student()
            self._facts = export_fp32_graphs(model, processor, self.hf_dir, src)
        return src, self._facts

    def reference(self):
        if self._reference is None:
            from genrecal.export.onnx.parity import torch_reference

            self._reference = torch_reference(*self.student())
        return self._reference

    def source_sha256(self) -> str:
        self._source = self._source or dir_sha256(self.hf_dir)
        return self._source

    def write_precision(self, dst: Path, precision: str) -> dict:
        """Graphs at `precision` + processor/config files into `dst`; returns manifest extra."""
        from genrecal.export.onnx.quantize import convert_graphs

        src, facts = self.fp32()
        ops = convert_graphs(src, dst, precision)
        if self.decoder != "torchscript":
            builder = self._builder_decoder(dst, precision)
            if "decoder_quantization" in builder:  # the manifest describes the decoder that shipped
                from genrecal.artifacts import layout

                ops["quantization_config"]["graphs"][layout.DECODER_GRAPH] = builder.pop("decoder_quantization")
            if not builder["decoder_from"].startswith("genrecal"):
                facts = {**facts, "exporters": {**facts.get("exporters", {}), "decoder": "onnxruntime-genai builder"}}
            facts = {**facts, **builder}
        else:
            facts = {**facts, "decoder_from": "genrecal (TorchScript): --onnx-decoder torchscript"}
        for path in src.iterdir():  # processor, tokenizer, configs (graphs and weight sidecars done above)
            if path.is_file() and path.suffix not in (".onnx", ".data"):
                shutil.copyfile(path, dst / path.name)
        return {**facts, **ops}

    def _builder_decoder(self, dst: Path, precision: str) -> dict:
        """Replace dst's decoder with onnxruntime-genai's builder's where it can write it (`builder`: an
        OnnxExportError where it cannot, except fp16 / int8, which keep genrecal's; `auto`: genrecal's)."""
        from genrecal.artifacts import layout
        from genrecal.export.onnx.builder_decoder import unsupported, write_builder_decoder

        model, processor = self.student()
        reason = unsupported(model, precision) or (self._auto_refuses(model) if self.decoder == "auto" else None)
        if reason and (self.decoder == "auto" or precision in ("fp16", "int8")):
            return {"decoder_from": f"genrecal (TorchScript): {reason}"}
        return write_builder_decoder(model, processor.tokenizer, precision, dst / layout.DECODER_GRAPH,
                                     self.work_dir / "builder")

    @staticmethod
    def _auto_refuses(model) -> str | None:
        from genrecal.export.onnx.builder_decoder import unavailable

        from genrecal.families import get_family

        family = get_family(model.config.model_type, role="export")
        if family.clients.onnx_decoder_auto != "builder":
            why = f" ({family.clients.onnx_decoder_auto_why})" if family.clients.onnx_decoder_auto_why else ""
            return (f"--onnx-decoder auto keeps genrecal's decoder for {family.name}{why}; the builder's is the "
                    f"default for {', '.join(auto_builder_families())}; ask for it with --onnx-decoder builder")
        return unavailable()

    def manifest(self, precision: str, target: str, extra: dict) -> Manifest:
        from genrecal.artifacts.onnx_facts import OnnxFacts

        extra = OnnxFacts.from_extra(extra).to_extra()  # the schema the runtimes read, checked at the source
        return Manifest(format="onnx", target=target, family=self.student()[0].config.model_type,
                        precision=precision, source_sha256=self.source_sha256(), extra=extra)

    def check_dir(self, dst: Path, manifest: Manifest) -> dict:
        """Parity of the artifact being built in `dst` (run through OnnxRuntime, manifest and all)."""
        if not self.check:
            return {"note": "not checked (--no-check)"}
        from genrecal.export.onnx.parity import check_artifact
        from genrecal.runtimes.onnxruntime import OnnxRuntime

        write_manifest(dst, manifest)  # provisional: the runtime opens dirs by their manifest
        return check_artifact(OnnxRuntime(dst, threads=self.threads), self.reference(), manifest.precision)

    def build(self, final_dir: Path, precision: str, target: str) -> Manifest:
        from genrecal.export.onnx.clients import arrange_for_clients

        def build(tmp: Path) -> Manifest:
            extra = arrange_for_clients(tmp, precision, self.write_precision(tmp, precision))
            manifest = self.manifest(precision, target, extra)
            manifest.parity = self.check_dir(tmp, manifest)
            return manifest

        return build_dir_atomically(Path(final_dir), build)


__all__ = ["OnnxBuild"]

// node js/generate.mjs REQUEST.json
// Loads a genrecal ONNX export folder with transformers.js (local files only, remote models off),
// greedy-generates for one image + question and prints one JSON line:
//   {"prompt": [ids], "tokens": [new ids], "dtype": "...", "model_class": "..."}
// REQUEST: {"model_dir": abs path, "image": abs path, "question": str, "max_new_tokens": int,
//           "dtype": optional transformers.js dtype (default: the folder's config.json)}
// Errors print {"error": "..."} and exit 1, so the caller can show one line.
import { readFileSync } from 'node:fs';
import { env, AutoProcessor, AutoModelForImageTextToText, RawImage } from '@huggingface/transformers';

const req = JSON.parse(readFileSync(process.argv[2], 'utf8'));
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = '/'; // model_dir is absolute

try {
  const processor = await AutoProcessor.from_pretrained(req.model_dir);
  const model = await AutoModelForImageTextToText.from_pretrained(req.model_dir, {
    dtype: req.dtype || undefined, device: 'cpu',
  });
  const image = await RawImage.read(req.image);
  const messages = [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: req.question }] }];
  const text = processor.apply_chat_template(messages, { add_generation_prompt: true });
  // transformers.js's LlavaProcessor takes (images, text); its other VLM processors (text, images)
  const inputs = processor.constructor.name === 'LlavaProcessor'
    ? await processor([image], text) : await processor(text, [image]);
  const out = await model.generate({ ...inputs, do_sample: false, max_new_tokens: req.max_new_tokens });
  const prompt = Array.from(inputs.input_ids.data, Number);
  console.log(JSON.stringify({
    prompt, tokens: Array.from(out.data, Number).slice(prompt.length),
    dtype: model.sessions.decoder_model_merged?.config?.dtype ?? null, model_class: model.constructor.name,
  }));
} catch (err) {
  console.log(JSON.stringify({ error: String(err?.message ?? err).split('\n')[0] }));
  process.exit(1);
}

// Transcribe every audio file of a folder with one shared model (loaded once, disposed at the end).
//   node examples/folder.mjs ./recordings [model: a directory or a Hugging Face id, default Qwen/Qwen3-ASR-0.6B]
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

import { loadModel, transcribe, RustAsrError } from 'rustasr';

const [folder = '.', modelId = 'Qwen/Qwen3-ASR-0.6B'] = process.argv.slice(2);
const AUDIO = /\.(wav|mp3|flac|ogg|oga|opus|webm|m4a)$/i;

const model = await loadModel(modelId);
try {
  const files = (await readdir(folder)).filter((f) => AUDIO.test(f)).sort();
  for (const f of files) {
    try {
      // One file at a time: each transcription uses all the model's threads.
      const r = await transcribe(join(folder, f), { model });
      console.log(`${f}\t${r.language ?? '-'}\t${r.timings.rtf.toFixed(3)}\t${r.text}`);
    } catch (err) {
      if (err instanceof RustAsrError) console.error(`${f}: ${err.code}: ${err.message}`);
      else throw err;
    }
  }
} finally {
  model.dispose();
}

// Transcribe every WAV file of a folder with one shared model (loaded once, disposed at the end).
//   npm run build && npx tsx examples/folder.ts ./recordings /path/to/Qwen3-ASR-0.6B
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

import { loadModel, transcribe, RustAsrError } from 'rustasr';

const [folder = '.', modelDir = './Qwen3-ASR-0.6B'] = process.argv.slice(2);

const model = await loadModel(modelDir);
try {
  const files = (await readdir(folder)).filter((f) => f.toLowerCase().endsWith('.wav')).sort();
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

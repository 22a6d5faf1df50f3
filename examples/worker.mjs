// Transcription in a worker thread, so that the main thread's event loop is not shared with audio decoding
// and tokenizer work (the native engine never blocks it anyway). Each worker loads its own model.
//   node examples/worker.mjs speech.wav [model: a directory or a Hugging Face id, default Qwen/Qwen3-ASR-0.6B]
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

import { transcribe } from 'rustasr';

if (isMainThread) {
  const [file = 'speech.wav', model = 'Qwen/Qwen3-ASR-0.6B'] = process.argv.slice(2);
  const worker = new Worker(new URL(import.meta.url), { workerData: { file, model } });
  worker.on('message', (text) => console.log(text));
  worker.on('error', (err) => {
    console.error(`${err.code ?? ''} ${err.message}`);
    process.exitCode = 1;
  });
} else {
  const { file, model } = workerData;
  const r = await transcribe(file, { model });
  parentPort.postMessage(r.text);
}

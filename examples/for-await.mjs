// Tokens as an async iterable, with progress on stderr and a timeout through an AbortSignal.
//   node examples/for-await.mjs speech.wav [model: a directory or a Hugging Face id, default Qwen/Qwen3-ASR-0.6B]
import { isAbortError, loadModel, recognize } from 'rustasr';

const [file = 'speech.wav', modelId = 'Qwen/Qwen3-ASR-0.6B'] = process.argv.slice(2);

const model = await loadModel(modelId, {
  onProgress: (p) => console.error(`downloading ${p.file}: ${p.received} / ${p.total ?? '?'} bytes`),
});
try {
  const stream = recognize(file, {
    model,
    signal: AbortSignal.timeout(60_000),
    onProgress: (p) => p.phase === 'encoding' && console.error(`[encoding ${p.segmentStart}-${p.segmentEnd} s]`),
  });
  for await (const token of stream) process.stdout.write(token.text);
  process.stdout.write('\n');
  const t = stream.timings;
  console.error(`language ${stream.language ?? '?'}, ${t.audioSeconds.toFixed(1)} s of audio, RTF ${t.rtf.toFixed(3)}`);
} catch (err) {
  if (isAbortError(err)) console.error('gave up after 60 s');
  else throw err;
} finally {
  model.dispose();
}

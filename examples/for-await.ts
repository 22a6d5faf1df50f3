// Tokens as an async iterable, with a timeout through an AbortSignal.
//   npm run build && npx tsx examples/for-await.ts speech.wav /path/to/Qwen3-ASR-0.6B
import { isAbortError, loadModel, recognize } from 'rustasr';

const [file = 'speech.wav', modelDir = './Qwen3-ASR-0.6B'] = process.argv.slice(2);

const model = await loadModel(modelDir, { device: 'auto' });
try {
  const stream = recognize(file, { model, signal: AbortSignal.timeout(60_000) });
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

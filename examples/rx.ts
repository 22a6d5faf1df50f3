// The recogniser as an rxjs Observable: words stream into a buffer; unsubscribing (take) aborts decoding.
//   npm run build && npx tsx examples/rx.ts speech.wav /path/to/Qwen3-ASR-0.6B
import { filter, map, scan, takeWhile } from 'rxjs';

import { recognize$ } from 'rustasr/rx';

const [file = 'speech.wav', modelDir = './Qwen3-ASR-0.6B'] = process.argv.slice(2);

recognize$(file, { model: modelDir })
  .pipe(
    map((token) => token.text),
    filter((text) => text !== ''),
    scan((all, text) => all + text, ''),
    // Stop (and abort the decoder) once 200 characters have been recognised.
    takeWhile((all) => all.length < 200, true),
  )
  .subscribe({
    next: (all) => process.stdout.write(`\r${all.slice(-100)}`),
    error: (err: Error & { code?: string }) => console.error(`\nfailed: ${err.code ?? ''} ${err.message}`),
    complete: () => process.stdout.write('\n'),
  });

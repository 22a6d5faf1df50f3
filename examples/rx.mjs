// The recogniser as an rxjs Observable (rxjs is an optional peer dependency: npm install rxjs): the text
// streams into a buffer; unsubscribing (takeWhile) aborts decoding.
//   node examples/rx.mjs speech.wav [model: a directory or a Hugging Face id, default Qwen/Qwen3-ASR-0.6B]
import { filter, map, scan, takeWhile } from 'rxjs';

import { recognize$ } from 'rustasr/rx';

const [file = 'speech.wav', model = 'Qwen/Qwen3-ASR-0.6B'] = process.argv.slice(2);

recognize$(file, { model })
  .pipe(
    map((token) => token.text),
    filter((text) => text !== ''),
    scan((all, text) => all + text, ''),
    // Stop (and abort the decoder) once 200 characters have been recognised.
    takeWhile((all) => all.length < 200, true),
  )
  .subscribe({
    next: (all) => process.stdout.write(`\r${all.slice(-100)}`),
    error: (err) => console.error(`\nfailed: ${err.code ?? ''} ${err.message}`),
    complete: () => process.stdout.write('\n'),
  });

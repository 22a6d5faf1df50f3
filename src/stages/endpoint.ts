// Endpointing for live recognition: where a live segment starts and ends, from the energy of 10 ms frames.
//
//  - A frame is voiced when its level (dBFS of the frame's RMS) is at least `thresholdDb` (absolute floor,
//    default -50 dBFS) and within `relativeDb` (default 30 dB) of the recent speech level (the loudest voiced
//    frame, decaying by 2 dB per second).
//  - Idle, a segment starts at the first run of `minSpeechMs` (50 ms) of voiced frames, `preRollMs` (200 ms)
//    earlier, so the onset is inside it. Audio outside segments is never decoded: silence gives no text.
//  - A segment ends at a pause: after `minSilenceMs` (600 ms) of unvoiced frames the cut goes `keepSilenceMs`
//    (300 ms) into the pause, so the boundary lies inside the silence.
//  - A segment also ends when it reaches `maxSegmentSeconds` (30 s): it is cut at the quietest frame of its last
//    `searchSeconds` (5 s), never closer than `minSegmentSeconds` to its start, and the next segment starts
//    right there (mid-speech, no pre-roll).
//
// Pure and synchronous: push() returns what happened, in order. The endpointer keeps the current segment's
// audio (bounded by maxSegmentSeconds) so that a cut behind the newest audio can hand the rest to the next
// segment.
import { RustAsrError } from '../errors.js';

export interface EndpointOptions {
  /** Sample rate of the audio (default 16000). */
  sampleRate?: number;
  /** Absolute level a voiced frame reaches, in dBFS (default -50). */
  thresholdDb?: number;
  /** How far below the recent speech level a frame may be and still count as voiced, in dB (default 30). */
  relativeDb?: number;
  /** Pause that ends a segment, in ms (default 600). */
  minSilenceMs?: number;
  /** Voiced audio that starts a segment, in ms (default 50). */
  minSpeechMs?: number;
  /** Audio kept before the onset, in ms (default 200). */
  preRollMs?: number;
  /** How far into the pause the cut goes, in ms (default 300; at most minSilenceMs). */
  keepSilenceMs?: number;
  /** Longest segment, in seconds (default 30). */
  maxSegmentSeconds?: number;
  /** The span before the maximum searched for the quietest cut, in seconds (default 5). */
  searchSeconds?: number;
  /** Shortest segment a length cut leaves, in seconds (default 0.5, the official minimum). */
  minSegmentSeconds?: number;
}

export type EndpointEvent =
  /** A segment begins at `sample` (stream position of its first sample). */
  | { type: 'start'; sample: number }
  /** Audio of the current segment, in order; `voiced`: frames of it classified as speech. */
  | { type: 'audio'; samples: Float32Array; voiced: number }
  /** The current segment ends at `sample` (exclusive; may lie behind audio already given). */
  | { type: 'end'; sample: number; reason: 'pause' | 'length' | 'input' };

export const ENDPOINT_DEFAULTS = Object.freeze({
  thresholdDb: -50,
  relativeDb: 30,
  minSilenceMs: 600,
  minSpeechMs: 50,
  preRollMs: 200,
  keepSilenceMs: 300,
  maxSegmentSeconds: 30,
  searchSeconds: 5,
  minSegmentSeconds: 0.5,
});

const FRAME_MS = 10;
/** Decay of the speech level per frame (2 dB per second). */
const LEVEL_DECAY_DB = 0.02;

function num(v: number | undefined, def: number, name: string, min: number): number {
  const x = v ?? def;
  if (typeof x !== 'number' || !Number.isFinite(x) || x < min) {
    throw new RustAsrError('INVALID_OPTION', `${name} must be a number >= ${min}, got ${String(v)}`);
  }
  return x;
}

export class Endpointer {
  readonly sampleRate: number;
  private readonly frame: number;
  private readonly threshold: number;
  private readonly relative: number;
  private readonly silenceFrames: number;
  private readonly speechFrames: number;
  private readonly preRoll: number;
  private readonly keepSilence: number;
  private readonly maxLen: number;
  private readonly search: number;
  private readonly minLen: number;

  /** Stream position of the next sample pushed. */
  private pos = 0;
  private partial = new Float32Array(0);
  private level = -Infinity;
  private inSegment = false;
  /** Idle: recent audio (pre-roll plus the voiced run so far), oldest first, and where it starts. */
  private ring: Float32Array[] = [];
  private ringStart = 0;
  private ringLen = 0;
  private voicedRun = 0;
  /** In a segment: its audio and per-frame levels, where it starts, and the current unvoiced run. */
  private seg: Float32Array[] = [];
  private segLen = 0;
  private segStart = 0;
  private levels: number[] = [];
  private silence = 0;

  constructor(opts: EndpointOptions = {}) {
    const d = ENDPOINT_DEFAULTS;
    this.sampleRate = num(opts.sampleRate, 16000, 'sampleRate', 1000);
    this.frame = Math.round((this.sampleRate * FRAME_MS) / 1000);
    this.threshold = num(opts.thresholdDb, d.thresholdDb, 'thresholdDb', -200);
    this.relative = num(opts.relativeDb, d.relativeDb, 'relativeDb', 0);
    const ms = (x: number) => Math.max(1, Math.round(x / FRAME_MS));
    this.silenceFrames = ms(num(opts.minSilenceMs, d.minSilenceMs, 'minSilenceMs', FRAME_MS));
    this.speechFrames = ms(num(opts.minSpeechMs, d.minSpeechMs, 'minSpeechMs', FRAME_MS));
    this.preRoll = Math.round((num(opts.preRollMs, d.preRollMs, 'preRollMs', 0) * this.sampleRate) / 1000);
    this.keepSilence = Math.min(ms(num(opts.keepSilenceMs, d.keepSilenceMs, 'keepSilenceMs', 0)), this.silenceFrames);
    const maxSeconds = num(opts.maxSegmentSeconds, d.maxSegmentSeconds, 'maxSegmentSeconds', 1);
    this.maxLen = Math.round(maxSeconds * this.sampleRate);
    this.search = Math.round(Math.min(num(opts.searchSeconds, d.searchSeconds, 'searchSeconds', 0), maxSeconds / 2) * this.sampleRate);
    this.minLen = Math.round(Math.min(num(opts.minSegmentSeconds, d.minSegmentSeconds, 'minSegmentSeconds', 0), maxSeconds / 2) * this.sampleRate);
  }

  /** True while a segment is open. */
  get active(): boolean {
    return this.inSegment;
  }

  /** Feeds audio; returns the events it caused, in order. */
  push(samples: Float32Array): EndpointEvent[] {
    const out: EndpointEvent[] = [];
    let x = samples;
    if (this.partial.length > 0) {
      const joined = new Float32Array(this.partial.length + samples.length);
      joined.set(this.partial);
      joined.set(samples, this.partial.length);
      x = joined;
    }
    const whole = x.length - (x.length % this.frame);
    for (let i = 0; i < whole; i += this.frame) this.frameIn(x.subarray(i, i + this.frame), out);
    this.partial = x.slice(whole);
    return out;
  }

  /** Ends the input: the open segment (if any) ends after its last sample. */
  end(): EndpointEvent[] {
    const out: EndpointEvent[] = [];
    if (this.partial.length > 0 && this.inSegment) this.append(this.partial, 0, out);
    this.pos += this.partial.length;
    this.partial = new Float32Array(0);
    if (this.inSegment) {
      out.push({ type: 'end', sample: this.segStart + this.segLen, reason: 'input' });
      this.inSegment = false;
    }
    return out;
  }

  private dbOf(f: Float32Array): number {
    let s = 0;
    for (let i = 0; i < f.length; i++) s += f[i]! * f[i]!;
    return 10 * Math.log10(s / f.length + 1e-12);
  }

  private frameIn(f: Float32Array, out: EndpointEvent[]): void {
    const db = this.dbOf(f);
    this.level = Math.max(this.level - LEVEL_DECAY_DB, -200);
    const voiced = db >= this.threshold && db >= this.level - this.relative;
    if (voiced) this.level = Math.max(this.level, db);
    if (!this.inSegment) {
      this.idleFrame(f.slice(), voiced, out);
    } else {
      this.segmentFrame(f, db, voiced, out);
    }
    this.pos += f.length;
  }

  private idleFrame(f: Float32Array, voiced: boolean, out: EndpointEvent[]): void {
    this.ring.push(f);
    this.ringLen += f.length;
    this.voicedRun = voiced ? this.voicedRun + 1 : 0;
    if (this.voicedRun >= this.speechFrames) {
      // Onset: the voiced run plus the pre-roll before it.
      const onset = this.pos + f.length - this.voicedRun * this.frame;
      const start = Math.max(this.ringStart, onset - this.preRoll);
      let skip = start - this.ringStart;
      const parts: Float32Array[] = [];
      for (const r of this.ring) {
        if (skip >= r.length) {
          skip -= r.length;
          continue;
        }
        parts.push(skip > 0 ? r.subarray(skip) : r);
        skip = 0;
      }
      this.ring = [];
      this.ringLen = 0;
      this.voicedRun = 0;
      this.open(start, out);
      const voicedFrames = Math.round((this.pos + f.length - onset) / this.frame);
      for (const p of parts) this.append(p, 0, out);
      // The whole voiced run counts as voiced (it started the segment).
      this.markVoiced(voicedFrames, out);
      return;
    }
    // Keep only what a pre-roll and a voiced run can need.
    const keep = this.preRoll + this.speechFrames * this.frame;
    while (this.ring.length > 1 && this.ringLen - this.ring[0]!.length >= keep) {
      this.ringLen -= this.ring[0]!.length;
      this.ringStart += this.ring[0]!.length;
      this.ring.shift();
    }
  }

  private open(start: number, out: EndpointEvent[]): void {
    this.inSegment = true;
    this.segStart = start;
    this.seg = [];
    this.segLen = 0;
    this.levels = [];
    this.silence = 0;
    out.push({ type: 'start', sample: start });
  }

  /** Appends audio to the open segment (levels per whole frame). */
  private append(a: Float32Array, voiced: number, out: EndpointEvent[]): void {
    if (a.length === 0) return;
    this.seg.push(a);
    this.segLen += a.length;
    for (let i = 0; i + this.frame <= a.length; i += this.frame) this.levels.push(this.dbOf(a.subarray(i, i + this.frame)));
    out.push({ type: 'audio', samples: a, voiced });
  }

  private markVoiced(frames: number, out: EndpointEvent[]): void {
    // Attribute the voiced count to the last audio event of the onset.
    for (let i = out.length - 1; i >= 0; i--) {
      const e = out[i]!;
      if (e.type === 'audio') {
        e.voiced = frames;
        return;
      }
    }
  }

  private segmentFrame(f: Float32Array, db: number, voiced: boolean, out: EndpointEvent[]): void {
    this.seg.push(f.slice());
    this.segLen += f.length;
    this.levels.push(db);
    out.push({ type: 'audio', samples: this.seg[this.seg.length - 1]!, voiced: voiced ? 1 : 0 });
    this.silence = voiced ? 0 : this.silence + 1;
    if (this.silence >= this.silenceFrames) {
      // Pause: cut keepSilence frames into it; the rest of the pause is idle audio (pre-roll of the next onset).
      const silenceStart = this.segStart + this.segLen - this.silence * this.frame;
      const cut = silenceStart + this.keepSilence * this.frame;
      out.push({ type: 'end', sample: cut, reason: 'pause' });
      this.idleAfter(cut);
      return;
    }
    if (this.segLen >= this.maxLen) {
      // Longest segment: cut at the quietest frame of the search span, and go on from there.
      const frames = this.levels.length;
      const lo = Math.max(Math.ceil(this.minLen / this.frame), frames - Math.floor(this.search / this.frame));
      let best = frames - 1;
      for (let i = lo; i < frames; i++) if (this.levels[i]! < this.levels[best]!) best = i;
      const cut = this.segStart + best * this.frame;
      out.push({ type: 'end', sample: cut, reason: 'length' });
      const rest = this.tail(cut);
      this.open(cut, out);
      this.append(rest, 0, out);
      let voicedRest = 0;
      for (const l of this.levels) if (l >= this.threshold && l >= this.level - this.relative) voicedRest++;
      this.markVoiced(voicedRest, out);
    }
  }

  /** The segment's audio from stream position `from` on. */
  private tail(from: number): Float32Array {
    const all = new Float32Array(this.segLen);
    let o = 0;
    for (const p of this.seg) {
      all.set(p, o);
      o += p.length;
    }
    return all.slice(from - this.segStart);
  }

  /** After a pause cut: idle, with the audio after the cut as the ring (a pre-roll for the next onset). */
  private idleAfter(cut: number): void {
    const rest = this.tail(cut);
    this.inSegment = false;
    this.seg = [];
    this.segLen = 0;
    this.levels = [];
    this.silence = 0;
    this.voicedRun = 0;
    this.ring = rest.length > 0 ? [rest] : [];
    this.ringLen = rest.length;
    this.ringStart = cut;
  }
}

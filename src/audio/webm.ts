// WebM / Matroska with Opus audio (what browsers' MediaRecorder produces): a small streaming EBML demuxer
// that finds the first audio track and hands its Opus packets to the opus-decoder WebAssembly package. No
// maintained npm EBML reader exists (the `ebml` package was last released in 2018), and the part of Matroska
// needed here is small: element headers, the track entry and (Simple)Blocks with their four lacing modes.
import { RustAsrError } from '../errors.js';
import { quietly } from './codecs.js';
import { blocksOf, type DecodedBlock, type DecoderOptions, type FormatDecoder } from './decoder.js';
import { CONVERT_HINT } from './wav-format.js';
import type { AudioStreamFormat } from './types.js';

const ID = {
  EBML: 0x1a45dfa3,
  DocType: 0x4282,
  Segment: 0x18538067,
  Cluster: 0x1f43b675,
  Tracks: 0x1654ae6b,
  TrackEntry: 0xae,
  TrackNumber: 0xd7,
  TrackType: 0x83,
  CodecID: 0x86,
  CodecPrivate: 0x63a2,
  BlockGroup: 0xa0,
  Block: 0xa1,
  SimpleBlock: 0xa3,
  DiscardPadding: 0x75a2,
} as const;

/** Elements whose children are read; every other element is skipped whole. */
const MASTERS = new Set<number>([ID.EBML, ID.Segment, ID.Cluster, ID.Tracks, ID.TrackEntry, ID.BlockGroup]);
/** Leaf elements read into memory (everything else is skipped without buffering). */
const LEAVES = new Set<number>([ID.DocType, ID.TrackNumber, ID.TrackType, ID.CodecID, ID.CodecPrivate, ID.Block, ID.SimpleBlock, ID.DiscardPadding]);
/** Largest leaf read into memory: a block of a few seconds of audio, or a codec header. */
const MAX_LEAF_BYTES = 16 * 1024 * 1024;
const AUDIO_TRACK = 2;

interface Track {
  number: number;
  type: number;
  codec: string;
  priv: Uint8Array | undefined;
}

/** Reads an EBML variable-length integer at `p`: its value and length, or undefined if more bytes are needed. */
function vint(b: Uint8Array, p: number, keepMarker: boolean): { value: number; len: number; unknown: boolean } | undefined {
  if (p >= b.length) return undefined;
  const first = b[p]!;
  if (first === 0) throw new RustAsrError('INVALID_AUDIO', 'WebM: invalid element header (a zero length marker)');
  const len = Math.clz32(first) - 23;
  if (p + len > b.length) return undefined;
  let value = keepMarker ? first : first & (0xff >> len);
  let allOnes = value === 0xff >> len;
  for (let i = 1; i < len; i++) {
    value = value * 256 + b[p + i]!;
    if (b[p + i] !== 0xff) allOnes = false;
  }
  return { value, len, unknown: !keepMarker && allOnes };
}

function uint(b: Uint8Array): number {
  let v = 0;
  for (const x of b) v = v * 256 + x;
  return v;
}

/** Splits a Block / SimpleBlock body into its frames (no lacing, Xiph, fixed-size or EBML lacing). */
function blockFrames(body: Uint8Array): { track: number; frames: Uint8Array[] } {
  const t = vint(body, 0, false);
  if (!t || body.length < t.len + 3) throw new RustAsrError('INVALID_AUDIO', 'WebM: a block is too short');
  let p = t.len + 2; // track number, 16-bit relative timecode
  const flags = body[p++]!;
  const lacing = (flags >> 1) & 3;
  if (lacing === 0) return { track: t.value, frames: [body.subarray(p)] };
  const count = body[p++]! + 1;
  const sizes: number[] = [];
  if (lacing === 1) {
    for (let i = 0; i < count - 1; i++) {
      let s = 0;
      for (;;) {
        const x = body[p++];
        if (x === undefined) throw new RustAsrError('INVALID_AUDIO', 'WebM: truncated Xiph lacing');
        s += x;
        if (x !== 255) break;
      }
      sizes.push(s);
    }
  } else if (lacing === 3) {
    const first = vint(body, p, false);
    if (!first) throw new RustAsrError('INVALID_AUDIO', 'WebM: truncated EBML lacing');
    p += first.len;
    sizes.push(first.value);
    for (let i = 1; i < count - 1; i++) {
      const d = vint(body, p, false);
      if (!d) throw new RustAsrError('INVALID_AUDIO', 'WebM: truncated EBML lacing');
      p += d.len;
      sizes.push(sizes[i - 1]! + d.value - (2 ** (7 * d.len - 1) - 1)); // signed difference
    }
  } else {
    const each = (body.length - p) / count;
    if (!Number.isInteger(each)) throw new RustAsrError('INVALID_AUDIO', 'WebM: fixed-size lacing does not divide the block');
    for (let i = 0; i < count - 1; i++) sizes.push(each);
  }
  const frames: Uint8Array[] = [];
  for (const s of sizes) {
    if (s < 0 || p + s > body.length) throw new RustAsrError('INVALID_AUDIO', 'WebM: a laced frame runs past its block');
    frames.push(body.subarray(p, p + s));
    p += s;
  }
  frames.push(body.subarray(p));
  return { track: t.value, frames };
}

interface OpusLike {
  ready: Promise<void>;
  decodeFrames(frames: Uint8Array[]): { channelData: Float32Array[]; samplesDecoded: number; sampleRate: number; errors: { message: string }[] };
  free(): void;
}

/** The Opus track of a WebM / Matroska stream, decoded as it arrives. */
export class WebmOpusDecoder implements FormatDecoder {
  private buf = new Uint8Array(0);
  private pos = 0;
  /** Bytes of an element being skipped. */
  private skip = 0;
  private docType = '';
  private tracks: Track[] = [];
  private track: Track | undefined;
  private current: Partial<Track> | undefined;
  private opus: OpusLike | undefined;
  private fmt: AudioStreamFormat | undefined;
  private frames = 0;
  private errors = 0;
  private firstError = '';
  private freed = false;
  /**
   * The audio track's last block, held until the next one (or the end): a DiscardPadding after it, in its
   * BlockGroup, says how many samples at its end are padding (the encoder's last frame, trimmed as ffmpeg does).
   */
  private held: { frames: Uint8Array[]; discard: number } | undefined;

  constructor(private readonly opts: DecoderOptions) {}

  get info(): AudioStreamFormat | undefined {
    return this.fmt;
  }

  async *write(bytes: Uint8Array): AsyncGenerator<DecodedBlock> {
    let at = 0;
    if (this.skip > 0) {
      at = Math.min(this.skip, bytes.length);
      this.skip -= at;
    }
    if (at === bytes.length) return;
    const rest = bytes.subarray(at);
    const left = this.buf.length - this.pos;
    const joined = new Uint8Array(left + rest.length);
    joined.set(this.buf.subarray(this.pos));
    joined.set(rest, left);
    this.buf = joined;
    this.pos = 0;
    const blocks: { frames: Uint8Array[]; discard: number }[] = [];
    this.parse(blocks);
    for (const b of blocks) yield* await this.decode(b.frames, b.discard);
  }

  async *end(): AsyncGenerator<DecodedBlock> {
    if (this.docType === '') throw new RustAsrError('INVALID_AUDIO', 'WebM: the stream ended before its EBML header was read');
    if (!this.track) throw new RustAsrError('INVALID_AUDIO', `${this.describe()}: no audio track was found`);
    const last = this.held;
    this.held = undefined;
    if (last) yield* await this.decode(last.frames, last.discard);
    if (this.frames === 0) {
      throw new RustAsrError(this.errors > 0 ? 'INVALID_AUDIO' : 'EMPTY_AUDIO', this.errors > 0 ? `WebM/Opus: no packet could be decoded: ${this.firstError}` : 'the WebM audio track holds no samples');
    }
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.opus?.free();
    this.opus = undefined;
  }

  private describe(): string {
    return this.docType === 'webm' ? 'WebM' : `Matroska (${this.docType || 'unknown doctype'})`;
  }

  /** Parses whole elements from `buf` at `pos`; collects the audio track's blocks that are ready. */
  private parse(packets: { frames: Uint8Array[]; discard: number }[]): void {
    const b = this.buf;
    for (;;) {
      const id = vint(b, this.pos, true);
      if (!id) break;
      const size = vint(b, this.pos + id.len, false);
      if (!size) break;
      const head = id.len + size.len;
      if (MASTERS.has(id.value)) {
        this.pos += head; // descend: children follow (unknown sizes are fine: nothing is tracked by end)
        if (id.value === ID.TrackEntry) {
          this.closeTrackEntry();
          this.current = {};
        }
        continue;
      }
      if (size.unknown) throw new RustAsrError('INVALID_AUDIO', `WebM: element 0x${id.value.toString(16)} of unknown size`);
      if (!LEAVES.has(id.value)) {
        const avail = b.length - this.pos - head;
        if (avail >= size.value) {
          this.pos += head + size.value;
          continue;
        }
        this.skip = size.value - avail;
        this.pos = b.length;
        break;
      }
      if (size.value > MAX_LEAF_BYTES) throw new RustAsrError('INVALID_AUDIO', `WebM: a ${size.value}-byte element is larger than any audio block`);
      if (b.length - this.pos - head < size.value) break;
      const body = b.subarray(this.pos + head, this.pos + head + size.value);
      this.pos += head + size.value;
      this.leaf(id.value, body, packets);
    }
    if (this.pos > 0) {
      this.buf = b.slice(this.pos);
      this.pos = 0;
    }
  }

  private leaf(id: number, body: Uint8Array, packets: { frames: Uint8Array[]; discard: number }[]): void {
    const cur = this.current;
    switch (id) {
      case ID.DocType:
        this.docType = new TextDecoder().decode(body).replace(/\0+$/, '');
        if (this.docType !== 'webm' && this.docType !== 'matroska') {
          throw new RustAsrError('UNSUPPORTED_AUDIO_FORMAT', `an EBML file of doctype ${JSON.stringify(this.docType)} is not WebM or Matroska; ${CONVERT_HINT}`);
        }
        return;
      case ID.TrackNumber:
        if (cur) cur.number = uint(body);
        return;
      case ID.TrackType:
        if (cur) cur.type = uint(body);
        return;
      case ID.CodecPrivate:
        if (cur) cur.priv = body.slice();
        return;
      case ID.CodecID:
        if (cur) {
          cur.codec = new TextDecoder().decode(body).replace(/\0+$/, '');
          // The track entry is complete enough once number, type and codec are known (CodecPrivate may follow).
        }
        return;
      case ID.DiscardPadding: {
        // Signed nanoseconds of padding at the end of the block of this BlockGroup.
        let v = 0;
        for (const x of body) v = v * 256 + x;
        if (body.length > 0 && body[0]! & 0x80) v -= 2 ** (8 * body.length);
        if (this.held && v > 0) this.held.discard = v;
        return;
      }
      default: {
        this.closeTrackEntry();
        const { track, frames } = blockFrames(body);
        if (!this.track) this.pickTrack();
        if (track !== this.track!.number) return;
        if (this.held) packets.push(this.held);
        this.held = { frames: frames.map((f) => f.slice()), discard: 0 };
      }
    }
  }

  /** Files the track entry being read (blocks only come after the Tracks element). */
  private closeTrackEntry(): void {
    const cur = this.current;
    if (cur && cur.number !== undefined) this.tracks.push({ number: cur.number, type: cur.type ?? 0, codec: cur.codec ?? '', priv: cur.priv });
    this.current = undefined;
  }

  private pickTrack(): void {
    const audio = this.tracks.find((t) => t.type === AUDIO_TRACK);
    if (!audio) throw new RustAsrError('INVALID_AUDIO', `${this.describe()}: no audio track before the first block`);
    if (audio.codec !== 'A_OPUS') {
      throw new RustAsrError(
        'UNSUPPORTED_AUDIO_FORMAT',
        `${this.describe()} with ${audio.codec || 'unknown'} audio: rustasr reads WebM/Matroska with Opus audio only; ${CONVERT_HINT}`,
      );
    }
    this.track = audio;
  }

  private async decode(packets: Uint8Array[], discardNs: number): Promise<Generator<DecodedBlock>> {
    if (!this.opus) {
      const head = this.track!.priv;
      // OpusHead: magic(8) version(1) channels(1) pre-skip(u16) input rate(u32) gain(i16) mapping family(1) [mapping table].
      if (!head || head.length < 19 || new TextDecoder().decode(head.subarray(0, 8)) !== 'OpusHead') {
        throw new RustAsrError('INVALID_AUDIO', 'WebM/Opus: the track has no OpusHead codec header');
      }
      const channels = head[9]!;
      const preSkip = head[10]! | (head[11]! << 8);
      const family = head[18]!;
      const { OpusDecoder } = await import('opus-decoder');
      const options: ConstructorParameters<typeof OpusDecoder>[0] = { channels, preSkip };
      if (family !== 0) {
        if (head.length < 21 + channels) throw new RustAsrError('INVALID_AUDIO', 'WebM/Opus: truncated channel mapping table');
        options.streamCount = head[19]!;
        options.coupledStreamCount = head[20]!;
        options.channelMappingTable = Array.from(head.subarray(21, 21 + channels));
      }
      const d = new OpusDecoder(options) as unknown as OpusLike;
      await d.ready;
      if (this.freed) {
        d.free();
        return blocksOf([], 48000, this.opts.mono);
      }
      this.opus = d;
    }
    const opus = this.opus;
    const r = await quietly(() => opus.decodeFrames(packets));
    if (r.errors.length > 0) {
      if (this.errors === 0) this.firstError = r.errors[0]!.message;
      this.errors += r.errors.length;
    }
    const n = Math.max(0, r.samplesDecoded - Math.round((discardNs * r.sampleRate) / 1e9));
    if (n === 0) return blocksOf([], 48000, this.opts.mono);
    const chans = r.channelData.map((c) => c.slice(0, n));
    this.fmt ??= { format: `${this.docType === 'webm' ? 'webm' : 'matroska'}/opus`, sampleRate: r.sampleRate, channels: chans.length };
    this.frames += n;
    return blocksOf(chans, r.sampleRate, this.opts.mono);
  }
}

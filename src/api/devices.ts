// devices(): which compute devices this build and machine can use (`rustasr devices`).
import { fromNative } from '../errors.js';
import { native, type NativeDeviceStatus } from '../native.js';

/**
 * One device kind as probed on this machine: `kind` 'cpu' | 'cuda' | 'metal'; `available`; `name` (the
 * GPU's name, or the best CPU matrix-vector kernel for 'cpu'); `reason` (why it is unavailable: not built
 * in, no plugin, no driver or GPU, ...; '' when available).
 */
export type DeviceStatus = NativeDeviceStatus;

/**
 * Probes cpu, cuda and metal, in that order (the CPU is always available). Probing CUDA loads the plugin
 * and the driver ($RUSTASR_CUDA_PLUGIN, else rustasr_cuda.so next to the addon), off the main thread.
 * Never rejects for a missing device: its `reason` says why.
 */
export async function devices(): Promise<DeviceStatus[]> {
  try {
    return await native().devices();
  } catch (err) {
    throw fromNative(err);
  }
}
